"""The `avllm` command line: every command is reachable and takes its options, unknown options are refused except
by `train` (whose options are its recipe's), and each command runs its own function. The commands themselves are
tested where their features are (test_train_cli, test_demo, test_evaluation, test_curation, test_export)."""

import re

import pytest

import transformers_avllm.training.train as train_module
from transformers_avllm.cli import main

OPTIONS = {
    "quickstart": ["--max-new-tokens", "--output-dir"],
    "demo": [
        "--ablation", "--batch-size", "--num-test", "--num-train", "--output-dir", "--quick", "--stage1-steps",
        "--stage2-steps", "--workers",
    ],
    "data synth": ["--num-test", "--num-train", "--output-dir", "--seed"],
    "data prepare": ["--data", "--media-root", "--output", "--processor", "--shard-size", "--split", "--workers"],
    "export": ["--eval-report", "--license", "--model", "--output", "--processor", "--repo-id", "--space"],
    "push": ["--private", "--repo-id"],
    "convert videollama2": [
        "--audio-seconds", "--audio-tower", "--base-model", "--beats-config", "--chat-template", "--checkpoint",
        "--dtype", "--license", "--output", "--pad-to-square", "--repo-id", "--vision-tower",
    ],
    "eval": [
        "--batch-size", "--data", "--dtype", "--grounding", "--judge-api-key-env", "--judge-cache", "--judge-endpoint",
        "--judge-local", "--judge-model", "--limit", "--max-new-tokens", "--media-root", "--model", "--output",
        "--print-json", "--seed", "--subset", "--task",
    ],
    "curate": [
        "--api-key-env", "--asr", "--audio-caption-prompt", "--audio-captioner", "--audio-labels", "--audio-tagger",
        "--caption-prompt", "--captioner", "--device",
        "--llm", "--llm-endpoint", "--llm-model", "--max-tokens", "--mix", "--num-audio-segments", "--num-frames",
        "--num-samples", "--out", "--private", "--push-to-hub", "--requests-per-minute", "--seed", "--temperature",
        "--templates", "--videos", "--workers",
    ],
    "chat": ["--audio", "--device", "--dtype", "--image", "--max-new-tokens", "--mute", "--prompt", "--video"],
    "web": ["--device", "--dtype", "--host", "--max-new-tokens", "--port", "--share"],
}  # fmt: skip


def help_text(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_command_is_listed(capsys):
    usage = help_text([], capsys)
    assert "{quickstart,demo,data,export,push,convert,eval,curate,chat,web,train}" in usage


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_each_command_takes_its_options(command, capsys):
    text = help_text(command.split(), capsys)
    assert text.startswith(f"usage: avllm {command} ")
    assert sorted(set(re.findall(r"^  (--[a-z0-9-]+)", text, re.M)) - {"--help"}) == OPTIONS[command]


def test_unknown_options_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["push", "folder", "--repo-id", "org/name", "--bogus", "1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus 1" in capsys.readouterr().err


def test_train_hands_its_options_to_the_recipe_parser(monkeypatch):
    calls = []
    monkeypatch.setattr(train_module, "train", calls.append)
    main(["train", "--config", "recipe.yaml", "--max_steps", "4", "--help"])
    assert calls == [["--config", "recipe.yaml", "--max_steps", "4", "--help"]]


def test_a_command_runs_its_own_function(monkeypatch, tmp_path):
    import transformers_avllm.data.synth as synth_module

    calls = []
    monkeypatch.setattr(synth_module, "synthesize", lambda *args: calls.append(args) or {"train": tmp_path / "x"})
    main(["data", "synth", "--output-dir", str(tmp_path), "--num-train", "3", "--num-test", "2", "--seed", "5"])
    assert calls == [(str(tmp_path), 3, 2, 5)]
