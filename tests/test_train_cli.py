"""`avllm train --config recipe.yaml`: TRL-style recipes, stage defaults, overrides, LLaVA-format data, export."""

import json

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from media_fixtures import write_video

from transformers_avllm import AVLlmForConditionalGeneration
from transformers_avllm.cli import main
from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_config
from transformers_avllm.training import load_av_dataset
from transformers_avllm.training.train import parse_train_args

WORDS = "what do you see hear ? a red square tone".split()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cli")
    torch.manual_seed(0)
    config = tiny_config()
    AVLlmForConditionalGeneration(config).save_pretrained(root / "model")
    build_processor(config, build_tokenizer([" ".join(WORDS)])).save_pretrained(root / "model")
    (root / "media").mkdir()
    rows = []
    for index in range(4):
        write_video(root / "media" / f"clip{index}.mp4", seconds=1, fps=8, audio=("aac", 300.0 + 150 * index))
        rows.append(
            {
                "id": f"clip{index}",
                "video": f"clip{index}.mp4",
                "conversations": [
                    {"from": "human", "value": "<video>\nwhat do you see ?"},
                    {"from": "gpt", "value": "a red square" if index % 2 else "a tone"},
                ],
            }
        )
    (root / "llava.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    recipe = {
        "stage": "pretrain",
        "model_name_or_path": str(root / "model"),
        "dataset_name": str(root / "llava.jsonl"),
        "media_root": str(root / "media"),
        "modalities": ["visual", "audio", "audio_visual"],
        "output_dir": str(root / "out"),
        "export_dir": str(root / "hub"),
        "per_device_train_batch_size": 3,
        "max_steps": 6,
        "logging_steps": 1,
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,
        "report_to": [],
        "save_strategy": "no",
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root


def test_llava_rows_load_in_the_training_format(workspace):
    dataset = load_av_dataset(str(workspace / "llava.jsonl"), media_root=str(workspace / "media"))
    first = dataset[0]["messages"][0]["content"][0]
    assert first["type"] == "video" and first["path"] == str(workspace / "media" / "clip0.mp4")
    reply = dataset[0]["messages"][1]
    assert reply["role"] == "assistant" and reply["content"][0]["text"] == "a tone"
    assert dataset[0]["messages"][0]["content"][1]["text"] == "what do you see ?"


def test_stage_defaults_recipe_and_command_line_priorities(workspace):
    recipe = str(workspace / "recipe.yaml")
    _, training_args, model_args, av_args = parse_train_args(["--config", recipe])
    assert training_args.learning_rate == 2e-3 and training_args.adam_beta2 == 0.98  # stage "pretrain" defaults
    assert training_args.per_device_train_batch_size == 3 and model_args.model_name_or_path.endswith("model")
    assert av_args.modalities == ["visual", "audio", "audio_visual"]
    _, training_args, _, av_args = parse_train_args(["--config", recipe, "--learning_rate", "1e-4", "--stage", "sft"])
    assert training_args.learning_rate == 1e-4 and av_args.stage == "sft"
    _, training_args, _, _ = parse_train_args(["--config", recipe, "--stage", "sft"])
    assert training_args.learning_rate == 2e-5


def test_train_command_trains_mixed_modalities_and_exports(workspace):
    main(["train", "--config", str(workspace / "recipe.yaml"), "--max_steps", "4"])
    assert (workspace / "out" / "model.safetensors").exists()
    assert (workspace / "out" / "processor_config.json").exists()
    card = ModelCard.load(workspace / "hub" / "README.md")
    assert "name: pretrain" in card.text and "steps: 4" in card.text and "visual+audio+audio_visual" in card.text
    assert "name: pretrain" in ModelCard.load(workspace / "out" / "README.md").text  # the checkpoint carries its card
    reloaded = AVLlmForConditionalGeneration.from_pretrained(workspace / "hub")
    initial = AVLlmForConditionalGeneration.from_pretrained(workspace / "model")
    # stage "pretrain": the projectors trained, the towers and the LLM did not
    assert not torch.equal(
        reloaded.model.video_connector.temporal_projector.weight,
        initial.model.video_connector.temporal_projector.weight,
    )
    for name in ("vision_tower", "audio_tower", "language_model"):
        for (key, value), reference in zip(
            getattr(reloaded.model, name).state_dict().items(),
            getattr(initial.model, name).state_dict().values(),
            strict=True,
        ):
            assert torch.equal(value, reference), f"{name}.{key} changed"


def test_unknown_stage_is_refused(workspace):
    with pytest.raises(SystemExit, match="unknown stage"):
        parse_train_args(["--config", str(workspace / "recipe.yaml"), "--stage", "nonsense"])
