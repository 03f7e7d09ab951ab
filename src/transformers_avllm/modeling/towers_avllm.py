"""Vision and audio towers: which transformers class builds each family, and the small adapters that turn a tower's
outputs into what the connectors need (per-frame summary token + patch grid; per-segment token sequence)."""

import torch
from torch import nn
from transformers import ASTModel, ClapAudioModel, CLIPVisionModel, PreTrainedConfig, SiglipVisionModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

VISION_TOWER_CLASSES = {"clip_vision_model": CLIPVisionModel, "siglip_vision_model": SiglipVisionModel}
AUDIO_TOWER_CLASSES = {
    "clap_audio_model": ClapAudioModel,
    "whisper": WhisperEncoder,
    "audio-spectrogram-transformer": ASTModel,
}


def build_tower(config: PreTrainedConfig) -> nn.Module:
    """Instantiates a (random) vision or audio tower from its config."""
    tower_class = {**VISION_TOWER_CLASSES, **AUDIO_TOWER_CLASSES}[config.model_type]
    return tower_class._from_config(config)


def vision_frame_features(
    tower: nn.Module, pixel_values: torch.Tensor, feature_layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs the vision tower on frames.

    Args:
        pixel_values: `(N, 3, H, W)` frames.
    Returns:
        summary `(N, D)`: the [CLS] token (CLIP) or, for SigLIP which has no [CLS], the mean of the patch tokens at
        the same layer (its attention-pooling head sits after the last layer and is trained for contrastive
        alignment, so it cannot follow `feature_layer`); patch grid `(N, h, w, D)`.
    """
    hidden_states = tower(pixel_values, output_hidden_states=True).hidden_states[feature_layer]
    if tower.config.model_type == "clip_vision_model":
        summary, patches = hidden_states[:, 0], hidden_states[:, 1:]
    else:
        summary, patches = hidden_states.mean(dim=1), hidden_states
    grid_size = int(patches.shape[1] ** 0.5)
    return summary, patches.unflatten(1, (grid_size, grid_size))


def audio_token_sequence(tower: nn.Module, input_features: torch.Tensor) -> torch.Tensor:
    """Runs the audio tower on segments and returns its last hidden state as a time sequence `(N, L, D_a)`.

    CLAP-HTSAT's map `(N, D, F', T')` and AST's patch grid are averaged over frequency; Whisper's encoder states are
    already a time sequence. AST's [CLS] and distillation tokens are dropped.
    """
    model_type = tower.config.model_type
    if model_type == "clap_audio_model":
        return tower(input_features).last_hidden_state.mean(dim=2).transpose(1, 2)
    if model_type == "audio-spectrogram-transformer":
        embeddings = tower.embeddings
        freq_patches, time_patches = embeddings.get_shape(tower.config)
        patches = tower(input_values=input_features).last_hidden_state[:, 2:]
        return patches.unflatten(1, (freq_patches, time_patches)).mean(dim=1)
    return tower(input_features).last_hidden_state


def audio_width(config: PreTrainedConfig) -> int:
    """Width D_a of `audio_token_sequence` for an audio tower config."""
    if config.model_type == "clap_audio_model":
        return config.patch_embeds_hidden_size * 2 ** (len(config.depths) - 1)
    if config.model_type == "whisper":
        return config.d_model
    return config.hidden_size


def audio_segment_shape(config: PreTrainedConfig) -> tuple[int, ...]:
    """A shape of one segment's `input_features` that the tower accepts (no batch dim), used for dummy passes; the
    feature extractor's real time length may differ (CLAP-HTSAT interpolates any length up to its spectrogram size)."""
    if config.model_type == "clap_audio_model":
        return (1, config.spec_size * config.spec_size // config.num_mel_bins, config.num_mel_bins)
    if config.model_type == "whisper":
        return (config.num_mel_bins, 2 * config.max_source_positions)
    return (config.max_length, config.num_mel_bins)
