"""AVLlm: an audio-visual LLM (vision tower + audio tower + connectors + any causal LM) in transformers' layout."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .compat_avllm import (
    CACHE_NAME,
    MultimodalBaseModelOutputWithPast,
    MultimodalCausalLMOutputWithPast,
    accepts_past_key_values,
)
from .configuration_avllm import AVLlmConfig
from .connectors_avllm import VIDEO_CONNECTORS, AVLlmAudioProjector, pool_valid_frames
from .modality_avllm import TOKEN_TYPE_IDS
from .towers_avllm import tower_family


class AVLlmPlaceholderMismatchError(ValueError):
    """The number of placeholder tokens in `input_ids` differs from the number of features a modality produced."""


@dataclass
class AVLlmModelOutputWithPast(MultimodalBaseModelOutputWithPast):
    r"""
    The language model's outputs, plus `image_outputs` / `video_outputs` / `audio_outputs`: what `get_image_features`
    / `get_video_features` / `get_audio_features` returned for the batch's media (`pooler_output`: the projected
    features `(num_items, tokens_per_item, hidden_size)` scattered into the placeholder positions).
    """


@dataclass
class AVLlmAudioFeaturesOutput(BaseModelOutputWithPooling):
    r"""
    What `get_audio_features` returns for `num_audios` clips of K segments each, every segment covered by W windows
    (W = 1 when every segment fits the feature extractor's window).

    last_hidden_state (`(num_audios, K * W * L', D_a)`): the audio tower's time sequence of each clip (its segments'
        sequences one after the other, each the sequences of its windows in time order, padding frames included).
    pooler_output (`(num_audios, K * audio_tokens_per_segment, hidden_size)`): the projected tokens that fill the
        clip's audio placeholders, in segment order, each segment's pooled over its frames of real audio.
    hidden_states / attentions (*optional*, when asked for): the tower's, one row per window (`(num_audios * W * K,
        ...)`, clip by clip, window by window as in `input_features`), as the tower runs on each window alone.
    segment_hidden_states (`(num_audios * W * K, L', D_a)`): the time sequence of each window the tower ran on, one
        row per window (the rows of `hidden_states` and `attentions`).
    """

    segment_hidden_states: torch.FloatTensor | None = None


@dataclass
class AVLlmCausalLMOutputWithPast(MultimodalCausalLMOutputWithPast):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*): language-modelling loss when `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`).
    image_outputs / video_outputs / audio_outputs: as in `AVLlmModelOutputWithPast`.
    """


class AVLlmPreTrainedModel(PreTrainedModel):
    config: AVLlmConfig
    base_model_prefix = "model"
    input_modalities = ("image", "video", "audio", "text")
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def initialize_weights(self):
        """Initialises the weights not initialised yet (all of them at build; the keys a checkpoint lacks at load),
        each sub-model (tower, language model) first, by its own rules, as inside transformers' own composite models.

        transformers treats a model class defined outside its package as custom code and skips, for it, the init of
        modules without parameters of their own. Applied from this class down, that rule would reach the towers,
        transformers' own classes, and skip e.g. CLIP's attention / MLP init and Whisper's sinusoidal position table
        for the keys a checkpoint lacks."""
        for module in self.modules():
            if module is not self and isinstance(module, PreTrainedModel):
                module.initialize_weights()
        super().initialize_weights()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves like transformers does, which copies the code files next to the weights (the class is registered
        for an Auto class, see `AUTO_MAP`), and names every Auto class of `AUTO_MAP` in config.json's `auto_map`, so
        that any saved folder (after training, a LoRA merge or `from_pretrained_components`) loads through each of
        them with `trust_remote_code=True` where this package is not installed."""
        module = __name__.rsplit(".", 1)[-1]
        entries = {auto_class: f"{module}.{model_class.__name__}" for auto_class, model_class in AUTO_MAP.items()}
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **entries}
        return super().save_pretrained(save_directory, *args, **kwargs)


class AVLlmModel(AVLlmPreTrainedModel):
    """Towers, connectors and the language model (no LM head). A tower runs only on the items of its modality that
    the batch carries, and not at all when there are none.

    `touch_absent_modalities` (a switch of the run, not of the model: never saved): in training, run a zero-weighted
    dummy input through a tower and its connector when no sample of the batch carries that modality, so that every
    distributed rank touches the same trainable parameters (DDP, FSDP, ZeRO-3). `AVLlmSFTTrainer` turns it on when
    training runs on several processes.
    """

    touch_absent_modalities: bool = False

    def __init__(self, config: AVLlmConfig):
        super().__init__(config)
        if config.vision_config is not None:
            vision = tower_family(config.vision_config)
            self.vision_tower = vision.build(config.vision_config)
            self.video_connector = VIDEO_CONNECTORS[config.connector_type](config, vision.width(config.vision_config))
        else:
            self.vision_tower = self.video_connector = None
        if config.audio_config is not None:
            audio = tower_family(config.audio_config)
            self.audio_tower = audio.build(config.audio_config)
            self.audio_projector = AVLlmAudioProjector(config, audio.width(config.audio_config))
        else:
            self.audio_tower = self.audio_projector = None
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def train(self, mode: bool = True):
        """Like `nn.Module.train`, except that a tower whose parameters are all frozen stays in inference mode: its
        BatchNorm statistics (CLAP-HTSAT has one) do not drift and its dropout stays off while the rest trains."""
        super().train(mode)
        for tower in (self.vision_tower, self.audio_tower):
            if mode and tower is not None and not any(p.requires_grad for p in tower.parameters()):
                tower.eval()
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def _require_tower(self, tower: nn.Module | None, modality: str):
        if tower is None:
            raise ValueError(f"This AVLlm model has no {modality} tower, but {modality} inputs were given")

    @can_return_tuple
    def get_video_features(
        self, pixel_values_videos: torch.FloatTensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """
        Args:
            pixel_values_videos: `(num_videos, num_frames, 3, H, W)`.
            kwargs: go to the vision tower (`output_hidden_states`, `output_attentions`, ...).
        Returns:
            `last_hidden_state`: the patch grid of hidden-state layer `vision_feature_layer`
            `(num_videos, num_frames, h, w, D_v)`; `pooler_output`: the connector's tokens
            `(num_videos, num_video_tokens, hidden_size)`; `hidden_states` / `attentions` when asked for: the tower's,
            one row per frame (`(num_videos * num_frames, ...)`, video by video).
        """
        return self._clip_features(pixel_values_videos, **kwargs)

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.FloatTensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """An image is a clip of `config.frames_per_image` copies of itself (VideoLLaMA 2 repeats an image to
        `num_frames`; 1: a one-frame video), the tower run once per image (see `get_video_features`). `pixel_values`:
        `(num_images, 3, H, W)`; `last_hidden_state`: `(num_images, frames_per_image, h, w, D_v)`; `pooler_output`:
        `(num_images, num_image_tokens, hidden_size)`; `hidden_states` / `attentions`: one row per image."""
        return self._clip_features(pixel_values.unsqueeze(1), frames=self.config.frames_per_image, **kwargs)

    def _clip_features(
        self, pixel_values_videos: torch.FloatTensor, frames: int | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """The vision tower on every frame of clips `(num_clips, num_frames, 3, H, W)`, then the video connector;
        `frames`: a one-frame clip's features repeated to this many frames before the connector."""
        self._require_tower(self.vision_tower, "vision")
        num_videos, num_frames = pixel_values_videos.shape[:2]
        pixels = pixel_values_videos.flatten(0, 1).to(self.vision_tower.dtype)
        vision = tower_family(self.config.vision_config)
        outputs = vision.frame_features(self.vision_tower, pixels, self.config.vision_feature_layer, **kwargs)
        summary = outputs.pooler_output.unflatten(0, (num_videos, num_frames))
        patch_grid = outputs.last_hidden_state.unflatten(0, (num_videos, num_frames))
        if frames is not None:
            summary, patch_grid = summary.expand(-1, frames, -1), patch_grid.expand(-1, frames, -1, -1, -1)
        return BaseModelOutputWithPooling(
            last_hidden_state=patch_grid,
            pooler_output=self.video_connector(summary, patch_grid),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @can_return_tuple
    def get_audio_features(
        self,
        input_features: torch.FloatTensor,
        input_features_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AVLlmAudioFeaturesOutput:
        """
        Args:
            input_features: `(num_audios, W * K, *window_shape)`, one feature-extractor output per window: the K
                segments of a clip, each covered by W consecutive windows, laid out window by window (the first
                windows of the K segments, then their second windows, ...; W = 1 for segments that fit a window).
            input_features_mask (*optional*): `(num_audios, W * K, F)`, 1 on the feature frames of real audio (the
                processor's output); the tokens pool those frames only. Without it every frame counts.
            kwargs: go to the audio tower (`output_hidden_states`, `output_attentions`, ...).
        Returns:
            `AVLlmAudioFeaturesOutput`, one row per audio except where it says per window; each segment's tokens
            pooled over the real-audio frames of its windows.
        """
        self._require_tower(self.audio_tower, "audio")
        num_audios, num_windows = input_features.shape[:2]
        num_segments = self.config.num_audio_segments
        if num_windows % num_segments:
            raise ValueError(
                f"input_features holds {num_windows} windows per clip, not a multiple of num_audio_segments="
                f"{num_segments}; use the processor built for this model"
            )
        family = tower_family(self.config.audio_config)
        windows = input_features.flatten(0, 1).to(self.audio_tower.dtype)
        outputs = family.segment_sequence(self.audio_tower, windows, **kwargs)
        sequence = outputs.last_hidden_state
        if input_features_mask is None:
            valid = torch.ones(sequence.shape[:2], dtype=torch.bool, device=sequence.device)
        else:
            valid = family.frame_mask(input_features_mask.flatten(0, 1).to(sequence.device), sequence.shape[1])

        def by_segment(frames: torch.Tensor) -> torch.Tensor:
            # (num_audios * W * K, L', ...) -> (num_audios * K, W * L', ...): each segment's windows in time order
            frames = frames.unflatten(0, (num_audios, num_windows // num_segments, num_segments)).transpose(1, 2)
            return frames.flatten(2, 3).flatten(0, 1)

        segments = by_segment(sequence)
        tokens = pool_valid_frames(segments, by_segment(valid), self.config.audio_tokens_per_segment)
        tokens = tokens.reshape(num_audios, -1, sequence.shape[-1])
        return AVLlmAudioFeaturesOutput(
            last_hidden_state=segments.reshape(num_audios, -1, sequence.shape[-1]),
            pooler_output=self.audio_projector(tokens),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            segment_hidden_states=sequence,
        )

    def get_placeholder_mask(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.FloatTensor,
        modality: str,
        features: torch.Tensor,
        mm_token_type_ids: torch.LongTensor | None = None,
    ) -> torch.BoolTensor:
        """Placeholder positions of `modality` ("image" | "video" | "audio") as a `(batch, seq, 1)` mask, read from
        `mm_token_type_ids` when given, else from `input_ids`, else by matching the placeholder's embedding. Raises
        when their count differs from the features' token count `(num_items, tokens_per_item, hidden)`."""
        token_id = getattr(self.config, f"{modality}_token_id")
        if mm_token_type_ids is not None:
            mask = mm_token_type_ids == TOKEN_TYPE_IDS[modality]
        elif input_ids is not None:
            mask = input_ids == token_id
        else:
            placeholder = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
            mask = (inputs_embeds == placeholder).all(-1)
        num_placeholders, num_features = int(mask.sum()), features.shape[0] * features.shape[1]
        if num_placeholders != num_features:
            raise AVLlmPlaceholderMismatchError(
                f"{num_placeholders} {modality} placeholder tokens (id {token_id}) but {features.shape[0]} item(s) "
                f"giving {num_features} feature tokens; expand each modality token with the processor built for this "
                "model and do not truncate inside a placeholder run"
            )
        return mask.unsqueeze(-1)

    def _touch_absent_branch(self, inputs_embeds: torch.Tensor, modality: str) -> torch.Tensor:
        """Adds a zero-weighted pass of a dummy input through the `"vision"` or `"audio"` tower and its connector,
        for a batch without that modality, so that all distributed ranks run the same modules and reduce the same
        trainable parameters. A one-tower model's absent tower is left alone."""
        tower = getattr(self, f"{modality}_tower")
        if tower is None:
            return inputs_embeds
        tower_config = getattr(self.config, f"{modality}_config")
        shape = tower_family(tower_config).input_shape(tower_config)
        item = torch.zeros(shape, device=inputs_embeds.device, dtype=tower.dtype)
        if modality == "vision":
            features = self.get_image_features(item[None])  # one image
        else:
            features = self.get_audio_features(item.expand(1, self.config.num_audio_segments, *shape))  # one clip
        return inputs_embeds + 0.0 * features.pooler_output.sum().to(inputs_embeds.dtype)

    def _merge(
        self, input_ids, inputs_embeds, modality: str, features: torch.Tensor, mm_token_type_ids
    ) -> torch.Tensor:
        features = features.to(inputs_embeds.device, inputs_embeds.dtype)
        mask = self.get_placeholder_mask(input_ids, inputs_embeds, modality, features, mm_token_type_ids)
        return inputs_embeds.masked_scatter(mask, features)

    @can_return_tuple
    @accepts_past_key_values
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        mm_token_type_ids: torch.LongTensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AVLlmModelOutputWithPast:
        r"""
        pixel_values (`(num_images, 3, H, W)`): images, each filling `num_image_tokens` image placeholders.
        pixel_values_videos (`(num_videos, num_frames, 3, H, W)`): videos, each filling `num_video_tokens` video
            placeholders.
        input_features (`(num_audios, W * K, *window_shape)`): audio clips (a video's own track or an audio file),
            each filling `num_audio_tokens` audio placeholders (see `get_audio_features`).
        input_features_mask (`(num_audios, W * K, F)`, *optional*): 1 on the feature frames of real audio.
        mm_token_type_ids (`(batch, seq)`, *optional*): 0 text, 1 image, 2 video, 3 audio placeholder (the
            processor's output); locates placeholders, and is what makes an `inputs_embeds`-only call work.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        # Towers run in a fixed order (vision, then audio), real or zero-weighted dummy passes alike, so that ranks
        # whose batches carry different modalities still call the same modules in the same order (ZeRO-3 gathers
        # parameters module by module as they run).
        touch_absent = self.touch_absent_modalities and self.training
        # the towers return their hidden states / attentions when these are asked for (as llava's do); the other
        # keyword arguments (packed-sequence lengths, position ids, ...) describe the text sequence: LM only
        tower_kwargs = {key: kwargs[key] for key in ("output_hidden_states", "output_attentions") if key in kwargs}
        image_outputs = video_outputs = audio_outputs = None
        if pixel_values is not None:
            image_outputs = self.get_image_features(pixel_values, **tower_kwargs)
            inputs_embeds = self._merge(
                input_ids, inputs_embeds, "image", image_outputs.pooler_output, mm_token_type_ids
            )
        if pixel_values_videos is not None:
            video_outputs = self.get_video_features(pixel_values_videos, **tower_kwargs)
            inputs_embeds = self._merge(
                input_ids, inputs_embeds, "video", video_outputs.pooler_output, mm_token_type_ids
            )
        if touch_absent and image_outputs is None and video_outputs is None:
            inputs_embeds = self._touch_absent_branch(inputs_embeds, "vision")
        if input_features is not None:
            audio_outputs = self.get_audio_features(input_features, input_features_mask, **tower_kwargs)
            inputs_embeds = self._merge(
                input_ids, inputs_embeds, "audio", audio_outputs.pooler_output, mm_token_type_ids
            )
        elif touch_absent:
            inputs_embeds = self._touch_absent_branch(inputs_embeds, "audio")

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **{CACHE_NAME: cache},
            **kwargs,
        )
        return AVLlmModelOutputWithPast(
            **outputs, image_outputs=image_outputs, video_outputs=video_outputs, audio_outputs=audio_outputs
        )


class AVLlmForConditionalGeneration(AVLlmPreTrainedModel, GenerationMixin):
    """AVLlmModel + LM head. Media inputs use transformers' standard names, so `generate()` sends them only at
    prefill and decodes from the KV cache."""

    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: AVLlmConfig):
        super().__init__(config)
        self.model = AVLlmModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        language_model = self.model.language_model
        embedding_name = next(
            name for name, module in language_model.named_modules() if module is language_model.get_input_embeddings()
        )
        self._tied_weights_keys = {"lm_head.weight": f"model.language_model.{embedding_name}.weight"}
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_image_features(
        self, pixel_values: torch.FloatTensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values, **kwargs)

    def get_video_features(
        self, pixel_values_videos: torch.FloatTensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        return self.model.get_video_features(pixel_values_videos, **kwargs)

    def get_audio_features(
        self,
        input_features: torch.FloatTensor,
        input_features_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AVLlmAudioFeaturesOutput:
        return self.model.get_audio_features(input_features, input_features_mask, **kwargs)

    @can_return_tuple
    @accepts_past_key_values
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        mm_token_type_ids: torch.LongTensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AVLlmCausalLMOutputWithPast:
        r"""
        labels (`(batch_size, sequence_length)`, *optional*): next-token targets; -100 is ignored (prompt, padding and
            placeholder positions).
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            input_features=input_features,
            input_features_mask=input_features_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            mm_token_type_ids=mm_token_type_ids,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return AVLlmCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=outputs.image_outputs,
            video_outputs=outputs.video_outputs,
            audio_outputs=outputs.audio_outputs,
        )


# Which Auto class loads which model class: `save_pretrained` writes every pair into config.json's `auto_map`, and
# the installed package registers them with transformers' Auto classes. A class's first pair is its
# `_auto_class`, which makes transformers' `save_pretrained` copy the code files next to the weights.
AUTO_MAP = {
    "AutoModel": AVLlmModel,
    "AutoModelForImageTextToText": AVLlmForConditionalGeneration,
    "AutoModelForMultimodalLM": AVLlmForConditionalGeneration,
    "AutoModelForCausalLM": AVLlmForConditionalGeneration,
}
for _auto_class, _model_class in reversed(AUTO_MAP.items()):
    _model_class.register_for_auto_class(_auto_class)

__all__ = [
    "AUTO_MAP",
    "AVLlmAudioFeaturesOutput",
    "AVLlmForConditionalGeneration",
    "AVLlmModel",
    "AVLlmPlaceholderMismatchError",
    "AVLlmPreTrainedModel",
]
