"""Decode tokens/s with a media prefix / the bare LLM's with a same-length text prefix. Target >= 0.95 (CPU, eager).

    python bench/generate_speed.py                       # eager decoding, dynamic cache
    python bench/generate_speed.py --compiled            # static cache, decode step compiled (inductor on the CPU)
    python bench/generate_speed.py --compiled --backend eager

Besides the speed ratio it counts the Python function calls of one decode step (ours / bare's): a deterministic
measure of the per-step work `generate` and our wrappers add, which the shared CPU's load does not move.
"""

import argparse
import cProfile
import pstats

import torch
from common import av_inputs, bare_llm, bench_model, best_seconds
from transformers import CompileConfig

from transformers_avllm.models.avllm import TOKEN_TYPE_IDS

NEW_TOKENS = 48


def decode_tokens_per_second(generators: dict) -> dict:
    """Tokens/s of the decode phase of each generator: time for NEW_TOKENS tokens minus time for 1 (prefill + the
    first token)."""
    functions = {}
    for name, generate in generators.items():
        functions[(name, "full")] = lambda generate=generate: generate(NEW_TOKENS)
        functions[(name, "prefill")] = lambda generate=generate: generate(1)
    times = best_seconds(functions, repeats=5)
    return {name: (NEW_TOKENS - 1) / (times[(name, "full")] - times[(name, "prefill")]) for name in generators}


def calls_per_step(generate) -> float:
    """Python function calls per decode step: calls for 9 new tokens minus calls for 1, over 8."""

    def calls(new_tokens):
        profile = cProfile.Profile()
        profile.enable()
        generate(new_tokens)
        profile.disable()
        return pstats.Stats(profile).total_calls

    return (calls(9) - calls(1)) / 8


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
            "ours": lambda n: model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, **settings),
            "bare": lambda n: llm.generate(input_ids=text_ids, max_new_tokens=n, min_new_tokens=n, **settings),
        }
        speeds = decode_tokens_per_second(generators)
        calls = {name: calls_per_step(generate) for name, generate in generators.items()}
    ours, bare = speeds["ours"], speeds["bare"]
    mode = f"static cache, compiled ({args.backend})" if args.compiled else "dynamic cache, eager"
    print(f"prefix length {inputs['input_ids'].shape[1]}, {NEW_TOKENS} new tokens, {mode}")
    print(f"AV-LLM decode   {ours:8.1f} tokens/s, {calls['ours']:.0f} Python calls per step")
    print(f"bare LLM decode {bare:8.1f} tokens/s, {calls['bare']:.0f} Python calls per step")
    suffix = "_compiled" if args.compiled else ""
    print(f"figure: generate_speed{suffix} {ours / bare:.3f}")
    print(f"figure: generate_calls_per_step_ratio{suffix} {calls['ours'] / calls['bare']:.3f}")


if __name__ == "__main__":
    main()
