"""The files that ship to the Hub as remote code are flat and self-contained (DESIGN.md contract 3)."""

from pathlib import Path

from transformers.dynamic_module_utils import get_imports, get_relative_imports

import transformers_avllm

PACKAGE = Path(transformers_avllm.__file__).parent
SHIPPED = sorted([*PACKAGE.glob("modeling/*_avllm.py"), *PACKAGE.glob("processing/*_avllm.py")])
ALLOWED_PACKAGES = {"torch", "transformers", "numpy", "huggingface_hub"}


def test_shipped_files_have_unique_flat_names():
    names = [path.name for path in SHIPPED]
    assert len(names) == len(set(names)) == 6


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
