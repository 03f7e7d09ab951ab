"""Benchmarks: loaders of each benchmark's published annotation files (read from local copies) into one `Sample`
record, and the `TASKS` registry (how each is prompted, decoded and scored). `docs/evaluation.md` says where to
download each and how to lay it out."""

from __future__ import annotations

import ast
import csv
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..models.avllm import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

SHORT_ANSWER_HINT = "Answer the question using a single word or phrase."
MC_HINT = "Answer with the option's letter from the given choices directly."
CAPTION_PROMPT = "Describe the audio in one sentence."
AVSSD_QUESTION = "What is the main sound source in the video?"
TUT2017_QUESTION = "Which acoustic scene was this recording made in?"
# DCASE 2017 task 1 (TUT Acoustic Scenes 2017): the 15 scene labels, in the dataset's order.
TUT2017_LABELS = (
    "beach", "bus", "cafe/restaurant", "car", "city_center", "forest_path", "grocery_store", "home", "library",
    "metro_station", "office", "park", "residential_area", "train", "tram",
)  # fmt: skip
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


@dataclass(frozen=True)
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
            options = "\n".join(f"({chr(65 + index)}) {choice}" for index, choice in enumerate(sample.choices))
            text = f"{text}\nOptions:\n{options}"
        return f"{text}\n{self.hint}" if self.hint else text

    def generation_kwargs(self) -> dict:
        if self.do_sample:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": False}


# ---- shared helpers ----------------------------------------------------------------------------------------------


def read_json(path: Path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_csv(path: Path, fieldnames: list[str] | None = None) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            row
            for row in csv.DictReader(handle, fieldnames=fieldnames)
            if any((v or "").strip() for v in row.values())
        ]


def find_media(root: Path, names, extensions=VIDEO_EXTENSIONS) -> str:
    """The first existing file among `root / name` and `root / (name + extension)` for each candidate name; the
    first candidate when none exists (the sample then fails at decoding time, recorded as an error)."""
    names = [str(name) for name in ([names] if isinstance(names, (str, int)) else names)]
    candidates = []
    for name in names:
        candidates.append(root / name)
        if not Path(name).suffix or Path(name).suffix.lower() not in extensions:
            candidates += [root / f"{name}{extension}" for extension in extensions]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return str(candidates[1] if len(candidates) > 1 and not Path(names[0]).suffix else candidates[0])


def video(path: str) -> list[dict]:
    return [{"type": "video", "path": path}]


def audio(path: str) -> list[dict]:
    return [{"type": "audio", "path": path}]


def _sibling(path: Path, candidates: list[str]) -> Path | None:
    folder = path if path.is_dir() else path.parent
    return next((folder / name for name in candidates if (folder / name).is_file()), None)


def _mc_sample(key, media, question, choices, answer_index, **meta) -> Sample:
    answer_index = None if answer_index is None else int(answer_index)
    references = [] if answer_index is None else [choices[answer_index]]
    return Sample(str(key), media, question.strip(), references, list(choices), answer_index, meta=meta)


# ---- open-ended video QA -----------------------------------------------------------------------------------------


def _qa_list(records: list[dict], media_root: Path, video_names: Callable[[dict], list[str]]) -> list[Sample]:
    """A json list of {"video_id" or "video", "question", "answer"[, "id"]} (MSRVTT-QA / MSVD-QA as published)."""
    samples = []
    for index, record in enumerate(records):
        names = [record["video"]] if record.get("video") else video_names(record)
        answer = record.get("answer", record.get("a"))
        samples.append(
            Sample(
                str(record.get("id", record.get("question_id", index))),
                video(find_media(media_root, names)),
                record["question"].strip(),
                [] if answer is None else [str(answer)],
                meta={key: record[key] for key in ("category_id", "type") if key in record},
            )
        )
    return samples


def load_msrvtt_qa(path: Path, media_root: Path) -> list[Sample]:
    """MSRVTT-QA `test_qa.json`: [{"answer", "id", "question", "video_id": 7010}]; videos `video7010.mp4`."""

    def names(record):
        key = str(record["video_id"])
        return [key if key.startswith("video") else f"video{key}", key]

    return _qa_list(read_json(path), media_root, names)


def load_msvd_qa(path: Path, media_root: Path) -> list[Sample]:
    """MSVD-QA `test_qa.json`: [{"answer", "id", "question", "video_id": 1}]; `youtube_mapping.txt` ("<clip> vid1"
    lines, next to the json or in the media root) names the YouTube clip files (`<clip>.avi`)."""
    mapping = {}
    mapping_file = _sibling(path, ["youtube_mapping.txt"]) or _sibling(media_root, ["youtube_mapping.txt"])
    if mapping_file:
        for line in mapping_file.read_text().split("\n"):
            if line.strip():
                clip, vid = line.split()
                mapping[vid] = clip

    def names(record):
        key = str(record["video_id"])
        vid = key if key.startswith("vid") else f"vid{key}"
        return [mapping[vid], vid] if vid in mapping else [key, vid]

    return _qa_list(read_json(path), media_root, names)


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

    return _qa_list(records, media_root, names)


# ---- audio-visual QA ---------------------------------------------------------------------------------------------


def load_avsd(path: Path, media_root: Path) -> list[Sample]:
    """AVSD (DSTC7/8): {"dialogs": [{"image_id", "caption", "summary", "dialog": [{"question", "answer"}]}]}; one
    sample per turn (question only, no dialog history), Charades videos `<image_id>.mp4` with their audio.
    `__UNDISCLOSED__` answers (test set) are predicted but not scored."""
    data = read_json(path)
    samples = []
    for dialog in data["dialogs"] if isinstance(data, dict) else data:
        media = video(find_media(media_root, dialog["image_id"]))
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
                video(find_media(media_root, record["video_id"])),
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
        return _qa_list(read_json(path), media_root, lambda record: [record["video_id"]])
    rows = read_csv(path, fieldnames=["youtube_id", "start", "label", "split"])
    samples = []
    for row in rows:
        if row.get("split") and row["split"].strip() != "test":
            continue
        key = f"{row['youtube_id']}_{int(float(row['start'])):06d}"
        samples.append(Sample(key, video(find_media(media_root, key)), AVSSD_QUESTION, [row["label"].strip()]))
    return samples


# ---- audio QA ----------------------------------------------------------------------------------------------------


def load_clotho_aqa(path: Path, media_root: Path) -> list[Sample]:
    """Clotho-AQA `clotho_aqa_test.csv` (file_name, QuestionText, answer, confidence): three annotators' rows per
    question, grouped; the reference is the majority answer (first on ties), all answers kept in `meta`."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in read_csv(path):
        groups[(row["file_name"], row["QuestionText"].strip())].append(row["answer"].strip())
    samples, per_file = [], Counter()
    for (file_name, question), answers in groups.items():
        majority = Counter(answers).most_common(1)[0][0]
        key = f"{file_name}#{per_file[file_name]}"
        per_file[file_name] += 1
        media = audio(find_media(media_root, file_name, AUDIO_EXTENSIONS))
        samples.append(Sample(key, media, question, [majority], meta={"answers": answers}))
    return samples


# ---- multiple choice ---------------------------------------------------------------------------------------------


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
                _mc_sample(
                    f"{task}/{index}",
                    video(find_media(folder, record["video"])),
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
    answers_path = _sibling(path, ["subset_answers.json", "answers.json"])
    answers = read_json(answers_path) if answers_path else {}
    samples = []
    for record in read_json(path):
        choices = [record[f"option {index}"] for index in range(5)]
        media = video(find_media(media_root, record["q_uid"]))
        samples.append(_mc_sample(record["q_uid"], media, record["question"], choices, answers.get(record["q_uid"])))
    return samples


def load_perception_test(path: Path, media_root: Path) -> list[Sample]:
    """Perception Test multiple-choice `mc_question_valid.json`: {video_id: {"metadata": {...}, "mc_question":
    [{"id", "question", "options", "answer_id", "area", "reasoning", "tag"}]}}; videos `<video_id>.mp4`."""
    samples = []
    for video_id, entry in read_json(path).items():
        media = video(find_media(media_root, video_id))
        for question in entry.get("mc_question", []):
            samples.append(
                _mc_sample(
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
            _mc_sample(
                record["question_id"],
                video(find_media(root, record["videoID"])),
                record["question"],
                options,
                ord(letter) - 65 if letter else None,
                duration=record.get("duration"),
                task_type=record.get("task_type"),
            )
        )
    return samples


def load_tut2017(path: Path, media_root: Path) -> list[Sample]:
    """TUT Acoustic Scenes 2017 evaluation `meta.txt` (or `evaluation_setup/*.txt`): tab-separated
    `audio/<file>.wav<TAB><scene>[<TAB><recording>]`; asked as multiple choice over the 15 scene labels."""
    choices = list(TUT2017_LABELS)
    samples = []
    for line in path.read_text().split("\n"):
        parts = [part.strip() for part in line.split("\t")]
        if len(parts) < 2 or not parts[0]:
            continue
        if parts[1] not in choices:
            choices.append(parts[1])
        media = audio(find_media(media_root, parts[0], AUDIO_EXTENSIONS))
        samples.append((parts[0], media, parts[1]))
    readable = [choice.replace("_", " ") for choice in choices]
    return [_mc_sample(key, media, TUT2017_QUESTION, readable, choices.index(label)) for key, media, label in samples]


# ---- audio captioning --------------------------------------------------------------------------------------------


def load_clotho_captions(path: Path, media_root: Path) -> list[Sample]:
    """Clotho v1 `clotho_captions_evaluation.csv`: file_name, caption_1 .. caption_5; audio `evaluation/<file>`
    (`--media-root` the folder of the wavs)."""
    samples = []
    for row in read_csv(path):
        references = [row[f"caption_{index}"].strip() for index in range(1, 6) if row.get(f"caption_{index}")]
        media = audio(find_media(media_root, row["file_name"], AUDIO_EXTENSIONS))
        samples.append(Sample(row["file_name"], media, CAPTION_PROMPT, references))
    return samples


def load_audiocaps(path: Path, media_root: Path) -> list[Sample]:
    """AudioCaps `test.csv`: audiocap_id, youtube_id, start_time, caption (five rows per clip, grouped by
    youtube_id); audio `<youtube_id>.wav` (also tried: `Y<youtube_id>`, `<youtube_id>_<start_time>`,
    `<audiocap_id>`, any of the usual audio extensions)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in read_csv(path):
        groups[row["youtube_id"]].append(row)
    samples = []
    for youtube_id, rows in groups.items():
        start = rows[0].get("start_time", "0")
        names = [youtube_id, f"Y{youtube_id}", f"{youtube_id}_{start}", rows[0].get("audiocap_id", youtube_id)]
        media = audio(find_media(media_root, names, AUDIO_EXTENSIONS))
        samples.append(Sample(youtube_id, media, CAPTION_PROMPT, [row["caption"].strip() for row in rows]))
    return samples


# ---- Video-ChatGPT benchmark -------------------------------------------------------------------------------------


def load_videochatgpt(path: Path, media_root: Path) -> list[Sample]:
    """Video-ChatGPT's benchmark: `generic_qa.json` / `temporal_qa.json` ([{"Q", "A", "video_name"}]) or
    `consistency_qa.json` ([{"Q1", "Q2", "A", "video_name"}]); ActivityNet test videos `<video_name>.<ext>`. Ids
    are `<video_name>_<k>`, k counting that video's questions, as in Video-ChatGPT's scripts."""
    samples, counts = [], Counter()
    for record in read_json(path):
        name = record["video_name"]
        key = f"{name}_{counts[name]}"
        counts[name] += 1
        media = video(find_media(media_root, [name, name if name.startswith("v_") else f"v_{name}"]))
        question = record.get("Q", record.get("Q1"))
        samples.append(Sample(key, media, question.strip(), [record["A"].strip()], question2=record.get("Q2")))
    return samples


def _tasks(*specs: TaskSpec) -> dict[str, TaskSpec]:
    return {spec.name: spec for spec in specs}


VQA, AVQA, AQA = "video-question-answering", "audio-visual-question-answering", "audio-question-answering"
MC, CAPTION = "multiple-choice", "audio-captioning"
TASKS: dict[str, TaskSpec] = _tasks(
    TaskSpec("msrvtt_qa", "MSRVTT-QA", "open_qa", load_msrvtt_qa, VQA, SHORT_ANSWER_HINT),
    TaskSpec("msvd_qa", "MSVD-QA", "open_qa", load_msvd_qa, VQA, SHORT_ANSWER_HINT),
    TaskSpec("activitynet_qa", "ActivityNet-QA", "open_qa", load_activitynet_qa, VQA, SHORT_ANSWER_HINT),
    TaskSpec("avsd", "AVSD", "open_qa", load_avsd, AVQA, max_new_tokens=64),
    TaskSpec("music_avqa", "MUSIC-AVQA", "open_qa", load_music_avqa, AVQA, SHORT_ANSWER_HINT),
    TaskSpec("avssd", "AVSSD", "open_qa", load_avssd, AVQA, SHORT_ANSWER_HINT),
    TaskSpec("clotho_aqa", "Clotho-AQA", "open_qa", load_clotho_aqa, AQA, SHORT_ANSWER_HINT),
    TaskSpec("mvbench", "MVBench", "mc", load_mvbench, MC, MC_HINT, max_new_tokens=16),
    TaskSpec("egoschema", "EgoSchema", "mc", load_egoschema, MC, MC_HINT, max_new_tokens=16),
    TaskSpec("perception_test", "Perception-Test", "mc", load_perception_test, MC, MC_HINT, max_new_tokens=16),
    TaskSpec("videomme", "Video-MME", "mc", load_videomme, MC, MC_HINT, max_new_tokens=16),
    TaskSpec("tut2017", "TUT2017", "mc", load_tut2017, MC, MC_HINT, max_new_tokens=16),
    # The seeds decode captions by sampling at T = 0.2 (VideoLLaMA 2, section 4.1.3), everything else greedily.
    TaskSpec("clotho", "Clotho", "caption", load_clotho_captions, CAPTION, "", 64, True, 0.2),
    TaskSpec("audiocaps", "AudioCaps", "caption", load_audiocaps, CAPTION, "", 64, True, 0.2),
    TaskSpec(
        "videochatgpt_generic",
        "Video-ChatGPT generic",
        "judged",
        load_videochatgpt,
        VQA,
        max_new_tokens=256,
        criteria=("correctness", "detail", "context"),
    ),
    TaskSpec(
        "videochatgpt_temporal",
        "Video-ChatGPT temporal",
        "judged",
        load_videochatgpt,
        VQA,
        max_new_tokens=256,
        criteria=("temporal",),
    ),
    TaskSpec(
        "videochatgpt_consistency",
        "Video-ChatGPT consistency",
        "judged",
        load_videochatgpt,
        VQA,
        max_new_tokens=256,
        criteria=("consistency",),
    ),
)


def get_task(task) -> TaskSpec:
    if isinstance(task, TaskSpec):
        return task
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return TASKS[task]
