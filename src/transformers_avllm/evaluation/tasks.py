"""The benchmark registry: `TaskSpec` (how a benchmark is loaded, prompted, decoded and scored) and `TASKS`, the
benchmarks by name. Their loaders are in `benchmarks/`; `docs/evaluation.md` says where to download each and how to
lay it out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .benchmarks.audio import load_audiocaps, load_clotho_aqa, load_clotho_captions, load_tut2017
from .benchmarks.audio_visual import load_avsd, load_avssd, load_music_avqa
from .benchmarks.samples import Sample
from .benchmarks.video import (
    load_activitynet_qa,
    load_egoschema,
    load_msrvtt_qa,
    load_msvd_qa,
    load_mvbench,
    load_perception_test,
    load_videochatgpt,
    load_videomme,
)
from .metrics import choice_letter

SHORT_ANSWER_HINT = "Answer the question using a single word or phrase."
MC_HINT = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """How a benchmark is loaded, prompted, decoded and scored.

    `kind`: "open_qa" (exact / normalised match, or the GPT judge's yes/no + 0-5 score when a judge is given), "mc"
    (multiple-choice accuracy), "caption" (CIDEr-D; SPICE/SPIDEr when available) or "judged" (judge scores only:
    Video-ChatGPT's criteria in `criteria`)."""

    name: str
    dataset: str
    kind: str
    loader: Callable[[Path, Path], list[Sample]]
    hub_task: str
    hint: str = ""
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float | None = None
    criteria: tuple[str, ...] = ()

    def load(self, data_path, media_root=None, limit: int | None = None) -> list[Sample]:
        data_path = Path(data_path)
        media_root = Path(media_root) if media_root else (data_path if data_path.is_dir() else data_path.parent)
        samples = self.loader(data_path, media_root)
        duplicates = [key for key, count in Counter(sample.id for sample in samples).items() if count > 1]
        if duplicates:
            raise ValueError(f"{self.name}: duplicate sample ids in {data_path}: {duplicates[:5]}")
        return samples[:limit] if limit is not None else samples

    def prompt(self, sample: Sample, question: str | None = None) -> str:
        """The text the model is asked: the question, the options (multiple choice) and the task's answer hint."""
        text = sample.question if question is None else question
        if sample.choices:
            options = "\n".join(f"({choice_letter(index)}) {choice}" for index, choice in enumerate(sample.choices))
            text = f"{text}\nOptions:\n{options}"
        return f"{text}\n{self.hint}" if self.hint else text

    def generation_kwargs(self) -> dict:
        if self.do_sample:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": False}


def _by_name(*specs: TaskSpec) -> dict[str, TaskSpec]:
    return {spec.name: spec for spec in specs}


VQA, AVQA, AQA = "video-question-answering", "audio-visual-question-answering", "audio-question-answering"
MC, CAPTION = "multiple-choice", "audio-captioning"
TASKS: dict[str, TaskSpec] = _by_name(
    TaskSpec(
        name="msrvtt_qa", dataset="MSRVTT-QA", kind="open_qa", loader=load_msrvtt_qa, hub_task=VQA,
        hint=SHORT_ANSWER_HINT,
    ),
    TaskSpec(
        name="msvd_qa", dataset="MSVD-QA", kind="open_qa", loader=load_msvd_qa, hub_task=VQA, hint=SHORT_ANSWER_HINT
    ),
    TaskSpec(
        name="activitynet_qa", dataset="ActivityNet-QA", kind="open_qa", loader=load_activitynet_qa, hub_task=VQA,
        hint=SHORT_ANSWER_HINT,
    ),
    TaskSpec(name="avsd", dataset="AVSD", kind="open_qa", loader=load_avsd, hub_task=AVQA, max_new_tokens=64),
    TaskSpec(
        name="music_avqa", dataset="MUSIC-AVQA", kind="open_qa", loader=load_music_avqa, hub_task=AVQA,
        hint=SHORT_ANSWER_HINT,
    ),
    TaskSpec(
        name="avssd", dataset="AVSSD", kind="open_qa", loader=load_avssd, hub_task=AVQA, hint=SHORT_ANSWER_HINT
    ),
    TaskSpec(
        name="clotho_aqa", dataset="Clotho-AQA", kind="open_qa", loader=load_clotho_aqa, hub_task=AQA,
        hint=SHORT_ANSWER_HINT,
    ),
    TaskSpec(
        name="mvbench", dataset="MVBench", kind="mc", loader=load_mvbench, hub_task=MC, hint=MC_HINT,
        max_new_tokens=16,
    ),
    TaskSpec(
        name="egoschema", dataset="EgoSchema", kind="mc", loader=load_egoschema, hub_task=MC, hint=MC_HINT,
        max_new_tokens=16,
    ),
    TaskSpec(
        name="perception_test", dataset="Perception-Test", kind="mc", loader=load_perception_test, hub_task=MC,
        hint=MC_HINT, max_new_tokens=16,
    ),
    TaskSpec(
        name="videomme", dataset="Video-MME", kind="mc", loader=load_videomme, hub_task=MC, hint=MC_HINT,
        max_new_tokens=16,
    ),
    TaskSpec(
        name="tut2017", dataset="TUT2017", kind="mc", loader=load_tut2017, hub_task=MC, hint=MC_HINT,
        max_new_tokens=16,
    ),
    # The seeds decode captions by sampling at T = 0.2 (VideoLLaMA 2, section 4.1.3), everything else greedily.
    TaskSpec(
        name="clotho", dataset="Clotho", kind="caption", loader=load_clotho_captions, hub_task=CAPTION,
        max_new_tokens=64, do_sample=True, temperature=0.2,
    ),
    TaskSpec(
        name="audiocaps", dataset="AudioCaps", kind="caption", loader=load_audiocaps, hub_task=CAPTION,
        max_new_tokens=64, do_sample=True, temperature=0.2,
    ),
    TaskSpec(
        name="videochatgpt_generic", dataset="Video-ChatGPT generic", kind="judged", loader=load_videochatgpt,
        hub_task=VQA, max_new_tokens=256, criteria=("correctness", "detail", "context"),
    ),
    TaskSpec(
        name="videochatgpt_temporal", dataset="Video-ChatGPT temporal", kind="judged", loader=load_videochatgpt,
        hub_task=VQA, max_new_tokens=256, criteria=("temporal",),
    ),
    TaskSpec(
        name="videochatgpt_consistency", dataset="Video-ChatGPT consistency", kind="judged",
        loader=load_videochatgpt, hub_task=VQA, max_new_tokens=256, criteria=("consistency",),
    ),
)  # fmt: skip


def get_task(task) -> TaskSpec:
    if isinstance(task, TaskSpec):
        return task
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return TASKS[task]
