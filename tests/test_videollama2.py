"""`avllm convert videollama2` against the reference implementation: a tiny VideoLLaMA2.1-AV built, run and saved by
DAMO-NLP-SG/VideoLLaMA2's own code (tests/fixtures/make_videollama2_av.py; Qwen2 + SigLIP + `stc_connector_v35` +
mlp2x_gelu + BEATs) is converted, and the converted model must give the reference's logits (fp32, 1e-4) on the
reference's own inputs, and on inputs our processor builds from the same media. BEATs and the STC connector alone are
checked in test_beats.py and test_stc_reference.py."""

import contextlib
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from media_fixtures import write_audio, write_video
from safetensors.torch import load_file, save_file
from test_export import INTERPRETERS, run_clean_process
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, SiglipVisionConfig, SiglipVisionModel

import transformers_avllm.conversion.videollama2 as videollama2
from transformers_avllm.cli import main
from transformers_avllm.conversion.videollama2 import VideoLLaMA2ConversionError, avllm_key, convert_videollama2
from transformers_avllm.export import check_export_folder
from transformers_avllm.models.avllm import (
    AVLlmBeatsConfig,
    AVLlmBeatsFeatureExtractor,
    AVLlmForConditionalGeneration,
    sample_audio_clips,
)
from transformers_avllm.models.avllm.beats_avllm import BEATS_FBANK_MEAN, BEATS_FBANK_STD
from transformers_avllm.models.avllm.media_avllm import audio_clip_bounds
from transformers_avllm.training.collator import AVLlmDataCollator

FIXTURES = Path(__file__).parent / "fixtures" / "videollama2_av"
CHECKPOINT = FIXTURES / "model"
# The fixture's BEATs is tiny (not VideoLLaMA 2's default tower) and takes 0.5 s clips: 48 fbank frames, 24 tokens.
TINY_BEATS = ["--beats-config", str(FIXTURES / "beats_config.json"), "--audio-seconds", "0.5"]
AUDIO_PARTS = ("model.audio_tower.", "model.mm_projector_a.")  # keys of a VideoLLaMA 2 AV checkpoint's audio branch
REFERENCE_VOCAB = 29  # the reference tokenizer; the converted one adds the 3 modality tokens and 3 placeholders
VIDEO_TOKENS, AUDIO_TOKENS = 8, 24  # 2 x 2 x 2 STC tokens of 4 frames of 5 x 5 patches; 3 x 8 BEATs patches
# The fixture's samples (audio-visual, video only, audio only), as make_videollama2_av.py asks them.
TURNS = [
    ("What makes the sound ?", "A dog barks ."),
    ("What colour is the square ?", "It is red ."),
    ("Describe the sound .", "A bird sings twice ."),
]


@pytest.fixture(scope="module")
def reference():
    return {
        "io": load_file(FIXTURES / "model_io.safetensors"),
        "facts": json.loads((FIXTURES / "preprocessing.json").read_text()),
        "samples": load_file(FIXTURES / "beats_io.safetensors")["waveform_int16"].numpy(),
    }


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videollama2") / "converted"
    argv = ["--checkpoint", str(CHECKPOINT), "--output", str(folder), *TINY_BEATS, "--base-model", "org/tiny-vl2"]
    main(["convert", "videollama2", *argv])
    return folder


@pytest.fixture(scope="module")
def model(converted):
    return AutoModelForImageTextToText.from_pretrained(converted).eval()


def normalised(fbank: torch.Tensor) -> torch.Tensor:
    """BEATs' normalisation of a raw fbank (the reference model normalises inside BEATs, ours in the extractor)."""
    return (fbank - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)


def reference_rows_in_our_layout(io: dict, config) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixture's `input_ids` / `labels` with each of the reference's negative placeholder ids replaced by our
    placeholder run: `<video>` of an audio-visual item -> [video][audio], of a video -> [video], `<audio>` ->
    [audio]; right-padded to the reference's expanded length."""
    runs = [
        [config.video_token_id] * VIDEO_TOKENS + [config.audio_token_id] * AUDIO_TOKENS,
        [config.video_token_id] * VIDEO_TOKENS,
        [config.audio_token_id] * AUDIO_TOKENS,
    ]
    width = io["expanded_attention_mask"].shape[1]
    input_ids, labels = [], []
    for row, run in enumerate(runs):
        ids, targets = [], []
        for token, label in zip(io["input_ids"][row].tolist(), io["labels"][row].tolist(), strict=True):
            ids += run if token < 0 else [token]
            targets += [-100] * len(run) if token < 0 else [label]
        input_ids.append(ids + [0] * (width - len(ids)))
        labels.append(targets + [-100] * (width - len(targets)))
    return torch.tensor(input_ids), torch.tensor(labels)


def spread(frames: np.ndarray) -> np.ndarray:
    """8 frames with `frames` (4) at 1, 3, 5, 7: where our midpoint sampler takes 4 of 8 (the reference used the 4
    frames as given; its sampling of a file picks other indices than ours, see docs/models.md)."""
    clip = np.zeros((8, *frames.shape[1:]), dtype=np.uint8)
    clip[1::2] = frames
    return clip


def write_lossless_clip(path: Path, frames: np.ndarray, samples: np.ndarray) -> str:
    """A video file whose frames (FFV1, RGB) and 16-bit 16 kHz audio track decode to exactly `frames` and
    `samples`, 8 frames per second."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=8)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        audio = container.add_stream("pcm_s16le", rate=16000)
        audio.layout = "mono"
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = index
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
        sound = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        sound.sample_rate, sound.pts = 16000, 0
        container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return str(path)


def conversations(items: list[dict]) -> list[list[dict]]:
    return [
        [
            {"role": "user", "content": [item, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
        for item, (question, answer) in zip(items, TURNS, strict=True)
    ]


# ---- the converted model against the reference -----------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_match_the_reference_on_its_recorded_inputs(reference, model, attn_implementation):
    """The reference's own pixels (padded to squares, as it trains) and fbanks, its token ids with our placeholder
    runs: the logits at every position the reference attends to, and the loss over its vocabulary."""
    io = reference["io"]
    input_ids, labels = reference_rows_in_our_layout(io, model.config)
    assert torch.equal(labels, io["expanded_labels"])
    model.set_attn_implementation(attn_implementation)
    with torch.no_grad():
        logits = model(
            input_ids=input_ids,
            attention_mask=io["expanded_attention_mask"].long(),
            pixel_values_videos=torch.stack([io["av_video"], io["video"]]),
            input_features=normalised(torch.cat([io["av_audio"], io["audio"]])).unsqueeze(1),
        ).logits[..., :REFERENCE_VOCAB]
    mask = io["expanded_attention_mask"]
    torch.testing.assert_close(logits[mask], io["logits"][mask], atol=1e-4, rtol=0)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
    torch.testing.assert_close(loss, io["loss"][0], atol=1e-5, rtol=0)


def test_processor_builds_the_reference_inputs_from_the_media(reference, converted, model, tmp_path):
    """The fixture's media through our processor and collator (a lossless video file with the frames and the 1 s
    track, the video-only frames, the audio-only waveform): the same prompts, token layout and labels, the same
    pixels (PIL backend, padded to squares as the fixture's inputs were), fbanks within 1e-5, and the reference's
    logits."""
    io, facts, samples = reference["io"], reference["facts"], reference["samples"]
    processor = AutoProcessor.from_pretrained(converted, backend="pil")
    processor.pad_to_square = True
    items = [
        {"type": "video", "path": write_lossless_clip(tmp_path / "av.mkv", spread(io["frames_av"].numpy()), samples)},
        {"type": "video", "video": spread(io["frames_video"].numpy()), "use_audio": False},
        {"type": "audio", "audio": samples[40 * 160 :].astype(np.float32) / 32768},  # the fbank's frames 40-87
    ]
    chats = conversations(items)
    prompts = [processor.apply_chat_template(chat[:1], add_generation_prompt=True) for chat in chats]
    modality_tokens = [("<video>", "<AUD_VIS>"), ("<video>", "<VIS>"), ("<audio>", "<AUD>")]
    assert prompts == [prompt.replace(*pair) for prompt, pair in zip(facts["prompts"], modality_tokens, strict=True)]

    batch = AVLlmDataCollator(processor)([{"id": str(index), "messages": chat} for index, chat in enumerate(chats)])
    width = batch["input_ids"].shape[1]  # the reference pads one position further (its rows keep their pad token)
    assert not io["expanded_attention_mask"][:, width:].any()
    expected_ids, expected_labels = reference_rows_in_our_layout(io, model.config)
    mask = io["expanded_attention_mask"][:, :width]
    assert torch.equal(batch["attention_mask"].bool(), mask)
    assert torch.equal(batch["input_ids"][mask], expected_ids[:, :width][mask])
    assert torch.equal(batch["labels"], expected_labels[:, :width])
    assert torch.equal(batch["pixel_values_videos"], torch.stack([io["av_video"], io["video"]]))
    fbanks = normalised(torch.cat([io["av_audio"], io["audio"]]))
    torch.testing.assert_close(batch["input_features"][:, 0], fbanks, atol=1e-5, rtol=0)
    with torch.no_grad():
        logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits
    torch.testing.assert_close(logits[..., :REFERENCE_VOCAB][mask], io["logits"][:, :width][mask], atol=1e-4, rtol=0)


def test_default_processor_is_the_reference_inference_preprocessing(reference, converted):
    """As written, the processor does what VideoLLaMA 2's inference does: frames not padded (the PIL backend gives the
    reference's pixels exactly, the default torchvision one within one grey level), 8 x 2 s clips of a video's track,
    silence for a video without one, 0.5 s windows here (30 s for the released model)."""
    io = reference["io"]
    frames = list(io["frames_av"].numpy())
    for backend, tolerance in (("pil", 0.0), (None, 2 / 255 + 1e-6)):  # one 8-bit level, times 1 / std = 2
        processor = AutoProcessor.from_pretrained(converted, **({"backend": backend} if backend else {}))
        assert not processor.pad_to_square
        pixels = processor._normalized_frames(processor._resized_frames(frames))
        torch.testing.assert_close(pixels, io["av_video_unpadded"], atol=tolerance, rtol=0)
    assert (processor.audio_sampling, processor.missing_audio, processor.num_frames) == ("videollama2", "silence", 4)
    assert isinstance(processor.feature_extractor, AVLlmBeatsFeatureExtractor)
    assert processor.feature_extractor.max_length == 48
    assert (processor.num_video_tokens, processor.num_image_tokens, processor.num_audio_tokens) == (8, 8, 24)


def test_audio_clips_of_a_video_are_videollama2s(reference):
    """The clip bounds of pytorchvideo's `ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=8)` that the
    fixture recorded, to the sample; a track of 2 s or less comes out 8 times."""
    for duration, bounds in reference["facts"]["audio_clip_samples"].items():
        assert [list(pair) for pair in audio_clip_bounds(float(duration), 16000)] == bounds
    track = np.arange(16000, dtype=np.float32)
    np.testing.assert_array_equal(sample_audio_clips(track, 16000), np.tile(track, 8))
    ten_seconds = np.arange(160000, dtype=np.float32)
    clips = sample_audio_clips(ten_seconds, 16000).reshape(8, 32000)
    np.testing.assert_array_equal(clips[:, 0], np.arange(8) * 16000)  # starts k * (10 - 2) / 8 s


def test_video_without_audio_track_is_heard_as_silence(converted, tmp_path):
    """VideoLLaMA 2 gives a video whose audio cannot be read 30 s of zeros; the converted processor renders it as
    audio-visual with the fbank of silence."""
    processor = AutoProcessor.from_pretrained(converted)
    silent = write_video(tmp_path / "silent.mp4", seconds=1, fps=8, size=(32, 32))
    chat = [{"role": "user", "content": [{"type": "video", "path": str(silent)}, {"type": "text", "text": "What ?"}]}]
    assert "<AUD_VIS>" in processor.apply_chat_template(chat)
    inputs = processor.apply_chat_template(chat, tokenize=True, return_dict=True)
    silence = processor.feature_extractor(np.zeros(8000, dtype=np.float32), sampling_rate=16000, return_tensors="pt")
    torch.testing.assert_close(inputs["input_features"][:, 0], silence["input_values"])
    assert int((inputs["input_ids"] == processor.audio_token_id).sum()) == AUDIO_TOKENS


def test_an_image_matches_the_reference_which_repeats_it_to_num_frames(model):
    """VideoLLaMA 2 expands an image to `num_frames` frames before its tower and the STC connector (`frames_per_image`
    here): an image asked beside a video gives the reference's logits, and its features are those of the video of
    4 copies of it."""
    io = load_file(FIXTURES / "image_io.safetensors")
    config = model.config
    runs = {-200: [config.image_token_id] * VIDEO_TOKENS, -201: [config.video_token_id] * VIDEO_TOKENS}
    input_ids = torch.tensor(
        [sum((runs.get(token, [token]) for token in row), []) for row in io["input_ids"].tolist()]
    )
    with torch.no_grad():
        logits = model(
            input_ids=input_ids, pixel_values=io["image"][None], pixel_values_videos=io["video"][None]
        ).logits[..., :REFERENCE_VOCAB]
        as_image = model.get_image_features(io["image"][None]).pooler_output
        as_video = model.get_video_features(io["image"][None, None].expand(-1, 4, -1, -1, -1)).pooler_output
    assert config.num_image_tokens == VIDEO_TOKENS and logits.shape == io["logits"].shape
    torch.testing.assert_close(logits, io["logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(as_image, as_video)


# ---- the converted folder ---------------------------------------------------------------------------------------


def test_folder_loads_with_the_auto_classes_and_names_its_source(converted, model):
    assert type(model) is AVLlmForConditionalGeneration
    assert isinstance(AutoConfig.from_pretrained(converted).audio_config, AVLlmBeatsConfig)
    check_export_folder(converted)
    card = ModelCard.load(converted / "README.md")
    assert card.data.base_model == ["org/tiny-vl2"]
    assert "## Converted from VideoLLaMA 2" in card.text and "8cedfbda23e779246112cb963416b95415448a91" in card.text
    special = json.loads((converted / "tokenizer_config.json").read_text())["extra_special_tokens"]
    assert special == ["<|im_start|>", "<|im_end|>", "<VIS>", "<AUD>", "<AUD_VIS>", "<image>", "<video>", "<audio>"]
    assert model.config.text_config.vocab_size == REFERENCE_VOCAB + 6


@pytest.mark.parametrize("interpreter", sorted(INTERPRETERS))
def test_folder_loads_with_remote_code_in_a_clean_process(converted, model, tmp_path, interpreter):
    """Where transformers_avllm is not installed: the BEATs config, model and feature extractor come from the folder's
    remote code, and generation gives our tokens."""
    if INTERPRETERS[interpreter] is None:
        pytest.skip("set AVLLM_FLOOR_PYTHON to a Python whose environment holds the window's floor (.ci/run does)")
    media = {
        "clip": write_video(tmp_path / "clip.mp4", seconds=1.5, fps=8, audio=("aac", 440.0)),
        "audio": write_audio(tmp_path / "tone.wav", seconds=1.0, tone_hz=660.0, rate=16000),
    }
    processor = AutoProcessor.from_pretrained(converted)
    question = "what is it ?"  # what tests/clean_process_generate.py asks
    chats = [
        [{"role": "user", "content": [{"type": kind, "path": str(media[name])}, {"type": "text", "text": question}]}]
        for kind, name in (("video", "clip"), ("audio", "audio"))
    ]
    inputs = processor.apply_chat_template(chats, add_generation_prompt=True, tokenize=True, return_dict=True)
    expected = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False).tolist()
    result = run_clean_process(converted, media, tmp_path, python=INTERPRETERS[interpreter])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["feature_extractor"] == "AVLlmBeatsFeatureExtractor"
    assert report["feature_extractor_module"].startswith("transformers_modules.")
    assert report["audio_config"] == "AVLlmBeatsConfig"
    assert report["tokens"] == expected


# ---- checkpoints the converter reads ----------------------------------------------------------------------------


def checkpoint_copy(folder: Path, state_dict: dict, config_changes: dict | None = None) -> Path:
    """The fixture checkpoint's config (with `config_changes`; `None` removes an entry), tokenizer and vision tower
    folder in `folder`, with `state_dict` as its weights."""
    shutil.copytree(CHECKPOINT, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    if config_changes:
        config = {**json.loads((folder / "config.json").read_text()), **config_changes}
        (folder / "config.json").write_text(
            json.dumps({key: value for key, value in config.items() if value is not None})
        )
    save_file(state_dict, folder / "model.safetensors")
    return folder


def write_shards(folder: Path, state_dict: dict, num_shards: int, suffix: str) -> list[list[str]]:
    """`state_dict` as `num_shards` weight files with an index (safetensors or `.bin`); returns each shard's keys."""
    (folder / "model.safetensors").unlink(missing_ok=True)
    keys = sorted(state_dict)
    groups = [keys[index::num_shards] for index in range(num_shards)]
    prefix = "model" if suffix == ".safetensors" else "pytorch_model"
    weight_map = {}
    for index, group in enumerate(groups, start=1):
        name = f"{prefix}-{index:05d}-of-{num_shards:05d}{suffix}"
        tensors = {key: state_dict[key] for key in group}
        save_file(tensors, folder / name) if suffix == ".safetensors" else torch.save(tensors, folder / name)
        weight_map.update(dict.fromkeys(group, name))
    index_name = "model.safetensors.index.json" if suffix == ".safetensors" else "pytorch_model.bin.index.json"
    (folder / index_name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return groups


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_sharded_checkpoints_are_converted_shard_by_shard(converted, tmp_path, monkeypatch, suffix):
    """Three shards: each is opened alone, and each converted shard written holds exactly one source shard's weights
    (never the whole model), and the result equals the one-file conversion. The `.bin` checkpoint also lacks the
    vision tower's weights, which then come from the `mm_vision_tower` folder."""
    state_dict = load_file(CHECKPOINT / "model.safetensors")
    folder = checkpoint_copy(tmp_path / "checkpoint", state_dict)
    if suffix == ".bin":
        vision_prefix = "model.vision_tower.vision_tower.vision_model."
        vision = {
            key[len(vision_prefix) :]: state_dict.pop(key) for key in list(state_dict) if key.startswith(vision_prefix)
        }
        tower = SiglipVisionModel(SiglipVisionConfig.from_pretrained(folder / "tiny-siglip"))
        tower.load_state_dict(vision)
        tower.save_pretrained(folder / "tiny-siglip")
    groups = write_shards(folder, state_dict, 3, suffix)

    open_now, opened, written = [], [], []
    real_open_shard, real_save_file = videollama2.open_shard, videollama2.save_file

    @contextlib.contextmanager
    def open_shard(path):
        assert not open_now, f"{path.name} opened while {open_now} is open"
        open_now.append(path.name)
        opened.append(path.name)
        with real_open_shard(path) as shard:
            yield shard
        open_now.remove(path.name)

    monkeypatch.setattr(videollama2, "open_shard", open_shard)
    monkeypatch.setattr(
        videollama2,
        "save_file",
        lambda tensors, path, **kw: written.append(set(tensors)) or real_save_file(tensors, path, **kw),
    )
    out = convert_videollama2(folder, tmp_path / "out", beats_config=FIXTURES / "beats_config.json", audio_seconds=0.5)
    names = [f"{index:05d}-of-00003" for index in (1, 2, 3)]
    assert [name.split("-", 1)[1].split(".")[0] for name in opened] == 2 * names  # read to check, then to convert
    shard_keys = [{avllm_key(key) for key in group} - {None} for group in groups]
    assert written[:3] == shard_keys
    assert len(written) == 3 + (suffix == ".bin")  # + the vision tower's own weights
    ours, expected = load_file(out / "model.safetensors"), load_file(converted / "model.safetensors")
    assert ours.keys() == expected.keys()
    assert all(torch.equal(ours[key], expected[key]) for key in expected)


def test_beats_is_added_to_a_video_only_checkpoint(converted, tmp_path):
    """VideoLLaMA 2's A1 starting point: a video-only checkpoint (here the fixture without its audio parts) plus a
    Microsoft-format BEATs checkpoint (`{"cfg", "model"}`) gives a model whose audio tower is that BEATs, with its
    config, and whose audio projector is new; the rest is the checkpoint's. Without it, a video-only model."""
    state_dict = load_file(CHECKPOINT / "model.safetensors")
    video_only = {key: value for key, value in state_dict.items() if not key.startswith(AUDIO_PARTS)}
    audio_settings = ("mm_audio_tower", "mm_hidden_size_a", "hidden_size_a", "mm_projector_a_type")
    folder = checkpoint_copy(tmp_path / "checkpoint", video_only, dict.fromkeys(audio_settings))
    beats = tmp_path / "BEATs_tiny.pt"
    reference_beats = {"cfg": json.loads((FIXTURES / "beats_config.json").read_text())}
    torch.save({**reference_beats, "model": load_file(FIXTURES / "beats.safetensors")}, beats)

    plain = AVLlmForConditionalGeneration.from_pretrained(convert_videollama2(folder, tmp_path / "video-only"))
    assert plain.config.audio_config is None and plain.model.audio_tower is None
    out = convert_videollama2(folder, tmp_path / "with-beats", audio_tower=beats, audio_seconds=0.5)
    model = AVLlmForConditionalGeneration.from_pretrained(out).eval()
    full = AVLlmForConditionalGeneration.from_pretrained(converted)
    assert model.config.audio_config.to_dict() == full.config.audio_config.to_dict()
    for name in ("audio_tower", "video_connector", "language_model", "vision_tower"):
        theirs = getattr(full.model, name).state_dict()
        assert all(torch.equal(value, theirs[key]) for key, value in getattr(model.model, name).state_dict().items())
    assert not torch.equal(
        model.model.audio_projector.projector.linear_1.weight, full.model.audio_projector.projector.linear_1.weight
    )
    assert "BEATs was added from `BEATs_tiny.pt`" in (out / "README.md").read_text()
    with pytest.raises(VideoLLaMA2ConversionError, match="has an audio tower already"):
        convert_videollama2(CHECKPOINT, tmp_path / "again", audio_tower=beats)


def test_unknown_missing_and_misshapen_keys_are_named(tmp_path):
    state_dict = load_file(CHECKPOINT / "model.safetensors")
    state_dict["model.mm_projector.extra.weight"] = torch.zeros(1)
    state_dict["model.audio_tower.encoder.quantizer.weight"] = torch.zeros(1)
    del state_dict["model.mm_projector_a.2.bias"]
    folder = checkpoint_copy(tmp_path / "checkpoint", state_dict, {"intermediate_size": 50})
    with pytest.raises(VideoLLaMA2ConversionError) as error:
        convert_videollama2(folder, tmp_path / "out", beats_config=FIXTURES / "beats_config.json")
    message = str(error.value)
    assert "2 unknown keys: model.audio_tower.encoder.quantizer.weight" in message
    assert "model.mm_projector.extra.weight" in message
    assert "1 missing keys: model.audio_projector.projector.linear_2.bias" in message
    assert "6 keys of another shape" in message and "model.layers.0.mlp.down_proj.weight (24, 48)" in message
    assert not (tmp_path / "out").exists()


def test_checkpoints_of_other_layouts_are_refused(tmp_path):
    state_dict = load_file(CHECKPOINT / "model.safetensors")
    cases = [
        ({"mm_projector_type": "spatial_pool"}, "mm_projector_type 'spatial_pool' is not supported"),
        ({"model_type": "llava"}, "model_type 'llava' is not one of"),
        ({"mm_projector_a_type": "qformer"}, "mm_projector_a_type 'qformer'"),
    ]
    for index, (changes, message) in enumerate(cases):
        folder = checkpoint_copy(tmp_path / f"checkpoint{index}", state_dict, changes)
        with pytest.raises(VideoLLaMA2ConversionError, match=message):
            convert_videollama2(folder, tmp_path / "out", beats_config=FIXTURES / "beats_config.json")
    with pytest.raises(VideoLLaMA2ConversionError, match="mm_hidden_size_a .8. is not the BEATs width .768."):
        convert_videollama2(CHECKPOINT, tmp_path / "out")  # the default (released) BEATs is not the fixture's
    pickled = checkpoint_copy(tmp_path / "pickled", {})
    (pickled / "model.safetensors").unlink()
    torch.save({"model.norm.weight": torch.ones(24), "code": Path("runs-on-load")}, pickled / "pytorch_model.bin")
    with pytest.raises(VideoLLaMA2ConversionError, match="pytorch_model.bin: holds more than tensors"):
        convert_videollama2(pickled, tmp_path / "out", beats_config=FIXTURES / "beats_config.json")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("")
    with pytest.raises(VideoLLaMA2ConversionError, match="exists and is not empty"):
        convert_videollama2(CHECKPOINT, tmp_path / "taken", beats_config=FIXTURES / "beats_config.json")


# ---- the package's commands on a converted folder ---------------------------------------------------------------


def test_avllm_eval_runs_on_a_converted_folder(converted, tmp_path, capsys):
    media = tmp_path / "videos"
    media.mkdir()
    write_video(media / "00000001.mp4", seconds=1, fps=8, size=(32, 32), audio=("aac", 440.0))
    write_video(media / "00000002.mp4", seconds=1, fps=8, size=(32, 32))  # no audio track
    questions = [
        {"video_id": f"0000000{index}", "question_id": index, "type": '["Audio-Visual", "Existential"]',
         "question_content": "Is this sound from the instrument in the video?", "templ_values": "[]", "anser": "yes"}
        for index in (1, 2)
    ]  # fmt: skip
    (tmp_path / "avqa-test.json").write_text(json.dumps(questions))
    output = tmp_path / "eval" / "music_avqa.jsonl"
    main(
        ["eval", "--model", str(converted), "--task", "music_avqa", "--data", str(tmp_path / "avqa-test.json"),
         "--media-root", str(media), "--output", str(output), "--batch-size", "2", "--max-new-tokens", "3"]
    )  # fmt: skip
    report = json.loads(output.with_suffix(".report.json").read_text())
    # evaluation renders a video without an audio track visual-only, whatever the processor's policy
    assert report["counts"]["by_modality"] == {"audio_visual": 1, "visual": 1}
    assert len(output.read_text().splitlines()) == 2 and "report:" in capsys.readouterr().out


def test_avllm_train_runs_on_a_converted_folder(converted, tmp_path):
    """VideoLLaMA 2's A2 stage (`audio-finetune`) on the converted folder: BEATs and its projector train, the LLM and
    the vision tower do not."""
    (tmp_path / "media").mkdir()
    rows = []
    for index in range(2):
        write_video(tmp_path / "media" / f"clip{index}.mp4", seconds=1, fps=8, audio=("aac", 300.0 + 200 * index))
        video = {"type": "video", "path": f"clip{index}.mp4", "use_audio": True}
        question = {"role": "user", "content": [video, {"type": "text", "text": "What makes the sound ?"}]}
        answer = {"role": "assistant", "content": [{"type": "text", "text": "A dog ."}]}
        rows.append({"id": f"clip{index}", "messages": [question, answer]})
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    recipe = {
        "stage": "audio-finetune",
        "model_name_or_path": str(converted),
        "dataset_name": str(tmp_path / "train.jsonl"),
        "media_root": str(tmp_path / "media"),
        "text_budget": 64,  # the fixture's Qwen2 has 256 positions
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 2,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "use_cpu": True,
        "bf16": False,
        "report_to": [],
        "save_strategy": "no",
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    main(["train", "--config", str(tmp_path / "recipe.yaml")])
    trained = AVLlmForConditionalGeneration.from_pretrained(tmp_path / "out")
    initial = AVLlmForConditionalGeneration.from_pretrained(converted)
    for name, should_change in (("audio_tower", True), ("audio_projector", True), ("language_model", False)):
        before, after = getattr(initial.model, name).state_dict(), getattr(trained.model, name).state_dict()
        changed = any(not torch.equal(before[key], after[key]) for key in before)
        assert changed == should_change, name
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            initial.model.vision_tower.state_dict().values(),
            trained.model.vision_tower.state_dict().values(),
            strict=True,
        )
    )
