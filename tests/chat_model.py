"""A small chat model for the `avllm chat` / `avllm web` tests: the demo's model (data/synth.py task, demo.py config),
trained in about half a minute (600 steps) on one- and two-turn conversations, and exported as a Hub folder.

The training rows are the demo's colour and pitch questions, each with its own modality (`<VIS>`, `<AUD>`), again over
`<AUD_VIS>` (AV-LLM's joint samples, so a video asked about with its sound still gets the colour question right), and
two-turn conversations made of two such rows. The model is checked on held-out clips (the synthetic test split):
`ChatModel` names a held-out clip it answers correctly, an audio file, and the answers.

(The synthetic mp4s are not byte-identical from one call to the next: their decoded frames differ by a few grey
levels, so each session trains a slightly different model. The tests therefore ask about a held-out clip this model
got right, after checking that it gets most of them right.)
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from transformers_avllm.chat_avllm import ChatSession
from transformers_avllm.data.media_writer import write_audio
from transformers_avllm.data.synth import QUESTIONS, ClipSpec, question_row, render_clip, synthesize
from transformers_avllm.demo import build_demo_model
from transformers_avllm.export import export_pretrained
from transformers_avllm.models.avllm import AUDIO_VISUAL
from transformers_avllm.training import AVLlmDataCollator, apply_stage

KINDS = ("visual", "audio")  # the questions the chat tests ask (the audio-visual one needs a longer training)
NUM_TRAIN, NUM_TEST, STEPS, BATCH_SIZE, LEARNING_RATE = 64, 8, 600, 16, 3e-3
AUDIO_SPEC = ClipSpec(colours=("red", "blue"), pitches=("low", "high"))


@dataclass
class ChatModel:
    folder: Path  # the exported Hub folder
    clip: Path  # a held-out clip (video + its audio track)
    clip_spec: dict  # its colours and pitches
    audio: Path  # a wav file: AUDIO_SPEC's tones
    other_clips: list[dict]  # the other held-out colour questions it answers correctly (data/synth.py rows)

    @property
    def colour_at_start(self) -> str:
        return self.clip_spec["colours"][0]


def training_rows(rows: list[dict], rng: random.Random) -> list[dict]:
    """The demo's rows, the colour and pitch questions again over `<AUD_VIS>`, and as many two-turn rows."""
    joint = [
        question_row(row["id"].rsplit("-", 1)[0], row["messages"][0]["content"][0]["path"], row["kind"], row["answer"],
                     sample_type=AUDIO_VISUAL)
        for row in rows
        if row["kind"] != "audio_visual"
    ]  # fmt: skip
    single = rows + joint
    pairs = [
        {"id": f"pair{index}", "messages": rng.choice(single)["messages"] + rng.choice(single)["messages"]}
        for index in range(len(single))
    ]
    return single + pairs


def train_chat_model(root: Path, seed: int = 0) -> ChatModel:
    paths = synthesize(root / "data", num_train=NUM_TRAIN, num_test=NUM_TEST, seed=seed)
    rows = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    rows = [row for row in rows if row["kind"] in KINDS]
    test_rows = [json.loads(line) for line in paths["test"].read_text().splitlines()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster than two on 2 busy cores
    try:
        torch.manual_seed(seed)
        model, processor = build_demo_model()
        collator = AVLlmDataCollator(processor)
        encoded = [collator.encode(row) for row in training_rows(rows, random.Random(seed))]
        apply_stage(model, "sft")
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE, betas=(0.9, 0.98))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, LEARNING_RATE, total_steps=STEPS, pct_start=0.05)
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(STEPS):
            batch = collator.pad([encoded[i] for i in torch.randperm(len(encoded), generator=order)[:BATCH_SIZE]])
            model(**batch).loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    folder = export_pretrained(model.eval(), processor, root / "avllm-chat-demo", repo_id="avllm-chat-demo")
    _, waveform = render_clip(AUDIO_SPEC, seed=seed + 7)
    audio = write_audio(root / "tones.wav", waveform)
    session = ChatSession(model, processor, max_new_tokens=3)
    correct = []
    for row in test_rows:
        if row["kind"] == "visual":
            session.reset()
            session.attach("video", row["messages"][0]["content"][0]["path"])  # with its sound: <AUD_VIS>
            correct += [row] if session.ask(QUESTIONS["visual"]) == row["answer"] else []
    session.reset()
    session.attach("audio", str(audio))
    heard = session.ask(QUESTIONS["audio"])
    assert len(correct) >= 0.75 * NUM_TEST and heard == AUDIO_SPEC.pitches[0], (len(correct), heard)
    return ChatModel(
        folder=folder,
        clip=Path(correct[0]["messages"][0]["content"][0]["path"]),
        clip_spec=correct[0]["spec"],
        audio=audio,
        other_clips=correct[1:],
    )


__all__ = ["AUDIO_SPEC", "ChatModel", "QUESTIONS", "train_chat_model"]
