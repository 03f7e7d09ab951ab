"""Generation: each (sample, condition) turned into a conversation (the grounding ablations applied), answered in one
batched `generate` call per batch, and its record appended to the results as the batch finishes."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..jsonl import append_jsonl
from ..models.avllm import MediaError, load_audio, probe_media, row_type
from .benchmarks.samples import Sample
from .results import error_record, is_done, record_key, sample_record
from .tasks import TaskSpec

# What a video without an audio track becomes: its frames alone (<VIS>), never an invented silent track.
MISSING_AUDIO = "visual_only"
CONDITIONS = ("full", "no_audio", "no_video")
CONDITION_NOTES = {
    "full": "the sample as the benchmark gives it",
    "no_audio": (
        "audio muted: each video is rendered visual-only (<VIS>, use_audio=False: the model's own video-only mode, "
        "no audio tokens); each audio clip is replaced by digital silence of the same duration (same tokens). "
        "Samples without audio are left out of this comparison."
    ),
    "no_video": (
        "frames blanked: every decoded video frame and image is replaced by a black frame after decoding (same frame "
        "count, same tokens, the audio track kept). Samples without frames are left out of this comparison."
    ),
}
MEDIA_ERRORS = (MediaError, ValueError, OSError)


def error_message(err: Exception) -> str:
    """What a result's `error` field says: the exception's type and message."""
    return f"{type(err).__name__}: {err}"


class BatchGenerator:
    """Turns (sample, condition) pairs into model inputs and answers them in one `generate` call per batch."""

    def __init__(self, model, processor, spec: TaskSpec, generation_kwargs: dict, seed: int):
        self.model, self.processor, self.spec = model, processor, spec
        self.generation_kwargs, self.seed = generation_kwargs, seed
        self._black = None

    def conversation(self, sample: Sample, condition: str, question: str) -> list[dict]:
        content = []
        for item in sample.media:
            part = dict(item)
            if condition == "no_audio" and part["type"] == "video":
                part["use_audio"] = False
            elif condition == "no_audio" and part["type"] == "audio":
                part = {"type": "audio", "audio": self._silence(part["path"])}
            content.append(part)
        content.append({"type": "text", "text": self.spec.prompt(sample, question)})
        return [{"role": "user", "content": content}]

    def _silence(self, path: str) -> np.ndarray:
        rate = self.processor.feature_extractor.sampling_rate
        duration = probe_media(path).duration
        length = round(duration * rate) if duration else len(load_audio(path, rate))
        return np.zeros(max(length, 1), dtype=np.float32)

    def modality(self, sample: Sample) -> tuple[str, bool, bool]:
        """(sample type as evaluated: `visual` | `audio` | `audio_visual` | `text`, has audio, has frames)."""
        _, items = self.processor.resolve_conversation(
            self.conversation(sample, "full", sample.question), missing_audio=MISSING_AUDIO
        )
        has_frames = any(item.kind == "image" or item.use_video for item in items)
        has_audio = any(item.use_audio for item in items)
        return row_type(has_frames, has_audio), has_audio, has_frames

    def _encode(self, conversations: list[list[dict]]):
        return self.processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            missing_audio=MISSING_AUDIO,
            processor_kwargs={"padding_side": "left"},
        )

    def _black_frame(self) -> torch.Tensor:
        if self._black is None:
            black = np.zeros((64, 64, 3), dtype=np.uint8)
            self._black = self.processor.image_processor(images=[black], return_tensors="pt")["pixel_values"][0]
        return self._black

    @torch.inference_mode()
    def answer(self, samples: list[Sample], condition: str) -> tuple[list[dict], dict[str, str]]:
        """Predictions `{"prediction"[, "prediction2"]}` for the samples that could be encoded, and errors by id."""
        errors, conversations = {}, {}
        for sample in samples:
            questions = [sample.question] + ([sample.question2] if sample.question2 else [])
            try:
                conversations[sample.id] = [self.conversation(sample, condition, question) for question in questions]
            except MEDIA_ERRORS as err:
                errors[sample.id] = error_message(err)
        good = [sample for sample in samples if sample.id in conversations]
        try:
            inputs = self._encode([conv for sample in good for conv in conversations[sample.id]]) if good else None
        except MEDIA_ERRORS:  # find the samples that cannot be decoded, answer the others
            for sample in good:
                try:
                    self._encode(conversations[sample.id])
                except MEDIA_ERRORS as err:
                    errors[sample.id] = error_message(err)
            good = [sample for sample in good if sample.id not in errors]
            inputs = self._encode([conv for sample in good for conv in conversations[sample.id]]) if good else None
        if inputs is None:
            return [], errors
        owners = [(sample.id, index) for sample in good for index in range(len(conversations[sample.id]))]
        if condition == "no_video":
            for key in ("pixel_values_videos", "pixel_values"):
                if key in inputs:
                    inputs[key] = self._black_frame().expand_as(inputs[key]).clone()
        inputs = inputs.to(self.model.device)
        if self.generation_kwargs.get("do_sample"):
            torch.manual_seed(self.seed + zlib.crc32("\n".join(sample.id for sample in good).encode()))
        tokenizer = self.processor.tokenizer
        generated = self.model.generate(
            **inputs,
            **self.generation_kwargs,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = self.processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        predictions: dict[str, dict] = {sample.id: {} for sample in good}
        for (sample_id, index), text in zip(owners, texts, strict=True):
            predictions[sample_id]["prediction" if index == 0 else "prediction2"] = text.strip()
        return [predictions[sample.id] for sample in good], errors

    def records(self, batch: list[Sample], condition: str) -> list[dict]:
        """The batch's records under `condition`: answered, skipped (nothing to mute or blank) or failed."""
        records, runnable = {}, []
        for sample in batch:
            try:
                modality, has_audio, has_frames = self.modality(sample)
            except MEDIA_ERRORS as err:
                records[sample.id] = error_record(sample.id, condition, error_message(err))
                continue
            records[sample.id] = sample_record(self.spec, sample, condition, modality)
            if condition == "no_audio" and not has_audio:
                records[sample.id]["skipped"] = "no audio to mute"
            elif condition == "no_video" and not has_frames:
                records[sample.id]["skipped"] = "no frames to blank"
            else:
                runnable.append(sample)
        if runnable:
            predictions, errors = self.answer(runnable, condition)
            answered = iter(predictions)
            for sample in runnable:
                if sample.id in errors:
                    records[sample.id] = error_record(sample.id, condition, errors[sample.id])
                else:
                    records[sample.id].update(next(answered))
        return list(records.values())


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate_records(
    generator: BatchGenerator,
    samples: list[Sample],
    conditions: tuple[str, ...],
    done: dict[str, dict],
    path: Path | None,
    batch_size: int,
    state,
    progress: bool = True,
) -> dict[str, dict]:
    """Answers every (condition, sample) not finished in `done` (this rank's share of them), appending each batch's
    records to `path` as it completes; returns the new records by key."""
    spec, new = generator.spec, {}
    for condition in conditions:
        pending = [sample for sample in samples if not is_done(done.get(record_key(condition, sample.id)))]
        with state.split_between_processes(pending) as mine:
            mine = list(mine)
        bar = tqdm(
            total=len(mine), desc=f"{spec.name} [{condition}]", unit="sample", disable=not progress,
            position=state.process_index, leave=state.is_main_process,
        )  # fmt: skip
        for batch in _batches(mine, batch_size):
            records = generator.records(batch, condition)
            if path is not None:
                append_jsonl(path, records)
            new.update((record_key(record["condition"], record["id"]), record) for record in records)
            bar.update(len(batch))
        bar.close()
    return new
