"""Video benchmarks: open-ended video QA (MSRVTT-QA, MSVD-QA, ActivityNet-QA), multiple-choice video QA (MVBench,
EgoSchema, Perception Test, Video-MME), the Video-ChatGPT benchmark and MSVC captioning."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

from ...media_files import find_media_file
from .samples import Sample, mc_sample, open_qa_samples, read_json, sibling_file, video_media

logger = logging.getLogger(__name__)

# MVBench (OpenGVLab/MVBench): json/<task>.json -> the folder of its videos under video/ (the HF dataset's layout).
MVBENCH_VIDEO_DIRS = {
    "action_sequence": "star/Charades_v1_480",
    "action_prediction": "star/Charades_v1_480",
    "action_antonym": "ssv2_video",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "unexpected_action": "FunQA_test/test",
    "object_existence": "clevrer/video_validation",
    "object_interaction": "star/Charades_v1_480",
    "object_shuffle": "perception/videos",
    "moving_direction": "clevrer/video_validation",
    "action_localization": "sta/sta_video",
    "scene_transition": "scene_qa/video",
    "action_count": "perception/videos",
    "moving_count": "clevrer/video_validation",
    "moving_attribute": "clevrer/video_validation",
    "state_change": "perception/videos",
    "fine_grained_pose": "nturgbd",
    "character_order": "perception/videos",
    "egocentric_navigation": "vlnqa",
    "counterfactual_inference": "clevrer/video_validation",
}
MVBENCH_FRAME_TASKS = {"episodic_reasoning"}  # TVQA frame folders, not video files: not supported


# ---- open-ended video QA --------------------------------------------------------------------------------------------


def load_msrvtt_qa(path: Path, media_root: Path) -> list[Sample]:
    """MSRVTT-QA `test_qa.json`: [{"answer", "id", "question", "video_id": 7010}]; videos `video7010.mp4`."""

    def names(record):
        key = str(record["video_id"])
        return [key if key.startswith("video") else f"video{key}", key]

    return open_qa_samples(read_json(path), media_root, names)


def load_msvd_qa(path: Path, media_root: Path) -> list[Sample]:
    """MSVD-QA `test_qa.json`: [{"answer", "id", "question", "video_id": 1}]; `youtube_mapping.txt` ("<clip> vid1"
    lines, next to the json or in the media root) names the YouTube clip files (`<clip>.avi`)."""
    mapping = {}
    mapping_file = sibling_file(path, ["youtube_mapping.txt"]) or sibling_file(media_root, ["youtube_mapping.txt"])
    if mapping_file:
        for line in mapping_file.read_text().split("\n"):
            if line.strip():
                clip, vid = line.split()
                mapping[vid] = clip

    def names(record):
        key = str(record["video_id"])
        vid = key if key.startswith("vid") else f"vid{key}"
        return [mapping[vid], vid] if vid in mapping else [key, vid]

    return open_qa_samples(read_json(path), media_root, names)


def load_activitynet_qa(path: Path, media_root: Path) -> list[Sample]:
    """ActivityNet-QA (MILVLG/activitynet-qa `dataset/`): `test_q.json` [{"video_name", "question_id", "question"}]
    and `test_a.json` [{"question_id", "answer", "type"}]; `--data` is the `_q.json` file (or their folder)."""
    if path.is_dir():
        path = path / "test_q.json"
    answers_path = path.with_name(path.name.replace("_q.json", "_a.json"))
    answers = {str(item["question_id"]): item for item in read_json(answers_path)} if answers_path.is_file() else {}
    records = []
    for question in read_json(path):
        answer = answers.get(str(question["question_id"]), {})
        records.append({**question, **answer, "id": question["question_id"]})

    def names(record):
        name = record["video_name"]
        return [name, name if name.startswith("v_") else f"v_{name}"]

    return open_qa_samples(records, media_root, names)


# ---- multiple choice ------------------------------------------------------------------------------------------------


def load_mvbench(path: Path, media_root: Path) -> list[Sample]:
    """MVBench `json/<task>.json` ([{"video", "question", "candidates", "answer"[, "start", "end"]}]) or the `json/`
    folder (every task); `--media-root` is MVBench's `video/` folder. `start`/`end` are kept in `meta` but the whole
    clip is decoded (our processor samples frames over the whole file)."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    samples = []
    for file in files:
        task = file.stem
        if task in MVBENCH_FRAME_TASKS:
            logger.warning("MVBench %s uses frame folders, not video files: skipped", task)
            continue
        folder = media_root / MVBENCH_VIDEO_DIRS.get(task, "")
        for index, record in enumerate(read_json(file)):
            candidates = [str(choice) for choice in record["candidates"]]
            bound = {key: record[key] for key in ("start", "end") if key in record}
            samples.append(
                mc_sample(
                    f"{task}/{index}",
                    video_media(find_media_file(folder, record["video"])),
                    record["question"],
                    candidates,
                    candidates.index(str(record["answer"])),
                    task=task,
                    **bound,
                )
            )
    return samples


def load_egoschema(path: Path, media_root: Path) -> list[Sample]:
    """EgoSchema `questions.json` ([{"q_uid", "question", "option 0" .. "option 4"}]) and, next to it,
    `subset_answers.json` ({q_uid: index}); questions without a public answer are predicted but not scored."""
    answers_path = sibling_file(path, ["subset_answers.json", "answers.json"])
    answers = read_json(answers_path) if answers_path else {}
    samples = []
    for record in read_json(path):
        choices = [record[f"option {index}"] for index in range(5)]
        media = video_media(find_media_file(media_root, record["q_uid"]))
        samples.append(mc_sample(record["q_uid"], media, record["question"], choices, answers.get(record["q_uid"])))
    return samples


def load_perception_test(path: Path, media_root: Path) -> list[Sample]:
    """Perception Test multiple-choice `mc_question_valid.json`: {video_id: {"metadata": {...}, "mc_question":
    [{"id", "question", "options", "answer_id", "area", "reasoning", "tag"}]}}; videos `<video_id>.mp4`."""
    samples = []
    for video_id, entry in read_json(path).items():
        media = video_media(find_media_file(media_root, video_id))
        for question in entry.get("mc_question", []):
            samples.append(
                mc_sample(
                    f"{video_id}_{question['id']}",
                    media,
                    question["question"],
                    question["options"],
                    question.get("answer_id"),
                    area=question.get("area"),
                    reasoning=question.get("reasoning"),
                )
            )
    return samples


def load_videomme(path: Path, media_root: Path) -> list[Sample]:
    """Video-MME (lmms-lab/Video-MME `videomme/test-*.parquet`, or the same rows as json): videoID, question_id,
    duration, domain, task_type, question, options ["A. ...", ...], answer "C"; videos `data/<videoID>.mp4` under
    the media root or its parent (the default media root is the parquet's folder, `videomme/`, a sibling of `data/`),
    or directly in the media root. Subtitles are not used."""
    if path.suffix == ".parquet":
        import pandas

        records = pandas.read_parquet(path).to_dict("records")
    else:
        records = read_json(path)
    data_folders = [folder for folder in (media_root / "data", media_root.parent / "data") if folder.is_dir()]
    root = data_folders[0] if data_folders else media_root
    samples = []
    for record in records:
        options = [re.sub(r"^\s*[A-Z][.)]\s*", "", str(option)) for option in record["options"]]
        letter = str(record.get("answer") or "").strip().upper()
        samples.append(
            mc_sample(
                record["question_id"],
                video_media(find_media_file(root, record["videoID"])),
                record["question"],
                options,
                ord(letter) - 65 if letter else None,
                duration=record.get("duration"),
                task_type=record.get("task_type"),
            )
        )
    return samples


# ---- Video-ChatGPT benchmark ----------------------------------------------------------------------------------------


def load_videochatgpt(path: Path, media_root: Path) -> list[Sample]:
    """Video-ChatGPT's benchmark: `generic_qa.json` / `temporal_qa.json` ([{"Q", "A", "video_name"}]) or
    `consistency_qa.json` ([{"Q1", "Q2", "A", "video_name"}]); ActivityNet test videos `<video_name>.<ext>`. Ids
    are `<video_name>_<k>`, k counting that video's questions, as in Video-ChatGPT's scripts."""
    samples, counts = [], Counter()
    for record in read_json(path):
        name = record["video_name"]
        key = f"{name}_{counts[name]}"
        counts[name] += 1
        media = video_media(find_media_file(media_root, [name, name if name.startswith("v_") else f"v_{name}"]))
        question = record.get("Q", record.get("Q1"))
        samples.append(Sample(key, media, question.strip(), [record["A"].strip()], question2=record.get("Q2")))
    return samples


# ---- MSVC captioning ------------------------------------------------------------------------------------------------


def load_msvc(path: Path, media_root: Path) -> list[Sample]:
    """MSVC (VideoLLaMA 2's Multi-Source Video Captioning, Hub dataset `DAMO-NLP-SG/Multi-Source-Video-Captioning`):
    `msvc.json` [{"video_path", "question", "captions": [...]}], `video_path` relative to the MSVC folder (the media
    root). The model is asked the record's own `question`; every caption is a reference. Ids are `<video stem>_<k>`,
    k counting that video's records, as VideoLLaMA 2's `eval_video_cap_msvc_*.py` key them."""
    samples, counts = [], Counter()
    for record in read_json(path):
        video_path = record["video_path"]
        stem = Path(video_path).name.split(".")[0]
        key = f"{stem}_{counts[stem]}"
        counts[stem] += 1
        captions = record["captions"]
        references = [captions] if isinstance(captions, str) else [str(caption) for caption in captions]
        media = video_media(find_media_file(media_root, video_path))
        samples.append(Sample(key, media, record["question"].strip(), references))
    return samples
