"""`avllm train` under `accelerate launch` on two CPU processes (gloo), recording what each rank saw and holds.

Launched by tests/test_distributed.py:

    python -m accelerate.commands.launch --config_file recipes/accelerate/fsdp.yaml --num_processes 2 \\
        --mixed_precision no tests/accelerate_train.py REPORT_DIR [--no-touch] -- --config recipe.yaml [--key value]

Runs `transformers_avllm.training.train.train` (what `avllm train` runs) with the arguments after `--`, then writes
REPORT_DIR/rank{N}.json: the distributed type and model wrapper the trainer got, what every batch this rank collated
carried, the logged losses, and for each part of the model the checksum of its full parameters (gathered from the
shards) and how many of their elements this rank holds.

The worker creates the gloo process group itself, with a timeout (`--timeout`), as tests/ddp_train.py does:
transformers gives `ddp_timeout` to the process group only on accelerators. The recipe sets `use_cpu: true` and
`accelerator_config: {use_configured_state: true}`, so that the trainer keeps this state.

FSDP on CPU: accelerate 1.15 takes the FSDP plugin only when the process group runs on an accelerator
(`AcceleratorState` switches MULTI_GPU, MULTI_XPU, ... to FSDP, never MULTI_CPU), so `accelerate launch --config_file
recipes/accelerate/fsdp.yaml` of a `use_cpu: true` recipe silently trains with DDP. For FSDP the worker therefore
labels its CPU process group MULTI_GPU before the trainer builds its Accelerator. Everything after that is accelerate's
and transformers' own FSDP2 path (fully_shard of the decoder layers and the root, FULL_STATE_DICT saving, checkpoint
resuming), on CPU tensors. DeepSpeed (DS_ACCELERATOR=cpu) needs no label: accelerate starts it on the gloo group.
"""

import argparse
import hashlib
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState
from accelerate.utils import DistributedType
from torch.distributed.tensor import DTensor

from transformers_avllm.models.avllm import ROW_TYPES, row_type_indices
from transformers_avllm.training import train as train_module

PARTS = ("vision_tower", "audio_tower", "video_connector", "audio_projector", "language_model", "lm_head")
BATCHES = []  # what each batch this rank collated carried


def model_part(model: torch.nn.Module, part: str) -> torch.nn.Module:
    """`part` of PARTS in an AVLlmForConditionalGeneration."""
    return model.lm_head if part == "lm_head" else getattr(model.model, part)


def parameter_checksum(named_tensors) -> str:
    """sha256 over `(name, tensor)` pairs in name order: the same for the same weights, however they were loaded."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def full_parameters(module: torch.nn.Module) -> list[tuple[str, torch.Tensor, int]]:
    """`(name, full tensor, elements held by this rank)` per parameter: FSDP2 shards (DTensor) and ZeRO-3 partitions
    are gathered, which every rank must call in the same order."""
    gathered = []
    for name, parameter in module.named_parameters():
        if isinstance(parameter, DTensor):
            gathered.append((name, parameter.full_tensor(), parameter.to_local().numel()))
        elif hasattr(parameter, "ds_id"):  # a ZeRO-3 partition
            import deepspeed

            with deepspeed.zero.GatheredParameters([parameter]):
                gathered.append((name, parameter.detach().clone(), parameter.ds_tensor.numel()))
        else:
            gathered.append((name, parameter.detach(), parameter.numel()))
    return gathered


class RecordingCollator(train_module.AVLlmDataCollator):
    """The recipe's collator, noting in BATCHES what each batch of this rank carried."""

    def __call__(self, examples):
        batch = super().__call__(examples)
        mm_token_type_ids = batch["mm_token_type_ids"]
        BATCHES.append(
            {
                "rows": [ROW_TYPES[index] for index in row_type_indices(mm_token_type_ids).tolist()],
                "input_features": "input_features" in batch,
                "audio_placeholders": int((mm_token_type_ids == 3).sum()),
            }
        )
        return batch


class UntouchedTrainer(train_module.AVLlmSFTTrainer):
    """The trainer without the zero-weighted pass through absent branches (`--no-touch`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, touch_absent_modalities=False, **kwargs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("report_dir", type=Path)
    parser.add_argument("--no-touch", action="store_true", help="turn the zero-weighted pass off")
    parser.add_argument("--timeout", type=int, default=120, help="seconds before a stuck collective fails")
    split = sys.argv.index("--")  # the `avllm train` arguments follow
    cli, train_args = parser.parse_args(sys.argv[1:split]), sys.argv[split + 1 :]

    state = PartialState(cpu=True, backend="gloo", timeout=timedelta(seconds=cli.timeout))
    if os.environ.get("ACCELERATE_USE_FSDP", "false") == "true":
        state.distributed_type = DistributedType.MULTI_GPU  # so that AcceleratorState takes the FSDP plugin
    train_module.AVLlmDataCollator = RecordingCollator
    if cli.no_touch:
        train_module.AVLlmSFTTrainer = UntouchedTrainer

    trainer = train_module.train(train_args)

    model, engine = trainer.model, trainer.model_wrapped  # engine: DDP, DeepSpeed's engine, or the FSDP2 model
    parts = {}
    for part in PARTS:
        parameters = full_parameters(model_part(model, part))
        parts[part] = {
            "checksum": parameter_checksum((name, tensor) for name, tensor, _ in parameters),
            "numel": sum(tensor.numel() for _, tensor, _ in parameters),
            "local_numel": sum(local for _, _, local in parameters),
        }
    report = {
        "rank": trainer.args.process_index,
        "world_size": trainer.args.world_size,
        "distributed_type": trainer.accelerator.distributed_type.value,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "wrapper": type(engine).__name__,
        "zero_stage": engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None,
        "touch_absent_modalities": bool(model.model.touch_absent_modalities),
        "batches": BATCHES,
        "losses": {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry},
        "global_step": trainer.state.global_step,
        "parts": parts,
    }
    cli.report_dir.mkdir(parents=True, exist_ok=True)
    (cli.report_dir / f"rank{report['rank']}.json").write_text(json.dumps(report, indent=1))
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    main()
