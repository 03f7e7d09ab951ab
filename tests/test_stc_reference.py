"""The STC connector against VideoLLaMA 2's own `STCConnector` / `STCConnectorV35` and timm's `RegStage` (fixtures
recorded by tests/fixtures/make_videollama2_av.py from the reference repository with timm 1.0.3)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen2Config, SiglipVisionConfig

from transformers_avllm import AVLlmConfig
from transformers_avllm.models.avllm.connectors_avllm import AVLlmRegStage, AVLlmSTCConnector

FIXTURES = Path(__file__).parent / "fixtures" / "videollama2_av"


@pytest.fixture(scope="module")
def reference():
    return {
        "config": json.loads((FIXTURES / "stc_config.json").read_text()),
        "state_dict": load_file(FIXTURES / "stc_connector.safetensors"),
        "io": load_file(FIXTURES / "stc_io.safetensors"),
    }


def stc_config(reference, padding: int) -> AVLlmConfig:
    widths = reference["config"]
    return AVLlmConfig(
        vision_config=SiglipVisionConfig(hidden_size=widths["mm_hidden_size"], num_attention_heads=2),
        text_config=Qwen2Config(hidden_size=widths["hidden_size"], num_attention_heads=2, num_key_value_heads=1),
        connector_type="stc",
        stc_downsample=widths["downsample"],
        stc_depth=widths["depth"],
        stc_padding=padding,
    )


@pytest.mark.parametrize(("padding", "output", "tokens"), [(1, "output_stc", 3 * 4 * 4), (0, "output_v35", 2 * 3 * 3)])
def test_stc_connector_matches_reference(reference, padding, output, tokens):
    """`stc_padding` 1 is VideoLLaMA 2's `stc_connector`, 0 its `stc_connector_v35` (VideoLLaMA2.1): same keys, same
    numbers, on 4 frames of a 7 x 7 grid (odd, like SigLIP-so400m-384's 27 x 27)."""
    config = stc_config(reference, padding)
    connector = AVLlmSTCConnector(config, reference["config"]["mm_hidden_size"]).eval()
    connector.load_state_dict(reference["state_dict"], strict=True)
    grid = reference["io"]["input"]
    with torch.no_grad():
        ours = connector(grid[:, :, 0, 0], grid)
    assert AVLlmSTCConnector.num_output_tokens(config, num_frames=4, grid_size=7) == tokens
    assert ours.shape == reference["io"][output].shape == (2, tokens, reference["config"]["hidden_size"])
    torch.testing.assert_close(ours, reference["io"][output], atol=1e-5, rtol=0)


def test_released_token_counts():
    """VideoLLaMA2.1 (SigLIP 27 x 27, 16 frames, padding 0): 8 x 13 x 13; VideoLLaMA 2 (CLIP-336 24 x 24, 8 frames,
    padding 1): 5 x 13 x 13, not the paper's 576 (= 4 x 12 x 12, which needs padding 0)."""
    config = AVLlmConfig(vision_config=SiglipVisionConfig(), text_config=Qwen2Config(), connector_type="stc")
    config.stc_padding = 0
    assert AVLlmSTCConnector.num_output_tokens(config, num_frames=16, grid_size=27) == 1352
    assert AVLlmSTCConnector.num_output_tokens(config, num_frames=8, grid_size=24) == 576
    config.stc_padding = 1
    assert AVLlmSTCConnector.num_output_tokens(config, num_frames=8, grid_size=24) == 845


def test_regstage_matches_timm_regstage_fixture(reference):
    widths = reference["config"]
    stage = AVLlmRegStage(widths["depth"], widths["mm_hidden_size"], widths["hidden_size"]).eval()
    stage.load_state_dict({key[3:]: value for key, value in reference["state_dict"].items() if key.startswith("s1.")})
    frames = reference["io"]["input"].flatten(0, 1).permute(0, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(stage(frames), reference["io"]["s1_output"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("depth", "in_channels", "out_channels"), [(2, 12, 16), (1, 20, 20)])
def test_regstage_matches_timm(depth, in_channels, out_channels):
    """Directly against timm's `RegStage` with VideoLLaMA 2's arguments, where timm is installed."""
    timm_regnet = pytest.importorskip("timm.models.regnet")
    from timm.layers import LayerNorm2d

    torch.manual_seed(0)
    theirs = timm_regnet.RegStage(
        depth=depth,
        in_chs=in_channels,
        out_chs=out_channels,
        stride=1,
        dilation=1,
        act_layer=torch.nn.SiLU,
        norm_layer=LayerNorm2d,
    ).eval()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    ours = AVLlmRegStage(depth, in_channels, out_channels).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    frames = torch.randn(3, in_channels, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(ours(frames), theirs(frames), atol=1e-5, rtol=0)
