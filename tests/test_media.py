"""Tests of models/avllm/media_avllm.py and video_avllm.py on tiny media files that the tests generate with PyAV."""

from __future__ import annotations

import io
import math
import pickle

import av
import numpy as np
import pytest
from media_fixtures import (
    TONE_AMPLITUDE,
    decode_index,
    dominant_frequency,
    vfr_frame_times,
    write_audio,
    write_video,
)

from transformers_avllm.models.avllm import (
    MediaDecodeError,
    MediaError,
    MediaNotFoundError,
    MediaTimeoutError,
    MediaTooLargeError,
    MissingStreamError,
    load_audio,
    load_video,
    media_avllm,
    probe_media,
    split_audio_segments,
    video_avllm,
)

FPS = 25
MP3 = pytest.param(
    ".mp3",
    marks=pytest.mark.skipif("libmp3lame" not in av.codecs_available, reason="this PyAV build cannot encode mp3"),
)


def expected_cfr_indices(targets, fps, num_frames_in_file):
    """Index of the first frame shown at or after each target time."""
    return [min(math.ceil(t * fps - 1e-6), num_frames_in_file - 1) for t in targets]


def indices(clip, turns=0):
    return [decode_index(np.rot90(frame, -turns)) for frame in clip.frames]


def assert_tone(wave, rate, seconds, tone_hz, *, length_tol_s=0.01):
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - seconds * rate) <= length_tol_s * rate
    assert abs(dominant_frequency(wave, rate) - tone_hz) < 3
    # channel mean of identical channels keeps the level (no (L+R)/sqrt(2) gain)
    assert np.sqrt(np.mean(wave**2)) == pytest.approx(TONE_AMPLITUDE / math.sqrt(2), rel=0.06)


def assert_error(excinfo, path, *words):
    message = str(excinfo.value)
    assert excinfo.value.path == str(path) and str(path) in message
    assert excinfo.value.reason and excinfo.value.reason in message
    for word in words:
        assert word in message.lower()


# -- containers and codecs -------------------------------------------------------------------------------------------


def test_mp4_h264_aac_frames_timestamps_and_audio(tmp_path):
    path = write_video(tmp_path / "a.mp4", seconds=2, fps=FPS, audio=("aac", 440))
    clip = load_video(path, 8)
    assert clip.frames.shape == (8, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.target_timestamps == pytest.approx([(i + 0.5) * 2 / 8 for i in range(8)])
    assert indices(clip) == expected_cfr_indices(clip.target_timestamps, FPS, 50)
    assert clip.timestamps == pytest.approx([i / FPS for i in indices(clip)])
    assert clip.duration == pytest.approx(2.0) and clip.fps == pytest.approx(FPS)
    assert clip.strategy == "sequential"  # 8 samples in 2 s share a GOP
    assert_tone(load_audio(path, 16000), 16000, 2, 440)


def test_webm_vp9_opus(tmp_path):
    path = write_video(tmp_path / "a.webm", seconds=2, fps=FPS, codec="vp9", audio=("libopus", 1000))
    clip = load_video(path, 6, size=(24, 32))
    assert clip.frames.shape == (6, 24, 32, 3)
    assert indices(clip) == expected_cfr_indices(clip.target_timestamps, FPS, 50)
    assert_tone(load_audio(path, 16000), 16000, 2, 1000)


def test_mkv_without_audio(tmp_path):
    path = write_video(tmp_path / "silent.mkv", seconds=2, fps=FPS)
    clip = load_video(path, 4)
    assert indices(clip) == expected_cfr_indices(clip.target_timestamps, FPS, 50)
    with pytest.raises(MissingStreamError) as excinfo:
        load_audio(path, 16000)
    assert_error(excinfo, path, "no audio")
    silence = load_audio(path, 16000, allow_missing=True)
    assert silence.dtype == np.float32 and silence.shape == (32000,) and not silence.any()
    assert load_audio(path, 16000, allow_missing=True, duration=1.5).shape == (24000,)


@pytest.mark.parametrize("suffix", [".wav", ".flac", MP3, ".ogg", ".m4a"])
@pytest.mark.parametrize("rate", [16000, 48000])
def test_audio_files(tmp_path, suffix, rate):
    source_rate = 48000 if suffix == ".ogg" else 44100  # opus only encodes 48 kHz
    path = write_audio(tmp_path / f"tone{suffix}", 1.5, 880, source_rate)
    assert_tone(load_audio(path, rate), rate, 1.5, 880)


def test_audio_duration_argument_trims_and_pads(tmp_path):
    path = write_audio(tmp_path / "tone.wav", 1.0, 440, 16000)
    assert load_audio(path, 16000, duration=0.5).shape == (8000,)
    padded = load_audio(path, 16000, duration=1.25)
    assert padded.shape == (20000,) and not padded[16000:].any()


def test_probe_media(tmp_path):
    info = probe_media(write_video(tmp_path / "a.mp4", seconds=2, fps=FPS, audio=("aac", 440)))
    assert (info.has_video, info.has_audio, info.width, info.height) == (True, True, 64, 48)
    assert info.duration == pytest.approx(2.0) and info.fps == pytest.approx(FPS)
    info = probe_media(write_audio(tmp_path / "a.flac", 1.0, 440, 16000))
    assert (info.has_video, info.has_audio, info.width) == (False, True, None)
    assert info.duration == pytest.approx(1.0)


# -- sampling --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_is_applied(tmp_path, rotation):
    path = write_video(tmp_path / "rot.mp4", seconds=1, fps=FPS, size=(48, 64), rotation=rotation)
    turns = rotation // 90 % 4
    clip = load_video(path, 4)
    assert clip.frames.shape == ((4, 64, 48, 3) if turns % 2 else (4, 48, 64, 3))
    # counter-clockwise display rotation: turning back clockwise gives the upright frame with its anchors in place
    assert indices(clip, turns) == expected_cfr_indices(clip.target_timestamps, FPS, 25)
    resized = load_video(path, 2, size=(40, 30))
    assert resized.frames.shape == (2, 40, 30, 3)
    assert indices(resized, turns) == expected_cfr_indices(resized.target_timestamps, FPS, 25)


def test_variable_frame_rate_is_sampled_by_time(tmp_path):
    path = write_video(tmp_path / "vfr.mp4", seconds=3, fps=20, vfr=True)
    times = vfr_frame_times(3, 20)
    clip = load_video(path, 12)
    expected = [int(np.searchsorted(times, t - 1e-6)) for t in clip.target_timestamps]
    assert indices(clip) == expected
    assert clip.timestamps == pytest.approx(times[expected].tolist())


def test_seek_and_sequential_give_identical_frames(tmp_path):
    path = write_video(tmp_path / "gop.mp4", seconds=8, fps=FPS, gop=FPS)
    auto = load_video(path, 5)
    assert auto.strategy == "seek"  # 1.6 s between samples, keyframes every 1 s
    sequential = load_video(path, 5, strategy="sequential")
    seek = load_video(path, 5, strategy="seek")
    assert sequential.strategy == "sequential" and seek.strategy == "seek"
    np.testing.assert_array_equal(seek.frames, sequential.frames)
    np.testing.assert_array_equal(auto.frames, sequential.frames)
    assert seek.timestamps == sequential.timestamps
    assert indices(seek) == expected_cfr_indices(seek.target_timestamps, FPS, 200)


def test_seek_cost_grows_with_samples_not_length(tmp_path, monkeypatch):
    path = write_video(tmp_path / "long.mp4", seconds=24, fps=FPS, gop=FPS)  # 600 frames, keyframe every second
    decoded = []
    timed = video_avllm._VideoSampler._timed

    def counting(self, frames, from_start=True):
        for item in timed(self, frames, from_start):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(video_avllm._VideoSampler, "_timed", counting)
    clip = load_video(path, 4)
    assert clip.strategy == "seek"
    assert indices(clip) == expected_cfr_indices(clip.target_timestamps, FPS, 600)
    assert len(decoded) <= 4 * FPS  # at most about one GOP per sample, not 600 frames


def test_seek_mkv_loads_cues(tmp_path):
    path = write_video(tmp_path / "gop.mkv", seconds=8, fps=FPS, gop=FPS)
    clip = load_video(path, 5)
    assert clip.strategy == "seek"
    assert indices(clip) == expected_cfr_indices(clip.target_timestamps, FPS, 200)


def test_keyframes_only_reports_real_times(tmp_path):
    path = write_video(tmp_path / "longgop.mp4", seconds=4, fps=FPS, gop=2 * FPS)
    clip = load_video(path, 4, keyframes_only=True)
    assert clip.strategy == "keyframes"
    assert clip.timestamps == pytest.approx([0.0, 0.0, 2.0, 2.0])
    assert clip.timestamps != pytest.approx(clip.target_timestamps)
    assert indices(clip) == [round(t * FPS) for t in clip.timestamps]


def test_short_clip_repeats_the_last_frames(tmp_path):
    path = write_video(tmp_path / "short.mp4", seconds=0.2, fps=FPS)  # 5 frames
    clip = load_video(path, 16)
    assert clip.frames.shape[0] == 16
    assert indices(clip) == expected_cfr_indices(clip.target_timestamps, FPS, 5)
    assert clip.timestamps[-1] == pytest.approx(4 / FPS)


def test_raw_stream_without_timestamps(tmp_path):
    path = write_video(tmp_path / "raw.h264", seconds=1, fps=FPS)
    clip = load_video(path, 4)
    assert clip.strategy == "sequential" and clip.duration == pytest.approx(1.0)
    assert indices(clip) == expected_cfr_indices(clip.target_timestamps, FPS, 25)


def test_bytes_and_file_object_sources(tmp_path):
    path = write_video(tmp_path / "a.mp4", seconds=1, fps=FPS, audio=("aac", 440))
    data = path.read_bytes()
    reference = load_video(path, 3).frames
    np.testing.assert_array_equal(load_video(data, 3).frames, reference)
    np.testing.assert_array_equal(load_video(io.BytesIO(data), 3).frames, reference)
    with open(path, "rb") as handle:
        np.testing.assert_array_equal(load_video(handle, 3).frames, reference)
    np.testing.assert_array_equal(load_audio(data, 16000), load_audio(path, 16000))
    assert probe_media(io.BytesIO(data)).has_audio
    with pytest.raises(MediaDecodeError) as excinfo:
        load_video(b"\x00" * 1000, 3)
    assert excinfo.value.path == "<bytes>" and "<bytes>" in str(excinfo.value)
    with pytest.raises(MediaDecodeError) as excinfo:
        load_video(io.BytesIO(b"\x00" * 1000), 3)
    assert excinfo.value.path == "<file object>"


def test_split_audio_segments():
    chunks = split_audio_segments(np.arange(10, dtype=np.float32), 4)
    assert [c.tolist() for c in chunks] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 0]]
    assert len(split_audio_segments(np.ones(8, np.float32), 4)[3]) == 2
    with pytest.raises(ValueError):
        split_audio_segments(np.ones((2, 8)), 2)


# -- bad input -------------------------------------------------------------------------------------------------------


def test_missing_file_and_directory(tmp_path):
    for loader in (lambda p: load_video(p, 4), lambda p: load_audio(p, 16000), probe_media):
        with pytest.raises(MediaNotFoundError) as excinfo:
            loader(tmp_path / "nope.mp4")
        assert_error(excinfo, tmp_path / "nope.mp4", "no such file")
        with pytest.raises(MediaNotFoundError) as excinfo:
            loader(tmp_path)
        assert_error(excinfo, tmp_path, "directory")


def test_random_bytes_and_empty_file(tmp_path):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path, word in ((noise, "invalid data"), (empty, "empty")):
        for loader in (lambda p: load_video(p, 4), lambda p: load_audio(p, 16000)):
            with pytest.raises(MediaDecodeError) as excinfo:
                loader(path)
            assert_error(excinfo, path, word)


@pytest.mark.parametrize("faststart", [False, True], ids=["moov-at-end", "faststart"])
@pytest.mark.parametrize("thread_type", ["AUTO", "SLICE"])
def test_truncated_mp4(tmp_path, faststart, thread_type):
    full = write_video(tmp_path / "full.mp4", seconds=4, fps=FPS, audio=("aac", 440), faststart=faststart)
    path = tmp_path / "half.mp4"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    for kwargs in ({}, {"strategy": "seek"}, {"keyframes_only": True}):
        with pytest.raises(MediaDecodeError) as excinfo:
            load_video(path, 8, thread_type=thread_type, **kwargs)
        assert_error(excinfo, path)
    with pytest.raises(MediaDecodeError) as excinfo:
        load_audio(path, 16000)
    assert_error(excinfo, path)
    if faststart:  # the index survives, so the loader itself notices that frames stop early
        with pytest.raises(MediaDecodeError) as excinfo:
            load_video(path, 8, thread_type=thread_type)
        assert_error(excinfo, path, "decoded only", "truncated")


def test_audio_only_file_has_no_video(tmp_path):
    path = write_audio(tmp_path / "tone.flac", 1.0, 440, 44100)
    with pytest.raises(MissingStreamError) as excinfo:
        load_video(path, 4)
    assert_error(excinfo, path, "no video")


@pytest.mark.parametrize("suffix", [MP3, ".m4a"])
def test_corrupt_audio_packets_raise(tmp_path, suffix):
    """Garbage over the middle fifth of an mp3/AAC stream: the decoder rejects packets and we raise."""
    path = write_audio(tmp_path / f"tone{suffix}", 3.0, 440, 44100)
    data = bytearray(path.read_bytes())
    lo, hi = len(data) * 2 // 5, len(data) * 3 // 5
    data[lo:hi] = np.random.default_rng(0).integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(MediaDecodeError) as excinfo:
        load_audio(path, 16000)
    assert_error(excinfo, path, "invalid data")


@pytest.mark.parametrize("suffix", [MP3, ".m4a", ".flac", ".ogg"])
def test_small_audio_corruption_never_becomes_silence(tmp_path, suffix):
    """64 zeroed bytes mid-stream. What we can promise: either MediaDecodeError (m4a: the decoder rejects the packet;
    ogg: a lost page shortens the audio past the tolerance) or FFmpeg's concealment passes through (mp3, flac: a
    frame is dropped and the end is zero-padded by at most max(0.5 s, 5%)). Never a silent stretch in the middle."""
    path = write_audio(tmp_path / f"tone{suffix}", 3.0, 440, 48000)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    try:
        wave = load_audio(path, 16000)
    except MediaDecodeError as err:
        assert err.path == str(path)
        return
    assert abs(len(wave) - 3 * 16000) <= 0.01 * 16000
    assert abs(dominant_frequency(wave, 16000) - 440) < 3
    quarter_seconds = wave[: len(wave) // 4000 * 4000].reshape(-1, 4000)
    assert np.abs(quarter_seconds[:-2]).max(axis=1).min() > 0.1  # no silent quarter second before the padded end


def test_absurd_arguments(tmp_path):
    path = write_video(tmp_path / "a.mp4", seconds=1, fps=FPS)
    assert load_video(path, np.int64(2), size=(np.int64(24), 32)).frames.shape == (2, 24, 32, 3)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_frames"):
            load_video(path, bad)
    with pytest.raises(ValueError, match="size"):
        load_video(path, 4, size=(0, 10))
    with pytest.raises(ValueError, match="thread_type"):
        load_video(path, 4, thread_type="MANY")
    with pytest.raises(ValueError, match="sampling_rate"):
        load_audio(path, 0)
    with pytest.raises(TypeError, match="media source"):
        load_video(12345, 4)
    with pytest.raises(MediaTooLargeError) as excinfo:
        load_video(path, 10_001)
    assert_error(excinfo, path, "num_frames")
    with pytest.raises(MediaTooLargeError) as excinfo:
        load_video(path, 4, size=(224, 9000))
    assert_error(excinfo, path, "size")


def test_absurd_files(tmp_path, monkeypatch):
    path = write_video(tmp_path / "a.mp4", seconds=1, fps=FPS, audio=("aac", 440))
    monkeypatch.setattr(video_avllm, "MAX_FRAME_PIXELS", 64 * 48 - 1)
    with pytest.raises(MediaTooLargeError) as excinfo:
        load_video(path, 4)
    assert_error(excinfo, path, "64x48")
    monkeypatch.setattr(media_avllm, "MAX_DURATION_S", 0.5)
    with pytest.raises(MediaTooLargeError) as excinfo:
        load_audio(path, 16000)
    assert_error(excinfo, path, "duration")


def test_timeout(tmp_path):
    path = write_video(tmp_path / "a.mp4", seconds=1, fps=FPS, audio=("aac", 440))
    for loader in (lambda: load_video(path, 4, timeout=1e-9), lambda: load_audio(path, 16000, timeout=1e-9)):
        with pytest.raises(MediaTimeoutError) as excinfo:
            loader()
        assert_error(excinfo, path, "longer than")


def test_errors_are_picklable_and_share_a_base():
    err = pickle.loads(pickle.dumps(MediaDecodeError("x.mp4", "broken")))
    assert isinstance(err, MediaError) and (err.path, err.reason) == ("x.mp4", "broken")
    assert str(err) == "x.mp4: broken"
    assert issubclass(MediaTimeoutError, MediaDecodeError)


def test_sample_frame_indices_matches_time_based_sampling(tmp_path):
    path = write_video(tmp_path / "a.mp4", seconds=2, fps=FPS)
    for num_frames in (1, 7, 16, 64):
        clip = load_video(path, num_frames)
        assert indices(clip) == video_avllm.sample_frame_indices(50, num_frames).tolist()
