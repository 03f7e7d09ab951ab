"""`avllm data prepare`: media decoded once into parquet shards, read by the collator without decoding, giving the same
model inputs bit for bit; resumable; a changed setting is refused, not reused."""

import json
import os

import numpy as np
import pytest
import torch
from datasets import load_dataset
from media_fixtures import write_audio, write_video
from PIL import Image

from transformers_avllm.cli import main
from transformers_avllm.data.prepare import PreparedDataMismatchError, prepare_dataset
from transformers_avllm.models.avllm import processing_avllm, split_audio_segments
from transformers_avllm.models.avllm.media_avllm import load_audio
from transformers_avllm.models.avllm.video_avllm import load_video
from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_config
from transformers_avllm.training import AVLlmDataCollator, BadSampleError

WORDS = "what is it ? a red square and a tone".split()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / "pic.png")
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    return {
        "av": write_video(folder / "av.mp4", seconds=2, fps=10, size=(48, 80), audio=("aac", 440.0), noise=20),
        "av2": write_video(folder / "av2.mp4", seconds=1, fps=12, size=(60, 44), audio=("aac", 880.0), start_index=9),
        "silent": write_video(folder / "silent.mkv", seconds=2, fps=10),
        "tone": write_audio(folder / "tone.wav", seconds=1.5, tone_hz=660.0, rate=16000),
        "pic": folder / "pic.png",
        "broken": folder / "broken.mp4",
    }


def row(sample_id, *items, answer="a red square"):
    content = [*items, {"type": "text", "text": "what is it ?"}]
    return {
        "id": sample_id,
        "messages": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
    }


def rows_for(media):
    video = {"type": "video", "path": str(media["av"]), "use_audio": True}
    return [
        row("av", video),
        row("visual", {**video, "use_audio": False}),
        row("two", {"type": "video", "path": str(media["av2"])}, {"type": "audio", "path": str(media["tone"])}),
        row("audio-of-video", {"type": "audio", "path": str(media["av"])}),
        row("image", {"type": "image", "path": str(media["pic"])}),
        row("silent", {"type": "video", "path": str(media["silent"]), "use_audio": False}),
    ]


def make_processor(vision="clip", audio="clap", **kwargs):
    config = tiny_config(vision=vision, audio=audio, **kwargs)
    return build_processor(config, build_tokenizer([" ".join(WORDS)]))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def prepared_rows(folder):
    shards = sorted(str(path) for path in folder.glob("shard-*.parquet"))
    return list(load_dataset("parquet", data_files=shards, split="train", streaming=True))


def assert_same_inputs(prepared, live):
    assert prepared.keys() == live.keys()
    for key in live:
        assert prepared[key].dtype == live[key].dtype and torch.equal(prepared[key], live[key]), key


@pytest.mark.parametrize("vision,audio", [("clip", "clap"), ("siglip", "whisper")])
def test_prepared_rows_give_the_live_collators_inputs_bit_for_bit(media, tmp_path, monkeypatch, vision, audio):
    processor = make_processor(vision, audio)
    rows = rows_for(media)
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    counts = prepare_dataset(str(data), processor, tmp_path / "out", shard_size=4)
    assert counts == {"rows": 6, "shards": 2, "prepared": 2, "kept": 0, "errors": 0}
    prepared = prepared_rows(tmp_path / "out")
    assert [r["id"] for r in prepared] == [r["id"] for r in rows]
    assert prepared[0]["prepared_media"][0]["frames_dtype"] == "uint8"  # frames stored after resize + crop
    collator = AVLlmDataCollator(processor)
    live = [collator.encode(live_row) for live_row in rows]
    live_batch = collator(rows)
    for name in ("sample_frames", "load_waveform", "load_picture", "probe_media"):  # prepared rows open no file
        monkeypatch.setattr(processing_avllm, name, lambda *args, name=name, **kwargs: pytest.fail(f"{name} called"))
    for live_inputs, prepared_row in zip(live, prepared, strict=True):
        assert_same_inputs(collator.encode(prepared_row), live_inputs)
    assert_same_inputs(collator(prepared), live_batch)  # a padded batch


def test_the_live_path_equals_the_image_processor_and_feature_extractor_called_directly(media):
    """The processor's frames and audio features are what transformers' preprocessors give for the decoded media."""
    processor = make_processor()
    inputs = processor(text="<AUD_VIS> what is it ?", videos=[str(media["av"])])
    frames = load_video(str(media["av"]), processor.num_frames).frames
    reference = processor.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
    assert torch.equal(inputs["pixel_values_videos"][0], reference)
    rate = processor.feature_extractor.sampling_rate
    segments = split_audio_segments(load_audio(str(media["av"]), rate), processor.num_audio_segments)
    features = processor.feature_extractor(segments, sampling_rate=rate, return_tensors="pt")["input_features"]
    assert torch.equal(inputs["input_features"][0], features)


def test_prepare_resumes_and_redoes_nothing_finished(media, tmp_path):
    processor = make_processor()
    data = write_jsonl(tmp_path / "train.jsonl", rows_for(media))
    out = tmp_path / "out"
    prepare_dataset(str(data), processor, out, shard_size=2, num_workers=2)
    shards = sorted(out.glob("shard-*.parquet"))
    assert len(shards) == 3
    stamps = {path: path.stat().st_mtime_ns for path in shards}
    shards[1].unlink()  # as if the run had stopped before writing it
    assert prepare_dataset(str(data), processor, out, shard_size=2, num_workers=2) == {
        "rows": 6,
        "shards": 3,
        "prepared": 1,
        "kept": 2,
        "errors": 0,
    }
    assert shards[0].stat().st_mtime_ns == stamps[shards[0]] and shards[2].stat().st_mtime_ns == stamps[shards[2]]
    assert shards[1].exists() and not list(out.glob("*.partial"))


def test_changed_settings_are_refused_or_prepared_again(media, tmp_path):
    processor = make_processor()
    data = write_jsonl(tmp_path / "train.jsonl", rows_for(media)[:2])
    prepare_dataset(str(data), processor, tmp_path / "out")
    prepared = prepared_rows(tmp_path / "out")
    for changed in (make_processor(num_frames=6), make_processor(num_audio_segments=3)):
        with pytest.raises(PreparedDataMismatchError, match="prepared with other settings"):
            AVLlmDataCollator(changed).encode(prepared[0])
        counts = prepare_dataset(str(data), changed, tmp_path / "out")  # the folder is prepared again, whole
        assert counts["prepared"] == counts["shards"] == 1 and counts["kept"] == 0
    with pytest.raises(PreparedDataMismatchError, match="not those it was prepared from"):
        moved = json.loads(json.dumps(prepared[0], default=lambda _: None))
        moved["messages"][0]["content"][0]["path"] = "elsewhere.mp4"
        AVLlmDataCollator(processor).encode({**prepared[0], "messages": moved["messages"]})


def test_media_that_cannot_be_decoded_is_a_bad_sample_of_the_prepared_data(media, tmp_path):
    processor = make_processor()
    rows = [row("broken", {"type": "video", "path": str(media["broken"])}), rows_for(media)[0]]
    counts = prepare_dataset(str(write_jsonl(tmp_path / "train.jsonl", rows)), processor, tmp_path / "out")
    assert counts["errors"] == 1
    prepared = prepared_rows(tmp_path / "out")
    with pytest.raises(BadSampleError, match="'broken'.*could not be prepared.*broken.mp4"):
        AVLlmDataCollator(processor)(prepared)
    skipping = AVLlmDataCollator(processor, skip_bad_samples=True)
    assert skipping(prepared)["input_ids"].shape[0] == 1 and skipping.skipped_bad == 1


def test_cli_prepares_with_a_saved_processor(media, tmp_path, capsys):
    processor = make_processor()
    processor.save_pretrained(tmp_path / "model")
    data = write_jsonl(tmp_path / "train.jsonl", rows_for(media)[:3])
    argv = ["data", "prepare", "--data", str(data), "--processor", str(tmp_path / "model")]
    main([*argv, "--output", str(tmp_path / "out"), "--workers", "1"])
    assert "3 rows in 1 shards" in capsys.readouterr().out
    prepared = prepared_rows(tmp_path / "out")
    collator = AVLlmDataCollator(processor)
    assert_same_inputs(collator(prepared), collator(rows_for(media)[:3]))
    assert os.path.exists(tmp_path / "out" / "prepared.json")
