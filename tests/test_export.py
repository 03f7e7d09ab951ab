"""Hub export: a self-contained folder that loads with trust_remote_code where the package is not installed."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import transformers
from huggingface_hub import HfApi, ModelCard
from media_fixtures import write_audio, write_video
from model_inputs import random_rows
from peft import LoraConfig, get_peft_model
from transformers import pipeline

import transformers_avllm.export as export_module
from transformers_avllm import AVLlmForConditionalGeneration
from transformers_avllm.export import ExportError, HubAuthError, check_export_folder, export_pretrained, push_to_hub
from transformers_avllm.models.avllm import SHIPPED_FILES
from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_config

WORDS = ["what", "is", "it", "?", "a", "dog", "barks"]
EVAL = [{"task": "video-question-answering", "dataset": "MSRVTT-QA", "metric": "accuracy", "value": 0.42}]


def trained_model():
    torch.manual_seed(0)
    config = tiny_config()
    model = AVLlmForConditionalGeneration(config)
    model.base_models = {"vision": "openai/clip-vit-large-patch14", "llm": "lmsys/vicuna-7b-v1.5"}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(3):
        batch, _ = random_rows(config, ["av", "audio", "video"], seed=step)
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), build_processor(config, build_tokenizer([" ".join(WORDS)]))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model, processor = trained_model()
    folder = export_pretrained(
        model,
        processor,
        root / "org--av.llm-v1.0",
        repo_id="org/av.llm-v1.0",
        eval_results=EVAL,
        training_stages=[{"name": "pretrain", "trainable": "projectors", "learning_rate": 2e-3}],
    )
    media = {
        "clip": write_video(root / "clip.mp4", seconds=1.5, fps=8, audio=("aac", 440.0)),
        "audio": write_audio(root / "tone.wav", seconds=1.0, tone_hz=660.0, rate=16000),
    }
    return folder, model, processor, media


# Interpreters a Hub user might load the folder with: this environment, and (in CI, `.ci/run`) a second virtual
# environment holding the floor of the tested transformers window.
INTERPRETERS = {"this": sys.executable, "floor": os.environ.get("AVLLM_FLOOR_PYTHON")}


def run_clean_process(folder, media, tmp_path, python=sys.executable, **env_vars):
    """Runs tests/clean_process_generate.py (the package blocked, the Hub offline) and returns the process."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", **env_vars}
    script = Path(__file__).with_name("clean_process_generate.py")
    return subprocess.run(
        [python, str(script), str(folder), str(media["clip"]), str(media["audio"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize("interpreter", sorted(INTERPRETERS))
def test_clean_process_loads_with_remote_code_and_generates_the_same_tokens(exported, tmp_path, interpreter):
    if INTERPRETERS[interpreter] is None:
        pytest.skip("set AVLLM_FLOOR_PYTHON to a Python whose environment holds the window's floor (.ci/run does)")
    folder, model, processor, media = exported
    conversations = [
        [
            {
                "role": "user",
                "content": [{"type": "video", "path": str(media["clip"])}, {"type": "text", "text": "what is it ?"}],
            }
        ],
        [
            {
                "role": "user",
                "content": [{"type": "audio", "path": str(media["audio"])}, {"type": "text", "text": "what is it ?"}],
            }
        ],
    ]
    inputs = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True, return_dict=True)
    expected = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False).tolist()
    result = run_clean_process(folder, media, tmp_path, python=INTERPRETERS[interpreter])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model_module"].startswith("transformers_modules.")
    assert report["processor_module"].startswith("transformers_modules.")
    assert report["base_class"] == "AVLlmModel"
    assert report["tokens"] == expected
    if interpreter == "floor":
        assert report["transformers"] == floor_release() + ".0"


def floor_release() -> str:
    """The window's floor as pyproject.toml declares it (`transformers>=5.23,...` -> "5.23")."""
    dependencies = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(dep for dep in dependencies if dep.startswith("transformers"))
    return re.search(r">=([\d.]+)", spec).group(1)


def test_exported_folder_records_its_transformers_version_and_window(exported):
    folder = exported[0]
    assert json.loads((folder / "config.json").read_text())["transformers_version"] == transformers.__version__
    shipped = (folder / "compat_avllm.py").read_text()
    assert f"TRANSFORMERS_FLOOR = ({floor_release().replace('.', ', ')})" in shipped


def test_clean_process_below_the_floor_names_both_versions(exported, tmp_path):
    folder, _, _, media = exported
    result = run_clean_process(folder, media, tmp_path, AVLLM_FAKE_TRANSFORMERS_VERSION="5.22.0")
    assert result.returncode != 0, result.stdout[-2000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert "AVLlmTransformersVersionError" in last_line
    assert f"needs transformers >= {floor_release()}, but transformers 5.22.0 is installed" in last_line


def test_folder_is_self_contained_and_pickle_free(exported):
    folder = exported[0]
    files = {path.name for path in folder.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "processor_config.json",
        "chat_template.jinja",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    } <= files
    assert {name for name in files if name.endswith(".py")} == SHIPPED_FILES
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForImageTextToText",
        "AutoModelForMultimodalLM",
        "AutoModelForCausalLM",
    }
    assert json.loads((folder / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_avllm.AVLlmProcessor"
    }
    check_export_folder(folder)
    (folder / "stray.bin").write_bytes(b"pickle")
    try:
        with pytest.raises(ExportError, match="stray.bin"):
            check_export_folder(folder)
    finally:
        (folder / "stray.bin").unlink()


def test_model_card_metadata(exported):
    card = ModelCard.load(exported[0] / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "any-to-any"
    assert card.data.base_model == ["openai/clip-vit-large-patch14", "lmsys/vicuna-7b-v1.5"]
    assert card.data.license == "apache-2.0"
    result = card.data.eval_results[0]
    assert (result.dataset_name, result.metric_type, result.metric_value) == ("MSRVTT-QA", "accuracy", 0.42)
    assert 'AutoModelForImageTextToText.from_pretrained("org/av.llm-v1.0", trust_remote_code=True)' in card.text
    assert "pretrain" in card.text and "learning_rate: 0.002" in card.text


def test_reexport_keeps_the_base_models_of_the_card(exported, tmp_path):
    model = AVLlmForConditionalGeneration.from_pretrained(exported[0])
    folder = export_pretrained(model, exported[2], tmp_path / "again", repo_id="org/again")
    assert ModelCard.load(folder / "README.md").data.base_model == [
        "openai/clip-vit-large-patch14",
        "lmsys/vicuna-7b-v1.5",
    ]
    assert "https://github.com/" not in (folder / "README.md").read_text()


def test_push_to_hub_uploads_the_folder_with_huggingface_hub(exported, monkeypatch):
    folder = exported[0]
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir()), kwargs))
        return "https://huggingface.co/org/av/commit/abc"

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    url = push_to_hub(folder, "org/av", private=True, token="hf_test")
    assert url.endswith("abc")
    assert calls[0] == ("create", "org/av", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls[1][2] == sorted(p.name for p in folder.iterdir())
    monkeypatch.setattr(export_module, "get_token", lambda: None)
    with pytest.raises(HubAuthError, match="token"):
        push_to_hub(folder, "org/av")


def test_lora_merged_model_keeps_auto_map(tmp_path):
    model, _ = trained_model()
    lora = LoraConfig(r=2, target_modules=r"model\.language_model\.layers\.\d+\.self_attn\.(q|v)_proj")
    merged = get_peft_model(model, lora).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    assert "AutoModelForImageTextToText" in json.loads((tmp_path / "merged" / "config.json").read_text())["auto_map"]
    assert (tmp_path / "merged" / "modeling_avllm.py").exists()


def test_any_to_any_pipeline_answers_video_and_audio(exported):
    folder, model, processor, media = exported
    answerer = pipeline("any-to-any", model=str(folder), trust_remote_code=True)
    for item in ({"type": "video", "path": str(media["clip"])}, {"type": "audio", "path": str(media["audio"])}):
        messages = [{"role": "user", "content": [item, {"type": "text", "text": "what is it ?"}]}]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        expected = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        output = answerer(text=messages, max_new_tokens=3, min_new_tokens=3, do_sample=False, return_tensors=True)
        assert output[0]["generated_token_ids"].tolist()[-3:] == expected[0, -3:].tolist()
        text = answerer(text=messages, max_new_tokens=3, min_new_tokens=3, do_sample=False, return_full_text=False)
        assert text[0]["generated_text"] == processor.decode(expected[0, -3:], skip_special_tokens=True)


def test_cli_export_and_push_without_token(exported, tmp_path, monkeypatch):
    from transformers_avllm.cli import main

    folder = exported[0]
    report = {"hub_task": "audio-captioning", "dataset": "Clotho", "metrics": {"cider": 0.4213, "spice": None}}
    (tmp_path / "clotho.report.json").write_text(json.dumps(report))
    main(["export", "--model", str(folder), "--output", str(tmp_path / "again"), "--repo-id", "org/again"]
         + ["--eval-report", str(tmp_path / "clotho.report.json")])  # fmt: skip
    check_export_folder(tmp_path / "again")
    assert "org/again" in (tmp_path / "again" / "README.md").read_text()
    (result,) = ModelCard.load(tmp_path / "again" / "README.md").data.eval_results
    assert (result.dataset_name, result.metric_type, result.metric_value) == ("Clotho", "cider", 0.4213)
    monkeypatch.setattr(export_module, "get_token", lambda: None)
    with pytest.raises(HubAuthError):
        main(["push", str(tmp_path / "again"), "--repo-id", "org/again"])
