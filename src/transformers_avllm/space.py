"""`avllm export --space`: make an exported model folder runnable as a Gradio Space.

The Space runs `avllm web`'s own file (`web.py`, as `app.py`) and the chat engine beside it (`chat_avllm.py`), loading
the model from its folder with the folder's remote code: it needs neither this package nor a copy of the app's code.
Its `requirements.txt` takes the bounds of this package's tested window from the installed package's metadata.
"""

import importlib.metadata
import shutil
from pathlib import Path

from huggingface_hub import ModelCard
from packaging.requirements import Requirement

SPACE_FILES = {"app.py": "web.py", "chat_avllm.py": "chat_avllm.py"}  # in the Space: from this package
# What the Space runs on: the model's remote code and processor, the chat engine, the page.
SPACE_REQUIREMENTS = (
    "torch",
    "torchaudio",
    "torchvision",
    "transformers",
    "huggingface_hub",
    "tokenizers",
    "safetensors",
    "av",
    "pillow",
    "numpy",
    "gradio",
)


def space_requirements() -> str:
    """`requirements.txt`: the `SPACE_REQUIREMENTS` with the bounds this package declares (its `web` extra for
    Gradio), one per line."""
    declared = {}
    for line in importlib.metadata.requires("transformers-avllm") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": "web"}):
            declared.setdefault(requirement.name.lower().replace("-", "_"), requirement)
    missing = [name for name in SPACE_REQUIREMENTS if name.lower() not in declared]
    if missing:
        raise RuntimeError(f"transformers-avllm's metadata declares no {missing}")
    return "".join(f"{declared[name.lower()].name}{declared[name.lower()].specifier}\n" for name in SPACE_REQUIREMENTS)


def add_space(folder: str | Path) -> Path:
    """Writes `app.py`, `chat_avllm.py` and `requirements.txt` into an exported folder and the Space keys (`sdk:
    gradio`, its version, `app_file`, `python_version`) into its model card's metadata. Returns the folder."""
    try:
        gradio_version = importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError as err:
        raise RuntimeError("a Space needs Gradio: pip install 'transformers-avllm[web]'") from err
    folder = Path(folder)
    here = Path(__file__).parent
    for name, source in SPACE_FILES.items():
        shutil.copyfile(here / source, folder / name)
    (folder / "requirements.txt").write_text(space_requirements())
    card = ModelCard.load(folder / "README.md")
    card.data.title = card.data.model_name or folder.name
    card.data.sdk, card.data.sdk_version = "gradio", gradio_version
    card.data.app_file, card.data.python_version = "app.py", "3.11"
    card.save(folder / "README.md")
    return folder
