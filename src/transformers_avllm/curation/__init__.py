"""Instruction-data curation (not shipped to the Hub): AV-LLM's GPT-assisted pipeline (`avllm curate`). See
docs/curation.md."""

from .context import (
    AudioCaptioner,
    AudioTagger,
    FrameCaptioner,
    MediaContext,
    Perception,
    SpeechTranscriber,
    describe_media,
)
from .pipeline import (
    TABLE10_MIX,
    CurationError,
    curate,
    format_summary,
    parse_conversation,
    parse_mix,
    plan_jobs,
    push_dataset,
)
from .templates import SAMPLE_TYPES, TASKS, PromptTemplate, TemplateError, load_templates

__all__ = [
    "SAMPLE_TYPES",
    "TABLE10_MIX",
    "TASKS",
    "AudioCaptioner",
    "AudioTagger",
    "CurationError",
    "FrameCaptioner",
    "MediaContext",
    "Perception",
    "PromptTemplate",
    "SpeechTranscriber",
    "TemplateError",
    "curate",
    "describe_media",
    "format_summary",
    "load_templates",
    "parse_conversation",
    "parse_mix",
    "plan_jobs",
    "push_dataset",
]
