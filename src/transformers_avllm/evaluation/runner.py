"""`evaluate()`: a benchmark run from loading to report, resumable and data-parallel. The steps have their own homes:
`results` (the results jsonl), `sharding` (data-parallel ranks), `generation`, `scoring` and `reporting`."""

from __future__ import annotations

from pathlib import Path

from .benchmarks.samples import Sample
from .figures import save_report_figure
from .generation import CONDITIONS, BatchGenerator, generate_records
from .judges import Judge
from .reporting import build_report
from .results import read_records, record_key, write_scored_and_report
from .sharding import check_distributed, distributed_state, merge_leftover_shards, merge_shards, rank_output_path
from .tasks import get_task


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
    subset: str | None = None,
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
        subset: the name of a part of the benchmark a paper evaluates on (`TaskSpec.subsets`, e.g. "one_eighth" of
            AVSD / AVSSD as in VideoLLaMA 2), drawn the same way for every model and run.
        max_new_tokens: overrides the task's default; decoding is otherwise that of the benchmark's paper (greedy;
            sampling at T = 0.2 for MSVC, as VideoLLaMA 2 does).

    Besides the results, `output` gets `<stem>.report.json`, `<stem>.scored.jsonl` and the report figure
    `<stem>.report.png` (`figures.report_figure`: the metrics, and the grounding table as bars, chance dotted).
    """
    spec = get_task(task)
    state = distributed_state()
    output = Path(output) if output is not None else None
    check_distributed(state, output)
    samples = spec.load(data_path, media_root, limit, subset)
    conditions = CONDITIONS if grounding else CONDITIONS[:1]
    generation_kwargs = spec.generation_kwargs()
    if max_new_tokens is not None:
        generation_kwargs["max_new_tokens"] = max_new_tokens
    model.eval()
    generator = BatchGenerator(model, processor, spec, generation_kwargs, seed)
    by_key = answer_all(generator, samples, conditions, output, batch_size, state, progress and state.is_main_process)
    if by_key is None:
        return None
    report = build_report(spec, by_key, judge, grounding, judge_workers)
    report.update(
        num_samples=len(samples),
        subset=subset,
        decoding=generation_kwargs,
        data=str(data_path),
        model=getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__,
    )
    if output is not None:
        report["output"] = str(output)
        report["figure"] = str(output.with_suffix(".report.png"))
        write_scored_and_report(output, by_key.values(), report)
        save_report_figure(report, report["figure"])
    return report


def answer_all(
    generator: BatchGenerator,
    samples: list[Sample],
    conditions: tuple[str, ...],
    output: Path | None,
    batch_size: int,
    state,
    progress: bool,
) -> dict[str, dict] | None:
    """Answers the (condition, sample) pairs that `output` does not hold finished yet, each rank its share, and
    returns the records of all pairs by key (on rank 0; None on the other ranks)."""
    if output is not None:
        merge_leftover_shards(output, state)
    done = read_records(output)
    path = rank_output_path(output, state)
    new = generate_records(generator, samples, conditions, done, path, batch_size, state, progress)
    if state.num_processes > 1:
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        merge_shards(output)
    by_key = read_records(output) if output is not None else {**done, **new}
    wanted = {record_key(condition, sample.id) for condition in conditions for sample in samples}
    return {key: record for key, record in by_key.items() if key in wanted}
