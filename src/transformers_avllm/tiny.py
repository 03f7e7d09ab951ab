"""Small random models built from real transformers classes, with a tokenizer trained locally and the towers' real
image processors / feature extractors (from the tower registry): what the tests, the quickstart, the demo and the
benchmarks run on where no pretrained weights can be downloaded.

The one source of their configs: `tiny_*_config(kind)` gives a tiny config (the whole model under 1M parameters);
keyword arguments override its sizes (the demo's and the benchmarks' larger models, `demo.demo_config` and
`bench/common.py`).
"""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    ASTConfig,
    ClapAudioConfig,
    CLIPVisionConfig,
    LlamaConfig,
    PreTrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
    WhisperConfig,
)

from .models.avllm import (
    MODALITY_TOKENS,
    PLACEHOLDER_TOKENS,
    AVLlmBeatsConfig,
    AVLlmConfig,
    AVLlmProcessor,
    tower_family,
)

VOCAB_SIZE = 128
# The placeholders are the last three ids of a tiny tokenizer (`build_tokenizer`) and of the tiny configs.
IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, AUDIO_TOKEN_ID = VOCAB_SIZE - 3, VOCAB_SIZE - 2, VOCAB_SIZE - 1
SAMPLING_RATE = 16000
BASE_SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

_VISION = {"clip": CLIPVisionConfig, "siglip": SiglipVisionConfig}
_AUDIO = {
    "clap": (
        ClapAudioConfig,
        dict(
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
        ),
    ),
    "whisper": (
        WhisperConfig,
        dict(
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
        ),
    ),
    "ast": (
        ASTConfig,
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=8,
            frequency_stride=8,
            time_stride=8,
            max_length=48,
            num_mel_bins=16,
        ),
    ),
    "beats": (
        AVLlmBeatsConfig,
        dict(
            max_length=48,
            patch_embedding_dim=16,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            layerdrop=0.0,
        ),
    ),
}
_TEXT = {"llama": (LlamaConfig, {}), "qwen2": (Qwen2Config, {"tie_word_embeddings": True})}


def tiny_vision_config(kind: str = "clip", **sizes) -> PreTrainedConfig:
    """A tiny `"clip"` or `"siglip"` vision config (32 px, 8 px patches); `sizes` override its fields."""
    defaults = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    return _VISION[kind](**{**defaults, **sizes})


def tiny_audio_config(kind: str = "clap", **sizes) -> PreTrainedConfig:
    """A tiny `"clap"`, `"whisper"`, `"ast"` or `"beats"` (0.48 s clips: 3 x 8 patches) audio config; `sizes`
    override its fields."""
    config_class, defaults = _AUDIO[kind]
    return config_class(**{**defaults, **sizes})


def tiny_text_config(kind: str = "llama", vocab_size: int = VOCAB_SIZE, **sizes) -> PreTrainedConfig:
    """A tiny `"llama"` or `"qwen2"` (tied embeddings) LLM config; `sizes` override its fields."""
    config_class, extra = _TEXT[kind]
    defaults = dict(
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
    return config_class(**{**defaults, **extra, **sizes})


def _sub_config(kind_or_config, builder):
    return builder(kind_or_config) if isinstance(kind_or_config, str) else kind_or_config


def tiny_config(vision="clip", audio="clap", text="llama", **kwargs) -> AVLlmConfig:
    """An AVLlmConfig with tiny towers: each of `vision` / `audio` / `text` is a kind of `tiny_*_config`, a config
    (e.g. a `tiny_*_config` with larger sizes) or, for a tower, `None` (one-tower models). The placeholder ids are the
    LLM vocabulary's last three; `kwargs` go to `AVLlmConfig`."""
    text_config = _sub_config(text, tiny_text_config)
    vocab_size = text_config.vocab_size
    defaults = dict(
        num_frames=4,
        num_audio_segments=2,
        image_token_id=vocab_size - 3,
        video_token_id=vocab_size - 2,
        audio_token_id=vocab_size - 1,
    )
    return AVLlmConfig(
        vision_config=_sub_config(vision, tiny_vision_config) if vision else None,
        audio_config=_sub_config(audio, tiny_audio_config) if audio else None,
        text_config=text_config,
        **{**defaults, **kwargs},
    )


def build_tokenizer(
    corpus: list[str], vocab_size: int = VOCAB_SIZE, media_tokens: bool = True
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of exactly `vocab_size` ids trained on `corpus` (padded with filler words). With
    `media_tokens`, it holds the modality tokens and its last three ids are the `<image>`, `<video>`, `<audio>`
    placeholders (matching the tiny configs' token ids); without, it is a plain LLM tokenizer."""
    words = sorted({word for line in corpus + ["USER: ASSISTANT:"] for word in line.split()})
    modality_tokens, placeholders = list(MODALITY_TOKENS.values()), list(PLACEHOLDER_TOKENS.values())
    specials = BASE_SPECIAL_TOKENS + (modality_tokens if media_tokens else [])
    num_filler = vocab_size - len(specials) - len(words) - (len(placeholders) if media_tokens else 0)
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
        fast.add_special_tokens({"extra_special_tokens": modality_tokens + placeholders})
    return fast


def build_processor(config: AVLlmConfig, tokenizer: PreTrainedTokenizerFast) -> AVLlmProcessor:
    """An AVLlmProcessor with the towers' real image processor and feature extractor, set up from the tower registry
    for the tiny towers (audio at `SAMPLING_RATE`)."""
    preprocessors = {}
    for name, tower_config in (("image_processor", config.vision_config), ("feature_extractor", config.audio_config)):
        if tower_config is not None:
            family = tower_family(tower_config)
            preprocessors[name] = family.processor_class(**family.processor_settings(tower_config, SAMPLING_RATE))
    return AVLlmProcessor.for_model(config, tokenizer, **preprocessors)
