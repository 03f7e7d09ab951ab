"""The `Sample` record every benchmark loader returns, and what the loaders share to build one: reading json / csv
annotation files, the media item lists, the annotation files found next to another, multiple-choice samples."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...media_files import find_media_file


@dataclass
class Sample:
    """One evaluation item.

    `media`: content items for the processor (`{"type": "video" | "audio" | "image", "path": ...}`); `references`:
    the accepted answers / reference captions (empty when the benchmark keeps them hidden: predicted, not scored);
    `choices` + `answer_index` for multiple choice; `question2` for Video-ChatGPT's consistency pairs (the same
    question reworded, answered separately)."""

    id: str
    media: list[dict]
    question: str
    references: list[str] = field(default_factory=list)
    choices: list[str] | None = None
    answer_index: int | None = None
    question2: str | None = None
    meta: dict = field(default_factory=dict)


def read_json(path: Path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_csv(path: Path, fieldnames: list[str] | None = None) -> list[dict]:
    """The rows of a csv file as dicts, blank rows left out."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            row
            for row in csv.DictReader(handle, fieldnames=fieldnames)
            if any((v or "").strip() for v in row.values())
        ]


def video_media(path: str) -> list[dict]:
    """A sample's media: one video (with its audio track)."""
    return [{"type": "video", "path": path}]


def audio_media(path: str) -> list[dict]:
    """A sample's media: one audio clip."""
    return [{"type": "audio", "path": path}]


def sibling_file(path: Path, candidates: list[str]) -> Path | None:
    """The first of the `candidates` file names that exists in the folder `path` is (or is in)."""
    folder = path if path.is_dir() else path.parent
    return next((folder / name for name in candidates if (folder / name).is_file()), None)


def mc_sample(key, media, question, choices, answer_index, **meta) -> Sample:
    """A multiple-choice sample; the reference is the right option's text (none when the answer is hidden)."""
    answer_index = None if answer_index is None else int(answer_index)
    references = [] if answer_index is None else [choices[answer_index]]
    return Sample(str(key), media, question.strip(), references, list(choices), answer_index, meta=meta)


def open_qa_samples(records: list[dict], media_root: Path, video_names: Callable[[dict], list[str]]) -> list[Sample]:
    """A json list of {"video_id" or "video", "question", "answer"[, "id"]} (MSRVTT-QA / MSVD-QA as published)."""
    samples = []
    for index, record in enumerate(records):
        names = [record["video"]] if record.get("video") else video_names(record)
        answer = record.get("answer", record.get("a"))
        samples.append(
            Sample(
                str(record.get("id", record.get("question_id", index))),
                video_media(find_media_file(media_root, names)),
                record["question"].strip(),
                [] if answer is None else [str(answer)],
                meta={key: record[key] for key in ("category_id", "type") if key in record},
            )
        )
    return samples
