"""Media generators for tests: tiny videos whose frames carry their index, and sine-tone audio.

Every frame is a 4x4 grid of cells. Cell 0 (top-left) is a red anchor, cells 3, 12 and 15 (the other corners) are
black anchors, and the remaining 12 cells are the bits of the frame index (white = 1), so ``decode_index`` can read
the index back after lossy compression and tell whether the picture is upright.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

GRID = 4
_BLACK_ANCHORS = (3, 12, 15)
_BIT_CELLS = tuple(c for c in range(GRID * GRID) if c not in (0, *_BLACK_ANCHORS))
MAX_INDEX = 2 ** len(_BIT_CELLS) - 1
WHITE, BLACK = 235, 16
TONE_AMPLITUDE = 0.5

_VIDEO_CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".h264": "h264"}
_AUDIO_CODEC_FOR_SUFFIX = {
    ".wav": "pcm_s16le",
    ".flac": "flac",
    ".mp3": "libmp3lame",
    ".ogg": "libopus",
    ".opus": "libopus",
    ".m4a": "aac",
    ".aac": "aac",
    ".webm": "libopus",
    ".mka": "libopus",
}
_AUDIO_FORMAT_FOR_SUFFIX = {".m4a": "mp4", ".opus": "ogg", ".ogg": "ogg", ".aac": "adts", ".mka": "matroska"}


def index_frame(index: int, width: int, height: int) -> np.ndarray:
    """Frame (height, width, 3) uint8 RGB that encodes ``index`` in the cell grid."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index {index} outside 0..{MAX_INDEX}")
    cells = np.full((GRID * GRID, 3), BLACK, dtype=np.uint8)
    cells[0] = (220, 20, 20)
    for bit, cell in enumerate(_BIT_CELLS):
        if index >> bit & 1:
            cells[cell] = WHITE
    rows = np.arange(height) * GRID // height
    cols = np.arange(width) * GRID // width
    return cells.reshape(GRID, GRID, 3)[rows[:, None], cols[None, :]]


def decode_index(frame: np.ndarray) -> int:
    """Read back the index of an upright frame (H, W, 3) RGB; raise AssertionError if the anchors are wrong."""
    height, width = frame.shape[:2]
    means = np.empty((GRID * GRID, 3))
    for cell in range(GRID * GRID):
        r, c = divmod(cell, GRID)
        y0, y1 = (4 * r + 1) * height // (4 * GRID), (4 * r + 3) * height // (4 * GRID)
        x0, x1 = (4 * c + 1) * width // (4 * GRID), (4 * c + 3) * width // (4 * GRID)
        means[cell] = frame[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    red = means[0]
    assert red[0] > 150 and red[1] < 100 and red[2] < 100, f"red anchor not at top-left: {red}"
    assert all(means[c].mean() < 100 for c in _BLACK_ANCHORS), "black corner anchors missing: frame not upright"
    return sum(1 << bit for bit, cell in enumerate(_BIT_CELLS) if means[cell].mean() > 128)


def tone(seconds: float, tone_hz: float, rate: int, channels: int = 2) -> np.ndarray:
    """Sine tone (channels, round(seconds * rate)) float32 of amplitude ``TONE_AMPLITUDE``."""
    t = np.arange(round(seconds * rate)) / rate
    wave = (TONE_AMPLITUDE * np.sin(2 * math.pi * tone_hz * t)).astype(np.float32)
    return np.tile(wave, (channels, 1))


def _add_audio_stream(container, codec: str, rate: int):
    stream = container.add_stream(codec, rate=rate)
    stream.layout = "stereo"
    return stream


def _tone_frames(stream, seconds: float, tone_hz: float, rate: int):
    """Yield (start time in s, AudioFrame) of the tone in 1024-sample chunks (the encoder re-frames them)."""
    wave = tone(seconds, tone_hz, rate)
    fmt = "s16p" if stream.codec_context.name.startswith("pcm_s16") else "fltp"
    if fmt == "s16p":
        wave = (wave * 32767).astype(np.int16)
    for start in range(0, wave.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(wave[:, start : start + 1024]), format=fmt, layout="stereo"
        )
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        yield start / rate, frame


def write_video(
    path,
    *,
    seconds: float,
    fps: float,
    size: tuple[int, int] = (48, 64),
    codec: str = "h264",
    audio: tuple[str, float] | None = None,
    audio_rate: int = 48000,
    rotation: int | None = None,
    vfr: bool = False,
    gop: int | None = None,
    noise: int = 0,
    start_index: int = 0,
    faststart: bool = False,
) -> Path:
    """Write a video of index frames, size (H, W); the container follows the suffix (.mp4/.mov/.mkv/.webm/.h264).

    ``audio=(codec, tone_hz)`` adds a stereo sine track as long as the video. ``rotation`` (degrees counter-clockwise)
    is stored as a display matrix. ``vfr=True`` writes three equal thirds at fps/2, 2*fps and fps with explicit
    pts. ``gop`` fixes the keyframe interval (frames, no scene-cut keyframes). ``noise`` adds that much uniform noise
    (0-255 scale) for a realistic bitrate. Frame ``i`` carries index ``(start_index + i) % (MAX_INDEX + 1)``.
    ``faststart`` puts the mp4 index (moov) before the media data.
    """
    path = Path(path)
    height, width = size
    encoder = {"h264": "libx264", "vp9": "libvpx-vp9"}.get(codec, codec)
    rate = Fraction(fps).limit_denominator(1001)
    time_base = Fraction(1, 1000) if vfr else 1 / rate
    muxer_options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=_VIDEO_CONTAINERS[path.suffix], options=muxer_options) as container:
        vs = container.add_stream(encoder, rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.time_base = time_base
        options = {}
        if encoder == "libx264":
            options = {"preset": "veryfast", "crf": "20"}
            if gop is not None:
                options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        elif encoder == "libvpx-vp9":
            options = {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"}
            if gop is not None:
                vs.codec_context.gop_size = gop
        vs.options = options
        if rotation is not None:
            vs.set_display_rotation(rotation)
        aus = _add_audio_stream(container, audio[0], audio_rate) if audio else None
        audio_frames = _tone_frames(aus, seconds, audio[1], audio_rate) if audio else iter(())
        pending_audio = next(audio_frames, None)

        grains = _noise_frames(noise, height, width)
        for i, pts in enumerate(_frame_pts(seconds, fps, vfr, time_base)):
            image = index_frame((start_index + i) % (MAX_INDEX + 1), width, height)
            if grains is not None:
                image = np.clip(image + grains[i % len(grains)], 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = pts
            frame.time_base = time_base
            container.mux(vs.encode(frame))
            while pending_audio is not None and pending_audio[0] <= pts * time_base:  # interleave like a camera
                container.mux(aus.encode(pending_audio[1]))
                pending_audio = next(audio_frames, None)
        container.mux(vs.encode(None))
        if aus is not None:
            for _, audio_frame in itertools.chain([pending_audio] if pending_audio else [], audio_frames):
                container.mux(aus.encode(audio_frame))
            container.mux(aus.encode(None))
    return path


def _noise_frames(noise: int, height: int, width: int, count: int = 7):
    """A few uniform-noise images (int16) to cycle through: fresh noise every frame is too slow at 720p."""
    if not noise:
        return None
    rng = np.random.default_rng(0)
    return [rng.integers(-noise, noise + 1, (height, width, 3), dtype=np.int16) for _ in range(count)]


def _frame_pts(seconds: float, fps: float, vfr: bool, time_base: Fraction) -> list[int]:
    """pts (in time_base) of every frame: constant rate, or thirds at fps/2, 2*fps, fps."""
    if not vfr:
        return list(range(round(seconds * fps)))
    pts, t0 = [], 0.0
    for rate in (fps / 2, fps * 2, fps):
        n = round(seconds / 3 * rate)
        pts += [round((t0 + k / rate) / time_base) for k in range(n)]
        t0 += n / rate
    return pts


def vfr_frame_times(seconds: float, fps: float) -> np.ndarray:
    """Presentation times (s) of the frames ``write_video(vfr=True)`` writes."""
    return np.array(_frame_pts(seconds, fps, True, Fraction(1, 1000))) / 1000


def write_audio(path, seconds: float, tone_hz: float, rate: int, codec: str | None = None) -> Path:
    """Write a stereo sine tone; codec and container follow the suffix unless ``codec`` is given."""
    path = Path(path)
    codec = codec or _AUDIO_CODEC_FOR_SUFFIX[path.suffix]
    with av.open(str(path), "w", format=_AUDIO_FORMAT_FOR_SUFFIX.get(path.suffix)) as container:
        stream = _add_audio_stream(container, codec, rate)
        for _, frame in _tone_frames(stream, seconds, tone_hz, rate):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def dominant_frequency(wave: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the largest FFT bin of a mono waveform."""
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[np.argmax(spectrum)])
