"""`avllm web` in a real browser (headless Chromium driven by Playwright): upload a clip, read the streamed answer, a
second turn about an uploaded sound, the use-the-video's-audio switch and a bad file; and `avllm export --space`: the
folder's `app.py` is `avllm web`'s own file and runs where this package is not installed."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from chat_model import AUDIO_SPEC, QUESTIONS
from huggingface_hub import ModelCard
from packaging.requirements import Requirement

import transformers_avllm
from transformers_avllm.cli import main
from transformers_avllm.export import check_export_folder
from transformers_avllm.space import SPACE_REQUIREMENTS

CHROMIUM = os.environ.get("AVLLM_CHROMIUM") or shutil.which("chromium")
# Headless Chromium that makes no connection of its own (none leaves this machine).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
PACKAGE_SOURCES = Path(transformers_avllm.__file__).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def web_server(chat_model, tmp_path):
    """`avllm web` on the chat model, serving on a free local port; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
    }
    command = [sys.executable, "-m", "transformers_avllm.cli", "web", str(chat_model.folder), "--port", str(port)]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"avllm web did not start:\n{(tmp_path / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (.ci/run installs Debian's chromium)")
def test_web_page_in_a_browser(web_server, chat_model, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"\x00not a sound" * 300)
    second_clip = chat_model.other_clips[0]["messages"][0]["content"][0]["path"]
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 960})
        page.set_default_timeout(60_000)
        requested = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(web_server)

        def inputs_show(text: str) -> str:
            page.wait_for_function("text => document.querySelector('#inputs').innerText.includes(text)", arg=text)
            return page.inner_text("#inputs")

        def ask(question: str) -> str:
            answers = page.locator('#chatbot [data-testid="bot"]')
            before = answers.count()
            page.fill("#question textarea", question)
            page.click("#ask")
            # answered: a new reply, and the media inputs emptied for the next question
            page.wait_for_function(
                "n => document.querySelectorAll('#chatbot [data-testid=bot]').length > n"
                " && document.querySelector('#inputs').innerText.startsWith('Nothing attached')",
                arg=before,
            )
            return answers.last.inner_text().strip()

        page.locator("#video-input input[type=file]").set_input_files(str(chat_model.clip))
        assert "→ <AUD_VIS> (frames + its own audio track)" in inputs_show("<AUD_VIS>")
        assert ask(QUESTIONS["visual"]) == chat_model.colour_at_start
        users = page.locator('#chatbot [data-testid="user"]')
        assert f"<AUD_VIS> {QUESTIONS['visual']}" in users.last.inner_text()  # which token the clip became

        page.locator("#audio-input input[type=file]").set_input_files(str(chat_model.audio))
        assert "tones.wav → <AUD> (sound only)" in inputs_show("<AUD>")
        assert ask(QUESTIONS["audio"]) == AUDIO_SPEC.pitches[0]
        page.screenshot(path=str(tmp_path / "web.png"), full_page=True)

        page.locator("#video-input input[type=file]").set_input_files(second_clip)
        inputs_show("<AUD_VIS>")
        page.click("#use-audio input[type=checkbox]")  # the video without its own audio track
        assert "→ <VIS> (frames only)" in inputs_show("<VIS>")
        page.locator("#audio-input input[type=file]").set_input_files(str(broken))
        assert "MediaDecodeError" in inputs_show("MediaDecodeError")  # the named error; the page goes on
        browser.close()
    elsewhere = [url for url in requested if not url.startswith((web_server, "data:", "blob:"))]
    assert requested and not elsewhere  # the page asks nothing of any other server (fonts, scripts, analytics)
    if os.environ.get("AVLLM_WEB_SCREENSHOT"):  # how docs/chat_and_web.png is made
        shutil.copyfile(tmp_path / "web.png", os.environ["AVLLM_WEB_SCREENSHOT"])


SPACE_CHECK = """
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "transformers_avllm":
            raise ImportError("blocked")
sys.meta_path.insert(0, Block())
sys.path.insert(0, ".")
import app  # the Space's app.py, from its folder
page = app.build_app(".", trust_remote_code=True, max_new_tokens=2)
session = app.ChatSession.from_pretrained(".", trust_remote_code=True, max_new_tokens=2)
session.attach("video", sys.argv[1])
print(json.dumps({"page": type(page).__name__, "answer": session.ask(sys.argv[2]),
                  "model": type(session.model).__module__}))
"""


def test_export_space_runs_avllm_web_where_the_package_is_not_installed(chat_model, tmp_path):
    folder = tmp_path / "space"
    main(["export", "--model", str(chat_model.folder), "--output", str(folder), "--repo-id", "org/av-demo", "--space"])
    check_export_folder(folder)
    assert (folder / "app.py").read_text() == (PACKAGE_SOURCES / "web.py").read_text()
    assert (folder / "chat_avllm.py").read_text() == (PACKAGE_SOURCES / "chat_avllm.py").read_text()
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    declared = {
        (requirement := Requirement(line)).name.lower().replace("-", "_"): requirement.specifier
        for line in project["dependencies"] + project["optional-dependencies"]["web"]
    }
    requirements = [Requirement(line) for line in (folder / "requirements.txt").read_text().splitlines()]
    assert [requirement.name for requirement in requirements] == list(SPACE_REQUIREMENTS)
    for requirement in requirements:  # the tested window, as pyproject.toml declares it
        assert requirement.specifier == declared[requirement.name.lower()], requirement
    card = ModelCard.load(folder / "README.md").data
    assert (card.sdk, card.app_file, card.pipeline_tag) == ("gradio", "app.py", "any-to-any")

    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", SPACE_CHECK, str(chat_model.clip), QUESTIONS["visual"]],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["page"] == "Blocks" and report["answer"] == chat_model.colour_at_start
    assert report["model"].startswith("transformers_modules.")  # the folder's own remote code
