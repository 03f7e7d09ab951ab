"""Connectors that map tower features to the LLM width: one class per connector, chosen by `config.connector_type`.

Every video connector is built from the config and the vision tower's width D_v, takes per-frame summary tokens
`(B, T, D_v)` and the patch grid `(B, T, h, w, D_v)` and returns `(B, num_output_tokens, D_llm)`;
`num_output_tokens(config, T, h)` is the count the processor expands placeholders to. Its forward is `project` of
`reduce`: `reduce` (no parameters) keeps only what the projection consumes, which is what a tower-output cache stores
for a stage that freezes the tower (`connector_input_shapes` gives its shapes).
"""

import torch
from torch import nn


def _conv_output_size(size: int, kernel: int, padding: int) -> int:
    """Output length of a convolution whose stride equals its kernel."""
    return (size + 2 * padding - kernel) // kernel + 1


class AVLlmMlp2xGelu(nn.Module):
    """Linear -> GELU -> Linear (LLaVA's `mlp2x_gelu`)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(out_features, out_features)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(hidden_states)))


class AVLlmVideoConnector(nn.Module):
    """A video connector: `forward(frame_tokens, patch_grid)` is `project(*reduce(frame_tokens, patch_grid))`."""

    @staticmethod
    def num_output_tokens(config, num_frames: int, grid_size: int) -> int:
        raise NotImplementedError

    @staticmethod
    def reduce(frame_tokens: torch.Tensor, patch_grid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The tower's outputs reduced to what `project` consumes (no parameters involved)."""
        raise NotImplementedError

    @staticmethod
    def connector_input_shapes(num_frames: int, grid_size: int, width: int) -> tuple[tuple[int, ...], ...]:
        """Shapes (without the batch dim) of what `reduce` returns for a clip of `num_frames` frames."""
        raise NotImplementedError

    def project(self, *connector_inputs: torch.Tensor) -> torch.Tensor:
        """`reduce`'s outputs -> `(B, num_output_tokens, D_llm)`."""
        raise NotImplementedError

    def forward(self, frame_tokens: torch.Tensor, patch_grid: torch.Tensor) -> torch.Tensor:
        return self.project(*self.reduce(frame_tokens, patch_grid))


class AVLlmTemporalSpatialConnector(AVLlmVideoConnector):
    """AV-LLM: T temporal tokens (each frame's [CLS]) then N spatial tokens (patches averaged over time), each set
    through its own linear projector (W_t, W_s). Output order [T][N]."""

    def __init__(self, config, vision_width: int):
        super().__init__()
        llm_width = config.text_config.hidden_size
        self.temporal_projector = nn.Linear(vision_width, llm_width)
        self.spatial_projector = nn.Linear(vision_width, llm_width)

    @staticmethod
    def num_output_tokens(config, num_frames: int, grid_size: int) -> int:
        return num_frames + grid_size * grid_size

    @staticmethod
    def reduce(frame_tokens, patch_grid):
        """Each frame's summary `(B, T, D_v)` and the patch grid averaged over time `(B, h, w, D_v)`."""
        return frame_tokens, patch_grid.mean(dim=1)

    @staticmethod
    def connector_input_shapes(num_frames, grid_size, width):
        return (num_frames, width), (grid_size, grid_size, width)

    def project(self, frame_tokens, time_pooled_grid):
        temporal = self.temporal_projector(frame_tokens)
        spatial = self.spatial_projector(time_pooled_grid.flatten(1, 2))
        return torch.cat([temporal, spatial], dim=1)


class AVLlmPoolConnector(AVLlmVideoConnector):
    """Video-ChatGPT / 001: temporal tokens (each frame averaged over space) then spatial tokens (each patch averaged
    over time), together through one mlp2x-gelu projector. Output order [T][N]."""

    def __init__(self, config, vision_width: int):
        super().__init__()
        self.projector = AVLlmMlp2xGelu(vision_width, config.text_config.hidden_size)

    @staticmethod
    def num_output_tokens(config, num_frames: int, grid_size: int) -> int:
        return num_frames + grid_size * grid_size

    @staticmethod
    def reduce(frame_tokens, patch_grid):
        """Each frame averaged over space `(B, T, D_v)` and the patch grid averaged over time `(B, h, w, D_v)`."""
        return patch_grid.mean(dim=(2, 3)), patch_grid.mean(dim=1)

    @staticmethod
    def connector_input_shapes(num_frames, grid_size, width):
        return (num_frames, width), (grid_size, grid_size, width)

    def project(self, frame_means, time_pooled_grid):
        return self.projector(torch.cat([frame_means, time_pooled_grid.flatten(1, 2)], dim=1))


class AVLlmLayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a `(B, C, H, W)` map (timm's `LayerNorm2d`)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class AVLlmConvNormAct(nn.Module):
    """Conv2d (no bias) -> LayerNorm2d -> optional SiLU; attribute names follow timm's `ConvNormAct`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int = 1, apply_act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False
        )
        self.bn = AVLlmLayerNorm2d(out_channels)
        self.act = nn.SiLU() if apply_act else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(hidden_states)))


class AVLlmSqueezeExcite(nn.Module):
    """timm's `SEModule`: global average -> 1x1 conv -> SiLU -> 1x1 conv -> sigmoid gate."""

    def __init__(self, channels: int, reduced_channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced_channels, 1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(reduced_channels, channels, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.act(self.fc1(hidden_states.mean((2, 3), keepdim=True))))
        return hidden_states * gate.sigmoid()


class AVLlmRegBottleneck(nn.Module):
    """timm's RegNet `Bottleneck` with the settings of VideoLLaMA 2's STC connector (bottle ratio 1, depthwise 3x3,
    squeeze-excite ratio 0.25, LayerNorm2d, SiLU, 1x1 conv shortcut when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = AVLlmConvNormAct(in_channels, out_channels, 1)
        self.conv2 = AVLlmConvNormAct(out_channels, out_channels, 3, groups=out_channels)
        self.se = AVLlmSqueezeExcite(out_channels, round(in_channels * 0.25))
        self.conv3 = AVLlmConvNormAct(out_channels, out_channels, 1, apply_act=False)
        self.downsample = (
            AVLlmConvNormAct(in_channels, out_channels, 1, apply_act=False)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.act3 = nn.SiLU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = self.downsample(hidden_states)
        hidden_states = self.conv3(self.se(self.conv2(self.conv1(hidden_states))))
        return self.act3(hidden_states + residual)


class AVLlmRegStage(nn.Sequential):
    """timm's `RegStage` (stride 1): `depth` bottlenecks named b1..bN."""

    def __init__(self, depth: int, in_channels: int, out_channels: int):
        super().__init__()
        for index in range(depth):
            self.add_module(
                f"b{index + 1}", AVLlmRegBottleneck(in_channels if index == 0 else out_channels, out_channels)
            )


class AVLlmSTCConnector(AVLlmVideoConnector):
    """VideoLLaMA 2 spatial-temporal convolution: RegStage -> Conv3d(kernel = stride = (t, s, s)) + SiLU -> RegStage ->
    2-layer MLP, on the patch grid. An image (T = 1) is repeated to the temporal kernel, as VideoLLaMA 2 repeats
    images over time."""

    def __init__(self, config, vision_width: int):
        super().__init__()
        llm_width = config.text_config.hidden_size
        self.downsample = tuple(config.stc_downsample)
        self.s1 = AVLlmRegStage(config.stc_depth, vision_width, llm_width) if config.stc_depth else nn.Identity()
        stage_width = llm_width if config.stc_depth else vision_width
        self.sampler = nn.Sequential(
            nn.Conv3d(
                stage_width,
                llm_width,
                kernel_size=self.downsample,
                stride=self.downsample,
                padding=config.stc_padding,
            ),
            nn.SiLU(),
        )
        self.s2 = AVLlmRegStage(config.stc_depth, llm_width, llm_width) if config.stc_depth else nn.Identity()
        self.readout = nn.Sequential(nn.Linear(llm_width, llm_width), nn.GELU(), nn.Linear(llm_width, llm_width))

    @staticmethod
    def num_output_tokens(config, num_frames: int, grid_size: int) -> int:
        kernel_t, kernel_s, _ = config.stc_downsample
        frames = max(num_frames, kernel_t)
        out_t = _conv_output_size(frames, kernel_t, config.stc_padding)
        out_s = _conv_output_size(grid_size, kernel_s, config.stc_padding)
        return out_t * out_s * out_s

    @staticmethod
    def reduce(frame_tokens, patch_grid):
        """The convolutions consume the whole patch grid `(B, T, h, w, D_v)`."""
        return (patch_grid,)

    @staticmethod
    def connector_input_shapes(num_frames, grid_size, width):
        return ((num_frames, grid_size, grid_size, width),)

    def project(self, patch_grid):
        batch, frames, height, width, _ = patch_grid.shape
        if frames < self.downsample[0]:
            patch_grid = patch_grid.repeat_interleave(-(-self.downsample[0] // frames), dim=1)[:, : self.downsample[0]]
            frames = self.downsample[0]
        hidden = self.s1(patch_grid.flatten(0, 1).permute(0, 3, 1, 2))
        hidden = hidden.unflatten(0, (batch, frames)).permute(0, 2, 1, 3, 4)
        hidden = self.sampler(hidden)
        out_frames = hidden.shape[2]
        hidden = self.s2(hidden.permute(0, 2, 1, 3, 4).flatten(0, 1))
        hidden = hidden.unflatten(0, (batch, out_frames)).permute(0, 1, 3, 4, 2).flatten(1, 3)
        return self.readout(hidden)


def pool_valid_frames(sequence: torch.Tensor, valid: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Adaptive average pooling of each row's valid frames only, as `adaptive_avg_pool1d` of those frames alone.

    Args:
        sequence: `(S, F, D)` frames of S segments.
        valid: `(S, F)` bool, the frames holding real audio (in time order; padding frames are left out).
        num_tokens: T, tokens per segment.
    Returns:
        `(S, T, D)`: token i averages valid frames `floor(i * n / T)` to `ceil((i + 1) * n / T) - 1` of a segment with
        n valid frames (zeros for a segment without any).
    """
    rank = valid.cumsum(dim=1) - 1  # (S, F) index of each valid frame among its segment's valid frames
    count = valid.sum(dim=1, keepdim=True)  # (S, 1)
    bins = torch.arange(num_tokens, device=sequence.device)[None]  # (1, T)
    start = bins * count // num_tokens  # (S, T)
    end = ((bins + 1) * count + num_tokens - 1) // num_tokens
    inside = valid[:, None] & (rank[:, None] >= start[..., None]) & (rank[:, None] < end[..., None])  # (S, T, F)
    weights = inside / (end - start).clamp(min=1)[..., None]
    return torch.bmm(weights.to(sequence.dtype), sequence)


class AVLlmAudioProjector(nn.Module):
    """Projects audio tokens `(B, K * L, D_a)` to the LLM width: `linear` (AV-LLM) or `mlp2x_gelu` (001,
    VideoLLaMA 2)."""

    def __init__(self, config, audio_width: int):
        super().__init__()
        llm_width = config.text_config.hidden_size
        if config.audio_projector_type == "linear":
            self.projector = nn.Linear(audio_width, llm_width)
        else:
            self.projector = AVLlmMlp2xGelu(audio_width, llm_width)

    def forward(self, audio_tokens: torch.Tensor) -> torch.Tensor:
        return self.projector(audio_tokens)


VIDEO_CONNECTORS = {
    "avllm": AVLlmTemporalSpatialConnector,
    "stc": AVLlmSTCConnector,
    "pool": AVLlmPoolConnector,
}
