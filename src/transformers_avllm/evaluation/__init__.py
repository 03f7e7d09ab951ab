"""Evaluation harness (not shipped to the Hub), one module per step: `tasks` (the `TASKS` registry; the loaders are in
`benchmarks/`), `generation` (batched answers, the grounding ablations), `results` (the resumable results jsonl),
`sharding` (data-parallel ranks), `judges` and `metrics`, `scoring`, `reporting` (the report and model-card
`eval_results`), `figures` (the report figure), and `runner.evaluate`, which runs them in turn. See
docs/evaluation.md."""

from ..llm_client import OpenAIChatBackend, ReplyCache, TransformersChatBackend
from .benchmarks.samples import Sample
from .figures import report_figure
from .generation import CONDITION_NOTES
from .judges import Judge, build_judge, parse_judgement
from .metrics import cider_d, extract_choice, normalize_answer, spice_status, tokenize_caption
from .reporting import format_report, report_to_eval_results
from .results import read_records
from .runner import evaluate
from .sharding import distributed_state, merge_shards
from .tasks import TASKS, TaskSpec, get_task

__all__ = [
    "CONDITION_NOTES",
    "TASKS",
    "Judge",
    "OpenAIChatBackend",
    "ReplyCache",
    "Sample",
    "TaskSpec",
    "TransformersChatBackend",
    "build_judge",
    "cider_d",
    "distributed_state",
    "evaluate",
    "extract_choice",
    "format_report",
    "get_task",
    "merge_shards",
    "normalize_answer",
    "parse_judgement",
    "read_records",
    "report_figure",
    "report_to_eval_results",
    "spice_status",
    "tokenize_caption",
]
