"""Scoring: per-record scores (matches, the chosen option, the judge's judgements) and the task's metrics over a set
of records; which metrics cannot be computed here, and why."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .judges import Judge
from .metrics import cider_d, exact_match, extract_choice, mean, normalized_match, spice, spice_status
from .tasks import TaskSpec


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
                "answers": str(references),  # MSVC's judge reads all reference captions, as a Python list
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


def chance_accuracy(spec: TaskSpec, records: list[dict]) -> float | None:
    """The accuracy of guessing uniformly among the options: the mean of 1 / (number of options) over the scored
    multiple-choice records. None for every other kind: an open answer or a caption has no finite set of answers to
    guess from, so it has no chance level."""
    if spec.kind != "mc":
        return None
    return mean(1 / len(r["choices"]) for r in records if "prediction" in r and r.get("answer_index") is not None)


def unavailable_metrics(spec: TaskSpec, judged: bool) -> tuple[dict[str, str], list[str]]:
    """The task's metrics that cannot be computed here (name -> why) and the report's notes saying so."""
    notes, unavailable = [], {}
    if spec.kind == "caption":
        available, reason = spice_status()
        if not available:
            unavailable = {"spice": reason, "spider": f"SPIDEr = (CIDEr + SPICE) / 2 needs SPICE: {reason}"}
            notes.append(f"SPICE and SPIDEr are not computed: {reason}.")
    if spec.kind == "judged" and not judged:
        notes.append(f"{spec.dataset} is scored only by an LLM judge: give --judge-endpoint or --judge-local.")
        unavailable.update({criterion: "no judge given" for criterion in spec.criteria})
    return unavailable, notes
