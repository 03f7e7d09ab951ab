"""Decode tokens/s with a media prefix / the bare LLM's with a same-length text prefix. Target >= 0.95 (CPU, eager).
The decode phase is timed from the end of the prefill (`common.decode_tokens_per_second`).

    python bench/generate_speed.py                       # eager decoding, dynamic cache
    python bench/generate_speed.py --compiled            # static cache, decode step compiled (inductor on the CPU)
    python bench/generate_speed.py --compiled --backend eager

Besides the speed ratio it counts, per decode step, the Python function calls and the aten operators (ours / bare's):
deterministic measures of the per-step work `generate` and our wrappers add, which the shared CPU's load does not move.
"""

import argparse
import cProfile
import pstats

import torch
from common import av_inputs, bare_llm, bench_model, decode_tokens_per_second
from transformers import CompileConfig

from transformers_avllm.models.avllm import TOKEN_TYPE_IDS

NEW_TOKENS = 48


def calls_per_step(generate) -> float:
    """Python function calls per decode step: calls for 9 new tokens minus calls for 1, over 8."""

    def calls(new_tokens):
        profile = cProfile.Profile()
        profile.enable()
        generate(new_tokens)
        profile.disable()
        return pstats.Stats(profile).total_calls

    return (calls(9) - calls(1)) / 8


def aten_ops_per_step(generate) -> float:
    """aten operators run per decode step: operators for 9 new tokens minus those for 1, over 8."""

    def ops(new_tokens):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            generate(new_tokens)
        return sum(event.count for event in profiler.key_averages() if event.key.startswith("aten::"))

    return (ops(9) - ops(1)) / 8


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compiled", action="store_true", help="static cache, compiled decode step")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend with --compiled")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = bench_model()
    llm = bare_llm(model)
    inputs = av_inputs(model, batch_size=1)
    # what the processor gives: the placeholder types, which generate() must not carry past the prefill
    inputs["mm_token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    for kind in ("video", "audio"):
        inputs["mm_token_type_ids"][inputs["input_ids"] == getattr(model.config, f"{kind}_token_id")] = TOKEN_TYPE_IDS[
            kind
        ]
    text_ids = torch.randint(3, 4000, inputs["input_ids"].shape)
    settings = dict(do_sample=False, pad_token_id=0)
    if args.compiled:
        config = CompileConfig(backend=args.backend, mode=None if args.backend == "eager" else "default")
        config._compile_all_devices = True  # transformers compiles only on accelerators unless asked
        settings.update(cache_implementation="static", compile_config=config)

    with torch.inference_mode():
        generators = {
            "ours": lambda n, processors=None: model.generate(
                **inputs, max_new_tokens=n, min_new_tokens=n, logits_processor=processors, **settings
            ),
            "bare": lambda n, processors=None: llm.generate(
                input_ids=text_ids, max_new_tokens=n, min_new_tokens=n, logits_processor=processors, **settings
            ),
        }
        speeds = decode_tokens_per_second(generators, NEW_TOKENS)
        calls = {name: calls_per_step(generate) for name, generate in generators.items()}
        ops = {name: aten_ops_per_step(generate) for name, generate in generators.items()}
    ours, bare = speeds["ours"], speeds["bare"]
    mode = f"static cache, compiled ({args.backend})" if args.compiled else "dynamic cache, eager"
    print(f"prefix length {inputs['input_ids'].shape[1]}, {NEW_TOKENS} new tokens, {mode}")
    for name, speed in (("AV-LLM", ours), ("bare LLM", bare)):
        key = "ours" if name == "AV-LLM" else "bare"
        print(
            f"{name:<9} decode {speed:8.1f} tokens/s, per step {calls[key]:.0f} Python calls, {ops[key]:.0f} aten ops"
        )
    suffix = "_compiled" if args.compiled else ""
    print(f"figure: generate_speed{suffix} {ours / bare:.3f}")
    print(f"figure: generate_calls_per_step_ratio{suffix} {calls['ours'] / calls['bare']:.3f}")
    print(f"figure: generate_aten_ops_per_step_ratio{suffix} {ops['ours'] / ops['bare']:.3f}")


if __name__ == "__main__":
    main()
