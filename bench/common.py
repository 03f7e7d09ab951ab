"""Shared set-up of the model benchmarks: a small (not tiny) AV-LLM and timing helpers."""

import sys
import time
from pathlib import Path

import torch
from transformers import LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

from transformers_avllm import AVLlmForConditionalGeneration
from transformers_avllm.tiny import tiny_audio_config, tiny_config, tiny_text_config, tiny_vision_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media_fixtures import write_video  # noqa: E402
from model_inputs import random_rows  # noqa: E402

CLIP_FPS = 30
CLIP_NOISE = 7  # noise in the frames, for a realistic bitrate (about 3.5 Mb/s at 480p)


def bench_clip(workdir: Path, name: str, spec: dict, quick: bool) -> Path:
    """The media benchmarks' clip `name` in `workdir`: h264 at `CLIP_FPS` with a 440 Hz AAC track, `spec` the
    `write_video` sizes (seconds, size, gop). Written once, under a temporary name first; an existing one (a kept
    `--workdir`) is reused."""
    path = workdir / f"{name}{'_quick' if quick else ''}.mp4"
    if not path.exists():
        start = time.perf_counter()
        write_video(path.with_suffix(".part.mp4"), fps=CLIP_FPS, audio=("aac", 440), noise=CLIP_NOISE, **spec)
        path.with_suffix(".part.mp4").rename(path)
        print(f"wrote {path.name} in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def bench_model(num_frames: int = 8) -> AVLlmForConditionalGeneration:
    """CLIP ViT (224 px, patch 16 -> 14x14 grid) + CLAP-HTSAT + a 4-layer Llama, random weights, eval mode: the tiny
    configs at larger sizes."""
    torch.manual_seed(0)
    config = tiny_config(
        vision=tiny_vision_config(
            "clip",
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=4,
            num_attention_heads=4,
            image_size=224,
            patch_size=16,
        ),
        audio=tiny_audio_config(
            "clap",
            hidden_size=256,
            patch_embeds_hidden_size=32,
            depths=[2, 2],
            num_attention_heads=[2, 4],
            spec_size=256,
            num_mel_bins=64,
            window_size=8,
        ),
        text=tiny_text_config(
            "llama",
            vocab_size=4096,
            hidden_size=512,
            intermediate_size=1376,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=8,
            max_position_embeddings=2048,
        ),
        num_frames=num_frames,
        num_audio_segments=4,
    )
    return AVLlmForConditionalGeneration(config).eval()


def bare_llm(model: AVLlmForConditionalGeneration) -> LlamaForCausalLM:
    """The same LLM weights as a plain LlamaForCausalLM."""
    llm = LlamaForCausalLM(model.config.text_config).eval()
    llm.model.load_state_dict(model.model.language_model.state_dict())
    llm.lm_head.load_state_dict(model.lm_head.state_dict())
    return llm


def av_inputs(model, batch_size: int = 2, text_length: int = 64):
    batch, _ = random_rows(model.config, ["av"] * batch_size, text_lengths=[text_length] * batch_size)
    return batch


def synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(functions: dict, repeats: int = 7, warmup: int = 1, device: torch.device | None = None) -> dict:
    """Fastest wall time of each function, measured in interleaved rounds so that load from other processes hits
    all of them alike (the minimum is the least noisy estimate of a deterministic computation's cost); on a GPU the
    device is synchronised around each call."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    timings = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            timings[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in timings.items()}


class _PrefillClock(LogitsProcessor):
    """Notes the time at which generate() first asks for scores: the end of the prefill."""

    def __init__(self, device: torch.device | None):
        self.device, self.start = device, None

    def __call__(self, input_ids, scores):
        if self.start is None:
            synchronize(self.device)
            self.start = time.perf_counter()
        return scores


def decode_tokens_per_second(
    generators: dict, new_tokens: int, repeats: int = 5, device: torch.device | None = None
) -> dict:
    """Decode tokens/s of each generator `generate(new_tokens, logits_processor)`: the `new_tokens - 1` steps after the
    prefill, timed from the end of the prefill (so the prefill's own variance, towers included, stays out), fastest
    of interleaved rounds after a warm-up (which also compiles, with a static cache)."""

    def decode_seconds(generate):
        clock = _PrefillClock(device)
        generate(new_tokens, LogitsProcessorList([clock]))
        synchronize(device)
        return time.perf_counter() - clock.start

    for generate in generators.values():
        decode_seconds(generate)
    timings = {name: [] for name in generators}
    for _ in range(repeats):
        for name, generate in generators.items():
            timings[name].append(decode_seconds(generate))
    return {name: (new_tokens - 1) / min(values) for name, values in timings.items()}
