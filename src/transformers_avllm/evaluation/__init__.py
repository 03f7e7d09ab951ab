"""Evaluation harness (not shipped to the Hub): benchmark loaders (`TASKS`), batched resumable generation, LLM
judges, CIDEr-D, grounding ablations, data-parallel shards, and model-card `eval_results`. See docs/evaluation.md."""

from ..llm_client import OpenAIChatBackend, ReplyCache, TransformersChatBackend
from .judges import Judge, build_judge, parse_judgement
from .metrics import cider_d, extract_choice, normalize_answer, spice_status, tokenize_caption
from .runner import CONDITION_NOTES, evaluate, format_report, merge_shards, read_records, report_to_eval_results
from .tasks import TASKS, Sample, TaskSpec, get_task

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
    "evaluate",
    "extract_choice",
    "format_report",
    "get_task",
    "merge_shards",
    "normalize_answer",
    "parse_judgement",
    "read_records",
    "report_to_eval_results",
    "spice_status",
    "tokenize_caption",
]
