"""Decode tokens/s with a media prefix / the bare LLM's with a same-length text prefix. Target >= 0.95."""

import torch
from common import av_inputs, bare_llm, bench_model, median_seconds

NEW_TOKENS = 48


def decode_tokens_per_second(generate) -> float:
    """Tokens/s of the decode phase: time for NEW_TOKENS tokens minus time for 1 (prefill + first token)."""
    full = median_seconds(lambda: generate(NEW_TOKENS), repeats=5, warmup=1)
    prefill = median_seconds(lambda: generate(1), repeats=5, warmup=1)
    return (NEW_TOKENS - 1) / (full - prefill)


def main():
    torch.set_num_threads(2)
    model = bench_model()
    llm = bare_llm(model)
    inputs = av_inputs(model, batch_size=1)
    text_ids = torch.randint(3, 4000, inputs["input_ids"].shape)
    settings = dict(do_sample=False, pad_token_id=0)

    with torch.inference_mode():
        ours = decode_tokens_per_second(
            lambda n: model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, **settings)
        )
        bare = decode_tokens_per_second(
            lambda n: llm.generate(input_ids=text_ids, max_new_tokens=n, min_new_tokens=n, **settings)
        )
    print(f"prefix length {inputs['input_ids'].shape[1]}, {NEW_TOKENS} new tokens")
    print(f"AV-LLM decode   {ours:8.1f} tokens/s")
    print(f"bare LLM decode {bare:8.1f} tokens/s")
    print(f"figure: generate_speed {ours / bare:.3f}")


if __name__ == "__main__":
    main()
