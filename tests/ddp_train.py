"""Two-process DDP training (gloo, CPU) where one rank's batches carry no audio at all.

Launched by tests/test_distributed.py:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_train.py OUTPUT_DIR [--no-touch]

Trains a tiny AVLlm (CLIP + CLAP + Llama) at the `sft` stage (towers frozen; projectors and LLM trainable) with
`AVLlmSFTTrainer` and `ddp_find_unused_parameters=False`. The dataset is ordered and read sequentially so that
accelerate's batch sharding (batch k goes to rank k % world_size) gives rank 0 only visual rows and rank 1 an audio row
plus an audio-visual row at every step. Without the zero-weighted pass through the absent audio branch, rank 0 never
produces gradients for the trainable audio projector and DDP's gradient reduction cannot complete. Each rank writes
OUTPUT_DIR/rank{N}.json: what its batches carried, its losses, whether `touch_absent_modalities` was on, and checksums
of the trainable modules before and after training.

The towers stay frozen because a fully trainable vision tower cannot train under `find_unused_parameters=False` on any
rank: features are read at `vision_feature_layer=-2`, so the last encoder layer and `post_layernorm` never get a
gradient, whatever the batch holds.
"""

import argparse
import hashlib
import json
import math
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState
from datasets import Dataset
from media_fixtures import write_video
from torch.utils.data import SequentialSampler
from trl import SFTConfig

from transformers_avllm import AVLlmForConditionalGeneration
from transformers_avllm.models.avllm import ROW_TYPES, row_type_indices
from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_config
from transformers_avllm.training import AVLlmSFTTrainer, apply_stage

WORDS = "what do you see hear ? a red blue green square tone high low beep the is and".split()
ANSWERS = ["a red square and a low tone", "a blue square and a high tone", "a green square", "a beep"]
NUM_CLIPS = 4
PER_DEVICE_BATCH = 2


def row(clip: Path, index: int, modality: str) -> dict:
    """A chat row in the schema of `modality_view`: "visual" (video without its audio), "audio" (only the video's
    audio track) or "audio_visual"."""
    media = {"type": "audio" if modality == "audio" else "video", "path": str(clip)}
    media["use_audio"] = modality == "audio_visual"
    return {
        "id": f"{modality}-{index}",
        "messages": [
            {
                "role": "user",
                "content": [media, {"type": "text", "text": "what do you see and hear ?", "use_audio": False}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": ANSWERS[index], "use_audio": False}]},
        ],
    }


def ordered_rows(clips: list[Path], steps: int) -> list[dict]:
    """Four rows per optimizer step: two visual rows (batch 2s, rank 0), then an audio and an audio-visual row (batch
    2s + 1, rank 1)."""
    rows = []
    for step in range(steps):
        a, b = (2 * step) % NUM_CLIPS, (2 * step + 1) % NUM_CLIPS
        rows += [row(clips[a], a, "visual"), row(clips[b], b, "visual")]
        rows += [row(clips[b], b, "audio"), row(clips[a], a, "audio_visual")]
    return rows


def write_clips(clip_dir: Path) -> list[Path]:
    """The `NUM_CLIPS` one-second videos (index frames, a sine tone each) that the rows refer to."""
    clip_dir.mkdir(parents=True, exist_ok=True)
    clips = [clip_dir / f"clip{index}.mp4" for index in range(NUM_CLIPS)]
    for index, clip in enumerate(clips):
        write_video(clip, seconds=1, fps=8, audio=("aac", 300.0 + 200 * index), start_index=index * 7)
    return clips


def checksum(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class SequentialAVLlmTrainer(AVLlmSFTTrainer):
    """Reads the dataset in order (no shuffling) and records what each batch of this rank carried."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen_batches, self.step_losses = [], []

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        modalities = row_type_indices(inputs["mm_token_type_ids"]).tolist()
        self.seen_batches.append(
            {
                "rows": [ROW_TYPES[index] for index in modalities],
                "input_features": "input_features" in inputs,
                "pixel_values_videos": "pixel_values_videos" in inputs,
                "audio_placeholders": int((inputs["mm_token_type_ids"] == 3).sum()),
            }
        )
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        self.step_losses.append(float(loss.detach()))
        return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--stage", default="sft", help="towers frozen: their unused top layers never get gradients")
    parser.add_argument(
        "--no-touch", action="store_true", help="turn the zero-weighted pass through absent branches off"
    )
    parser.add_argument("--ddp-timeout", type=int, default=120, help="seconds before a stuck gloo collective fails")
    cli = parser.parse_args()

    # The gloo process group, with our timeout: transformers hands `ddp_timeout` to the process group only on
    # accelerators, so on CPU a stuck collective would wait torch's default 30 minutes. The trainer reuses it.
    PartialState(cpu=True, backend="gloo", timeout=timedelta(seconds=cli.ddp_timeout))
    args = SFTConfig(
        output_dir=str(cli.output_dir / "trainer"),
        per_device_train_batch_size=PER_DEVICE_BATCH,
        max_steps=cli.steps,
        learning_rate=5e-3,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to=[],
        activation_checkpointing=False,
        save_strategy="no",
        seed=0,
        lr_scheduler_type="constant",
        ddp_find_unused_parameters=False,
        ddp_timeout=cli.ddp_timeout,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    rank, world_size = args.process_index, args.world_size
    clip_dir = cli.output_dir / "clips"
    clips = write_clips(clip_dir) if rank == 0 else [clip_dir / f"clip{index}.mp4" for index in range(NUM_CLIPS)]
    if dist.is_initialized():
        dist.barrier()

    torch.manual_seed(0)
    config = tiny_config()
    model = AVLlmForConditionalGeneration(config)
    apply_stage(model, cli.stage)
    processor = build_processor(config, build_tokenizer([" ".join(WORDS)]))
    train = Dataset.from_list(ordered_rows(clips, cli.steps))
    trainer = SequentialAVLlmTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=processor,
        touch_absent_modalities=not cli.no_touch,
    )
    projectors = {
        "audio_projector": model.model.audio_projector,
        "video_connector": model.model.video_connector,
        "language_model": model.model.language_model,
    }
    initial = {name: checksum(module) for name, module in projectors.items()}
    output = trainer.train()

    wrapped = trainer.model_wrapped
    modalities = sorted({name for batch in trainer.seen_batches for name in batch["rows"]})
    report = {
        "rank": rank,
        "world_size": world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "ddp_wrapped": isinstance(wrapped, torch.nn.parallel.DistributedDataParallel),
        "find_unused_parameters": getattr(wrapped, "find_unused_parameters", None),
        "touch_absent_modalities": bool(trainer.model.model.touch_absent_modalities),
        "batches": trainer.seen_batches,
        "modalities": modalities,
        "saw_audio": any(batch["input_features"] or batch["audio_placeholders"] for batch in trainer.seen_batches),
        "step_losses": trainer.step_losses,
        "final_loss": trainer.step_losses[-1] if trainer.step_losses else math.nan,
        "train_loss": output.training_loss,
        "global_step": trainer.state.global_step,
        "checksums": {
            name: {"initial": initial[name], "final": checksum(module)} for name, module in projectors.items()
        },
    }
    (cli.output_dir / f"rank{rank}.json").write_text(json.dumps(report, indent=1))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
