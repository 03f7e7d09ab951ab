"""The tower registry: one entry per family of vision or audio tower, holding everything AVLlm needs to know about it.

An entry names the transformers class that builds the tower and the image processor / feature extractor that prepares
its inputs (with the settings that match a tower config), reads the tower's outputs into what the connectors take (a
summary token and a patch grid per frame; a time sequence per audio segment), and gives the width of those features,
the shape of one input item (for dummy passes) and where the tower sits inside the full checkpoint it usually comes in
(CLIP's `vision_model`, Whisper's `encoder`). `AVLlmConfig` validates its sub-configs against the registry,
`AVLlmModel` builds and runs its towers through it, `from_pretrained_components` and the tiny builders load towers and
their preprocessors with it.

Adding a family is adding one entry: a subclass of `VisionTowerFamily` or `AudioTowerFamily` listed in
`TOWER_FAMILIES`. Its modules may live in a shipped file of their own (`from .beats_avllm import BeatsModel`).
"""

import torch
from transformers import (
    ASTFeatureExtractor,
    ASTModel,
    ClapAudioModel,
    ClapFeatureExtractor,
    CLIPImageProcessor,
    CLIPVisionModel,
    PreTrainedConfig,
    PreTrainedModel,
    SiglipImageProcessor,
    SiglipVisionModel,
    WhisperFeatureExtractor,
)
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import ModelOutput


class TowerFamily:
    """What the registry knows about a family of towers (the class attributes), and what every family can do."""

    model_type: str  # `model_type` of the tower's config
    modality: str  # "vision" | "audio"
    tower_class: type[PreTrainedModel]
    processor_class: type  # the image processor / feature extractor that prepares the tower's inputs
    # `(model_type, attribute)` of the full checkpoint the tower usually comes in (`("clip", "vision_model")`), if any.
    full_model: tuple[str, str] | None = None

    def build(self, config: PreTrainedConfig) -> PreTrainedModel:
        """A tower with random weights."""
        return self.tower_class._from_config(config)

    def processor_settings(self, config: PreTrainedConfig, sampling_rate: int | None = None) -> dict:
        """Keyword arguments of `processor_class` for a tower built from `config` alone (a pretrained tower brings its
        own preprocessor config): sizes that follow the config; audio at `sampling_rate`."""
        raise NotImplementedError

    def width(self, config: PreTrainedConfig) -> int:
        """Width of the features the connector gets."""
        return config.hidden_size

    def input_shape(self, config: PreTrainedConfig) -> tuple[int, ...]:
        """Shape of one input item without the batch dim (a frame; an audio segment's features) that the tower takes,
        for dummy passes. An audio feature extractor's real time length may differ (see the families)."""
        raise NotImplementedError

    def run(self, tower: PreTrainedModel, inputs: torch.Tensor, **kwargs) -> ModelOutput:
        """The tower's output on a batch of its inputs (its first argument); `kwargs` (transformers'
        `output_hidden_states`, `output_attentions`, ...) go to the tower."""
        return tower(inputs, return_dict=True, **kwargs)


class VisionTowerFamily(TowerFamily):
    """A vision tower runs on frames `(N, 3, H, W)` and gives each a summary token and a square patch grid."""

    modality = "vision"

    def summary_and_patches(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(N, D)` summary token and `(N, h * w, D)` patch tokens of a layer's hidden states `(N, L, D)`."""
        raise NotImplementedError

    def grid_size(self, config: PreTrainedConfig) -> int:
        """Patches per side of a frame (h = w)."""
        return config.image_size // config.patch_size

    def input_shape(self, config: PreTrainedConfig) -> tuple[int, ...]:
        return (3, config.image_size, config.image_size)

    def frame_features(
        self, tower: PreTrainedModel, pixel_values: torch.Tensor, feature_layer: int, **kwargs
    ) -> BaseModelOutputWithPooling:
        """Runs the tower on frames `(N, 3, H, W)` and reads its hidden-state layer `feature_layer`:
        `last_hidden_state` is that layer's patch grid `(N, h, w, D)`, `pooler_output` its summary token `(N, D)`.
        `kwargs` go to the tower; `hidden_states` (all of the tower's) and `attentions` are there when asked for
        (`output_hidden_states` / `output_attentions`, as keyword or in the tower's config)."""
        all_hidden_states = bool(kwargs.pop("output_hidden_states", tower.config.output_hidden_states))
        # unless they are all asked for, the tower keeps only the layer read (transformers' hidden-state selection)
        outputs = self.run(
            tower, pixel_values, output_hidden_states=True if all_hidden_states else [feature_layer], **kwargs
        )
        summary, patches = self.summary_and_patches(outputs.hidden_states[feature_layer])
        grid_size = int(patches.shape[1] ** 0.5)
        return BaseModelOutputWithPooling(
            last_hidden_state=patches.unflatten(1, (grid_size, grid_size)),
            pooler_output=summary,
            hidden_states=outputs.hidden_states if all_hidden_states else None,
            attentions=outputs.attentions,
        )


class AudioTowerFamily(TowerFamily):
    """An audio tower runs on the features of audio segments `(N, *input_shape)` and gives each a time sequence."""

    modality = "audio"

    def segment_sequence(self, tower: PreTrainedModel, input_features: torch.Tensor, **kwargs) -> BaseModelOutput:
        """Runs the tower on segments `(N, *input_shape)`; `last_hidden_state` is its output read as a time sequence
        `(N, L, width)`. `kwargs` go to the tower; its `hidden_states` and `attentions` are there when asked for."""
        outputs = self.run(tower, input_features, **kwargs)
        return BaseModelOutput(
            last_hidden_state=self.time_sequence(tower, outputs),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def time_sequence(self, tower: PreTrainedModel, outputs: ModelOutput) -> torch.Tensor:
        """The tower's output on N segments read as a time sequence `(N, L, width)`."""
        raise NotImplementedError


class ClipVisionTower(VisionTowerFamily):
    """CLIP ViT: the summary is the [CLS] token."""

    model_type = "clip_vision_model"
    tower_class = CLIPVisionModel
    processor_class = CLIPImageProcessor
    full_model = ("clip", "vision_model")

    def processor_settings(self, config, sampling_rate=None):
        size = config.image_size
        return {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}

    def summary_and_patches(self, hidden_states):
        return hidden_states[:, 0], hidden_states[:, 1:]


class SiglipVisionTower(VisionTowerFamily):
    """SigLIP has no [CLS]: the summary is the mean of the patch tokens of the same layer (its attention-pooling head
    sits after the last layer and is trained for contrastive alignment, so it cannot follow `vision_feature_layer`)."""

    model_type = "siglip_vision_model"
    tower_class = SiglipVisionModel
    processor_class = SiglipImageProcessor
    full_model = ("siglip", "vision_model")

    def processor_settings(self, config, sampling_rate=None):
        return {"size": {"height": config.image_size, "width": config.image_size}}

    def summary_and_patches(self, hidden_states):
        return hidden_states.mean(dim=1), hidden_states


class ClapAudioTower(AudioTowerFamily):
    """CLAP's HTSAT: its last map `(N, D, F', T')` averaged over frequency. It interpolates any input length up to its
    spectrogram size, so `input_shape` is one length it takes, not the only one."""

    model_type = "clap_audio_model"
    tower_class = ClapAudioModel
    processor_class = ClapFeatureExtractor
    full_model = ("clap", "audio_model")

    def processor_settings(self, config, sampling_rate=None):
        # 10 ms hops, 25 ms windows, segments of up to 1 s (longer ones are centre-cropped by the processor)
        return {
            "feature_size": config.num_mel_bins,
            "sampling_rate": sampling_rate,
            "max_length_s": 1,
            "hop_length": sampling_rate // 100,
            "fft_window_size": sampling_rate // 40,
            "truncation": "rand_trunc",
        }

    def width(self, config):
        return config.patch_embeds_hidden_size * 2 ** (len(config.depths) - 1)

    def input_shape(self, config):
        return (1, config.spec_size * config.spec_size // config.num_mel_bins, config.num_mel_bins)

    def time_sequence(self, tower, outputs):
        return outputs.last_hidden_state.mean(dim=2).transpose(1, 2)


class WhisperAudioTower(AudioTowerFamily):
    """Whisper's encoder (of a full Whisper checkpoint): its states are already a time sequence."""

    model_type = "whisper"
    tower_class = WhisperEncoder
    processor_class = WhisperFeatureExtractor
    full_model = ("whisper", "encoder")

    def processor_settings(self, config, sampling_rate=None):
        # the window the encoder takes: 2 * max_source_positions mel frames of `hop_length` samples
        hop_length = 160
        seconds = 2 * config.max_source_positions * hop_length // sampling_rate
        return {
            "feature_size": config.num_mel_bins,
            "sampling_rate": sampling_rate,
            "chunk_length": seconds,
            "hop_length": hop_length,
        }

    def width(self, config):
        return config.d_model

    def input_shape(self, config):
        return (config.num_mel_bins, 2 * config.max_source_positions)

    def time_sequence(self, tower, outputs):
        return outputs.last_hidden_state


class AstAudioTower(AudioTowerFamily):
    """Audio Spectrogram Transformer: its patch grid averaged over frequency, the [CLS] and distillation tokens
    dropped."""

    model_type = "audio-spectrogram-transformer"
    tower_class = ASTModel
    processor_class = ASTFeatureExtractor

    def processor_settings(self, config, sampling_rate=None):
        return {"num_mel_bins": config.num_mel_bins, "max_length": config.max_length, "sampling_rate": sampling_rate}

    def input_shape(self, config):
        return (config.max_length, config.num_mel_bins)

    def time_sequence(self, tower, outputs):
        freq_patches, time_patches = tower.embeddings.get_shape(tower.config)
        patches = outputs.last_hidden_state[:, 2:]
        return patches.unflatten(1, (freq_patches, time_patches)).mean(dim=1)


TOWER_FAMILIES: dict[str, TowerFamily] = {
    family.model_type: family
    for family in (ClipVisionTower(), SiglipVisionTower(), ClapAudioTower(), WhisperAudioTower(), AstAudioTower())
}


def tower_family(config: PreTrainedConfig, modality: str | None = None) -> TowerFamily:
    """The registry entry of a tower config; raises `ValueError` for a family the registry lacks (or one of another
    `modality` than `"vision"` / `"audio"` when given)."""
    family = TOWER_FAMILIES.get(config.model_type)
    if family is None or modality not in (None, family.modality):
        supported = tuple(name for name, entry in TOWER_FAMILIES.items() if modality in (None, entry.modality))
        tower = f"{modality} tower" if modality else "tower"
        raise ValueError(f"a {tower} of type {config.model_type!r} is not supported; use one of {supported}")
    return family


__all__ = [
    "AudioTowerFamily",
    "TOWER_FAMILIES",
    "TowerFamily",
    "VisionTowerFamily",
    "tower_family",
]
