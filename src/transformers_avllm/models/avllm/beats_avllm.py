"""BEATs (Chen et al., 2023, "BEATs: Audio Pre-Training with Acoustic Tokenizers"), the audio tower of VideoLLaMA 2's
audio-visual models, in transformers' style: `AVLlmBeatsConfig`, `AVLlmBeatsModel` and its fbank front end
`AVLlmBeatsFeatureExtractor`.

BEATs is a ViT over 16x16 patches of a 128-bin log-mel fbank: patch embedding -> LayerNorm -> projection, a
convolutional positional embedding, then post-LayerNorm ("DeepNorm") transformer layers whose self-attention adds a
bucketed relative position bias, shared by all layers and gated per query and head (as in WavLM). Reference
checkpoints are renamed to these keys by the package's converter (`conversion/beats.py`, which is not shipped).
"""

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import ASTFeatureExtractor, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.integrations.fsdp import is_fsdp_managed_module
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .compat_avllm import INSTALLED_TRANSFORMERS  # noqa: F401  (first: checks the installed transformers release)

# Statistics of BEATs' fbank over AudioSet, which its models were trained with (`BEATs.preprocess`).
BEATS_FBANK_MEAN = 15.41663
BEATS_FBANK_STD = 6.55582


class AVLlmBeatsFeatureExtractor(ASTFeatureExtractor):
    r"""
    BEATs' front end: the kaldi-compatible log-mel fbank of 16 kHz audio (25 ms povey windows every 10 ms, 512-point
    FFT, pre-emphasis 0.97, DC offset removed, 128 mel bins from 20 Hz, no dither) of the waveform scaled to 16-bit
    integers, normalised as `(fbank - mean) / (2 * std)` with BEATs' AudioSet statistics. Returns `input_values` of
    shape `(batch, max_length, num_mel_bins)`.

    It is [`ASTFeatureExtractor`] (same fbank, same normalisation formula) plus what AST's settings cannot express:
    the povey window (AST's is hann), the 16-bit scaling of the samples (AST feeds them in [-1, 1]), and cutting or
    padding the *waveform* with silence to `max_length` frames before the fbank (AST zero-pads the finished fbank;
    the fbank of silence is log(eps), not 0). The fbank is computed with transformers' own `spectrogram`, so
    torchaudio is not needed.

    Args:
        max_length (`int`, *optional*, defaults to 2998):
            Frames per clip: 2998 = 30 s, the fixed clip length of VideoLLaMA 2 (longer audio is cut to its start).
        mean (`float`, *optional*, defaults to 15.41663) / std (`float`, *optional*, defaults to 6.55582):
            BEATs' fbank statistics.
        Other arguments: see [`ASTFeatureExtractor`].
    """

    def __init__(
        self,
        feature_size=1,
        sampling_rate=16000,
        num_mel_bins=128,
        max_length=2998,
        padding_value=0.0,
        do_normalize=True,
        mean=BEATS_FBANK_MEAN,
        std=BEATS_FBANK_STD,
        return_attention_mask=False,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            num_mel_bins=num_mel_bins,
            max_length=max_length,
            padding_value=padding_value,
            do_normalize=do_normalize,
            mean=mean,
            std=std,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.frame_length = sampling_rate * 25 // 1000
        self.hop_length = sampling_rate // 100
        self.fft_length = 1 << (self.frame_length - 1).bit_length()
        with warnings.catch_warnings():  # kaldi's 128-bin bank over a 512-point FFT has empty low filters, as in kaldi
            warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
            self.mel_filters = mel_filter_bank(
                num_frequency_bins=self.fft_length // 2 + 1,
                num_mel_filters=num_mel_bins,
                min_frequency=20,
                max_frequency=sampling_rate // 2,
                sampling_rate=sampling_rate,
                norm=None,
                mel_scale="kaldi",
                triangularize_in_mel_space=True,
            )
        self.window = window_function(self.frame_length, "povey", periodic=False)

    def _extract_fbank_features(self, waveform: np.ndarray, max_length: int) -> np.ndarray:
        """`(max_length, num_mel_bins)` log-mel fbank of `waveform` (samples in [-1, 1]) cut or padded with silence to
        `max_length` frames."""
        num_samples = self.frame_length + (max_length - 1) * self.hop_length
        waveform = np.pad(waveform[:num_samples], (0, max(0, num_samples - len(waveform))))
        return spectrogram(
            waveform * 2**15,
            self.window,
            frame_length=self.frame_length,
            hop_length=self.hop_length,
            fft_length=self.fft_length,
            power=2.0,
            center=False,
            preemphasis=0.97,
            mel_filters=self.mel_filters,
            log_mel="log",
            mel_floor=float(np.finfo(np.float32).eps),
            remove_dc_offset=True,
        ).T


@strict
class AVLlmBeatsConfig(PreTrainedConfig):
    r"""
    Configuration of a BEATs audio encoder. The defaults are those of VideoLLaMA 2's audio tower (BEATs_iter3+
    fine-tuned on AS2M: a 12-layer, 768-wide DeepNorm transformer).

    Args:
        num_mel_bins (`int`, defaults to 128) / max_length (`int`, defaults to 2998):
            Mel bins and frames of the fbank the feature extractor produces; the model accepts any length, these two
            give the number of output tokens per clip (`num_patches`).
        patch_size (`int`, defaults to 16):
            Side of the square fbank patches (time x frequency), also the stride.
        patch_embedding_dim (`int`, defaults to 512) / patch_embedding_bias (`bool`, defaults to `False`):
            Width and bias of the patch embedding convolution (projected to `hidden_size` when they differ).
        hidden_size / num_hidden_layers / num_attention_heads / intermediate_size / hidden_act:
            The transformer (768 / 12 / 12 / 3072 / `"gelu"`).
        num_conv_pos_embeddings (`int`, defaults to 128) / num_conv_pos_embedding_groups (`int`, defaults to 16):
            Kernel size and groups of the weight-normalised convolutional positional embedding.
        num_buckets (`int`, defaults to 320) / max_bucket_distance (`int`, defaults to 800):
            Relative position buckets (half per direction; half of those exact, the rest log-spaced up to the
            distance).
        deep_norm (`bool`, defaults to `True`):
            DeepNorm residuals: each sub-layer's residual is scaled by `(2 * num_hidden_layers) ** 0.25`.
        layer_norm_eps (`float`, defaults to 1e-5):
            LayerNorm epsilon.
        hidden_dropout / attention_dropout / activation_dropout / feature_projection_dropout (`float`, defaults to 0):
            Dropout after the attention and feed-forward blocks and the positional embedding; on attention weights;
            after the feed-forward activation; on the projected patch embeddings.
        layerdrop (`float`, defaults to 0.05):
            Probability of skipping a layer in training (not under DeepSpeed ZeRO-3 or FSDP, whose processes must run
            the same layers).
        layer_wise_gradient_decay_ratio (`float`, defaults to 0.6):
            Each layer multiplies the gradient flowing to the layers below it by this ratio (the forward pass is
            unchanged).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the default initialisation.
    """

    model_type = "avllm_beats"

    num_mel_bins: int = 128
    max_length: int = 2998
    patch_size: int = 16
    patch_embedding_dim: int = 512
    patch_embedding_bias: bool = False
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    num_buckets: int = 320
    max_bucket_distance: int = 800
    deep_norm: bool = True
    layer_norm_eps: float = 1e-5
    hidden_dropout: float | int = 0.0
    attention_dropout: float | int = 0.0
    activation_dropout: float | int = 0.0
    feature_projection_dropout: float | int = 0.0
    layerdrop: float | int = 0.05
    layer_wise_gradient_decay_ratio: float | int = 0.6
    initializer_range: float = 0.02

    def validate_architecture(self):
        """Part of `@strict`-powered validation."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_conv_pos_embedding_groups "
                f"({self.num_conv_pos_embedding_groups})"
            )

    @property
    def num_patches(self) -> int:
        """Output tokens per clip of `max_length` frames: time patches x frequency patches (187 x 8 = 1496)."""
        return (self.max_length // self.patch_size) * (self.num_mel_bins // self.patch_size)


class AVLlmBeatsPatchEmbeddings(nn.Module):
    """fbank `(B, T, F)` -> patch tokens `(B, T // p * F // p, hidden_size)`, time-major (frequency varies fastest)."""

    def __init__(self, config: AVLlmBeatsConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(
            1,
            config.patch_embedding_dim,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            bias=config.patch_embedding_bias,
        )
        self.layer_norm = nn.LayerNorm(config.patch_embedding_dim, eps=config.layer_norm_eps)
        self.projection = (
            nn.Linear(config.patch_embedding_dim, config.hidden_size)
            if config.patch_embedding_dim != config.hidden_size
            else nn.Identity()
        )
        self.dropout = nn.Dropout(config.feature_projection_dropout)

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        embeddings = self.patch_embedding(input_features.unsqueeze(1)).flatten(2).transpose(1, 2)
        return self.dropout(self.projection(self.layer_norm(embeddings)))


class AVLlmBeatsPositionalConvEmbedding(nn.Module):
    """Weight-normalised grouped Conv1d over time -> GELU, `(B, L, D)` -> `(B, L, D)` (an even kernel drops the last
    output step so that the length is kept)."""

    def __init__(self, config: AVLlmBeatsConfig):
        super().__init__()
        kernel_size = config.num_conv_pos_embeddings
        conv = nn.Conv1d(
            config.hidden_size,
            config.hidden_size,
            kernel_size=kernel_size,
            padding=kernel_size // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.num_pad_remove = 1 if kernel_size % 2 == 0 else 0
        self.activation = nn.GELU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv(hidden_states.transpose(1, 2))
        if self.num_pad_remove:
            hidden_states = hidden_states[:, :, : -self.num_pad_remove]
        return self.activation(hidden_states).transpose(1, 2)


class AVLlmBeatsRelativePositionBias(nn.Module):
    """Bidirectional bucketed relative position bias `(1, heads, L, L)` (T5's buckets), computed once per forward and
    shared by all layers."""

    def __init__(self, config: AVLlmBeatsConfig):
        super().__init__()
        self.num_buckets = config.num_buckets
        self.max_distance = config.max_bucket_distance
        self.embedding = nn.Embedding(config.num_buckets, config.num_attention_heads)

    def bucket(self, relative_position: torch.Tensor) -> torch.Tensor:
        """Bucket of each `key - query` offset: the upper half of the buckets for keys after the query; within a
        half, exact buckets for distances below a quarter of `num_buckets`, log-spaced ones up to `max_distance`."""
        half = self.num_buckets // 2
        max_exact = half // 2
        distance = relative_position.abs()
        log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(self.max_distance / max_exact)
        log_bucket = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
        return (relative_position > 0).long() * half + torch.where(distance < max_exact, distance, log_bucket)

    def forward(self, length: int) -> torch.Tensor:
        positions = torch.arange(length, device=self.embedding.weight.device)
        buckets = self.bucket(positions[None, :] - positions[:, None])
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs: Unpack[TransformersKwargs],
):
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if position_bias is not None:
        attn_weights = attn_weights + position_bias
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class AVLlmBeatsAttention(nn.Module):
    """Self-attention with BEATs' gated relative position bias: each head's query (after its projection) gates the
    shared bias row by `a * (b * c - 1) + 2`, with `a`, `b` two sigmoids of a linear map of the query and `c` a learned
    per-head constant. The gated bias goes to transformers' attention functions as `position_bias`."""

    def __init__(self, config: AVLlmBeatsConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))

    def forward(
        self, hidden_states: torch.Tensor, position_bias: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        gates = self.gru_rel_pos_linear(query).unflatten(-1, (2, 4)).sum(-1).sigmoid()
        gate_a, gate_b = gates.chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # (B, heads, L, 1)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            position_bias=(gate * position_bias).to(query.dtype),
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.out_proj(attn_output), attn_weights


class AVLlmBeatsFeedForward(nn.Module):
    def __init__(self, config: AVLlmBeatsConfig):
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.intermediate_dropout(self.intermediate_act_fn(self.intermediate_dense(hidden_states)))
        return self.output_dropout(self.output_dense(hidden_states))


class AVLlmBeatsEncoderLayer(GradientCheckpointingLayer):
    """Post-LayerNorm layer: `LN(residual * alpha + attention(x))`, then `LN(residual * alpha + feed_forward(x))`, with
    DeepNorm's `alpha = (2 * num_layers) ** 0.25` (1 without deep_norm)."""

    def __init__(self, config: AVLlmBeatsConfig):
        super().__init__()
        self.attention = AVLlmBeatsAttention(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = AVLlmBeatsFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.residual_scale = (2 * config.num_hidden_layers) ** 0.25 if config.deep_norm else 1.0

    def forward(
        self, hidden_states: torch.Tensor, position_bias: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> torch.Tensor:
        attention_output, _ = self.attention(hidden_states, position_bias, **kwargs)
        hidden_states = self.layer_norm(hidden_states * self.residual_scale + self.dropout(attention_output))
        return self.final_layer_norm(hidden_states * self.residual_scale + self.feed_forward(hidden_states))


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by `scale` backward (BEATs' layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx, hidden_states: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return hidden_states.view_as(hidden_states)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output * ctx.scale, None


class AVLlmBeatsEncoder(nn.Module):
    def __init__(self, config: AVLlmBeatsConfig):
        super().__init__()
        self.config = config
        self.pos_conv_embed = AVLlmBeatsPositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.relative_position_bias = AVLlmBeatsRelativePositionBias(config)
        self.layers = nn.ModuleList([AVLlmBeatsEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        hidden_states = self.dropout(self.layer_norm(hidden_states + self.pos_conv_embed(hidden_states)))
        position_bias = self.relative_position_bias(hidden_states.shape[1])
        decay = self.config.layer_wise_gradient_decay_ratio
        # Under DeepSpeed ZeRO-3 or FSDP all processes gather each layer's parameters together, so every process runs
        # every layer: no layerdrop there (as in transformers' wav2vec2).
        layerdrop = 0.0 if is_deepspeed_zero3_enabled() or is_fsdp_managed_module(self) else self.config.layerdrop
        for layer in self.layers:
            if decay != 1.0 and torch.is_grad_enabled():
                hidden_states = _ScaleGradient.apply(hidden_states, decay)
            if self.training and layerdrop > 0 and torch.rand([]) < layerdrop:
                continue
            hidden_states = layer(hidden_states, position_bias, **kwargs)
        return hidden_states


class AVLlmBeatsPreTrainedModel(PreTrainedModel):
    config: AVLlmBeatsConfig
    base_model_prefix = "beats"
    main_input_name = "input_features"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["AVLlmBeatsEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False  # an arbitrary per-query bias does not fit flash attention
    _can_record_outputs = {"hidden_states": AVLlmBeatsEncoderLayer, "attentions": AVLlmBeatsAttention}

    def _initialize_weights(self, module, is_custom_code: bool = False):
        """transformers skips, for custom code (this class), the init of a module whose own parameters are all
        loaded, for code that writes weights in place. Every init below goes through `transformers.initialization`,
        which leaves loaded parameters alone, so it runs for them too: the keys a checkpoint lacks under such a module
        (the weight-norm magnitude under the positional embedding, a projection under an attention block) are
        initialised as at build."""
        super()._initialize_weights(module, is_custom_code=False)

    def _init_weights(self, module):
        """BEATs' initialisation: DeepNorm's scaled Xavier projections, the positional convolution with
        `std = sqrt(4 / (kernel * width))` and its weight-norm magnitude set to the direction's norm."""
        super()._init_weights(module)
        config = self.config
        deep_norm_gain = (8 * config.num_hidden_layers) ** -0.25 if config.deep_norm else 1.0
        if isinstance(module, AVLlmBeatsAttention):
            init.xavier_normal_(module.q_proj.weight)
            init.xavier_normal_(module.k_proj.weight)
            init.xavier_normal_(module.v_proj.weight, gain=deep_norm_gain)
            init.xavier_normal_(module.out_proj.weight, gain=deep_norm_gain)
            init.ones_(module.gru_rel_pos_const)
        elif isinstance(module, AVLlmBeatsFeedForward):
            init.xavier_normal_(module.intermediate_dense.weight, gain=deep_norm_gain)
            init.xavier_normal_(module.output_dense.weight, gain=deep_norm_gain)
        elif isinstance(module, AVLlmBeatsRelativePositionBias):
            init.xavier_normal_(module.embedding.weight)
        elif isinstance(module, AVLlmBeatsPositionalConvEmbedding):
            direction = module.conv.parametrizations.weight.original1
            init.normal_(direction, std=math.sqrt(4 / (module.conv.kernel_size[0] * config.hidden_size)))
            init.copy_(module.conv.parametrizations.weight.original0, direction.norm(dim=(0, 1), keepdim=True))
            init.zeros_(module.conv.bias)


class AVLlmBeatsModel(AVLlmBeatsPreTrainedModel):
    def __init__(self, config: AVLlmBeatsConfig):
        super().__init__(config)
        self.embeddings = AVLlmBeatsPatchEmbeddings(config)
        self.encoder = AVLlmBeatsEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, input_features: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutput:
        r"""
        input_features (`torch.Tensor` of shape `(batch_size, num_frames, num_mel_bins)`):
            Normalised fbank from [`AVLlmBeatsFeatureExtractor`] (its `input_values`); any number of frames of at
            least `patch_size`, trailing frames that do not fill a patch are dropped.

        Returns:
            `BaseModelOutput` whose `last_hidden_state` is `(batch_size, num_frames // p * num_mel_bins // p,
            hidden_size)`, time-major; `hidden_states` (each layer's output) and `attentions` when asked for.
        """
        hidden_states = self.embeddings(input_features)
        return BaseModelOutput(last_hidden_state=self.encoder(hidden_states, **kwargs))


# A processor's `save_pretrained` names this class in the extractor's `auto_map` (and copies this file), so that
# AutoProcessor / AutoFeatureExtractor load it with `trust_remote_code=True` where this package is not installed.
AVLlmBeatsFeatureExtractor.register_for_auto_class()

__all__ = ["AVLlmBeatsConfig", "AVLlmBeatsFeatureExtractor", "AVLlmBeatsModel", "AVLlmBeatsPreTrainedModel"]
