"""Model side of transformers-avllm; the files here ship to the Hub as remote code."""

from .configuration_avllm import AVLlmConfig
from .modeling_avllm import (
    AVLlmForConditionalGeneration,
    AVLlmModel,
    AVLlmPlaceholderMismatchError,
    AVLlmPreTrainedModel,
)

__all__ = [
    "AVLlmConfig",
    "AVLlmForConditionalGeneration",
    "AVLlmModel",
    "AVLlmPlaceholderMismatchError",
    "AVLlmPreTrainedModel",
]
