"""`avllm quickstart`: build a tiny audio-visual LLM offline, make a clip, and answer a question about it."""

import time
from pathlib import Path

import numpy as np
import torch

from .data.media_writer import write_video
from .models.avllm import AVLlmForConditionalGeneration
from .tiny import SAMPLING_RATE, build_processor, build_tokenizer, tiny_config

QUESTION = "what do you see and hear ?"
WORDS = ["a", "red", "square", "moves", "while", "tone", "plays", "what", "do", "you", "see", "and", "hear", "?"]


def make_clip(path: Path, seconds: float = 2.0, fps: int = 12, size: int = 64, tone_hz: float = 440.0) -> Path:
    """A red square sliding left to right over grey, with a sine tone: `(seconds * fps)` frames of `size`x`size`."""
    frames = np.full((int(seconds * fps), size, size, 3), 96, dtype=np.uint8)
    for index, frame in enumerate(frames):
        left = index * (size - 16) // max(len(frames) - 1, 1)
        frame[24:40, left : left + 16] = (220, 30, 30)
    time_axis = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    return write_video(path, frames, fps, 0.5 * np.sin(2 * np.pi * tone_hz * time_axis), SAMPLING_RATE)


def run_quickstart(output_dir: str = "outputs/quickstart", max_new_tokens: int = 8, seed: int = 0) -> str:
    """Builds a tiny CLIP + CLAP + Llama AV-LLM with random weights, answers a question about a generated clip, and
    returns the answer (noise until the model is trained: see `avllm demo`)."""
    torch.manual_seed(seed)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    clip = make_clip(output / "clip.mp4")
    config = tiny_config()
    model = AVLlmForConditionalGeneration(config).eval()
    processor = build_processor(config, build_tokenizer([" ".join(WORDS)]))
    messages = [
        {"role": "user", "content": [{"type": "video", "path": str(clip)}, {"type": "text", "text": QUESTION}]}
    ]
    start = time.perf_counter()
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    answer = processor.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    elapsed = time.perf_counter() - start
    print(f"clip          : {clip} (video + its own audio track)")
    print(f"prompt        : {processor.apply_chat_template(messages, add_generation_prompt=True)}")
    print(f"model inputs  : {', '.join(f'{k} {tuple(v.shape)}' for k, v in inputs.items())}")
    print(f"parameters    : {sum(p.numel() for p in model.parameters()):,} (random weights: the answer is noise)")
    print(f"answer        : {answer!r}  ({elapsed:.2f} s)")
    return answer
