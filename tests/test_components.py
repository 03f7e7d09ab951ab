"""from_pretrained_components: assemble a model from separately saved checkpoints (local folders, no network)."""

import json

import pytest
import torch
from media_fixtures import write_video
from transformers import (
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    LlamaForCausalLM,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    WhisperFeatureExtractor,
    WhisperModel,
)

from transformers_avllm.components import from_pretrained_components, load_tower
from transformers_avllm.tiny import build_tokenizer, tiny_audio_config, tiny_text_config, tiny_vision_config

TEXT = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)


def save_checkpoints(folder):
    torch.manual_seed(0)
    paths = {name: folder / name for name in ("llm", "clip", "clap", "siglip", "whisper")}
    tokenizer = build_tokenizer(["what is it ?"], vocab_size=120, media_tokens=False)
    LlamaForCausalLM(tiny_text_config("llama", vocab_size=120)).save_pretrained(paths["llm"])
    tokenizer.save_pretrained(paths["llm"])
    CLIPModel(CLIPConfig(text_config=TEXT, vision_config=tiny_vision_config("clip").to_dict())).save_pretrained(
        paths["clip"]
    )
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        paths["clip"]
    )
    SiglipModel(SiglipConfig(text_config=TEXT, vision_config=tiny_vision_config("siglip").to_dict())).save_pretrained(
        paths["siglip"]
    )
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(paths["siglip"])
    clap_text = dict(TEXT, max_position_embeddings=40, type_vocab_size=1, projection_dim=16)
    ClapModel(
        ClapConfig(text_config=clap_text, audio_config=tiny_audio_config("clap").to_dict(), projection_dim=16)
    ).save_pretrained(paths["clap"])
    ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=16000,
        max_length_s=1,
        hop_length=160,
        fft_window_size=400,
        truncation="rand_trunc",
    ).save_pretrained(paths["clap"])
    WhisperModel(tiny_audio_config("whisper")).save_pretrained(paths["whisper"])
    WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, chunk_length=1, hop_length=160).save_pretrained(
        paths["whisper"]
    )
    return paths


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return save_checkpoints(tmp_path_factory.mktemp("checkpoints"))


def same_weights(module, reference):
    reference_state = reference.state_dict()
    return all(torch.equal(value, reference_state[name]) for name, value in module.state_dict().items())


@pytest.mark.parametrize(
    "kind,full_class,attribute",
    [("clip", CLIPModel, "vision_model"), ("whisper", WhisperModel, "encoder"), ("clap", ClapModel, "audio_model")],
)
def test_load_tower_from_full_checkpoints(checkpoints, kind, full_class, attribute):
    tower = load_tower(str(checkpoints[kind]))
    reference = getattr(full_class.from_pretrained(checkpoints[kind]), attribute)
    assert type(tower) is type(reference) and same_weights(tower, reference)


@pytest.mark.parametrize("vision,audio", [("clip", "clap"), ("siglip", "whisper"), (None, "clap"), ("clip", None)])
def test_from_pretrained_components_keeps_weights_adds_tokens_and_answers(checkpoints, tmp_path, vision, audio):
    model, processor = from_pretrained_components(
        llm=str(checkpoints["llm"]),
        vision=str(checkpoints[vision]) if vision else None,
        audio=str(checkpoints[audio]) if audio else None,
        num_frames=4,
        num_audio_segments=2,
    )
    model.eval()
    tokenizer = processor.tokenizer
    for token in ("<VIS>", "<AUD>", "<AUD_VIS>", "<image>", "<video>", "<audio>"):
        assert token in tokenizer.get_vocab()
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == 126 == model.config.text_config.vocab_size
    assert model.config.video_token_id == tokenizer.convert_tokens_to_ids("<video>")

    llm = LlamaForCausalLM.from_pretrained(checkpoints["llm"]).eval()
    ids = torch.tensor([[1, 5, 9, 17, 33]])
    torch.testing.assert_close(model(input_ids=ids).logits[..., : llm.config.vocab_size], llm(input_ids=ids).logits)
    if vision:
        full = (CLIPModel if vision == "clip" else SiglipModel).from_pretrained(checkpoints[vision])
        assert same_weights(model.model.vision_tower, full.vision_model)
    if audio == "whisper":
        assert same_weights(model.model.audio_tower, WhisperModel.from_pretrained(checkpoints["whisper"]).encoder)

    model.save_pretrained(tmp_path / "saved")
    assert "AutoModelForImageTextToText" in json.loads((tmp_path / "saved" / "config.json").read_text())["auto_map"]
    assert model.base_models["llm"] == str(checkpoints["llm"])

    clip = write_video(tmp_path / "clip.mp4", seconds=1, fps=8, audio=("aac", 440.0))
    messages = [
        {"role": "user", "content": [{"type": "video", "path": str(clip)}, {"type": "text", "text": "what is it ?"}]}
    ]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    generated = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3


def test_components_need_a_tower(checkpoints):
    with pytest.raises(ValueError, match="at least one of vision= and audio="):
        from_pretrained_components(llm=str(checkpoints["llm"]))
    with pytest.raises(ValueError, match="holds no supported tower"):
        load_tower(str(checkpoints["llm"]))
