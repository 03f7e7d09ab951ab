"""Processor and media decoding; the files here ship to the Hub as remote code."""

from .media_avllm import (
    MediaDecodeError,
    MediaError,
    MediaNotFoundError,
    MediaTimeoutError,
    MediaTooLargeError,
    MissingStreamError,
    load_audio,
    load_video,
)
from .processing_avllm import AVLlmProcessor

__all__ = [
    "AVLlmProcessor",
    "MediaDecodeError",
    "MediaError",
    "MediaNotFoundError",
    "MediaTimeoutError",
    "MediaTooLargeError",
    "MissingStreamError",
    "load_audio",
    "load_video",
]
