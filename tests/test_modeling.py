"""AVLlm model: Auto classes, save/load, connectors, per-sample modality, generation."""

import json

import pytest
import torch
from model_inputs import random_rows
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    CLIPVisionConfig,
)

from transformers_avllm import (
    AVLlmConfig,
    AVLlmForConditionalGeneration,
    AVLlmModel,
    AVLlmPlaceholderMismatchError,
)
from transformers_avllm.models.avllm import tower_family
from transformers_avllm.tiny import AUDIO_TOKEN_ID, VIDEO_TOKEN_ID, tiny_config

TOWER_PAIRS = [
    ("clip", "clap", "llama"),
    ("siglip", "whisper", "qwen2"),
    ("clip", "ast", "qwen2"),
    ("clip", None, "llama"),
    ("siglip", None, "qwen2"),
    (None, "clap", "qwen2"),
    (None, "whisper", "llama"),
]


def build(seed=0, touch_absent_modalities=False, **kwargs):
    torch.manual_seed(seed)
    model = AVLlmForConditionalGeneration(tiny_config(**kwargs)).eval()
    model.model.touch_absent_modalities = touch_absent_modalities
    return model


def rows_for(vision, audio):
    modalities = ["text"]
    if vision:
        modalities += ["video", "image"]
    if audio:
        modalities += ["audio"]
    if vision and audio:
        modalities += ["av"]
    return modalities


@pytest.mark.parametrize("vision,audio,text", TOWER_PAIRS)
def test_tower_pairs_forward_is_small_and_finite(vision, audio, text):
    model = build(vision=vision, audio=audio, text=text)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    batch, _ = random_rows(model.config, rows_for(vision, audio))
    logits = model(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


def test_save_load_identical_logits_and_auto_classes(tmp_path):
    model = build()
    batch, _ = random_rows(model.config, ["av", "video", "audio"])
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), AVLlmConfig)
    for auto_class in (AutoModelForImageTextToText, AutoModelForMultimodalLM, AutoModelForCausalLM):
        reloaded = auto_class.from_pretrained(tmp_path).eval()
        assert type(reloaded) is AVLlmForConditionalGeneration
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    assert type(AutoModel.from_pretrained(tmp_path)) is AVLlmModel


def test_tied_embeddings_follow_text_config(tmp_path):
    qwen = build(text="qwen2")
    assert qwen.lm_head.weight is qwen.model.language_model.embed_tokens.weight
    llama = build(text="llama")
    assert llama.lm_head.weight is not llama.model.language_model.embed_tokens.weight
    qwen.save_pretrained(tmp_path)
    reloaded = AVLlmForConditionalGeneration.from_pretrained(tmp_path)
    assert reloaded.lm_head.weight is reloaded.model.language_model.embed_tokens.weight


def test_avllm_connector_paper_token_counts():
    """AV-LLM: 32 frames, a 16x16 patch grid and 4 audio segments give 32 + 256 + 4 tokens."""
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=4
    )
    config = tiny_config(num_frames=32, num_audio_segments=4)
    config.vision_config = vision
    model = AVLlmForConditionalGeneration(config).eval()
    assert (config.num_video_tokens, config.num_audio_tokens) == (32 + 256, 4)
    video = model.get_video_features(torch.randn(1, 32, 3, 64, 64)).pooler_output
    segment_shape = tower_family(config.audio_config).input_shape(config.audio_config)
    audio = model.get_audio_features(torch.randn(1, 4, *segment_shape)).pooler_output
    assert video.shape == (1, 288, 32) and audio.shape == (1, 4, 32)
    assert config.num_image_tokens == 1 + 256


@pytest.mark.parametrize(
    "connector,extra,expected_video,expected_image",
    [
        ("avllm", {}, 4 + 16, 1 + 16),
        ("pool", {}, 4 + 16, 1 + 16),
        # conv3d, kernel=stride=(2,2,2), padding 1 on T=4, 4x4 grid: 3*3*3; an image is repeated to 2 frames: 2*3*3
        ("stc", {"stc_depth": 1}, 27, 18),
        ("stc", {"stc_depth": 0, "stc_padding": 0}, 2 * 2 * 2, 1 * 2 * 2),
    ],
)
def test_connector_token_counts_match_features_and_train(connector, extra, expected_video, expected_image):
    model = build(connector_type=connector, **extra).train()
    config = model.config
    assert (config.num_video_tokens, config.num_image_tokens) == (expected_video, expected_image)
    video = model.get_video_features(torch.randn(2, config.num_frames, 3, 32, 32)).pooler_output
    image = model.get_image_features(torch.randn(3, 3, 32, 32)).pooler_output
    assert video.shape == (2, expected_video, 32) and image.shape == (3, expected_image, 32)
    batch, _ = random_rows(config, ["av", "image"])
    model(**batch, labels=batch["input_ids"]).loss.backward()
    for name, parameter in model.model.video_connector.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for name, parameter in model.model.audio_projector.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_audio_tokens_per_segment_and_mlp_projector():
    model = build(audio="whisper", audio_tokens_per_segment=5, audio_projector_type="mlp2x_gelu")
    assert model.config.num_audio_tokens == 2 * 5
    batch, _ = random_rows(model.config, ["audio", "av"])
    assert model(**batch).audio_outputs.pooler_output.shape == (2, 10, 32)


@pytest.mark.parametrize("vision,audio,text", [("clip", "clap", "llama"), ("siglip", "whisper", "qwen2")])
def test_mixed_modality_batch_equals_rows_alone(vision, audio, text):
    model = build(vision=vision, audio=audio, text=text)
    modalities = ["video", "audio", "av", "text", "image"]
    batch, rows = random_rows(model.config, modalities)
    batch_logits = model(**batch).logits
    for index, row in enumerate(rows):
        length = row["input_ids"].shape[1]
        torch.testing.assert_close(batch_logits[index, :length], model(**row).logits[0], rtol=1e-4, atol=1e-5)


class TowerCalls:
    """Records the batch size of every call of a module."""

    def __init__(self, module):
        self.sizes = []
        module.register_forward_hook(lambda _m, args, _out: self.sizes.append(args[0].shape[0]))


def test_towers_run_only_on_items_of_their_modality():
    model = build()
    vision_calls, audio_calls = TowerCalls(model.model.vision_tower), TowerCalls(model.model.audio_tower)
    batch, _ = random_rows(model.config, ["text", "audio", "text"])
    model(**batch)
    assert vision_calls.sizes == [] and audio_calls.sizes == [1 * model.config.num_audio_segments]
    batch, _ = random_rows(model.config, ["video", "text", "av"])
    model(**batch)
    assert vision_calls.sizes == [2 * model.config.num_frames]
    assert audio_calls.sizes == [2, 2]


def test_rows_without_a_modality_give_its_tower_no_gradient():
    model = build().train()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    batch, _ = random_rows(model.config, ["audio", "text"])
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert all(p.grad is None for p in model.model.vision_tower.parameters())
    assert all(p.grad is None for p in model.model.video_connector.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.model.audio_tower.parameters())

    # the video row's loss does not reach the audio tower through the audio row of the same batch
    model.zero_grad(set_to_none=True)
    batch, _ = random_rows(model.config, ["video", "audio"])
    logits = model(**batch).logits
    logits[0].sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.model.audio_tower.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.model.vision_tower.parameters())


def test_touch_absent_modalities_reaches_every_trainable_parameter():
    for touch in (False, True):
        model = build(touch_absent_modalities=touch).train()
        batch, _ = random_rows(model.config, ["audio", "text"])
        model(**batch, labels=batch["input_ids"]).loss.backward()
        grads = [p.grad for p in model.model.video_connector.parameters()]
        if touch:
            assert all(g is not None and g.abs().sum() == 0 for g in grads)
        else:
            assert all(g is None for g in grads)
    # a zero-weighted pass changes nothing numerically
    model_on, model_off = build(touch_absent_modalities=True).train(), build().train()
    batch, _ = random_rows(model_on.config, ["audio"])
    torch.testing.assert_close(model_on(**batch).logits, model_off(**batch).logits)


def test_the_zero_weighted_pass_is_a_switch_of_the_run_not_saved_with_the_model(tmp_path):
    model = build(touch_absent_modalities=True)
    model.save_pretrained(tmp_path)
    assert "touch_absent_modalities" not in json.loads((tmp_path / "config.json").read_text())
    assert AVLlmForConditionalGeneration.from_pretrained(tmp_path).model.touch_absent_modalities is False


@pytest.mark.parametrize("rows", [["video", "audio"], ["audio"], ["video"], ["text"], ["image", "av"]])
def test_towers_run_in_the_same_order_whatever_the_batch_carries(rows):
    """With the zero-weighted pass on, every training batch runs the vision tower, then the audio tower (ZeRO-3 ranks
    gather parameters in the order modules run)."""
    model = build(touch_absent_modalities=True).train()
    calls = []
    for name in ("vision_tower", "audio_tower"):
        getattr(model.model, name).register_forward_hook(lambda *_, name=name: calls.append(name))
    batch, _ = random_rows(model.config, rows)
    model(**batch)
    expected = ["vision_tower", "vision_tower", "audio_tower"] if "image" in rows else ["vision_tower", "audio_tower"]
    assert calls == expected


def test_placeholder_count_mismatch_is_a_clear_error():
    model = build()
    batch, _ = random_rows(model.config, ["video"])
    batch["input_ids"][0, batch["input_ids"][0] == VIDEO_TOKEN_ID] = 5  # drop every video placeholder
    with pytest.raises(AVLlmPlaceholderMismatchError, match="0 video placeholder tokens"):
        model(**batch)
    model_no_audio = build(audio=None)
    batch, _ = random_rows(model.config, ["audio"])
    with pytest.raises(ValueError, match="no audio tower"):
        model_no_audio(**batch)


def test_inputs_embeds_with_mm_token_type_ids_equals_input_ids():
    model = build()
    batch, _ = random_rows(model.config, ["av", "text"])
    reference = model(**batch).logits
    type_ids = torch.zeros_like(batch["input_ids"])
    type_ids[batch["input_ids"] == VIDEO_TOKEN_ID] = 2
    type_ids[batch["input_ids"] == AUDIO_TOKEN_ID] = 3
    embeds = model.get_input_embeddings()(batch.pop("input_ids"))
    for kwargs in ({"mm_token_type_ids": type_ids}, {}):
        logits = model(inputs_embeds=embeds, **batch, **kwargs).logits
        torch.testing.assert_close(logits, reference)


def test_gradient_checkpointing_gives_same_gradients():
    batch, _ = random_rows(tiny_config(), ["av", "video"])
    grads = []
    for checkpointing in (False, True):
        model = build().train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append(model.model.video_connector.temporal_projector.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def greedy_without_cache(model, inputs, steps):
    ids = inputs["input_ids"]
    media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    for _ in range(steps):
        logits = model(input_ids=ids, use_cache=False, **media).logits
        ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    return ids


@pytest.mark.parametrize("vision,audio,text", [("clip", "clap", "llama"), ("siglip", "whisper", "qwen2")])
def test_greedy_generate_with_cache_equals_no_cache(vision, audio, text):
    model = build(vision=vision, audio=audio, text=text)
    model.generation_config.pad_token_id = 0
    _, rows = random_rows(model.config, ["av"])
    generated = model.generate(**rows[0], max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert torch.equal(generated, greedy_without_cache(model, rows[0], 6))


def test_generate_sends_media_only_at_prefill():
    model = build()
    model.generation_config.pad_token_id = 0
    media_seen = []
    original = model.model.forward

    def spy(*args, **kwargs):
        # generate() pre-encodes images and videos into `mm_encoder_outputs` (the model takes them, as llava does)
        video = kwargs.get("pixel_values_videos") is not None or "video" in (kwargs.get("mm_encoder_outputs") or {})
        audio, types = kwargs.get("input_features"), kwargs.get("mm_token_type_ids")
        media_seen.append((video, audio is not None, types is not None))
        return original(*args, **kwargs)

    model.model.forward = spy
    _, rows = random_rows(model.config, ["av"])
    type_ids = torch.zeros_like(rows[0]["input_ids"])
    type_ids[rows[0]["input_ids"] == VIDEO_TOKEN_ID], type_ids[rows[0]["input_ids"] == AUDIO_TOKEN_ID] = 2, 3
    model.generate(**rows[0], mm_token_type_ids=type_ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    # media and the placeholder types at prefill only: decode steps pass what the bare LLM's would
    assert media_seen == [(True, True, True)] + [(False, False, False)] * 3


def test_left_padded_batched_generation_equals_one_by_one():
    model = build()
    model.generation_config.pad_token_id = 0
    modalities = ["video", "audio", "av", "text", "image"]
    batch, rows = random_rows(model.config, modalities, padding_side="left")
    batched = model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    width = batch["input_ids"].shape[1]
    for index, row in enumerate(rows):
        alone = model.generate(**row, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        assert torch.equal(batched[index, width:], alone[0, row["input_ids"].shape[1] :]), modalities[index]


def test_attention_implementation_passes_through_and_no_split_modules(tmp_path):
    model = build()
    model.save_pretrained(tmp_path)
    batch, _ = random_rows(model.config, ["av", "text"])
    eager = AVLlmForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    # CLAP-HTSAT has only eager attention: choose per sub-config (a plain string applies to every tower)
    per_tower = {"text_config": "sdpa", "vision_config": "sdpa", "audio_config": "eager"}
    sdpa = AVLlmForConditionalGeneration.from_pretrained(tmp_path, attn_implementation=per_tower).eval()
    assert eager.config.text_config._attn_implementation == "eager"
    assert eager.config.vision_config._attn_implementation == "eager"
    assert sdpa.config.text_config._attn_implementation == "sdpa"
    torch.testing.assert_close(eager(**batch).logits, sdpa(**batch).logits, rtol=1e-4, atol=1e-5)
    assert {"LlamaDecoderLayer", "CLIPEncoderLayer"} <= set(model._no_split_modules)
