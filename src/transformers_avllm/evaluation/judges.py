"""LLM judges: the seeds' GPT evaluation prompts, sent to an OpenAI-compatible chat-completions endpoint or to a
local transformers model (the backends, retries and cache of `llm_client`); replies parsed defensively.

Prompts:
- "match": VideoLLaMA 2, appendix A (table 9): a yes/no match and an integer score 0-5 (open-ended QA / AVQA).
- "correctness", "detail", "context", "temporal", "consistency": Video-ChatGPT's five benchmark criteria (the
  `quantitative_evaluation/evaluate_benchmark_*.py` prompts of mbzuai-oryx/Video-ChatGPT), each a 0-5 score.
- "caption_correctness", "caption_detailedness": MSVC's "Correctness of Information and Detailed Orientation"
  (VideoLLaMA 2, section 4.1.1), the correctness and detail prompts asked against all of a video's reference captions.
Scores are truncated to integers as those scripts do (`int(score)`).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..llm_client import ChatClient, MalformedReply, ReplyCache, build_backend

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


def _against_all_captions(prompt: dict) -> dict:
    """MSVC's form of a Video-ChatGPT prompt: the prediction is compared with all the video's human captions at once,
    given as one Python list. VideoLLaMA 2's `videollama2/eval/eval_video_cap_msvc_correctness.py` and
    `..._detailedness.py` ask "compare the predicted answer with these correct answers" and send "Correct Answers:
    {answer}" with `answer = str(captions)`; the rest of each prompt is Video-ChatGPT's, word for word."""
    system = prompt["system"].replace("with the correct answer and", "with these correct answers and")
    user = prompt["user"].replace("Correct Answer: {answer}", "Correct Answers: {answers}")
    return {**prompt, "system": system, "user": user}


PROMPTS["caption_correctness"] = _against_all_captions(PROMPTS["correctness"])
PROMPTS["caption_detailedness"] = _against_all_captions(PROMPTS["detail"])


def judge_messages(criterion: str, **fields) -> list[dict]:
    """The chat messages that ask the judge about one prediction under `criterion` (a key of `PROMPTS`)."""
    prompt = PROMPTS[criterion]
    return [
        {"role": "system", "content": prompt["system"]},
        {"role": "user", "content": prompt["user"].format(**fields)},
    ]


# ---- parsing -----------------------------------------------------------------------------------------------------


class MalformedJudgement(MalformedReply):
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


# ---- the judge ---------------------------------------------------------------------------------------------------


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


class Judge(ChatClient):
    """A `ChatClient` (backend, reply cache, bounded retries with back-off) that asks the judge prompts and parses the
    verdicts; never raises for a bad reply or an unreachable server. A judgement that still failed after the retries
    is `ok=False`: reported and left out of the averages, never counted as 0."""

    def __call__(self, criterion: str, **fields) -> Judgement:
        keys = PROMPTS[criterion]["keys"]
        reply = self.ask(judge_messages(criterion, **fields), lambda raw: parse_judgement(raw, keys))
        if not reply.ok:
            return Judgement(ok=False, error=reply.error, raw=reply.raw, attempts=reply.attempts)
        return Judgement(ok=True, raw=reply.raw, attempts=reply.attempts, cached=reply.cached, **reply.value)


def build_judge(
    endpoint: str | None = None,
    model: str | None = None,
    local: str | None = None,
    cache_path: str | Path | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    **kwargs,
) -> Judge | None:
    """A `Judge` for `--judge-endpoint URL --judge-model NAME` or `--judge-local MODEL_DIR` (greedy, short replies);
    None without either. `kwargs` go to `Judge` (`max_attempts`, `base_delay`, `max_delay`, ...)."""
    if endpoint and not model:
        raise ValueError("--judge-endpoint needs --judge-model")
    backend = build_backend(endpoint, model, local, api_key_env)
    return None if backend is None else Judge(backend, ReplyCache(cache_path), **kwargs)
