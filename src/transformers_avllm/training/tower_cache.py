"""A tower-output cache: for a stage that freezes a tower, what its connector consumes, computed once per media item.

AV-LLM's stage 1 trains only the connectors, for three epochs: the towers' outputs never change, yet every epoch
decodes every clip and runs the towers again (30% of the step on an H200, docs/performance.md). The cache stores, per
media item, the tower's output reduced to what the connector consumes (`AVLlmEncoderOutput.connector_inputs`: for the
`avllm` and `pool` connectors each frame's summary and the time-pooled patch grid, for `stc` the patch grid, for audio
the pooled segment tokens), one safetensors file per item. A collator given the cache (`AVLlmDataCollator(...,
tower_cache=...)`) decodes nothing and hands the model `mm_encoder_outputs`, so the step runs neither decoding nor
towers.

An entry's key is the sha256 of: what it is (`video`, `image`, `audio`), the media file's bytes, the processor's
sampling settings (`data.prepare.settings_fingerprint`: frames, segments, image processor, feature extractor) and the
tower's fingerprint (its weights, and the feature layer and connector reduction for vision, the tokens per segment for
audio). A changed tower or setting gives other keys: the collator then raises `TowerCacheMissError` instead of feeding
stale features. Build the cache on the device that trains (`TowerCache.build`), best from prepared rows (`avllm data
prepare`), which carry their files' hashes; raw rows hash their files once per process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data.prepare import content_sha256, settings_fingerprint
from ..models.avllm import AVLlmEncoderOutput, AVLlmProcessor, MediaItem
from ..models.avllm.processing_avllm import PreparedMedia
from .collator import BadSampleError

logger = logging.getLogger(__name__)

# The model input that fills each kind of entry, and the tower it goes through.
INPUT_NAMES = {"video": "pixel_values_videos", "image": "pixel_values", "audio": "input_features"}
TOWER_OF = {"video": "vision", "image": "vision", "audio": "audio"}


class TowerCacheMissError(LookupError):
    """A media item of a sample has no entry in the tower cache for this model's towers and these settings."""


def _avllm_model(model):
    """The `AVLlmModel` inside an `AVLlmForConditionalGeneration`, a PEFT wrapper of one, or itself."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, "model", model)


def tower_fingerprint(model, tower: str) -> str:
    """sha256 of a tower's weights (`"vision"` or `"audio"`) and of the settings that decide what its connector
    consumes (vision: the feature layer and the connector's reduction; audio: the tokens per segment)."""
    avllm = _avllm_model(model)
    config = avllm.config
    digest = hashlib.sha256()
    if tower == "vision":
        digest.update(f"layer={config.vision_feature_layer}|connector={config.connector_type}".encode())
    else:
        digest.update(f"tokens_per_segment={config.audio_tokens_per_segment}".encode())
    for name, tensor in sorted(getattr(avllm, f"{tower}_tower").state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class TowerCache:
    """The tower-output cache in `folder` for `model`'s towers and `processor`'s settings (see the module docstring).
    Holds no reference to the model: it goes to DataLoader workers with the collator."""

    def __init__(self, folder: str | os.PathLike, model, processor: AVLlmProcessor):
        self.folder = Path(folder)
        self.settings = settings_fingerprint(processor)
        avllm = _avllm_model(model)
        self.towers = {
            tower: tower_fingerprint(avllm, tower)
            for tower in ("vision", "audio")
            if getattr(avllm, f"{tower}_tower") is not None
        }
        self._hashes: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256 of a file read in this process

    def _content(self, source) -> str:
        if isinstance(source, PreparedMedia) and source.content_sha256:
            return source.content_sha256
        path = os.fsdecode(source.source if isinstance(source, PreparedMedia) else source)
        stat = os.stat(path) if "://" not in path else None
        identity = (path, stat.st_size, stat.st_mtime_ns) if stat else (path,)
        if identity not in self._hashes:
            self._hashes[identity] = content_sha256(path)
        return self._hashes[identity]

    def key(self, kind: str, source) -> str:
        """The entry key of a `"video"`, `"image"` or `"audio"` use of a media source."""
        tower = self.towers.get(TOWER_OF[kind])
        if tower is None:
            raise ValueError(f"this model has no {TOWER_OF[kind]} tower for a {kind} entry")
        text = f"{kind}|{self._content(source)}|{self.settings}|{tower}"
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def entries(self, items: list[MediaItem]) -> dict[str, list[tuple[str, str]]]:
        """`(key, source description)` per entry the items use, by kind, in the order the processor emits their
        inputs (and the model fills their placeholders): videos' frames, images, sounds."""
        entries = {"video": [], "image": [], "audio": []}
        for item in items:
            name = item.source.source if isinstance(item.source, PreparedMedia) else os.fsdecode(item.source)
            for kind, used in (("video", item.use_video), ("image", item.kind == "image"), ("audio", item.use_audio)):
                if used:
                    entries[kind].append((self.key(kind, item.source), name))
        return entries

    def connector_inputs(self, sample_id, items: list[MediaItem]) -> dict[str, AVLlmEncoderOutput]:
        """The stored connector inputs of a sample's items, as the model's `mm_encoder_outputs`. Raises
        `TowerCacheMissError` naming the sample and the source of an item without an entry."""
        outputs = {}
        for kind, entries in self.entries(items).items():
            stored = []
            for key, name in entries:
                path = self.path(key)
                if not path.exists():
                    raise TowerCacheMissError(
                        f"sample {sample_id!r}: the {kind} of {name} is not in the tower cache {self.folder} for this "
                        "model's towers and these sampling settings (a changed tower or setting needs the cache built "
                        "again: TowerCache.build)"
                    )
                tensors = load_file(path)
                stored.append([tensors[str(index)] for index in range(len(tensors))])
            if stored:
                outputs[kind] = AVLlmEncoderOutput(
                    connector_inputs=tuple(torch.stack(parts) for parts in zip(*stored, strict=True))
                )
        return outputs

    @torch.no_grad()
    def build(self, model, collator, rows, batch_size: int = 8) -> dict:
        """Runs `model`'s towers once on the media of `rows` (dataset rows, raw or prepared, in the form `collator`
        takes) and stores the connector inputs of every entry not stored yet, `batch_size` rows at a time. Returns
        counts: `stored` (entries written now), `kept` (already there), `skipped` (rows the collator rejects)."""
        avllm = _avllm_model(model)
        decoding = dataclasses.replace(collator, tower_cache=None)
        counts, pending = {"stored": 0, "kept": 0, "skipped": 0}, []
        for row in rows:
            try:
                entries = self.entries(decoding.resolve_items(row))
                missing = any(not self.path(key).exists() for kind in entries.values() for key, _ in kind)
                counts["kept"] += 0 if missing else sum(map(len, entries.values()))
                if missing:
                    pending.append((entries, decoding.encode(row)))
            except BadSampleError as err:
                logger.warning("tower cache: skipped %s", err)
                counts["skipped"] += 1
            if len(pending) == batch_size:
                self._store(avllm, decoding, pending, counts)
                pending = []
        if pending:
            self._store(avllm, decoding, pending, counts)
        return counts

    def _store(self, avllm, collator, pending, counts) -> None:
        batch = collator.pad([encoded for _, encoded in pending])
        for kind, name in INPUT_NAMES.items():
            if name not in batch:
                continue
            inputs = [batch[name].to(avllm.device)]
            if kind == "audio":
                inputs.append(batch["input_features_mask"].to(avllm.device))
            features = getattr(avllm, f"get_{kind}_features")(*inputs)
            keys = [key for entries, _ in pending for key, _ in entries[kind]]
            for index, key in enumerate(keys):
                path = self.path(key)
                if path.exists():
                    counts["kept"] += 1
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                tensors = {
                    str(i): part[index].to("cpu").contiguous() for i, part in enumerate(features.connector_inputs)
                }
                partial = path.with_suffix(".partial")
                save_file(tensors, str(partial), metadata={"kind": kind, "settings": self.settings})
                os.replace(partial, path)
                counts["stored"] += 1


__all__ = ["TowerCache", "TowerCacheMissError", "tower_fingerprint"]
