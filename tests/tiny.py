"""Tiny random configs of real transformers classes (< 1M parameters) shared by the tests."""

from transformers import (
    ASTConfig,
    ClapAudioConfig,
    CLIPVisionConfig,
    LlamaConfig,
    Qwen2Config,
    SiglipVisionConfig,
    WhisperConfig,
)

from transformers_avllm import AVLlmConfig

VOCAB_SIZE = 128
IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, AUDIO_TOKEN_ID = 125, 126, 127


def tiny_vision_config(kind: str = "clip"):
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32)
    if kind == "clip":
        return CLIPVisionConfig(patch_size=8, **common)
    return SiglipVisionConfig(patch_size=8, **common)


def tiny_audio_config(kind: str = "clap"):
    if kind == "clap":
        return ClapAudioConfig(
            hidden_size=32,
            depths=[1, 1],
            num_attention_heads=[2, 2],
            patch_embeds_hidden_size=16,
            spec_size=64,
            window_size=4,
            num_mel_bins=16,
            patch_size=4,
            patch_stride=[4, 4],
            enable_fusion=False,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            drop_path_rate=0.0,
        )
    if kind == "whisper":
        return WhisperConfig(
            d_model=32,
            encoder_layers=2,
            encoder_attention_heads=2,
            encoder_ffn_dim=64,
            num_mel_bins=16,
            max_source_positions=25,
            decoder_layers=1,
            decoder_attention_heads=2,
            decoder_ffn_dim=64,
            vocab_size=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )
    return ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        frequency_stride=8,
        time_stride=8,
        max_length=48,
        num_mel_bins=16,
    )


def tiny_text_config(kind: str = "llama"):
    common = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if kind == "llama":
        return LlamaConfig(**common)
    return Qwen2Config(tie_word_embeddings=True, **common)


def tiny_config(vision="clip", audio="clap", text="llama", **kwargs) -> AVLlmConfig:
    """An AVLlmConfig with tiny towers; `vision=None` / `audio=None` give one-tower models."""
    defaults = dict(
        num_frames=4,
        num_audio_segments=2,
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
        audio_token_id=AUDIO_TOKEN_ID,
    )
    defaults.update(kwargs)
    return AVLlmConfig(
        vision_config=tiny_vision_config(vision) if vision else None,
        audio_config=tiny_audio_config(audio) if audio else None,
        text_config=tiny_text_config(text),
        **defaults,
    )


def random_rows(config: AVLlmConfig, modalities: list[str], text_lengths=None, seed: int = 0, padding_side="right"):
    """Model inputs for rows of the given modalities ("text", "image", "video", "audio", "av"): a few random text
    tokens, then the row's placeholders, then more text; padded with `pad_token_id` on `padding_side`.

    Returns (batch dict, list of per-row dicts holding the same row alone, unpadded).
    """
    import torch

    from transformers_avllm.modeling.towers_avllm import audio_segment_shape

    generator = torch.Generator().manual_seed(seed)
    text_lengths = text_lengths or [3 + 2 * i for i in range(len(modalities))]
    rows = []
    for modality, length in zip(modalities, text_lengths):
        row = {}
        placeholders = []
        if modality in ("video", "av"):
            size = config.vision_config.image_size
            row["pixel_values_videos"] = torch.randn(1, config.num_frames, 3, size, size, generator=generator)
            placeholders += [config.video_token_id] * config.num_video_tokens
        if modality == "image":
            size = config.vision_config.image_size
            row["pixel_values"] = torch.randn(1, 3, size, size, generator=generator)
            placeholders += [config.image_token_id] * config.num_image_tokens
        if modality in ("audio", "av"):
            shape = (1, config.num_audio_segments, *audio_segment_shape(config.audio_config))
            row["input_features"] = torch.randn(shape, generator=generator)
            placeholders += [config.audio_token_id] * config.num_audio_tokens
        prefix = torch.randint(3, 100, (length,), generator=generator).tolist()
        suffix = torch.randint(3, 100, (2,), generator=generator).tolist()
        ids = torch.tensor([[1] + prefix + placeholders + suffix])
        row["input_ids"], row["attention_mask"] = ids, torch.ones_like(ids)
        rows.append(row)
    width = max(row["input_ids"].shape[1] for row in rows)
    batch = {"input_ids": [], "attention_mask": []}
    for row in rows:
        pad = width - row["input_ids"].shape[1]
        pad_ids, pad_mask = torch.zeros(1, pad, dtype=torch.long), torch.zeros(1, pad, dtype=torch.long)
        parts = [(pad_ids, pad_mask), (row["input_ids"], row["attention_mask"])]
        if padding_side == "right":
            parts.reverse()
        batch["input_ids"].append(torch.cat([parts[0][0], parts[1][0]], dim=1))
        batch["attention_mask"].append(torch.cat([parts[0][1], parts[1][1]], dim=1))
    batch = {key: torch.cat(value) for key, value in batch.items()}
    for key in ("pixel_values_videos", "pixel_values", "input_features"):
        tensors = [row[key] for row in rows if key in row]
        if tensors:
            batch[key] = torch.cat(tensors)
    return batch, rows
