"""Write videos (frames + an audio track) and audio files with PyAV."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_CODECS = {".mp4": "aac", ".mkv": "aac", ".wav": "pcm_s16le", ".flac": "flac"}
VIDEO_CODECS = {".mp4": "libx264", ".mkv": "libx264"}
# x264's macroblock tree (its lookahead's rate control) gives different bytes for the same frames from one process to
# the next (seen with PyAV 18.1's libx264 on noisy 32-64 px frames: a third of the clips differ, by up to 30/255 once
# decoded); without it the same frames always give the same file, so synthetic data and the demo are reproducible.
X264_OPTIONS = {"x264-params": "mbtree=0"}


def _write_audio_stream(container, stream, waveform: np.ndarray):
    """Encodes a mono float waveform in [-1, 1] into `stream` in chunks of 1024 samples."""
    samples = (np.clip(waveform, -1, 1) * 32767).astype(np.int16)
    for start in range(0, len(samples), 1024):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="s16", layout="mono")
        frame.sample_rate = stream.rate
        frame.pts = start
        frame.time_base = Fraction(1, stream.rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_video(
    path, frames: np.ndarray, fps: int, waveform: np.ndarray | None = None, sample_rate: int = 16000
) -> Path:
    """Writes `frames` `(T, H, W, 3)` uint8 RGB (H, W even) and an optional mono waveform as an mp4 or mkv file
    (h264 + aac)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        video = container.add_stream(VIDEO_CODECS[path.suffix], rate=fps, options=X264_OPTIONS)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        audio = None
        if waveform is not None:
            audio = container.add_stream(AUDIO_CODECS[path.suffix], rate=sample_rate)
            audio.layout = "mono"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            _write_audio_stream(container, audio, waveform)
    return path


def write_audio(path, waveform: np.ndarray, sample_rate: int = 16000) -> Path:
    """Writes a mono float waveform as an audio file (wav or flac, by suffix)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(AUDIO_CODECS[path.suffix], rate=sample_rate)
        stream.layout = "mono"
        _write_audio_stream(container, stream, waveform)
    return path
