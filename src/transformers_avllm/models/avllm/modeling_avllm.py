"""AVLlm: an audio-visual LLM (vision tower + audio tower + connectors + any causal LM) in transformers' layout."""

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, is_torchdynamo_compiling
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


class AVLlmConnectorInputMismatchError(ValueError):
    """Connector inputs given in `mm_encoder_outputs` (e.g. from a tower-output cache) do not have the shapes this
    model's towers and connectors produce (another tower, frame count, grid, audio token count or width)."""


@dataclass
class AVLlmEncoderOutput(BaseModelOutputWithPooling):
    r"""
    What `get_image_features` / `get_video_features` / `get_audio_features` return: `last_hidden_state` (the tower's
    output), `pooler_output` (the connector's tokens `(num_items, tokens_per_item, hidden_size)`) and
    `connector_inputs`: the tower's output reduced to what the connector consumes (`AVLlmVideoConnector.reduce`; for
    audio, the segment tokens `(num_items, K * audio_tokens_per_segment, D_a)` the audio projector takes). A
    tower-output cache stores `connector_inputs`; given back in `mm_encoder_outputs` without `pooler_output`, only the
    connector runs.
    """

    connector_inputs: tuple[torch.FloatTensor, ...] | None = None


class _DeferredCount:
    """A count computed on the device, read on the host only when `value()` is called.

    On CUDA the count is copied to pinned host memory with a non-blocking copy and an event marks its arrival, so that
    reading it waits only for the kernels enqueued before the copy (the towers and the mask), not for the whole stream;
    on the CPU the tensor is the value."""

    def __init__(self, count: torch.Tensor):
        self.count, self.ready = count, None
        if count.device.type == "cuda":
            self.count = count.to("cpu", non_blocking=True)
            self.ready = torch.cuda.Event()
            self.ready.record(torch.cuda.current_stream(count.device))  # the stream the copy was enqueued on

    def value(self) -> int:
        if self.ready is not None:
            self.ready.synchronize()
        return int(self.count)


@dataclass
class AVLlmModelOutputWithPast(MultimodalBaseModelOutputWithPast):
    r"""
    The language model's outputs, plus `image_outputs` / `video_outputs` / `audio_outputs`: what `get_image_features`
    / `get_video_features` / `get_audio_features` returned for the batch's media (`pooler_output`: the projected
    features `(num_items, tokens_per_item, hidden_size)` scattered into the placeholder positions).
    """


@dataclass
class AVLlmAudioFeaturesOutput(AVLlmEncoderOutput):
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
    connector_inputs (`((num_audios, K * audio_tokens_per_segment, D_a),)`): the pooled segment tokens the audio
        projector takes (what a tower-output cache stores).
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

    @property
    def _can_compile_fullgraph(self) -> bool:
        """Whether `torch.compile(fullgraph=True)` traces the forward without graph breaks. What generate compiles
        (decoding with a static cache) runs the language model and our wrappers, which trace (the placeholder count
        check becomes an assertion of the graph while compiling), so the language model decides."""
        return type(getattr(self, self.base_model_prefix, self).language_model)._can_compile_fullgraph

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
    ) -> AVLlmEncoderOutput:
        """
        Args:
            pixel_values_videos: `(num_videos, num_frames, 3, H, W)`.
            kwargs: go to the vision tower (`output_hidden_states`, `output_attentions`, ...).
        Returns:
            `last_hidden_state`: the patch grid of hidden-state layer `vision_feature_layer`
            `(num_videos, num_frames, h, w, D_v)`; `pooler_output`: the connector's tokens
            `(num_videos, num_video_tokens, hidden_size)`; `hidden_states` / `attentions` when asked for: the tower's,
            one row per frame (`(num_videos * num_frames, ...)`, video by video); `connector_inputs`: what the
            connector consumes (`AVLlmVideoConnector.reduce`).
        """
        return self._clip_features(pixel_values_videos, **kwargs)

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.FloatTensor, **kwargs: Unpack[TransformersKwargs]
    ) -> AVLlmEncoderOutput:
        """An image is a clip of `config.frames_per_image` copies of itself (VideoLLaMA 2 repeats an image to
        `num_frames`; 1: a one-frame video), the tower run once per image (see `get_video_features`). `pixel_values`:
        `(num_images, 3, H, W)`; `last_hidden_state`: `(num_images, frames_per_image, h, w, D_v)`; `pooler_output`:
        `(num_images, num_image_tokens, hidden_size)`; `hidden_states` / `attentions`: one row per image."""
        return self._clip_features(pixel_values.unsqueeze(1), frames=self.config.frames_per_image, **kwargs)

    def _clip_features(
        self, pixel_values_videos: torch.FloatTensor, frames: int | None = None, **kwargs
    ) -> AVLlmEncoderOutput:
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
        connector_inputs = self.video_connector.reduce(summary, patch_grid)
        return AVLlmEncoderOutput(
            last_hidden_state=patch_grid,
            pooler_output=self.video_connector.project(*connector_inputs),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            connector_inputs=connector_inputs,
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
            connector_inputs=(tokens,),
        )

    def _encoder_outputs(
        self, modality: str, raw: torch.Tensor | None, given, **tower_kwargs
    ) -> AVLlmEncoderOutput | None:
        """The encoder outputs of `modality` ("image" | "video" | "audio"): `given` in `mm_encoder_outputs` (merged as
        they are when they hold `pooler_output`; only `connector_inputs`: the connector runs on them), else computed
        from the `raw` pixel values / input features (`tower_kwargs` go to `get_{modality}_features`), else `None`."""
        if given is None:
            return None if raw is None else getattr(self, f"get_{modality}_features")(raw, **tower_kwargs)
        if raw is not None:
            raise ValueError(f"You cannot pass both {modality} inputs and mm_encoder_outputs[{modality!r}]")
        if given.get("pooler_output") is not None:
            return given
        if given.get("connector_inputs") is None:
            raise ValueError(f"mm_encoder_outputs[{modality!r}] holds neither pooler_output nor connector_inputs")
        return self._from_connector_inputs(modality, tuple(given["connector_inputs"]))

    def _from_connector_inputs(self, modality: str, connector_inputs: tuple[torch.Tensor, ...]) -> AVLlmEncoderOutput:
        """Runs only the connector of `modality` ("image" | "video" | "audio") on given connector inputs (a
        tower-output cache's), after checking that their shapes are those this model's tower and connector produce."""
        is_audio = modality == "audio"
        tower_config = self.config.audio_config if is_audio else self.config.vision_config
        self._require_tower(tower_config, "audio" if is_audio else "vision")
        width = tower_family(tower_config).width(tower_config)
        if is_audio:
            expected = ((self.config.num_audio_tokens, width),)
            connector = self.audio_projector
        else:
            num_frames = self.config.frames_per_image if modality == "image" else self.config.num_frames
            expected = self.video_connector.connector_input_shapes(num_frames, self.config.vision_grid_size, width)
            connector = self.video_connector.project
        shapes = tuple(tuple(tensor.shape[1:]) for tensor in connector_inputs)
        if shapes != tuple(expected):
            raise AVLlmConnectorInputMismatchError(
                f"{modality} connector inputs have shapes {shapes} (without the item dim), but this model's "
                f"{self.config.connector_type if not is_audio else 'audio'} connector takes {tuple(expected)}; were "
                "they computed by another tower or with other settings (frames, audio segments, tokens per segment)?"
            )
        dtype = next(self.audio_projector.parameters() if is_audio else self.video_connector.parameters()).dtype
        projected = connector(*(tensor.to(dtype) for tensor in connector_inputs))
        return AVLlmEncoderOutput(pooler_output=projected, connector_inputs=connector_inputs)

    def get_placeholder_mask(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.FloatTensor,
        modality: str,
        mm_token_type_ids: torch.LongTensor | None = None,
    ) -> torch.BoolTensor:
        """Placeholder positions of `modality` ("image" | "video" | "audio") as a `(batch, seq)` mask, read from
        `mm_token_type_ids` when given, else from `input_ids`, else by matching the placeholder's embedding."""
        token_id = getattr(self.config, f"{modality}_token_id")
        if mm_token_type_ids is not None:
            return mm_token_type_ids == TOKEN_TYPE_IDS[modality]
        if input_ids is not None:
            return input_ids == token_id
        placeholder = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
        return (inputs_embeds == placeholder).all(-1)

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
        self, input_ids, inputs_embeds, modality: str, features: torch.Tensor, mm_token_type_ids, counts: dict
    ) -> torch.Tensor:
        """Writes `features` `(num_items, tokens_per_item, hidden)` into the placeholder positions of `modality`, in
        order, and records the placeholder count in `counts` for `_check_placeholder_counts`.

        No host synchronisation: reading the count here (`int(mask.sum())`) would stall the host until the towers had
        run, before it could enqueue the LLM (15% of a 7B prefill on an H200). So the count is compared after the whole
        forward has been enqueued, and the merge must not trust it: the k-th placeholder takes feature row k through a
        gather with clamped indices (`torch.where` keeps the text embeddings elsewhere), which stays in bounds whatever
        the count, where `masked_scatter` with more placeholders than features would trip a device-side assert on
        CUDA before the named error could be raised. The values equal `masked_scatter`'s; shapes are static, so it
        also compiles without graph breaks."""
        features = features.to(inputs_embeds.device, inputs_embeds.dtype)
        mask = self.get_placeholder_mask(input_ids, inputs_embeds, modality, mm_token_type_ids)
        count = mask.sum()
        counts[modality] = (count if is_torchdynamo_compiling() else _DeferredCount(count), *features.shape[:2])
        rows = features.reshape(-1, features.shape[-1])
        if rows.shape[0] == 0:
            return inputs_embeds
        index = (mask.flatten().cumsum(0) - 1).clamp(0, rows.shape[0] - 1)
        return torch.where(mask.unsqueeze(-1), rows[index].view_as(inputs_embeds), inputs_embeds)

    def _check_placeholder_counts(self, counts: dict) -> None:
        """Raises `AVLlmPlaceholderMismatchError` when a modality's placeholder count (recorded by `_merge`) differs
        from its feature token count. Called once every kernel of the forward has been enqueued; while compiling, the
        check is a runtime assertion of the graph instead."""
        for modality, (count, num_items, tokens_per_item) in counts.items():
            num_features = num_items * tokens_per_item
            if is_torchdynamo_compiling():
                torch._assert_async(count == num_features, "placeholder count mismatch")
                continue
            num_placeholders = count.value()
            if num_placeholders != num_features:
                token_id = getattr(self.config, f"{modality}_token_id")
                raise AVLlmPlaceholderMismatchError(
                    f"{num_placeholders} {modality} placeholder tokens (id {token_id}) but {num_items} item(s) giving "
                    f"{num_features} feature tokens; expand each modality token with the processor built for this "
                    "model and do not truncate inside a placeholder run"
                )

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
        mm_encoder_outputs: dict[str, AVLlmEncoderOutput] | None = None,
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
        mm_encoder_outputs (`dict[str, AVLlmEncoderOutput]`, *optional*): per modality ("image", "video", "audio"),
            encoder outputs computed beforehand, in place of that modality's pixel values / input features: with
            `pooler_output` (what `get_*_features` returns; `generate` pre-encodes images and videos this way) they
            are merged as they are; with only `connector_inputs` (a tower-output cache's), the connector runs on them.
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
        given = mm_encoder_outputs or {}
        counts = {}  # placeholder counts, checked once the whole forward is enqueued
        image_outputs = self._encoder_outputs("image", pixel_values, given.get("image"), **tower_kwargs)
        if image_outputs is not None:
            inputs_embeds = self._merge(
                input_ids, inputs_embeds, "image", image_outputs.pooler_output, mm_token_type_ids, counts
            )
        video_outputs = self._encoder_outputs("video", pixel_values_videos, given.get("video"), **tower_kwargs)
        if video_outputs is not None:
            inputs_embeds = self._merge(
                input_ids, inputs_embeds, "video", video_outputs.pooler_output, mm_token_type_ids, counts
            )
        if touch_absent and image_outputs is None and video_outputs is None:
            inputs_embeds = self._touch_absent_branch(inputs_embeds, "vision")
        audio_outputs = self._encoder_outputs(
            "audio", input_features, given.get("audio"), input_features_mask=input_features_mask, **tower_kwargs
        )
        if audio_outputs is not None:
            inputs_embeds = self._merge(
                input_ids, inputs_embeds, "audio", audio_outputs.pooler_output, mm_token_type_ids, counts
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
        self._check_placeholder_counts(counts)
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

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs: dict, *args, **kwargs) -> dict:
        """After prefill, decoding with a cache sends no media, so `mm_token_type_ids` is dropped rather than grown by
        one column and sliced at every step (`generate`'s handling of it): the decode steps then pass exactly what the
        bare language model's do."""
        if model_kwargs.get("use_cache", True):
            model_kwargs.pop("mm_token_type_ids", None)
        return super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)

    def get_image_features(
        self, pixel_values: torch.FloatTensor, **kwargs: Unpack[TransformersKwargs]
    ) -> AVLlmEncoderOutput:
        return self.model.get_image_features(pixel_values, **kwargs)

    def get_video_features(
        self, pixel_values_videos: torch.FloatTensor, **kwargs: Unpack[TransformersKwargs]
    ) -> AVLlmEncoderOutput:
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
        mm_encoder_outputs: dict[str, AVLlmEncoderOutput] | None = None,
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
            mm_encoder_outputs=mm_encoder_outputs,
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


# generate() asks at every decode step whether a remote-code model's forward takes `cache_position`
# (`inspect.signature(self.forward)`: ~200 Python calls, a fifth of the bare LLM's whole decode step on the CPU);
# the signature computed once answers it without re-reading the function.
AVLlmForConditionalGeneration.forward.__signature__ = inspect.signature(AVLlmForConditionalGeneration.forward)

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
    "AVLlmConnectorInputMismatchError",
    "AVLlmEncoderOutput",
    "AVLlmForConditionalGeneration",
    "AVLlmModel",
    "AVLlmPlaceholderMismatchError",
    "AVLlmPreTrainedModel",
]
