"""The results jsonl of an evaluation run: one record per (condition, sample), appended as batches finish, read back
to resume (the last line of a key wins), and the scored copy written next to it."""

from __future__ import annotations

import json
from pathlib import Path

from ..jsonl import read_jsonl
from .benchmarks.samples import Sample
from .tasks import TaskSpec


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


def sample_record(spec: TaskSpec, sample: Sample, condition: str, modality: str) -> dict:
    """A sample's record before it is answered: what was asked, of what, and the references."""
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


def error_record(sample_id: str, condition: str, message: str) -> dict:
    """The record of a sample that could not be decoded (retried by the next run)."""
    return {"id": sample_id, "condition": condition, "error": message}


def write_scored_and_report(output: Path, records, report: dict) -> None:
    """`<output stem>.scored.jsonl` (the records that have scores) and `<output stem>.report.json`."""
    scored = [record for record in records if "scores" in record]
    output.with_suffix(".scored.jsonl").write_text(
        "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in scored), encoding="utf-8"
    )
    output.with_suffix(".report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
