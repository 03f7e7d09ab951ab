"""`avllm data prepare`: a dataset in our training format decoded once into parquet shards of prepared media.

Decoding a clip costs a CPU core 0.5 to 5 seconds (docs/performance.md), many times what a GPU step takes per sample,
and a stage that runs several epochs decodes every clip again each epoch. Preparing a dataset decodes each media item
once, in parallel over all cores, through the processor's own decoding, resize and crop and feature extraction
(`AVLlmProcessor.prepare_media`), and stores the result with the row: the sampled frames as uint8 after the resize and
crop, the audio as the feature extractor's output per segment. The collator then only rescales and normalises the
frames and tokenises (`AVLlmDataCollator` reads prepared rows), which gives the same model inputs, bit for bit, as
decoding the files (tests/test_prepare.py).

A prepared row is the original row plus `prepared_media` (one entry per media item of its messages, in textual order:
the source, the sha256 of its bytes, its frames, audio features and whether it has an audio track), `prepared_settings`
(the fingerprint of the processor settings it was prepared with: frames, segments, image processor, feature extractor)
and `prepare_error` (why its media could not be decoded, for the collator's bad-sample handling). The collator refuses
rows prepared with other settings (`PreparedDataMismatchError`) instead of feeding them silently. Shards are written
whole (a finished shard is never redone; an interrupted run resumes with the next) and the folder's `prepared.json`
records the settings; preparing again with other settings or another shard size starts over.

The shards are parquet files that `datasets` reads or streams: `load_dataset("parquet", data_files="DIR/*.parquet",
streaming=True)`, or `dataset_name: DIR` in a recipe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from datasets import Dataset, List, Value
from tqdm.auto import tqdm

from ..models.avllm import AVLlmProcessor, MediaDecodeError, MediaError, probe_media
from ..models.avllm.media_avllm import describe_source, is_file_source
from ..models.avllm.processing_avllm import MEDIA_KEYS, PreparedMedia

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when what a prepared row holds, or how it is made, changes
PREPARED_MEDIA, PREPARED_SETTINGS, PREPARE_ERROR = "prepared_media", "prepared_settings", "prepare_error"
MANIFEST = "prepared.json"
MEDIA_TYPES = ("video", "audio", "image")
# The columns preparing adds (explicit, so that every shard has the same schema whatever its rows hold).
PREPARED_FEATURES = {
    PREPARED_MEDIA: List(
        {
            "source": Value("string"),
            "content_sha256": Value("string"),
            "kind": Value("string"),
            "has_audio": Value("bool"),
            "timestamps": List(Value("float64")),
            **{
                field: feature
                for name in ("frames", "audio_features", "audio_mask")
                for field, feature in (
                    (name, Value("binary")),
                    (f"{name}_shape", List(Value("int64"))),
                    (f"{name}_dtype", Value("string")),
                )
            },
        }
    ),
    PREPARED_SETTINGS: Value("string"),
    PREPARE_ERROR: Value("string"),
}


class PreparedDataMismatchError(ValueError):
    """A prepared row was made with other settings than the processor's (frames, segments, image processor, feature
    extractor), or its messages no longer name the media it was prepared from."""


def media_settings(processor: AVLlmProcessor) -> dict:
    """Everything that decides what `prepare_media` returns for a source: the towers present, frames and segments per
    item, the audio windows and sampling, square padding, the image processor's and the feature extractor's settings,
    and this file's format version."""
    settings = {
        "format_version": FORMAT_VERSION,
        "num_frames": processor.num_frames,
        "num_audio_segments": processor.num_audio_segments,
        "max_audio_windows": processor.max_audio_windows,
        "audio_sampling": processor.audio_sampling,
        "pad_to_square": processor.pad_to_square,
        "has_vision": processor.has_vision,
        "has_audio": processor.has_audio,
    }
    if processor.has_vision:
        settings["image_processor"] = processor.image_processor.to_dict()
    if processor.has_audio:
        settings["feature_extractor"] = processor.feature_extractor.to_dict()
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def settings_fingerprint(processor: AVLlmProcessor) -> str:
    """sha256 of `media_settings`: the key a prepared row carries."""
    return hashlib.sha256(json.dumps(media_settings(processor), sort_keys=True).encode()).hexdigest()


def content_sha256(source) -> str:
    """sha256 of a media file's bytes (of the URL itself for a URL: fetching it to hash it would cost a download)."""
    digest = hashlib.sha256()
    path = os.fsdecode(source)
    if "://" in path:
        digest.update(path.encode())
        return digest.hexdigest()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def media_parts(messages: list[dict]) -> list[tuple[dict, str]]:
    """The media content items of a conversation in textual order, each with the key its source is under."""
    parts = []
    for message in messages:
        if isinstance(message["content"], str):
            continue
        for part in message["content"]:
            if part.get("type") in MEDIA_TYPES:
                key = next((key for key in MEDIA_KEYS if part.get(key) is not None), None)
                if key is None:
                    raise ValueError(f"a {part['type']} item needs one of {MEDIA_KEYS}: {part}")
                parts.append((part, key))
    return parts


def _tensor_fields(name: str, tensor: torch.Tensor | None) -> dict:
    if tensor is None:
        return {name: None, f"{name}_shape": None, f"{name}_dtype": None}
    tensor = tensor.contiguous()
    return {
        name: tensor.numpy().tobytes(),
        f"{name}_shape": list(tensor.shape),
        f"{name}_dtype": str(tensor.dtype).removeprefix("torch."),
    }


def _tensor(payload: dict, name: str) -> torch.Tensor | None:
    if payload.get(name) is None:
        return None
    dtype = getattr(torch, payload[f"{name}_dtype"])
    return torch.frombuffer(bytearray(payload[name]), dtype=dtype).reshape(payload[f"{name}_shape"])


def prepare_item(processor: AVLlmProcessor, kind: str, source) -> dict:
    """One media item decoded for every way a sample may use it (a video's frames and its audio track, or silence as
    long as the video when it has none), as a row entry of `prepared_media`."""
    if kind == "video":
        has_track = processor.has_audio and probe_media(source).has_audio
        media = processor.prepare_media(
            "video", source, use_video=processor.has_vision, use_audio=processor.has_audio, silent_audio=not has_track
        )
    else:
        media = processor.prepare_media(kind, source)
    return {
        "source": describe_source(source),
        "content_sha256": content_sha256(source) if is_file_source(source) else None,
        "kind": kind,
        "has_audio": media.has_audio,
        "timestamps": media.timestamps,
        **_tensor_fields("frames", media.frames),
        **_tensor_fields("audio_features", media.audio_features),
        **_tensor_fields("audio_mask", media.audio_mask),
    }


def prepare_row(processor: AVLlmProcessor, row: dict, fingerprint: str) -> dict:
    """`row` with its media prepared (`prepared_media`), the settings' fingerprint and, when a media item cannot be
    decoded, the reason (`prepare_error`, no media) for the collator to report or skip."""
    prepared, error = [], None
    try:
        prepared = [prepare_item(processor, part["type"], part[key]) for part, key in media_parts(row["messages"])]
    except (MediaError, ValueError) as err:
        prepared, error = [], str(err)
    return {**row, PREPARED_MEDIA: prepared, PREPARED_SETTINGS: fingerprint, PREPARE_ERROR: error}


def with_prepared_media(example: dict, fingerprint: str) -> list[dict]:
    """The messages of a prepared row with each media source replaced by its `PreparedMedia`, for the processor.
    Raises `PreparedDataMismatchError` when the row was prepared with other settings than `fingerprint` or its media
    items differ from those it was prepared from, and `MediaDecodeError` for a row whose media could not be decoded."""
    sample_id = example.get("id", "<no id>")
    if example.get(PREPARED_SETTINGS) != fingerprint:
        prepared_with = str(example.get(PREPARED_SETTINGS))[:12]
        raise PreparedDataMismatchError(
            f"sample {sample_id!r} was prepared with other settings (fingerprint {prepared_with}, this processor's is "
            f"{fingerprint[:12]}: frames, audio segments, image processor or feature extractor differ); run "
            "`avllm data prepare` again with this model's processor"
        )
    if example.get(PREPARE_ERROR):
        raise MediaDecodeError(str(sample_id), f"could not be prepared: {example[PREPARE_ERROR]}")
    messages = [
        {**message, "content": [dict(part) for part in message["content"]]}
        if not isinstance(message["content"], str)
        else dict(message)
        for message in example["messages"]
    ]
    parts, payloads = media_parts(messages), example[PREPARED_MEDIA]
    sources = [describe_source(part[key]) for part, key in parts]
    if sources != [payload["source"] for payload in payloads]:
        raise PreparedDataMismatchError(
            f"sample {sample_id!r}: its media {sources} are not those it was prepared from "
            f"{[payload['source'] for payload in payloads]}"
        )
    for (part, key), payload in zip(parts, payloads, strict=True):
        part[key] = PreparedMedia(
            source=payload["source"],
            frames=_tensor(payload, "frames"),
            timestamps=payload.get("timestamps"),
            audio_features=_tensor(payload, "audio_features"),
            audio_mask=_tensor(payload, "audio_mask"),
            has_audio=payload["has_audio"],
            content_sha256=payload.get("content_sha256"),
        )
    return messages


# ---- the command ---------------------------------------------------------------------------------------------------

_worker_processor: AVLlmProcessor | None = None


def _init_worker(processor: AVLlmProcessor) -> None:
    global _worker_processor
    torch.set_num_threads(1)  # one process per core
    _worker_processor = processor


def _prepare_in_worker(row: dict, fingerprint: str) -> dict:
    return prepare_row(_worker_processor, row, fingerprint)


def _shard_path(output_dir: Path, index: int) -> Path:
    return output_dir / f"shard-{index:05d}.parquet"


def prepare_dataset(
    data: str,
    processor: AVLlmProcessor,
    output_dir: str | os.PathLike,
    media_root: str | None = None,
    split: str = "train",
    shard_size: int = 256,
    num_workers: int | None = None,
) -> dict:
    """Prepares the rows of `data` (a json / jsonl / parquet file in our training format, or LLaVA-style rows, as
    `load_av_dataset` reads them) into `output_dir/shard-NNNNN.parquet`, `shard_size` rows each, decoding on
    `num_workers` processes (default: every core). Shards already there from a run with the same settings are kept.
    Returns counts: `rows`, `shards`, `prepared` (shards written now), `kept` (shards reused) and `errors` (rows whose
    media could not be decoded)."""
    from ..training.data import load_av_dataset

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_av_dataset(data, split, media_root)
    fingerprint = settings_fingerprint(processor)
    num_shards = -(-len(dataset) // shard_size)
    manifest = {
        "format_version": FORMAT_VERSION,
        "settings_fingerprint": fingerprint,
        "settings": media_settings(processor),
        "data": str(data),
        "rows": len(dataset),
        "shard_size": shard_size,
        "shards": num_shards,
    }
    manifest_path = output_dir / MANIFEST
    if manifest_path.exists() and json.loads(manifest_path.read_text()) != manifest:
        logger.warning("%s was prepared from other data or with other settings: preparing it again", output_dir)
        for stale in output_dir.glob("shard-*.parquet"):
            stale.unlink()
    manifest_path.write_text(json.dumps(manifest, indent=2))

    pending = [index for index in range(num_shards) if not _shard_path(output_dir, index).exists()]
    counts = {
        "rows": len(dataset),
        "shards": num_shards,
        "prepared": 0,
        "kept": num_shards - len(pending),
        "errors": 0,
    }
    rows = [
        (shard, row)
        for shard in pending
        for row in range(shard * shard_size, min((shard + 1) * shard_size, len(dataset)))
    ]
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(rows) or 1))
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    features = dataset.features.copy()
    features.update(PREPARED_FEATURES)
    finished: dict[int, list[dict]] = {}
    with (
        ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(processor,)) as pool,
        tqdm(total=len(rows), desc="preparing", unit="sample") as bar,
    ):
        in_flight, queue = deque(), iter(rows)
        for _ in range(4 * workers):  # a bounded window: results are collected in order, a shard at a time
            _submit(pool, dataset, queue, in_flight, fingerprint)
        while in_flight:
            shard, future = in_flight.popleft()
            prepared = future.result()
            counts["errors"] += prepared[PREPARE_ERROR] is not None
            finished.setdefault(shard, []).append(prepared)
            bar.update()
            _submit(pool, dataset, queue, in_flight, fingerprint)
            expected = min((shard + 1) * shard_size, len(dataset)) - shard * shard_size
            if len(finished[shard]) == expected:
                _write_shard(finished.pop(shard), features, _shard_path(output_dir, shard))
                counts["prepared"] += 1
    return counts


def _submit(pool, dataset, queue, in_flight, fingerprint) -> None:
    item = next(queue, None)
    if item is not None:
        shard, row = item
        in_flight.append((shard, pool.submit(_prepare_in_worker, dataset[row], fingerprint)))


def _write_shard(rows: list[dict], features, path: Path) -> None:
    """Writes a whole shard under a temporary name, then renames it: a shard that exists is complete."""
    partial = path.with_suffix(".partial")
    Dataset.from_list(rows, features=features).to_parquet(partial)
    os.replace(partial, path)


__all__ = [
    "PREPARED_MEDIA",
    "PreparedDataMismatchError",
    "content_sha256",
    "media_settings",
    "prepare_dataset",
    "prepare_item",
    "prepare_row",
    "settings_fingerprint",
    "with_prepared_media",
]
