"""The model's hot path: no host synchronisation in the placeholder merge, decoding that compiles without graph breaks
and passes per step what the bare LLM's does, and encoder outputs given in place of media (`mm_encoder_outputs`)."""

import contextlib

import pytest
import torch
from model_inputs import random_rows
from torch._dynamo.utils import counters
from transformers import CompileConfig

from transformers_avllm import AVLlmForConditionalGeneration, AVLlmPlaceholderMismatchError
from transformers_avllm.models.avllm import AVLlmConnectorInputMismatchError, AVLlmEncoderOutput, AVLlmModel
from transformers_avllm.tiny import VIDEO_TOKEN_ID, tiny_config

# What reads a device tensor on the host (and so waits for the device): none of it may run inside the merge.
HOST_READS = ("item", "tolist", "nonzero", "__int__", "__index__", "__bool__", "__float__")


def build(**kwargs):
    torch.manual_seed(0)
    return AVLlmForConditionalGeneration(tiny_config(**kwargs)).eval()


@contextlib.contextmanager
def merge_without_host_reads(monkeypatch):
    """Makes every host read of a tensor fail while `AVLlmModel._merge` runs; yields the list of merges seen."""
    merges, original_merge = [], AVLlmModel._merge

    def forbidden(name):
        def read(*args, **kwargs):
            raise AssertionError(f"Tensor.{name} (a host read of a device value) ran inside the placeholder merge")

        return read

    def guarded_merge(self, *args, **kwargs):
        with monkeypatch.context() as patch:
            for name in HOST_READS:
                patch.setattr(torch.Tensor, name, forbidden(name))
            merges.append(args[2])
            return original_merge(self, *args, **kwargs)

    monkeypatch.setattr(AVLlmModel, "_merge", guarded_merge)
    yield merges


def test_placeholder_merge_reads_nothing_on_the_host_and_still_raises_on_a_mismatch(monkeypatch):
    model = build()
    batch, _ = random_rows(model.config, ["av", "image", "text"])
    reference = model(**batch).logits
    with merge_without_host_reads(monkeypatch) as merges:
        torch.testing.assert_close(model(**batch).logits, reference, rtol=0, atol=0)
        assert merges == ["image", "video", "audio"]
        for change, message in ((-1, "19 video placeholder tokens"), (+1, "21 video placeholder tokens")):
            wrong = {**batch, "input_ids": batch["input_ids"].clone()}
            row = wrong["input_ids"][0]
            if change < 0:  # one placeholder fewer than features
                row[(row == VIDEO_TOKEN_ID).nonzero()[0]] = 5
            else:  # one more: the text token after the run becomes a placeholder
                row[(row == VIDEO_TOKEN_ID).nonzero()[-1] + 1] = VIDEO_TOKEN_ID
            with pytest.raises(AVLlmPlaceholderMismatchError, match=message):
                model(**wrong)


def test_merge_equals_masked_scatter():
    model = build()
    batch, _ = random_rows(model.config, ["video", "text", "av"], padding_side="left")
    embeds = model.get_input_embeddings()(batch["input_ids"])
    features = torch.randn(2, model.config.num_video_tokens, embeds.shape[-1])
    merged = model.model._merge(batch["input_ids"], embeds, "video", features, None, {})
    mask = (batch["input_ids"] == VIDEO_TOKEN_ID).unsqueeze(-1)
    assert torch.equal(merged, embeds.masked_scatter(mask, features))


def test_decode_step_compiles_without_graph_breaks():
    from transformers import StaticCache

    model = build()
    _, rows = random_rows(model.config, ["av"])
    row = rows[0]
    length = row["input_ids"].shape[1]
    cache = StaticCache(config=model.config.text_config, max_cache_len=length + 4)
    torch._dynamo.reset()
    with torch.inference_mode():
        first = model(**row, cache=cache).logits[:, -1:].argmax(-1)
        step = torch.compile(model, fullgraph=True, backend="eager")  # raises at any graph break
        inputs = dict(input_ids=first, attention_mask=torch.ones(1, length + 1, dtype=torch.long), cache=cache)
        compiled = step(**inputs, position_ids=torch.tensor([[length]])).logits
    assert compiled.shape == (1, 1, model.config.text_config.vocab_size)
    assert model._can_compile_fullgraph and model.model._can_compile_fullgraph


def test_prefill_with_media_compiles_without_graph_breaks():
    model = build(vision="clip", audio="whisper")
    batch, _ = random_rows(model.config, ["av", "text"])
    torch._dynamo.reset()
    with torch.inference_mode():
        # eager first: transformers installs the towers' output-capturing hooks on the first call, under a lock that
        # dynamo cannot trace (not our code)
        reference = model(**batch).logits
        compiled = torch.compile(model, fullgraph=True, backend="eager")(**batch).logits
    torch.testing.assert_close(compiled, reference)


def test_static_cache_generate_compiles_once_and_equals_eager():
    """generate() with a static cache compiles the decode step (here on the CPU, `eager` backend, fullgraph): one graph
    for all steps, and the same tokens as without compiling."""
    model = build()
    model.generation_config.pad_token_id = 0
    _, rows = random_rows(model.config, ["av"])
    config = CompileConfig(backend="eager", fullgraph=True, mode=None)
    config._compile_all_devices = True
    settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, cache_implementation="static")
    torch._dynamo.reset()
    counters.clear()
    compiled = model.generate(**rows[0], compile_config=config, **settings)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert torch.equal(compiled, model.generate(**rows[0], disable_compile=True, **settings))


@pytest.mark.parametrize("connector,vision", [("avllm", "clip"), ("pool", "siglip"), ("stc", "clip")])
def test_connector_inputs_in_place_of_media_give_the_same_logits(connector, vision):
    extra = {"stc_depth": 1} if connector == "stc" else {}
    model = build(vision=vision, connector_type=connector, **extra)
    batch, _ = random_rows(model.config, ["av", "image", "text"])
    reference = model(**batch).logits
    with torch.no_grad():
        cached = {
            "image": model.get_image_features(batch.pop("pixel_values")).connector_inputs,
            "video": model.get_video_features(batch.pop("pixel_values_videos")).connector_inputs,
            "audio": model.get_audio_features(batch.pop("input_features")).connector_inputs,
        }
    given = {modality: AVLlmEncoderOutput(connector_inputs=inputs) for modality, inputs in cached.items()}
    torch.testing.assert_close(model(**batch, mm_encoder_outputs=given).logits, reference, rtol=0, atol=0)


def test_connector_inputs_of_another_geometry_are_a_named_error():
    model = build()
    batch, _ = random_rows(model.config, ["video"])
    summaries, grid = model.get_video_features(batch.pop("pixel_values_videos")).connector_inputs
    for wrong in ((summaries[:, :-1], grid), (summaries, grid[..., :-1])):  # a frame fewer; another width
        given = {"video": AVLlmEncoderOutput(connector_inputs=wrong)}
        with pytest.raises(AVLlmConnectorInputMismatchError, match="video connector inputs have shapes"):
            model(**batch, mm_encoder_outputs=given)
    with pytest.raises(ValueError, match="cannot pass both"):
        model(**batch, pixel_values_videos=torch.zeros(1), mm_encoder_outputs={"video": AVLlmEncoderOutput()})
