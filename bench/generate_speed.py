"""Decode tokens/s with a media prefix / the bare LLM's with a same-length text prefix. Target >= 0.95."""

import torch
from common import av_inputs, bare_llm, bench_model, best_seconds

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


def main():
    torch.set_num_threads(2)
    model = bench_model()
    llm = bare_llm(model)
    inputs = av_inputs(model, batch_size=1)
    text_ids = torch.randint(3, 4000, inputs["input_ids"].shape)
    settings = dict(do_sample=False, pad_token_id=0)

    with torch.inference_mode():
        speeds = decode_tokens_per_second(
            {
                "ours": lambda n: model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, **settings),
                "bare": lambda n: llm.generate(input_ids=text_ids, max_new_tokens=n, min_new_tokens=n, **settings),
            }
        )
    ours, bare = speeds["ours"], speeds["bare"]
    print(f"prefix length {inputs['input_ids'].shape[1]}, {NEW_TOKENS} new tokens")
    print(f"AV-LLM decode   {ours:8.1f} tokens/s")
    print(f"bare LLM decode {bare:8.1f} tokens/s")
    print(f"figure: generate_speed {ours / bare:.3f}")


if __name__ == "__main__":
    main()
