"""Training data: the row format, the converter from LLaVA / VideoLLaMA 2 rows, and the mixture of datasets.

A row is `{"id": ..., "messages": [{"role": "system" | "user" | "assistant", "content": [items]}]}` where an item is
`{"type": "text", "text": ...}`, `{"type": "video", "path": ..., "use_audio": true | false}`,
`{"type": "audio", "path": ...}` or `{"type": "image", "path": ...}` (paths or URLs). See docs/training.md.

A sample's modality is its own, read from its content items (`CONTENT_ITEMS` of the modality vocabulary): an image or
a video with `"use_audio": false` is visual, a video with its audio track audio-visual, an audio item audio. Nothing
here changes it, except a dataset entry that names a `view`.

Modality-augmented training (MAT, AV-LLM §3.2) is a `DataMixture` of datasets of visual-only, audio-only and
audio-visual rows, each keeping its rows' modality, drawn by `MixtureSampler` so that every batch mixes them.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, Features, IterableDataset, List, Value, concatenate_datasets, load_dataset

from ..models.avllm import CONTENT_ITEMS, MISSING_AUDIO_POLICIES, SAMPLE_TYPES, VISUAL

LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
LLAVA_MEDIA_TAGS = re.compile(r"<(video|audio|image)>\n?")
MEDIA_TYPES = ("video", "audio", "image")
MEDIA_KEYS = ("path", "url", "video", "audio", "image")  # where an item may name its media (the processor's keys)

# The one schema of every row a mixture holds, whatever file it came from: its content items carry the same keys,
# `source` is the index of its dataset entry and `missing_audio` that entry's policy.
ITEM_FEATURES = {"type": Value("string"), "text": Value("string"), "path": Value("string"), "use_audio": Value("bool")}
ROW_FEATURES = Features(
    {
        "id": Value("string"),
        "messages": List({"role": Value("string"), "content": List(ITEM_FEATURES)}),
        "source": Value("int32"),
        "missing_audio": Value("string"),
    }
)


class DatasetFormatError(ValueError):
    """A dataset entry or one of its rows cannot be used as training data."""


@dataclass
class DatasetEntry:
    """One dataset of a recipe's `datasets` list (docs/training.md).

    Args:
        path: a json / jsonl / parquet file, a Hub dataset id, or (from Python) a `datasets.Dataset`.
        weight: how much of the dataset one epoch of the mixture draws: `weight * len(dataset)` rows (1.0: each row
            once, 2.0: twice, 0.5: half of them, drawn anew each epoch). A batch holds each dataset in proportion.
        media_root: folder that the rows' relative media paths start from.
        split: the split to load.
        missing_audio: this dataset's policy for a video without an audio track whose audio is asked for
            (`"error"`, `"visual_only"`, `"silence"`); `None`: the recipe's.
        view: `None` (the default: every row keeps its modality) or a sample type (`"visual"`, `"audio"`,
            `"audio_visual"`) that every video and audio item of the dataset is turned into (an image can only be
            visual: `DatasetFormatError` otherwise). Only for data whose answers do not depend on what the view
            drops (and for files that hold what it asks: a view `"visual"` of an audio file fails to decode).
        use_audio: LLaVA-style rows only: whether a `video` row that does not say `use_audio` itself brings its audio
            track. `False` (Valley, VideoInstruct-100K as published: visual-only); `True` for sources whose videos
            are audio-visual by definition (VideoLLaMA 2's audio-visual stage, 001's VideoInstruct-100K with audio).
    """

    path: str | Dataset
    weight: float = 1.0
    media_root: str | None = None
    split: str = "train"
    missing_audio: str | None = None
    view: str | None = None
    use_audio: bool = False

    def __post_init__(self):
        if not self.weight > 0:
            raise DatasetFormatError(f"{self.name}: weight must be > 0, got {self.weight}")
        if self.missing_audio is not None and self.missing_audio not in MISSING_AUDIO_POLICIES:
            raise DatasetFormatError(
                f"{self.name}: missing_audio must be one of {MISSING_AUDIO_POLICIES}, got {self.missing_audio!r}"
            )
        if self.view is not None and self.view not in SAMPLE_TYPES:
            raise DatasetFormatError(f"{self.name}: view must be one of {SAMPLE_TYPES} or absent, got {self.view!r}")

    @property
    def name(self) -> str:
        return "<in-memory dataset>" if isinstance(self.path, Dataset) else str(self.path)


def _resolve(path: str, media_root: str | None) -> str:
    if media_root is None or "://" in path or os.path.isabs(path):
        return path
    return str(Path(media_root) / path)


def from_llava_format(row: dict, media_root: str | None = None, use_audio: bool = False) -> dict:
    """Converts a LLaVA / Valley / VideoLLaMA 2 row (`{"id", "video" | "audio" | "image": path, "conversations":
    [{"from": "human" | "gpt", "value": "<video>\\n..."}]}`) to our format, keeping its modality: an image row gives an
    image item, an audio row an audio item, a video row a video item that brings its audio track only when the row
    says so (`"use_audio": true`) or, for rows that do not say, when `use_audio` (the source's convention) is true.
    A row with both `video` and `audio` files keeps them apart (video without its track, then the audio). The media
    go first in the first user turn."""
    media = [(kind, row[kind]) for kind in MEDIA_TYPES if row.get(kind)]
    separate_audio = any(kind == "audio" for kind, _ in media)
    row_use_audio = row.get("use_audio")
    video_audio = (use_audio if row_use_audio is None else bool(row_use_audio)) and not separate_audio
    messages, media_placed = [], False
    for turn in row["conversations"]:
        role = LLAVA_ROLES[turn["from"]]
        content = []
        if role == "user" and not media_placed:
            for kind, path in media:
                item = {"type": kind, "path": _resolve(path, media_root)}
                if kind == "video":
                    item["use_audio"] = video_audio
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
    name_or_path: str,
    split: str = "train",
    media_root: str | None = None,
    streaming: bool = False,
    use_audio: bool = False,
) -> Dataset | IterableDataset:
    """Loads a training dataset from a local json / jsonl / parquet file (or a Hub dataset id when online), converting
    LLaVA-style rows (`from_llava_format` with `use_audio`); relative media paths are taken from `media_root`."""
    suffix = Path(name_or_path).suffix
    if suffix in (".json", ".jsonl", ".parquet"):
        builder = "parquet" if suffix == ".parquet" else "json"
        dataset = load_dataset(builder, data_files=name_or_path, split=split, streaming=streaming)
    else:
        dataset = load_dataset(name_or_path, split=split, streaming=streaming)
    columns = dataset.column_names or []
    if "conversations" in columns:
        return dataset.map(
            from_llava_format,
            fn_kwargs={"media_root": media_root, "use_audio": use_audio},
            remove_columns=[c for c in columns if c != "id"],
        )
    if "messages" not in columns:
        raise DatasetFormatError(
            f"{name_or_path}: rows need `messages` (or LLaVA-style `conversations`); found {columns}"
        )
    if use_audio:
        raise DatasetFormatError(
            f"{name_or_path}: use_audio applies to LLaVA-style rows; rows with `messages` say it per video item"
        )
    return dataset.map(_with_media_root, fn_kwargs={"media_root": media_root}) if media_root else dataset


def _in_view(item: dict, view: str, row_id: str) -> dict:
    """A media item rendered as sample type `view` (`DatasetEntry.view`): a video or audio item becomes the view's
    content item on the same file (whose streams must hold what the view asks: decoding says so otherwise); an image
    can only be visual."""
    if item["type"] == "image":
        if view != VISUAL:
            raise DatasetFormatError(f"row {row_id!r}: an image item cannot be shown as view {view!r}")
        return item
    return {**item, "use_audio": None, **CONTENT_ITEMS[view]}


def _canonical_row(row: dict, index: int, source: int, entry: DatasetEntry, missing_audio: str) -> dict:
    """A row of our format in `ROW_FEATURES`: media under `path` (relative to the entry's `media_root`), the entry's
    view applied when it names one, nothing else changed."""
    row_id = str(row.get("id") or f"{entry.name}#{index}")
    messages = []
    for message in row["messages"]:
        content = message["content"]
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content
        canonical = []
        for item in items:
            if item["type"] == "text":
                canonical.append({"type": "text", "text": item["text"], "path": None, "use_audio": None})
                continue
            if item["type"] not in MEDIA_TYPES:
                raise DatasetFormatError(f"{entry.name}, row {row_id!r}: unknown content item type {item['type']!r}")
            path = next((item[key] for key in MEDIA_KEYS if item.get(key) is not None), None)
            if not isinstance(path, str):
                raise DatasetFormatError(
                    f"{entry.name}, row {row_id!r}: a {item['type']} item needs a path or URL under one of "
                    f"{MEDIA_KEYS}, got {path!r}"
                )
            media = {"type": item["type"], "text": None, "path": _resolve(path, entry.media_root)}
            media["use_audio"] = item.get("use_audio") if item["type"] == "video" else None
            canonical.append(_in_view(media, entry.view, row_id) if entry.view else media)
        messages.append({"role": message["role"], "content": canonical})
    policy = entry.missing_audio or missing_audio
    return {"id": row_id, "messages": messages, "source": source, "missing_audio": policy}


def _load_entry(entry: DatasetEntry) -> Dataset:
    if not isinstance(entry.path, Dataset):
        dataset = load_av_dataset(entry.path, entry.split, use_audio=entry.use_audio)
    elif "conversations" in entry.path.column_names:
        dataset = entry.path.map(from_llava_format, fn_kwargs={"use_audio": entry.use_audio})
    elif entry.use_audio:
        raise DatasetFormatError(f"{entry.name}: use_audio applies to LLaVA-style rows only")
    else:
        dataset = entry.path
    if isinstance(dataset, IterableDataset):
        raise DatasetFormatError(f"{entry.name}: a mixture needs map-style datasets (with a length)")
    return dataset


def canonical_dataset(entry: DatasetEntry, source: int = 0, missing_audio: str = "error") -> Dataset:
    """The rows of one dataset entry in `ROW_FEATURES` (see `DataMixture`)."""
    dataset = _load_entry(entry)
    if "messages" not in dataset.column_names:
        raise DatasetFormatError(f"{entry.name}: rows need `messages` (or LLaVA-style `conversations`)")
    return dataset.map(
        _canonical_row,
        with_indices=True,
        fn_kwargs={"source": source, "entry": entry, "missing_audio": missing_audio},
        features=ROW_FEATURES,
        remove_columns=dataset.column_names,
        desc=f"reading {Path(entry.name).name}",
    )


class DataMixture(torch.utils.data.Dataset):
    """The rows of several datasets, each row keeping its own modality, and how an epoch draws them.

    One epoch draws `round(weight * len(dataset))` rows of each entry (at least one); `MixtureSampler` (which
    `AVLlmSFTTrainer` uses for a `DataMixture`) spreads each dataset's draws evenly over the epoch, so every batch
    holds each dataset in proportion (AV-LLM §3.2: visual-only, audio-only and audio-visual samples "within a single
    batch"). Indexing gives the rows of the datasets one after the other (`ROW_FEATURES`; `source` is the entry's
    index).

    Args:
        entries: the datasets (`DatasetEntry`, or dicts of its fields).
        missing_audio: the policy of entries that set none.
    """

    def __init__(self, entries: list[DatasetEntry | dict], missing_audio: str = "error"):
        if missing_audio not in MISSING_AUDIO_POLICIES:
            raise DatasetFormatError(f"missing_audio must be one of {MISSING_AUDIO_POLICIES}, got {missing_audio!r}")
        if not entries:
            raise DatasetFormatError("a mixture needs at least one dataset")
        self.entries = [entry if isinstance(entry, DatasetEntry) else DatasetEntry(**entry) for entry in entries]
        parts = [canonical_dataset(entry, index, missing_audio) for index, entry in enumerate(self.entries)]
        for entry, part in zip(self.entries, parts, strict=True):
            if len(part) == 0:
                raise DatasetFormatError(f"{entry.name}: no rows")
        self.rows = concatenate_datasets(parts)
        self.sizes = [len(part) for part in parts]
        self.draws = [max(1, round(entry.weight * size)) for entry, size in zip(self.entries, self.sizes, strict=True)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]

    @property
    def shares(self) -> list[float]:
        """Each dataset's share of an epoch (and of every batch)."""
        return [draws / sum(self.draws) for draws in self.draws]


class MixtureSampler(torch.utils.data.Sampler[int]):
    """Indices into a `DataMixture`, one epoch after another: each dataset's `draws` rows (its rows reshuffled at each
    pass over them), the datasets interleaved by stride scheduling (the j-th draw of a dataset with n draws sits at
    `(j + phase) / n` of the epoch, a random phase per dataset and epoch), so that any run of consecutive indices holds
    each dataset's share of it up to a row or two. `DataLoader` batches of consecutive indices therefore mix the
    datasets in every batch, also once accelerate hands whole batches to the processes in turn."""

    def __init__(self, mixture: DataMixture, seed: int = 0):
        self.mixture, self.seed, self.epoch = mixture, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.mixture.draws)

    def __iter__(self):
        generator = np.random.default_rng((self.seed, self.epoch))
        positions, rows, offset = [], [], 0
        for size, draws in zip(self.mixture.sizes, self.mixture.draws, strict=True):
            passes = [generator.permutation(size) for _ in range(-(-draws // size))]
            rows.append(np.concatenate(passes)[:draws] + offset)
            positions.append((np.arange(draws) + generator.random()) / draws)
            offset += size
        order = np.argsort(np.concatenate(positions), kind="stable")
        yield from np.concatenate(rows)[order].tolist()


def mix_datasets(entries: list[DatasetEntry | dict], missing_audio: str = "error") -> DataMixture | Dataset:
    """The training data of a list of dataset entries: a `DataMixture`, or for a single entry of weight 1 its rows
    alone (a `Dataset` in `ROW_FEATURES`, which the Trainer samples as `train_sampling_strategy` says)."""
    mixture = DataMixture(entries, missing_audio)
    if len(mixture.entries) == 1 and mixture.draws == mixture.sizes:
        return mixture.rows
    return mixture


__all__ = [
    "DataMixture",
    "DatasetEntry",
    "DatasetFormatError",
    "MixtureSampler",
    "ROW_FEATURES",
    "canonical_dataset",
    "from_llava_format",
    "load_av_dataset",
    "mix_datasets",
]
