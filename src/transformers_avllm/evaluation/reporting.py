"""Reports: the summary of a scored run (metrics, counts, notes, the grounding table), its human-readable form, and
its `eval_results` for the model card."""

from __future__ import annotations

from collections import Counter

from .generation import CONDITION_NOTES, CONDITIONS
from .judges import Judge
from .scoring import aggregate, chance_accuracy, score_records, unavailable_metrics
from .tasks import TaskSpec


def build_report(
    spec: TaskSpec, by_key: dict[str, dict], judge: Judge | None, grounding: bool, workers: int = 4
) -> dict:
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
    unavailable, notes = unavailable_metrics(spec, judged)
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
        "chance": chance_accuracy(spec, full),
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
    lines += [f"  {name}: {format_metric(value)}" for name, value in report["metrics"].items()]
    lines += [f"  {name}: unavailable ({reason})" for name, reason in report["unavailable"].items()]
    lines += [f"  note: {note}" for note in report["notes"]]
    if report.get("grounding"):
        lines += ["", report["grounding"]["table"]]
    return "\n".join(lines)


def grounding_table(spec: TaskSpec, by_key: dict[str, dict], judged: bool) -> dict:
    """Per ablation and per modality group: the primary metric on the full inputs and on the ablated ones, over the
    same samples (those the ablation applies to and both runs answered), the drop (full - ablated) and the chance
    level of those samples (multiple choice; None otherwise)."""
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
                    "chance": chance_accuracy(spec, [full[i] for i in members]),
                }
            )
    return {"rows": rows, "notes": {c: CONDITION_NOTES[c] for c in CONDITIONS}, "table": grounding_markdown(rows)}


def format_metric(value) -> str:
    """A metric as reports print it: 4 decimals, or "n/a" when it could not be computed."""
    return "n/a" if value is None else f"{value:.4f}"


def grounding_markdown(rows: list[dict]) -> str:
    """The grounding rows as a markdown table."""
    lines = ["| ablation | modality | n | metric | full | ablated | drop |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['condition']} | {r['modality']} | {r['n']} | {r['metric']} | {format_metric(r['full'])} | "
        f"{format_metric(r['ablated'])} | {format_metric(r['drop'])} |"
        for r in rows
    ]
    return "\n".join(lines)
