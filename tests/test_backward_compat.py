"""Folders saved before issue #12's refactor (commit 66dcc37: `modeling/` and `processing/` packages, modality tokens,
`touch_absent_modalities` and `base_models` in the config) load with today's package and give the same logits.

The folder, its fixed input and the logits the old code gave come from `tests/fixtures/make_avllm_before_refactor.py`.
"""

import json
import logging
from pathlib import Path

import pytest
import torch
from fixtures.make_avllm_before_refactor import conversations
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from transformers_avllm import AVLlmForConditionalGeneration, AVLlmProcessor
from transformers_avllm.models.avllm.configuration_avllm import REMOVED_KEYS

FOLDER = Path(__file__).parent / "fixtures" / "avllm_before_refactor"


@pytest.fixture(scope="module")
def loaded():
    """The old folder loaded through the Auto classes (no remote code), with the warnings logged meanwhile."""
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    loggers = [logging.getLogger("transformers"), logging.getLogger("transformers_avllm")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        model = AutoModelForImageTextToText.from_pretrained(FOLDER).eval()
        processor = AutoProcessor.from_pretrained(FOLDER)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    return model, processor, [record.getMessage() for record in records]


def test_old_folder_loads_without_warnings_and_drops_the_removed_keys(loaded, tmp_path):
    model, processor, warnings = loaded
    assert type(model) is AVLlmForConditionalGeneration and type(processor) is AVLlmProcessor
    assert warnings == []
    saved = json.loads((FOLDER / "config.json").read_text())
    assert set(REMOVED_KEYS) <= set(saved), "the fixture should carry every removed key"
    assert not set(REMOVED_KEYS) & set(model.config.to_dict())
    assert model.model.touch_absent_modalities is False, "a saved training switch does not turn on at load"
    model.save_pretrained(tmp_path)
    assert not set(REMOVED_KEYS) & set(json.loads((tmp_path / "config.json").read_text()))


def test_old_folder_gives_the_recorded_logits(loaded):
    model = loaded[0]
    inputs = load_file(FOLDER / "inputs.safetensors")
    expected = load_file(FOLDER / "logits.safetensors")["logits"]
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)


def test_old_processor_renders_and_encodes_the_fixed_input_as_before(loaded):
    processor = loaded[1]
    fixed = conversations(FOLDER, load_numpy(FOLDER / "media.safetensors"))
    assert processor.apply_chat_template(fixed, add_generation_prompt=True) == json.loads(
        (FOLDER / "prompts.json").read_text()
    )
    inputs = processor.apply_chat_template(fixed, add_generation_prompt=True, tokenize=True, return_dict=True)
    expected = load_file(FOLDER / "inputs.safetensors")
    assert set(inputs) == set(expected)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        assert torch.equal(inputs[key], expected[key]), key
    for key in ("pixel_values_videos", "pixel_values", "input_features"):
        torch.testing.assert_close(inputs[key], expected[key], rtol=1e-5, atol=1e-5, msg=key)
