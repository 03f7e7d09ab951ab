"""Tiny random models built from real transformers classes (< 1M parameters), with a tokenizer trained locally and
the towers' real image processors / feature extractors: what the tests, the quickstart and the benchmarks run on
where no pretrained weights can be downloaded."""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ClapAudioConfig,
    ClapFeatureExtractor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipImageProcessor,
    SiglipVisionConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
)

from .modeling import AVLlmConfig
from .processing import AVLlmProcessor

VOCAB_SIZE = 128
IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, AUDIO_TOKEN_ID = 125, 126, 127
SAMPLING_RATE = 16000
BASE_SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
MEDIA_SPECIAL_TOKENS = ["<VIS>", "<AUD>", "<AUD_VIS>"]
PLACEHOLDER_TOKENS = ["<image>", "<video>", "<audio>"]


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
            max_source_positions=50,
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


def tiny_text_config(kind: str = "llama", vocab_size: int = VOCAB_SIZE):
    common = dict(
        vocab_size=vocab_size,
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
    for modality, length in zip(modalities, text_lengths, strict=True):
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


def build_tokenizer(
    corpus: list[str], vocab_size: int = VOCAB_SIZE, media_tokens: bool = True
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of exactly `vocab_size` ids trained on `corpus` (padded with filler words). With
    `media_tokens`, it holds the modality tokens and its last three ids are the `<image>`, `<video>`, `<audio>`
    placeholders (matching the tiny configs' token ids); without, it is a plain LLM tokenizer."""
    words = sorted({word for line in corpus + ["USER: ASSISTANT:"] for word in line.split()})
    specials = BASE_SPECIAL_TOKENS + (MEDIA_SPECIAL_TOKENS if media_tokens else [])
    num_filler = vocab_size - len(specials) - len(words) - (len(PLACEHOLDER_TOKENS) if media_tokens else 0)
    if num_filler < 0:
        raise ValueError(f"corpus has {len(words)} distinct words; too many for a vocabulary of {vocab_size}")
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    filler = [f"w{index}" for index in range(num_filler)]
    tokenizer.train_from_iterator(
        [" ".join(words + filler)], trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1)
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if media_tokens:
        fast.add_special_tokens({"extra_special_tokens": MEDIA_SPECIAL_TOKENS + PLACEHOLDER_TOKENS})
    return fast


def build_processor(config: AVLlmConfig, tokenizer: PreTrainedTokenizerFast) -> AVLlmProcessor:
    """An AVLlmProcessor with the tiny towers' real image processor and feature extractor (defaults for an absent
    tower)."""
    image_processor, feature_extractor = CLIPImageProcessor(), WhisperFeatureExtractor()
    if config.vision_config is not None:
        size = config.vision_config.image_size
        if config.vision_config.model_type == "clip_vision_model":
            image_processor = CLIPImageProcessor(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
        else:
            image_processor = SiglipImageProcessor(size={"height": size, "width": size})
    if config.audio_config is not None:
        audio = config.audio_config
        if audio.model_type == "clap_audio_model":
            feature_extractor = ClapFeatureExtractor(
                feature_size=audio.num_mel_bins,
                sampling_rate=SAMPLING_RATE,
                max_length_s=1,
                hop_length=160,
                fft_window_size=400,
                truncation="rand_trunc",
            )
        elif audio.model_type == "whisper":
            feature_extractor = WhisperFeatureExtractor(
                feature_size=audio.num_mel_bins, sampling_rate=SAMPLING_RATE, chunk_length=1, hop_length=160
            )
        else:
            feature_extractor = ASTFeatureExtractor(
                num_mel_bins=audio.num_mel_bins, max_length=audio.max_length, sampling_rate=SAMPLING_RATE
            )
    return AVLlmProcessor(
        image_processor=image_processor,
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        **config.processor_kwargs(),
    )
