"""`evaluate()`: batched generation over a benchmark, resumable jsonl results, data-parallel shards, judging, metrics,
the grounding ablations and the report (and its `eval_results` for the model card)."""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..jsonl import append_jsonl, read_jsonl
from ..models.avllm import MediaError, load_audio, probe_media
from .judges import Judge
from .metrics import (
    cider_d,
    exact_match,
    extract_choice,
    mean,
    normalized_match,
    spice,
    spice_status,
)
from .tasks import Sample, TaskSpec, get_task

logger = logging.getLogger(__name__)

# What a video without an audio track becomes: its frames alone (<VIS>), never an invented silent track.
MISSING_AUDIO = "visual_only"
CONDITIONS = ("full", "no_audio", "no_video")
CONDITION_NOTES = {
    "full": "the sample as the benchmark gives it",
    "no_audio": (
        "audio muted: each video is rendered visual-only (<VIS>, use_audio=False: the model's own video-only mode, "
        "no audio tokens); each audio clip is replaced by digital silence of the same duration (same tokens). "
        "Samples without audio are left out of this comparison."
    ),
    "no_video": (
        "frames blanked: every decoded video frame and image is replaced by a black frame after decoding (same frame "
        "count, same tokens, the audio track kept). Samples without frames are left out of this comparison."
    ),
}
MEDIA_ERRORS = (MediaError, ValueError, OSError)


# ---- result files ------------------------------------------------------------------------------------------------


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


def record_key(condition: str, sample_id: str) -> str:
    return f"{condition}\t{sample_id}"


def read_records(path: str | Path | None) -> dict[str, dict]:
    """Records of a results jsonl by key (the last line of a key wins; a torn line is ignored)."""
    return {
        record_key(record["condition"], record["id"]): record
        for record in read_jsonl(path)
        if "condition" in record and "id" in record
    }


def is_done(record: dict | None) -> bool:
    """Finished: predicted, or deliberately skipped. Errored samples are retried by the next run."""
    return record is not None and ("prediction" in record or "skipped" in record)


def shard_path(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.name}.rank{rank}")


def _shards(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f"{output.name}.rank*"))


def merge_shards(output: str | Path) -> int:
    """Appends the per-rank shard files' finished records that `output` lacks, then deletes the shards; returns how
    many records were added. Run by rank 0 once every rank is done."""
    output = Path(output)
    merged = read_records(output)
    added = []
    for shard in _shards(output):
        for key, record in read_records(shard).items():
            if key not in merged or (is_done(record) and not is_done(merged[key])):
                merged[key] = record
                added.append(record)
    append_jsonl(output, added)
    for shard in _shards(output):
        shard.unlink()
    return len(added)


# ---- generation --------------------------------------------------------------------------------------------------


class _Generator:
    """Turns (sample, condition) pairs into model inputs and answers them in one `generate` call per batch."""

    def __init__(self, model, processor, spec: TaskSpec, generation_kwargs: dict, seed: int):
        self.model, self.processor, self.spec = model, processor, spec
        self.generation_kwargs, self.seed = generation_kwargs, seed
        self._black = None

    def conversation(self, sample: Sample, condition: str, question: str) -> list[dict]:
        content = []
        for item in sample.media:
            part = dict(item)
            if condition == "no_audio" and part["type"] == "video":
                part["use_audio"] = False
            elif condition == "no_audio" and part["type"] == "audio":
                part = {"type": "audio", "audio": self._silence(part["path"])}
            content.append(part)
        content.append({"type": "text", "text": self.spec.prompt(sample, question)})
        return [{"role": "user", "content": content}]

    def _silence(self, path: str) -> np.ndarray:
        rate = self.processor.feature_extractor.sampling_rate
        duration = probe_media(path).duration
        length = round(duration * rate) if duration else len(load_audio(path, rate))
        return np.zeros(max(length, 1), dtype=np.float32)

    def modality(self, sample: Sample) -> tuple[str, bool, bool]:
        """("audio+video" | "video" | "audio" | "image" ..., has audio, has frames) of the sample as evaluated."""
        _, items = self.processor.resolve_conversation(
            self.conversation(sample, "full", sample.question), missing_audio=MISSING_AUDIO
        )
        parts = set()
        for item in items:
            if item.kind == "image":
                parts.add("image")
            if item.kind == "video" and item.use_video:
                parts.add("video")
            if item.use_audio:
                parts.add("audio")
        has_audio = "audio" in parts
        has_frames = bool(parts & {"video", "image"})
        return "+".join(sorted(parts)) or "text", has_audio, has_frames

    def _encode(self, conversations: list[list[dict]]):
        return self.processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            missing_audio=MISSING_AUDIO,
            processor_kwargs={"padding_side": "left"},
        )

    def _black_frame(self) -> torch.Tensor:
        if self._black is None:
            black = np.zeros((64, 64, 3), dtype=np.uint8)
            self._black = self.processor.image_processor(images=[black], return_tensors="pt")["pixel_values"][0]
        return self._black

    @torch.inference_mode()
    def answer(self, samples: list[Sample], condition: str) -> tuple[list[dict], dict[str, str]]:
        """Predictions `{"prediction"[, "prediction2"]}` for the samples that could be encoded, and errors by id."""
        errors, conversations = {}, {}
        for sample in samples:
            questions = [sample.question] + ([sample.question2] if sample.question2 else [])
            try:
                conversations[sample.id] = [self.conversation(sample, condition, question) for question in questions]
            except MEDIA_ERRORS as err:
                errors[sample.id] = _describe(err)
        good = [sample for sample in samples if sample.id in conversations]
        try:
            inputs = self._encode([conv for sample in good for conv in conversations[sample.id]]) if good else None
        except MEDIA_ERRORS:  # find the samples that cannot be decoded, answer the others
            for sample in good:
                try:
                    self._encode(conversations[sample.id])
                except MEDIA_ERRORS as err:
                    errors[sample.id] = _describe(err)
            good = [sample for sample in good if sample.id not in errors]
            inputs = self._encode([conv for sample in good for conv in conversations[sample.id]]) if good else None
        if inputs is None:
            return [], errors
        owners = [(sample.id, index) for sample in good for index in range(len(conversations[sample.id]))]
        if condition == "no_video":
            for key in ("pixel_values_videos", "pixel_values"):
                if key in inputs:
                    inputs[key] = self._black_frame().expand_as(inputs[key]).clone()
        inputs = inputs.to(self.model.device)
        if self.generation_kwargs.get("do_sample"):
            torch.manual_seed(self.seed + zlib.crc32("\n".join(sample.id for sample in good).encode()))
        tokenizer = self.processor.tokenizer
        generated = self.model.generate(
            **inputs,
            **self.generation_kwargs,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = self.processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        predictions: dict[str, dict] = {sample.id: {} for sample in good}
        for (sample_id, index), text in zip(owners, texts, strict=True):
            predictions[sample_id]["prediction" if index == 0 else "prediction2"] = text.strip()
        return [predictions[sample.id] for sample in good], errors


def _sample_record(spec: TaskSpec, sample: Sample, condition: str, modality: str) -> dict:
    record = {
        "id": sample.id,
        "condition": condition,
        "task": spec.name,
        "modality": modality,
        "media": [item["path"] for item in sample.media],
        "question": sample.question,
        "references": sample.references,
    }
    if sample.choices is not None:
        record["choices"], record["answer_index"] = sample.choices, sample.answer_index
    if sample.question2:
        record["question2"] = sample.question2
    if sample.meta:
        record["meta"] = sample.meta
    return record


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate_records(
    generator: _Generator,
    samples: list[Sample],
    conditions: tuple[str, ...],
    done: dict[str, dict],
    path: Path | None,
    batch_size: int,
    state,
    progress: bool = True,
) -> dict[str, dict]:
    """Answers every (condition, sample) not finished in `done` (this rank's share of them), appending each batch's
    records to `path` as it completes; returns the new records by key."""
    spec, new = generator.spec, {}
    for condition in conditions:
        pending = [sample for sample in samples if not is_done(done.get(record_key(condition, sample.id)))]
        with state.split_between_processes(pending) as mine:
            mine = list(mine)
        bar = tqdm(
            total=len(mine), desc=f"{spec.name} [{condition}]", unit="sample", disable=not progress,
            position=state.process_index, leave=state.is_main_process,
        )  # fmt: skip
        for batch in _batches(mine, batch_size):
            records, runnable = {}, []
            for sample in batch:
                try:
                    modality, has_audio, has_frames = generator.modality(sample)
                except MEDIA_ERRORS as err:
                    records[sample.id] = {"id": sample.id, "condition": condition, "error": _describe(err)}
                    continue
                records[sample.id] = _sample_record(spec, sample, condition, modality)
                if condition == "no_audio" and not has_audio:
                    records[sample.id]["skipped"] = "no audio to mute"
                elif condition == "no_video" and not has_frames:
                    records[sample.id]["skipped"] = "no frames to blank"
                else:
                    runnable.append(sample)
            if runnable:
                predictions, errors = generator.answer(runnable, condition)
                answered = iter(predictions)
                for sample in runnable:
                    if sample.id in errors:
                        records[sample.id] = {"id": sample.id, "condition": condition, "error": errors[sample.id]}
                    else:
                        records[sample.id].update(next(answered))
            records = list(records.values())
            if path is not None:
                append_jsonl(path, records)
            new.update((record_key(record["condition"], record["id"]), record) for record in records)
            bar.update(len(batch))
        bar.close()
    return new


# ---- scoring -----------------------------------------------------------------------------------------------------


def score_records(spec: TaskSpec, records: list[dict], judge: Judge | None = None, workers: int = 4) -> None:
    """Adds `scores` (match flags, chosen option, judgements) to each predicted record, in place."""
    jobs = []
    for record in records:
        if "prediction" not in record:
            continue
        scores = record.setdefault("scores", {})
        prediction, references = record["prediction"], record.get("references") or []
        if spec.kind == "open_qa" and references:
            scores["exact_match"] = exact_match(prediction, references)
            scores["normalized_match"] = normalized_match(prediction, references)
        if spec.kind == "mc":
            scores["choice"] = extract_choice(prediction, record["choices"])
            if record.get("answer_index") is not None:
                scores["correct"] = scores["choice"] == record["answer_index"]
        criteria = ("match",) if spec.kind == "open_qa" else spec.criteria if spec.kind == "judged" else ()
        if judge is not None and references:
            fields = {
                "question": record["question"],
                "question2": record.get("question2") or record["question"],
                "answer": references[0],
                "prediction": prediction,
                "prediction2": record.get("prediction2", ""),
            }
            jobs += [(scores, criterion, fields) for criterion in criteria]
    if not jobs:
        return

    def run(job):
        scores, criterion, fields = job
        scores.setdefault("judge", {})[criterion] = judge(criterion, **fields).to_dict()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(run, jobs))


def _judged(records: list[dict], criterion: str) -> list[dict]:
    return [r["scores"]["judge"][criterion] for r in records if criterion in r.get("scores", {}).get("judge", {})]


def aggregate(spec: TaskSpec, records: list[dict], judged: bool) -> tuple[dict, dict, str]:
    """(metrics, counts, primary metric name) over predicted records with references."""
    scored = [r for r in records if "prediction" in r and r.get("references")]
    metrics, counts = {}, {"scored": len(scored)}
    if spec.kind == "open_qa":
        metrics["exact_match"] = mean(float(r["scores"]["exact_match"]) for r in scored)
        metrics["normalized_match"] = mean(float(r["scores"]["normalized_match"]) for r in scored)
    if spec.kind == "mc":
        metrics["accuracy"] = mean(float(r["scores"]["correct"]) for r in scored if "correct" in r["scores"])
        counts["no_option_found"] = sum(r["scores"]["choice"] is None for r in scored)
    if spec.kind == "caption" and scored:
        candidates = {r["id"]: r["prediction"] for r in scored}
        metrics["cider"] = cider_d(candidates, {r["id"]: r["references"] for r in scored})[0]
        available, _ = spice_status()
        metrics["spice"] = spice(candidates, {r["id"]: r["references"] for r in scored})[0] if available else None
        metrics["spider"] = (metrics["cider"] + metrics["spice"]) / 2 if available else None
    if judged and spec.kind in ("open_qa", "judged"):
        criteria = ("match",) if spec.kind == "open_qa" else spec.criteria
        for criterion in criteria:
            judgements = _judged(scored, criterion)
            ok = [j for j in judgements if j.get("ok")]
            counts[f"judge_failures_{criterion}"] = len(judgements) - len(ok)
            if criterion == "match":
                metrics["accuracy"] = mean(float(j["pred"] == "yes") for j in ok)
                metrics["score"] = mean(j["score"] for j in ok)
            else:
                metrics[criterion] = mean(j["score"] for j in ok)
        if spec.kind == "judged":
            metrics["score"] = mean(metrics[criterion] for criterion in criteria)
    if spec.kind == "open_qa":
        primary = "accuracy" if judged else "normalized_match"
    else:
        primary = {"mc": "accuracy", "caption": "cider", "judged": "score"}[spec.kind]
    return metrics, counts, primary


def grounding_table(spec: TaskSpec, by_key: dict[str, dict], judged: bool) -> dict:
    """Per ablation and per modality group: the primary metric on the full inputs and on the ablated ones, over the
    same samples (those the ablation applies to and both runs answered), and the drop (full - ablated)."""
    full = {r["id"]: r for key, r in by_key.items() if r["condition"] == "full" and "prediction" in r}
    rows = []
    for condition in CONDITIONS[1:]:
        ablated = {r["id"]: r for r in by_key.values() if r["condition"] == condition and "prediction" in r}
        ids = [sample_id for sample_id in full if sample_id in ablated]
        groups = {"all": ids}
        for sample_id in ids:
            groups.setdefault(full[sample_id]["modality"], []).append(sample_id)
        for group, members in groups.items():
            base = aggregate(spec, [full[i] for i in members], judged)
            metric = base[2]
            value_full = base[0].get(metric)
            value_ablated = aggregate(spec, [ablated[i] for i in members], judged)[0].get(metric)
            drop = value_full - value_ablated if value_full is not None and value_ablated is not None else None
            rows.append(
                {
                    "condition": condition,
                    "modality": group,
                    "n": len(members),
                    "metric": metric,
                    "full": value_full,
                    "ablated": value_ablated,
                    "drop": drop,
                }
            )
    return {"rows": rows, "notes": {c: CONDITION_NOTES[c] for c in CONDITIONS}, "table": _markdown(rows)}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _markdown(rows: list[dict]) -> str:
    lines = ["| ablation | modality | n | metric | full | ablated | drop |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['condition']} | {r['modality']} | {r['n']} | {r['metric']} | {_fmt(r['full'])} | "
        f"{_fmt(r['ablated'])} | {_fmt(r['drop'])} |"
        for r in rows
    ]
    return "\n".join(lines)


# ---- the entry point ---------------------------------------------------------------------------------------------


def distributed_state():
    """accelerate's `PartialState`. Launched with several processes (`accelerate launch`, `torchrun`) on a machine
    without CUDA, it is asked for CPU so that it sets up gloo: accelerate leaves CPU processes unconnected if not."""
    from accelerate import PartialState

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("LOCAL_RANK", "-1")) != -1
    return PartialState(cpu=launched and not torch.cuda.is_available())


def evaluate(
    model,
    processor,
    task,
    data_path,
    *,
    media_root=None,
    output=None,
    judge: Judge | None = None,
    batch_size: int = 8,
    grounding: bool = False,
    limit: int | None = None,
    max_new_tokens: int | None = None,
    seed: int = 0,
    progress: bool = True,
    judge_workers: int = 4,
) -> dict | None:
    """Evaluates `model` on a benchmark and returns the report (None on ranks other than 0).

    Args:
        task: a name in `TASKS` or a `TaskSpec`.
        data_path / media_root: the benchmark's annotation file (or folder) and the folder its media are under
            (default: the annotation file's folder); see docs/evaluation.md.
        output: results jsonl. Each batch's records are appended as they finish; a re-run skips the (condition,
            sample) pairs already answered there, so an interrupted run resumes where it stopped. Under
            `accelerate launch` / `torchrun`, each rank appends to `<output>.rank<r>` and rank 0 merges them. The
            report is also written to `<output stem>.report.json`, per-sample scores to `<output stem>.scored.jsonl`.
        judge: a `Judge` (see `build_judge`); needed for the Video-ChatGPT tasks, optional for open-ended QA (exact /
            normalised match without it).
        grounding: also answer each sample with its audio muted and with its frames blanked (`CONDITION_NOTES`).
        max_new_tokens: overrides the task's default; decoding is otherwise the seeds' (greedy; sampling at T = 0.2
            for captioning).
    """
    spec = get_task(task)
    state = distributed_state()
    if state.num_processes == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(
            "launched with several processes but accelerate's PartialState was first created without distribution "
            "(on CPU it needs cpu=True): create it with transformers_avllm.evaluation.runner.distributed_state()"
        )
    output = Path(output) if output is not None else None
    if output is None and state.num_processes > 1:
        raise ValueError("data-parallel evaluation needs an output file for the ranks to share")
    samples = spec.load(data_path, media_root, limit)
    conditions = CONDITIONS if grounding else CONDITIONS[:1]
    generation_kwargs = spec.generation_kwargs()
    if max_new_tokens is not None:
        generation_kwargs["max_new_tokens"] = max_new_tokens

    if output is not None:  # shards left by an interrupted data-parallel run: folded in before anything is read
        if state.is_main_process and _shards(output):
            merge_shards(output)
        state.wait_for_everyone()
    done = read_records(output)
    my_path = shard_path(output, state.process_index) if output and state.num_processes > 1 else output
    model.eval()
    generator = _Generator(model, processor, spec, generation_kwargs, seed)
    new = generate_records(
        generator, samples, conditions, done, my_path, batch_size, state, progress and state.is_main_process
    )
    if state.num_processes > 1:
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        merge_shards(output)
    by_key = read_records(output) if output is not None else {**done, **new}
    wanted = {record_key(condition, sample.id) for condition in conditions for sample in samples}
    by_key = {key: record for key, record in by_key.items() if key in wanted}
    report = build_report(spec, by_key, judge, grounding, judge_workers)
    report.update(
        num_samples=len(samples),
        decoding=generation_kwargs,
        data=str(data_path),
        model=getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__,
    )
    if output is not None:
        report["output"] = str(output)
        scored = [record for record in by_key.values() if "scores" in record]
        output.with_suffix(".scored.jsonl").write_text(
            "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in scored), encoding="utf-8"
        )
        output.with_suffix(".report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def build_report(spec: TaskSpec, by_key: dict[str, dict], judge: Judge | None, grounding: bool, workers: int = 4):
    """Scores the records (asking `judge` where the task uses one) and summarises them."""
    records = list(by_key.values())
    score_records(spec, records, judge, workers)
    judged = judge is not None
    full = [record for record in records if record["condition"] == "full"]
    metrics, counts, primary = aggregate(spec, full, judged)
    errors = [record for record in full if "error" in record]
    counts.update(
        predicted=sum("prediction" in record for record in full),
        errors=len(errors),
        unscored=sum("prediction" in record and not record.get("references") for record in full),
        by_modality=dict(Counter(record["modality"] for record in full if "modality" in record)),
    )
    notes, unavailable = [], {}
    if spec.kind == "caption":
        available, reason = spice_status()
        if not available:
            unavailable = {"spice": reason, "spider": f"SPIDEr = (CIDEr + SPICE) / 2 needs SPICE: {reason}"}
            notes.append(f"SPICE and SPIDEr are not computed: {reason}.")
    if spec.kind == "judged" and not judged:
        notes.append(f"{spec.dataset} is scored only by an LLM judge: give --judge-endpoint or --judge-local.")
        unavailable.update({criterion: "no judge given" for criterion in spec.criteria})
    if errors:
        notes.append(f"{len(errors)} samples failed to load and are not scored (see 'error' in the results).")
    failures = sum(value for key, value in counts.items() if key.startswith("judge_failures"))
    if failures:
        notes.append(f"{failures} judgements failed after retries; they are left out of the averages, not scored 0.")
    report = {
        "task": spec.name,
        "dataset": spec.dataset,
        "hub_task": spec.hub_task,
        "metrics": metrics,
        "primary_metric": primary,
        "counts": counts,
        "unavailable": unavailable,
        "judge": None,
        "notes": notes,
        "error_examples": [f"{record['id']}: {record['error']}" for record in errors[:5]],
    }
    if judge is not None:
        report["judge"] = {"name": judge.name, **vars(judge.stats)}
    if grounding:
        report["grounding"] = grounding_table(spec, by_key, judged)
    return report


def report_to_eval_results(reports) -> list[dict]:
    """`eval_results` for `transformers_avllm.export.build_model_card`: one entry per computed metric of each report
    (metrics that could not be computed, e.g. SPIDEr without SPICE, are left out, never filled in)."""
    reports = [reports] if isinstance(reports, dict) else list(reports)
    return [
        {"task": report["hub_task"], "dataset": report["dataset"], "metric": name, "value": round(float(value), 4)}
        for report in reports
        for name, value in report["metrics"].items()
        if isinstance(value, (int, float)) and value == value
    ]


def format_report(report: dict) -> str:
    """A short human-readable summary of a report."""
    lines = [f"{report['dataset']} ({report['task']}): {report['counts'].get('predicted', 0)} predicted"]
    lines += [f"  {name}: {_fmt(value)}" for name, value in report["metrics"].items()]
    lines += [f"  {name}: unavailable ({reason})" for name, reason in report["unavailable"].items()]
    lines += [f"  note: {note}" for note in report["notes"]]
    if report.get("grounding"):
        lines += ["", report["grounding"]["table"]]
    return "\n".join(lines)
