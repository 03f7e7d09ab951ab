"""AVLlmProcessor: chat messages with videos (frames + their own audio track), audio and images -> model inputs."""

import itertools
import re
from dataclasses import dataclass

import numpy as np
import torch
from transformers import BatchFeature, CLIPImageProcessor, ProcessorMixin, WhisperFeatureExtractor
from transformers.processing_utils import MultiModalData
from transformers.utils.chat_template_utils import render_jinja_template

from .compat_avllm import INSTALLED_TRANSFORMERS  # noqa: F401  (first: checks the installed transformers release)
from .media_avllm import (
    MissingStreamError,
    describe_source,
    is_file_source,
    load_picture,
    load_waveform,
    probe_media,
    split_audio_segments,
)
from .modality_avllm import AUDIO, AUDIO_VISUAL, MODALITY_TOKENS, PLACEHOLDER_TOKENS, VISUAL, row_type
from .video_avllm import sample_frames

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
MODALITY_TOKEN_PATTERN = re.compile("|".join(re.escape(token) for token in MODALITY_TOKENS.values()))
# What to do with a video whose file has no audio track when its audio is asked for (see `AVLlmProcessor`).
MISSING_AUDIO_POLICIES = ("error", "visual_only", "silence")


@dataclass
class MediaItem:
    """One media item of a sample: what the source is (`kind`: "image" | "video" | "audio") and what of it the model
    gets (`sample_type`, which decides the modality token it renders as)."""

    kind: str
    source: object
    sample_type: str
    silent_audio: bool = False

    @property
    def marker(self) -> str:
        return MODALITY_TOKENS[self.sample_type]

    @property
    def use_video(self) -> bool:
        """The item's frames are decoded as a video."""
        return self.kind == "video" and self.sample_type != AUDIO

    @property
    def use_audio(self) -> bool:
        return self.sample_type != VISUAL


@dataclass
class PreparedMedia:
    """A media source decoded once, up to the steps that are cheap to repeat per sample: what
    `AVLlmProcessor.prepare_media` returns and `avllm data prepare` stores, and a media source the processor takes in
    place of the file.

    Args:
        source: description of the source it was prepared from (for error messages).
        frames: `(T, 3, H, W)` (a video's sampled frames) or `(1, 3, H, W)` (an image) after the image processor's
            resize and crop, before its rescale and normalisation (uint8 with the installed image processors).
        timestamps: the seconds of a video's sampled frames.
        audio_features: `(K, *segment_shape)` float32, the feature extractor's output for the K audio segments (an
            audio file, or a video's own track; silence as long as the video when it has no track).
        has_audio: whether the source has an audio track (`audio_features` are silence otherwise).
        content_sha256: sha256 of the source file's bytes, when known (what a tower-output cache is keyed by).
    """

    source: str
    frames: torch.Tensor | None = None
    timestamps: list[float] | None = None
    audio_features: torch.Tensor | None = None
    has_audio: bool = False
    content_sha256: str | None = None


def _check_missing_audio(policy: str) -> str:
    if policy not in MISSING_AUDIO_POLICIES:
        raise ValueError(f"missing_audio must be one of {MISSING_AUDIO_POLICIES}, got {policy!r}")
    return policy


class AVLlmProcessor(ProcessorMixin):
    r"""
    Tokenizer + the vision tower's image processor + the audio tower's feature extractor. `ProcessorMixin` needs all
    three, so a one-tower model keeps a default instance of the other one, unused (its placeholder count is 0).

    A video renders as `<AUD_VIS>` when its audio is used and the file has an audio track, as `<VIS>` when the caller
    asks for video only (`use_audio=False`); an image as `<VIS>`; an audio clip as `<AUD>` (`modality_avllm.py`).
    Each modality token is expanded into exactly the placeholder tokens the model's connectors produce, in the
    paper's order (video placeholders, then audio placeholders), through `ProcessorMixin`'s per-item hooks
    (`replace_image_token`, `replace_video_token`, `replace_audio_token`).

    Why `__call__` and `apply_chat_template` are ours rather than `ProcessorMixin`'s: the mixin expects one
    placeholder token per input in the text and media its sub-processors take as they are; here one modality token
    stands for a media item that fills one or two placeholder kinds (a video's frames and its own audio track), decided
    per item (`use_audio`, `missing_audio`, the file's streams, the model's towers), and media are decoded with PyAV
    (frames sampled at segment midpoints, audio split into K segments).

    Args:
        num_frames (`int`): frames sampled per video.
        num_audio_segments (`int`): K, audio segments per clip.
        num_video_tokens / num_image_tokens / num_audio_tokens (`int`): placeholders per item (`for_model` takes
            them from the model's config).
        missing_audio (`str`, defaults to `"error"`): what to do with a video whose file has no audio track when its
            audio is asked for (`MISSING_AUDIO_POLICIES`; a call may override it): `"error"` (raise
            `MissingStreamError`), `"visual_only"` (render it as `<VIS>`) or `"silence"` (feed a silent waveform, as
            VideoLLaMA 2 does; only when explicitly chosen). Any other value raises `ValueError`.
    """

    image_token = PLACEHOLDER_TOKENS["image"]
    video_token = PLACEHOLDER_TOKENS["video"]
    audio_token = PLACEHOLDER_TOKENS["audio"]

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
        missing_audio: str = "error",
    ):
        self.num_frames = num_frames
        self.num_audio_segments = num_audio_segments
        self.num_video_tokens = num_video_tokens
        self.num_image_tokens = num_image_tokens
        self.num_audio_tokens = num_audio_tokens
        self.missing_audio = _check_missing_audio(missing_audio)
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        self.audio_token_id = tokenizer.convert_tokens_to_ids(self.audio_token)
        super().__init__(
            image_processor, feature_extractor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE
        )

    @classmethod
    def for_model(cls, config, tokenizer, image_processor=None, feature_extractor=None, **kwargs) -> "AVLlmProcessor":
        """A processor whose placeholder counts match the model `config` (an `AVLlmConfig`); an absent tower's
        preprocessor defaults to an unused default instance. `kwargs` go to `__init__`."""
        return cls(
            image_processor=CLIPImageProcessor() if image_processor is None else image_processor,
            feature_extractor=WhisperFeatureExtractor() if feature_extractor is None else feature_extractor,
            tokenizer=tokenizer,
            num_frames=config.num_frames,
            num_audio_segments=config.num_audio_segments,
            num_video_tokens=config.num_video_tokens,
            num_image_tokens=config.num_image_tokens,
            num_audio_tokens=config.num_audio_tokens,
            **kwargs,
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
            prepared = isinstance(source, PreparedMedia)
            if not (prepared or is_file_source(source)):
                raise MissingStreamError(
                    "<decoded frames>", "decoded frames carry no audio track; pass the file, or use_audio=False"
                )
            if not (source.has_audio if prepared else probe_media(source).has_audio):
                if missing_audio == "error":
                    raise MissingStreamError(
                        source.source if prepared else describe_source(source),
                        f"no audio track, but {MODALITY_TOKENS[AUDIO_VISUAL]} needs one; pass use_audio=False for "
                        "video only, or missing_audio='visual_only' / 'silence'",
                    )
                use_audio = silent = missing_audio == "silence"
        if not (self.has_vision or use_audio):
            raise ValueError(
                f"{describe_source(source)}: this model has no vision tower and the video's audio is unused"
            )
        return MediaItem("video", source, row_type(self.has_vision, use_audio), silent_audio=silent)

    def _resolve_item(self, kind: str, source, use_audio: bool, missing_audio: str) -> MediaItem:
        if kind == "video":
            return self._resolve_video(source, use_audio, missing_audio)
        if kind == "image":
            if not self.has_vision:
                raise ValueError("this model has no vision tower, but an image was given")
            return MediaItem("image", source, VISUAL)
        if not self.has_audio:
            raise ValueError("this model has no audio tower, but an audio clip was given")
        return MediaItem("audio", source, AUDIO)

    # ---- decoding ------------------------------------------------------------------------------------------------

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

    def _resized_frames(self, images) -> torch.Tensor:
        """`(N, 3, H, W)`: the image processor's resize and crop alone (no rescale or normalisation); uint8 for uint8
        input with the installed processors, so that `_normalized_frames` of it equals the processor's full pass."""
        return self.image_processor(images=images, do_rescale=False, do_normalize=False, return_tensors="pt")[
            "pixel_values"
        ]

    def _normalized_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """The image processor's remaining steps (rescale, normalisation) on `_resized_frames`' output
        `(N, 3, H, W)`."""
        geometric = {
            name: False for name in ("do_resize", "do_center_crop", "do_pad") if hasattr(self.image_processor, name)
        }
        return self.image_processor(images=frames, return_tensors="pt", **geometric)["pixel_values"]

    def prepare_media(
        self, kind: str, source, use_video: bool = True, use_audio: bool = True, silent_audio: bool = False
    ) -> PreparedMedia:
        """Decodes a `"video"`, `"image"` or `"audio"` source once: a video's sampled frames (`use_video`) and its
        audio track (`use_audio`; `silent_audio`: silence as long as the video, for a file without one), an image, or
        an audio clip, through the decoding, the image processor's resize and crop and the feature extractor. The
        processor finishes every item from this (live, or stored by `avllm data prepare`), so both give the same model
        inputs."""
        if isinstance(source, PreparedMedia):
            return source
        prepared = PreparedMedia(describe_source(source))
        if kind == "image":
            prepared.frames = self._resized_frames([load_picture(source)])
        elif kind == "video" and use_video:
            frames, prepared.timestamps = sample_frames(source, self.num_frames)
            prepared.frames = self._resized_frames(list(frames))
        if kind == "audio" or (kind == "video" and use_audio):
            rate = self.feature_extractor.sampling_rate
            waveform = load_waveform(source, rate, allow_missing=silent_audio)
            prepared.audio_features = self._audio_features([waveform])[0]
            prepared.has_audio = not silent_audio
        return prepared

    def _media_inputs(self, items: list[MediaItem]) -> tuple[dict, list[list[float] | None]]:
        """The items' model inputs: `pixel_values_videos`, `pixel_values`, `input_features` (those present) and, per
        video, the timestamps of its sampled frames. Each item is decoded (`prepare_media`) unless it comes
        prepared."""
        data = {}
        prepared = [
            self.prepare_media(item.kind, item.source, item.use_video, item.use_audio, item.silent_audio)
            for item in items
        ]
        videos = [media for item, media in zip(items, prepared, strict=True) if item.use_video]
        images = [media for item, media in zip(items, prepared, strict=True) if item.kind == "image"]
        audios = [media for item, media in zip(items, prepared, strict=True) if item.use_audio]
        if videos:
            frames = self._normalized_frames(torch.cat([media.frames for media in videos]))
            data["pixel_values_videos"] = frames.unflatten(0, (len(videos), self.num_frames))
        if images:
            data["pixel_values"] = self._normalized_frames(torch.cat([media.frames for media in images]))
        if audios:
            data["input_features"] = torch.stack([media.audio_features for media in audios])
        return data, [media.timestamps for media in videos]

    # ---- expansion and tokenisation ------------------------------------------------------------------------------

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.num_image_tokens

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        return self.video_token * self.num_video_tokens

    def replace_audio_token(self, audio_inputs: dict, audio_idx: int, **kwargs) -> str:
        return self.audio_token * self.num_audio_tokens

    def _replacements(self, items: list[MediaItem], media: dict) -> list[str]:
        """The placeholder runs of each item, from the per-input hooks: its frames' (image or video), then its
        sound's."""
        counters = {kind: itertools.count() for kind in ("image", "video", "audio")}
        runs = []
        for item in items:
            run = ""
            if item.kind == "image":
                run += self.replace_image_token(media, next(counters["image"]))
            if item.use_video:
                run += self.replace_video_token(media, next(counters["video"]))
            if item.use_audio:
                run += self.replace_audio_token(media, next(counters["audio"]))
            runs.append(run)
        return runs

    @staticmethod
    def _check_modality_tokens(texts: list[str], items_per_sample: list[list[MediaItem]]) -> None:
        for index, (text, items) in enumerate(zip(texts, items_per_sample, strict=True)):
            markers = MODALITY_TOKEN_PATTERN.findall(text)
            if [item.marker for item in items] != markers:
                raise ValueError(
                    f"sample {index}: modality tokens {markers} in the text do not match its media items "
                    f"{[item.marker for item in items]}"
                )

    @staticmethod
    def _expand(text: str, runs, spans: list[tuple[int, int]] = ()) -> tuple[str, list[tuple[int, int]]]:
        """Replaces each modality token by the next placeholder run of `runs`; returns the text and `spans`
        (character ranges of the original text outside modality tokens) moved to the expanded text."""
        shifts = []  # (end of a modality token, total growth up to it)

        def replace(match):
            run = next(runs)
            shifts.append((match.end(), (shifts[-1][1] if shifts else 0) + len(run) - len(match.group())))
            return run

        expanded = MODALITY_TOKEN_PATTERN.sub(replace, text)

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
        decode_media: bool = True,
        **tokenizer_kwargs,
    ) -> BatchFeature:
        """`decode_media=False`: the text with its placeholders expanded and no media inputs, for a caller that brings
        the media's encodings (a tower-output cache)."""
        self._check_modality_tokens(texts, items_per_sample)
        flat = [item for items in items_per_sample for item in items]
        media, timestamps = self._media_inputs(flat) if decode_media else ({}, [])
        runs = iter(self._replacements(flat, media))
        spans_per_sample = generation_spans or [[] for _ in texts]
        expanded, moved_spans = zip(
            *(self._expand(text, runs, spans) for text, spans in zip(texts, spans_per_sample, strict=True)),
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
            self._check_special_mm_tokens(list(expanded), data, modalities=["image", "video", "audio"])
        # 0 text, 1 image, 2 video, 3 audio placeholder: which modalities each row carries.
        data["mm_token_type_ids"] = self.create_mm_token_type_ids(data["input_ids"])
        batch = BatchFeature(data={**data, **media}, tensor_type=return_tensors)
        if return_video_metadata:  # a list per video (not a tensor): pop it before calling the model
            batch["video_timestamps"] = timestamps
        return batch

    @staticmethod
    def _assistant_masks(offsets, spans_per_row) -> list[list[int]]:
        """1 for the tokens whose characters lie inside an assistant span (`{% generation %}` blocks), else 0."""
        return [
            [int(end > start and any(s <= start and end <= e for s, e in spans)) for start, end in row_offsets]
            for row_offsets, spans in zip(torch.as_tensor(offsets).tolist(), spans_per_row, strict=True)
        ]

    def _get_num_multimodal_tokens(self, image_sizes=None, video_sizes=None, audio_lengths=None, **kwargs):
        """`MultiModalData`: the placeholder tokens of each given image, video and audio clip (what serving engines ask
        a processor), whatever their sizes: frames are resized to the tower's input, every video gives `num_frames`
        frames, every clip `num_audio_segments` segments (a video's own audio track counts as one audio clip)."""
        data = {}
        if image_sizes is not None:
            data["num_image_tokens"] = [self.num_image_tokens] * len(image_sizes)
            data["num_image_patches"] = [1] * len(image_sizes)
        if video_sizes is not None:
            data["num_video_tokens"] = [self.num_video_tokens] * len(video_sizes)
        if audio_lengths is not None:
            data["num_audio_tokens"] = [self.num_audio_tokens] * len(audio_lengths)
        return MultiModalData(**data)

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
            missing_audio: overrides the processor's `missing_audio` policy (`MISSING_AUDIO_POLICIES`) for an
                `<AUD_VIS>` video whose file has no audio track.
            kwargs: tokenizer arguments (`padding_side`, `truncation`, `max_length`, ...), and
                `return_video_metadata=True` to add `video_timestamps`: per video, the seconds of its sampled frames.
        Returns:
            `BatchFeature` with `input_ids`, `attention_mask`, `mm_token_type_ids` and, when present,
            `pixel_values_videos (num_videos, T, 3, H, W)`, `pixel_values (num_images, 3, H, W)`,
            `input_features (num_audios, K, *segment_shape)`.
        """
        texts = [text] if isinstance(text, str) else list(text)
        missing_audio = _check_missing_audio(missing_audio or self.missing_audio)
        queues = {kind: _flatten(media) for kind, media in (("video", videos), ("image", images), ("audio", audio))}
        visual_token, audio_visual_token = MODALITY_TOKENS[VISUAL], MODALITY_TOKENS[AUDIO_VISUAL]
        if queues["video"] and queues["image"] and any(visual_token in t for t in texts):
            raise ValueError(
                f"{visual_token} is ambiguous when a call has both videos and images; use apply_chat_template"
            )
        visual_kind = "video" if queues["video"] or not queues["image"] else "image"
        kind_of_marker = {audio_visual_token: "video", visual_token: visual_kind, MODALITY_TOKENS[AUDIO]: "audio"}
        items_per_sample = []
        for index, sample_text in enumerate(texts):
            items = []
            for marker in MODALITY_TOKEN_PATTERN.findall(sample_text):
                kind = kind_of_marker[marker]
                if not queues[kind]:
                    raise ValueError(f"sample {index}: {marker} has no {kind} left to consume")
                item = self._resolve_item(kind, queues[kind].pop(0), marker == audio_visual_token, missing_audio)
                if item.marker != marker:
                    raise ValueError(
                        f"sample {index}: {describe_source(item.source)} renders as {item.marker} for this model, "
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
        missing_audio = _check_missing_audio(missing_audio or self.missing_audio)
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
        `missing_audio` overrides the processor's policy (`MISSING_AUDIO_POLICIES`) for this call;
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

    model_input_names = [
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "pixel_values",
        "pixel_values_videos",
        "input_features",
    ]


def _flatten(media) -> list:
    if media is None:
        return []
    if not isinstance(media, list):
        return [media]
    return [item for entry in media for item in (entry if isinstance(entry, list) else [entry])]


AVLlmProcessor.register_for_auto_class()

__all__ = ["AVLlmProcessor", "MediaItem", "MISSING_AUDIO_POLICIES", "PreparedMedia"]
