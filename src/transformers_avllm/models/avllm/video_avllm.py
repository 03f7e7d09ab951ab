"""Frame sampling with PyAV: N RGB frames at the midpoints of equal segments of a video, with seek planning.

Self-contained (standard library, numpy, transformers, optional PyAV) so that it can ship as Hub remote code; it opens
containers and reports errors with the helpers and error types of `media_avllm.py`.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
from transformers.utils import is_av_available

from .media_avllm import (
    MediaDecodeError,
    MediaTooLargeError,
    MissingStreamError,
    _check_duration,
    _check_timeout,
    _Deadline,
    _is_positive_int,
    _label,
    _open,
    _stream_duration,
    _stream_start,
    _video_stream,
    is_file_source,
)

if is_av_available():
    import av
    from av.video.reformatter import VideoReformatter

__all__ = ["VideoClip", "load_video", "sample_frame_indices", "sample_frames"]

MAX_NUM_FRAMES = 10_000
MAX_SIDE = 8192  # largest requested output side
MAX_FRAME_PIXELS = 16384 * 16384  # largest coded frame a file may declare
THREAD_TYPES = ("AUTO", "FRAME", "SLICE", "NONE")
STRATEGIES = ("auto", "sequential", "seek")

_EPS = 1e-6  # seconds; absorbs float error in pts * time_base
_SEEK_COST_FRAMES = 8  # a seek (demuxer jump + decoder flush) costs about this many decoded frames
_SEEK_GAIN = 0.8  # seek only when the plan decodes at most 80% of the frames a sequential pass would
_BLIND_SEEK_GAP_S = 4.0  # with no keyframe index, seek only across gaps longer than this


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
    label = _label(source)
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


def sample_frame_indices(total_frames: int, num_frames: int) -> np.ndarray:
    """Indices (num_frames,) into ``total_frames`` already-decoded frames by the rule ``load_video`` uses on times.

    Frame k is taken to sit at time k / total_frames of the clip, so index i is the first frame at or after the
    midpoint of segment i: ceil((i + 0.5) * total_frames / num_frames), clipped to the last frame (repeats allowed).
    """
    if total_frames <= 0 or num_frames <= 0:
        raise ValueError(f"need total_frames > 0 and num_frames > 0, got {total_frames} and {num_frames}")
    positions = (np.arange(num_frames) + 0.5) * total_frames / num_frames
    return np.minimum(np.ceil(positions - 1e-9).astype(np.int64), total_frames - 1)


def sample_frames(source, num_frames: int) -> tuple[np.ndarray, list[float] | None]:
    """`(num_frames, H, W, 3)` uint8 frames of a video source and their times in seconds: a file (`load_video`), or
    frames given decoded, `(T, H, W, 3)` or `(T, 3, H, W)` (array or tensor), sampled by `sample_frame_indices`
    (times `None`)."""
    if is_file_source(source):
        clip = load_video(source, num_frames)
        return clip.frames, clip.timestamps
    frames = np.asarray(source)
    if frames.ndim != 4 or 3 not in (frames.shape[1], frames.shape[-1]):
        raise ValueError(f"decoded video must be (T, H, W, 3) or (T, 3, H, W), got shape {frames.shape}")
    if frames.shape[-1] != 3:
        frames = frames.transpose(0, 2, 3, 1)
    return frames[sample_frame_indices(len(frames), num_frames)], None
