"""How many CPU cores it takes to feed one GPU at AV-LLM's stage-1 rate, decoding live vs from prepared shards.

    python bench/feed_rate.py [--quick] [--samples 3] [--workdir DIR] [--gpu-rate 28.8]

The real-size AV-LLM processor (32 frames through CLIP's 224-px image processor, 4 CLAP segments at 48 kHz) encodes
rows of the issue's clips, which the script writes with PyAV (h264 + AAC, noised frames for a realistic bitrate): 10 s
480p; 60 s 720p with a 2 s keyframe interval; 3 min 720p with x264's 250-frame interval. Per sample it measures the
CPU time (all threads of the process, so decoder threads count) of `AVLlmDataCollator.encode`: live (decoding the
file) and from the shards of `avllm data prepare` (reading the row with `datasets`, rescaling, normalising,
tokenising); cores per GPU = CPU seconds per sample x the GPU's samples/s (default: the issue's H200 stage-1 rate).
Target: <= 2 cores per GPU from prepared shards for every clip. `--quick` shrinks the clips for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
from common import CLIP_FPS, bench_clip
from datasets import load_dataset
from transformers import ClapAudioConfig, ClapFeatureExtractor, CLIPImageProcessor, CLIPVisionConfig

from transformers_avllm.data.prepare import prepare_dataset
from transformers_avllm.models.avllm import AVLlmProcessor
from transformers_avllm.tiny import build_tokenizer, tiny_config
from transformers_avllm.training import AVLlmDataCollator

STAGE1_SAMPLES_PER_S = 28.8  # AV-LLM stage 1, batch 8, one H200 (issue #16)
WORDS = "what do you see and hear ? a moving picture with sound".split()


def clip_specs(quick: bool) -> dict[str, dict]:
    """name -> write_video kwargs."""
    if quick:
        return {
            "10s": dict(seconds=4, size=(240, 426)),
            "60s": dict(seconds=12, size=(360, 640), gop=2 * CLIP_FPS),
            "180s": dict(seconds=20, size=(360, 640), gop=250),
        }
    return {
        "10s": dict(seconds=10, size=(480, 854)),
        "60s": dict(seconds=60, size=(720, 1280), gop=2 * CLIP_FPS),
        "180s": dict(seconds=180, size=(720, 1280), gop=250),
    }


def avllm_processor() -> AVLlmProcessor:
    """AV-LLM's preprocessing at its real sizes: CLIP ViT-L/14-224's image processor, CLAP-HTSAT's feature extractor
    (48 kHz, 10 s window), 32 frames, 4 segments; a small tokenizer (tokenising is a minor cost)."""
    config = tiny_config(
        vision=CLIPVisionConfig(image_size=224, patch_size=14),
        audio=ClapAudioConfig(),
        num_frames=32,
        num_audio_segments=4,
    )
    return AVLlmProcessor.for_model(
        config,
        build_tokenizer([" ".join(WORDS)]),
        image_processor=CLIPImageProcessor(),
        feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"),
    )


def row(sample_id: str, path: Path) -> dict:
    return {
        "id": sample_id,
        "messages": [
            {"role": "user", "content": [{"type": "video", "path": str(path)}, {"type": "text", "text": WORDS[0]}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a moving picture with sound"}]},
        ],
    }


def cpu_seconds(fn) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small clips for a smoke run")
    parser.add_argument("--samples", type=int, default=3, help="rows per clip")
    parser.add_argument("--workdir", type=Path, help="keep/reuse generated clips here instead of a temp dir")
    parser.add_argument("--gpu-rate", type=float, default=STAGE1_SAMPLES_PER_S, help="GPU samples/s to feed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    processor = avllm_processor()
    collator = AVLlmDataCollator(processor)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = {}
        for name, spec in clip_specs(args.quick).items():
            path = bench_clip(workdir, name, spec, args.quick)
            rows = [row(f"{name}-{index}", path) for index in range(args.samples)]
            data = Path(tmp) / f"{name}.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in rows))

            live = [cpu_seconds(lambda r=r: collator.encode(r)) for r in rows]
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            before = children.ru_utime + children.ru_stime
            start = time.perf_counter()
            prepare_dataset(str(data), processor, Path(tmp) / f"{name}-prepared", num_workers=1)
            prepare_wall = time.perf_counter() - start
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            prepare_cpu = children.ru_utime + children.ru_stime - before
            shards = sorted(str(p) for p in (Path(tmp) / f"{name}-prepared").glob("*.parquet"))
            stream = iter(load_dataset("parquet", data_files=shards, split="train", streaming=True))
            prepared = [cpu_seconds(lambda stream=stream: collator.encode(next(stream))) for _ in rows]
            results[name] = {
                "live": min(cpu for cpu, _ in live),
                "prepared": min(cpu for cpu, _ in prepared),
                "prepare": prepare_cpu / len(rows),
                "prepared_wall": min(wall for _, wall in prepared),
                "shard_mb": sum(Path(s).stat().st_size for s in shards) / len(rows) / 1e6,
            }
            r = results[name]
            print(
                f"{name}: live {r['live']:.3f} CPU-s/sample, prepared {r['prepared']:.4f} CPU-s/sample "
                f"({r['prepared_wall']:.4f} s wall), preparing once {r['prepare']:.2f} CPU-s/sample "
                f"({prepare_wall / len(rows):.2f} s wall), {r['shard_mb']:.1f} MB/sample in the shards",
                flush=True,
            )

    print(f"\ncores to feed {args.gpu_rate} samples/s (CPU seconds per sample x samples/s):")
    for name, r in results.items():
        print(f"  {name:>5}: live {r['live'] * args.gpu_rate:6.1f}, prepared {r['prepared'] * args.gpu_rate:5.2f}")
    for name, r in results.items():
        print(f"figure: feed_cores_per_gpu_{name} {r['prepared'] * args.gpu_rate:.2f}")
    for name, r in results.items():
        print(f"figure: feed_cores_per_gpu_live_{name} {r['live'] * args.gpu_rate:.1f}")


if __name__ == "__main__":
    main()
