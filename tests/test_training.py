"""Training through TRL's SFTTrainer: collator labels, modality mixing, stages, LoRA, resume."""

import pytest
import torch
from datasets import Dataset
from media_fixtures import write_video
from peft import PeftModel
from trl import SFTConfig

from transformers_avllm import AVLlmForConditionalGeneration
from transformers_avllm.models.avllm import row_type_indices
from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_config
from transformers_avllm.training import (
    AVLlmDataCollator,
    AVLlmSFTTrainer,
    BadSampleError,
    DataMixture,
    SampleTooLongError,
    apply_stage,
    from_llava_format,
    stage_defaults,
)

WORDS = "what do you see hear ? a red blue green square tone high low beep the is and".split()
IGNORE = -100


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return [
        write_video(folder / f"clip{i}.mp4", seconds=1, fps=8, audio=("aac", 300.0 + 200 * i), start_index=i * 7)
        for i in range(4)
    ]


def av_rows(clips):
    answers = ["a red square and a low tone", "a blue square and a high tone", "a green square", "a beep"]
    return [
        {
            "id": f"clip{i}",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video", "path": str(clip)},
                        {"type": "text", "text": "what do you see and hear ?"},
                    ],
                },
                {"role": "assistant", "content": [{"type": "text", "text": answers[i]}]},
            ],
        }
        for i, clip in enumerate(clips)
    ]


COLOURS, TONES = ["red", "blue", "green", "red"], ["low", "high", "low", "high"]


def kind_rows(clips) -> dict[str, list[dict]]:
    """Rows of each sample type whose answers need exactly what the sample carries: the colour of a visual-only
    video, the tone of an audio track, both for a video with its audio."""
    kinds = {
        "visual": ({"use_audio": False}, "what do you see ?", "a {colour} square"),
        "audio": ({}, "what do you hear ?", "a {tone} tone"),
        "audio_visual": ({"use_audio": True}, "what do you see and hear ?", "a {colour} square and a {tone} tone"),
    }
    rows = {}
    for kind, (item, question, answer) in kinds.items():
        rows[kind] = [
            {
                "id": f"{kind}-{i}",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "audio" if kind == "audio" else "video", "path": str(clip), **item},
                            {"type": "text", "text": question},
                        ],
                    },
                    {
                        "role": "assistant",
                        "content": [{"type": "text", "text": answer.format(colour=COLOURS[i], tone=TONES[i])}],
                    },
                ],
            }
            for i, clip in enumerate(clips)
        ]
    return rows


def make(**config_kwargs):
    torch.manual_seed(0)
    config = tiny_config(**config_kwargs)
    return AVLlmForConditionalGeneration(config), build_processor(config, build_tokenizer([" ".join(WORDS)]))


def sft_config(tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=12,
        learning_rate=5e-3,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to=[],
        activation_checkpointing=False,
        save_strategy="no",
        seed=0,
        lr_scheduler_type="constant",
    )
    settings.update(overrides)
    return SFTConfig(**settings)


def test_labels_token_by_token_on_a_multi_turn_sample(clips):
    model, processor = make()
    row = {
        "id": "multi",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "the"}]},
            {
                "role": "user",
                "content": [{"type": "video", "path": str(clips[0])}, {"type": "text", "text": "what ?"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "a red square"}]},
            {"role": "user", "content": [{"type": "text", "text": "hear ?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a low tone"}]},
        ],
    }
    batch = AVLlmDataCollator(processor)([row])
    tokens = processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    trained = [token for token, label in zip(tokens, batch["labels"][0].tolist(), strict=True) if label != IGNORE]
    assert trained == ["a", "red", "square", "</s>", "a", "low", "tone", "</s>"]
    labels = batch["labels"][0]
    placeholder = torch.isin(batch["input_ids"][0], torch.tensor([processor.video_token_id, processor.audio_token_id]))
    assert placeholder.sum() == model.config.num_video_tokens + model.config.num_audio_tokens
    assert (labels[placeholder] == IGNORE).all()
    assert (labels[labels != IGNORE] == batch["input_ids"][0][labels != IGNORE]).all()


def test_collator_mixes_modalities_per_example_and_pads_right(clips):
    _, processor = make()
    rows = kind_rows(clips)
    mixed = [rows["audio_visual"][0], rows["visual"][1], rows["audio"][2]]
    batch = AVLlmDataCollator(processor)(mixed)
    assert row_type_indices(batch["mm_token_type_ids"]).tolist() == [3, 1, 2]  # audio_visual, visual, audio
    assert batch["pixel_values_videos"].shape[0] == 2 and batch["input_features"].shape[0] == 2
    assert (batch["attention_mask"][:, 0] == 1).all()
    assert ((batch["attention_mask"] == 0) == (batch["labels"] == IGNORE) & (batch["attention_mask"] == 0)).all()


def test_truncation_never_cuts_a_placeholder_run(clips):
    model, processor = make()
    row = av_rows(clips)[0]
    full = AVLlmDataCollator(processor)([row])["input_ids"].shape[1]
    cut = AVLlmDataCollator(processor, max_length=full - 2)([row])
    assert cut["input_ids"].shape[1] == full - 2
    with pytest.raises(SampleTooLongError, match="clip0"):
        AVLlmDataCollator(processor, max_length=5)([row])
    dropping = AVLlmDataCollator(processor, max_length=5, overflow="drop")
    with pytest.raises(BadSampleError, match="every sample"):
        dropping([row])
    assert dropping.dropped_too_long == 1


def test_bad_samples_error_names_the_sample_or_are_skipped_when_asked(clips, tmp_path):
    _, processor = make()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 50)
    bad = av_rows([broken])[0] | {"id": "broken-one"}
    good = av_rows(clips)[1]
    with pytest.raises(BadSampleError, match="broken-one.*broken.mp4"):
        AVLlmDataCollator(processor)([good, bad])
    skipping = AVLlmDataCollator(processor, skip_bad_samples=True)
    batch = skipping([good, bad])
    assert batch["input_ids"].shape[0] == 1 and skipping.skipped_bad == 1


def test_llava_format_converter():
    row = {
        "id": 7,
        "video": "v.mp4",
        "conversations": [{"from": "human", "value": "<video>\nwhat ?"}, {"from": "gpt", "value": "a tone"}],
    }
    converted = from_llava_format(row, media_root="/data")
    assert converted == {
        "id": "7",
        "messages": [
            {
                "role": "user",
                "content": [
                    # a Valley / VideoInstruct video row is visual-only unless the row (or its source) says otherwise
                    {"type": "video", "path": "/data/v.mp4", "use_audio": False},
                    {"type": "text", "text": "what ?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "a tone"}]},
        ],
    }

    def media(row, **kwargs):
        return [item for item in from_llava_format(row, **kwargs)["messages"][0]["content"] if item["type"] != "text"]

    assert media(row | {"use_audio": True}) == [{"type": "video", "path": "v.mp4", "use_audio": True}]
    assert media(row, use_audio=True) == [{"type": "video", "path": "v.mp4", "use_audio": True}]  # VideoLLaMA 2 AV
    assert media(row | {"use_audio": False}, use_audio=True)[0]["use_audio"] is False  # the row's word wins
    image, audio = {**row, "image": "i.png"}, {**row, "audio": "a.wav"}
    del image["video"], audio["video"]
    assert media(image) == [{"type": "image", "path": "i.png"}]  # LLaVA image rows stay image rows
    assert media(audio) == [{"type": "audio", "path": "a.wav"}]  # audio caption / AQA rows
    assert media({**row, "audio": "a.wav"}, use_audio=True) == [
        {"type": "video", "path": "v.mp4", "use_audio": False},
        {"type": "audio", "path": "a.wav"},
    ]


def test_mixed_modality_training_loss_falls_and_is_logged_per_modality(clips, tmp_path):
    model, processor = make()
    train = DataMixture([{"path": Dataset.from_list(rows)} for rows in kind_rows(clips).values()])
    trainer = AVLlmSFTTrainer(
        model=model,
        args=sft_config(tmp_path, max_steps=15, per_device_train_batch_size=3),
        train_dataset=train,
        processing_class=processor,
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3
    for entry in trainer.state.log_history:
        if "loss" in entry:  # every batch holds one row of each type
            assert {"loss_visual", "loss_audio", "loss_audio_visual"} <= set(entry), entry


def test_frozen_towers_stay_in_inference_mode(clips, tmp_path):
    model, processor = make()
    apply_stage(model, "pretrain")
    statistics = model.model.audio_tower.audio_encoder.batch_norm.running_mean.clone()
    trainer = AVLlmSFTTrainer(
        model=model,
        args=sft_config(tmp_path, max_steps=2),
        train_dataset=Dataset.from_list(av_rows(clips)),
        processing_class=processor,
    )
    trainer.train()
    assert torch.equal(model.model.audio_tower.audio_encoder.batch_norm.running_mean, statistics)
    model.train()
    assert not model.model.audio_tower.training and model.model.language_model.training
    apply_stage(model, "sft")
    model.model.audio_tower.requires_grad_(True)
    assert model.train().model.audio_tower.training


def test_stage_presets_freeze_the_right_parameters():
    model, _ = make()
    assert apply_stage(model, "pretrain") is None
    trainable = {name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"video_connector", "audio_projector"}
    apply_stage(model, "audio-pretrain")
    assert {name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad} == {"audio_projector"}
    apply_stage(model, "sft")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert not any("vision_tower" in name or "audio_tower" in name for name in trainable)
    assert any("language_model.layers" in name for name in trainable) and "lm_head.weight" in trainable
    assert stage_defaults("pretrain")["learning_rate"] == 2e-3 and stage_defaults("sft")["learning_rate"] == 2e-5


def test_videollama2_audio_stages_train_the_audio_tower_in_training_mode():
    """A2 (`audio-finetune`) trains the audio tower and its projector, A3 (`av-joint`) everything but the vision
    tower; a trained tower is in training mode under `model.train()` (BEATs' layerdrop), a frozen one stays in
    inference mode."""
    model, _ = make()

    def trainable():
        return {name.removeprefix("model.").split(".")[0] for name, p in model.named_parameters() if p.requires_grad}

    apply_stage(model, "audio-finetune")
    assert trainable() == {"audio_tower", "audio_projector"}
    model.train()
    assert model.model.audio_tower.training and not model.model.vision_tower.training
    apply_stage(model, "av-joint")
    assert trainable() == {"audio_tower", "audio_projector", "video_connector", "language_model", "lm_head"}
    assert model.train().model.audio_tower.training and not model.model.vision_tower.training
    apply_stage(model, "audio-pretrain")
    assert not model.train().model.audio_tower.training
    defaults = stage_defaults("audio-finetune")
    assert (defaults["learning_rate"], defaults["num_train_epochs"], defaults["adam_beta2"]) == (2e-5, 2, 0.999)


def test_lora_stage_adapts_only_llm_layers_saves_reloads_and_merges(clips, tmp_path):
    model, processor = make()
    peft_config = apply_stage(model, "lora", lora_r=4)
    train = Dataset.from_list(av_rows(clips))
    trainer = AVLlmSFTTrainer(
        model=model,
        args=sft_config(tmp_path, max_steps=3),
        train_dataset=train,
        processing_class=processor,
        peft_config=peft_config,
    )
    trainer.train()
    peft_model = trainer.model
    lora_modules = {name for name, _ in peft_model.named_modules() if name.endswith("lora_A")}
    assert lora_modules and all(".language_model.layers." in name for name in lora_modules)
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert all("lora_" in name or "modules_to_save" in name for name in trainable)
    assert any("video_connector" in name for name in trainable) and any(
        "audio_projector" in name for name in trainable
    )

    batch = AVLlmDataCollator(processor)(av_rows(clips)[:2])
    batch.pop("labels")
    peft_model.eval()
    expected = peft_model(**batch).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    fresh, _ = make()
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    torch.testing.assert_close(reloaded(**batch).logits, expected)
    merged = reloaded.merge_and_unload()
    torch.testing.assert_close(merged(**batch).logits, expected, rtol=1e-4, atol=1e-5)
    assert type(merged) is AVLlmForConditionalGeneration


def test_resume_from_checkpoint_reproduces_the_uninterrupted_loss(clips, tmp_path):
    train = Dataset.from_list(av_rows(clips) * 2)

    def run(output, resume=None, max_steps=6):
        model, processor = make()
        args = sft_config(
            tmp_path / output, max_steps=max_steps, per_device_train_batch_size=2, save_strategy="steps", save_steps=3
        )
        trainer = AVLlmSFTTrainer(model=model, args=args, train_dataset=train, processing_class=processor)
        trainer.train(resume_from_checkpoint=resume)
        return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}

    uninterrupted = run("full")
    resumed = run("full", resume=str(tmp_path / "full" / "out" / "checkpoint-3"))
    assert resumed[6] == pytest.approx(uninterrupted[6], rel=1e-5)
