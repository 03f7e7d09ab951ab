"""BEATs audio tower and its fbank front end against VideoLLaMA 2's own BEATs code (fixtures recorded by
tests/fixtures/make_videollama2_av.py from the reference repository)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transformers_avllm.conversion.beats import (
    BeatsConversionError,
    beats_config_from_reference,
    rename_beats_state_dict,
)
from transformers_avllm.models.avllm.beats_avllm import (
    BEATS_FBANK_MEAN,
    BEATS_FBANK_STD,
    AVLlmBeatsConfig,
    AVLlmBeatsFeatureExtractor,
    AVLlmBeatsModel,
)

FIXTURES = Path(__file__).parent / "fixtures" / "videollama2_av"
SAMPLING_RATE = 16000


@pytest.fixture(scope="module")
def reference():
    """The reference's tiny BEATs config, state dict, waveform, fbank (un-normalised) and output features."""
    io = load_file(FIXTURES / "beats_io.safetensors")
    return {
        "cfg": json.loads((FIXTURES / "beats_config.json").read_text()),
        "state_dict": load_file(FIXTURES / "beats.safetensors"),
        "waveform": io["waveform_int16"].numpy().astype(np.float32) / 32768,
        "fbank": torch.from_numpy(np.load(FIXTURES / "beats_fbank.npz")["fbank"]),
        "features": io["features"],
    }


def converted_model(reference, attn_implementation="eager") -> AVLlmBeatsModel:
    config = beats_config_from_reference(reference["cfg"])
    config._attn_implementation = attn_implementation
    model = AVLlmBeatsModel(config).eval()
    model.load_state_dict(rename_beats_state_dict(reference["state_dict"]), strict=True)
    return model


def test_feature_extractor_matches_reference_fbank(reference):
    """1 s of audio padded with silence to 30 s: 2998 frames, equal to the reference's kaldi fbank (computed in float64
    on the waveform * 2**15) after BEATs' normalisation."""
    extractor = AVLlmBeatsFeatureExtractor()
    features = extractor(reference["waveform"], sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_values"]
    expected = (reference["fbank"] - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)
    assert features.shape == (1, 2998, 128)
    torch.testing.assert_close(features[0], expected, atol=2e-5, rtol=0)
    silence = expected[200:]  # the padding is silence, whose fbank is log(eps), not zero
    assert torch.allclose(silence, torch.full_like(silence, (np.log(np.finfo(np.float32).eps) - 15.41663) / 13.11164))


def test_feature_extractor_cuts_long_audio_and_round_trips(tmp_path):
    extractor = AVLlmBeatsFeatureExtractor(max_length=298)  # 3 s
    waveform = np.random.default_rng(0).uniform(-0.5, 0.5, 5 * SAMPLING_RATE).astype(np.float32)
    cut = extractor(waveform, sampling_rate=SAMPLING_RATE)["input_values"][0]
    start = extractor(waveform[: 400 + 297 * 160], sampling_rate=SAMPLING_RATE)["input_values"][0]
    np.testing.assert_array_equal(cut, start)
    extractor.save_pretrained(tmp_path)
    reloaded = AVLlmBeatsFeatureExtractor.from_pretrained(tmp_path)
    np.testing.assert_array_equal(reloaded(waveform, sampling_rate=SAMPLING_RATE)["input_values"][0], cut)


def test_reference_state_dict_loads_without_missing_or_unexpected_keys(reference):
    model = AVLlmBeatsModel(beats_config_from_reference(reference["cfg"]))
    result = model.load_state_dict(rename_beats_state_dict(reference["state_dict"]), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_beats_matches_reference_features(reference, attn_implementation):
    """Our BEATs on the reference fbank, and on our own front end's output, equals the reference BEATs (fp32)."""
    model = converted_model(reference, attn_implementation)
    normalised = (reference["fbank"] - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)
    extractor = AVLlmBeatsFeatureExtractor()
    ours = extractor(reference["waveform"], sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_values"]
    with torch.no_grad():
        on_reference_fbank = model(normalised.unsqueeze(0)).last_hidden_state
        end_to_end = model(ours).last_hidden_state
    assert on_reference_fbank.shape == reference["features"].shape == (1, 187 * 8, 8)
    torch.testing.assert_close(on_reference_fbank, reference["features"], atol=1e-4, rtol=0)
    torch.testing.assert_close(end_to_end, reference["features"], atol=1e-4, rtol=0)


def test_save_and_from_pretrained_keep_outputs(reference, tmp_path):
    model = converted_model(reference)
    model.save_pretrained(tmp_path)
    reloaded = AVLlmBeatsModel.from_pretrained(tmp_path).eval()
    fbank = torch.randn(2, 100, 128)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(fbank).last_hidden_state, model(fbank).last_hidden_state)


def test_config_mapping_and_defaults(reference):
    config = beats_config_from_reference(reference["cfg"], max_length=1024)
    assert (config.patch_embedding_dim, config.hidden_size, config.num_hidden_layers) == (12, 8, 2)
    assert (config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups, config.max_length) == (16, 4, 1024)
    # VideoLLaMA 2 rebuilds its AV audio tower with `BEATsConfig()`, whose values are our defaults.
    defaults = AVLlmBeatsConfig()
    assert (defaults.hidden_size, defaults.num_hidden_layers, defaults.max_bucket_distance) == (768, 12, 800)
    assert defaults.num_patches == 1496
    assert beats_config_from_reference({}).to_dict() == defaults.to_dict()
    with pytest.raises(BeatsConversionError, match="layer_norm_first"):
        beats_config_from_reference({**reference["cfg"], "layer_norm_first": True})
    with pytest.raises(BeatsConversionError, match="does not know"):
        beats_config_from_reference({**reference["cfg"], "quantizer": 1})


def test_rename_drops_classifier_and_checks_shared_position_bias(reference):
    renamed = rename_beats_state_dict(reference["state_dict"])
    assert not any("predictor" in key or "relative_attention_bias" in key for key in renamed)
    tampered = dict(reference["state_dict"])
    key = "encoder.layers.1.self_attn.relative_attention_bias.weight"
    tampered[key] = tampered[key] + 1
    with pytest.raises(BeatsConversionError, match="layers.1"):
        rename_beats_state_dict(tampered)


def test_layer_wise_gradient_decay_scales_gradients_below_the_layers(reference):
    """BEATs multiplies the gradient by the ratio at every layer: the patch embedding's gradient shrinks by ratio ** L,
    the forward pass is unchanged."""
    gradients, outputs = [], []
    for ratio in (1.0, 0.5):
        config = beats_config_from_reference(reference["cfg"], layerdrop=0.0, layer_wise_gradient_decay_ratio=ratio)
        model = AVLlmBeatsModel(config)
        model.load_state_dict(rename_beats_state_dict(reference["state_dict"]))
        output = model(torch.randn(1, 64, 128, generator=torch.Generator().manual_seed(0))).last_hidden_state
        output.square().sum().backward()
        gradients.append(model.embeddings.patch_embedding.weight.grad)
        outputs.append(output.detach())
    torch.testing.assert_close(outputs[1], outputs[0])
    torch.testing.assert_close(gradients[1], gradients[0] * 0.5**2)


def test_random_init_is_finite_and_weight_norm_starts_at_its_direction():
    torch.manual_seed(0)
    config = AVLlmBeatsConfig(
        patch_embedding_dim=12,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    model = AVLlmBeatsModel(config).eval()
    conv = model.encoder.pos_conv_embed.conv
    torch.testing.assert_close(conv.weight, conv.parametrizations.weight.original1)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 48, 128)).last_hidden_state).all()


def test_beats_config_and_extractor_round_trip_through_the_auto_classes(tmp_path):
    """`AVLlmConfig(audio_config=AVLlmBeatsConfig(...))` saves and reloads (the registry registers `avllm_beats` with
    AutoConfig); a processor holding the BEATs extractor names it in `auto_map` and reloads it through AutoProcessor
    and AutoFeatureExtractor. (Without the package, through remote code: the clean process of test_videollama2.py.)"""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor

    from transformers_avllm import AVLlmForConditionalGeneration
    from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_audio_config, tiny_config

    config = tiny_config(audio=tiny_audio_config("beats"), num_audio_segments=1, audio_tokens_per_segment=24)
    AVLlmForConditionalGeneration(config).save_pretrained(tmp_path)
    build_processor(config, build_tokenizer(["what ?"])).save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded.audio_config, AVLlmBeatsConfig)
    assert reloaded.audio_config.to_dict() == config.audio_config.to_dict()
    saved = json.loads((tmp_path / "processor_config.json").read_text())["feature_extractor"]
    assert saved["auto_map"]["AutoFeatureExtractor"] == "beats_avllm.AVLlmBeatsFeatureExtractor"
    for extractor in (
        AutoProcessor.from_pretrained(tmp_path).feature_extractor,
        AutoFeatureExtractor.from_pretrained(tmp_path),
    ):
        assert type(extractor) is AVLlmBeatsFeatureExtractor and extractor.max_length == 48
    assert isinstance(AutoModel.from_pretrained(tmp_path).audio_tower, AVLlmBeatsModel)


def test_layerdrop_skips_layers_in_training_but_not_under_zero3(reference, monkeypatch):
    """With layerdrop 1 every layer is skipped in training; under DeepSpeed ZeRO-3 (or FSDP) every process must run
    every layer, so none is (as in transformers' wav2vec2)."""
    import transformers_avllm.models.avllm.beats_avllm as beats_module

    config = beats_config_from_reference(reference["cfg"], layerdrop=1.0)
    model = AVLlmBeatsModel(config)
    model.load_state_dict(rename_beats_state_dict(reference["state_dict"]))
    fbank = torch.randn(1, 64, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        evaluated = model.eval()(fbank).last_hidden_state
        skipped = model.train()(fbank).last_hidden_state
        monkeypatch.setattr(beats_module, "is_deepspeed_zero3_enabled", lambda: True)
        synced = model(fbank).last_hidden_state
    embedded = model.encoder.layer_norm(
        model.embeddings(fbank) + model.encoder.pos_conv_embed(model.embeddings(fbank))
    )
    torch.testing.assert_close(skipped, embedded)
    torch.testing.assert_close(synced, evaluated)
