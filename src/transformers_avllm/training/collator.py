"""AVLlmDataCollator: chat rows with media -> model inputs with labels on assistant replies only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..data.prepare import PREPARED_MEDIA, PreparedDataMismatchError, settings_fingerprint, with_prepared_media
from ..models.avllm import (
    AUDIO,
    AUDIO_VISUAL,
    TOKEN_TYPE_IDS,
    VISUAL,
    AVLlmConfig,
    AVLlmEncoderOutput,
    AVLlmProcessor,
    MediaError,
    pad_windows,
)

if TYPE_CHECKING:
    from .tower_cache import TowerCache

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100


class BadSampleError(ValueError):
    """A training sample could not be turned into model inputs (bad media, mismatched tokens, too long)."""

    def __init__(self, sample_id, reason: str):
        self.sample_id, self.reason = sample_id, reason
        super().__init__(f"sample {sample_id!r}: {reason}")


class SampleTooLongError(BadSampleError):
    """A sample longer than its token limit whose cut would go through a placeholder run."""


class TokenBudgetError(ValueError):
    """The media of some sample type alone leave no room for text in the sequence length the run allows."""


def media_tokens_per_sample_type(config: AVLlmConfig) -> dict[str, int]:
    """The placeholder tokens a sample of each kind the model takes carries: an image, a visual-only video, an audio
    clip, a video with its audio track."""
    tokens = {}
    if config.vision_config is not None:
        tokens["image"] = config.num_image_tokens
        tokens[VISUAL] = config.num_video_tokens
    if config.audio_config is not None:
        tokens[AUDIO] = config.num_audio_tokens
    if config.vision_config is not None and config.audio_config is not None:
        tokens[AUDIO_VISUAL] = config.num_video_tokens + config.num_audio_tokens
    return tokens


def check_token_budget(config: AVLlmConfig, text_budget: int | None, max_length: int | None) -> dict[str, int]:
    """Checks at start-up that a sample of each type fits: its media tokens + `text_budget` within the LLM's
    positions (`max_position_embeddings`, where the config has it), and its media tokens alone below `max_length`
    when one is set. Returns the media tokens per sample type; raises `TokenBudgetError` with the numbers."""
    media = media_tokens_per_sample_type(config)
    context = getattr(config.text_config, "max_position_embeddings", None)
    numbers = (
        f"media tokens per sample: {', '.join(f'{kind} {count}' for kind, count in media.items())}; "
        f"text_budget={text_budget}, max_length={max_length}, the LLM's max_position_embeddings={context}"
    )
    largest = max(media.values(), default=0)
    if max_length is not None and largest >= max_length:
        raise TokenBudgetError(f"the media alone reach max_length, no room is left for text ({numbers})")
    if text_budget is not None and context is not None and largest + text_budget > context:
        raise TokenBudgetError(
            f"{largest} media tokens + text_budget {text_budget} exceed the LLM's {context} positions ({numbers})"
        )
    return media


@dataclass
class AVLlmDataCollator:
    """Decodes each example's media (in DataLoader workers when `dataloader_num_workers > 0`), renders it with the
    processor's chat template and builds `labels` that train only on assistant replies: prompt, padding and every
    placeholder token are -100. Modality is decided per example by its content items. Rows of a prepared dataset
    (`avllm data prepare`) carry their media decoded: nothing is decoded again, and the model inputs are the same.

    Args:
        processor: the model's `AVLlmProcessor`.
        text_budget: tokens of text a row may hold: a row is limited to its own media tokens + this (`None`: no
            limit from it).
        max_length: longest sequence whatever the row (`None`: none). A row over its limit is cut at the end when
            every placeholder run lies before the cut, otherwise handled as `overflow` says.
        overflow: `"error"` (raise `SampleTooLongError`) or `"drop"` (leave the row out, counted in the logs) for a row
            that cannot be cut without cutting a placeholder run.
        skip_bad_samples: leave out rows whose media cannot be decoded (counted in the logs) instead of raising.
        missing_audio: the processor's `missing_audio` policy for videos without an audio track; a row's own
            `missing_audio` field (its dataset's policy, see `DataMixture`) wins.
        tower_cache: a `TowerCache` for a stage that freezes the towers: the media are neither decoded nor run
            through the towers; the batch carries their stored connector inputs as `mm_encoder_outputs`.
    """

    processor: AVLlmProcessor
    max_length: int | None = None
    overflow: str = "error"
    skip_bad_samples: bool = False
    missing_audio: str | None = None
    text_budget: int | None = None
    tower_cache: TowerCache | None = None

    def __post_init__(self):
        if self.overflow not in ("error", "drop"):
            raise ValueError(f"overflow must be 'error' or 'drop', got {self.overflow!r}")
        self.dropped_too_long = self.skipped_bad = 0
        self._settings_fingerprint = None

    def _messages(self, example: dict) -> list[dict]:
        """The example's messages; a prepared row's with its media sources replaced by their prepared media."""
        if example.get(PREPARED_MEDIA) is None:
            return example["messages"]
        if self._settings_fingerprint is None:
            self._settings_fingerprint = settings_fingerprint(self.processor)
        return with_prepared_media(example, self._settings_fingerprint)

    def resolve_items(self, example: dict):
        """The example's media items, resolved as the processor renders them (no decoding)."""
        messages = self._messages(example)
        return self.processor.resolve_conversation(messages, missing_audio=self._missing_audio(example))[1]

    def _missing_audio(self, example: dict) -> str | None:
        """The row's own `missing_audio` policy (its dataset's), else the collator's."""
        return example.get("missing_audio") or self.missing_audio

    def encode(self, example: dict) -> dict[str, torch.Tensor]:
        """One example -> unpadded tensors `(1, L)` + its media tensors. Raises `BadSampleError`, or
        `PreparedDataMismatchError` for a row prepared with other settings than the processor's."""
        sample_id = example.get("id", "<no id>")
        try:
            messages = self._messages(example)
            encoded = self.processor.apply_chat_template(
                messages,
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=True,
                missing_audio=self._missing_audio(example),
                processor_kwargs={"padding": False, "decode_media": self.tower_cache is None},
            )
            if self.tower_cache is not None:
                items = self.processor.resolve_conversation(messages, missing_audio=self._missing_audio(example))[1]
        except PreparedDataMismatchError:
            raise
        except (MediaError, ValueError, KeyError) as err:
            raise BadSampleError(sample_id, str(err)) from err
        if self.tower_cache is not None:
            encoded["mm_encoder_outputs"] = self.tower_cache.connector_inputs(sample_id, items)
        input_ids = encoded["input_ids"]
        is_placeholder = encoded["mm_token_type_ids"] != TOKEN_TYPE_IDS["text"]
        labels = input_ids.masked_fill((encoded.pop("assistant_masks") == 0) | is_placeholder, IGNORE_INDEX)
        if not (labels != IGNORE_INDEX).any():
            raise BadSampleError(sample_id, "no assistant reply to train on")
        encoded["labels"] = labels
        num_media = int(is_placeholder.sum())
        limits = [self.max_length, None if self.text_budget is None else num_media + self.text_budget]
        limit = min((value for value in limits if value is not None), default=None)
        if limit is not None and input_ids.shape[1] > limit:
            last_placeholder = int(is_placeholder[0].nonzero().max()) if is_placeholder.any() else -1
            if last_placeholder >= limit:
                raise SampleTooLongError(
                    sample_id,
                    f"{input_ids.shape[1]} tokens ({num_media} of media); cutting at {limit} (text_budget="
                    f"{self.text_budget}, max_length={self.max_length}) would cut a placeholder run ending at "
                    f"{last_placeholder}",
                )
            for key in ("input_ids", "attention_mask", "mm_token_type_ids", "labels"):
                encoded[key] = encoded[key][:, :limit]
        return dict(encoded)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        rows = []
        for example in examples:
            try:
                rows.append(self.encode(example))
            except BadSampleError as err:
                too_long = isinstance(err, SampleTooLongError)
                if too_long and self.overflow == "drop":
                    self.dropped_too_long += 1
                    logger.warning("dropped %s (%d dropped as too long so far)", err, self.dropped_too_long)
                elif not too_long and self.skip_bad_samples:
                    self.skipped_bad += 1
                    logger.warning("skipped %s (%d bad samples skipped so far)", err, self.skipped_bad)
                else:
                    raise
        if not rows:
            raise BadSampleError([example.get("id") for example in examples], "every sample of the batch was left out")
        return self.pad(rows)

    def pad(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Right-pads the text tensors and concatenates the media tensors in row order; audio clips covered by fewer
        windows than the batch's longest get empty windows (`input_features_mask` 0) at the end."""
        width = max(row["input_ids"].shape[1] for row in rows)
        pad_values = {
            "input_ids": self.processor.tokenizer.pad_token_id,
            "attention_mask": 0,
            "mm_token_type_ids": 0,
            "labels": IGNORE_INDEX,
        }
        batch = {
            key: torch.cat(
                [torch.nn.functional.pad(row[key], (0, width - row[key].shape[1]), value=value) for row in rows]
            )
            for key, value in pad_values.items()
        }
        for key in ("pixel_values", "pixel_values_videos", "input_features", "input_features_mask"):
            tensors = [row[key] for row in rows if key in row]
            if key.startswith("input_features"):
                windows = max((tensor.shape[1] for tensor in tensors), default=0)
                tensors = [pad_windows(tensor, windows, dim=1) for tensor in tensors]
            if tensors:
                batch[key] = torch.cat(tensors)
        cached = [row["mm_encoder_outputs"] for row in rows if "mm_encoder_outputs" in row]
        if cached:
            batch["mm_encoder_outputs"] = {}
            for kind in ("image", "video", "audio"):
                parts = [row[kind].connector_inputs for row in cached if kind in row]
                if parts:
                    inputs = tuple(torch.cat(part) for part in zip(*parts, strict=True))
                    batch["mm_encoder_outputs"][kind] = AVLlmEncoderOutput(connector_inputs=inputs)
        return batch
