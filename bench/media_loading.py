"""Benchmark: 32 frames at 224x224 from generated clips, our loader against decode-everything and transformers.

    python bench/media_loading.py [--quick] [--repeats 3] [--workdir DIR]

Clips (h264 + aac, noised frames for a realistic bitrate): 10 s 480p (x264 default GOP); 3 min 720p with a 2 s
keyframe interval; the same with x264's default 250-frame interval. ``--quick`` shrinks them for a smoke run.
``--workdir`` keeps the clips between runs (generating the 3-min ones takes minutes). Ends with ``figure:`` lines.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter
from common import CLIP_FPS, bench_clip

from transformers_avllm.models.avllm import load_video

NUM_FRAMES = 32
SIZE = (224, 224)


def clip_specs(quick: bool) -> dict[str, dict]:
    """name -> write_video kwargs."""
    long_s, long_size = (30, (360, 640)) if quick else (180, (720, 1280))
    return {
        "10s_480p": dict(seconds=4 if quick else 10, size=(240, 426) if quick else (480, 854)),
        "3min_gop2s": dict(seconds=long_s, size=long_size, gop=2 * CLIP_FPS),
        "3min_gop250": dict(seconds=long_s, size=long_size, gop=250),
    }


def ours(path):
    return load_video(path, NUM_FRAMES, size=SIZE)


def ours_keyframes(path):
    return load_video(path, NUM_FRAMES, size=SIZE, keyframes_only=True)


def decode_all(path):
    """Decode every frame (frame threads), keep the first at or after each midpoint target, resize those with the
    same cached swscale context our loader uses, so the comparison is about the decode plan only."""
    reformatter = VideoReformatter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = float(stream.duration * stream.time_base)
        targets = [(i + 0.5) * duration / NUM_FRAMES for i in range(NUM_FRAMES)]
        picked, i = [], 0
        for frame in container.decode(stream):
            while i < NUM_FRAMES and frame.time >= targets[i] - 1e-6:
                picked.append(reformatter.reformat(frame, width=SIZE[1], height=SIZE[0], format="rgb24").to_ndarray())
                i += 1
        return picked


def transformers_pyav(path):
    from transformers.video_utils import load_video as hf_load_video

    return hf_load_video(str(path), num_frames=NUM_FRAMES, backend="pyav")


METHODS = {
    "ours (auto)": ours,
    "ours keyframes_only": ours_keyframes,
    "pyav decode-all + pick": decode_all,
    "transformers load_video pyav": transformers_pyav,
}


def time_method(fn, path, repeats: int) -> tuple[float, str]:
    """Median wall time over ``repeats`` runs (after one warm-up unless a run is slow); note on failure."""
    try:
        start = time.perf_counter()
        result = fn(path)
        first = time.perf_counter() - start
    except Exception as err:  # noqa: BLE001 - report any loader failure in the table
        return math.nan, f"{type(err).__name__}: {str(err)[:60]}"
    note = getattr(result, "strategy", "")
    runs = [] if first < 5 else [first]
    while len(runs) < repeats:
        start = time.perf_counter()
        fn(path)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small clips for a smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep/reuse generated clips here instead of a temp dir")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        clips = {}
        for name, spec in clip_specs(args.quick).items():
            path = bench_clip(workdir, name, spec, args.quick)
            clips[name] = path

        times: dict[tuple[str, str], float] = {}
        print(f"\n{'method':<32}" + "".join(f"{name:>22}" for name in clips))
        for method, fn in METHODS.items():
            cells = []
            for name, path in clips.items():
                seconds, note = time_method(fn, path, args.repeats)
                times[method, name] = seconds
                cells.append(f"{seconds:8.3f} s {note[:11]:<11}" if not math.isnan(seconds) else f"{note[:21]:>21}")
            print(f"{method:<32}" + "".join(f"{c:>22}" for c in cells), flush=True)

    hf, ours_name = "transformers load_video pyav", "ours (auto)"
    print(f"figure: media_speedup_3min {times[hf, '3min_gop2s'] / times[ours_name, '3min_gop2s']:.2f}")
    print(f"figure: media_ratio_10s {times[ours_name, '10s_480p'] / times['pyav decode-all + pick', '10s_480p']:.2f}")
    print(
        f"figure: media_speedup_keyframes_3min "
        f"{times[hf, '3min_gop2s'] / times['ours keyframes_only', '3min_gop2s']:.2f}"
    )


if __name__ == "__main__":
    main()
