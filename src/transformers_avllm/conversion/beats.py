"""BEATs checkpoints in the reference layout (Microsoft's `BEATs.py` and VideoLLaMA 2's copy of it: a `{"cfg": dict,
"model": state_dict}` file, or the `model.audio_tower.` part of a VideoLLaMA 2 AV checkpoint) -> `AVLlmBeatsConfig`
and `AVLlmBeatsModel` state dicts.

Key renaming, reference -> ours (N = layer index):

- `patch_embedding.*` -> `embeddings.patch_embedding.*`; `layer_norm.*` -> `embeddings.layer_norm.*`;
  `post_extract_proj.*` -> `embeddings.projection.*`
- `encoder.pos_conv.0.weight_g` / `.weight_v` / `.bias` -> `encoder.pos_conv_embed.conv.parametrizations.weight.
  original0` / `...original1` / `encoder.pos_conv_embed.conv.bias` (torch's weight norm parametrization)
- `encoder.layer_norm.*` -> `encoder.layer_norm.*`
- `encoder.layers.0.self_attn.relative_attention_bias.weight` -> `encoder.relative_position_bias.embedding.weight`;
  the same key of layers N > 0 is dropped (the reference shares layer 0's module, so every copy is equal)
- `encoder.layers.N.self_attn.{q,k,v,out}_proj.*` -> `encoder.layers.N.attention.{q,k,v,out}_proj.*`
- `encoder.layers.N.self_attn.grep_linear.*` -> `encoder.layers.N.attention.gru_rel_pos_linear.*`
- `encoder.layers.N.self_attn.grep_a` -> `encoder.layers.N.attention.gru_rel_pos_const`
- `encoder.layers.N.self_attn_layer_norm.*` -> `encoder.layers.N.layer_norm.*`
- `encoder.layers.N.fc1.*` / `.fc2.*` -> `encoder.layers.N.feed_forward.intermediate_dense.*` / `.output_dense.*`
- `encoder.layers.N.final_layer_norm.*` -> unchanged
- `predictor.*` -> dropped (the AudioSet classifier; VideoLLaMA 2 uses the features)
"""

import re

import torch

from ..models.avllm.beats_avllm import AVLlmBeatsConfig


class BeatsConversionError(ValueError):
    """A BEATs config or state dict that `AVLlmBeatsModel` cannot represent."""


# Reference BEATsConfig field -> AVLlmBeatsConfig field.
CONFIG_FIELDS = {
    "input_patch_size": "patch_size",
    "embed_dim": "patch_embedding_dim",
    "conv_bias": "patch_embedding_bias",
    "encoder_layers": "num_hidden_layers",
    "encoder_embed_dim": "hidden_size",
    "encoder_ffn_embed_dim": "intermediate_size",
    "encoder_attention_heads": "num_attention_heads",
    "activation_fn": "hidden_act",
    "layer_wise_gradient_decay_ratio": "layer_wise_gradient_decay_ratio",
    "deep_norm": "deep_norm",
    "dropout": "hidden_dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "encoder_layerdrop": "layerdrop",
    "dropout_input": "feature_projection_dropout",
    "conv_pos": "num_conv_pos_embeddings",
    "conv_pos_groups": "num_conv_pos_embedding_groups",
    "num_buckets": "num_buckets",
    "max_distance": "max_bucket_distance",
}
# Reference fields whose only supported value is BEATs' (the structure AVLlmBeatsModel implements).
REQUIRED_VALUES = {"layer_norm_first": False, "relative_position_embedding": True, "gru_rel_pos": True}
# Reference fields without a counterpart: VideoLLaMA 2's LLM width, and the dropped AudioSet classifier.
IGNORED_FIELDS = {"hidden_size", "finetuned_model", "predictor_dropout", "predictor_class"}

KEY_RENAMES = [
    (r"^patch_embedding\.", "embeddings.patch_embedding."),
    (r"^layer_norm\.", "embeddings.layer_norm."),
    (r"^post_extract_proj\.", "embeddings.projection."),
    (r"^encoder\.pos_conv\.0\.weight_g$", "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"^encoder\.pos_conv\.0\.weight_v$", "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"^encoder\.pos_conv\.0\.bias$", "encoder.pos_conv_embed.conv.bias"),
    (r"^encoder\.layers\.0\.self_attn\.relative_attention_bias\.", "encoder.relative_position_bias.embedding."),
    (r"\.self_attn\.grep_linear\.", ".attention.gru_rel_pos_linear."),
    (r"\.self_attn\.grep_a$", ".attention.gru_rel_pos_const"),
    (r"\.self_attn\.", ".attention."),
    (r"\.self_attn_layer_norm\.", ".layer_norm."),
    (r"\.fc1\.", ".feed_forward.intermediate_dense."),
    (r"\.fc2\.", ".feed_forward.output_dense."),
]
SHARED_POSITION_BIAS = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight$")


def beats_config_from_reference(cfg: dict, **overrides) -> AVLlmBeatsConfig:
    """`AVLlmBeatsConfig` of a reference BEATs config dict (a checkpoint's `cfg`). Fields it lacks keep VideoLLaMA 2's
    `BEATsConfig` defaults, which are `AVLlmBeatsConfig`'s; `overrides` (e.g. `max_length`) are passed on."""
    for field, value in REQUIRED_VALUES.items():
        if field in cfg and cfg[field] != value:
            raise BeatsConversionError(f"BEATs config has {field}={cfg[field]!r}; only {value!r} is supported")
    unknown = set(cfg) - set(CONFIG_FIELDS) - set(REQUIRED_VALUES) - IGNORED_FIELDS
    if unknown:
        raise BeatsConversionError(f"BEATs config has fields this converter does not know: {sorted(unknown)}")
    if cfg.get("activation_fn", "gelu") == "glu":
        raise BeatsConversionError("BEATs config has activation_fn='glu' (a gated feed-forward); not supported")
    fields = {ours: cfg[theirs] for theirs, ours in CONFIG_FIELDS.items() if theirs in cfg}
    return AVLlmBeatsConfig(**{**fields, **overrides})


def rename_beats_key(key: str) -> str | None:
    """`AVLlmBeatsModel`'s key of a reference BEATs key (see the module docstring), or `None` for a key that is
    dropped: the classifier and the per-layer copies of the shared position bias (`SHARED_POSITION_BIAS`, checked
    against layer 0's by the callers)."""
    shared = SHARED_POSITION_BIAS.match(key)
    if key.startswith("predictor.") or (shared and shared.group(1) != "0"):
        return None
    for pattern, replacement in KEY_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def check_shared_position_bias(copies: dict[str, torch.Tensor]) -> None:
    """Raises `BeatsConversionError` unless every layer's copy of the relative position bias (keys matching
    `SHARED_POSITION_BIAS`, in any prefix-free naming) equals layer 0's."""
    first = copies.get("encoder.layers.0.self_attn.relative_attention_bias.weight")
    for key, value in copies.items():
        if first is not None and not torch.equal(first, value):
            raise BeatsConversionError(f"{key} differs from layer 0's; BEATs shares one position embedding")


def rename_beats_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a reference BEATs state dict (without any `model.audio_tower.` prefix) to `AVLlmBeatsModel`'s keys (see
    the module docstring); drops the classifier and the per-layer copies of the shared position bias, after checking
    that each copy equals layer 0's."""
    check_shared_position_bias({key: value for key, value in state_dict.items() if SHARED_POSITION_BIAS.match(key)})
    renamed = {rename_beats_key(key): value for key, value in state_dict.items()}
    renamed.pop(None, None)
    return renamed
