"""Textual contexts of a media file for the curation LLM (AV-LLM section 3.3, "Visual & Audio Contexts"): captions
of the frames our loader samples, from a transformers image-text-to-text model (<VC>: the paper's BLIP frame
captions), and per audio segment a caption from a transformers audio-text-to-text model (<AC>: the paper's audio
segment captions; e.g. Qwen2-Audio), or, as the light fallback, the sound events a transformers audio model hears
(zero-shot with CLAP, or any audio classifier); optionally what is said (ASR)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import AutoConfig, Pipeline, pipeline

from ..models.avllm import load_audio, load_video, probe_media, split_audio_segments

AUDIO_LABELS_FILE = Path(__file__).parent / "audio_labels.txt"
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-large"
DEFAULT_AUDIO_TAGGER = "laion/clap-htsat-unfused"
DEFAULT_AUDIO_CAPTIONER = "Qwen/Qwen2-Audio-7B-Instruct"
AUDIO_CAPTION_PROMPT = "Describe the audio in one sentence."
# Models whose checkpoints tag audio zero-shot against candidate labels (contrastive audio-text models).
ZERO_SHOT_AUDIO_MODELS = ("clap",)


@dataclass
class MediaContext:
    """What the perception models found in one file. `path` is relative to the media folder."""

    path: str
    has_video: bool
    has_audio: bool
    duration: float
    frames: list[dict] = field(default_factory=list)  # {"time": s, "caption": str}
    # {"start": s, "end": s[, "caption": str][, "tags": [[label, score], ...]][, "speech": str]}
    segments: list[dict] = field(default_factory=list)

    @property
    def sample_types(self) -> tuple[str, ...]:
        """The sample types this file can give: audio (`<AUD>`), visual (`<VIS>`), audio-visual (`<AUD_VIS>`)."""
        types = [
            ("audio", self.has_audio),
            ("visual", self.has_video),
            ("audio_visual", self.has_video and self.has_audio),
        ]
        return tuple(name for name, possible in types if possible)

    def visual_text(self) -> str:
        """<VC>: one line per sampled frame, `[t s] caption`."""
        return "\n".join(f"[{frame['time']:.1f}s] {frame['caption']}" for frame in self.frames)

    def audio_text(self) -> str:
        """<AC>: one line per segment, `[t0-t1 s] caption`, or `[t0-t1 s] label (score), ...` from a tagger alone
        (both: `caption; sound events: ...`), then what is said, if anything."""
        lines = []
        for segment in self.segments:
            tags = ", ".join(f"{label} ({score:.2f})" for label, score in segment.get("tags", []))
            if "caption" in segment:
                heard = segment["caption"] + (f"; sound events: {tags}" if tags else "")
            else:
                heard = tags or "no sound event"
            speech = f'; speech: "{segment["speech"]}"' if segment.get("speech") else ""
            lines.append(f"[{segment['start']:.1f}-{segment['end']:.1f}s] {heard}{speech}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def _pipeline(task: str, model, device) -> Pipeline:
    """A transformers pipeline from a model id, a folder or a loaded model; a given pipeline as it is."""
    return model if isinstance(model, Pipeline) else pipeline(task, model=model, device=device)


def _model_type(model) -> str:
    if isinstance(model, (str, Path)):
        return AutoConfig.from_pretrained(model).model_type
    return (model.model if isinstance(model, Pipeline) else model).config.model_type


class FrameCaptioner:
    """Captions frames with a transformers image-text-to-text model (BLIP by default, as in AV-LLM; any model of
    that pipeline works). Models with a chat template are asked `prompt`; others get `prompt` as the caption's
    beginning (BLIP's conditional captioning), so it should read as one ("a picture of")."""

    def __init__(
        self,
        model=DEFAULT_CAPTIONER,
        prompt: str | None = None,
        max_new_tokens: int = 30,
        batch_size: int = 8,
        device=None,
    ):
        self.pipe = _pipeline("image-text-to-text", model, device)
        self.chat = getattr(self.pipe.processor, "chat_template", None) is not None
        self.prompt = prompt or ("Describe this image in one sentence." if self.chat else "a picture of")
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, frames: np.ndarray) -> list[str]:
        """`frames (T, H, W, 3)` uint8 -> T captions."""
        images = [Image.fromarray(frame) for frame in frames]
        captions = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            if self.chat:
                inputs = {
                    "text": [
                        [
                            {
                                "role": "user",
                                "content": [{"type": "image", "image": image}, {"type": "text", "text": self.prompt}],
                            }
                        ]
                        for image in batch
                    ]
                }
            else:
                inputs = {"images": batch, "text": [self.prompt] * len(batch)}
            outputs = self.pipe(**inputs, max_new_tokens=self.max_new_tokens, return_full_text=False)
            captions += [_generated_text(output) for output in outputs]
        return captions


def _generated_text(output) -> str:
    output = output[0] if isinstance(output, list) else output
    text = output["generated_text"]
    return (text if isinstance(text, str) else text[-1]["content"]).strip()


class AudioCaptioner:
    """Captions audio segments with a transformers audio-text-to-text model: any model of transformers' `any-to-any`
    pipeline (`AutoModelForMultimodalLM`) that takes audio and has a chat template, e.g. Qwen2-Audio (the default,
    `Qwen/Qwen2-Audio-7B-Instruct`: a GPU-sized model; the CLAP `AudioTagger` is the light alternative), asked
    `prompt` about each segment. AV-LLM's audio context is such captions (section 3.3: "a pre-trained HTSAT [56] model
    to extract audio segment captions")."""

    def __init__(
        self,
        model=DEFAULT_AUDIO_CAPTIONER,
        prompt: str = AUDIO_CAPTION_PROMPT,
        max_new_tokens: int = 40,
        device=None,
    ):
        self.pipe = _pipeline("any-to-any", model, device)
        if getattr(self.pipe.processor, "chat_template", None) is None:
            name = self.pipe.model.name_or_path
            raise ValueError(f"{name}: no chat template; an audio captioner is asked its prompt in a chat")
        self.prompt, self.max_new_tokens = prompt, max_new_tokens
        self.sampling_rate = self.pipe.processor.feature_extractor.sampling_rate

    def messages(self, segment: np.ndarray) -> list[dict]:
        """The chat asking for one segment's caption: the waveform (at `sampling_rate`), then the prompt."""
        content = [{"type": "audio", "audio": segment}, {"type": "text", "text": self.prompt}]
        return [{"role": "user", "content": content}]

    def __call__(self, segments: list[np.ndarray]) -> list[str]:
        """Waveforms at `sampling_rate` -> one caption per segment."""
        chats = [self.messages(segment) for segment in segments]
        outputs = self.pipe(text=chats, max_new_tokens=self.max_new_tokens, return_full_text=False)
        return [_generated_text(output) for output in outputs]


def read_labels(path: str | Path) -> list[str]:
    """Labels from a text file, one per line; blank lines and `#` comments skipped."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    labels = [line for line in lines if line]
    if not labels:
        raise ValueError(f"{path}: no labels")
    return labels


class AudioTagger:
    """Sound events per audio segment: zero-shot against `labels` with a contrastive audio-text model (CLAP), or the
    labels of any audio classifier (e.g. AST fine-tuned on AudioSet). Keeps the `top_k` labels with their scores."""

    def __init__(self, model=DEFAULT_AUDIO_TAGGER, labels: list[str] | None = None, top_k: int = 3, device=None):
        self.zero_shot = _model_type(model) in ZERO_SHOT_AUDIO_MODELS
        task = "zero-shot-audio-classification" if self.zero_shot else "audio-classification"
        self.pipe = _pipeline(task, model, device)
        self.labels = labels or read_labels(AUDIO_LABELS_FILE)
        self.top_k = top_k
        self.sampling_rate = self.pipe.feature_extractor.sampling_rate

    def __call__(self, segments: list[np.ndarray]) -> list[list[list]]:
        """Waveforms at `sampling_rate` -> per segment `[[label, score], ...]`, best first."""
        tags = []
        for segment in segments:
            if self.zero_shot:
                scores = self.pipe(segment, candidate_labels=self.labels)[: self.top_k]
            else:
                scores = self.pipe({"raw": segment, "sampling_rate": self.sampling_rate}, top_k=self.top_k)
            tags.append([[item["label"], round(float(item["score"]), 4)] for item in scores])
        return tags


class SpeechTranscriber:
    """What is said in each audio segment, with a transformers speech-recognition model (e.g. Whisper)."""

    def __init__(self, model, device=None):
        self.pipe = _pipeline("automatic-speech-recognition", model, device)

    def __call__(self, segments: list[np.ndarray], sampling_rate: int) -> list[str]:
        """Waveforms at `sampling_rate` (resampled to the model's rate by the pipeline) -> one text per segment."""
        outputs = self.pipe([{"raw": segment, "sampling_rate": sampling_rate} for segment in segments])
        return [output["text"].strip() for output in outputs]


@dataclass
class Perception:
    """The models that describe media: without a frame captioner no visual context (and no visual samples), without
    an audio captioner or a tagger no audio context (and no audio samples); the transcriber is optional. With both an
    audio captioner and a tagger, each segment gets its caption and its tags."""

    captioner: FrameCaptioner | None = None
    tagger: AudioTagger | None = None
    transcriber: SpeechTranscriber | None = None
    audio_captioner: AudioCaptioner | None = None


def describe_media(
    path: Path, root: Path, perception: Perception, num_frames: int = 8, num_segments: int = 4
) -> MediaContext:
    """The context of one file: captions of `num_frames` frames sampled as the training loader samples them, and for
    `num_segments` equal audio segments their captions and / or tags (+ speech). A file's video (audio) is used only
    when it has that stream and the perception has a frame captioner (an audio captioner or a tagger). Raises the
    media loader's `MediaError`s."""
    captioner, transcriber = perception.captioner, perception.transcriber
    listeners = {"caption": perception.audio_captioner, "tags": perception.tagger}
    listeners = {key: model for key, model in listeners.items() if model is not None}
    info = probe_media(path)
    context = MediaContext(
        path=str(path.relative_to(root)),
        has_video=info.has_video and captioner is not None,
        has_audio=info.has_audio and bool(listeners),
        duration=round(info.duration or 0.0, 3),
    )
    if context.has_video:
        clip = load_video(path, num_frames)
        context.frames = [
            {"time": round(time, 2), "caption": caption}
            for time, caption in zip(clip.timestamps, captioner(clip.frames), strict=True)
        ]
    if context.has_audio:
        heard, rate = {}, None
        for key, model in listeners.items():  # each model hears the segments at its own sampling rate
            waveform = load_audio(path, model.sampling_rate)
            segments = split_audio_segments(waveform, num_segments)
            heard[key] = model(segments)
            if rate is None:
                rate, first = model.sampling_rate, segments
                context.duration = context.duration or round(len(waveform) / rate, 3)
        speech = transcriber(first, rate) if transcriber is not None else [None] * num_segments
        step = len(first[0]) / rate
        context.segments = [
            {"start": round(index * step, 2), "end": round(min((index + 1) * step, context.duration), 2)}
            | {key: values[index] for key, values in heard.items()}
            | ({"speech": speech[index]} if speech[index] else {})
            for index in range(num_segments)
        ]
    return context
