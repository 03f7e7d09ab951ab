"""The tower-output cache: stored connector inputs in place of decoding and towers, equal to the live towers' within
1e-6, and invalidated by a changed tower or setting."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from media_fixtures import write_audio, write_video
from trl import SFTConfig

from transformers_avllm import AVLlmForConditionalGeneration
from transformers_avllm.cli import main
from transformers_avllm.data.prepare import prepare_dataset
from transformers_avllm.models.avllm import AVLlmProcessor
from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_config
from transformers_avllm.training import (
    AVLlmDataCollator,
    AVLlmSFTTrainer,
    TowerCache,
    TowerCacheMissError,
    apply_stage,
)

WORDS = "what is it ? a red square and a tone".split()


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    clips = [
        write_video(folder / f"clip{i}.mp4", seconds=1, fps=8, audio=("aac", 300.0 + 200 * i), start_index=7 * i)
        for i in range(3)
    ]
    tone = write_audio(folder / "tone.wav", seconds=1.0, tone_hz=660.0, rate=16000)

    def row(sample_id, *items):
        content = [*items, {"type": "text", "text": "what is it ?"}]
        answer = [{"type": "text", "text": "a red square and a tone"}]
        return {
            "id": sample_id,
            "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": answer}],
        }

    return [
        row("av0", {"type": "video", "path": str(clips[0])}),
        row("visual1", {"type": "video", "path": str(clips[1]), "use_audio": False}),
        row("two", {"type": "video", "path": str(clips[2])}, {"type": "audio", "path": str(tone)}),
        row("audio-of-clip0", {"type": "audio", "path": str(clips[0])}),
    ]


def make(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = tiny_config(**kwargs)
    model = AVLlmForConditionalGeneration(config).eval()
    return model, build_processor(config, build_tokenizer([" ".join(WORDS)]))


def test_cached_connector_inputs_equal_the_live_towers(rows, tmp_path):
    model, processor = make()
    live = AVLlmDataCollator(processor)
    cache = TowerCache(tmp_path / "cache", model, processor)
    # 3 videos and 3 sounds: the last row uses clip0's audio track again
    assert cache.build(model, live, rows, batch_size=3) == {"stored": 6, "kept": 1, "skipped": 0}
    assert cache.build(model, live, rows) == {"stored": 0, "kept": 7, "skipped": 0}
    cached = AVLlmDataCollator(processor, tower_cache=cache)
    cached_batch, live_batch = cached(rows), live(rows)
    assert not {"pixel_values_videos", "input_features"} & cached_batch.keys()
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "labels"):
        assert torch.equal(cached_batch[key], live_batch[key])
    with torch.no_grad():
        given = cached_batch["mm_encoder_outputs"]
        video = model.get_video_features(live_batch["pixel_values_videos"]).connector_inputs
        audio = model.get_audio_features(live_batch["input_features"]).connector_inputs
        stored_inputs = given["video"].connector_inputs + given["audio"].connector_inputs
        for stored, computed in zip(stored_inputs, video + audio, strict=True):
            torch.testing.assert_close(stored, computed, rtol=0, atol=1e-6)
        with_cache = model(**cached_batch)
        without = model(**live_batch)
    torch.testing.assert_close(with_cache.logits, without.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(with_cache.loss, without.loss, rtol=0, atol=1e-6)


def test_prepared_rows_fill_and_read_the_same_entries(rows, tmp_path):
    model, processor = make()
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    prepare_dataset(str(data), processor, tmp_path / "prepared", num_workers=1)
    prepared = list(Dataset.from_parquet(str(tmp_path / "prepared" / "shard-00000.parquet")))
    cache = TowerCache(tmp_path / "cache", model, processor)
    assert cache.build(model, AVLlmDataCollator(processor), rows)["stored"] == 6
    assert cache.build(model, AVLlmDataCollator(processor), prepared) == {"stored": 0, "kept": 7, "skipped": 0}
    cached = AVLlmDataCollator(processor, tower_cache=cache)
    assert torch.equal(cached(prepared)["input_ids"], cached(rows)["input_ids"])


def test_a_changed_tower_or_setting_invalidates_the_cache(rows, tmp_path):
    model, processor = make()
    TowerCache(tmp_path / "cache", model, processor).build(model, AVLlmDataCollator(processor), rows)
    with torch.no_grad():
        next(model.model.audio_tower.parameters())[0] += 1e-3  # one weight of the frozen audio tower moves
    cache = TowerCache(tmp_path / "cache", model, processor)
    collator = AVLlmDataCollator(processor, tower_cache=cache)
    collator([rows[1]])  # frames only: the vision entries still hold
    with pytest.raises(TowerCacheMissError, match="'av0': the audio of .*clip0.mp4 is not in the tower cache"):
        collator([rows[0]])
    _, other_frames = make(num_frames=6)
    stale = AVLlmDataCollator(other_frames, tower_cache=TowerCache(tmp_path / "cache", model, other_frames))
    with pytest.raises(TowerCacheMissError, match="'visual1': the video of .*clip1.mp4"):
        stale([rows[1]])


def test_stage_one_trains_from_the_cache(rows, tmp_path):
    model, processor = make()
    apply_stage(model, "pretrain")
    cache = TowerCache(tmp_path / "cache", model, processor)
    cache.build(model, AVLlmDataCollator(processor), rows)
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        max_steps=4,
        learning_rate=5e-3,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        activation_checkpointing=False,
        dataloader_num_workers=1,
    )
    collator = AVLlmDataCollator(processor, tower_cache=cache)
    trainer = AVLlmSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
        data_collator=collator,
    )
    before = model.model.video_connector.temporal_projector.weight.clone()
    trainer.train()
    assert not torch.equal(before, model.model.video_connector.temporal_projector.weight)


def test_avllm_train_builds_the_recipes_tower_cache_once_and_trains_without_decoding(rows, tmp_path, monkeypatch):
    """`tower_cache: DIR` in a recipe: the main process decodes each media item once to fill the cache, the training
    steps decode nothing; a second run finds every entry; a stage that trains a tower is refused."""
    model, processor = make()
    model.save_pretrained(tmp_path / "start")
    processor.save_pretrained(tmp_path / "start")
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    recipe = {
        "stage": "pretrain",
        "model_name_or_path": str(tmp_path / "start"),
        "dataset_name": str(tmp_path / "train.jsonl"),
        "tower_cache": str(tmp_path / "cache"),
        "per_device_train_batch_size": 2,
        "max_steps": 4,
        "use_cpu": True,
        "bf16": False,
        "report_to": [],
        "save_strategy": "no",
        "activation_checkpointing": False,
        "dataloader_num_workers": 0,
    }
    decoded = []
    prepare_media = AVLlmProcessor.prepare_media

    def counting_prepare_media(self, kind, source, *args, **kwargs):
        decoded.append(source)
        return prepare_media(self, kind, source, *args, **kwargs)

    monkeypatch.setattr(AVLlmProcessor, "prepare_media", counting_prepare_media)

    def run(output: str, **changes):
        run_recipe = {**recipe, "output_dir": str(tmp_path / output), **changes}
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(run_recipe))
        return main(["train", "--config", str(tmp_path / "recipe.yaml")])

    run("first")
    # each media file decoded once, by the cache build (the clip whose sound a later row uses is found stored)
    assert sorted(Path(source).name for source in decoded) == ["clip0.mp4", "clip1.mp4", "clip2.mp4", "tone.wav"]
    entries = sorted((tmp_path / "cache").glob("*/*.safetensors"))
    assert len(entries) == 6  # two clips' frames and sound, a third clip's frames, a tone
    trained = AVLlmForConditionalGeneration.from_pretrained(tmp_path / "first")
    assert not torch.equal(
        trained.model.video_connector.temporal_projector.weight, model.model.video_connector.temporal_projector.weight
    )
    decoded.clear()
    run("second")
    assert decoded == [] and sorted((tmp_path / "cache").glob("*/*.safetensors")) == entries
    with pytest.raises(SystemExit, match="trains the audio tower"):
        run("third", stage="audio-finetune")
