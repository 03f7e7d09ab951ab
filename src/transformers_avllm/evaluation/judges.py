"""LLM judges: the seeds' GPT evaluation prompts, sent to an OpenAI-compatible chat-completions endpoint or to a
local transformers model; replies parsed defensively, retried with bounded exponential back-off, cached by content.

Prompts:
- "match": VideoLLaMA 2, appendix A (table 9): a yes/no match and an integer score 0-5 (open-ended QA / AVQA).
- "correctness", "detail", "context", "temporal", "consistency": Video-ChatGPT's five benchmark criteria (the
  `quantitative_evaluation/evaluate_benchmark_*.py` prompts of mbzuai-oryx/Video-ChatGPT), each a 0-5 score.
Scores are truncated to integers as those scripts do (`int(score)`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

_FORMAT = (
    "Please generate the response in the form of a Python dictionary string with keys 'score', where its value is the "
    "{name} score in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python "
    "dictionary string. For example, your response should look like this: {{''score': 4.8}}."
)
_VCGPT_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the {what} of generative outputs for video-based "
    "question-answer pairs. Your task is to compare the predicted answer with the correct answer and {task} "
    "Here's how you can accomplish the task:------##INSTRUCTIONS: {instructions}"
)
_VCGPT_USER = (
    "Please evaluate the following video-based question-answer pair:\n\nQuestion: {question}\nCorrect Answer: "
    "{answer}\nPredicted Answer: {prediction}\n\nProvide your evaluation only as a {name} score where the {name} "
    "score is an integer value between 0 and 5, with 5 indicating the highest level of {level}. "
)


def _vcgpt(what, task, instructions, name, level):
    system = _VCGPT_SYSTEM.format(what=what, task=task, instructions="\n".join(f"- {line}" for line in instructions))
    user = (_VCGPT_USER + _FORMAT).replace("{name}", name).replace("{level}", level)
    return {"system": system, "user": user, "keys": ("score",)}


PROMPTS = {
    "match": {
        "system": (
            "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
            "question-answer pairs. Your task is to compare the predicted answer with the correct answer and "
            "determine if they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: \n"
            "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
            "- Consider synonyms or paraphrases as valid matches.\n"
            "- Evaluate the correctness of the prediction compared to the answer."
        ),
        "user": (
            "Please evaluate the following video-based question-answer pair:\n"
            'Question: "{question}"\nCorrect Answer: "{answer}"\nPredicted Answer: "{prediction}"\n'
            "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, "
            "with 5 indicating the highest meaningful match. Please generate the response in the form of a Python "
            "dictionary string with keys 'pred' and 'score', where value of 'pred' is a string of 'yes' or 'no' and "
            "value of 'score' is in INTEGER, not STRING. DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only "
            "provide the Python dictionary string. For example, your response should look like this: "
            "{{'pred': 'yes', 'score': 4}}."
        ),
        "keys": ("pred", "score"),
    },
    "correctness": _vcgpt(
        "factual accuracy",
        "determine if they are factually consistent.",
        [
            "Focus on the factual consistency between the predicted answer and the correct answer. The predicted "
            "answer should not contain any misinterpretations or misinformation.",
            "The predicted answer must be factually accurate and align with the video content.",
            "Consider synonyms or paraphrases as valid matches.",
            "Evaluate the factual accuracy of the prediction compared to the answer.",
        ],
        "factual accuracy",
        "factual consistency",
    ),
    "detail": _vcgpt(
        "detail orientation",
        "determine its level of detail, considering both completeness and specificity.",
        [
            "Check if the predicted answer covers all major points from the video. The response should not leave out "
            "any key aspects.",
            "Evaluate whether the predicted answer includes specific details rather than just generic points. It "
            "should provide comprehensive information that is tied to specific elements of the video.",
            "Consider synonyms or paraphrases as valid matches.",
            "Provide a single evaluation score that reflects the level of detail orientation of the prediction, "
            "considering both completeness and specificity.",
        ],
        "detail orientation",
        "detail orientation",
    ),
    "context": _vcgpt(
        "contextual understanding",
        "determine if the generated response aligns with the overall context of the video content.",
        [
            "Evaluate whether the predicted answer aligns with the overall context of the video content. It should "
            "not provide information that is out of context or misaligned.",
            "The predicted answer must capture the main themes and sentiments of the video.",
            "Consider synonyms or paraphrases as valid matches.",
            "Provide your evaluation of the contextual understanding of the prediction compared to the answer.",
        ],
        "contextual understanding",
        "contextual understanding",
    ),
    "temporal": _vcgpt(
        "temporal understanding",
        "determine if they correctly reflect the temporal sequence of events in the video content.",
        [
            "Focus on the temporal consistency between the predicted answer and the correct answer. The predicted "
            "answer should correctly reflect the sequence of events or details as they are presented in the video "
            "content.",
            "Consider synonyms or paraphrases as valid matches, but only if the temporal order is maintained.",
            "Evaluate the temporal accuracy of the prediction compared to the answer.",
        ],
        "temporal accuracy",
        "temporal consistency",
    ),
    "consistency": {
        "system": (
            "You are an intelligent chatbot designed for evaluating the consistency of generative outputs for similar "
            "video-based question-answer pairs. You will be given two very similar questions, a common answer common "
            "to both the questions and predicted answers for the two questions .Your task is to compare the predicted "
            "answers for two very similar question, with a common correct answer and determine if they are "
            "consistent. Here's how you can accomplish the task:------##INSTRUCTIONS: "
            "- Focus on the consistency between the two predicted answers and the correct answer. Both predicted "
            "answers should correspond to the correct answer and to each other, and should not contain any "
            "contradictions or significant differences in the conveyed information.\n"
            "- Both predicted answers must be consistent with each other and the correct answer, in terms of the "
            "information they provide about the video content.\n"
            "- Consider synonyms or paraphrases as valid matches, but only if they maintain the consistency in the "
            "conveyed information.\n"
            "- Evaluate the consistency of the two predicted answers compared to the correct answer."
        ),
        "user": (
            "Please evaluate the following video-based question-answer pair:\n\nQuestion 1: {question}\n"
            "Question 2: {question2}\nCorrect Answer: {answer}\nPredicted Answer to Question 1: {prediction}\n"
            "Predicted Answer to Question 2: {prediction2}\n\nProvide your evaluation only as a consistency score "
            "where the consistency score is an integer value between 0 and 5, with 5 indicating the highest level of "
            "consistency. " + _FORMAT.replace("{name}", "consistency")
        ),
        "keys": ("score",),
    },
}


def judge_messages(criterion: str, **fields) -> list[dict]:
    """The chat messages that ask the judge about one prediction under `criterion` (a key of `PROMPTS`)."""
    prompt = PROMPTS[criterion]
    return [
        {"role": "system", "content": prompt["system"]},
        {"role": "user", "content": prompt["user"].format(**fields)},
    ]


# ---- parsing -----------------------------------------------------------------------------------------------------


class MalformedJudgement(ValueError):
    """The judge's reply holds no valid judgement."""


_DICT = re.compile(r"\{[^{}]*\}", re.S)
_PRED_KEY = re.compile(r"""['"]?\bpred\b['"]?\s*[:=]\s*['"]?\s*(yes|no)\b""", re.I)
_SCORE_KEY = re.compile(r"""['"]?\bscore\b['"]?\s*(?:[:=]|is|of)?\s*['"]?\s*(-?\d+(?:\.\d+)?)""", re.I)
_LEADING_VERDICT = re.compile(r"^\W*(yes|no)\b", re.I)


def parse_judgement(reply: str, keys=("pred", "score")) -> dict:
    """`{"pred": "yes"|"no", "score": int}` (the keys asked for) from an untrusted reply: a Python dict string, JSON,
    or prose ("Yes. Score: 4"). Raises `MalformedJudgement` when a key is missing or out of range (score 0-5)."""
    if not isinstance(reply, str) or not reply.strip():
        raise MalformedJudgement("empty reply")
    found = {}
    for candidate in _DICT.findall(reply):
        for loader in (ast.literal_eval, json.loads):
            try:
                value = loader(candidate)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict):
                found = {str(key).strip().lower(): item for key, item in value.items()}
                break
        if found:
            break
    if "pred" in keys and "pred" not in found:
        match = _PRED_KEY.search(reply) or _LEADING_VERDICT.search(reply)
        if match:
            found["pred"] = match.group(1)
    if "score" in keys and "score" not in found:
        match = _SCORE_KEY.search(reply)
        if match:
            found["score"] = match.group(1)
    result = {}
    if "pred" in keys:
        pred = str(found.get("pred", "")).strip().strip("'\"").lower()
        if pred not in ("yes", "no"):
            raise MalformedJudgement(f"no yes/no 'pred' in reply: {reply[:200]!r}")
        result["pred"] = pred
    if "score" in keys:
        try:
            score = float(str(found["score"]).strip().strip("'\""))
        except (KeyError, ValueError) as err:
            raise MalformedJudgement(f"no numeric 'score' in reply: {reply[:200]!r}") from err
        if not 0 <= score <= 5:
            raise MalformedJudgement(f"score {score} outside 0-5: {reply[:200]!r}")
        result["score"] = int(score)
    return result


# ---- backends ----------------------------------------------------------------------------------------------------


class JudgeUnavailable(RuntimeError):
    """A judge call failed; `transient` ones (timeouts, 429, 5xx, connection errors) are retried."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class OpenAIChatBackend:
    """Any OpenAI-compatible `POST {base_url}/chat/completions` (OpenAI, vLLM, TGI, llama.cpp, ...), through
    `urllib.request`. The API key is read from the environment variable `api_key_env` (no header when unset)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int = 64,
    ):
        base_url = base_url.rstrip("/")
        self.url = base_url if base_url.endswith("/chat/completions") else f"{base_url}/chat/completions"
        self.model, self.api_key_env, self.timeout = model, api_key_env, timeout
        self.temperature, self.max_tokens = temperature, max_tokens
        self.name = f"openai:{model}"

    def complete(self, messages: list[dict]) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            transient = err.code in (408, 409, 425, 429) or err.code >= 500
            raise JudgeUnavailable(f"HTTP {err.code} from {self.url}", transient) from err
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            raise JudgeUnavailable(f"cannot reach {self.url}: {err}", True) from err
        try:
            return json.loads(payload)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise MalformedJudgement(f"not a chat-completions response: {payload[:200]!r}") from err


class TransformersChatBackend:
    """A local text-generation model (any `AutoModelForCausalLM` + tokenizer), greedy, chat template when the
    tokenizer has one (else "system\\n\\nuser\\n")."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 64, name: str | None = None):
        self.model, self.tokenizer, self.max_new_tokens = model.eval(), tokenizer, max_new_tokens
        self.name = f"local:{name or getattr(model.config, '_name_or_path', '') or type(model).__name__}"
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        return cls(model, AutoTokenizer.from_pretrained(path), name=str(path), **kwargs)

    def complete(self, messages: list[dict]) -> str:
        import torch

        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "\n\n".join(message["content"] for message in messages) + "\n"
        inputs = self.tokenizer(text, return_tensors="pt").to(self.model.device)
        with self._lock, torch.no_grad():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


# ---- cache + retry -----------------------------------------------------------------------------------------------


class JudgementCache:
    """Successful judgements in a jsonl file, keyed by the sha256 of (judge name, messages): re-runs do not re-ask.
    Failures are not cached, so a later run asks again."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        if self.path and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry["judgement"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by an interrupted write

    @staticmethod
    def key(name: str, messages: list[dict]) -> str:
        return hashlib.sha256(json.dumps([name, messages], sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put(self, key: str, judgement: dict) -> None:
        with self._lock:
            self._entries[key] = judgement
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"key": key, "judgement": judgement}) + "\n")


@dataclass
class JudgeStats:
    calls: int = 0
    cache_hits: int = 0
    malformed: int = 0
    errors: int = 0
    failures: int = 0


@dataclass
class Judgement:
    ok: bool
    pred: str | None = None
    score: int | None = None
    error: str | None = None
    raw: str | None = None
    attempts: int = 0
    cached: bool = False

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class Judge:
    """Asks `backend` (an `OpenAIChatBackend` / `TransformersChatBackend`, or anything with `name` and
    `complete(messages) -> str`) and returns a `Judgement`; never raises for a bad reply or an unreachable server.

    A malformed reply or a transient error is retried up to `max_attempts` times in all, sleeping
    `base_delay * 2**k` (capped at `max_delay`, with jitter) between tries; then the judgement is a failure
    (`ok=False`, reported and left out of the averages, never counted as 0)."""

    backend: object
    cache: JudgementCache = field(default_factory=lambda: JudgementCache(None))
    max_attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0
    stats: JudgeStats = field(default_factory=JudgeStats)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    @property
    def name(self) -> str:
        return self.backend.name

    def __call__(self, criterion: str, **fields) -> Judgement:
        messages = judge_messages(criterion, **fields)
        key = JudgementCache.key(self.name, messages)
        cached = self.cache.get(key)
        if cached is not None:
            self._count("cache_hits")
            return Judgement(ok=True, cached=True, **cached)
        error, raw = "no attempt", None
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 2))
                time.sleep(delay * (0.5 + random.random() / 2))
            self._count("calls")
            try:
                raw = self.backend.complete(messages)
                parsed = parse_judgement(raw, PROMPTS[criterion]["keys"])
            except MalformedJudgement as err:
                self._count("malformed")
                error = f"malformed reply: {err}"
                continue
            except JudgeUnavailable as err:
                self._count("errors")
                error = str(err)
                if not err.transient:
                    break
                continue
            self.cache.put(key, parsed)
            return Judgement(ok=True, raw=raw, attempts=attempt, **parsed)
        self._count("failures")
        logger.warning("judge failed on %s after retries: %s", criterion, error)
        return Judgement(ok=False, error=error, raw=raw, attempts=attempt)


def build_judge(
    endpoint: str | None = None,
    model: str | None = None,
    local: str | None = None,
    cache_path: str | Path | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    **kwargs,
) -> Judge | None:
    """A `Judge` for `--judge-endpoint URL --judge-model NAME` or `--judge-local MODEL_DIR`; None without either."""
    if endpoint and local:
        raise ValueError("give either a judge endpoint or a local judge model, not both")
    if endpoint:
        if not model:
            raise ValueError("--judge-endpoint needs --judge-model")
        backend = OpenAIChatBackend(endpoint, model, api_key_env=api_key_env)
    elif local:
        backend = TransformersChatBackend.from_pretrained(local)
    else:
        return None
    return Judge(backend, JudgementCache(cache_path), **kwargs)
