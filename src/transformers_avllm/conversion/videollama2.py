"""VideoLLaMA 2 / 2.1 checkpoints (DAMO-NLP-SG/VideoLLaMA2, audio-visual branch) -> AVLlm folders.

`convert_videollama2(checkpoint, output)` reads a checkpoint folder as VideoLLaMA 2's trainer saves it (config.json of
a `videollama2_*` model, safetensors or `.bin` weights, one file or shards with an index, its tokenizer) and writes an
AVLlm folder through `export_pretrained`: config, safetensors weights, the processor (the vision tower's image
processor, BEATs' feature extractor, VideoLLaMA 2's frame and audio settings), the tokenizer with AVLlm's modality
and placeholder tokens, the chat template of the LLM family with VideoLLaMA 2's system prompt, and a model card naming
the source. docs/models.md says what the released model is, how it maps onto AVLlm, and what is verified.

Weights are converted shard by shard (each source shard is read, renamed and written before the next is opened) and
then loaded once, so no more than one full copy of the model is in memory at a time.

Key mapping, reference -> AVLlm:

- `model.embed_tokens.*`, `model.layers.*`, `model.norm.*` (the LLM) -> `model.language_model.*`; `lm_head.*` kept
- `model.vision_tower.vision_tower.vision_model.*` (a CLIP / SigLIP vision model of transformers 4) ->
  `model.vision_tower.*` (transformers 5's vision models have no `vision_model` level); taken from `mm_vision_tower`'s
  checkpoint when the checkpoint holds no vision tower weights
- `model.mm_projector.*` (STC) -> `model.video_connector.*` (same module names)
- `model.audio_tower.*` (BEATs) -> `model.audio_tower.*` renamed by `conversion.beats`
- `model.mm_projector_a.{0,2}.*` (mlp2x_gelu) -> `model.audio_projector.projector.linear_{1,2}.*`;
  `model.mm_projector_a.{weight,bias}` (linear) -> `model.audio_projector.projector.*`
"""

import contextlib
import json
import pickle
import re
import tempfile
from pathlib import Path

import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, GenerationConfig

from ..components import load_tower
from ..export import export_pretrained
from ..models.avllm import (
    MODALITY_TOKENS,
    PLACEHOLDER_TOKENS,
    RENDER_CONTENT_MACRO,
    TOWER_FAMILIES,
    AVLlmBeatsConfig,
    AVLlmConfig,
    AVLlmForConditionalGeneration,
    AVLlmProcessor,
    tower_family,
)
from .beats import (
    SHARED_POSITION_BIAS,
    beats_config_from_reference,
    check_shared_position_bias,
    rename_beats_key,
    rename_beats_state_dict,
)

# The reference code the conversion follows (and the fixture of tests/test_videollama2.py was recorded with).
REFERENCE = "https://github.com/DAMO-NLP-SG/VideoLLaMA2/tree/8cedfbda23e779246112cb963416b95415448a91"

# Reference model_type -> the LLM's model_type (`videollama2/model/__init__.py`: plain "videollama2" is Mistral).
LLM_TYPES = {
    "videollama2": "mistral",
    "videollama2_mistral": "mistral",
    "videollama2_mixtral": "mixtral",
    "videollama2_qwen2": "qwen2",
    "videollama2_llama": "llama",
    "videollama2_gemma2": "gemma2",
    "videollama2_phi3": "phi3",
}
# `mm_projector_type` -> `stc_padding`: the first release's `stc_connector` pads its Conv3d by 1, VideoLLaMA2.1's
# `stc_connector_v35` by 0 (both depth 4, downsample (2, 2, 2): hard-coded in `projector.py`).
STC_PADDING = {"stc_connector": 1, "stc_connector_v35": 0}
AUDIO_PROJECTOR_TYPES = ("linear", "mlp2x_gelu")
# config.json entries of VideoLLaMA 2's own (multimodal and training) settings; the rest configures the LLM.
REFERENCE_SETTING_PREFIXES = ("mm_", "tune_", "freeze_", "tokenizer_")
REFERENCE_SETTINGS = {
    "architectures",
    "model_type",
    "hidden_size_a",
    "image_aspect_ratio",
    "num_frames",
    "use_mm_proj",
}
DEFAULT_NUM_FRAMES = 8  # `constants.NUM_FRAMES`, used when config.json has no `num_frames`
BEATS_SAMPLING_RATE, BEATS_WINDOW_SAMPLES, BEATS_HOP_SAMPLES = 16000, 400, 160

# The system prompt `mm_infer` gives Mistral / Mixtral models (Llama 2's default); Qwen2 models get none, so the
# Qwen2 template's own default applies.
LLAMA2_SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering something "
    "not correct. If you don't know the answer to a question, please don't share false information."
)
# Qwen2-Instruct's ChatML (the template VideoLLaMA2.1's tokenizer carries), over content items; assistant turns inside
# `{% generation %}` up to the newline after `<|im_end|>`, which VideoLLaMA 2's `preprocess` trains on too.
CHATML_TEMPLATE = RENDER_CONTENT_MACRO + (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' ~ message['role'] ~ '\\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{ render(message['content']) ~ '<|im_end|>\\n' }}{%- endgeneration -%}"
    "{%- else -%}{{ render(message['content']) ~ '<|im_end|>\\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
# Llama 2 turns (VideoLLaMA 2's `conv_mistral_instruct`, SeparatorStyle.LLAMA_2) with the system prompt of `mm_infer`
# by default; the tokenizer adds the BOS token.
LLAMA2_TEMPLATE = RENDER_CONTENT_MACRO + (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system = render(messages[0]['content']) -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = " + json.dumps(LLAMA2_SYSTEM_PROMPT) + " -%}{%- set turns = messages -%}"
    "{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '[INST] ' ~ ('<<SYS>>\\n' ~ system ~ '\\n<</SYS>>\\n\\n' if loop.first else '') }}"
    "{{ render(message['content']) ~ ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ ' ' }}{%- generation -%}{{ render(message['content']) ~ ' ' ~ eos_token }}{%- endgeneration -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
)
CHAT_TEMPLATES = {"qwen2": CHATML_TEMPLATE, "mistral": LLAMA2_TEMPLATE, "mixtral": LLAMA2_TEMPLATE}

# Reference key prefix -> AVLlm key prefix, first match wins (the LLM's own keys are the fallback `model.`).
KEY_PREFIXES = [
    (r"^lm_head\.", "lm_head."),
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^model\.mm_projector\.", "model.video_connector."),
    (r"^model\.mm_projector_a\.0\.", "model.audio_projector.projector.linear_1."),
    (r"^model\.mm_projector_a\.2\.", "model.audio_projector.projector.linear_2."),
    (r"^model\.mm_projector_a\.(?=(weight|bias)$)", "model.audio_projector.projector."),
    (r"^model\.(?!vision_tower\.|audio_tower\.|mm_projector)", "model.language_model."),
]
AUDIO_TOWER_PREFIX = "model.audio_tower."
AUDIO_PROJECTOR_PREFIX = "model.audio_projector."
ADDED_AUDIO_PROJECTOR = "mlp2x_gelu"  # the audio projector of every VideoLLaMA 2 AV script
# Buffers that older transformers releases saved and that are recomputed now.
RECOMPUTED_BUFFERS = re.compile(r"(rotary_emb\.inv_freq|position_ids)$")
LISTED_KEYS = 50  # keys an error names at most per kind


class VideoLLaMA2ConversionError(ValueError):
    """A VideoLLaMA 2 checkpoint this converter cannot turn into an AVLlm folder (names the file and what is wrong)."""


def _listed(keys) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - LISTED_KEYS} more" if len(keys) > LISTED_KEYS else ""
    return ", ".join(keys[:LISTED_KEYS]) + more


def read_reference_config(checkpoint: Path) -> dict:
    """The checkpoint's config.json, checked for what the converter supports."""
    path = checkpoint / "config.json"
    if not path.is_file():
        raise VideoLLaMA2ConversionError(f"{checkpoint}: no config.json (not a VideoLLaMA 2 checkpoint folder)")
    reference = json.loads(path.read_text())
    model_type = reference.get("model_type")
    if model_type not in LLM_TYPES:
        raise VideoLLaMA2ConversionError(f"{path}: model_type {model_type!r} is not one of {sorted(LLM_TYPES)}")
    projector = reference.get("mm_projector_type")
    if projector not in STC_PADDING:
        raise VideoLLaMA2ConversionError(
            f"{path}: mm_projector_type {projector!r} is not supported (AVLlm has VideoLLaMA 2's "
            f"{sorted(STC_PADDING)})"
        )
    if reference.get("mm_vision_select_feature", "patch") != "patch":
        raise VideoLLaMA2ConversionError(f"{path}: mm_vision_select_feature must be 'patch'")
    audio_projector = reference.get("mm_projector_a_type")
    if reference.get("mm_audio_tower") and audio_projector not in AUDIO_PROJECTOR_TYPES:
        raise VideoLLaMA2ConversionError(
            f"{path}: mm_projector_a_type {audio_projector!r} is not one of {AUDIO_PROJECTOR_TYPES}"
        )
    return reference


def text_config_from_reference(reference: dict):
    """The LLM's config: config.json without VideoLLaMA 2's own settings, as the LLM's model_type."""
    llm_settings = {
        key: value
        for key, value in reference.items()
        if key not in REFERENCE_SETTINGS and not key.startswith(REFERENCE_SETTING_PREFIXES)
    }
    return AutoConfig.for_model(LLM_TYPES[reference["model_type"]], **llm_settings)


def resolve_vision_tower(checkpoint: Path, reference: dict, vision_tower: str | None) -> str:
    """Where the vision tower's config, image processor (and weights, when the checkpoint lacks them) are: the given
    `vision_tower`, else `mm_vision_tower` (a path relative to the checkpoint, an absolute path or a Hub id)."""
    name = vision_tower or reference.get("mm_vision_tower")
    if not name:
        raise VideoLLaMA2ConversionError(f"{checkpoint}/config.json names no mm_vision_tower; pass vision_tower=")
    local = checkpoint / name
    return str(local) if local.is_dir() else name


def vision_config_from(source: str):
    """The vision tower config of a tower checkpoint or of the full CLIP / SigLIP checkpoint that holds it."""
    config = AutoConfig.from_pretrained(source)
    full_models = {family.full_model[0] for family in TOWER_FAMILIES.values() if family.full_model}
    config = config.vision_config if config.model_type in full_models else config
    config.name_or_path = ""  # not the converting machine's path in the published config
    return config


def beats_frames(audio_seconds: float) -> int:
    """fbank frames of `audio_seconds` of 16 kHz audio (25 ms windows every 10 ms): 2998 for VideoLLaMA 2's 30 s."""
    samples = round(audio_seconds * BEATS_SAMPLING_RATE)
    if samples < BEATS_WINDOW_SAMPLES:
        raise VideoLLaMA2ConversionError(f"audio_seconds={audio_seconds} is shorter than one 25 ms fbank window")
    return (samples - BEATS_WINDOW_SAMPLES) // BEATS_HOP_SAMPLES + 1


def avllm_config_from_reference(
    reference: dict, text_config, vision_config, beats_config: AVLlmBeatsConfig | None, tokenizer
) -> AVLlmConfig:
    """The AVLlm config of VideoLLaMA 2's layout: STC on `num_frames` frames (an image repeated to them), every BEATs
    patch an audio token (one segment), video then audio tokens at a video's placeholder."""
    num_frames = reference.get("num_frames") or DEFAULT_NUM_FRAMES
    audio = {}
    if beats_config is not None:
        if (reference.get("mm_hidden_size_a") or beats_config.hidden_size) != beats_config.hidden_size:
            raise VideoLLaMA2ConversionError(
                f"config.json's mm_hidden_size_a ({reference['mm_hidden_size_a']}) is not the BEATs width "
                f"({beats_config.hidden_size}); pass the tower's BEATs config (beats_config=)"
            )
        audio = {
            "audio_config": beats_config,
            "audio_projector_type": reference["mm_projector_a_type"],
            "num_audio_segments": 1,
            "audio_tokens_per_segment": beats_config.num_patches,
        }
    return AVLlmConfig(
        vision_config=vision_config,
        text_config=text_config,
        connector_type="stc",
        stc_padding=STC_PADDING[reference["mm_projector_type"]],
        stc_depth=4,
        stc_downsample=(2, 2, 2),
        vision_feature_layer=reference.get("mm_vision_select_layer", -2),
        num_frames=num_frames,
        frames_per_image=num_frames,
        **{f"{kind}_token_id": tokenizer.convert_tokens_to_ids(token) for kind, token in PLACEHOLDER_TOKENS.items()},
        **audio,
    )


def avllm_key(key: str) -> str | None:
    """AVLlm's key of a reference checkpoint key (see the module docstring); `None` for a key dropped on purpose
    (the BEATs classifier, the copies of its shared position bias); `KeyError` for a key the mapping does not know."""
    if key.startswith(AUDIO_TOWER_PREFIX):
        renamed = rename_beats_key(key[len(AUDIO_TOWER_PREFIX) :])
        return None if renamed is None else AUDIO_TOWER_PREFIX + renamed
    for pattern, replacement in KEY_PREFIXES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    raise KeyError(key)


def checkpoint_shards(checkpoint: Path) -> list[Path]:
    """The weight files of a checkpoint: those of a safetensors or `.bin` index, else the single file."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = checkpoint / index_name
        if index.is_file():
            return [checkpoint / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (checkpoint / single).is_file():
            return [checkpoint / single]
    raise VideoLLaMA2ConversionError(
        f"{checkpoint}: no weights (model.safetensors, pytorch_model.bin, or an index of their shards)"
    )


@contextlib.contextmanager
def open_shard(path: Path):
    """A weight file as a `{key: tensor}` mapping whose tensors are read when asked for: safetensors lazily,
    `.bin` memory-mapped with `torch.load(weights_only=True)` (no pickled code is run)."""
    if path.suffix == ".safetensors":
        with safe_open(path, framework="pt") as handle:
            yield _SafetensorsShard(handle)
        return
    try:
        state_dict = _load_weights_only(path, mmap=True)
    except RuntimeError as err:  # files of torch's legacy (pre-1.6) format cannot be memory-mapped
        if "mmap" not in str(err):
            raise
        state_dict = _load_weights_only(path)
    yield state_dict
    del state_dict


def _load_weights_only(path: Path, mmap: bool = False):
    """`torch.load(weights_only=True)`: tensors and plain containers only, no pickled code run."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        message = f"{path}: holds more than tensors (torch.load(weights_only=True) refused it)"
        raise VideoLLaMA2ConversionError(message) from err


class _SafetensorsShard:
    def __init__(self, handle):
        self.handle = handle

    def keys(self):
        return self.handle.keys()

    def shape(self, key) -> tuple[int, ...]:
        return tuple(self.handle.get_slice(key).get_shape())

    def __getitem__(self, key) -> torch.Tensor:
        return self.handle.get_tensor(key)


def _shape(shard, key) -> tuple[int, ...]:
    return shard.shape(key) if isinstance(shard, _SafetensorsShard) else tuple(shard[key].shape)


def expected_shapes(config: AVLlmConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the weights an `AVLlmForConditionalGeneration` of `config` loads (built on the meta device)."""
    with torch.device("meta"):
        model = AVLlmForConditionalGeneration(config)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight")
    return shapes


def plan_weights(
    shards: list[Path],
    expected: dict[str, tuple[int, ...]],
    supplied: dict[str, tuple[int, ...]] | None = None,
    fresh: tuple[str, ...] = (),
) -> bool:
    """Checks every key of the checkpoint (and the `supplied` key -> shape of weights from elsewhere) against the AVLlm
    model before anything is written: raises `VideoLLaMA2ConversionError` naming the unknown keys, the missing ones
    (but those under the `fresh` prefixes, newly initialised) and those of another shape. Returns whether the vision
    tower's weights must come from its own checkpoint (the checkpoint holds none of them)."""
    unknown, mismatched, produced = [], [], set()
    for key, shape in (supplied or {}).items():
        if key not in expected:
            unknown.append(key)
        elif shape != expected[key]:
            mismatched.append(f"{key} {shape} -> {expected[key]}")
        produced.add(key)
    for path in shards:
        with open_shard(path) as shard:
            for key in shard.keys():
                try:
                    ours = avllm_key(key)
                except KeyError:
                    unknown.append(f"{key} ({path.name})")
                    continue
                if ours is None or (ours not in expected and RECOMPUTED_BUFFERS.search(ours)):
                    continue
                if ours not in expected:
                    unknown.append(f"{key} ({path.name})")
                elif _shape(shard, key) != expected[ours]:
                    mismatched.append(f"{key} {_shape(shard, key)} -> {ours} {expected[ours]}")
                produced.add(ours)
    vision_keys = {key for key in expected if key.startswith("model.vision_tower.")}
    vision_from_tower = not (produced & vision_keys)
    missing = set(expected) - produced - (vision_keys if vision_from_tower else set())
    missing = {key for key in missing if not key.startswith(fresh)}
    kinds = {"unknown keys": unknown, "missing keys": missing, "keys of another shape": mismatched}
    problems = [f"{len(items)} {kind}: {_listed(items)}" for kind, items in kinds.items() if items]
    if problems:
        raise VideoLLaMA2ConversionError(f"{shards[0].parent}: " + "; ".join(problems))
    return vision_from_tower


def write_converted_shards(
    shards: list[Path], folder: Path, keys: set[str], dtype: torch.dtype, extra_shards: tuple[dict, ...] = ()
) -> None:
    """Writes the checkpoint's weights that AVLlm loads (`keys`, in its names) to `folder` as safetensors in `dtype`,
    one output shard per source shard, then one per dict of `extra_shards` (weights from elsewhere, in AVLlm's
    names), with an index. Only one source shard is in memory at a time."""
    total = len(shards) + len(extra_shards)
    names = [f"model-{index:05d}-of-{total:05d}.safetensors" for index in range(1, total + 1)]
    weight_map, bias_copies, total_size = {}, {}, 0
    for path, name in zip(shards, names, strict=False):
        converted = {}
        with open_shard(path) as shard:
            for key in shard.keys():
                beats_key = key.removeprefix(AUDIO_TOWER_PREFIX)
                if SHARED_POSITION_BIAS.match(beats_key):  # tiny: kept to check that every layer's copy is equal
                    bias_copies[beats_key] = shard[key].clone()
                ours = avllm_key(key)
                if ours in keys:
                    converted[ours] = shard[key].to(dtype).contiguous()
        total_size += _save_shard(converted, folder / name, weight_map)
        del converted
    check_shared_position_bias(bias_copies)
    for weights, name in zip(extra_shards, names[len(shards) :], strict=True):
        total_size += _save_shard({key: value.to(dtype) for key, value in weights.items()}, folder / name, weight_map)
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _save_shard(tensors: dict[str, torch.Tensor], path: Path, weight_map: dict[str, str]) -> int:
    """Saves a shard, records its keys in `weight_map`; returns its size in bytes."""
    tensors = {key: value.contiguous() for key, value in tensors.items()}
    save_file(tensors, path, metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(tensors, path.name))
    return sum(value.numel() * value.element_size() for value in tensors.values())


def load_beats_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Microsoft's BEATs checkpoint (`{"cfg": ..., "model": state_dict}`, what VideoLLaMA 2's A1 stage starts from),
    read with `torch.load(weights_only=True)`: its reference config and its state dict in AVLlm's names (under
    `model.audio_tower.`)."""
    checkpoint = _load_weights_only(Path(path))
    if not isinstance(checkpoint, dict) or not {"cfg", "model"} <= set(checkpoint):
        raise VideoLLaMA2ConversionError(f"{path}: not a BEATs checkpoint (a dict with 'cfg' and 'model')")
    renamed = rename_beats_state_dict(checkpoint["model"])
    return checkpoint["cfg"], {AUDIO_TOWER_PREFIX + key: value for key, value in renamed.items()}


def add_media_tokens(tokenizer) -> None:
    """Adds AVLlm's modality tokens and placeholders as special tokens (VideoLLaMA 2 has none in its vocabulary; as
    special tokens they split the text around them as its `tokenizer_multimodal_token` does)."""
    new_tokens = list(MODALITY_TOKENS.values()) + list(PLACEHOLDER_TOKENS.values())
    tokenizer.add_special_tokens({"extra_special_tokens": new_tokens}, replace_extra_special_tokens=False)


def grow_vocabulary(model: AVLlmForConditionalGeneration, size: int) -> None:
    """Resizes the embeddings to `size` rows (Mistral's 32000-token vocabulary has no room for the new tokens), the
    new input and output rows set to the mean of the existing ones."""
    old_size = model.config.text_config.vocab_size
    model.resize_token_embeddings(size, mean_resizing=False)
    embeddings = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]
    with torch.no_grad():
        for weight in {id(weight): weight for weight in embeddings}.values():
            weight[old_size:] = weight[:old_size].mean(dim=0)


def convert_videollama2(
    checkpoint: str | Path,
    output: str | Path,
    *,
    vision_tower: str | None = None,
    beats_config: str | Path | dict | None = None,
    audio_tower: str | Path | None = None,
    audio_seconds: float = 30.0,
    dtype: str | torch.dtype | None = None,
    chat_template: str | None = None,
    pad_to_square: bool = False,
    base_model: str | None = None,
    repo_id: str | None = None,
    license: str = "apache-2.0",
) -> Path:
    """Converts a VideoLLaMA 2 / 2.1 checkpoint folder into an AVLlm folder at `output`; returns it.

    Args:
        vision_tower: folder or Hub id of the vision tower (default: config.json's `mm_vision_tower`, relative to the
            checkpoint when such a folder exists there): its config and image processor, and its weights when the
            checkpoint holds none.
        beats_config: BEATs' reference config (a dict, or a JSON file of `BEATsConfig` fields such as a Microsoft
            checkpoint's `cfg`) when the audio tower is not VideoLLaMA 2's default BEATs (which it rebuilds with
            `BEATsConfig()`).
        audio_tower: a Microsoft BEATs checkpoint (`.pt` of `{"cfg", "model"}`) to add to a video-only checkpoint,
            with a new `mlp2x_gelu` audio projector: the starting point of VideoLLaMA 2's A1 stage
            (VideoLLaMA2.1-7B-16F + `BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt`).
        audio_seconds: length of the audio window (VideoLLaMA 2: 30 s = 2998 fbank frames = 1496 audio tokens).
        dtype: dtype of the converted weights (default: config.json's `torch_dtype`).
        chat_template: a Jinja chat template over content items; default: the LLM family's (Qwen2's ChatML, Llama 2
            turns with VideoLLaMA 2's system prompt for Mistral / Mixtral).
        pad_to_square: the processor pads frames to squares (VideoLLaMA 2 trains so; its inference does not).
        base_model: the source's Hub id for the model card (e.g. `DAMO-NLP-SG/VideoLLaMA2.1-7B-AV`).
        repo_id, license: for the model card.
    """
    checkpoint, output = Path(checkpoint), Path(output)
    reference = read_reference_config(checkpoint)
    llm_type = LLM_TYPES[reference["model_type"]]
    template = chat_template or CHAT_TEMPLATES.get(llm_type)
    if template is None:
        raise VideoLLaMA2ConversionError(
            f"{checkpoint}: no built-in chat template for a {llm_type} LLM; pass chat_template= (a Jinja template "
            "over content items, see processing_avllm.RENDER_CONTENT_MACRO)"
        )
    dtype = dtype or reference.get("torch_dtype") or torch.float32
    dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(dtype, torch.dtype):
        raise VideoLLaMA2ConversionError(f"dtype must name a torch dtype (bfloat16, float16, float32), got {dtype!r}")
    shards = checkpoint_shards(checkpoint)

    text_config = text_config_from_reference(reference)
    # (without `config=`: transformers 5.23 would then pick the tokenizer class of the LLM's model type over the one
    # tokenizer_config.json names; it warns that config.json's model type is unknown to it, which is expected)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    add_media_tokens(tokenizer)
    vision_source = resolve_vision_tower(checkpoint, reference, vision_tower)
    added_audio = {}
    if audio_tower is not None:
        if reference.get("mm_audio_tower") or beats_config is not None:
            raise VideoLLaMA2ConversionError(
                f"{checkpoint}: audio_tower adds BEATs to a video-only checkpoint (with its own config); this one has "
                "an audio tower already, or beats_config was given too"
            )
        beats_config, added_audio = load_beats_checkpoint(audio_tower)
        reference = {**reference, "mm_audio_tower": str(audio_tower), "mm_projector_a_type": ADDED_AUDIO_PROJECTOR}
    beats = None
    if reference.get("mm_audio_tower"):
        if isinstance(beats_config, str | Path):
            beats_config = json.loads(Path(beats_config).read_text())
        beats = beats_config_from_reference(beats_config or {}, max_length=beats_frames(audio_seconds))
    config = avllm_config_from_reference(reference, text_config, vision_config_from(vision_source), beats, tokenizer)
    expected = expected_shapes(config)
    supplied = {key: tuple(value.shape) for key, value in added_audio.items()}
    fresh = (AUDIO_PROJECTOR_PREFIX,) if added_audio else ()
    vision_from_tower = plan_weights(shards, expected, supplied, fresh)
    if output.exists() and any(output.iterdir()):
        raise VideoLLaMA2ConversionError(f"{output} exists and is not empty; choose a new output folder")

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}-") as staging:
        staging = Path(staging)
        extra_shards = (added_audio,) if added_audio else ()
        if vision_from_tower:
            tower = load_tower(vision_source).state_dict()
            extra_shards += ({f"model.vision_tower.{key}": value for key, value in tower.items()},)
        write_converted_shards(shards, staging, set(expected), dtype, extra_shards)
        del extra_shards, added_audio
        config.save_pretrained(staging)
        model, info = AVLlmForConditionalGeneration.from_pretrained(staging, dtype=dtype, output_loading_info=True)
        if any(not key.startswith(fresh) for key in info["missing_keys"]) or info["unexpected_keys"]:
            raise VideoLLaMA2ConversionError(f"converted weights do not load: {info}")
        if len(tokenizer) > model.config.text_config.vocab_size:
            grow_vocabulary(model, len(tokenizer))
        if (checkpoint / "generation_config.json").is_file():
            model.generation_config = GenerationConfig.from_pretrained(checkpoint)
        processor = AVLlmProcessor.for_model(
            model.config,
            tokenizer,
            image_processor=AutoImageProcessor.from_pretrained(vision_source),
            feature_extractor=_feature_extractor(model.config),
            chat_template=template,
            missing_audio="silence",
            audio_sampling="videollama2",
            pad_to_square=pad_to_square,
        )
        export_pretrained(
            model,
            processor,
            output,
            repo_id=repo_id,
            base_models=[base_model] if base_model else [],
            license=license,
        )
    _add_conversion_note(output, checkpoint, base_model, reference, audio_tower)
    return output


def _feature_extractor(config: AVLlmConfig):
    if config.audio_config is None:
        return None
    family = tower_family(config.audio_config)
    return family.processor_class(**family.processor_settings(config.audio_config))


def _add_conversion_note(
    output: Path, checkpoint: Path, base_model: str | None, reference: dict, audio_tower: str | Path | None
) -> None:
    card = ModelCard.load(output / "README.md")
    source = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else f"`{checkpoint.name}`"
    added = (
        f" BEATs was added from `{Path(audio_tower).name}` with a new, untrained `{ADDED_AUDIO_PROJECTOR}` audio "
        "projector (VideoLLaMA 2's A1 starting point)."
        if audio_tower
        else ""
    )
    card.text += (
        "\n\n## Converted from VideoLLaMA 2\n\n"
        f"Converted with `avllm convert videollama2` from {source} (`{reference['model_type']}`, "
        f"`{reference['mm_projector_type']}`), following the reference implementation at {REFERENCE}.{added} The "
        "converter is checked against that code on a tiny random model (fp32 logits within 1e-4); these weights "
        "were not compared with it. See docs/models.md of transformers-avllm.\n"
    )
    card.save(output / "README.md")


__all__ = ["VideoLLaMA2ConversionError", "convert_videollama2"]
