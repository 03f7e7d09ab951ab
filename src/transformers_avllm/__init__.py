"""transformers-avllm: audio-visual LLMs (video + its audio track, audio, images -> text), Transformers-native."""

import transformers
from transformers import AutoConfig, AutoFeatureExtractor, AutoProcessor

from .models.avllm import (
    AUTO_MAP,
    AVLlmBeatsConfig,
    AVLlmBeatsFeatureExtractor,
    AVLlmConfig,
    AVLlmForConditionalGeneration,
    AVLlmModel,
    AVLlmPlaceholderMismatchError,
    AVLlmPreTrainedModel,
    AVLlmProcessor,
    MediaDecodeError,
    MediaError,
    MediaNotFoundError,
    MediaTimeoutError,
    MediaTooLargeError,
    MissingStreamError,
)

__version__ = "0.1.0"

# The same pairs a saved folder's `auto_map` names (`AUTO_MAP`, the config's and the processor's own): with the
# package installed, the Auto classes load AVLlm folders without remote code.
AutoConfig.register(AVLlmConfig.model_type, AVLlmConfig, exist_ok=True)
for _auto_class, _model_class in AUTO_MAP.items():
    getattr(transformers, _auto_class).register(AVLlmConfig, _model_class, exist_ok=True)
AutoProcessor.register(AVLlmConfig, AVLlmProcessor, exist_ok=True)
# Towers of ours: their configs register themselves with AutoConfig (`towers_avllm.py`, also as remote code); a saved
# feature extractor of theirs is found by its class name once registered.
AutoFeatureExtractor.register(AVLlmBeatsConfig, AVLlmBeatsFeatureExtractor, exist_ok=True)

__all__ = [
    "AVLlmConfig",
    "AVLlmForConditionalGeneration",
    "AVLlmModel",
    "AVLlmPlaceholderMismatchError",
    "AVLlmPreTrainedModel",
    "AVLlmProcessor",
    "MediaDecodeError",
    "MediaError",
    "MediaNotFoundError",
    "MediaTimeoutError",
    "MediaTooLargeError",
    "MissingStreamError",
]
