"""AVLlm model configuration."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .compat_avllm import INSTALLED_TRANSFORMERS  # noqa: F401  (first: checks the installed transformers release)
from .connectors_avllm import VIDEO_CONNECTORS
from .towers_avllm import tower_family

# Keys that configs saved before issue #12 carry and that no longer belong to the model: the modality tokens (now the
# vocabulary of `modality_avllm.py`), a training switch (now `AVLlmModel.touch_absent_modalities`, set for a run) and
# model-card metadata (now given to the export). Loading drops them.
REMOVED_KEYS = ("vis_token", "aud_token", "aud_vis_token", "touch_absent_modalities", "base_models")


@strict
class AVLlmConfig(PreTrainedConfig):
    r"""
    Configuration of an audio-visual LLM: a vision tower, an audio tower, connectors and a causal LLM.

    Either tower may be `None` (video-only or audio-only models); the defaults have no tower at all, so pass the
    sub-configs you want, e.g. `AVLlmConfig(vision_config=CLIPVisionConfig(...), audio_config=ClapAudioConfig(...),
    text_config=LlamaConfig(...))`.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of a vision tower of the registry (`towers_avllm.TOWER_FAMILIES`): CLIP or SigLIP.
        audio_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of an audio tower of the registry: CLAP audio (HTSAT), Whisper (its encoder is used), AST or BEATs
            (`AVLlmBeatsConfig`).
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Any causal LM config; Llama by default.
        connector_type (`str`, defaults to `"avllm"`):
            `"avllm"` (AV-LLM: T temporal [CLS] tokens + N time-pooled spatial tokens, linear projectors), `"stc"`
            (VideoLLaMA 2 spatial-temporal convolution) or `"pool"` (Video-ChatGPT / 001 averages + mlp2x-gelu).
        audio_projector_type (`str`, defaults to `"linear"`):
            `"linear"` or `"mlp2x_gelu"`.
        num_frames (`int`, defaults to 32):
            Frames sampled per video clip.
        frames_per_image (`int`, defaults to 1):
            Frames an image counts as: its tower features are repeated to this many frames before the video connector
            (VideoLLaMA 2 repeats an image to `num_frames`). With 1, the STC connector repeats a frame to its
            temporal kernel.
        vision_feature_layer (`int`, defaults to -2):
            Hidden-state index of the vision tower fed to the connector.
        stc_downsample (`list[int]`, defaults to `[2, 2, 2]`):
            Conv3d kernel = stride (t, s, s) of the STC connector.
        stc_depth (`int`, defaults to 4):
            RegStage depth of the STC connector (0 disables both RegStages).
        stc_padding (`int`, defaults to 1):
            Conv3d padding of the STC connector (VideoLLaMA 2's `STCConnector` uses 1, its v35 variant 0).
        num_audio_segments (`int`, defaults to 4):
            K: audio segments per clip, each encoded separately.
        audio_tokens_per_segment (`int`, defaults to 1):
            Tokens each segment contributes: the tower's time sequence (CLAP: averaged over frequency) over the frames
            of real audio of the windows covering the segment, average-pooled to this length (padding is left out
            where the processor's `input_features_mask` marks it); 1 = one embedding per segment as in AV-LLM.
        audio_visual_order (`str`, defaults to `"visual_first"`):
            Order of the placeholder runs of a video that brings its own audio track (`<AUD_VIS>`): `"visual_first"`
            (AV-LLM, 000 §3.1: temporal, spatial, then auditory tokens) or `"audio_first"` (001 §3: "Audio, visual,
            and text token embeddings are then concatenated"). The processor expands in this order; the model fills
            each placeholder by its type, in whatever order they come. Configs saved without it load as
            `"visual_first"`.
        image_token_id / video_token_id / audio_token_id (`int`):
            Ids of the placeholder tokens (`<image>`, `<video>`, `<audio>`) that the processor expands and the model
            fills with features.
    """

    model_type = "avllm"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model", optional=True),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="clap_audio_model", optional=True),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    connector_type: Literal["avllm", "stc", "pool"] = "avllm"
    audio_projector_type: Literal["linear", "mlp2x_gelu"] = "linear"
    num_frames: int = 32
    frames_per_image: int = 1
    vision_feature_layer: int = -2
    stc_downsample: list[int] | tuple[int, int, int] = (2, 2, 2)
    stc_depth: int = 4
    stc_padding: int = 1
    num_audio_segments: int = 4
    audio_tokens_per_segment: int = 1
    audio_visual_order: Literal["visual_first", "audio_first"] = "visual_first"
    image_token_id: int = 32000
    video_token_id: int = 32001
    audio_token_id: int = 32002
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        for key in REMOVED_KEYS:
            kwargs.pop(key, None)
        super().__post_init__(**kwargs)
        self.stc_downsample = list(self.stc_downsample)
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        for modality in ("vision", "audio"):
            tower_config = getattr(self, f"{modality}_config")
            if tower_config is not None:
                tower_family(tower_config, modality)
        counts = ("num_frames", "frames_per_image", "num_audio_segments", "audio_tokens_per_segment")
        if any(getattr(self, name) < 1 for name in counts):
            raise ValueError(f"{', '.join(counts)} must be >= 1")

    @property
    def vision_grid_size(self) -> int:
        """Patches per side of one frame (h = w)."""
        return tower_family(self.vision_config).grid_size(self.vision_config)

    def num_visual_tokens(self, num_frames: int) -> int:
        """Tokens the video connector emits for a clip of `num_frames` frames (an image is `frames_per_image`)."""
        if self.vision_config is None:
            return 0
        connector = VIDEO_CONNECTORS[self.connector_type]
        return connector.num_output_tokens(self, num_frames, self.vision_grid_size)

    @property
    def num_video_tokens(self) -> int:
        return self.num_visual_tokens(self.num_frames)

    @property
    def num_image_tokens(self) -> int:
        return self.num_visual_tokens(self.frames_per_image)

    @property
    def num_audio_tokens(self) -> int:
        return 0 if self.audio_config is None else self.num_audio_segments * self.audio_tokens_per_segment


# config.json's `auto_map` names this class for AutoConfig, and `save_pretrained` copies the code files.
AVLlmConfig.register_for_auto_class()

__all__ = ["AVLlmConfig"]
