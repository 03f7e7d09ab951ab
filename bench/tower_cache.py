"""Stage-1 training step (projectors only) with the towers run live / with their outputs from the tower cache.

    python bench/tower_cache.py [--batch-size 4]

The bench model of `common.py` on the CPU (the GPU figure at real size is `bench/gpu_scale.py`'s
`scale_avllm_7b_tower_cache_step_speedup`). The cached step takes what `TowerCache` stores, each item's connector
inputs (`mm_encoder_outputs`), in place of pixel values and audio features: the towers do not run. Target (on the
GPU, where the towers were 30% of the step): >= 1.3x.
"""

import argparse

import torch
from common import av_inputs, bench_model, best_seconds

from transformers_avllm.models.avllm import AVLlmEncoderOutput
from transformers_avllm.training import apply_stage


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = bench_model()
    apply_stage(model, "pretrain")
    model.train()
    batch = av_inputs(model, batch_size=args.batch_size)
    batch["labels"] = batch["input_ids"].masked_fill(batch["input_ids"] >= model.config.image_token_id, -100)
    with torch.no_grad():
        cached = {
            "video": AVLlmEncoderOutput(
                connector_inputs=model.get_video_features(batch["pixel_values_videos"]).connector_inputs
            ),
            "audio": AVLlmEncoderOutput(
                connector_inputs=model.get_audio_features(batch["input_features"]).connector_inputs
            ),
        }
    text = {key: value for key, value in batch.items() if key not in ("pixel_values_videos", "input_features")}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(inputs):
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = best_seconds(
        {"live": lambda: step(batch), "cached": lambda: step({**text, "mm_encoder_outputs": cached})}, repeats=5
    )
    print(
        f"stage 1, batch {args.batch_size} ({model.config.num_frames} frames + {model.config.num_audio_segments} "
        f"segments each), CPU: live towers {times['live']:.3f} s/step, "
        f"from the tower cache {times['cached']:.3f} s/step"
    )
    print(f"figure: tower_cache_step_speedup_cpu {times['live'] / times['cached']:.2f}")


if __name__ == "__main__":
    main()
