"""Media decoding with PyAV: N uniformly sampled RGB frames of a video and a file's own audio track.

Self-contained (standard library, numpy, transformers, optional PyAV) so that it can ship as Hub remote code.
Every PyAV/FFmpeg failure is re-raised as a ``MediaError`` subclass that names the source and the reason.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import io
import itertools
import math
import numbers
import os
import re
import time
from dataclasses import dataclass

import numpy as np
from transformers.utils import is_av_available

if is_av_available():
    import av
    from av.video.reformatter import VideoReformatter

__all__ = [
    "MediaDecodeError",
    "MediaError",
    "MediaInfo",
    "MediaNotFoundError",
    "MediaTimeoutError",
    "MediaTooLargeError",
    "MissingStreamError",
    "VideoClip",
    "load_audio",
    "load_video",
    "probe_media",
    "sample_frame_indices",
    "split_audio_segments",
]

# File endings of the containers the loaders are used on (anything FFmpeg opens works when named directly).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
MAX_NUM_FRAMES = 10_000
MAX_SIDE = 8192  # largest requested output side
MAX_FRAME_PIXELS = 16384 * 16384  # largest coded frame a file may declare
MAX_DURATION_S = 24 * 3600.0
MAX_SAMPLING_RATE = 384_000
THREAD_TYPES = ("AUTO", "FRAME", "SLICE", "NONE")
STRATEGIES = ("auto", "sequential", "seek")

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_EPS = 1e-6  # seconds; absorbs float error in pts * time_base
_SEEK_COST_FRAMES = 8  # a seek (demuxer jump + decoder flush) costs about this many decoded frames
_SEEK_GAIN = 0.8  # seek only when the plan decodes at most 80% of the frames a sequential pass would
_BLIND_SEEK_GAP_S = 4.0  # with no keyframe index, seek only across gaps longer than this
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
class VideoClip:
    """Frames sampled from a video.

    frames: (T, H, W, 3) uint8 RGB, display rotation applied. timestamps: presentation time (s) of each returned
    frame. target_timestamps: the requested sampling times (segment midpoints). duration: seconds. fps: average
    frame rate (informational). strategy: "sequential" | "seek" | "keyframes", the decode plan that was used.
    """

    frames: np.ndarray
    timestamps: list[float]
    target_timestamps: list[float]
    duration: float
    fps: float | None
    strategy: str


@dataclass
class MediaInfo:
    """What a container holds. width/height are the coded size (before display rotation)."""

    has_video: bool
    has_audio: bool
    duration: float | None
    width: int | None
    height: int | None
    fps: float | None


def _describe(source) -> str:
    """Name of a source for error messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        return name if isinstance(name, str) else "<file object>"
    raise TypeError(f"media source must be a path, URL, bytes or binary file object, not {type(source).__name__}")


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
    label = _describe(source)
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


def _check_video_args(label, num_frames, size, thread_type, timeout, strategy) -> None:
    if not _is_positive_int(num_frames):
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if num_frames > MAX_NUM_FRAMES:
        raise MediaTooLargeError(label, f"num_frames={num_frames} exceeds the limit of {MAX_NUM_FRAMES}")
    if size is not None:
        if len(size) != 2 or not all(_is_positive_int(side) for side in size):
            raise ValueError(f"size must be (height, width) of positive ints, got {size!r}")
        if max(size) > MAX_SIDE:
            raise MediaTooLargeError(label, f"requested size {tuple(size)} has a side over {MAX_SIDE}")
    if thread_type not in THREAD_TYPES:
        raise ValueError(f"thread_type must be one of {THREAD_TYPES}, got {thread_type!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    _check_timeout(timeout)


class _VideoSampler:
    """Decodes the frames at given times from one open video stream."""

    def __init__(self, container, stream, label, deadline, size, start, rate):
        self.container, self.stream, self.label, self.deadline = container, stream, label, deadline
        self.size, self.start, self.rate = size, start, rate
        self.reformatter = VideoReformatter()  # keeps its swscale context: ~10x faster

    @functools.cached_property
    def keyframes(self) -> list[float] | None:
        """Estimated presentation times (s) of keyframes from the demuxer index; None when it has too few.

        mkv/webm load their cues on the first seek. Index timestamps are decode times; they are shifted by the
        first keyframe's decode delay so they approximate presentation times.
        """
        vs = self.stream
        if len(vs.index_entries) < 2:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                self.container.seek(vs.start_time or 0, stream=vs, backward=True)
        times = [float(e.timestamp * vs.time_base) for e in vs.index_entries if e.is_keyframe]
        if len(times) < 2:
            return None
        shift = max(0.0, self.start - times[0])
        return sorted(t + shift for t in times)

    def _keyframe_before(self, target: float) -> float:
        """The (estimated) last keyframe shown at or before ``target``; the first one if none is."""
        return self.keyframes[max(bisect.bisect_right(self.keyframes, target + _EPS) - 1, 0)]

    # -- planning -------------------------------------------------------------------------------------------------

    def _needs_seek(self, position: float, target: float) -> bool:
        """Seek iff a keyframe lies in (position, target], i.e. jumping skips decoding; blind gap rule otherwise."""
        if self.keyframes is None:
            return target - position > _BLIND_SEEK_GAP_S
        return bisect.bisect_right(self.keyframes, target) > bisect.bisect_right(self.keyframes, position)

    def choose_strategy(self, targets: list[float]) -> str:
        """ "seek" when the smart-seek plan decodes clearly fewer frames than one pass up to the last target."""
        rate = self.rate or 30.0
        sequential = (targets[-1] - self.start) * rate
        planned, position = 0.0, self.start
        for target in targets:
            if self._needs_seek(position, target):
                keyframe = self._keyframe_before(target) if self.keyframes else target
                planned += _SEEK_COST_FRAMES + (target - keyframe) * rate
            else:
                planned += (target - position) * rate
            position = target
        return "seek" if planned < _SEEK_GAIN * sequential else "sequential"

    # -- decoding -------------------------------------------------------------------------------------------------

    def _timed(self, frames, from_start: bool = True):
        """Yield (time, frame). Frames without timestamps are timed by counting at the guessed rate, which is only
        possible when ``frames`` starts at the start of the stream (not after a seek)."""
        for count, frame in enumerate(frames):
            self.deadline.check()
            if frame.time is not None:
                yield frame.time, frame
            elif from_start and self.rate:
                yield self.start + count / self.rate, frame
            else:
                raise MediaDecodeError(self.label, "frames have no timestamps (try strategy='sequential')")

    def _seek(self, target: float):
        """Seek to the keyframe at or before ``target``; return a timed iterator that starts at or before it.

        The index holds decode times, so a seek can land on a keyframe shown after ``target``; then seek earlier.
        """
        back = 0.0
        while True:
            when = max(target - back, self.start)
            self.container.seek(int(when / self.stream.time_base), stream=self.stream, backward=True, any_frame=False)
            timed = self._timed(self.container.decode(self.stream), from_start=False)
            first = next(timed, None)
            if first is None or first[0] <= target + _EPS or when <= self.start:
                return itertools.chain([first] if first else [], timed)
            back = max(2 * back, 1.0)

    def to_rgb(self, frame) -> np.ndarray:
        """(H, W, 3) uint8 RGB at ``size`` (after rotation); resized by swscale inside the decoder."""
        turns = round((frame.rotation or 0) / 90) % 4
        height, width = (None, None) if self.size is None else self.size[::-1] if turns % 2 else self.size
        array = self.reformatter.reformat(frame, width=width, height=height, format="rgb24").to_ndarray()
        return np.rot90(array, turns) if turns else array

    def decode(self, targets: list[float], strategy: str, duration: float, frames=None):
        """Return (times, arrays) for ``targets``: the first frame shown at or after each.

        "sequential" reads ``frames`` (default: the whole stream) once; "seek" jumps when a keyframe lies between
        the decode position and the next target. Targets past the last frame get the last frame when it is near the
        end of the stream; frames stopping well before ``duration`` mean truncation and raise MediaDecodeError
        (frame threading swallows the decoder's own error).
        """
        timed = self._timed(frames if frames is not None else self.container.decode(self.stream))
        times, arrays = [], []
        current, array = None, None  # the latest decoded (time, frame) and its RGB array once converted
        for target in targets:
            if current is None or current[0] + _EPS < target:
                if strategy == "seek" and self._needs_seek(current[0] if current else -math.inf, target):
                    timed = self._seek(target)
                for current in timed:
                    array = None
                    if current[0] + _EPS >= target:
                        break
                if current is None or current[0] + _EPS < target:
                    break
            if array is None:
                array = self.to_rgb(current[1])
            times.append(current[0])
            arrays.append(array)
        missing = len(targets) - len(arrays)
        if missing:
            tolerance = max(3 / (self.rate or 25.0), 0.5, 0.05 * duration)
            if current is None or current[0] < targets[-1] - tolerance:
                stop = "no frames" if current is None else f"frames stop at {current[0]:.2f} s"
                raise MediaDecodeError(
                    self.label,
                    f"decoded only {len(arrays)} of {len(targets)} frames; {stop} "
                    f"but the stream lasts {duration:.2f} s (file truncated?)",
                )
            times += [current[0]] * missing
            arrays += [array if array is not None else self.to_rgb(current[1])] * missing
        return times, arrays

    def decode_keyframes(self, targets: list[float]):
        """For each target, the first frame decoded after seeking to it (a keyframe); reuse when it is the same."""
        self.stream.codec_context.skip_frame = "NONKEY"
        times, arrays = [], []
        previous_key = None
        for target in targets:
            key = self._keyframe_before(target) if self.keyframes is not None else None
            if arrays and key is not None and key == previous_key:
                times.append(times[-1])
                arrays.append(arrays[-1])
                continue
            self.container.seek(
                int(max(target, self.start) / self.stream.time_base),
                stream=self.stream,
                backward=True,
                any_frame=False,
            )
            first = next(self._timed(self.container.decode(self.stream), from_start=False), None)
            if first is None:
                break
            times.append(first[0])
            arrays.append(self.to_rgb(first[1]))
            previous_key = key
        return times, arrays


def load_video(
    source,
    num_frames: int,
    *,
    size: tuple[int, int] | None = None,
    keyframes_only: bool = False,
    thread_type: str = "AUTO",
    timeout: float = 60.0,
    strategy: str = "auto",
) -> VideoClip:
    """Sample ``num_frames`` frames at the midpoints of equal segments: frames (num_frames, H, W, 3) uint8 RGB.

    Frame i is the first frame shown at or after ``start + (i + 0.5) * duration / num_frames`` (time based, so
    variable frame rates work). ``size=(H, W)`` resizes inside the decoder; display rotation is applied.
    ``keyframes_only`` takes the keyframe at or before each target instead (fast, up to one GOP early; the real
    times are in ``timestamps``). ``strategy`` forces "sequential" or "seek" decoding ("auto": by sample density;
    raw streams without timestamps are always read sequentially). ``thread_type`` is the decoder's threading;
    "AUTO" becomes "SLICE" for ``keyframes_only``. ``timeout`` bounds the whole call (MediaTimeoutError).
    ``source``: path, http(s) URL, bytes or binary file object.
    """
    label = _describe(source)
    _check_video_args(label, num_frames, size, thread_type, timeout, strategy)
    deadline = _Deadline(label, timeout)
    with _open(source, timeout) as (container, _):
        stream = _video_stream(container)
        if stream is None:
            raise MissingStreamError(label, "no video stream (audio-only file?)")
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_FRAME_PIXELS:
            raise MediaTooLargeError(label, f"frame size {width}x{height} exceeds {MAX_FRAME_PIXELS} pixels")
        # frame threads only add start-up latency when every frame follows a seek (measured 2x slower)
        stream.thread_type = "SLICE" if keyframes_only and thread_type == "AUTO" else thread_type
        rate = float(stream.guessed_rate or stream.average_rate or 0) or None
        start, duration = _stream_start(container, stream), _stream_duration(container, stream)
        _check_duration(label, duration)
        size = None if size is None else (int(size[0]), int(size[1]))
        sampler = _VideoSampler(container, stream, label, deadline, size, start, rate)
        packets = None
        if duration is None:  # raw streams: no timestamps, no duration; count packets, then decode them
            packets = _demux_all(container, stream, deadline)
            if not packets or not rate:
                raise MediaDecodeError(label, "no video packets with a known frame rate")
            duration = len(packets) / rate
            _check_duration(label, duration)
        targets = [start + (i + 0.5) * duration / num_frames for i in range(num_frames)]

        if keyframes_only and packets is None:
            chosen = "keyframes"
            times, arrays = sampler.decode_keyframes(targets)
            if len(arrays) < num_frames:
                raise MediaDecodeError(
                    label, f"found keyframes for only {len(arrays)} of {num_frames} targets; file truncated?"
                )
        else:
            chosen = "sequential" if packets is not None or strategy == "sequential" else strategy
            if chosen == "auto":
                chosen = sampler.choose_strategy(targets)
            frames = _decode_packets(stream, packets) if packets is not None else None
            times, arrays = sampler.decode(targets, chosen, duration, frames)
    return VideoClip(
        frames=np.stack(arrays),
        timestamps=[float(t) for t in times],
        target_timestamps=targets,
        duration=float(duration),
        fps=float(stream.average_rate) if stream.average_rate else rate,
        strategy=chosen,
    )


def _demux_all(container, stream, deadline) -> list:
    """All non-empty packets of ``stream`` (compressed, so cheap to keep)."""
    packets = []
    for packet in container.demux(stream):
        deadline.check()
        if packet.size:
            packets.append(packet)
    return packets


def _decode_packets(stream, packets):
    """Decoded frames of ``packets``, then the frames the decoder still holds."""
    for packet in packets:
        yield from stream.decode(packet)
    yield from stream.decode(None)


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
    label = _describe(source)
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


def sample_frame_indices(total_frames: int, num_frames: int) -> np.ndarray:
    """Indices (num_frames,) into ``total_frames`` already-decoded frames by the rule ``load_video`` uses on times.

    Frame k is taken to sit at time k / total_frames of the clip, so index i is the first frame at or after the
    midpoint of segment i: ceil((i + 0.5) * total_frames / num_frames), clipped to the last frame (repeats allowed).
    """
    if total_frames <= 0 or num_frames <= 0:
        raise ValueError(f"need total_frames > 0 and num_frames > 0, got {total_frames} and {num_frames}")
    positions = (np.arange(num_frames) + 0.5) * total_frames / num_frames
    return np.minimum(np.ceil(positions - 1e-9).astype(np.int64), total_frames - 1)


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
