"""The tower registry (towers_avllm.py) and the modality vocabulary (modality_avllm.py), checked entry by entry against
the transformers classes they name and against what the processor and the model do with them."""

import numpy as np
import pytest
import torch

from transformers_avllm.models.avllm import (
    CONTENT_ITEMS,
    MODALITY_TOKENS,
    ROW_TYPES,
    SAMPLE_TYPES,
    TOKEN_TYPE_IDS,
    TOWER_FAMILIES,
    row_type,
    row_type_indices,
    tower_family,
)
from transformers_avllm.tiny import (
    SAMPLING_RATE,
    build_processor,
    build_tokenizer,
    tiny_audio_config,
    tiny_config,
    tiny_vision_config,
)

# The tiny config of each registry entry: a new family adds its line here (and its kind in tiny.py).
TINY_CONFIGS = {
    "clip_vision_model": lambda: tiny_vision_config("clip"),
    "siglip_vision_model": lambda: tiny_vision_config("siglip"),
    "clap_audio_model": lambda: tiny_audio_config("clap"),
    "whisper": lambda: tiny_audio_config("whisper"),
    "audio-spectrogram-transformer": lambda: tiny_audio_config("ast"),
}


def test_every_family_has_a_tiny_config():
    assert set(TINY_CONFIGS) == set(TOWER_FAMILIES)


@pytest.mark.parametrize("model_type", sorted(TOWER_FAMILIES))
def test_family_builds_its_class_and_reads_features_of_its_width(model_type):
    family, config = TOWER_FAMILIES[model_type], TINY_CONFIGS[model_type]()
    torch.manual_seed(0)
    tower = family.build(config).eval()
    assert type(tower) is family.tower_class and tower_family(config, family.modality) is family
    inputs = torch.randn(2, *family.input_shape(config))
    with torch.no_grad():
        if family.modality == "vision":
            features = family.frame_features(tower, inputs, -1)
            summary, grid = features.pooler_output, features.last_hidden_state
            size = family.grid_size(config)
            assert summary.shape == (2, family.width(config)) and grid.shape == (2, size, size, family.width(config))
            # the patch grid is the layer's patch tokens in raster order
            hidden = tower(inputs, output_hidden_states=True).hidden_states[-1]
            torch.testing.assert_close(grid.flatten(1, 2), hidden[:, -size * size :])
        else:
            sequence = family.segment_sequence(tower, inputs).last_hidden_state
            assert sequence.ndim == 3 and sequence.shape[0] == 2 and sequence.shape[2] == family.width(config)


@pytest.mark.parametrize("model_type", sorted(TOWER_FAMILIES))
def test_family_preprocessor_prepares_inputs_its_tower_takes(model_type):
    family, config = TOWER_FAMILIES[model_type], TINY_CONFIGS[model_type]()
    preprocessor = family.processor_class(**family.processor_settings(config, SAMPLING_RATE))
    tower = family.build(config).eval()
    if family.modality == "vision":
        image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
        inputs = preprocessor(images=[image], return_tensors="pt")["pixel_values"]
        assert inputs.shape[1:] == family.input_shape(config)
        with torch.no_grad():
            family.frame_features(tower, inputs, -1)
    else:
        waveform = np.sin(np.arange(SAMPLING_RATE // 2) / 7).astype(np.float32)
        extracted = preprocessor([waveform], sampling_rate=SAMPLING_RATE, return_tensors="pt")
        inputs = extracted["input_features"] if "input_features" in extracted else extracted["input_values"]
        with torch.no_grad():
            assert family.segment_sequence(tower, inputs).last_hidden_state.shape[2] == family.width(config)


def test_unknown_or_misplaced_towers_are_refused_naming_the_supported_ones():
    with pytest.raises(ValueError, match=r"vision tower of type 'clap_audio_model' is not supported.*clip_vision"):
        tiny_config(vision=tiny_audio_config("clap"))
    with pytest.raises(ValueError, match=r"audio tower of type 'clip_vision_model' is not supported.*whisper"):
        tiny_config(audio=tiny_vision_config("clip"))


def test_row_types_follow_the_token_type_codes():
    text, image, video, audio = (TOKEN_TYPE_IDS[kind] for kind in ("text", "image", "video", "audio"))
    mm_token_type_ids = torch.tensor(
        [[text, video, audio], [text, image, text], [audio, text, text], [text, text, text], [text, video, text]]
    )
    names = [ROW_TYPES[index] for index in row_type_indices(mm_token_type_ids).tolist()]
    assert names == ["audio_visual", "visual", "audio", "text", "visual"]
    assert [row_type(frames, sound) for frames, sound in ((True, True), (True, False), (False, True))] == [
        "audio_visual",
        "visual",
        "audio",
    ]


def test_each_sample_type_content_item_renders_as_its_modality_token(tmp_path):
    from media_fixtures import write_video

    clip = write_video(tmp_path / "clip.mp4", seconds=1, fps=8, audio=("aac", 440.0))
    config = tiny_config()
    processor = build_processor(config, build_tokenizer(["what ?"]))
    for sample_type in SAMPLE_TYPES:
        item = {**CONTENT_ITEMS[sample_type], "path": str(clip)}
        messages = [{"role": "user", "content": [item, {"type": "text", "text": "what ?"}]}]
        assert processor.apply_chat_template(messages).startswith(f"USER: {MODALITY_TOKENS[sample_type]}\n")
        inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
        assert ROW_TYPES[row_type_indices(inputs["mm_token_type_ids"]).item()] == sample_type
