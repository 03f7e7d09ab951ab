"""The shared LLM client: rate limit across threads, the reply cache (interrupted writes, a stricter parser), and the
jsonl files it and the pipelines append to. The HTTP backend, retries and back-off are exercised through the judges
(tests/test_evaluation.py) and the curation pipeline (tests/test_curation.py)."""

import threading
import time

import pytest

from transformers_avllm.jsonl import append_jsonl, read_jsonl
from transformers_avllm.llm_client import ChatClient, MalformedReply, RateLimiter, ReplyCache


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
