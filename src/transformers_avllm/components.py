"""Assemble a fresh AVLlm model and processor from separate pretrained checkpoints (hub ids or local folders)."""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
)

from .models.avllm import (
    MODALITY_TOKENS,
    PLACEHOLDER_TOKENS,
    TOWER_FAMILIES,
    AVLlmConfig,
    AVLlmForConditionalGeneration,
    AVLlmProcessor,
)


def load_tower(name_or_path: str, **kwargs) -> PreTrainedModel:
    """Loads a vision or audio tower of the registry (`towers_avllm.TOWER_FAMILIES`) from a tower checkpoint (e.g. a
    saved `CLIPVisionModel`) or from a full checkpoint that contains one (`openai/clip-vit-large-patch14`,
    `laion/clap-htsat-unfused`, `openai/whisper-small`)."""
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    in_full_models = {
        family.full_model[0]: family.full_model[1] for family in TOWER_FAMILIES.values() if family.full_model
    }
    if config.model_type in in_full_models:
        full_model = AutoModel.from_pretrained(name_or_path, **kwargs)
        return getattr(full_model, in_full_models[config.model_type])
    if config.model_type in TOWER_FAMILIES:
        return TOWER_FAMILIES[config.model_type].tower_class.from_pretrained(name_or_path, **kwargs)
    raise ValueError(
        f"{name_or_path}: a {config.model_type!r} checkpoint holds no supported tower "
        f"(supported: {sorted(TOWER_FAMILIES)} and full {sorted(in_full_models)} checkpoints)"
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
        extractor and knows the model's placeholder counts. `model.base_models` records the checkpoints
        (`{"vision": ..., "audio": ..., "llm": ...}`) for the model card of an export; it is not part of the config.
    """
    if vision is None and audio is None:
        raise ValueError("give at least one of vision= and audio=")
    load_kwargs = {"dtype": dtype} if dtype is not None else {}
    tokenizer = AutoTokenizer.from_pretrained(llm)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    new_tokens = list(MODALITY_TOKENS.values()) + list(PLACEHOLDER_TOKENS.values())
    tokenizer.add_special_tokens({"extra_special_tokens": new_tokens}, replace_extra_special_tokens=False)
    language_model = AutoModelForCausalLM.from_pretrained(llm, **load_kwargs)
    vision_tower = load_tower(vision, **load_kwargs) if vision else None
    audio_tower = load_tower(audio, **load_kwargs) if audio else None

    config = AVLlmConfig(
        vision_config=vision_tower.config if vision_tower else None,
        audio_config=audio_tower.config if audio_tower else None,
        text_config=language_model.config,
        **{f"{kind}_token_id": tokenizer.convert_tokens_to_ids(token) for kind, token in PLACEHOLDER_TOKENS.items()},
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
    model.base_models = {name: path for name, path in (("vision", vision), ("audio", audio), ("llm", llm)) if path}

    processor = AVLlmProcessor.for_model(
        config,
        tokenizer,
        image_processor=AutoImageProcessor.from_pretrained(vision) if vision else None,
        feature_extractor=AutoFeatureExtractor.from_pretrained(audio) if audio else None,
        chat_template=chat_template,
    )
    return model, processor
