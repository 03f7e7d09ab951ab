"""A synthetic audio-visual task we control: short clips whose answers need the frames, the sound, or both.

Each clip has two halves. In each half a coloured square slides across a noisy background while a tone plays; the
two halves differ in colour and in pitch (one low, one high). Questions:

- visual (`<VIS>`, the video without its audio): "what colour is the square at the start ?" -> the first colour;
- audio (`<AUD>`, only the clip's audio track): "is the tone at the start low or high ?" -> the first pitch;
- audio-visual (`<AUD_VIS>`): "what colour is the square when the tone is high ?" -> the colour shown while the high
  tone plays, which needs both the frames and the sound, aligned in time.

Everything is seeded and deterministic; `synthesize` writes real mp4 files (h264 + aac) with PyAV, plus muted (silent
track) and blanked (black frames) copies of the test clips for grounding checks. The test split cycles through every
(colours, pitches) combination, so each answer is equally frequent: a model that ignores the frames (or the sound)
scores chance on the visual (audio) questions, not the share of the most frequent answer.
"""

import itertools
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..models.avllm import AUDIO, AUDIO_VISUAL, CONTENT_ITEMS, VISUAL
from .media_writer import write_video

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (230, 210, 30)}
PITCHES = {"low": 330.0, "high": 1320.0}
# One question kind per sample type, each trained and asked with that sample type's inputs.
QUESTIONS = {
    VISUAL: "what colour is the square at the start ?",
    AUDIO: "is the tone at the start low or high ?",
    AUDIO_VISUAL: "what colour is the square when the tone is high ?",
}
# Accuracy of a model that ignores the frames (visual), the sound (audio), or hears but does not see which of the two
# colours on screen goes with the high tone (audio-visual), on the balanced test split.
CHANCE = {VISUAL: 1 / len(COLOURS), AUDIO: 1 / len(PITCHES), AUDIO_VISUAL: 1 / 2}
VOCABULARY = sorted({word for text in QUESTIONS.values() for word in text.split()} | set(COLOURS) | set(PITCHES))
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class ClipSpec:
    """What happens in a clip: the colour and the pitch of each half."""

    colours: tuple[str, str]
    pitches: tuple[str, str]

    @property
    def answers(self) -> dict[str, str]:
        return {
            VISUAL: self.colours[0],
            AUDIO: self.pitches[0],
            AUDIO_VISUAL: self.colours[self.pitches.index("high")],
        }


def random_spec(rng: random.Random) -> ClipSpec:
    return ClipSpec(tuple(rng.sample(sorted(COLOURS), 2)), tuple(rng.sample(sorted(PITCHES), 2)))


def balanced_specs(count: int, rng: random.Random) -> list[ClipSpec]:
    """`count` specs cycling through all 24 (colours, pitches) combinations, each cycle in a shuffled order: every
    answer of every question kind is equally frequent when `count` is a multiple of 24."""
    combinations = [
        ClipSpec(colours, pitches)
        for colours in itertools.permutations(sorted(COLOURS), 2)
        for pitches in itertools.permutations(sorted(PITCHES), 2)
    ]
    specs = []
    while len(specs) < count:
        specs += rng.sample(combinations, len(combinations))
    return specs[:count]


def render_clip(
    spec: ClipSpec, seed: int, seconds: float = 2.0, fps: int = 8, size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Frames `(seconds * fps, size, size, 3)` uint8 and a mono waveform at `SAMPLE_RATE`."""
    rng = np.random.default_rng(seed)
    num_frames, side = int(seconds * fps), size // 3
    frames = rng.integers(70, 110, (num_frames, size, size, 3), dtype=np.uint8)
    top = int(rng.integers(0, size - side))
    for index, frame in enumerate(frames):
        half = 0 if index < num_frames // 2 else 1
        left = (index * (size - side)) // max(num_frames - 1, 1)
        frame[top : top + side, left : left + side] = COLOURS[spec.colours[half]]
    samples = int(seconds * SAMPLE_RATE)
    time = np.arange(samples) / SAMPLE_RATE
    frequency = np.where(np.arange(samples) < samples // 2, PITCHES[spec.pitches[0]], PITCHES[spec.pitches[1]])
    waveform = 0.4 * np.sin(2 * np.pi * frequency * time) + 0.02 * rng.standard_normal(samples)
    return frames, waveform.astype(np.float32)


def question_row(
    clip_id: str, path: str, kind: str, answer: str | None = None, sample_type: str | None = None
) -> dict:
    """A training-format row asking `kind`'s question about the clip with the inputs of its own sample type, or of
    `sample_type` (e.g. every question over `<AUD_VIS>`)."""
    item = {**CONTENT_ITEMS[sample_type or kind], "path": path}
    messages = [{"role": "user", "content": [item, {"type": "text", "text": QUESTIONS[kind]}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return {"id": f"{clip_id}-{kind}", "kind": kind, "answer": answer or "", "messages": messages}


def synthesize(output_dir: str | Path, num_train: int = 96, num_test: int = 48, seed: int = 0) -> dict[str, Path]:
    """Writes `num_train` + `num_test` clips and `train.jsonl` / `test.jsonl` (one row per clip and question kind),
    plus `muted/` and `blanked/` copies of the test clips. Returns the paths of the files written."""
    output = Path(output_dir)
    for folder in ("clips", "muted", "blanked"):
        (output / folder).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    splits = {"train": [], "test": []}
    specs = [random_spec(rng) for _ in range(num_train)] + balanced_specs(num_test, rng)
    for index, spec in enumerate(tqdm(specs, desc="synthesizing clips", unit="clip")):
        split = "train" if index < num_train else "test"
        frames, waveform = render_clip(spec, seed=seed * 100_003 + index)
        clip_id = f"{split}{index:05d}"
        path = write_video(output / "clips" / f"{clip_id}.mp4", frames, 8, waveform, SAMPLE_RATE)
        if split == "test":
            write_video(output / "muted" / f"{clip_id}.mp4", frames, 8, np.zeros_like(waveform), SAMPLE_RATE)
            write_video(output / "blanked" / f"{clip_id}.mp4", np.zeros_like(frames), 8, waveform, SAMPLE_RATE)
        for kind, answer in spec.answers.items():
            row = question_row(clip_id, str(path), kind, answer)
            row["spec"] = asdict(spec)
            splits[split].append(row)
    paths = {}
    for split, rows in splits.items():
        paths[split] = output / f"{split}.jsonl"
        paths[split].write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return paths
