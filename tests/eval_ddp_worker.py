"""Run under `torchrun --nproc_per_node 2` (gloo, CPU): each rank builds the same tiny model and evaluates its
share of a benchmark into `<output>.rank<r>`; rank 0 merges the shards and writes the report.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/eval_ddp_worker.py TASK DATA OUTPUT

The tokenizer's vocabulary holds the task's prompts, so each `generate` call's rows can be decoded back to the
samples they ask about (every sample's question must be distinct). Prints one JSON line per rank: its rank, the
world size, the ids of the samples it answered, the rows it generated, and (rank 0) the merged report's counts."""

import json
import sys

import torch

from transformers_avllm import AVLlmForConditionalGeneration
from transformers_avllm.evaluation import distributed_state, evaluate, get_task
from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_config


def main(task: str, data: str, output: str) -> None:
    state = distributed_state()
    samples = get_task(task).load(data)
    torch.manual_seed(0)
    config = tiny_config()
    model = AVLlmForConditionalGeneration(config).eval()
    processor = build_processor(config, build_tokenizer([get_task(task).prompt(sample) for sample in samples]))
    answered, rows = [], 0
    generate = model.generate

    def recording_generate(**kwargs):
        nonlocal rows
        rows += int(kwargs["input_ids"].shape[0])
        for prompt in processor.batch_decode(kwargs["input_ids"], skip_special_tokens=True):
            answered.extend(sample.id for sample in samples if sample.question in prompt)
        return generate(**kwargs)

    model.generate = recording_generate
    report = evaluate(model, processor, task, data, output=output, batch_size=2, max_new_tokens=2, progress=False)
    print(
        json.dumps(
            {
                "rank": state.process_index,
                "world_size": state.num_processes,
                "answered": answered,
                "rows": rows,
                "report_counts": None if report is None else report["counts"],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
