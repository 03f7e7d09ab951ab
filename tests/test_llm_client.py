"""The shared LLM client: rate limit across threads, the reply cache (interrupted writes, a stricter parser), the jsonl
files it and the pipelines append to, and what the HTTP backend (huggingface_hub's `InferenceClient`) sends and how it
reports failures. Retries and back-off are exercised through the judges (tests/test_evaluation.py) and the curation
pipeline (tests/test_curation.py)."""

import threading
import time

import pytest
from openai_stub import OpenAIStub, StubResponse

from transformers_avllm.jsonl import append_jsonl, read_jsonl
from transformers_avllm.llm_client import (
    ChatClient,
    LLMUnavailable,
    MalformedReply,
    OpenAIChatBackend,
    RateLimiter,
    ReplyCache,
)


def test_rate_limit_spaces_request_starts_across_threads():
    limiter = RateLimiter(requests_per_minute=1200)  # one start every 50 ms
    starts = []
    threads = [threading.Thread(target=lambda: (limiter.wait(), starts.append(time.monotonic()))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts.sort()
    assert all(later - earlier >= 0.045 for earlier, later in zip(starts, starts[1:], strict=False))
    assert starts[-1] - starts[0] >= 5 * 0.045
    unlimited = RateLimiter(None)
    began = time.monotonic()
    for _ in range(100):
        unlimited.wait()
    assert time.monotonic() - began < 0.05
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimiter(0)


def test_jsonl_append_survives_an_interrupted_write(tmp_path):
    path = tmp_path / "sub" / "rows.jsonl"
    append_jsonl(path, [{"a": 1}, {"a": 2}])
    with open(path, "a") as handle:
        handle.write('{"a": 3, "cut')  # a write killed half-way
    append_jsonl(path, [{"a": 4}])
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 4}]
    assert read_jsonl(tmp_path / "missing.jsonl") == [] and read_jsonl(None) == []


class Backend:
    name = "scripted"

    def __init__(self, replies):
        self.replies, self.calls = list(replies), 0

    def complete(self, messages):
        self.calls += 1
        return self.replies.pop(0)


def number(text: str) -> int:
    if not text.strip().isdigit():
        raise MalformedReply(f"not a number: {text!r}", "not_a_number")
    return int(text)


def test_cached_replies_are_parsed_again_and_asked_again_when_they_no_longer_parse(tmp_path):
    cache_path = tmp_path / "cache.jsonl"
    messages = [{"role": "user", "content": "how many?"}]
    first = ChatClient(Backend(["no idea", "41 "]), ReplyCache(cache_path), base_delay=0)
    reply = first.ask(messages, number)
    assert (reply.ok, reply.value, reply.attempts, reply.cached) == (True, 41, 2, False)
    assert read_jsonl(cache_path) == [{"key": ReplyCache.key("scripted", messages), "reply": "41 "}]

    again = ChatClient(Backend([]), ReplyCache(cache_path))
    assert again.ask(messages, number).cached and again.backend.calls == 0

    def even(text):  # a stricter parser than when the reply was cached
        value = number(text)
        if value % 2:
            raise MalformedReply("odd", "odd")
        return value

    stricter = ChatClient(Backend(["42"]), ReplyCache(cache_path))
    reply = stricter.ask(messages, even)
    assert (reply.value, reply.cached, stricter.backend.calls) == (42, False, 1)
    failing = ChatClient(Backend(["x", "y"]), max_attempts=2, base_delay=0)
    reply = failing.ask(messages, number)
    assert (reply.ok, reply.error_kind, reply.raw, failing.stats.failures) == (False, "not_a_number", "y", 1)


HELLO = [{"role": "user", "content": "hi"}]


def test_http_backend_sends_our_key_and_never_the_hugging_face_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_for_third_parties")  # InferenceClient's own default credential
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("AVLLM_TEST_KEY", "sk-test")
    with OpenAIStub(lambda request: f"{request.model} at {request.path}") as stub:
        host = stub.base_url.removesuffix("/v1")
        # the OpenAI client's base URL, a bare host (llama.cpp's `--port`), or the full route: the same endpoint
        for base_url in (stub.base_url, host, stub.chat_url):
            assert OpenAIChatBackend(base_url, "judge-1").complete(HELLO) == "judge-1 at /v1/chat/completions"
        keyed = OpenAIChatBackend(stub.base_url, "judge-1", api_key_env="AVLLM_TEST_KEY", temperature=0.5)
        keyed.complete(HELLO)
        assert [request.authorization for request in stub.requests] == [None, None, None, "Bearer sk-test"]
        assert stub.requests[-1].body == {
            "model": "judge-1",
            "messages": HELLO,
            "temperature": 0.5,
            "max_tokens": 64,
            "stream": False,
        }


def test_http_backend_errors_say_whether_to_retry_and_how_long_to_wait():
    replies = {
        "busy": StubResponse(status=503, headers={"Retry-After": "7"}),
        "forbidden": StubResponse(status=403),
        "slow": StubResponse(content="late", delay=1.0),
        "html": StubResponse(body="<html>Bad Gateway</html>"),
        "empty": StubResponse(json={"object": "chat.completion", "choices": []}),
        "null": StubResponse(json={"choices": [{"message": {"role": "assistant", "content": None}}]}),
    }
    with OpenAIStub(lambda request: replies[request.messages[0]["content"]]) as stub:
        backend = OpenAIChatBackend(stub.base_url, "m", timeout=0.2)

        def failure(prompt):
            with pytest.raises((LLMUnavailable, MalformedReply)) as raised:
                backend.complete([{"role": "user", "content": prompt}])
            return raised.value

        busy, forbidden, slow = failure("busy"), failure("forbidden"), failure("slow")
        assert (busy.transient, busy.retry_after, str(busy)) == (True, 7.0, f"HTTP 503 from {stub.base_url}")
        assert (forbidden.transient, forbidden.retry_after) == (False, None) and "HTTP 403" in str(forbidden)
        assert isinstance(slow, LLMUnavailable) and slow.transient and "cannot reach" in str(slow)
        assert isinstance(failure("html"), MalformedReply) and isinstance(failure("empty"), MalformedReply)
        assert backend.complete([{"role": "user", "content": "null"}]) == ""
