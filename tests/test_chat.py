"""`avllm chat` and `ChatSession`: answers about clips and audio files across turns, the KV cache reused (and the same
answers as encoding the whole conversation afresh), media decoded once, streaming, bad files, `--prompt`, and the
terminal program driven as a person would, under tmux."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid

import av
import pytest
from chat_model import AUDIO_SPEC, QUESTIONS
from transformers import LogitsProcessor, LogitsProcessorList

from transformers_avllm import MediaDecodeError, MediaNotFoundError
from transformers_avllm.chat_avllm import ChatSession
from transformers_avllm.cli import main

COLOUR, PITCH = QUESTIONS["visual"], QUESTIONS["audio"]


@pytest.fixture(scope="module")
def session(chat_model):
    return ChatSession.from_pretrained(str(chat_model.folder), max_new_tokens=4)


def fresh_answer(session, messages) -> str:
    """The answer to the last user message from the whole conversation encoded at once, without a cache."""
    processor = session.processor
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    output = session.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def count_decoding(processor, monkeypatch) -> list[str]:
    """Records the names of the media-decoding functions the processor calls (`sample_frames`, `load_waveform`)."""
    module, calls = sys.modules[type(processor).__module__], []
    for name in ("sample_frames", "load_waveform"):

        def counted(*args, _name=name, _load=getattr(module, name), **kwargs):  # noqa: B008
            calls.append(_name)
            return _load(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return calls


def test_turns_about_a_clip_then_an_audio_file_reuse_the_cache_and_decode_media_once(session, chat_model, monkeypatch):
    decoded = count_decoding(session.processor, monkeypatch)
    session.reset()
    second_clip = chat_model.other_clips[0]

    assert session.attach("video", str(chat_model.clip)).marker == "<AUD_VIS>"
    answers = [session.ask(COLOUR)]
    reused = [session.reused_tokens]
    assert session.attach("audio", str(chat_model.audio)).marker == "<AUD>"
    answers.append(session.ask(PITCH))
    reused.append(session.reused_tokens)
    second_path = second_clip["messages"][0]["content"][0]["path"]
    session.attach("video", second_path)
    assert session.mute().marker == "<VIS>"
    answers.append(session.ask(COLOUR))
    reused.append(session.reused_tokens)

    assert answers[:2] == [
        chat_model.colour_at_start,
        AUDIO_SPEC.pitches[0],
    ]  # the third: a turn it was not trained on
    # every file decoded once, when attached: the frames and tracks of both videos (the second muted after), the wav
    assert sorted(decoded) == ["load_waveform"] * 3 + ["sample_frames"] * 2
    # turns 2 and 3 ran the model only on what the cache did not hold: the new turn (and the end of the last answer)
    prompt_lengths = [
        len(session.processor.apply_chat_template(session.messages[: 2 * turn + 1], tokenize=True)[0])
        for turn in range(3)
    ]
    assert reused[0] == 0 and all(0 < reused[turn] < prompt_lengths[turn] for turn in (1, 2))
    assert reused[1] >= prompt_lengths[0]  # the whole first prompt (its video) came from the cache
    # ... and gave the answers that encoding the whole conversation at once gives
    for turn in range(3):
        assert fresh_answer(session, session.messages[: 2 * turn + 1]) == answers[turn]
    assert session.messages[-2]["content"][0] == {"type": "video", "path": second_path, "use_audio": False}

    session.reset()
    assert session.messages == [] and session.attachments == [] and session.pending == []


def test_an_image_is_a_one_frame_video_and_its_turn_matches_a_fresh_encoding(session, chat_model, tmp_path):
    with av.open(str(chat_model.clip)) as container:  # the clip's first frame: the square in its first colour
        next(container.decode(video=0)).to_image().save(tmp_path / "frame.png")
    session.reset()
    attachment = session.attach("image", str(tmp_path / "frame.png"))
    assert attachment.marker == "<VIS>" and set(attachment.inputs) == {"pixel_values"}
    answer = session.ask(COLOUR)
    assert answer == fresh_answer(session, session.messages[:1]) and answer


class WaitForReader(LogitsProcessor):
    """Holds generation before its third token until the reader got the first words (or 10 s pass)."""

    def __init__(self):
        self.calls, self.read, self.reader_was_first = 0, threading.Event(), None

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls == 3:
            self.reader_was_first = self.read.wait(timeout=10)
        return scores


def test_answers_stream_while_they_are_generated(chat_model):
    gate = WaitForReader()
    session = ChatSession.from_pretrained(
        str(chat_model.folder),
        max_new_tokens=6,
        generation_kwargs={"min_new_tokens": 6, "logits_processor": LogitsProcessorList([gate])},
    )
    session.attach("video", str(chat_model.clip))
    pieces = session.stream(COLOUR)
    first = next(piece for piece in pieces if piece.strip())  # (transformers 5.23 also streams empty strings)
    gate.read.set()
    rest = list(pieces)
    assert gate.reader_was_first  # the first word reached the reader while the model was still generating
    assert first.strip() == chat_model.colour_at_start and len(rest) >= 1
    assert session.messages[-1]["content"][0]["text"] == (first + "".join(rest)).strip()


def test_a_reader_that_stops_early_stops_generation_and_the_session_goes_on(session, chat_model):
    session.reset()
    session.attach("video", str(chat_model.clip))
    pieces = session.stream(COLOUR)
    next(pieces, None)
    pieces.close()  # a closed web page, Ctrl-C
    assert session.messages == [] and len(session.pending) == 1  # the turn was not recorded
    assert session.ask(COLOUR) == chat_model.colour_at_start


def test_bad_files_raise_named_errors_and_leave_the_session_as_it_was(session, chat_model, tmp_path):
    session.reset()
    session.attach("video", str(chat_model.clip))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(MediaNotFoundError, match="missing.wav"):
        session.attach("audio", str(tmp_path / "missing.wav"))
    with pytest.raises(MediaDecodeError, match="broken.mp4"):
        session.attach("video", str(broken))
    assert [attachment.path for attachment in session.pending] == [str(chat_model.clip)]
    assert session.ask(COLOUR) == chat_model.colour_at_start


def test_prompt_prints_only_the_answer(chat_model, capsys, tmp_path):
    main(
        ["chat", str(chat_model.folder), "--video", str(chat_model.clip), "--prompt", COLOUR, "--max-new-tokens", "3"]
    )
    assert capsys.readouterr().out == f"{chat_model.colour_at_start}\n"
    main(["chat", str(chat_model.folder), "--audio", str(chat_model.audio), "--prompt", PITCH])
    assert capsys.readouterr().out == f"{AUDIO_SPEC.pitches[0]}\n"
    with pytest.raises(SystemExit) as exited:
        main(["chat", str(chat_model.folder), "--audio", str(tmp_path / "nope.wav"), "--prompt", PITCH])
    output = capsys.readouterr()
    assert exited.value.code == 1 and output.out == ""
    assert f"error: MediaNotFoundError: {tmp_path / 'nope.wav'}: no such file" in output.err.splitlines()


# ---- as a person would: the terminal program under tmux -------------------------------------------------------------


class Tmux:
    """A tmux server of its own (`-L`) running one command in a 160x50 pane that stays after the command ends, with
    an `exit status N` line then."""

    def __init__(self, command: str):
        self.socket = f"avllm-test-{uuid.uuid4().hex[:8]}"
        shell = f'{command}; echo "exit status $?"'
        self._tmux("-f", "/dev/null", "new-session", "-d", "-s", "chat", "-x", "160", "-y", "50", shell)
        self._tmux("set-option", "-t", "chat", "remain-on-exit", "on")

    def _tmux(self, *args) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True).stdout

    def type(self, line: str) -> None:
        self._tmux("send-keys", "-t", "chat", "-l", line)
        self._tmux("send-keys", "-t", "chat", "Enter")

    def screen(self) -> str:
        """The pane's history and screen, wrapped lines joined, trailing blanks removed."""
        return self._tmux("capture-pane", "-p", "-J", "-t", "chat", "-S", "-").rstrip()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """Waits until the screen matches `pattern` (multi-line mode: `\\Z` is the end of what is shown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.screen(), re.M)
            if match:
                return match
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} did not appear on the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")
def test_chat_in_a_terminal_answers_takes_an_audio_turn_and_survives_a_missing_file(chat_model, tmp_path):
    env = {"PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    command = shlex.join(
        ["env", *(f"{key}={value}" for key, value in env.items()), sys.executable, "-m", "transformers_avllm.cli"]
        + ["chat", str(chat_model.folder), "--video", str(chat_model.clip)]
    )
    colour, pitch, other = chat_model.colour_at_start, AUDIO_SPEC.pitches[0], chat_model.other_clips[0]
    terminal = Tmux(command)
    try:
        terminal.wait_for(rf"^attached video \S*{chat_model.clip.name} -> <AUD_VIS>\nyou>\Z", timeout=180)
        terminal.type(COLOUR)
        terminal.wait_for(rf"^you> {re.escape(COLOUR)}\navllm> {colour}\nyou>\Z")
        terminal.type(f"/audio {chat_model.audio}")
        terminal.wait_for(r"^attached audio \S*tones.wav -> <AUD>\nyou>\Z")
        terminal.type(PITCH)
        terminal.wait_for(rf"^avllm> {pitch}\nyou>\Z")
        terminal.type(f"/audio {tmp_path / 'missing.wav'}")
        error = terminal.wait_for(r"^you> /audio \S+\n(.*)\nyou>\Z").group(1)  # one line, then the prompt again
        assert error == f"error: MediaNotFoundError: {tmp_path / 'missing.wav'}: no such file"
        terminal.type("/reset")  # the session goes on: a new conversation about another clip
        terminal.wait_for(r"^conversation reset\nyou>\Z")
        terminal.type(f"/video {other['messages'][0]['content'][0]['path']}")
        terminal.wait_for(r"-> <AUD_VIS>\nyou>\Z")
        terminal.type(COLOUR)
        terminal.wait_for(rf"^avllm> {other['answer']}\nyou>\Z")
        terminal.type("/quit")
        terminal.wait_for(r"^you> /quit\nexit status 0$")
        screen = terminal.screen()
        assert "Traceback" not in screen
        answers = [line for line in screen.splitlines() if line.startswith("avllm> ")]
        assert answers == [f"avllm> {colour}", f"avllm> {pitch}", f"avllm> {other['answer']}"]
    finally:
        terminal.close()
