"""AVLlmProcessor: chat messages with videos (frames + their own audio track), audio and images -> model inputs."""

import re
from dataclasses import dataclass

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin
from transformers.image_utils import load_image
from transformers.utils import is_torchaudio_available
from transformers.utils.chat_template_utils import render_jinja_template

from .media_avllm import (
    MediaError,
    MissingStreamError,
    load_audio,
    load_video,
    probe_media,
    sample_frame_indices,
    split_audio_segments,
)

if is_torchaudio_available():
    import torchaudio

# Vicuna v1 turns (the AV-LLM LLM), with `{% generation %}` around assistant replies for assistant-only losses.
DEFAULT_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'text' -%}{{ item['text'] }}{%- else -%}{{ item['marker'] ~ '\\n' }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ render(message['content']) ~ ' ' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'USER: ' ~ render(message['content']) ~ ' ' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT: ' }}"
    "{%- generation -%}{{ render(message['content']) ~ eos_token }}{%- endgeneration -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

MEDIA_KEYS = ("path", "url", "video", "audio", "image")


@dataclass
class MediaItem:
    """One media item of a sample, resolved to the modality token it renders as."""

    kind: str  # "image" | "video" | "audio"
    source: object
    marker: str
    use_video: bool = True
    use_audio: bool = False
    silent_audio: bool = False


class AVLlmProcessor(ProcessorMixin):
    r"""
    Tokenizer + the vision tower's image processor + the audio tower's feature extractor. `ProcessorMixin` needs all
    three, so a one-tower model keeps a default instance of the other one, unused (its placeholder count is 0).

    A video renders as `<AUD_VIS>` when its audio is used and the file has an audio track, as `<VIS>` when the caller
    asks for video only (`use_audio=False`); an image as `<VIS>`; an audio clip as `<AUD>`. Each modality token is
    expanded into exactly the placeholder tokens the model's connectors produce, in the paper's order (video
    placeholders, then audio placeholders).

    Args:
        num_frames (`int`): frames sampled per video.
        num_audio_segments (`int`): K, audio segments per clip.
        num_video_tokens / num_image_tokens / num_audio_tokens (`int`): placeholders per item (from
            `AVLlmConfig.processor_kwargs()`).
        missing_audio (`str`, defaults to `"error"`): what to do with a video whose file has no audio track when audio
            is asked for: `"error"` (raise `MissingStreamError`), `"visual_only"` (render it as `<VIS>`) or `"silence"`
            (feed a silent waveform, as VideoLLaMA 2 does; only when explicitly chosen).
    """

    def __init__(
        self,
        image_processor=None,
        feature_extractor=None,
        tokenizer=None,
        chat_template=None,
        num_frames: int = 32,
        num_audio_segments: int = 4,
        num_video_tokens: int = 0,
        num_image_tokens: int = 0,
        num_audio_tokens: int = 0,
        vis_token: str = "<VIS>",
        aud_token: str = "<AUD>",
        aud_vis_token: str = "<AUD_VIS>",
        image_token: str = "<image>",
        video_token: str = "<video>",
        audio_token: str = "<audio>",
        missing_audio: str = "error",
        **kwargs,
    ):
        self.num_frames = num_frames
        self.num_audio_segments = num_audio_segments
        self.num_video_tokens = num_video_tokens
        self.num_image_tokens = num_image_tokens
        self.num_audio_tokens = num_audio_tokens
        self.vis_token, self.aud_token, self.aud_vis_token = vis_token, aud_token, aud_vis_token
        self.image_token, self.video_token, self.audio_token = image_token, video_token, audio_token
        self.missing_audio = missing_audio
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token)
        self.audio_token_id = tokenizer.convert_tokens_to_ids(audio_token)
        self._marker_pattern = re.compile("|".join(re.escape(t) for t in (aud_vis_token, vis_token, aud_token)))
        super().__init__(
            image_processor, feature_extractor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE
        )

    # ---- modality resolution -------------------------------------------------------------------------------------

    @property
    def has_vision(self) -> bool:
        return self.num_video_tokens > 0

    @property
    def has_audio(self) -> bool:
        return self.num_audio_tokens > 0

    def _resolve_video(self, source, use_audio: bool, missing_audio: str) -> MediaItem:
        """Decides how a video item renders; probes files for an audio track."""
        use_audio = use_audio and self.has_audio
        silent = False
        if use_audio:
            if not _is_file_source(source):
                raise MissingStreamError(
                    "<decoded frames>", "decoded frames carry no audio track; pass the file, or use_audio=False"
                )
            if not probe_media(source).has_audio:
                if missing_audio == "error":
                    raise MissingStreamError(
                        _describe(source),
                        f"no audio track, but {self.aud_vis_token} needs one; pass use_audio=False for video only, or "
                        "missing_audio='visual_only' / 'silence'",
                    )
                use_audio, silent = missing_audio == "silence", missing_audio == "silence"
        if not self.has_vision:
            if not use_audio:
                raise ValueError(
                    f"{_describe(source)}: this model has no vision tower and the video's audio is unused"
                )
            return MediaItem("video", source, self.aud_token, use_video=False, use_audio=True, silent_audio=silent)
        marker = self.aud_vis_token if use_audio else self.vis_token
        return MediaItem("video", source, marker, use_audio=use_audio, silent_audio=silent)

    def _resolve_item(self, kind: str, source, use_audio: bool, missing_audio: str) -> MediaItem:
        if kind == "video":
            return self._resolve_video(source, use_audio, missing_audio)
        if kind == "image":
            if not self.has_vision:
                raise ValueError("this model has no vision tower, but an image was given")
            return MediaItem("image", source, self.vis_token, use_video=False)
        if not self.has_audio:
            raise ValueError("this model has no audio tower, but an audio clip was given")
        return MediaItem("audio", source, self.aud_token, use_video=False, use_audio=True)

    # ---- decoding ------------------------------------------------------------------------------------------------

    def _frames(self, item: MediaItem) -> tuple[np.ndarray, list[float] | None]:
        """`(num_frames, H, W, 3)` uint8 frames of a video item and their timestamps in seconds (`None` for frames
        given already decoded)."""
        if _is_file_source(item.source):
            clip = load_video(item.source, self.num_frames)
            return clip.frames, clip.timestamps
        frames = item.source.numpy() if isinstance(item.source, torch.Tensor) else np.asarray(item.source)
        if frames.ndim != 4 or 3 not in (frames.shape[1], frames.shape[-1]):
            raise ValueError(f"decoded video must be (T, H, W, 3) or (T, 3, H, W), got shape {frames.shape}")
        if frames.shape[-1] != 3:
            frames = frames.transpose(0, 2, 3, 1)
        return frames[sample_frame_indices(len(frames), self.num_frames)], None

    def _waveform(self, item: MediaItem) -> np.ndarray:
        """Mono float32 waveform at the feature extractor's rate."""
        rate = self.feature_extractor.sampling_rate
        if _is_file_source(item.source):
            return load_audio(item.source, rate, allow_missing=item.silent_audio)
        waveform, source_rate = item.source, rate
        if isinstance(waveform, dict):  # datasets' Audio feature
            waveform, source_rate = waveform["array"], waveform["sampling_rate"]
        elif isinstance(waveform, tuple):
            waveform, source_rate = waveform
        waveform = torch.as_tensor(np.asarray(waveform), dtype=torch.float32)
        if waveform.ndim == 2:
            waveform = waveform.mean(dim=0)
        if source_rate != rate:
            waveform = torchaudio.functional.resample(waveform, source_rate, rate)
        return waveform.numpy()

    def _audio_features(self, waveforms: list[np.ndarray]) -> torch.Tensor:
        """`(num_audios, K, *segment_shape)` from mono waveforms; segments longer than the extractor's window are
        centre-cropped to it, shorter ones padded by the extractor."""
        window = getattr(self.feature_extractor, "n_samples", None) or getattr(
            self.feature_extractor, "nb_max_samples", None
        )
        segments = []
        for waveform in waveforms:
            for segment in split_audio_segments(waveform, self.num_audio_segments):
                if window and len(segment) > window:
                    start = (len(segment) - window) // 2
                    segment = segment[start : start + window]
                segments.append(segment)
        extracted = self.feature_extractor(
            segments, sampling_rate=self.feature_extractor.sampling_rate, return_tensors="pt"
        )
        features = extracted["input_features"] if "input_features" in extracted else extracted["input_values"]
        return features.unflatten(0, (len(waveforms), self.num_audio_segments))

    # ---- expansion and tokenisation ------------------------------------------------------------------------------

    def _expansion(self, item: MediaItem) -> str:
        if item.kind == "image":
            return self.image_token * self.num_image_tokens
        text = self.video_token * self.num_video_tokens if item.use_video else ""
        return text + (self.audio_token * self.num_audio_tokens if item.use_audio else "")

    def _expand(
        self, text: str, items: list[MediaItem], sample_index: int, spans: list[tuple[int, int]] = ()
    ) -> tuple[str, list[tuple[int, int]]]:
        """Replaces each modality token by its placeholder run; returns the text and `spans` (character ranges of
        the original text outside modality tokens) moved to the expanded text."""
        markers = self._marker_pattern.findall(text)
        if [item.marker for item in items] != markers:
            raise ValueError(
                f"sample {sample_index}: modality tokens {markers} in the text do not match its media items "
                f"{[item.marker for item in items]}"
            )
        replacements, shifts = iter(items), []  # (end of a modality token, total growth up to it)

        def replace(match):
            expansion = self._expansion(next(replacements))
            shifts.append((match.end(), (shifts[-1][1] if shifts else 0) + len(expansion) - len(match.group())))
            return expansion

        expanded = self._marker_pattern.sub(replace, text)

        def moved(position: int) -> int:
            return position + next((growth for end, growth in reversed(shifts) if end <= position), 0)

        return expanded, [(moved(start), moved(end)) for start, end in spans]

    def _encode(
        self,
        texts: list[str],
        items_per_sample: list[list[MediaItem]],
        return_tensors="pt",
        generation_spans: list[list[tuple[int, int]]] | None = None,
        return_video_metadata: bool = False,
        **tokenizer_kwargs,
    ) -> BatchFeature:
        spans_per_sample = generation_spans or [[] for _ in texts]
        expanded, moved_spans = zip(
            *(
                self._expand(text, items, index, spans)
                for index, (text, items, spans) in enumerate(
                    zip(texts, items_per_sample, spans_per_sample, strict=True)
                )
            ),
            strict=True,
        )
        tokenizer_kwargs.setdefault("padding", True)
        tokenizer_kwargs.setdefault("padding_side", "left")
        encoding = self.tokenizer(
            list(expanded),
            return_tensors=return_tensors,
            return_offsets_mapping=generation_spans is not None,
            **tokenizer_kwargs,
        )
        data = dict(encoding)
        if generation_spans is not None:
            data["assistant_masks"] = self._assistant_masks(data.pop("offset_mapping"), moved_spans)
        if tokenizer_kwargs.get("truncation"):
            self._check_placeholder_runs(data["input_ids"])
        flat = [item for items in items_per_sample for item in items]
        decoded_videos = [self._frames(item) for item in flat if item.kind == "video" and item.use_video]
        videos = [frames for frames, _ in decoded_videos]
        images = [self._load_image(item) for item in flat if item.kind == "image"]
        audios = [self._waveform(item) for item in flat if item.use_audio]
        if videos:
            frames = [frame for video in videos for frame in video]
            pixel_values = self.image_processor(images=frames, return_tensors="pt")["pixel_values"]
            data["pixel_values_videos"] = pixel_values.unflatten(0, (len(videos), self.num_frames))
        if images:
            data["pixel_values"] = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        if audios:
            data["input_features"] = self._audio_features(audios)
        # 0 text, 1 image, 2 video, 3 audio placeholder: which modalities each row carries.
        data["mm_token_type_ids"] = self.create_mm_token_type_ids(data["input_ids"])
        batch = BatchFeature(data=data, tensor_type=return_tensors)
        if return_video_metadata:  # a list per video (not a tensor): pop it before calling the model
            batch["video_timestamps"] = [timestamps for _, timestamps in decoded_videos]
        return batch

    @staticmethod
    def _assistant_masks(offsets, spans_per_row) -> list[list[int]]:
        """1 for the tokens whose characters lie inside an assistant span (`{% generation %}` blocks), else 0."""
        return [
            [int(end > start and any(s <= start and end <= e for s, e in spans)) for start, end in row_offsets]
            for row_offsets, spans in zip(torch.as_tensor(offsets).tolist(), spans_per_row, strict=True)
        ]

    def _check_placeholder_runs(self, input_ids):
        ids = torch.as_tensor(input_ids)
        for name, token_id, per_item in (
            ("video", self.video_token_id, self.num_video_tokens),
            ("image", self.image_token_id, self.num_image_tokens),
            ("audio", self.audio_token_id, self.num_audio_tokens),
        ):
            counts = (ids == token_id).sum(dim=1)
            if per_item and bool((counts % per_item).any()):
                raise ValueError(f"truncation cut through a run of {name} placeholders; raise max_length")

    def _load_image(self, item: MediaItem):
        try:
            return load_image(item.source) if isinstance(item.source, str) else item.source
        except (OSError, ValueError) as err:
            raise MediaError(_describe(item.source), f"cannot load image: {err}") from err

    # ---- public API ----------------------------------------------------------------------------------------------

    def __call__(
        self,
        text=None,
        images=None,
        videos=None,
        audio=None,
        missing_audio: str | None = None,
        return_tensors="pt",
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            text: a prompt or a batch of prompts containing `<VIS>`, `<AUD>`, `<AUD_VIS>`.
            videos / images / audio: media consumed in textual order across the batch (a flat list, or one list per
                sample). `<AUD_VIS>` takes a video and its own audio track, `<AUD>` an audio clip, `<VIS>` a video
                (or an image when the call has images and no videos). Sources: paths, URLs, bytes, file objects, or
                decoded arrays (`(T, H, W, 3)` frames, `(num_samples,)` waveforms at the extractor's rate, or
                `{"array", "sampling_rate"}`).
            missing_audio: `"error"` (default) or `"silence"` for an `<AUD_VIS>` video whose file has no audio track.
            kwargs: tokenizer arguments (`padding_side`, `truncation`, `max_length`, ...), and
                `return_video_metadata=True` to add `video_timestamps`: per video, the seconds of its sampled frames.
        Returns:
            `BatchFeature` with `input_ids`, `attention_mask`, `mm_token_type_ids` and, when present,
            `pixel_values_videos (num_videos, T, 3, H, W)`, `pixel_values (num_images, 3, H, W)`,
            `input_features (num_audios, K, *segment_shape)`.
        """
        texts = [text] if isinstance(text, str) else list(text)
        queues = {kind: _flatten(media) for kind, media in (("video", videos), ("image", images), ("audio", audio))}
        if queues["video"] and queues["image"] and any(self.vis_token in t for t in texts):
            raise ValueError(
                f"{self.vis_token} is ambiguous when a call has both videos and images; use apply_chat_template"
            )
        visual_kind = "video" if queues["video"] or not queues["image"] else "image"
        kind_of_marker = {self.aud_vis_token: "video", self.vis_token: visual_kind, self.aud_token: "audio"}
        items_per_sample = []
        for index, sample_text in enumerate(texts):
            items = []
            for marker in self._marker_pattern.findall(sample_text):
                kind = kind_of_marker[marker]
                if not queues[kind]:
                    raise ValueError(f"sample {index}: {marker} has no {kind} left to consume")
                item = self._resolve_item(
                    kind, queues[kind].pop(0), marker == self.aud_vis_token, missing_audio or self.missing_audio
                )
                if item.marker != marker:
                    raise ValueError(
                        f"sample {index}: {_describe(item.source)} renders as {item.marker} for this model, "
                        f"but the text asks for {marker}"
                    )
                items.append(item)
            items_per_sample.append(items)
        leftovers = {kind: len(queue) for kind, queue in queues.items() if queue}
        if leftovers:
            raise ValueError(f"media left without a modality token in the text: {leftovers}")
        return self._encode(texts, items_per_sample, return_tensors=return_tensors, **kwargs)

    def resolve_conversation(self, conversation: list[dict], use_audio: bool = True, missing_audio: str | None = None):
        """Annotates each media content item with the modality token it renders as; returns the messages (copies)
        and the sample's `MediaItem`s in textual order."""
        missing_audio = missing_audio or self.missing_audio
        messages, items = [], []
        for message in conversation:
            content = message["content"]
            if isinstance(content, str):
                messages.append(dict(message))
                continue
            new_content = []
            for part in content:
                part = dict(part)
                if part["type"] in ("video", "audio", "image"):
                    source = next((part[key] for key in MEDIA_KEYS if part.get(key) is not None), None)
                    if source is None:
                        raise ValueError(f"a {part['type']} item needs one of {MEDIA_KEYS}: {part}")
                    item_use_audio = use_audio if part.get("use_audio") is None else part["use_audio"]
                    item = self._resolve_item(part["type"], source, item_use_audio, missing_audio)
                    part["marker"] = item.marker
                    items.append(item)
                new_content.append(part)
            messages.append({**message, "content": new_content})
        return messages, items

    def apply_chat_template(
        self,
        conversation,
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        tokenize: bool = False,
        return_dict: bool = False,
        return_tensors="pt",
        use_audio: bool = True,
        missing_audio: str | None = None,
        return_assistant_tokens_mask: bool = False,
        processor_kwargs: dict | None = None,
        **kwargs,
    ):
        """Renders chat messages (content items `{"type": "video" | "audio" | "image" | "text", "path" | "url" |
        "video" | "audio" | "image" | "text": ...}`, optional `"use_audio": False` per video) and, with
        `tokenize=True`, decodes the media and returns model inputs (a `BatchFeature` when `return_dict=True`).
        `return_assistant_tokens_mask=True` adds `assistant_masks` (1 on the assistant replies' tokens)."""
        conversations = [conversation] if isinstance(conversation[0], dict) else list(conversation)
        resolved = [self.resolve_conversation(c, use_audio, missing_audio) for c in conversations]
        prompts, generation_spans = render_jinja_template(
            conversations=[messages for messages, _ in resolved],
            chat_template=chat_template or self.chat_template,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            return_assistant_tokens_mask=return_assistant_tokens_mask,
            **{**self.tokenizer.special_tokens_map, **kwargs},
        )
        if not tokenize:
            return prompts[0] if isinstance(conversation[0], dict) else prompts
        outputs = self._encode(
            prompts,
            [items for _, items in resolved],
            return_tensors=return_tensors,
            generation_spans=generation_spans if return_assistant_tokens_mask else None,
            **(processor_kwargs or {}),
        )
        return outputs if return_dict else outputs["input_ids"]

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return [
            "input_ids",
            "attention_mask",
            "mm_token_type_ids",
            "pixel_values",
            "pixel_values_videos",
            "input_features",
        ]


def _is_file_source(source) -> bool:
    return isinstance(source, (str, bytes, bytearray)) or hasattr(source, "read") or hasattr(source, "__fspath__")


def _describe(source) -> str:
    return str(source) if isinstance(source, str) or hasattr(source, "__fspath__") else f"<{type(source).__name__}>"


def _flatten(media) -> list:
    if media is None:
        return []
    if not isinstance(media, list):
        return [media]
    return [item for entry in media for item in (entry if isinstance(entry, list) else [entry])]


__all__ = ["AVLlmProcessor", "MediaItem"]
