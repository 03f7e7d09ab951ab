"""transformers-avllm: audio-visual LLMs (video + its audio track, audio, images -> text), Transformers-native."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoProcessor,
)

from .modeling import (
    AVLlmConfig,
    AVLlmForConditionalGeneration,
    AVLlmModel,
    AVLlmPlaceholderMismatchError,
    AVLlmPreTrainedModel,
)
from .processing import (
    AVLlmProcessor,
    MediaDecodeError,
    MediaError,
    MediaNotFoundError,
    MediaTimeoutError,
    MediaTooLargeError,
    MissingStreamError,
)

__version__ = "0.1.0"

AutoConfig.register(AVLlmConfig.model_type, AVLlmConfig, exist_ok=True)
AutoModel.register(AVLlmConfig, AVLlmModel, exist_ok=True)
for _auto_class in (AutoModelForImageTextToText, AutoModelForMultimodalLM, AutoModelForCausalLM):
    _auto_class.register(AVLlmConfig, AVLlmForConditionalGeneration, exist_ok=True)
AutoProcessor.register(AVLlmConfig, AVLlmProcessor, exist_ok=True)
# save_pretrained copies our (flat, self-contained) code files next to the weights and writes `auto_map`.
AVLlmConfig.register_for_auto_class()
AVLlmForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
AVLlmModel.register_for_auto_class("AutoModel")
AVLlmProcessor.register_for_auto_class()

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
