"""Audio benchmarks: audio QA (Clotho-AQA), acoustic scenes (TUT2017, as multiple choice) and audio captioning
(Clotho, AudioCaps)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from ...media_files import AUDIO_EXTENSIONS, find_media_file
from .samples import Sample, audio_media, mc_sample, read_csv

CAPTION_PROMPT = "Describe the audio in one sentence."
TUT2017_QUESTION = "Which acoustic scene was this recording made in?"
# DCASE 2017 task 1 (TUT Acoustic Scenes 2017): the 15 scene labels, in the dataset's order.
TUT2017_LABELS = (
    "beach", "bus", "cafe/restaurant", "car", "city_center", "forest_path", "grocery_store", "home", "library",
    "metro_station", "office", "park", "residential_area", "train", "tram",
)  # fmt: skip


# ---- audio QA -------------------------------------------------------------------------------------------------------


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
        media = audio_media(find_media_file(media_root, file_name, AUDIO_EXTENSIONS))
        samples.append(Sample(key, media, question, [majority], meta={"answers": answers}))
    return samples


# ---- acoustic scenes ------------------------------------------------------------------------------------------------


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
        media = audio_media(find_media_file(media_root, parts[0], AUDIO_EXTENSIONS))
        samples.append((parts[0], media, parts[1]))
    readable = [choice.replace("_", " ") for choice in choices]
    return [mc_sample(key, media, TUT2017_QUESTION, readable, choices.index(label)) for key, media, label in samples]


# ---- audio captioning -----------------------------------------------------------------------------------------------


def load_clotho_captions(path: Path, media_root: Path) -> list[Sample]:
    """Clotho v1 `clotho_captions_evaluation.csv`: file_name, caption_1 .. caption_5; audio `evaluation/<file>`
    (`--media-root` the folder of the wavs)."""
    samples = []
    for row in read_csv(path):
        references = [row[f"caption_{index}"].strip() for index in range(1, 6) if row.get(f"caption_{index}")]
        media = audio_media(find_media_file(media_root, row["file_name"], AUDIO_EXTENSIONS))
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
        media = audio_media(find_media_file(media_root, names, AUDIO_EXTENSIONS))
        samples.append(Sample(youtube_id, media, CAPTION_PROMPT, [row["caption"].strip() for row in rows]))
    return samples
