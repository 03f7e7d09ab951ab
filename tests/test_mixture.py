"""Training data as a mixture of datasets whose rows keep their own modality: batch composition (MAT), views only when
named, per-dataset missing-audio policies, and the token limit of a row (its media + the text budget)."""

from collections import Counter

import pytest
import torch
import yaml
from datasets import Dataset
from media_fixtures import write_video
from PIL import Image
from trl import SFTConfig

from transformers_avllm import AVLlmForConditionalGeneration
from transformers_avllm.models.avllm import row_type_indices
from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_config
from transformers_avllm.training import (
    AVLlmDataCollator,
    AVLlmSFTTrainer,
    BadSampleError,
    DataMixture,
    DatasetFormatError,
    SampleTooLongError,
    TokenBudgetError,
    check_token_budget,
    mix_datasets,
)
from transformers_avllm.training.train import train

WORDS = "what do you see hear ? a red square tone the".split()
ROW_TYPE_NAMES = ("text", "visual", "audio", "audio_visual")


def chat(row_id: str, item: dict, answer: str = "a red square", question: str = "what do you see ?") -> dict:
    return {
        "id": row_id,
        "messages": [
            {"role": "user", "content": [item, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
    }


def rows(kind: str, count: int, path: str = "clip.mp4") -> list[dict]:
    item = {
        "visual": {"type": "video", "path": path, "use_audio": False},
        "audio": {"type": "audio", "path": path},
        "audio_visual": {"type": "video", "path": path, "use_audio": True},
    }[kind]
    return [chat(f"{kind}-{index}", item) for index in range(count)]


@pytest.fixture(scope="module")
def model_and_processor():
    torch.manual_seed(0)
    config = tiny_config()
    return AVLlmForConditionalGeneration(config), build_processor(config, build_tokenizer([" ".join(WORDS)]))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixture")
    Image.new("RGB", (16, 16), (200, 20, 20)).save(folder / "red.png")
    return {
        "image": str(folder / "red.png"),
        "av": str(write_video(folder / "av.mp4", seconds=1, fps=8, audio=("aac", 440.0))),
        "silent": str(write_video(folder / "silent.mp4", seconds=1, fps=8)),
    }


def test_batches_hold_each_dataset_in_proportion_to_its_weight_over_many_batches(model_and_processor, tmp_path):
    model, processor = model_and_processor
    # 30 visual-only rows once, 60 audio rows at weight 0.5, 10 audio-visual rows at weight 2: 30 + 30 + 20 draws
    mixture = DataMixture(
        [
            {"path": Dataset.from_list(rows("visual", 30))},
            {"path": Dataset.from_list(rows("audio", 60)), "weight": 0.5},
            {"path": Dataset.from_list(rows("audio_visual", 10)), "weight": 2.0},
        ]
    )
    assert mixture.sizes == [30, 60, 10] and mixture.draws == [30, 30, 20] and mixture.shares == [0.375, 0.375, 0.25]
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, use_cpu=True, report_to=[], seed=3)
    trainer = AVLlmSFTTrainer(model=model, args=args, train_dataset=mixture, processing_class=processor)
    loader = trainer.get_train_dataloader()  # the Trainer's own loader: its batches are what training sees
    assert len(loader) == 10
    sources = mixture.rows["source"]
    total, epochs = Counter(), []
    for epoch in range(6):
        loader.batch_sampler.sampler.set_epoch(epoch)
        indices = [index for batch in loader.batch_sampler for index in batch]
        epochs.append(indices)
        for batch in loader.batch_sampler:
            counts = Counter(sources[index] for index in batch)
            total.update(counts)
            for source, expected in enumerate((3, 3, 2)):  # each dataset's share of a batch of 8, up to one row
                assert abs(counts[source] - expected) <= 1, (epoch, counts)
        per_row = Counter(indices)
        assert all(per_row[index] == 1 for index in range(30))  # weight 1: every visual row once an epoch
        assert sum(per_row[index] for index in range(30, 90)) == 30 and max(per_row[i] for i in range(30, 90)) == 1
        assert all(per_row[index] == 2 for index in range(90, 100))  # weight 2: every audio-visual row twice
    assert total == {0: 180, 1: 180, 2: 120}  # 6 epochs of 80 draws: 37.5 %, 37.5 %, 25 %
    assert epochs[0] != epochs[1]  # reshuffled each epoch


def test_one_dataset_of_weight_one_is_read_as_the_trainer_samples_it():
    single = mix_datasets([{"path": Dataset.from_list(rows("visual", 3))}])
    assert isinstance(single, Dataset) and single["id"] == ["visual-0", "visual-1", "visual-2"]
    assert isinstance(mix_datasets([{"path": Dataset.from_list(rows("visual", 3)), "weight": 2}]), DataMixture)


def test_rows_keep_their_own_modality_and_a_visual_only_row_never_gets_audio(model_and_processor, clips):
    _, processor = model_and_processor
    mixture = DataMixture(
        [{"path": Dataset.from_list(rows(kind, 2, clips["av"]))} for kind in ("visual", "audio", "audio_visual")]
        + [{"path": Dataset.from_list([chat("image", {"type": "image", "path": clips["image"]})])}]
    )
    videos = [row["messages"][0]["content"][0] for row in mixture.rows if row["id"].startswith("visual")]
    assert [item["use_audio"] for item in videos] == [False, False]
    batch = AVLlmDataCollator(processor)([mixture[0], mixture[2], mixture[4], mixture[6]])
    # a visual-only video whose file has an audio track: no audio features, no audio placeholders
    assert row_type_indices(batch["mm_token_type_ids"]).tolist() == [1, 2, 3, 1]
    assert batch["input_features"].shape[0] == 2 and batch["pixel_values_videos"].shape[0] == 2
    assert batch["pixel_values"].shape[0] == 1


def test_views_change_modality_only_when_named_and_refuse_what_they_cannot_show(clips):
    audio_visual = Dataset.from_list(rows("audio_visual", 2, clips["av"]))
    unchanged = DataMixture([{"path": audio_visual}, {"path": audio_visual, "view": "visual"}])
    items = [row["messages"][0]["content"][0] for row in unchanged.rows]
    assert [(item["type"], item["use_audio"]) for item in items] == [("video", True)] * 2 + [("video", False)] * 2
    as_audio = DataMixture([{"path": audio_visual, "view": "audio", "weight": 2}]).rows[0]["messages"][0]
    assert as_audio["content"][0]["type"] == "audio"
    images = Dataset.from_list([chat("picture-7", {"type": "image", "path": "x.png"})])
    with pytest.raises(DatasetFormatError, match="picture-7.*image item cannot be shown as view 'audio'"):
        DataMixture([{"path": images, "view": "audio"}])
    with pytest.raises(DatasetFormatError, match="view must be one of"):
        DataMixture([{"path": images, "view": "muted"}])


def test_missing_audio_is_chosen_per_dataset_and_for_the_recipe(model_and_processor, clips):
    _, processor = model_and_processor
    silent = Dataset.from_list(rows("audio_visual", 1, clips["silent"]))
    mixture = DataMixture(
        [
            {"path": silent},  # the recipe's policy
            {"path": silent, "missing_audio": "visual_only"},
            {"path": silent, "missing_audio": "silence"},
        ],
        missing_audio="error",
    )
    collator = AVLlmDataCollator(processor)
    with pytest.raises(BadSampleError, match="audio_visual-0.*no audio track"):
        collator([mixture[0]])
    batch = collator([mixture[1], mixture[2]])
    assert row_type_indices(batch["mm_token_type_ids"]).tolist() == [1, 3]  # visual only; audio-visual, silent
    assert batch["input_features"].shape[0] == 1  # the silent one
    lenient = DataMixture([{"path": silent}], missing_audio="visual_only")
    assert row_type_indices(collator([lenient[0]])["mm_token_type_ids"]).tolist() == [1]


def test_a_row_is_limited_to_its_media_tokens_plus_the_text_budget(model_and_processor, clips):
    model, processor = model_and_processor
    config = model.config
    long_answer = " ".join(["a red square"] * 20)
    row = chat("long", {"type": "video", "path": clips["av"], "use_audio": True}, answer=long_answer)
    media = config.num_video_tokens + config.num_audio_tokens
    full = AVLlmDataCollator(processor)([row])["input_ids"].shape[1]
    assert full > media + 20
    cut = AVLlmDataCollator(processor, text_budget=20)([row])
    assert cut["input_ids"].shape[1] == media + 20  # its own media, whatever they are, plus 20 tokens of text
    short = chat("short", {"type": "audio", "path": clips["av"]})
    assert AVLlmDataCollator(processor, text_budget=20)([short])["input_ids"].shape[1] < config.num_audio_tokens + 20
    with pytest.raises(SampleTooLongError, match="long.*cutting at 12 .*text_budget=20, max_length=12"):
        AVLlmDataCollator(processor, text_budget=20, max_length=12)([row])


def test_media_beyond_the_budget_fail_at_start_up_with_the_numbers(model_and_processor, tmp_path):
    model, processor = model_and_processor
    config = model.config
    media = check_token_budget(config, text_budget=64, max_length=None)
    assert media == {
        "image": config.num_image_tokens,
        "visual": config.num_video_tokens,
        "audio": config.num_audio_tokens,
        "audio_visual": config.num_video_tokens + config.num_audio_tokens,
    }
    largest = media["audio_visual"]
    with pytest.raises(TokenBudgetError, match=f"audio_visual {largest}; text_budget=None, max_length={largest}"):
        check_token_budget(config, text_budget=None, max_length=largest)
    context = config.text_config.max_position_embeddings
    with pytest.raises(TokenBudgetError, match=f"{largest} media tokens \\+ text_budget {context} exceed"):
        check_token_budget(config, text_budget=context, max_length=None)

    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    recipe = {
        "model_name_or_path": str(tmp_path / "model"),
        "datasets": [{"path": str(tmp_path / "never-read.jsonl")}],
        "output_dir": str(tmp_path / "out"),
        "max_length": largest - 1,
        "use_cpu": True,
        "report_to": [],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit, match=f"media alone reach max_length.*audio_visual {largest}"):
        train(["--config", str(tmp_path / "recipe.yaml")])
