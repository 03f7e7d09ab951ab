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
    sample_audio_clips,
    split_audio_segments,
)
from .modality_avllm import AUDIO, AUDIO_VISUAL, MODALITY_TOKENS, PLACEHOLDER_TOKENS, VISUAL, row_type
from .video_avllm import sample_frames

# The Jinja macro `render(content)` of a message's content: a string as it is, content items in order, text items as
# their text and each media item as its modality token (`marker`, set by `resolve_conversation`) and a newline.
RENDER_CONTENT_MACRO = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'text' -%}{{ item['text'] }}{%- else -%}{{ item['marker'] ~ '\\n' }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)
# Vicuna v1 turns (the AV-LLM LLM), with `{% generation %}` around assistant replies for assistant-only losses.
DEFAULT_CHAT_TEMPLATE = RENDER_CONTENT_MACRO + (
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
# Where a video's audio placeholders go relative to its video placeholders (`AVLlmConfig.audio_visual_order`).
AUDIO_VISUAL_ORDERS = ("visual_first", "audio_first")
# How the sound of a video item is taken from its track (see `AVLlmProcessor`).
AUDIO_SAMPLING_MODES = ("segments", "videollama2")


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
        audio_features: `(W * K, *window_shape)` float32, the feature extractor's output for the W windows of the K
            audio segments (an audio file, or a video's own track; silence as long as the video when it has no
            track), laid out as `AVLlmProcessor._audio_features` lays them out.
        audio_mask: `(W * K, F)`, 1 on the feature frames of real audio (`input_features_mask`).
        has_audio: whether the source has an audio track (`audio_features` are silence otherwise).
        content_sha256: sha256 of the source file's bytes, when known (what a tower-output cache is keyed by).
    """

    source: str
    frames: torch.Tensor | None = None
    timestamps: list[float] | None = None
    audio_features: torch.Tensor | None = None
    audio_mask: torch.Tensor | None = None
    has_audio: bool = False
    content_sha256: str | None = None


def pad_windows(tensor: torch.Tensor, size: int, dim: int = 0) -> torch.Tensor:
    """Zero-pads dimension `dim` of `input_features` / `input_features_mask` (the `W * K` windows of a clip) to `size`:
    the extra windows come last, so each added window is an empty one for every segment (mask 0)."""
    padding = [0, 0] * (tensor.ndim - dim - 1) + [0, size - tensor.shape[dim]]
    return torch.nn.functional.pad(tensor, padding)


def _check_missing_audio(policy: str) -> str:
    if policy not in MISSING_AUDIO_POLICIES:
        raise ValueError(f"missing_audio must be one of {MISSING_AUDIO_POLICIES}, got {policy!r}")
    return policy


def _pad_to_square(picture, fill: tuple[int, ...]) -> np.ndarray:
    """An RGB picture `(H, W, 3)` (array or PIL image) centred on a square of colour `fill` (LLaVA's and VideoLLaMA 2's
    `expand2square`: the offset is rounded down)."""
    picture = np.asarray(picture.convert("RGB") if hasattr(picture, "convert") else picture)
    height, width = picture.shape[:2]
    side = max(height, width)
    square = np.empty((side, side, picture.shape[2]), dtype=picture.dtype)
    square[:] = fill
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = picture
    return square


class AVLlmProcessor(ProcessorMixin):
    r"""
    Tokenizer + the vision tower's image processor + the audio tower's feature extractor. `ProcessorMixin` needs all
    three, so a one-tower model keeps a default instance of the other one, unused (its placeholder count is 0).

    A video renders as `<AUD_VIS>` when its audio is used and the file has an audio track, as `<VIS>` when the caller
    asks for video only (`use_audio=False`); an image as `<VIS>`; an audio clip as `<AUD>` (`modality_avllm.py`).
    Each modality token is expanded into exactly the placeholder tokens the model's connectors produce, through
    `ProcessorMixin`'s per-item hooks (`replace_image_token`, `replace_video_token`, `replace_audio_token`); a
    video with its audio track gets its video and audio runs in the model's `audio_visual_order`.

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
        audio_visual_order (`str`, defaults to `"visual_first"`): the model config's order of a video's runs,
            `"visual_first"` or `"audio_first"` (`for_model` takes it from the config).
        max_audio_windows (`int`, *optional*): audio segments longer than the feature extractor's window (Whisper:
            30 s) are covered by consecutive windows, never cropped; this caps the windows per segment (a longer clip
            raises `ValueError`). `None`: no cap.
        missing_audio (`str`, defaults to `"error"`): what to do with a video whose file has no audio track when its
            audio is asked for (`MISSING_AUDIO_POLICIES`; a call may override it): `"error"` (raise
            `MissingStreamError`), `"visual_only"` (render it as `<VIS>`) or `"silence"` (feed a silent waveform, as
            VideoLLaMA 2 does; only when explicitly chosen). Any other value raises `ValueError`.
        audio_sampling (`str`, defaults to `"segments"`): how a video item's sound is taken from its track
            (`AUDIO_SAMPLING_MODES`): `"segments"` (the whole track, split into `num_audio_segments`) or
            `"videollama2"` (VideoLLaMA 2: 8 clips of 2 s spread evenly over the track, concatenated, then cut or
            padded to the feature extractor's window; `media_avllm.sample_audio_clips`). Audio items are taken whole
            in both modes.
        pad_to_square (`bool`, defaults to `False`): pad frames and images to a square of the image processor's mean
            colour before it resizes them (VideoLLaMA 2's `image_aspect_ratio="pad"`, which it uses in training only).
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
        audio_visual_order: str = "visual_first",
        max_audio_windows: int | None = None,
        audio_sampling: str = "segments",
        pad_to_square: bool = False,
    ):
        if audio_sampling not in AUDIO_SAMPLING_MODES:
            raise ValueError(f"audio_sampling must be one of {AUDIO_SAMPLING_MODES}, got {audio_sampling!r}")
        self.audio_sampling = audio_sampling
        self.pad_to_square = pad_to_square
        self.num_frames = num_frames
        self.num_audio_segments = num_audio_segments
        self.num_video_tokens = num_video_tokens
        self.num_image_tokens = num_image_tokens
        self.num_audio_tokens = num_audio_tokens
        self.missing_audio = _check_missing_audio(missing_audio)
        if audio_visual_order not in AUDIO_VISUAL_ORDERS:
            raise ValueError(f"audio_visual_order must be one of {AUDIO_VISUAL_ORDERS}, got {audio_visual_order!r}")
        self.audio_visual_order = audio_visual_order
        if max_audio_windows is not None and max_audio_windows < 1:
            raise ValueError(f"max_audio_windows must be None or >= 1, got {max_audio_windows}")
        self.max_audio_windows = max_audio_windows
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
            audio_visual_order=config.audio_visual_order,
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

    def _audio_features(self, waveform: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """`input_features (W * K, *window_shape)` and `input_features_mask (W * K, F)` of a mono waveform. The clip is
        split into K segments; a segment longer than the feature extractor's window is covered by consecutive windows,
        W of them for every segment (the most any segment needs, a last window holding what is left; extra windows are
        padding), laid out window by window: the first windows of the K segments, then their second windows, and so
        on. The mask marks the feature frames of real audio, from the extractor's own attention mask where it gives
        one (Whisper: one per hop), else one flag per window."""
        extractor = self.feature_extractor
        window = getattr(extractor, "n_samples", None) or getattr(extractor, "nb_max_samples", None)
        length = -(-len(waveform) // self.num_audio_segments)  # split_audio_segments pads only the last one
        # a windowed extractor gets the real samples only (it pads each window itself); any other takes whole
        # segments of equal length
        segments = [
            segment[: max(0, min(length, len(waveform) - index * length))] if window else segment
            for index, segment in enumerate(split_audio_segments(waveform, self.num_audio_segments))
        ]
        num_windows = max(1, max(-(-len(segment) // window) for segment in segments)) if window else 1
        if self.max_audio_windows is not None and num_windows > self.max_audio_windows:
            seconds = max(len(segment) for segment in segments) / extractor.sampling_rate
            raise ValueError(
                f"an audio segment of {seconds:.1f} s needs {num_windows} windows of "
                f"{window / extractor.sampling_rate:g} s, more than max_audio_windows={self.max_audio_windows}"
            )
        chunks = [  # (W, K) in order
            segment[index * window : (index + 1) * window] if window else segment
            for index in range(num_windows)
            for segment in segments
        ]
        empty = [len(chunk) == 0 for chunk in chunks]
        extracted = extractor(
            [chunk if len(chunk) else np.zeros(1, dtype=np.float32) for chunk in chunks],
            sampling_rate=extractor.sampling_rate,
            return_attention_mask=True,
            return_tensors="pt",
        )
        features = extracted["input_features"] if "input_features" in extracted else extracted["input_values"]
        mask = extracted["attention_mask"] if "attention_mask" in extracted else torch.ones(len(chunks), 1)
        return features, mask.long().masked_fill(torch.tensor(empty)[:, None], 0)

    def _sound(self, kind: str, source, silent: bool = False) -> np.ndarray:
        """The waveform of an audio or video source: its track (`silent`: silence as long as a video without one),
        sampled as `audio_sampling` says for a video."""
        rate = self.feature_extractor.sampling_rate
        waveform = load_waveform(source, rate, allow_missing=silent)
        if self.audio_sampling == "videollama2" and kind == "video":
            return sample_audio_clips(waveform, rate)
        return waveform

    def _resized_frames(self, pictures: list) -> torch.Tensor:
        """`(N, 3, H, W)` from RGB frames or images: padded to squares first when `pad_to_square`, then the image
        processor's resize and crop alone (no rescale or normalisation); uint8 for uint8 input with the installed
        processors, so that `_normalized_frames` of it equals the processor's full pass."""
        if self.pad_to_square:
            fill = tuple(int(255 * mean) for mean in self.image_processor.image_mean)
            pictures = [_pad_to_square(picture, fill) for picture in pictures]
        return self.image_processor(images=pictures, do_rescale=False, do_normalize=False, return_tensors="pt")[
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
            waveform = self._sound(kind, source, silent_audio)
            prepared.audio_features, prepared.audio_mask = self._audio_features(waveform)
            prepared.has_audio = not silent_audio
        return prepared

    def _media_inputs(self, items: list[MediaItem]) -> tuple[dict, list[list[float] | None]]:
        """The items' model inputs: `pixel_values_videos`, `pixel_values`, `input_features` with
        `input_features_mask` (those present; clips covered by fewer windows than the call's most are padded with
        empty windows) and, per video, the timestamps of its sampled frames. Each item is decoded (`prepare_media`)
        unless it comes prepared."""
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
            windows = max(media.audio_features.shape[0] for media in audios)
            data["input_features"] = torch.stack([pad_windows(media.audio_features, windows) for media in audios])
            data["input_features_mask"] = torch.stack([pad_windows(media.audio_mask, windows) for media in audios])
        return data, [media.timestamps for media in videos]

    # ---- expansion and tokenisation ------------------------------------------------------------------------------

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.num_image_tokens

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        return self.video_token * self.num_video_tokens

    def replace_audio_token(self, audio_inputs: dict, audio_idx: int, **kwargs) -> str:
        return self.audio_token * self.num_audio_tokens

    def _replacements(self, items: list[MediaItem], media: dict) -> list[str]:
        """The placeholder runs of each item, from the per-input hooks: its frames' (image or video) and its sound's,
        in `audio_visual_order`."""
        counters = {kind: itertools.count() for kind in ("image", "video", "audio")}
        runs = []
        for item in items:
            frames = sound = ""
            if item.kind == "image":
                frames = self.replace_image_token(media, next(counters["image"]))
            if item.use_video:
                frames = self.replace_video_token(media, next(counters["video"]))
            if item.use_audio:
                sound = self.replace_audio_token(media, next(counters["audio"]))
            runs.append(sound + frames if self.audio_visual_order == "audio_first" else frames + sound)
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
            `input_features (num_audios, W * K, *window_shape)` with `input_features_mask (num_audios, W * K, F)`
            (K segments per clip, each covered by W windows; see `_audio_features`).
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
        "input_features_mask",
    ]


def _flatten(media) -> list:
    if media is None:
        return []
    if not isinstance(media, list):
        return [media]
    return [item for entry in media for item in (entry if isinstance(entry, list) else [entry])]


AVLlmProcessor.register_for_auto_class()

__all__ = [
    "AUDIO_SAMPLING_MODES",
    "AUDIO_VISUAL_ORDERS",
    "AVLlmProcessor",
    "MediaItem",
    "MISSING_AUDIO_POLICIES",
    "PreparedMedia",
    "RENDER_CONTENT_MACRO",
    "pad_windows",
]
