"""Run under `torchrun --nproc_per_node 2` (gloo, CPU): each rank builds the same tiny model and evaluates its
share of a benchmark into `<output>.rank<r>`; rank 0 merges the shards and writes the report. Prints, per rank, the
samples it answered (JSON)."""

import json
import sys

import torch
from transformers_avllm import AVLlmForConditionalGeneration
from transformers_avllm.evaluation import evaluate
from transformers_avllm.evaluation.runner import distributed_state
from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_config


def main(task: str, data: str, output: str) -> None:
    state = distributed_state()
    torch.manual_seed(0)
    config = tiny_config()
    model = AVLlmForConditionalGeneration(config).eval()
    processor = build_processor(config, build_tokenizer(["what is it a dog cat"]))
    answered = []
    generate = model.generate

    def counting_generate(**kwargs):
        answered.append(int(kwargs["input_ids"].shape[0]))
        return generate(**kwargs)

    model.generate = counting_generate
    report = evaluate(model, processor, task, data, output=output, batch_size=1, max_new_tokens=2, progress=False)
    print(json.dumps({"rank": state.process_index, "answered": sum(answered), "report": report is not None}))


if __name__ == "__main__":
    main(*sys.argv[1:])
