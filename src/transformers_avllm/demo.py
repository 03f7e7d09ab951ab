"""`avllm demo`: train a tiny AV-LLM on a synthetic audio-visual task, prove it listens, export it and chat with it.

Offline on 2 CPU cores in minutes: the data are generated (`data/synth.py`), the towers and the LLM are tiny random
configs of real transformers classes, the tokenizer is trained locally, and training goes through the project's own
`AVLlmSFTTrainer` path (stage 1: projectors; stage 2: projectors + LLM).
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from trl import SFTConfig

from .data.synth import CHANCE, QUESTIONS, VOCABULARY, question_row, synthesize
from .export import export_pretrained
from .models.avllm import AUDIO_VISUAL, AVLlmConfig, AVLlmForConditionalGeneration, AVLlmProcessor
from .plotting import grouped_bars, new_figure, save_figure
from .tiny import (
    build_processor,
    build_tokenizer,
    tiny_audio_config,
    tiny_config,
    tiny_text_config,
    tiny_vision_config,
)
from .training import AVLlmSFTTrainer, apply_stage, stage_defaults

KINDS = tuple(QUESTIONS)
CONDITIONS = ("normal", "muted", "blanked")


@dataclass
class DemoBudget:
    """Size and time budget of the demo."""

    num_train: int = 192
    num_test: int = 48
    stage1_steps: int = 60
    stage2_steps: int = 1200
    batch_size: int = 16
    # The papers' 2e-3 / 2e-5 assume a pretrained LLM; this one is tiny and random, so stage 2 needs a larger rate
    # and stage 1 a gentler one (2e-3 for 100 steps left the projectors too far out for stage 2 to recover in budget).
    stage1_learning_rate: float = 1e-3
    stage2_learning_rate: float = 1e-3
    workers: int = 1


def demo_config(vocab_size: int) -> AVLlmConfig:
    """Tiny CLIP (32 px, 4x4 patches) + Whisper encoder (1 s segments, 32 mel bins) + Llama: 4 frames and 2 audio
    segments, one per half of a clip. (A random CLAP-HTSAT tower is translation-equivariant over its frequency axis,
    so its frequency-averaged tokens cannot tell pitches apart untrained; Whisper's first convolution mixes the mel
    bins into channels and keeps pitch. Its random weights get std 0.2 instead of 0.02 so that the input, not the
    fixed sinusoidal positions, dominates its features: a random tower stands in for a pretrained one here.)"""
    return tiny_config(
        vision=tiny_vision_config("clip", hidden_size=48, intermediate_size=96, num_attention_heads=4),
        audio=tiny_audio_config(
            "whisper",
            d_model=48,
            encoder_attention_heads=4,
            encoder_ffn_dim=96,
            num_mel_bins=32,
            init_std=0.2,
        ),
        text=tiny_text_config(
            "llama",
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=8,
            num_key_value_heads=8,
            max_position_embeddings=256,
        ),
    )


def build_demo_model() -> tuple[AVLlmForConditionalGeneration, AVLlmProcessor]:
    """A fresh random demo model and its processor (tokenizer trained on the task's words)."""
    tokenizer = build_tokenizer([" ".join(VOCABULARY)], vocab_size=len(VOCABULARY) + 16)
    config = demo_config(len(tokenizer))
    return AVLlmForConditionalGeneration(config), build_processor(config, tokenizer)


def _train_stage(
    model, processor, rows: list[dict], stage: str, steps: int, learning_rate: float, budget, output, first_step=0
):
    """Trains `steps` steps of `stage` on shuffled `rows`; returns the loss curve as (global step, loss)."""
    apply_stage(model, stage)
    args = SFTConfig(
        output_dir=str(output),
        max_steps=steps,
        per_device_train_batch_size=budget.batch_size,
        dataloader_num_workers=budget.workers,
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=10,
        save_strategy="no",
        activation_checkpointing=False,
        seed=0,
        **{**stage_defaults(stage), "learning_rate": learning_rate, "num_train_epochs": 1},
    )
    trainer = AVLlmSFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows).shuffle(seed=0), processing_class=processor
    )
    trainer.train()
    return [(first_step + entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]


@torch.no_grad()
def answer(model, processor, rows: list[dict], batch_size: int = 32, desc: str = "answering") -> list[str]:
    """Greedy answers (first word) to the rows' questions."""
    model.eval()
    answers = []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", leave=False):
        batch = rows[start : start + batch_size]
        inputs = processor.apply_chat_template(
            [row["messages"][:1] for row in batch], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        generated = model.generate(**inputs, max_new_tokens=2, do_sample=False)
        texts = processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        answers += [text.split()[0] if text.split() else "" for text in texts]
    return answers


def accuracy_by_kind(rows: list[dict], answers: list[str]) -> dict[str, float]:
    return {
        kind: sum(a == row["answer"] for row, a in zip(rows, answers, strict=True) if row["kind"] == kind)
        / max(1, sum(row["kind"] == kind for row in rows))
        for kind in KINDS
    }


def _condition_rows(rows: list[dict], condition: str) -> list[dict]:
    """The test rows pointing at the muted (silent track) or blanked (black frames) copies of their clips."""
    if condition == "normal":
        return rows
    moved = []
    for row in rows:
        item = row["messages"][0]["content"][0]
        path = Path(item["path"])
        clip_id = row["id"].rsplit("-", 1)[0]
        new_row = question_row(clip_id, str(path.parent.parent / condition / path.name), row["kind"], row["answer"])
        moved.append(new_row)
    return moved


def plot(report: dict, path: Path) -> None:
    figure, (losses, bars) = new_figure(2)
    for stage, curve in report["loss_curves"].items():
        if curve:
            steps, values = zip(*curve, strict=True)
            losses.plot(steps, values, label=stage)
    losses.set(xlabel="step", ylabel="training loss", title="loss")
    losses.legend()
    accuracy = {condition: [report["accuracy"][condition][kind] for kind in KINDS] for condition in CONDITIONS}
    grouped_bars(
        bars, list(KINDS), accuracy, chance=[CHANCE[kind] for kind in KINDS], ylabel="held-out accuracy",
        ylim=(0, 1.05), title="accuracy (dotted: chance)",
    )  # fmt: skip
    save_figure(figure, path)


def run_demo(output_dir: str = "outputs/demo", budget: DemoBudget | None = None, seed: int = 0) -> dict:
    """Generates the data, trains stage 1 then stage 2, evaluates normal / muted / blanked, exports the Hub folder,
    reloads it with `trust_remote_code=True` and answers one held-out question. Writes `report.json` and
    `report.png`; returns the report."""
    budget = budget or DemoBudget()
    start = time.perf_counter()
    output = Path(output_dir)
    torch.manual_seed(seed)
    paths = synthesize(output / "data", budget.num_train, budget.num_test, seed=seed)
    train_rows = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    test_rows = [json.loads(line) for line in paths["test"].read_text().splitlines()]

    model, processor = build_demo_model()
    curves = {
        "stage 1 (projectors)": _train_stage(
            model,
            processor,
            train_rows,
            "pretrain",
            budget.stage1_steps,
            budget.stage1_learning_rate,
            budget,
            output / "stage1",
        ),
        "stage 2 (projectors + LLM)": _train_stage(
            model,
            processor,
            train_rows,
            "sft",
            budget.stage2_steps,
            budget.stage2_learning_rate,
            budget,
            output / "stage2",
            first_step=budget.stage1_steps,
        ),
    }
    accuracy = {
        condition: accuracy_by_kind(
            test_rows,
            answer(model, processor, _condition_rows(test_rows, condition), desc=f"evaluating ({condition})"),
        )
        for condition in CONDITIONS
    }
    folder = export_pretrained(model, processor, output / "hub" / "avllm-demo", repo_id="avllm-demo")
    example = test_rows[2]  # an audio-visual question
    reloaded_answer = _answer_with_remote_code(folder, example)
    report = {
        "accuracy": accuracy,
        "chance": CHANCE,
        "loss_curves": curves,
        "example": {
            "question": QUESTIONS[example["kind"]],
            "clip": example["messages"][0]["content"][0]["path"],
            "expected": example["answer"],
            "answer_after_reload": reloaded_answer,
        },
        "hub_folder": str(folder),
        "budget": budget.__dict__,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (output / "report.json").write_text(json.dumps(report, indent=2))
    plot(report, output / "report.png")
    _print_report(report)
    return report


def _answer_with_remote_code(folder: Path, row: dict) -> str:
    """Loads the exported folder through the Auto classes with remote code, as a Hub user would."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    return answer(model, processor, [row], desc="reloaded model")[0]


def _print_report(report: dict) -> None:
    accuracy = report["accuracy"]
    print("\nheld-out accuracy      " + "  ".join(f"{kind:>13}" for kind in KINDS))
    for condition in CONDITIONS:
        print(f"{condition:<22} " + "  ".join(f"{accuracy[condition][kind]:13.1%}" for kind in KINDS))
    print(f"{'chance':<22} " + "  ".join(f"{CHANCE[kind]:13.1%}" for kind in KINDS))
    example = report["example"]
    print(f"\nexported to {report['hub_folder']}; reloaded with trust_remote_code=True")
    print(f"Q: {example['question']}  ({example['clip']})")
    print(f"A: {example['answer_after_reload']}   (expected: {example['expected']})")
    print(f"done in {report['seconds']:.0f} s; report.json and report.png in {Path(report['hub_folder']).parents[1]}")


# AV-LLM Table 4 at equal budget: the order in which joint (every question over <AUD_VIS>) and separate (visual
# questions over <VIS>, audio questions over <AUD>) samples are seen.
ABLATION_SCHEDULES = {
    "MAT (mixed in every batch)": (("joint+separate", 1.0),),
    "PT1 (joint, then separate)": (("joint", 0.5), ("separate", 0.5)),
    "PT2 (separate, then joint)": (("separate", 0.5), ("joint", 0.5)),
}


def _ablation_pools(train_rows: list[dict]) -> dict[str, list[dict]]:
    joint = []
    for row in train_rows:
        clip_id, path = row["id"].rsplit("-", 1)[0], row["messages"][0]["content"][0]["path"]
        joint.append(question_row(clip_id, path, row["kind"], row["answer"], sample_type=AUDIO_VISUAL))
    separate = [row for row in train_rows if row["kind"] != AUDIO_VISUAL]
    return {"joint": joint, "separate": separate, "joint+separate": joint + separate}


def run_ablation(output_dir: str = "outputs/ablation", budget: DemoBudget | None = None, seed: int = 0) -> dict:
    """Trains the demo model three times at equal budget (stage-2 steps) with the MAT / PT1 / PT2 schedules and
    reports held-out accuracy per question kind, each asked with its own modality type. Writes `ablation.json`,
    `ablation.md` and `ablation.png`."""
    budget = budget or DemoBudget()
    output = Path(output_dir)
    paths = synthesize(output / "data", budget.num_train, budget.num_test, seed=seed)
    train_rows = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    test_rows = [json.loads(line) for line in paths["test"].read_text().splitlines()]
    pools = _ablation_pools(train_rows)
    results = {}
    for name, schedule in ABLATION_SCHEDULES.items():
        torch.manual_seed(seed)
        model, processor = build_demo_model()
        first_step = 0
        for phase, fraction in schedule:
            steps = int(budget.stage2_steps * fraction)
            _train_stage(
                model,
                processor,
                pools[phase],
                "sft",
                steps,
                budget.stage2_learning_rate,
                budget,
                output / "runs",
                first_step,
            )
            first_step += steps
        results[name] = accuracy_by_kind(test_rows, answer(model, processor, test_rows, desc=f"evaluating {name}"))
    lines = [
        f"| schedule ({budget.stage2_steps} steps, {budget.num_train} clips) | " + " | ".join(KINDS) + " | mean |",
        "|---" * (len(KINDS) + 2) + "|",
    ]
    for name, accuracy in results.items():
        mean = sum(accuracy.values()) / len(KINDS)
        lines.append(f"| {name} | " + " | ".join(f"{accuracy[kind]:.1%}" for kind in KINDS) + f" | {mean:.1%} |")
    table = "\n".join(lines)
    (output / "ablation.json").write_text(json.dumps({"accuracy": results, "budget": budget.__dict__}, indent=2))
    (output / "ablation.md").write_text(table + "\n")
    _plot_ablation(results, output / "ablation.png")
    print(table)
    return results


def _plot_ablation(results: dict, path: Path) -> None:
    figure, (axes,) = new_figure(1, (7, 4))
    grouped_bars(
        axes, list(KINDS), {name: [accuracy[kind] for kind in KINDS] for name, accuracy in results.items()},
        ylabel="held-out accuracy", ylim=(0, 1.05), title="modality-augmented training vs. phased training",
    )  # fmt: skip
    save_figure(figure, path)
