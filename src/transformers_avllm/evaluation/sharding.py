"""Data-parallel evaluation: accelerate's process state, and the per-rank shard files (`<output>.rank<r>`) that
rank 0 merges into the results jsonl."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..jsonl import append_jsonl
from .results import is_done, read_records


def distributed_state():
    """accelerate's `PartialState`. Launched with several processes (`accelerate launch`, `torchrun`) on a machine
    without CUDA, it is asked for CPU so that it sets up gloo: accelerate leaves CPU processes unconnected if not."""
    from accelerate import PartialState

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("LOCAL_RANK", "-1")) != -1
    return PartialState(cpu=launched and not torch.cuda.is_available())


def check_distributed(state, output: Path | None) -> None:
    """Raises when the launch asked for several processes but `state` has one (accelerate's state was created
    earlier without distribution), or when several ranks have no output file to share."""
    if state.num_processes == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(
            "launched with several processes but accelerate's PartialState was first created without distribution "
            "(on CPU it needs cpu=True): create it with transformers_avllm.evaluation.distributed_state()"
        )
    if output is None and state.num_processes > 1:
        raise ValueError("data-parallel evaluation needs an output file for the ranks to share")


def shard_path(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.name}.rank{rank}")


def rank_output_path(output: Path | None, state) -> Path | None:
    """Where this rank appends its records: its own shard when there are several ranks, else `output` itself."""
    return shard_path(output, state.process_index) if output and state.num_processes > 1 else output


def shard_files(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f"{output.name}.rank*"))


def merge_shards(output: str | Path) -> int:
    """Appends the per-rank shard files' finished records that `output` lacks, then deletes the shards; returns how
    many records were added. Run by rank 0 once every rank is done."""
    output = Path(output)
    merged = read_records(output)
    added = []
    for shard in shard_files(output):
        for key, record in read_records(shard).items():
            if key not in merged or (is_done(record) and not is_done(merged[key])):
                merged[key] = record
                added.append(record)
    append_jsonl(output, added)
    for shard in shard_files(output):
        shard.unlink()
    return len(added)


def merge_leftover_shards(output: Path, state) -> None:
    """Folds in the shards an interrupted data-parallel run left (on rank 0), before any rank reads the results."""
    if state.is_main_process and shard_files(output):
        merge_shards(output)
    state.wait_for_everyone()
