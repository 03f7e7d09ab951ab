"""Prompt templates of the AV-LLM curation pipeline (seed 000, section 3.3 and appendix A): four parts, ROLE,
REQUIREMENT, EXAMPLE and CONTEXT, for three tasks over three sample types.

The templates are editable Markdown files (`templates/` here, or a folder of your own with the same file names):
`shared.md` holds ROLE and CONTEXT, `<task>.md` the task's REQUIREMENT and EXAMPLE. A section is a `## NAME` heading
(`## NAME [sample_type]` for one sample type only) and the text under it; HTML comments are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..models.avllm import SAMPLE_TYPES

TASKS = ("conversation", "description", "reasoning")
SECTIONS = ("ROLE", "REQUIREMENT", "EXAMPLE", "CONTEXT")
TEMPLATE_DIR = Path(__file__).parent / "templates"
VISUAL_CONTEXT, AUDIO_CONTEXT = "<VC>", "<AC>"

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_HEADING = re.compile(r"^## +([A-Z]+)(?: +\[(\w+)\])? *$", re.M)


class TemplateError(ValueError):
    """A template file is missing, or a section is unknown, misplaced or empty."""


def _sections(path: Path) -> dict[tuple[str, str | None], str]:
    """`{(section, sample type or None): text}` of one template file."""
    if not path.is_file():
        raise TemplateError(f"{path}: template file not found")
    text = _COMMENT.sub("", path.read_text(encoding="utf-8"))
    headings = list(_HEADING.finditer(text))
    if text[: headings[0].start() if headings else len(text)].strip():
        raise TemplateError(f"{path}: text before the first '## SECTION' heading")
    sections = {}
    for heading, following in zip(headings, headings[1:] + [None], strict=True):
        name, sample_type = heading.groups()
        if name not in SECTIONS or (sample_type is not None and sample_type not in SAMPLE_TYPES):
            raise TemplateError(f"{path}: unknown section '{heading.group().strip()}'")
        body = text[heading.end() : following.start() if following else len(text)].strip()
        if not body:
            raise TemplateError(f"{path}: section '{heading.group().strip()}' is empty")
        sections[(name, sample_type)] = body
    return sections


@dataclass(frozen=True)
class PromptTemplate:
    """The prompt of one task: its sections, general and per sample type."""

    task: str
    sections: dict

    def part(self, name: str, sample_type: str) -> str:
        """A section for `sample_type`: the general text, then the sample type's own."""
        texts = [self.sections.get((name, None)), self.sections.get((name, sample_type))]
        return "\n".join(text for text in texts if text)

    def messages(self, sample_type: str, visual_context: str = "", audio_context: str = "") -> list[dict]:
        """Chat messages asking the LLM for one sample: ROLE as the system message; REQUIREMENT, EXAMPLE and CONTEXT
        (with `<VC>` / `<AC>` filled in) as the user message."""
        context = self.part("CONTEXT", sample_type)
        context = context.replace(VISUAL_CONTEXT, visual_context).replace(AUDIO_CONTEXT, audio_context)
        user = [
            self.part("REQUIREMENT", sample_type),
            "EXAMPLE:\n" + self.part("EXAMPLE", sample_type),
            "CONTEXT:\n" + context,
        ]
        return [
            {"role": "system", "content": self.part("ROLE", sample_type)},
            {"role": "user", "content": "\n\n".join(user)},
        ]


def load_templates(folder: str | Path | None = None) -> dict[str, PromptTemplate]:
    """The three tasks' templates from `folder` (default: the shipped ones), checked to be complete: every section
    present for every sample type, and CONTEXT asking for the contexts the sample type has."""
    folder = Path(folder) if folder else TEMPLATE_DIR
    shared = _sections(folder / "shared.md")
    templates = {}
    for task in TASKS:
        own = _sections(folder / f"{task}.md")
        overridden = {name for name, _ in own}
        sections = {key: text for key, text in shared.items() if key[0] not in overridden} | own
        template = PromptTemplate(task, sections)
        for sample_type in SAMPLE_TYPES:
            missing = [name for name in SECTIONS if not template.part(name, sample_type)]
            if missing:
                raise TemplateError(f"{folder}: {task} has no {', '.join(missing)} for {sample_type} samples")
            context = template.part("CONTEXT", sample_type)
            wanted = {"visual": [VISUAL_CONTEXT], "audio": [AUDIO_CONTEXT]}.get(
                sample_type, [VISUAL_CONTEXT, AUDIO_CONTEXT]
            )
            if any(marker not in context for marker in wanted):
                raise TemplateError(
                    f"{folder}: {task}'s CONTEXT for {sample_type} samples needs {' and '.join(wanted)}"
                )
        templates[task] = template
    return templates
