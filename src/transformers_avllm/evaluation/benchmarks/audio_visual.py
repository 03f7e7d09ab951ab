"""Audio-visual benchmarks: AVSD, MUSIC-AVQA and AVSSD (videos answered with their audio track)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ...media_files import find_media_file
from .samples import Sample, open_qa_samples, read_csv, read_json, video_media

AVSSD_QUESTION = "What is the main sound source in the video?"


def load_avsd(path: Path, media_root: Path) -> list[Sample]:
    """AVSD (DSTC7/8): {"dialogs": [{"image_id", "caption", "summary", "dialog": [{"question", "answer"}]}]}; one
    sample per turn (question only, no dialog history), Charades videos `<image_id>.mp4` with their audio.
    `__UNDISCLOSED__` answers (test set) are predicted but not scored."""
    data = read_json(path)
    samples = []
    for dialog in data["dialogs"] if isinstance(data, dict) else data:
        media = video_media(find_media_file(media_root, dialog["image_id"]))
        for turn, qa in enumerate(dialog["dialog"]):
            answer = qa.get("answer", "")
            references = [] if not answer or answer == "__UNDISCLOSED__" else [answer]
            samples.append(
                Sample(f"{dialog['image_id']}_{turn}", media, qa["question"], references, meta={"turn": turn})
            )
    return samples


def music_avqa_question(record: dict) -> str:
    """MUSIC-AVQA's question text: each `<Object>` / `<LR>` / `<FL>` slot filled from `templ_values` in order."""
    values = iter(ast.literal_eval(record.get("templ_values") or "[]"))
    return re.sub(r"<[^>]+>", lambda _: str(next(values)), record["question_content"]).strip()


def load_music_avqa(path: Path, media_root: Path) -> list[Sample]:
    """MUSIC-AVQA `avqa-test.json`: [{"video_id", "question_id", "type": "[\\"Audio-Visual\\", \\"Counting\\"]",
    "question_content", "templ_values", "anser"}] (the published key is spelled "anser"); videos `<video_id>.mp4`."""
    samples = []
    for record in read_json(path):
        answer = record.get("anser", record.get("answer"))
        samples.append(
            Sample(
                str(record["question_id"]),
                video_media(find_media_file(media_root, record["video_id"])),
                music_avqa_question(record),
                [] if answer is None else [str(answer)],
                meta={"type": ast.literal_eval(record["type"]) if isinstance(record.get("type"), str) else None},
            )
        )
    return samples


def load_avssd(path: Path, media_root: Path) -> list[Sample]:
    """AVSSD (VGGSound sound sources): `vggsound.csv` rows `youtube_id,start_seconds,label,split` (no header; test
    rows kept), videos `<youtube_id>_<start:06d>.mp4`, asked `AVSSD_QUESTION` with the label as the answer; or a json
    list of {"video", "question", "answer"} when you have the question set itself."""
    if path.suffix == ".json":
        return open_qa_samples(read_json(path), media_root, lambda record: [record["video_id"]])
    rows = read_csv(path, fieldnames=["youtube_id", "start", "label", "split"])
    samples = []
    for row in rows:
        if row.get("split") and row["split"].strip() != "test":
            continue
        key = f"{row['youtube_id']}_{int(float(row['start'])):06d}"
        samples.append(
            Sample(key, video_media(find_media_file(media_root, key)), AVSSD_QUESTION, [row["label"].strip()])
        )
    return samples
