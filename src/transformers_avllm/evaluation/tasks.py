"""The benchmark registry: `TaskSpec` (how a benchmark is loaded, prompted, decoded and scored) and `TASKS`, the
benchmarks by name. Their loaders are in `benchmarks/`; `docs/evaluation.md` says where to download each and how to
lay it out."""

from __future__ import annotations

import hashlib
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
    load_msvc,
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
class Subset:
    """A part of a benchmark that a paper evaluates on instead of the whole (`source`: the paper's sentence).
    `fraction` of the samples, drawn at random with `seed`: each sample ranked by a hash of (seed, its id), the first
    ones kept, in the benchmark's order. The draw depends only on the ids, so every model and every (resumed or
    data-parallel) run gets the same samples; the papers do not publish their own draw."""

    name: str
    fraction: float
    source: str
    seed: int = 0

    def select(self, samples: list[Sample]) -> list[Sample]:
        """`fraction` of `samples` (rounded, at least one of a non-empty list)."""
        count = max(round(len(samples) * self.fraction), min(len(samples), 1))

        def rank(sample: Sample) -> str:
            return hashlib.sha256(f"{self.seed}:{sample.id}".encode()).hexdigest()

        kept = {sample.id for sample in sorted(samples, key=rank)[:count]}
        return [sample for sample in samples if sample.id in kept]


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """How a benchmark is loaded, prompted, decoded and scored.

    `kind`: "open_qa" (exact / normalised match, or the GPT judge's yes/no + 0-5 score when a judge is given), "mc"
    (multiple-choice accuracy), "caption" (CIDEr-D; SPICE/SPIDEr when available) or "judged" (judge scores only: the
    criteria in `criteria`, keys of `judges.PROMPTS`). Decoding is greedy unless the benchmark's paper says otherwise
    (`do_sample`, `temperature`). `subsets`: the parts of the benchmark a paper evaluates on, by name."""

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
    subsets: tuple[Subset, ...] = ()

    def load(self, data_path, media_root=None, limit: int | None = None, subset: str | None = None) -> list[Sample]:
        """The benchmark's samples (only those of the named `subset`, when given), the first `limit` of them."""
        data_path = Path(data_path)
        media_root = Path(media_root) if media_root else (data_path if data_path.is_dir() else data_path.parent)
        samples = self.loader(data_path, media_root)
        duplicates = [key for key, count in Counter(sample.id for sample in samples).items() if count > 1]
        if duplicates:
            raise ValueError(f"{self.name}: duplicate sample ids in {data_path}: {duplicates[:5]}")
        if subset is not None:
            samples = self.subset(subset).select(samples)
        return samples[:limit] if limit is not None else samples

    def subset(self, name: str) -> Subset:
        for subset in self.subsets:
            if subset.name == name:
                return subset
        known = ", ".join(subset.name for subset in self.subsets) or "none"
        raise KeyError(f"{self.name} has no subset {name!r}; its subsets: {known}")

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


# VideoLLaMA 2 (003), section 4.2.1: "For AVSSD and AVSD, we employ a GPT-assisted evaluation as the same as the
# protocols in OE-VQA. We randomly sample one-eighth of the dataset as a subset for evaluation since the full dataset
# is too large for ChatGPT inference."
ONE_EIGHTH = Subset(name="one_eighth", fraction=1 / 8, source="VideoLLaMA 2, section 4.2.1")

# Decoding, per the paper each benchmark's numbers come from. VideoLLaMA 2 (003), section 4.1.3: "we use greedy search
# for all benchmarks except MSVC, where we apply sampling with a temperature of 0.2". AV-LLM (000) and the 001 paper
# say nothing about decoding: their benchmarks are decoded greedily ("paper silent: greedy").
VQA, AVQA, AQA = "video-question-answering", "audio-visual-question-answering", "audio-question-answering"
MC, CAPTION, VIDEO_CAPTION = "multiple-choice", "audio-captioning", "video-captioning"
TASKS: dict[str, TaskSpec] = _by_name(
    # decoding: AV-LLM Table 1, paper silent: greedy
    TaskSpec(
        name="msrvtt_qa", dataset="MSRVTT-QA", kind="open_qa", loader=load_msrvtt_qa, hub_task=VQA,
        hint=SHORT_ANSWER_HINT,
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC" (AV-LLM silent)
    TaskSpec(
        name="msvd_qa", dataset="MSVD-QA", kind="open_qa", loader=load_msvd_qa, hub_task=VQA, hint=SHORT_ANSWER_HINT
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC" (AV-LLM silent)
    TaskSpec(
        name="activitynet_qa", dataset="ActivityNet-QA", kind="open_qa", loader=load_activitynet_qa, hub_task=VQA,
        hint=SHORT_ANSWER_HINT,
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC" (AV-LLM silent)
    TaskSpec(
        name="avsd", dataset="AVSD", kind="open_qa", loader=load_avsd, hub_task=AVQA, max_new_tokens=64,
        subsets=(ONE_EIGHTH,),
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC" (AV-LLM silent)
    TaskSpec(
        name="music_avqa", dataset="MUSIC-AVQA", kind="open_qa", loader=load_music_avqa, hub_task=AVQA,
        hint=SHORT_ANSWER_HINT,
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC" (AV-LLM silent)
    TaskSpec(
        name="avssd", dataset="AVSSD", kind="open_qa", loader=load_avssd, hub_task=AVQA, hint=SHORT_ANSWER_HINT,
        subsets=(ONE_EIGHTH,),
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC"
    TaskSpec(
        name="clotho_aqa", dataset="Clotho-AQA", kind="open_qa", loader=load_clotho_aqa, hub_task=AQA,
        hint=SHORT_ANSWER_HINT,
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC"
    TaskSpec(
        name="mvbench", dataset="MVBench", kind="mc", loader=load_mvbench, hub_task=MC, hint=MC_HINT,
        max_new_tokens=16,
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC"
    TaskSpec(
        name="egoschema", dataset="EgoSchema", kind="mc", loader=load_egoschema, hub_task=MC, hint=MC_HINT,
        max_new_tokens=16,
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC"
    TaskSpec(
        name="perception_test", dataset="Perception-Test", kind="mc", loader=load_perception_test, hub_task=MC,
        hint=MC_HINT, max_new_tokens=16,
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC". Without subtitles, the
    # one setting VideoLLaMA 2 reports (section 4.1.1: "we only report the results under the setting of 'w/o subs'").
    TaskSpec(
        name="videomme", dataset="Video-MME", kind="mc", loader=load_videomme, hub_task=MC, hint=MC_HINT,
        max_new_tokens=16,
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC"
    TaskSpec(
        name="tut2017", dataset="TUT2017", kind="mc", loader=load_tut2017, hub_task=MC, hint=MC_HINT,
        max_new_tokens=16,
    ),
    # decoding: AV-LLM Table 3 (ClothoV1), paper silent: greedy
    TaskSpec(
        name="clotho", dataset="Clotho", kind="caption", loader=load_clotho_captions, hub_task=CAPTION,
        max_new_tokens=64,
    ),
    # decoding: AV-LLM Table 3, paper silent: greedy
    TaskSpec(
        name="audiocaps", dataset="AudioCaps", kind="caption", loader=load_audiocaps, hub_task=CAPTION,
        max_new_tokens=64,
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC" (001 and AV-LLM silent)
    TaskSpec(
        name="videochatgpt_generic", dataset="Video-ChatGPT generic", kind="judged", loader=load_videochatgpt,
        hub_task=VQA, max_new_tokens=256, criteria=("correctness", "detail", "context"),
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC" (001 and AV-LLM silent)
    TaskSpec(
        name="videochatgpt_temporal", dataset="Video-ChatGPT temporal", kind="judged", loader=load_videochatgpt,
        hub_task=VQA, max_new_tokens=256, criteria=("temporal",),
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "greedy search for all benchmarks except MSVC" (001 and AV-LLM silent)
    TaskSpec(
        name="videochatgpt_consistency", dataset="Video-ChatGPT consistency", kind="judged",
        loader=load_videochatgpt, hub_task=VQA, max_new_tokens=256, criteria=("consistency",),
    ),
    # decoding: VideoLLaMA 2 section 4.1.3, "except MSVC, where we apply sampling with a temperature of 0.2"; the
    # length is VideoLLaMA 2's inference default (max_new_tokens=1024), the paper being silent on it. Judged for
    # "Correctness of Information and Detailed Orientation" (section 4.1.1; Table 5's correctness / detailedness).
    TaskSpec(
        name="msvc", dataset="MSVC", kind="judged", loader=load_msvc, hub_task=VIDEO_CAPTION, max_new_tokens=1024,
        do_sample=True, temperature=0.2, criteria=("caption_correctness", "caption_detailedness"),
    ),
)  # fmt: skip


def get_task(task) -> TaskSpec:
    if isinstance(task, TaskSpec):
        return task
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return TASKS[task]
