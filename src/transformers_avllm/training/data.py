"""Training data: the dataset format, a converter from LLaVA / VideoLLaMA 2 rows, modality views and mixing.

A row is `{"id": ..., "messages": [{"role": "system" | "user" | "assistant", "content": [items]}]}` where an item is
`{"type": "text", "text": ...}`, `{"type": "video", "path": ..., "use_audio": true | false}`,
`{"type": "audio", "path": ...}` or `{"type": "image", "path": ...}` (paths or URLs). See docs/training.md.
"""

import os
import re
from pathlib import Path

from datasets import Dataset, IterableDataset, interleave_datasets, load_dataset

from ..models.avllm import CONTENT_ITEMS, SAMPLE_TYPES

LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
LLAVA_MEDIA_TAGS = re.compile(r"<(video|audio|image)>\n?")
MEDIA_TYPES = ("video", "audio", "image")


def _resolve(path: str, media_root: str | None) -> str:
    if media_root is None or "://" in path or os.path.isabs(path):
        return path
    return str(Path(media_root) / path)


def from_llava_format(row: dict, media_root: str | None = None, use_audio: bool = True) -> dict:
    """Converts a LLaVA / VideoLLaMA 2 row (`{"id", "video" | "audio" | "image": path, "conversations":
    [{"from": "human" | "gpt", "value": "<video>\\n..."}]}`) to our format. The media go first in the first user
    turn; a row with both `video` and `audio` files keeps them apart (`<VIS>` then `<AUD>`), otherwise a video
    brings its own audio track when `use_audio`."""
    media = [(kind, row[kind]) for kind in MEDIA_TYPES if row.get(kind)]
    separate_audio = any(kind == "audio" for kind, _ in media)
    messages, media_placed = [], False
    for turn in row["conversations"]:
        role = LLAVA_ROLES[turn["from"]]
        content = []
        if role == "user" and not media_placed:
            for kind, path in media:
                item = {"type": kind, "path": _resolve(path, media_root)}
                if kind == "video":
                    item["use_audio"] = use_audio and not separate_audio
                content.append(item)
            media_placed = True
        content.append({"type": "text", "text": LLAVA_MEDIA_TAGS.sub("", turn["value"]).strip()})
        messages.append({"role": role, "content": content})
    return {"id": str(row.get("id", "")), "messages": messages}


def _with_media_root(row: dict, media_root: str) -> dict:
    for message in row["messages"]:
        for item in message["content"]:
            if item.get("path"):
                item["path"] = _resolve(item["path"], media_root)
    return row


def load_av_dataset(
    name_or_path: str, split: str = "train", media_root: str | None = None, streaming: bool = False
) -> Dataset | IterableDataset:
    """Loads a training dataset from a local json / jsonl / parquet file (or a Hub dataset id when online), converting
    LLaVA-style rows; relative media paths are taken from `media_root`."""
    suffix = Path(name_or_path).suffix
    if suffix in (".json", ".jsonl", ".parquet"):
        builder = "parquet" if suffix == ".parquet" else "json"
        dataset = load_dataset(builder, data_files=name_or_path, split=split, streaming=streaming)
    else:
        dataset = load_dataset(name_or_path, split=split, streaming=streaming)
    columns = dataset.column_names or []
    if "conversations" in columns:
        return dataset.map(
            from_llava_format, fn_kwargs={"media_root": media_root}, remove_columns=[c for c in columns if c != "id"]
        )
    if "messages" not in columns:
        raise ValueError(f"{name_or_path}: rows need `messages` (or LLaVA-style `conversations`); found {columns}")
    return dataset.map(_with_media_root, fn_kwargs={"media_root": media_root}) if media_root else dataset


def _as_modality(row: dict, modality: str) -> dict:
    for message in row["messages"]:
        for item in message["content"]:
            is_video = item.get("type") == "video"
            # every view carries the same keys and types, so that views can be interleaved (read only for videos)
            item["use_audio"] = False
            if is_video:
                item.update(CONTENT_ITEMS[modality])
    return row


def modality_view(dataset: Dataset | IterableDataset, modality: str) -> Dataset | IterableDataset:
    """The same samples as another sample type (`SAMPLE_TYPES`): `"visual"` (videos without their audio, `<VIS>`),
    `"audio"` (only the videos' audio tracks, `<AUD>`) or `"audio_visual"` (videos with their audio, `<AUD_VIS>`)."""
    if modality not in SAMPLE_TYPES:
        raise ValueError(f"modality must be one of {SAMPLE_TYPES}, got {modality!r}")
    return dataset.map(_as_modality, fn_kwargs={"modality": modality})


def mix_modalities(
    datasets: dict[str, Dataset], probabilities: dict[str, float] | None = None, seed: int = 0
) -> Dataset:
    """Modality-augmented training data: interleaves per-modality datasets with the given sampling probabilities (equal
    by default) until every one is exhausted, so that shuffled batches mix visual-only, audio-only and audio-visual
    samples."""
    names = sorted(datasets)
    weights = [probabilities[name] for name in names] if probabilities else [1 / len(names)] * len(names)
    return interleave_datasets(
        [datasets[name] for name in names], probabilities=weights, seed=seed, stopping_strategy="all_exhausted"
    )
