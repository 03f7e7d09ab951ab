"""Assemble a fresh AVLlm model and processor from separate pretrained checkpoints (hub ids or local folders)."""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPImageProcessor,
    PreTrainedModel,
    WhisperFeatureExtractor,
)

from .modeling import AVLlmConfig, AVLlmForConditionalGeneration
from .modeling.towers_avllm import AUDIO_TOWER_CLASSES, VISION_TOWER_CLASSES
from .processing import AVLlmProcessor

# Attribute of a full (multi-tower or encoder-decoder) checkpoint's model holding the tower we keep.
TOWER_ATTRIBUTE_IN_FULL_MODEL = {
    "clip": "vision_model",
    "siglip": "vision_model",
    "clap": "audio_model",
    "whisper": "encoder",
}
MODALITY_TOKENS = {"vis_token": "<VIS>", "aud_token": "<AUD>", "aud_vis_token": "<AUD_VIS>"}
PLACEHOLDER_TOKENS = {"image_token": "<image>", "video_token": "<video>", "audio_token": "<audio>"}


def load_tower(name_or_path: str, **kwargs) -> PreTrainedModel:
    """Loads a vision or audio tower from a tower checkpoint (e.g. a saved `CLIPVisionModel`) or from a full
    checkpoint that contains one (`openai/clip-vit-large-patch14`, `laion/clap-htsat-unfused`,
    `openai/whisper-small`)."""
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    if config.model_type in TOWER_ATTRIBUTE_IN_FULL_MODEL:
        full_model = AutoModel.from_pretrained(name_or_path, **kwargs)
        return getattr(full_model, TOWER_ATTRIBUTE_IN_FULL_MODEL[config.model_type])
    tower_classes = {**VISION_TOWER_CLASSES, **AUDIO_TOWER_CLASSES}
    if config.model_type in tower_classes:
        return tower_classes[config.model_type].from_pretrained(name_or_path, **kwargs)
    raise ValueError(
        f"{name_or_path}: a {config.model_type!r} checkpoint holds no supported tower "
        f"(supported: {sorted(tower_classes)} and full {sorted(TOWER_ATTRIBUTE_IN_FULL_MODEL)} checkpoints)"
    )


def from_pretrained_components(
    llm: str,
    vision: str | None = None,
    audio: str | None = None,
    *,
    dtype=None,
    attn_implementation: str | None = None,
    chat_template: str | None = None,
    **config_kwargs,
) -> tuple[AVLlmForConditionalGeneration, AVLlmProcessor]:
    """Builds an AVLlm model from a causal LLM and a vision and/or audio tower checkpoint, with fresh connectors.

    Adds the modality tokens (`<VIS>`, `<AUD>`, `<AUD_VIS>`) and placeholders (`<image>`, `<video>`, `<audio>`) to the
    LLM's tokenizer and resizes its embeddings. `config_kwargs` go to `AVLlmConfig` (e.g. `connector_type="stc"`,
    `num_frames=16`, `num_audio_segments=4`).

    Returns:
        `(model, processor)`: the processor pairs the LLM's tokenizer with the towers' image processor / feature
        extractor and knows the model's placeholder counts.
    """
    if vision is None and audio is None:
        raise ValueError("give at least one of vision= and audio=")
    load_kwargs = {"dtype": dtype} if dtype is not None else {}
    tokenizer = AutoTokenizer.from_pretrained(llm)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config_kwargs = {**MODALITY_TOKENS, **config_kwargs}
    new_tokens = [config_kwargs[key] for key in MODALITY_TOKENS] + list(PLACEHOLDER_TOKENS.values())
    tokenizer.add_special_tokens({"extra_special_tokens": new_tokens}, replace_extra_special_tokens=False)
    language_model = AutoModelForCausalLM.from_pretrained(llm, **load_kwargs)
    vision_tower = load_tower(vision, **load_kwargs) if vision else None
    audio_tower = load_tower(audio, **load_kwargs) if audio else None

    config = AVLlmConfig(
        vision_config=vision_tower.config if vision_tower else None,
        audio_config=audio_tower.config if audio_tower else None,
        text_config=language_model.config,
        image_token_id=tokenizer.convert_tokens_to_ids(PLACEHOLDER_TOKENS["image_token"]),
        video_token_id=tokenizer.convert_tokens_to_ids(PLACEHOLDER_TOKENS["video_token"]),
        audio_token_id=tokenizer.convert_tokens_to_ids(PLACEHOLDER_TOKENS["audio_token"]),
        base_models={name: path for name, path in (("vision", vision), ("audio", audio), ("llm", llm)) if path},
        **config_kwargs,
    )
    model = AVLlmForConditionalGeneration(config)
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    model.model.language_model.load_state_dict(language_model.base_model.state_dict())
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(language_model.get_output_embeddings().state_dict())
    if vision_tower is not None:
        model.model.vision_tower.load_state_dict(vision_tower.state_dict())
    if audio_tower is not None:
        model.model.audio_tower.load_state_dict(audio_tower.state_dict())
    model = model.to(language_model.dtype)
    if len(tokenizer) > config.text_config.vocab_size:
        model.resize_token_embeddings(len(tokenizer))

    processor = AVLlmProcessor(
        # ProcessorMixin needs both sub-processors; an absent tower's is a default instance, unused.
        image_processor=AutoImageProcessor.from_pretrained(vision) if vision else CLIPImageProcessor(),
        feature_extractor=AutoFeatureExtractor.from_pretrained(audio) if audio else WhisperFeatureExtractor(),
        tokenizer=tokenizer,
        chat_template=chat_template,
        **PLACEHOLDER_TOKENS,
        **config.processor_kwargs(),
    )
    return model, processor
