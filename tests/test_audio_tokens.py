"""Audio tokens pool real audio only, audio longer than a window is covered by several windows, and the order of a
video's visual and audio placeholders is a model setting used by processor and model alike."""

import numpy as np
import pytest
import torch
from media_fixtures import tone, write_video
from torch.nn.functional import adaptive_avg_pool1d

from transformers_avllm import AVLlmConfig, AVLlmForConditionalGeneration
from transformers_avllm.models.avllm import TOKEN_TYPE_IDS
from transformers_avllm.tiny import SAMPLING_RATE, build_processor, build_tokenizer, tiny_audio_config, tiny_config

WORDS = ["what", "is", "it", "?"]


def whisper_model(window_seconds: int, num_segments: int, tokens_per_segment: int, **kwargs):
    """A tiny Whisper-only model whose encoder window is `window_seconds` (Whisper: 30 s = 1500 encoder frames)."""
    torch.manual_seed(0)
    audio = tiny_audio_config("whisper", max_source_positions=50 * window_seconds)
    config = tiny_config(
        vision=None,
        audio=audio,
        num_audio_segments=num_segments,
        audio_tokens_per_segment=tokens_per_segment,
        **kwargs,
    )
    model = AVLlmForConditionalGeneration(config).eval()
    return model, build_processor(config, build_tokenizer([" ".join(WORDS)]))


def pool_by_hand(frames: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """`(F, D)` frames -> `(num_tokens, D)` with torch's adaptive average pooling."""
    return adaptive_avg_pool1d(frames.T[None], num_tokens)[0].T


def encode(model, features: torch.Tensor) -> torch.Tensor:
    """The Whisper encoder's output `(L', D)` on one window's features."""
    return model.model.audio_tower(features[None]).last_hidden_state[0]


@torch.no_grad()
def test_a_3_second_whisper_segment_pools_only_its_encoder_frames():
    # 001's geometry: one segment per clip in a 30 s window (1500 encoder frames), 64 tokens
    model, processor = whisper_model(window_seconds=30, num_segments=1, tokens_per_segment=64)
    waveform = tone(3.0, 440.0, SAMPLING_RATE, channels=1)[0]
    inputs = processor(text="<AUD>", audio=[waveform])
    features, mask = inputs["input_features"], inputs["input_features_mask"]
    assert features.shape[:2] == (1, 1) and mask.shape == (1, 1, 3000)
    assert int(mask.sum()) == 300  # 3 s of 10 ms hops; the other 27 s are padding

    tokens = model.get_audio_features(features, mask).pooler_output[0]
    encoded = encode(model, features[0, 0])
    assert encoded.shape[0] == 1500
    # 3 s = 300 mel frames = 150 encoder frames: the tokens pool exactly that slice of the encoder output
    expected = model.model.audio_projector(pool_by_hand(encoded[:150], 64))
    torch.testing.assert_close(tokens, expected)
    padded = model.model.audio_projector(pool_by_hand(encoded, 64))  # what pooling the whole window would give
    assert not torch.allclose(tokens, padded, atol=1e-3)


@torch.no_grad()
def test_audio_longer_than_a_window_is_covered_by_several_windows_not_cropped():
    # 1 s windows (50 encoder frames), two segments per clip: a 2.5 s clip has 1.25 s segments, two windows each
    model, processor = whisper_model(window_seconds=1, num_segments=2, tokens_per_segment=3)
    waveform = tone(2.5, 300.0, SAMPLING_RATE, channels=1)[0] * np.linspace(0.2, 1.0, 40000, dtype=np.float32)
    inputs = processor(text="<AUD>", audio=[waveform])
    features, mask = inputs["input_features"], inputs["input_features_mask"]
    assert features.shape[:2] == (1, 4)  # window by window: (segment 0, segment 1) first windows, then second ones
    assert mask[0].sum(dim=1).tolist() == [100, 100, 25, 25]  # 1 s + 0.25 s of 10 ms hops per segment

    extractor = processor.feature_extractor
    for index, (start, stop) in enumerate([(0, 16000), (20000, 36000), (16000, 20000), (36000, 40000)]):
        alone = extractor(waveform[start:stop], sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_features"]
        torch.testing.assert_close(features[0, index], alone[0])  # every sample is in some window

    tokens = model.get_audio_features(features, mask).pooler_output[0]
    encoded = [encode(model, features[0, index]) for index in range(4)]
    for segment_index, (first, second) in enumerate([(0, 2), (1, 3)]):
        frames = torch.cat([encoded[first][:50], encoded[second][:13]])  # 125 mel frames -> 63 encoder frames
        expected = model.model.audio_projector(pool_by_hand(frames, 3))
        torch.testing.assert_close(tokens[3 * segment_index : 3 * segment_index + 3], expected)

    processor.max_audio_windows = 1
    with pytest.raises(ValueError, match="1.2 s needs 2 windows of 1 s, more than max_audio_windows=1"):
        processor(text="<AUD>", audio=[waveform])


@torch.no_grad()
def test_clips_of_different_lengths_in_one_call_pad_with_empty_windows():
    model, processor = whisper_model(window_seconds=1, num_segments=1, tokens_per_segment=2)
    short = tone(0.5, 300.0, SAMPLING_RATE, channels=1)[0]
    long = tone(1.5, 500.0, SAMPLING_RATE, channels=1)[0]
    inputs = processor(text=["<AUD>", "<AUD>"], audio=[short, long])
    assert inputs["input_features"].shape[:2] == (2, 2)
    assert inputs["input_features_mask"].sum(dim=2).tolist() == [[50, 0], [100, 50]]
    together = model.get_audio_features(inputs["input_features"], inputs["input_features_mask"]).pooler_output
    alone = processor(text="<AUD>", audio=[short])
    assert alone["input_features"].shape[:2] == (1, 1)
    single = model.get_audio_features(alone["input_features"], alone["input_features_mask"]).pooler_output
    torch.testing.assert_close(together[:1], single)  # the empty window of the short clip changes nothing


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("order") / "av.mp4", seconds=1, fps=8, audio=("aac", 440.0))


@torch.no_grad()
def test_audio_first_order_is_saved_with_the_model_and_used_by_processor_and_model(av_clip, tmp_path):
    torch.manual_seed(0)
    config = tiny_config(audio_visual_order="audio_first")
    model = AVLlmForConditionalGeneration(config).eval()
    processor = build_processor(config, build_tokenizer([" ".join(WORDS)]))
    messages = [{"role": "user", "content": [{"type": "video", "path": str(av_clip)}, {"type": "text", "text": "?"}]}]
    inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    types = inputs["mm_token_type_ids"][0]
    audio_at = (types == TOKEN_TYPE_IDS["audio"]).nonzero()[:, 0]
    video_at = (types == TOKEN_TYPE_IDS["video"]).nonzero()[:, 0]
    assert len(audio_at) == config.num_audio_tokens and len(video_at) == config.num_video_tokens
    assert audio_at.max() + 1 == video_at.min()  # one run: the audio placeholders, then the video ones

    merged = {}
    model.model.language_model.register_forward_pre_hook(
        lambda _module, _args, kwargs: merged.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    model(**inputs)
    audio = model.get_audio_features(inputs["input_features"], inputs["input_features_mask"]).pooler_output[0]
    video = model.get_video_features(inputs["pixel_values_videos"]).pooler_output[0]
    torch.testing.assert_close(merged["embeds"][0, audio_at], audio)
    torch.testing.assert_close(merged["embeds"][0, video_at], video)

    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    assert AVLlmConfig.from_pretrained(tmp_path / "model").audio_visual_order == "audio_first"
    reloaded = type(processor).from_pretrained(tmp_path / "model")
    assert reloaded.audio_visual_order == "audio_first"
    old = config.to_dict()
    del old["audio_visual_order"]  # a config saved before the setting existed
    assert AVLlmConfig.from_dict(old).audio_visual_order == "visual_first"
