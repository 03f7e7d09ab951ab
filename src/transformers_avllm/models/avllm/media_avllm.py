"""Media decoding with PyAV: opening sources, a file's own audio track, container probing, and the errors; frame
sampling lives in `video_avllm.py`, which opens containers with the helpers here.

Self-contained (standard library, numpy, transformers, optional PyAV) so that it can ship as Hub remote code.
Every PyAV/FFmpeg failure is re-raised as a ``MediaError`` subclass that names the source and the reason.
"""

from __future__ import annotations

import contextlib
import io
import numbers
import os
import re
import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from transformers.image_utils import load_image
from transformers.utils import is_av_available, is_torchaudio_available

if is_av_available():
    import av
if is_torchaudio_available():
    import torchaudio

__all__ = [
    "MediaDecodeError",
    "MediaError",
    "MediaInfo",
    "MediaNotFoundError",
    "MediaTimeoutError",
    "MediaTooLargeError",
    "MissingStreamError",
    "describe_source",
    "is_file_source",
    "load_audio",
    "load_picture",
    "load_waveform",
    "probe_media",
    "sample_audio_clips",
    "split_audio_segments",
]

# File endings of the containers the loaders are used on (anything FFmpeg opens works when named directly).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
MAX_DURATION_S = 24 * 3600.0
MAX_SAMPLING_RATE = 384_000

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_AUDIO_CHUNK_S = 1.0  # resample in chunks of about this length (much faster than per decoded frame)


class MediaError(Exception):
    """A media source could not be used. ``.path`` names the source, ``.reason`` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.path, self.reason)


class MediaNotFoundError(MediaError):
    """The path does not exist or is a directory."""


class MediaDecodeError(MediaError):
    """The data is corrupt, truncated, empty or undecodable, or too few frames/samples came back."""


class MissingStreamError(MediaError):
    """The file has no stream of the requested kind (audio of a silent video, video of an audio file)."""


class MediaTimeoutError(MediaDecodeError):
    """Opening or decoding took longer than the allowed time."""


class MediaTooLargeError(MediaError):
    """The file or the request is absurdly large (frame pixels, duration, number of frames, output size)."""


@dataclass
class MediaInfo:
    """What a container holds. width/height are the coded size (before display rotation)."""

    has_video: bool
    has_audio: bool
    duration: float | None
    width: int | None
    height: int | None
    fps: float | None


def is_file_source(source) -> bool:
    """Whether the loaders open `source` (a path, URL, bytes or binary file object), as opposed to media given already
    decoded (arrays, tensors, images)."""
    return isinstance(source, (str, bytes, bytearray, memoryview, os.PathLike)) or hasattr(source, "read")


def describe_source(source) -> str:
    """Name of a media source for error messages: its path or URL, a file object's name, else what it is."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    name = getattr(source, "name", None) if hasattr(source, "read") else None
    if isinstance(name, str):
        return name
    return "<file object>" if hasattr(source, "read") else f"<{type(source).__name__}>"


def _label(source) -> str:
    """`describe_source` of a source the loaders open; `TypeError` for any other."""
    if not is_file_source(source):
        raise TypeError(f"media source must be a path, URL, bytes or binary file object, not {type(source).__name__}")
    return describe_source(source)


def _translate(label: str, err: Exception) -> MediaError:
    """Map a PyAV/FFmpeg/OS exception to our error type."""
    reason = f"{type(err).__name__}: {err}"
    if isinstance(err, (av.error.FileNotFoundError, av.error.IsADirectoryError, av.error.HTTPNotFoundError)):
        return MediaNotFoundError(label, reason)
    if isinstance(err, (av.error.ExitError, av.error.TimeoutError)):
        return MediaTimeoutError(label, reason)
    return MediaDecodeError(label, reason)


@contextlib.contextmanager
def _open(source, timeout: float):
    """Open ``source`` with PyAV; yield (container, label); translate errors raised inside the block."""
    if not is_av_available():
        raise ImportError("Decoding media needs PyAV: `pip install av`.")
    label = _label(source)
    kwargs = {}
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise MediaDecodeError(label, "empty input (0 bytes)")
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        source = label
        if _URL.match(source):
            kwargs["timeout"] = timeout
        elif not os.path.exists(source):
            raise MediaNotFoundError(label, "no such file")
        elif os.path.isdir(source):
            raise MediaNotFoundError(label, "is a directory, not a media file")
        elif os.path.getsize(source) == 0:
            raise MediaDecodeError(label, "empty file (0 bytes)")
    try:
        with av.open(source, **kwargs) as container:
            yield container, label
    except (av.error.FFmpegError, OSError, ValueError, IndexError, EOFError) as err:
        raise _translate(label, err) from err


class _Deadline:
    """Raises MediaTimeoutError once ``timeout`` seconds have passed since creation."""

    def __init__(self, label: str, timeout: float):
        self.label, self.timeout = label, timeout
        self.end = time.monotonic() + timeout

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise MediaTimeoutError(self.label, f"decoding took longer than the {self.timeout:g} s limit")


def _check_timeout(timeout: float) -> None:
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")


def _seconds(value, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _stream_duration(container, stream) -> float | None:
    """Duration (s) of a stream; the container's when the stream does not say (mkv/webm)."""
    duration = _seconds(stream.duration, stream.time_base)
    if not duration and container.duration:
        duration = container.duration / 1e6
    return duration or None


def _stream_start(container, stream) -> float:
    start = _seconds(stream.start_time, stream.time_base)
    if start is None and container.start_time is not None:
        start = container.start_time / 1e6
    return start or 0.0


def _video_stream(container):
    """First real video stream (cover art attached to audio files does not count)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _check_duration(label: str, duration: float | None) -> None:
    if duration is not None and duration > MAX_DURATION_S:
        raise MediaTooLargeError(label, f"duration {duration:.0f} s exceeds the {MAX_DURATION_S:.0f} s limit")


def _is_positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def load_audio(
    source, sampling_rate: int, *, timeout: float = 60.0, allow_missing: bool = False, duration: float | None = None
) -> np.ndarray:
    """The file's own audio track as float32 mono (num_samples,) at ``sampling_rate`` (channel mean).

    Length is ``round(duration * sampling_rate)``; ``duration`` defaults to the audio stream's own (this trims AAC
    priming/padding; a longer requested duration zero-pads the end). Audio that decodes much shorter than the
    stream declares (max(0.5 s, 5%)) raises MediaDecodeError, as do packets the decoder rejects. With no audio
    stream: MissingStreamError, or with ``allow_missing`` zeros of the requested or container duration (the only
    case that yields a silent track).
    """
    label = _label(source)
    if not _is_positive_int(sampling_rate):
        raise ValueError(f"sampling_rate must be a positive int, got {sampling_rate!r}")
    if sampling_rate > MAX_SAMPLING_RATE:
        raise MediaTooLargeError(label, f"sampling_rate {sampling_rate} exceeds {MAX_SAMPLING_RATE}")
    if duration is not None and not duration >= 0:
        raise ValueError(f"duration must be >= 0 seconds, got {duration}")
    _check_duration(label, duration)
    _check_timeout(timeout)
    deadline = _Deadline(label, timeout)
    with _open(source, timeout) as (container, _):
        if not container.streams.audio:
            if not allow_missing:
                raise MissingStreamError(label, "no audio stream")
            total = duration if duration is not None else (container.duration or 0) / 1e6 or None
            if total is None:
                raise MediaDecodeError(label, "no audio stream and no duration to make silence of")
            _check_duration(label, total)
            return np.zeros(round(total * sampling_rate), dtype=np.float32)
        stream = container.streams.audio[0]
        declared = _stream_duration(container, stream)
        _check_duration(label, declared)
        wave = _decode_audio(container, stream, sampling_rate, label, deadline)
    if declared is not None and len(wave) < (declared - max(0.5, 0.05 * declared)) * sampling_rate:
        raise MediaDecodeError(
            label,
            f"decoded only {len(wave) / sampling_rate:.2f} s of audio but the stream "
            f"lasts {declared:.2f} s (file truncated?)",
        )
    wanted = duration if duration is not None else declared
    if wanted is None:
        return wave
    length = round(wanted * sampling_rate)
    return wave[:length] if len(wave) >= length else np.pad(wave, (0, length - len(wave)))


def load_waveform(source, sampling_rate: int, *, allow_missing: bool = False) -> np.ndarray:
    """Mono float32 `(num_samples,)` at `sampling_rate` of an audio source: a file's own audio track (`load_audio`;
    `allow_missing`: silence for a file without one), or a waveform given decoded: an array at `sampling_rate`,
    `(array, rate)` or datasets' `{"array", "sampling_rate"}` (a 2-D array's channels are averaged)."""
    if is_file_source(source):
        return load_audio(source, sampling_rate, allow_missing=allow_missing)
    waveform, source_rate = source, sampling_rate
    if isinstance(waveform, dict):  # datasets' Audio feature
        waveform, source_rate = waveform["array"], waveform["sampling_rate"]
    elif isinstance(waveform, tuple):
        waveform, source_rate = waveform
    waveform = torch.as_tensor(np.asarray(waveform), dtype=torch.float32)
    if waveform.ndim == 2:
        waveform = waveform.mean(dim=0)
    if source_rate != sampling_rate:
        waveform = torchaudio.functional.resample(waveform, source_rate, sampling_rate)
    return waveform.numpy()


def load_picture(source):
    """An image source as the image processor takes it: a path or URL is loaded (`MediaError` naming it when it
    cannot be), anything else (a PIL image, an array) is given as it is."""
    try:
        return load_image(source) if isinstance(source, str) else source
    except (OSError, ValueError) as err:
        raise MediaError(describe_source(source), f"cannot load image: {err}") from err


def _decode_audio(container, stream, sampling_rate, label, deadline) -> np.ndarray:
    """Decode, buffer ~1 s chunks in an AudioFifo, resample to planar float at the source layout, average channels."""
    fifo, resampler, chunk, planes = av.AudioFifo(), None, 0, []
    for frame in container.decode(stream):
        deadline.check()
        if resampler is None:
            resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=sampling_rate)
            chunk = max(1, round(frame.sample_rate * _AUDIO_CHUNK_S))
        frame.pts = None  # the fifo rejects timestamp gaps; the resampler does not need them
        fifo.write(frame)
        while fifo.samples >= chunk:
            planes += [f.to_ndarray() for f in resampler.resample(fifo.read(chunk))]
    if resampler is None:
        raise MediaDecodeError(label, "the audio stream decoded to no samples")
    planes += [f.to_ndarray() for f in resampler.resample(fifo.read())]
    planes += [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate(planes, axis=1).mean(axis=0, dtype=np.float32)


def probe_media(source, *, timeout: float = 60.0) -> MediaInfo:
    """Streams, duration (s), coded size and average frame rate, from the container headers (no decoding)."""
    _check_timeout(timeout)
    with _open(source, timeout) as (container, _):
        video = _video_stream(container)
        audio = container.streams.audio[0] if container.streams.audio else None
        main = video or audio
        rate = (video.average_rate or video.guessed_rate) if video is not None else None
        duration = _stream_duration(container, main) if main is not None else None
        return MediaInfo(
            has_video=video is not None,
            has_audio=audio is not None,
            duration=duration,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            fps=float(rate) if rate else None,
        )


def split_audio_segments(waveform: np.ndarray, num_segments: int) -> list[np.ndarray]:
    """Split (num_samples,) into ``num_segments`` contiguous chunks of ceil(num_samples / K) samples each.

    Only the end of the last chunk is zero-padded, so all chunks have the same length.
    """
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be 1-D (num_samples,), got shape {waveform.shape}")
    if not _is_positive_int(num_segments):
        raise ValueError(f"num_segments must be a positive int, got {num_segments!r}")
    length = -(-len(waveform) // num_segments)
    padded = np.pad(waveform, (0, length * num_segments - len(waveform)))
    return list(padded.reshape(num_segments, length))


def audio_clip_bounds(
    duration: float, sampling_rate: int, num_clips: int = 8, clip_seconds: int = 2
) -> list[tuple[int, int]]:
    """Sample bounds `[start, end)` of VideoLLaMA 2's audio clips of a track lasting `duration` seconds: clip k starts
    at `k * max(duration - clip_seconds, 0) / num_clips` s and lasts `clip_seconds` (pytorchvideo's
    `ConstantClipsPerVideoSampler`, in the same exact fractions, so that the bounds are VideoLLaMA 2's to the
    sample)."""
    step = Fraction(max(duration - clip_seconds, 0)) / num_clips
    return [(int(step * k * sampling_rate), int((step * k + clip_seconds) * sampling_rate)) for k in range(num_clips)]


def sample_audio_clips(
    waveform: np.ndarray, sampling_rate: int, num_clips: int = 8, clip_seconds: int = 2
) -> np.ndarray:
    """VideoLLaMA 2's audio of a video (`process_audio_from_video`): the clips of `audio_clip_bounds` concatenated,
    `(num_samples,)`. A clip running past the end stops there, so a track of `clip_seconds` or less comes out
    `num_clips` times over."""
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be 1-D (num_samples,), got shape {waveform.shape}")
    bounds = audio_clip_bounds(len(waveform) / sampling_rate, sampling_rate, num_clips, clip_seconds)
    return np.concatenate([waveform[start:end] for start, end in bounds])
