"""Media files on disk, told apart by their endings (the media decoder's `VIDEO_EXTENSIONS` / `AUDIO_EXTENSIONS`):
listing a folder's media files (curation) and finding a benchmark sample's file by name (evaluation)."""

from __future__ import annotations

from pathlib import Path

from .models.avllm import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS

MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS


def has_media_ending(path: str | Path, extensions: tuple[str, ...] = MEDIA_EXTENSIONS) -> bool:
    """Whether the name ends in one of `extensions` (any case)."""
    return Path(path).suffix.lower() in extensions


def list_media_files(folder: Path) -> list[Path]:
    """The video and audio files under `folder` (searched recursively), sorted."""
    return sorted(path for path in folder.rglob("*") if path.is_file() and has_media_ending(path))


def find_media_file(root: Path, names, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> str:
    """The first existing file among `root / name` and `root / (name + extension)` for each candidate name (a name,
    a number or a list of them); the first candidate when none exists (a benchmark sample then fails at decoding
    time and is recorded as an error)."""
    names = [str(name) for name in ([names] if isinstance(names, (str, int)) else names)]
    candidates = []
    for name in names:
        candidates.append(root / name)
        if not has_media_ending(name, extensions):
            candidates += [root / f"{name}{extension}" for extension in extensions]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return str(candidates[1] if len(candidates) > 1 and not Path(names[0]).suffix else candidates[0])
