"""transformers' common model expectations, checked on AVLlm with transformers' tester pattern.

transformers' own `ModelTesterMixin` / `GenerationTesterMixin` are not in its wheel; these are our checks of the same
expectations (save/load, missing keys initialised as at build, batching, `inputs_embeds`, resized embeddings, attention
dispatch, hidden states and attentions of the model and of `get_*_features`, left-padded generation, static cache,
generation without cache, `logits_to_keep`), run for two tower pairings on rows that each carry an image, a video and
an audio clip.
"""

import inspect
import math

import pytest
import torch
from model_inputs import random_rows
from safetensors.torch import load_file, save_file
from transformers.cache_utils import StaticCache
from transformers.models.whisper.modeling_whisper import sinusoids
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs

from transformers_avllm import AVLlmConfig, AVLlmForConditionalGeneration, AVLlmModel
from transformers_avllm.models.avllm import TOKEN_TYPE_IDS, AVLlmAudioFeaturesOutput, tower_family
from transformers_avllm.tiny import tiny_config

MODEL_CLASSES = (AVLlmModel, AVLlmForConditionalGeneration)
EAGER = {"text_config": "eager", "vision_config": "eager", "audio_config": "eager"}
SUB_CONFIGS = ("text_config", "vision_config", "audio_config")


class AVLlmModelTester:
    """transformers' model-tester pattern: the tiny config of one tower pairing, the inputs every check runs on, and
    what the checks expect of them. The rows are texts of different lengths, left-padded, each with an image, a video
    and an audio clip."""

    def __init__(self, vision: str, audio: str, text: str, batch_size: int = 3):
        self.vision, self.audio, self.text, self.batch_size = vision, audio, text, batch_size

    def get_config(self) -> AVLlmConfig:
        return tiny_config(self.vision, self.audio, self.text)

    def prepare_config_and_inputs(self) -> tuple[AVLlmConfig, dict, list[dict]]:
        """The config, the left-padded batch, and each of its rows alone, unpadded."""
        config = self.get_config()
        batch, rows = random_rows(config, ["all"] * self.batch_size, padding_side="left")
        return config, batch, rows

    def prepare_config_and_inputs_for_common(self) -> tuple[AVLlmConfig, dict]:
        config, batch, _ = self.prepare_config_and_inputs()
        return config, batch

    @staticmethod
    def mm_token_type_ids(config: AVLlmConfig, input_ids: torch.Tensor) -> torch.Tensor:
        """What the processor returns next to `input_ids`: each placeholder's modality code, 0 for text."""
        type_ids = torch.zeros_like(input_ids)
        for modality in ("image", "video", "audio"):
            type_ids[input_ids == getattr(config, f"{modality}_token_id")] = TOKEN_TYPE_IDS[modality]
        return type_ids

    @staticmethod
    def tower_output_counts(config: AVLlmConfig, modality: str) -> tuple[int, int]:
        """How many hidden states and attention maps the `"vision"` or `"audio"` tower returns when asked."""
        tower_config = getattr(config, f"{modality}_config")
        if tower_config.model_type == "clap_audio_model":  # the patch embedding and each stage; each block
            return len(tower_config.depths) + 1, sum(tower_config.depths)
        return tower_config.num_hidden_layers + 1, tower_config.num_hidden_layers

    @staticmethod
    def tower_sequence_length(config: AVLlmConfig, modality: str) -> int | None:
        """Tokens per item in the tower's hidden states (`None` for CLAP, whose states are feature maps)."""
        tower_config = getattr(config, f"{modality}_config")
        if modality == "vision":
            patches = (tower_config.image_size // tower_config.patch_size) ** 2
            return patches + int(tower_config.model_type == "clip_vision_model")  # CLIP's [CLS]
        if tower_config.model_type == "whisper":
            return tower_config.max_source_positions
        return None


def build(model_class, config: AVLlmConfig, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = model_class._from_config(config, **kwargs).eval()
    if model.can_generate():
        model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model


def first_output(outputs) -> torch.Tensor:
    """What transformers' common tests compare: the logits of a model with an LM head, else `last_hidden_state`."""
    return outputs.logits if hasattr(outputs, "logits") else outputs.last_hidden_state


def assert_same_structure(left, right):
    """Equal nested tuples of tensors (transformers' `test_model_outputs_equivalence`)."""
    if isinstance(left, torch.Tensor):
        torch.testing.assert_close(left, right, rtol=0, atol=0)
    elif left is None:
        assert right is None
    else:
        assert isinstance(right, tuple) and len(left) == len(right)
        for left_item, right_item in zip(left, right, strict=True):
            assert_same_structure(left_item, right_item)


class CommonModelChecks:
    """transformers' common expectations; a subclass names its `model_tester`."""

    model_tester: AVLlmModelTester
    generation = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)

    # -- configuration, save / load, initialisation

    def test_config_round_trip(self, tmp_path):
        config = self.model_tester.get_config()
        config.save_pretrained(tmp_path)
        for reloaded in (AVLlmConfig.from_pretrained(tmp_path), AVLlmConfig.from_dict(config.to_dict())):
            assert reloaded.to_dict() == config.to_dict()

    @pytest.mark.parametrize("model_class", MODEL_CLASSES)
    def test_save_load(self, model_class, tmp_path):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(model_class, config)
        with torch.no_grad():
            before = first_output(model(**inputs))
        model.save_pretrained(tmp_path)
        reloaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
        with torch.no_grad():
            torch.testing.assert_close(first_output(reloaded.eval()(**inputs)), before, rtol=0, atol=1e-5)

    def test_missing_keys_are_initialised_as_at_build(self, tmp_path):
        """A checkpoint lacking some keys (every other key of the towers, their first attention query projection,
        Whisper's position table, an LM projection, connector weights) loads those keys initialised exactly as building
        the model initialises them: fixed inits (ones, zeros, Whisper's sinusoids) to the same values, random inits
        with the same statistics (AVLlm is custom code to transformers, whose rule for custom code must not reach the
        towers, transformers' own classes)."""
        config = self.model_tester.get_config()
        built = build(AVLlmForConditionalGeneration, config, seed=0)
        other_build = build(AVLlmForConditionalGeneration, config, seed=1)  # what differs between the two is random
        built.save_pretrained(tmp_path)
        weights = load_file(tmp_path / "model.safetensors")
        tower_keys = sorted(key for key in weights if key.startswith(("model.vision_tower.", "model.audio_tower.")))
        dropped = set(tower_keys[::2])
        dropped |= {
            key for key in weights if key.endswith(("layers.0.self_attn.q_proj.weight", "embed_positions.weight"))
        }
        dropped |= {key for key in weights if key.startswith(("model.video_connector.", "model.audio_projector."))}
        save_file({key: value for key, value in weights.items() if key not in dropped}, tmp_path / "model.safetensors")

        loaded, info = AVLlmForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
        missing = info["missing_keys"]
        assert len(missing) == len(dropped)
        assert any("vision_tower" in key and key.endswith("layers.0.self_attn.q_proj.weight") for key in missing)
        built_state, other_state = built.state_dict(), other_build.state_dict()
        for key, value in loaded.state_dict().items():
            expected = built_state[key]
            if key not in missing or torch.equal(expected, other_state[key]):  # loaded, or a fixed init
                assert torch.equal(value, expected), key
            elif value.numel() > 1:  # a random init: the same distribution
                value, expected, count = value.double(), expected.double(), value.numel()
                assert abs(math.log(value.std() / expected.std())) < max(0.15, 5 / math.sqrt(2 * count)), key
                assert abs(value.mean() - expected.mean()) < 6 * expected.std() / math.sqrt(count) + 1e-6, key
        if config.audio_config.model_type == "whisper":
            positions = loaded.model.audio_tower.embed_positions.weight
            assert "model.audio_tower.embed_positions.weight" in missing
            assert torch.equal(positions, sinusoids(*positions.shape))

    # -- forward

    @pytest.mark.parametrize("model_class", MODEL_CLASSES)
    def test_batching_equivalence(self, model_class):
        """Each row of the batch alone (its padding, its media) gives what it gives in the batch."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(model_class, config)
        with torch.no_grad():
            batched = first_output(model(**inputs))
            for index in range(self.model_tester.batch_size):
                row = {key: value[index : index + 1] for key, value in inputs.items()}  # one of each medium a row
                valid = inputs["attention_mask"][index].bool()
                alone = first_output(model(**row))[0]
                torch.testing.assert_close(batched[index][valid], alone[valid], rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize("model_class", MODEL_CLASSES)
    def test_inputs_embeds_matches_input_ids(self, model_class):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(model_class, config)
        input_ids = inputs.pop("input_ids")
        embeds = model.get_input_embeddings()(input_ids)
        type_ids = self.model_tester.mm_token_type_ids(config, input_ids)
        with torch.no_grad():
            reference = first_output(model(input_ids=input_ids, **inputs))
            from_embeds = first_output(model(inputs_embeds=embeds, mm_token_type_ids=type_ids, **inputs))
        torch.testing.assert_close(from_embeds, reference)

    @pytest.mark.parametrize("model_class", MODEL_CLASSES)
    def test_resize_token_embeddings(self, model_class):
        """Growing the vocabulary keeps the old rows, updates the text config, keeps tied weights tied and the
        model running (shrinking is not checked: the placeholder tokens are the tiny vocabulary's last ids)."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(model_class, config)
        vocab_size = config.text_config.vocab_size
        old_rows = model.get_input_embeddings().weight.detach().clone()
        model.resize_token_embeddings(vocab_size + 10)
        embeddings = model.get_input_embeddings().weight
        assert model.config.text_config.vocab_size == vocab_size + 10 == embeddings.shape[0]
        assert torch.equal(embeddings[:vocab_size], old_rows)
        model.resize_token_embeddings(vocab_size + 11, pad_to_multiple_of=8)
        assert model.get_input_embeddings().weight.shape[0] == model.config.text_config.vocab_size == 144
        if model_class is AVLlmForConditionalGeneration:
            assert model.get_output_embeddings().weight.shape[0] == 144
            if config.tie_word_embeddings:
                assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
            outputs = model(**inputs, labels=inputs["input_ids"])
            assert outputs.logits.shape[-1] == 144 and torch.isfinite(outputs.loss)
        else:
            assert torch.isfinite(model(**inputs).last_hidden_state).all()

    def test_attention_implementation_dispatch(self):
        """One implementation for every sub-model, or one per sub-config (a tower without SDPA, CLAP, keeps eager);
        each sub-model runs with its own, and eager and SDPA agree."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        eager = build(AVLlmForConditionalGeneration, config, attn_implementation="eager")
        audio_sdpa = "sdpa" if tower_family(config.audio_config).tower_class._supports_sdpa else "eager"
        per_config = {"text_config": "sdpa", "vision_config": "sdpa", "audio_config": audio_sdpa}
        # `_from_config` sets the implementation on the config it is given: a config of its own for each model
        sdpa = build(AVLlmForConditionalGeneration, self.model_tester.get_config(), attn_implementation=per_config)
        for model, wanted in ((eager, dict.fromkeys(SUB_CONFIGS, "eager")), (sdpa, per_config)):
            sub_models = {
                "text_config": model.model.language_model,
                "vision_config": model.model.vision_tower,
                "audio_config": model.model.audio_tower,
            }
            for name, sub_model in sub_models.items():
                assert getattr(model.config, name)._attn_implementation == wanted[name], name
                assert sub_model.config._attn_implementation == wanted[name], name
        valid = inputs["attention_mask"].bool()  # padding positions attend to nothing: each implementation differs
        with torch.no_grad():
            torch.testing.assert_close(
                sdpa(**inputs).logits[valid], eager(**inputs).logits[valid], rtol=1e-4, atol=1e-5
            )

    @pytest.mark.parametrize("model_class", MODEL_CLASSES)
    def test_hidden_states_and_attentions_output(self, model_class):
        """Asked for (as keywords or in the sub-configs), the language model's hidden states and attentions come
        back with the right count and shapes, and so do the towers' in `image_outputs` / `video_outputs` /
        `audio_outputs`; not asked for, none; asking changes no output."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(model_class, config, attn_implementation=EAGER)
        batch_size, length = inputs["input_ids"].shape
        text = config.text_config
        with torch.no_grad():
            plain = model(**inputs)
            outputs = model(**inputs, output_hidden_states=True, output_attentions=True)
        assert plain.hidden_states is None and plain.attentions is None
        for name in ("image_outputs", "video_outputs", "audio_outputs"):
            assert getattr(plain, name).hidden_states is None and getattr(plain, name).attentions is None
        torch.testing.assert_close(first_output(outputs), first_output(plain))
        assert len(outputs.hidden_states) == text.num_hidden_layers + 1
        assert all(state.shape == (batch_size, length, text.hidden_size) for state in outputs.hidden_states)
        assert len(outputs.attentions) == text.num_hidden_layers
        expected = (batch_size, text.num_attention_heads, length, length)
        assert all(attention.shape == expected for attention in outputs.attentions)
        self.check_tower_outputs(config, outputs.image_outputs, "vision", batch_size)
        self.check_tower_outputs(config, outputs.video_outputs, "vision", batch_size * config.num_frames)
        self.check_tower_outputs(config, outputs.audio_outputs, "audio", batch_size * config.num_audio_segments)

        for name in SUB_CONFIGS:  # the same through the sub-models' configs
            getattr(model.config, name).output_hidden_states = True
            getattr(model.config, name).output_attentions = True
        with torch.no_grad():
            from_configs = model(**inputs)
        assert len(from_configs.hidden_states) == len(outputs.hidden_states)
        assert len(from_configs.attentions) == len(outputs.attentions)
        self.check_tower_outputs(config, from_configs.video_outputs, "vision", batch_size * config.num_frames)
        self.check_tower_outputs(config, from_configs.audio_outputs, "audio", batch_size * config.num_audio_segments)

    def check_tower_outputs(self, config, outputs, modality: str, num_items: int):
        """`hidden_states` / `attentions` of a `get_*_features` output: the tower's count, one row per item the tower
        ran on (image, frame or audio segment), and the tower's sequence length and width where it has them."""
        num_hidden_states, num_attentions = self.model_tester.tower_output_counts(config, modality)
        length = self.model_tester.tower_sequence_length(config, modality)
        tower_config = getattr(config, f"{modality}_config")
        assert len(outputs.hidden_states) == num_hidden_states and len(outputs.attentions) == num_attentions
        for state in outputs.hidden_states:
            assert state.shape[0] == num_items
            if length is not None:
                assert state.shape[1:] == (length, tower_family(tower_config).width(tower_config))
        for attention in outputs.attentions:
            assert attention.shape[0] % num_items == 0  # CLAP's rows are windows of the items
            if length is not None:
                assert attention.shape == (num_items, tower_config.num_attention_heads, length, length)

    @pytest.mark.parametrize("model_class", MODEL_CLASSES)
    def test_tuple_and_dict_outputs_agree(self, model_class):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(model_class, config, attn_implementation=EAGER)
        flags = dict(output_hidden_states=True, output_attentions=True, use_cache=False)
        with torch.no_grad():
            as_dict = model(**inputs, **flags)
            as_tuple = model(**inputs, return_dict=False, **flags)
        assert isinstance(as_tuple, tuple)
        assert_same_structure(as_dict.to_tuple(), as_tuple)

    def test_logits_to_keep(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(AVLlmForConditionalGeneration, config)
        positions = torch.tensor([0, 5, inputs["input_ids"].shape[1] - 1])
        with torch.no_grad():
            full = model(**inputs).logits
            assert torch.equal(model(**inputs, logits_to_keep=0).logits, full)
            torch.testing.assert_close(model(**inputs, logits_to_keep=1).logits, full[:, -1:])
            torch.testing.assert_close(model(**inputs, logits_to_keep=positions).logits, full[:, positions])

    # -- get_*_features

    @pytest.mark.parametrize("return_dict", [True, False, None])
    def test_get_features_output(self, return_dict):
        """Each `get_*_features` gives one `last_hidden_state` row and one `pooler_output` row per input item, as a
        `BaseModelOutputWithPooling` or (`return_dict=False`) a tuple of the same tensors."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(AVLlmForConditionalGeneration, config)
        expected_tokens = {"image": config.num_image_tokens, "video": config.num_video_tokens}
        expected_tokens["audio"] = config.num_audio_tokens
        media = {"image": "pixel_values", "video": "pixel_values_videos", "audio": "input_features"}
        with torch.no_grad():
            for modality, key in media.items():
                outputs = getattr(model, f"get_{modality}_features")(inputs[key], return_dict=return_dict)
                if return_dict is False:
                    assert isinstance(outputs, tuple)
                    last_hidden_state, pooler_output = outputs[:2]
                else:
                    last_hidden_state, pooler_output = outputs.last_hidden_state, outputs.pooler_output
                assert last_hidden_state.shape[0] == self.model_tester.batch_size, modality
                expected = (self.model_tester.batch_size, expected_tokens[modality], config.text_config.hidden_size)
                assert pooler_output.shape == expected, modality

    def test_get_features_hidden_states_and_attentions_are_the_towers(self):
        """Asked for, `get_*_features` (of either model class) return the tower's own hidden states and attentions
        (transformers' classes run on the same images, frames and segments), without changing their features."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(AVLlmForConditionalGeneration, config, attn_implementation=EAGER)
        flags = dict(output_hidden_states=True, output_attentions=True)
        frames = {
            "image": inputs["pixel_values"],
            "video": inputs["pixel_values_videos"].flatten(0, 1),
            "audio": inputs["input_features"].flatten(0, 1),
        }
        media = {"image": "pixel_values", "video": "pixel_values_videos", "audio": "input_features"}
        with torch.no_grad():
            for modality, key in media.items():
                tower = model.model.audio_tower if modality == "audio" else model.model.vision_tower
                reference = tower(frames[modality], **flags)
                for owner in (model, model.model):
                    features = getattr(owner, f"get_{modality}_features")
                    outputs, plain = features(inputs[key], **flags), features(inputs[key])
                    assert_same_structure(outputs.hidden_states, reference.hidden_states)
                    assert_same_structure(outputs.attentions, reference.attentions)
                    torch.testing.assert_close(outputs.pooler_output, plain.pooler_output, rtol=0, atol=0)
                    self.check_tower_outputs(
                        config, outputs, "audio" if modality == "audio" else "vision", len(frames[modality])
                    )

    def test_audio_features_have_one_row_per_audio(self):
        """`last_hidden_state` row i is audio i's time sequence (its segments' sequences one after the other), the
        row it gets alone; `segment_hidden_states` keeps one row per segment, each the tower's sequence for it."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(AVLlmForConditionalGeneration, config)
        features = inputs["input_features"]
        num_audios, num_segments = features.shape[:2]
        family = tower_family(config.audio_config)
        with torch.no_grad():
            outputs = model.get_audio_features(features)
            assert isinstance(outputs, AVLlmAudioFeaturesOutput)
            segments = family.segment_sequence(model.model.audio_tower, features.flatten(0, 1)).last_hidden_state
            assert outputs.segment_hidden_states.shape == segments.shape
            torch.testing.assert_close(outputs.segment_hidden_states, segments)
            sequence_length, width = segments.shape[1:]
            assert outputs.last_hidden_state.shape == (num_audios, num_segments * sequence_length, width)
            for index in range(num_audios):
                own_segments = segments[index * num_segments : (index + 1) * num_segments]
                torch.testing.assert_close(outputs.last_hidden_state[index], own_segments.flatten(0, 1))
                alone = model.get_audio_features(features[index : index + 1])
                torch.testing.assert_close(alone.last_hidden_state[0], outputs.last_hidden_state[index])

    # -- generation

    def test_left_padded_generation_equals_unpadded(self):
        config, batch, rows = self.model_tester.prepare_config_and_inputs()
        model = build(AVLlmForConditionalGeneration, config)
        generated = model.generate(**batch, **self.generation)[:, batch["input_ids"].shape[1] :]
        for index, row in enumerate(rows):
            alone = model.generate(**row, **self.generation)[:, row["input_ids"].shape[1] :]
            assert torch.equal(generated[index], alone[0]), index

    def test_static_cache_generation_equals_dynamic(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(AVLlmForConditionalGeneration, config)
        dynamic = model.generate(**inputs, **self.generation)
        static = model.generate(
            **inputs, cache_implementation="static", return_dict_in_generate=True, **self.generation
        )
        cache = static.get("cache", static.get("past_key_values"))  # the 5.24 / 5.23 name
        assert isinstance(cache, StaticCache)
        assert torch.equal(static.sequences, dynamic)

    def test_generate_with_and_without_cache(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(AVLlmForConditionalGeneration, config)
        assert torch.equal(
            model.generate(**inputs, use_cache=False, **self.generation), model.generate(**inputs, **self.generation)
        )

    def test_generate_from_inputs_embeds(self):
        """Generation from `inputs_embeds` (placeholders located by `mm_token_type_ids`) gives the new tokens that
        generation from `input_ids` gives."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(AVLlmForConditionalGeneration, config)
        input_ids = inputs.pop("input_ids")
        from_ids = model.generate(input_ids=input_ids, **inputs, **self.generation)[:, input_ids.shape[1] :]
        type_ids = self.model_tester.mm_token_type_ids(config, input_ids)
        embeds = model.get_input_embeddings()(input_ids)
        from_embeds = model.generate(inputs_embeds=embeds, mm_token_type_ids=type_ids, **inputs, **self.generation)
        assert torch.equal(from_embeds, from_ids)


class TestClipClapLlama(CommonModelChecks):
    model_tester = AVLlmModelTester("clip", "clap", "llama")


class TestSiglipWhisperQwen2(CommonModelChecks):
    model_tester = AVLlmModelTester("siglip", "whisper", "qwen2")


@pytest.mark.parametrize(
    "method",
    [
        AVLlmModel.forward,
        AVLlmForConditionalGeneration.forward,
        *(getattr(cls, f"get_{kind}_features") for cls in MODEL_CLASSES for kind in ("image", "video", "audio")),
    ],
)
def test_keyword_arguments_are_transformers_kwargs(method):
    """transformers reads the `**kwargs: Unpack[TransformersKwargs]` annotation to know that a model takes
    `output_attentions` / `output_hidden_states` and the other standard keywords."""
    assert inspect.signature(method).parameters["kwargs"].annotation == Unpack[TransformersKwargs]
