"""Hard-link the running environment's torch stack into another environment's site-packages.

Usage: .venv/bin/python .ci/borrow_torch.py .venv-floor/lib/python3.11/site-packages

The window's floor and ceiling differ only in the Hugging Face libraries; both take the same torch, torchaudio and
torchvision (pyproject.toml pins them). Their PyPI wheels bring CUDA libraries, about 4.5 GB per environment, so the
floor environment links the ceiling's files instead of installing a second copy: pip then finds torch installed and
installs only what differs. Hard links (a copy where the file system has none), not symbolic links, so pip sees a
normal installation in the floor's own folder.
"""

import importlib.metadata
import os
import shutil
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

TORCH_STACK = ("torch", "torchaudio", "torchvision")
# torch's own dependencies that belong to its CUDA build (the rest are small and pip installs them as usual)
CUDA_PREFIXES = ("torch", "triton", "nvidia-", "cuda-")


def link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows one, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def torch_stack_distributions() -> set[str]:
    """The installed distributions of the torch stack, with the CUDA packages its requirements (and extras) pull in."""
    seen, todo = set(), [(name, "") for name in TORCH_STACK]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        for line in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
                continue
            dependency = canonicalize_name(requirement.name)
            if dependency.startswith(CUDA_PREFIXES):
                todo += [(dependency, "")] + [(dependency, wanted) for wanted in requirement.extras]
    return {name for name, _ in seen}


def main(target: Path) -> None:
    source = Path(importlib.metadata.distribution("torch").locate_file(""))
    entries = set()
    for name in torch_stack_distributions():
        for file in importlib.metadata.distribution(name).files or []:
            if file.parts[0] != "..":  # console scripts live in bin/ and are not needed
                entries.add(file.parts[0])
    for entry in sorted(entries):
        if (target / entry).exists():
            continue
        if (source / entry).is_dir():
            shutil.copytree(source / entry, target / entry, copy_function=link_or_copy)
        else:
            link_or_copy(source / entry, target / entry)
    print(f"linked {len(entries)} entries of the torch stack from {source} into {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
