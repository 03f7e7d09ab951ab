"""`avllm curate`: the AV-LLM paper's GPT-assisted instruction-data pipeline (seed 000, section 3.3, appendix A).

media files -> contexts (frame captions <VC>, audio segment captions or tags <AC>) -> a plan of (file, task, sample
type) jobs following the task x sample-type mix (Table 10 by default) -> one LLM call per job with that task's prompt
template -> the reply parsed and validated into a conversation -> de-duplicated -> a row of the training dataset format
(`docs/training.md`) carrying the sample type's modality (`<AUD>`, `<VIS>`, `<AUD_VIS>`).

Everything lands in the output folder as it is made, so an interrupted run resumes where it stopped:
`contexts.jsonl` (per file, or why it could not be decoded), `train.jsonl` (the dataset), `rejected.jsonl` (replies
that failed validation, with the reason; never in the dataset), `llm_cache.jsonl`, `summary.json` and a dataset card
`README.md`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..jsonl import append_jsonl, read_jsonl
from ..llm_client import ChatClient, MalformedReply, ReplyCache
from ..media_files import VIDEO_EXTENSIONS, list_media_files
from ..models.avllm import CONTENT_ITEMS, MediaError
from .context import MediaContext, Perception, describe_media
from .templates import SAMPLE_TYPES, TASKS, load_templates

logger = logging.getLogger(__name__)

# AV-LLM Table 10 (thousands of samples): task -> sample type -> weight.
TABLE10_MIX = {
    "conversation": {"audio": 20, "visual": 60, "audio_visual": 40},
    "description": {"audio": 20, "visual": 50, "audio_visual": 30},
    "reasoning": {"audio": 5, "visual": 20, "audio_visual": 15},
}
TURN_LIMITS = {"conversation": (2, 8), "description": (1, 1), "reasoning": (1, 3)}
MAX_QUESTION_CHARS, MAX_ANSWER_CHARS = 600, 4000
# Answers that give away the text the LLM was shown instead of the recording.
CONTEXT_LEAK = re.compile(
    r"\b(captions?|audio tags?|sound tags?|confidence scores?|(the|this) (given|provided) (context|information|text)|"
    r"according to the (context|descriptions?|tags))\b",
    re.I,
)


class CurationError(ValueError):
    """Bad curation input: no media files, or an invalid mix."""


# ---- the mix -----------------------------------------------------------------------------------------------------


def parse_mix(spec: str | dict | None) -> dict[tuple[str, str], float]:
    """`{(task, sample_type): weight}` from a dict like `TABLE10_MIX`, a JSON / YAML file holding one, or a string
    `"conversation/visual=60,description/audio=20"`. None gives Table 10. Cells not named get weight 0."""
    if spec is None:
        spec = TABLE10_MIX
    if isinstance(spec, str) and Path(spec).is_file():
        import yaml

        spec = yaml.safe_load(Path(spec).read_text())
    cells = {}
    if isinstance(spec, str):
        for item in filter(None, (part.strip() for part in spec.split(","))):
            match = re.fullmatch(r"(\w+)/(\w+)\s*=\s*([0-9.]+)", item)
            if not match:
                raise CurationError(f"mix item {item!r}: write TASK/SAMPLE_TYPE=WEIGHT, e.g. conversation/visual=60")
            cells[(match[1], match[2])] = float(match[3])
    elif isinstance(spec, dict):
        for task, weights in spec.items():
            if not isinstance(weights, dict):
                raise CurationError(f"mix: {task} needs a mapping of sample type to weight, got {weights!r}")
            cells.update({(task, sample_type): float(weight) for sample_type, weight in weights.items()})
    else:
        raise CurationError(f"mix must be a string, a mapping or a file, got {type(spec).__name__}")
    for task, sample_type in cells:
        if task not in TASKS or sample_type not in SAMPLE_TYPES:
            raise CurationError(f"mix: unknown cell {task}/{sample_type}; tasks {TASKS}, sample types {SAMPLE_TYPES}")
    if any(weight < 0 for weight in cells.values()) or not sum(cells.values()) > 0:
        raise CurationError("mix weights must be >= 0 and not all 0")
    return {cell: weight for cell, weight in cells.items() if weight > 0}


def _quotas(mix: dict[tuple[str, str], float], total: int) -> dict[tuple[str, str], int]:
    """`total` split over the cells in proportion to their weights (largest remainder, ties in cell order)."""
    weight_sum = sum(mix.values())
    exact = {cell: total * weight / weight_sum for cell, weight in mix.items()}
    quotas = {cell: int(value) for cell, value in exact.items()}
    for cell in sorted(exact, key=lambda cell: quotas[cell] - exact[cell])[: total - sum(quotas.values())]:
        quotas[cell] += 1
    return quotas


@dataclass(frozen=True)
class Job:
    media: str  # path relative to the media folder
    task: str
    sample_type: str

    @property
    def id(self) -> str:
        return f"{self.media}#{self.task}/{self.sample_type}"


def plan_jobs(
    contexts: list[MediaContext], mix: dict[tuple[str, str], float], num_samples: int, seed: int = 0
) -> tuple[list[Job], dict[tuple[str, str], int]]:
    """Jobs for about `num_samples` samples split by the mix; each cell takes files that can give its sample type (a
    silent video gives no audio samples), each (file, task, sample type) at most once, in a seeded order. Returns the
    jobs and each cell's quota (a cell short of eligible files gets fewer jobs; the summary shows it)."""
    quotas = _quotas(mix, num_samples)
    jobs = []
    for (task, sample_type), quota in quotas.items():
        eligible = [context.path for context in contexts if sample_type in context.sample_types]
        random.Random(f"{seed}/{task}/{sample_type}").shuffle(eligible)
        jobs += [Job(path, task, sample_type) for path in eligible[:quota]]
    return jobs, quotas


# ---- the LLM's reply ---------------------------------------------------------------------------------------------


def _json_values(text: str):
    """Every JSON value that starts at a `{` or `[` of `text` (code fences and prose around it are skipped)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", text):
        try:
            yield decoder.raw_decode(text, match.start())[0]
        except ValueError:
            continue


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def parse_conversation(reply: str, task: str) -> list[dict]:
    """The validated turns `[{"question", "answer"}]` of an LLM reply for `task`; raises `MalformedReply` naming what
    is wrong: no JSON conversation, a turn without a non-empty question and answer, too many or too few turns, a
    text that is too long, a repeated question, or an answer that talks about the context instead of the recording."""
    turns = None
    for value in _json_values(reply or ""):
        candidate = value.get("conversation") if isinstance(value, dict) else value
        if isinstance(candidate, list) and candidate and all(isinstance(turn, dict) for turn in candidate):
            turns = candidate
            break
    if turns is None:
        raise MalformedReply("no JSON conversation in the reply", "no_conversation")
    parsed = []
    for index, turn in enumerate(turns):
        question, answer = turn.get("question"), turn.get("answer")
        if not isinstance(question, str) or not question.strip() or not isinstance(answer, str) or not answer.strip():
            raise MalformedReply(f"turn {index} needs a non-empty 'question' and 'answer' string", "bad_turn")
        question, answer = question.strip(), answer.strip()
        if len(question) > MAX_QUESTION_CHARS or len(answer) > MAX_ANSWER_CHARS:
            raise MalformedReply(f"turn {index} is too long", "too_long")
        leak = CONTEXT_LEAK.search(question) or CONTEXT_LEAK.search(answer)
        if leak:
            raise MalformedReply(
                f"turn {index} mentions the context ({leak.group()!r}) instead of the recording", "context_leak"
            )
        parsed.append({"question": question, "answer": answer})
    low, high = TURN_LIMITS[task]
    if not low <= len(parsed) <= high:
        raise MalformedReply(f"{len(parsed)} turns; a {task} sample has {low} to {high}", "turn_count")
    questions = [_normalise(turn["question"]) for turn in parsed]
    if len(set(questions)) != len(questions):
        raise MalformedReply("a question is repeated", "repeated_question")
    return parsed


def training_row(job: Job, turns: list[dict]) -> dict:
    """A row of the training format: the media item first in the first user turn, rendering as the sample type's
    modality token (a video's audio sample is its audio track: `{"type": "audio", "path": video}`)."""
    item = {**CONTENT_ITEMS[job.sample_type], "path": job.media}
    messages = []
    for index, turn in enumerate(turns):
        content = [item] if index == 0 else []
        messages.append({"role": "user", "content": content + [{"type": "text", "text": turn["question"]}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": turn["answer"]}]})
    return {"id": job.id, "task": job.task, "sample_type": job.sample_type, "media": job.media, "messages": messages}


def fingerprint(turns: list[dict]) -> str:
    """Identity of a conversation for de-duplication: its normalised texts."""
    text = "\n".join(f"{_normalise(turn['question'])}\t{_normalise(turn['answer'])}" for turn in turns)
    return hashlib.sha256(text.encode()).hexdigest()


# ---- output files ------------------------------------------------------------------------------------------------


class _Writer:
    """Appends rows to the output folder's jsonl files, thread-safe."""

    def __init__(self, folder: Path):
        self.folder, self._lock = folder, threading.Lock()

    def append(self, name: str, row: dict) -> None:
        with self._lock:
            append_jsonl(self.folder / name, [row])


def media_to_curate(folder: Path) -> list[Path]:
    """The video and audio files under `folder` (searched recursively), sorted; a `CurationError` when there are
    none."""
    if not folder.is_dir():
        raise CurationError(f"{folder}: not a folder")
    files = list_media_files(folder)
    if not files:
        raise CurationError(f"{folder}: no video ({', '.join(VIDEO_EXTENSIONS)}) or audio files")
    return files


def gather_contexts(
    files: list[Path], root: Path, output: Path, perception: Perception | Callable[[], Perception], **describe_kwargs
) -> tuple[list[MediaContext], dict[str, str]]:
    """Contexts of every file, read back from `contexts.jsonl` when a previous run made them; `perception` may be a
    function building the models, called only when a file still needs them. Files that cannot be decoded are
    reported (path -> reason) and remembered as such, not fatal."""
    writer = _Writer(output)
    known = {row["path"]: row for row in read_jsonl(output / "contexts.jsonl")}
    contexts, errors = [], {}
    for path in tqdm(files, desc="media contexts", unit="file"):
        relative = str(path.relative_to(root))
        if relative not in known:
            if not isinstance(perception, Perception):
                perception = perception()
            try:
                known[relative] = describe_media(path, root, perception, **describe_kwargs).to_dict()
            except MediaError as err:
                logger.warning("skipping %s", err)
                known[relative] = {"path": relative, "error": str(err)}
            writer.append("contexts.jsonl", known[relative])
        if "error" in known[relative]:
            errors[relative] = known[relative]["error"]
        else:
            contexts.append(MediaContext(**known[relative]))
    return contexts, errors


# ---- the run -----------------------------------------------------------------------------------------------------


def curate(
    media_dir: str | Path,
    output_dir: str | Path,
    backend,
    perception: Perception | Callable[[], Perception],
    *,
    mix=None,
    num_samples: int | None = None,
    templates_dir: str | Path | None = None,
    num_frames: int = 8,
    num_audio_segments: int = 4,
    workers: int = 4,
    requests_per_minute: float | None = None,
    max_attempts: int = 3,
    retry_delay: float = 1.0,
    seed: int = 0,
) -> dict:
    """Runs (or resumes) the pipeline on the media under `media_dir` and returns the summary (also written to
    `summary.json` and the dataset card `README.md` in `output_dir`).

    Args:
        backend: the LLM, an `OpenAIChatBackend` / `TransformersChatBackend` (`llm_client.build_backend`) or anything
            with `name` and `complete(messages) -> str`. Its replies are cached in `llm_cache.jsonl`; a malformed
            reply or an unreachable server is retried `max_attempts` times in all (back-off from `retry_delay` s),
            at most `requests_per_minute` requests a minute, from `workers` threads.
        perception: the models describing the media (`Perception`), or a function building them (called only when
            some file's context is not in `contexts.jsonl` yet).
        mix: task x sample-type weights, see `parse_mix` (default: AV-LLM Table 10).
        num_samples: samples to ask for (default: one per media file), split by the mix.
    """
    root, output = Path(media_dir), Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    templates = load_templates(templates_dir)
    mix = parse_mix(mix)
    files = media_to_curate(root)
    contexts, media_errors = gather_contexts(
        files, root, output, perception, num_frames=num_frames, num_segments=num_audio_segments
    )
    jobs, quotas = plan_jobs(contexts, mix, num_samples if num_samples is not None else len(files), seed)
    client = ChatClient(
        backend,
        ReplyCache(output / "llm_cache.jsonl"),
        max_attempts=max_attempts,
        base_delay=retry_delay,
        requests_per_minute=requests_per_minute,
    )
    retry = ask_llm(jobs, contexts, templates, client, output, workers)
    summary = summarise(output, jobs, quotas, mix, media_errors, retry, client, len(files))
    (output / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    write_dataset_card(output, summary)
    return summary


def ask_llm(
    jobs: list[Job], contexts: list[MediaContext], templates, client: ChatClient, output: Path, workers: int
) -> list[str]:
    """Asks the LLM for each job not answered by a previous run, from `workers` threads, and files each reply: a
    valid new conversation in `train.jsonl`, an invalid or duplicate one in `rejected.jsonl` with the reason.
    Returns the ids of the jobs the LLM could not be reached for (asked again by the next run)."""
    done = {row["id"] for name in ("train.jsonl", "rejected.jsonl") for row in read_jsonl(output / name)}
    fingerprints = {fingerprint(_turns(row)) for row in read_jsonl(output / "train.jsonl")}
    by_path = {context.path: context for context in contexts}
    writer, lock, retry = _Writer(output), threading.Lock(), []

    def run(job: Job) -> None:
        context = by_path[job.media]
        messages = templates[job.task].messages(job.sample_type, context.visual_text(), context.audio_text())
        reply = client.ask(messages, lambda text: parse_conversation(text, job.task))
        if reply.error_kind == "unavailable":
            retry.append(job.id)  # not the output's fault: asked again by the next run
            return
        base = {"id": job.id, "task": job.task, "sample_type": job.sample_type}
        if not reply.ok:
            writer.append(
                "rejected.jsonl", {**base, "kind": reply.error_kind, "reason": reply.error, "reply": reply.raw}
            )
            return
        identity = fingerprint(reply.value)
        with lock:
            duplicate = identity in fingerprints
            fingerprints.add(identity)
        if duplicate:
            reason = "the same conversation as an accepted sample"
            writer.append("rejected.jsonl", {**base, "kind": "duplicate", "reason": reason, "reply": reply.raw})
        else:
            writer.append("train.jsonl", training_row(job, reply.value))

    pending = [job for job in jobs if job.id not in done]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(run, job) for job in pending]
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"asking {client.name}", unit="sample"):
            future.result()
    return retry


def _turns(row: dict) -> list[dict]:
    texts = [
        next(item["text"] for item in message["content"] if item["type"] == "text") for message in row["messages"]
    ]
    return [{"question": q, "answer": a} for q, a in zip(texts[::2], texts[1::2], strict=True)]


def summarise(output: Path, jobs, quotas, mix, media_errors, retry, client, num_files) -> dict:
    """Counts per task x sample type (mix weight, quota, planned, accepted, rejected), rejection kinds, files that
    could not be decoded, samples to retry, and the LLM client's statistics, over this run's plan."""
    planned = {job.id: (job.task, job.sample_type) for job in jobs}
    outcomes = Counter()
    kinds = Counter()
    for name in ("train.jsonl", "rejected.jsonl"):
        for row in read_jsonl(output / name):
            if row["id"] in planned:
                outcomes[(planned[row["id"]], name)] += 1
                kinds.update([row["kind"]] if name == "rejected.jsonl" else [])
    cells = {}
    for cell in sorted(set(planned.values()) | set(mix), key=lambda c: (TASKS.index(c[0]), SAMPLE_TYPES.index(c[1]))):
        cells["/".join(cell)] = {
            "weight": mix.get(cell, 0),
            "quota": quotas.get(cell, 0),
            "planned": sum(value == cell for value in planned.values()),
            "accepted": outcomes[(cell, "train.jsonl")],
            "rejected": outcomes[(cell, "rejected.jsonl")],
        }
    return {
        "media_files": num_files,
        "media_errors": media_errors,
        "samples": sum(cell["accepted"] for cell in cells.values()),
        "rejected": sum(cell["rejected"] for cell in cells.values()),
        "rejection_kinds": dict(kinds),
        "to_retry": retry,
        "cells": cells,
        "llm": {"name": client.name, **vars(client.stats)},
        "dataset": str(output / "train.jsonl"),
    }


def format_summary(summary: dict) -> str:
    """The summary as a table of counts per task and sample type."""
    lines = [
        f"{summary['samples']} samples from {summary['media_files']} media files in {summary['dataset']}",
        f"{'task/sample type':<28}{'weight':>8}{'quota':>8}{'planned':>9}{'accepted':>10}{'rejected':>10}",
    ]
    for name, cell in summary["cells"].items():
        lines.append(
            f"{name:<28}{cell['weight']:>8g}{cell['quota']:>8}{cell['planned']:>9}{cell['accepted']:>10}"
            f"{cell['rejected']:>10}"
        )
    if summary["rejection_kinds"]:
        lines.append("rejected: " + ", ".join(f"{kind} {count}" for kind, count in summary["rejection_kinds"].items()))
    if summary["media_errors"]:
        lines.append(f"{len(summary['media_errors'])} media files could not be decoded (see summary.json)")
    if summary["to_retry"]:
        lines.append(f"{len(summary['to_retry'])} samples got no answer from the LLM: run again to retry them")
    llm = summary["llm"]
    lines.append(f"LLM {llm['name']}: {llm['calls']} calls, {llm['cache_hits']} cached, {llm['malformed']} malformed")
    return "\n".join(lines)


def write_dataset_card(output: Path, summary: dict) -> None:
    """A dataset card (`README.md`) with the counts, for the Hub."""
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        task_categories=["video-text-to-text"],
        tags=["audio-visual", "instruction-tuning", "avllm"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "train.jsonl"}]}],
    )
    body = (
        f"---\n{data.to_yaml()}\n---\n\n# Audio-visual instruction data\n\n"
        "Made with `avllm curate` (transformers-avllm), after the GPT-assisted pipeline of AV-LLM: frame captions "
        "and audio captions (or sound tags) of each file, turned into conversations by an LLM. Rows follow the "
        "transformers-avllm training format; media paths are relative to the media folder (`media_root`).\n\n"
        f"```\n{format_summary(summary)}\n```\n"
    )
    DatasetCard(body).save(output / "README.md")


def push_dataset(output_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Uploads the dataset (`train.jsonl`, `README.md`, `summary.json`) to a Hub dataset repo with huggingface_hub's
    API; the media stay where they are. Returns the commit URL."""
    from ..export import upload_folder_to_hub

    return upload_folder_to_hub(
        output_dir,
        repo_id,
        repo_type="dataset",
        commit_message="Upload audio-visual instruction data (avllm curate)",
        private=private,
        token=token,
        allow_patterns=["train.jsonl", "README.md", "summary.json"],
    )
