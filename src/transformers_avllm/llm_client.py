"""Asking an LLM for text we then parse: chat backends (an OpenAI-compatible endpoint through huggingface_hub's
`InferenceClient`, or a local transformers model), bounded retries with exponential back-off, a request-rate limit
and a reply cache keyed by content.

Used by the evaluation judges (`evaluation/judges.py`) and the instruction-data curation (`curation/`). The reply of
an LLM is untrusted text: `ChatClient.ask` hands it to a `parse` callable, retries when that raises
`MalformedReply`, and caches only replies that parsed.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

from .jsonl import append_jsonl, read_jsonl

logger = logging.getLogger(__name__)


class MalformedReply(ValueError):
    """The LLM's reply holds nothing usable (the parse callable's verdict); `kind` names the fault for counting."""

    def __init__(self, message: str, kind: str = "malformed"):
        super().__init__(message)
        self.kind = kind


class LLMUnavailable(RuntimeError):
    """An LLM call failed; `transient` ones (timeouts, 408/409/425/429, 5xx, connection errors) are retried.
    `retry_after`: seconds the server asked us to wait (HTTP `Retry-After`), when it said so."""

    def __init__(self, message: str, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.transient, self.retry_after = transient, retry_after


def _transport_errors() -> tuple[type[Exception], ...]:
    """Connection errors and timeouts of the HTTP library under huggingface_hub's session (`httpx` for
    huggingface_hub 1.x, `httpx2` for 2.x); huggingface_hub passes them through unwrapped."""
    errors = []
    for name in ("httpx", "httpx2"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except ImportError:
            pass
    return tuple(errors)


def _retry_after(headers) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError):
        return None


class OpenAIChatBackend:
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, TGI, llama.cpp, ...), through
    `huggingface_hub.InferenceClient`. `base_url` as the OpenAI client takes it (`https://api.openai.com/v1`); the
    client appends `/chat/completions` (and `/v1` to a bare host). The API key is read from the environment variable
    `api_key_env`; without one no `Authorization` header is sent (in particular not the user's Hugging Face token,
    which `InferenceClient` would otherwise send to whatever server `base_url` names).

    Errors become `LLMUnavailable` (HTTP status, the server's `Retry-After`; transient or not) or `MalformedReply`
    (a response that is not a chat completion); `ChatClient` retries them."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int = 64,
    ):
        self.base_url, self.model, self.api_key_env, self.timeout = base_url, model, api_key_env, timeout
        self.temperature, self.max_tokens = temperature, max_tokens
        self.name = f"openai:{model}"

    def client(self) -> InferenceClient:
        """An `InferenceClient` for the endpoint, with the key as the environment holds it now."""
        api_key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if api_key:
            return InferenceClient(base_url=self.base_url, api_key=api_key, timeout=self.timeout)
        return InferenceClient(base_url=self.base_url, headers={"authorization": None}, timeout=self.timeout)

    def complete(self, messages: list[dict]) -> str:
        try:
            with self.client() as client:
                output = client.chat_completion(
                    messages, model=self.model, temperature=self.temperature, max_tokens=self.max_tokens
                )
        except HfHubHTTPError as err:
            status = err.response.status_code
            transient = status in (408, 409, 425, 429) or status >= 500
            raise LLMUnavailable(
                f"HTTP {status} from {self.base_url}", transient, _retry_after(err.response.headers)
            ) from err
        except (InferenceTimeoutError, TimeoutError, ConnectionError, *_transport_errors()) as err:
            raise LLMUnavailable(f"cannot reach {self.base_url}: {err}", True) from err
        except ValueError as err:  # the body is not JSON
            raise MalformedReply(f"not a chat-completions response: {err}") from err
        try:
            return output.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError) as err:
            raise MalformedReply(f"not a chat-completions response: {output!r:.200}") from err


class TransformersChatBackend:
    """A local text-generation model (any `AutoModelForCausalLM` + tokenizer): greedy by default, sampling with
    `temperature > 0`; the tokenizer's chat template when it has one (else the messages' texts, blank-line joined)."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 64, temperature: float = 0.0, name: str | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
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
        sampling = (
            {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
        )
        with self._lock, torch.no_grad():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **sampling,
            )
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def build_backend(
    endpoint: str | None = None,
    model: str | None = None,
    local: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    **kwargs,
):
    """The backend for `--*-endpoint URL --*-model NAME` or `--*-local MODEL_DIR`; None without either. `kwargs`
    (e.g. `temperature`, `max_tokens` / `max_new_tokens`) go to the backend."""
    if endpoint and local:
        raise ValueError("give either an endpoint or a local model, not both")
    if endpoint:
        if not model:
            raise ValueError("an endpoint needs a model name")
        return OpenAIChatBackend(endpoint, model, api_key_env=api_key_env, **kwargs)
    if local:
        return TransformersChatBackend.from_pretrained(local, **kwargs)
    return None


class ReplyCache:
    """Replies that parsed, in a jsonl file (`{"key", "reply"}` lines), keyed by the sha256 of (backend name,
    messages): a re-run does not ask again. A line cut by an interrupted write is ignored."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._replies = {
            entry["key"]: entry["reply"]
            for entry in read_jsonl(self.path)
            if isinstance(entry.get("key"), str) and isinstance(entry.get("reply"), str)
        }

    @staticmethod
    def key(name: str, messages: list[dict]) -> str:
        return hashlib.sha256(json.dumps([name, messages], sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> str | None:
        return self._replies.get(key)

    def put(self, key: str, reply: str) -> None:
        with self._lock:
            self._replies[key] = reply
            if self.path:
                append_jsonl(self.path, [{"key": key, "reply": reply}])


class RateLimiter:
    """At most `requests_per_minute` request starts per minute, spaced evenly, across threads (None: no limit)."""

    def __init__(self, requests_per_minute: float | None = None):
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute must be > 0, got {requests_per_minute}")
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(start - now)


@dataclass
class ClientStats:
    calls: int = 0
    cache_hits: int = 0
    malformed: int = 0
    errors: int = 0
    failures: int = 0


@dataclass
class Reply:
    """The outcome of `ChatClient.ask`: `value` is what `parse` returned (when `ok`); `raw` the last reply text.
    On failure, `error` says why and `error_kind` is `"unavailable"` (the LLM could not be reached: worth asking again
    later) or the `kind` of the last `MalformedReply`."""

    ok: bool
    value: Any = None
    raw: str | None = None
    error: str | None = None
    error_kind: str | None = None
    attempts: int = 0
    cached: bool = False


@dataclass
class ChatClient:
    """Asks `backend` (anything with `name` and `complete(messages) -> str`) and parses the reply; never raises for a
    bad reply or an unreachable server.

    A reply that `parse` rejects (`MalformedReply`) or a transient error is retried up to `max_attempts` times in all,
    sleeping `base_delay * 2**k` (capped at `max_delay`, with jitter; at least the server's `Retry-After`) between
    tries; then the `Reply` is a failure. `requests_per_minute` bounds the request rate across threads."""

    backend: Any
    cache: ReplyCache = field(default_factory=ReplyCache)
    max_attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0
    requests_per_minute: float | None = None
    stats: ClientStats = field(default_factory=ClientStats)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self._limiter = RateLimiter(self.requests_per_minute)

    @property
    def name(self) -> str:
        return self.backend.name

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def ask(self, messages: list[dict], parse: Callable[[str], Any]) -> Reply:
        key = ReplyCache.key(self.name, messages)
        cached = self.cache.get(key)
        if cached is not None:
            try:
                value = parse(cached)
            except MalformedReply:  # the parser got stricter since: ask again
                pass
            else:
                self._count("cache_hits")
                return Reply(ok=True, value=value, raw=cached, cached=True)
        error, kind, raw, wait = "no attempt", None, None, 0.0
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 2)) * (0.5 + random.random() / 2)
                time.sleep(min(self.max_delay, max(backoff, wait)))
            self._limiter.wait()
            self._count("calls")
            try:
                raw = self.backend.complete(messages)
                value = parse(raw)
            except MalformedReply as err:
                self._count("malformed")
                error, kind, wait = f"malformed reply: {err}", err.kind, 0.0
                continue
            except LLMUnavailable as err:
                self._count("errors")
                error, kind, wait = str(err), "unavailable", err.retry_after or 0.0
                if not err.transient:
                    break
                continue
            self.cache.put(key, raw)
            return Reply(ok=True, value=value, raw=raw, attempts=attempt)
        self._count("failures")
        logger.warning("%s failed after %d attempts: %s", self.name, attempt, error)
        return Reply(ok=False, raw=raw, error=error, error_kind=kind, attempts=attempt)
