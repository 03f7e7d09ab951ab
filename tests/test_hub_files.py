"""The files that ship to the Hub as remote code are flat and self-contained (DESIGN.md contract 3)."""

import logging
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from transformers.dynamic_module_utils import get_imports, get_relative_imports

import transformers_avllm
from transformers_avllm.models.avllm.compat_avllm import (
    TRANSFORMERS_FLOOR,
    TRANSFORMERS_TESTED_CEILING,
    AVLlmTransformersVersionError,
    check_transformers_version,
)

PACKAGE = Path(transformers_avllm.__file__).parent
SHIPPED = sorted(PACKAGE.glob("models/avllm/*_avllm.py"))
ALLOWED_PACKAGES = {"torch", "transformers", "numpy", "huggingface_hub"}


def test_shipped_files_have_unique_flat_names():
    names = [path.name for path in SHIPPED]
    assert len(names) == len(set(names)) == 10


def test_shipped_files_import_only_allowed_packages_and_flat_siblings():
    sibling_modules = {path.stem for path in SHIPPED}
    for path in SHIPPED:
        source = path.read_text()
        # transformers' own loader rejects absolute imports of our package, `from . import x` and `..` imports
        assert "transformers_avllm" not in source, path.name
        assert "from . import" not in source and "from .." not in source, path.name
        unguarded = set(get_imports(path)) - ALLOWED_PACKAGES
        stdlib = {name for name in unguarded if name in __import__("sys").stdlib_module_names}
        assert unguarded - stdlib == set(), f"{path.name} needs unguarded third-party imports {unguarded - stdlib}"
        assert set(get_relative_imports(path)) <= sibling_modules, path.name


def test_declared_window_matches_the_shipped_version_guard_and_the_floor_ci_pins():
    root = Path(__file__).parents[1]
    dependencies = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    window = {Requirement(dep).name.replace("_", "-"): Requirement(dep).specifier for dep in dependencies}
    floor_pins = {
        Requirement(line).name.replace("_", "-"): str(next(iter(Requirement(line).specifier)).version)
        for line in (root / ".ci" / "floor-constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    for library in ("transformers", "trl", "peft", "accelerate", "datasets", "huggingface-hub"):
        bounds = {spec.operator: spec.version for spec in window[library]}
        assert set(bounds) == {">=", "<"}, f"{library} needs a floor and a ceiling: {window[library]}"
        assert Version(floor_pins[library]).release[:2] == Version(bounds[">="]).release[:2], library
    bounds = {spec.operator: Version(spec.version).release for spec in window["transformers"]}
    assert bounds[">="][:2] == TRANSFORMERS_FLOOR
    assert bounds["<"][:2] == (TRANSFORMERS_TESTED_CEILING[0], TRANSFORMERS_TESTED_CEILING[1] + 1)


def test_version_guard_names_both_versions_below_the_floor_and_warns_above_the_ceiling(caplog):
    with pytest.raises(AVLlmTransformersVersionError, match=r"needs transformers >= 5\.23, but transformers 5\.22\.1"):
        check_transformers_version("5.22.1")
    assert check_transformers_version("5.24.0") == (5, 24)
    untested = f"{TRANSFORMERS_TESTED_CEILING[0]}.{TRANSFORMERS_TESTED_CEILING[1] + 1}.0.dev0"
    with caplog.at_level(logging.WARNING):
        check_transformers_version(untested)
    assert f"transformers {untested} is untested" in caplog.text
