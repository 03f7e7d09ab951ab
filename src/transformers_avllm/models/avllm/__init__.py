"""AVLlm: the files here (every `*_avllm.py`) ship to the Hub as remote code next to the weights; they are flat and
self-contained (docs/architecture.md). This `__init__` is not shipped: it gathers their public names for the package.
"""

from pathlib import Path

from .beats_avllm import AVLlmBeatsConfig, AVLlmBeatsFeatureExtractor, AVLlmBeatsModel
from .compat_avllm import AVLlmTransformersVersionError
from .configuration_avllm import AVLlmConfig
from .media_avllm import (
    AUDIO_EXTENSIONS,
    VIDEO_EXTENSIONS,
    MediaDecodeError,
    MediaError,
    MediaInfo,
    MediaNotFoundError,
    MediaTimeoutError,
    MediaTooLargeError,
    MissingStreamError,
    load_audio,
    probe_media,
    sample_audio_clips,
    split_audio_segments,
)
from .modality_avllm import (
    AUDIO,
    AUDIO_VISUAL,
    CONTENT_ITEMS,
    MODALITY_TOKENS,
    PLACEHOLDER_TOKENS,
    ROW_TYPES,
    SAMPLE_TYPES,
    TEXT,
    TOKEN_TYPE_IDS,
    VISUAL,
    row_type,
    row_type_indices,
)
from .modeling_avllm import (
    AUTO_MAP,
    AVLlmAudioFeaturesOutput,
    AVLlmConnectorInputMismatchError,
    AVLlmEncoderOutput,
    AVLlmForConditionalGeneration,
    AVLlmModel,
    AVLlmPlaceholderMismatchError,
    AVLlmPreTrainedModel,
)
from .processing_avllm import (
    AUDIO_SAMPLING_MODES,
    MISSING_AUDIO_POLICIES,
    RENDER_CONTENT_MACRO,
    AVLlmProcessor,
    MediaItem,
    PreparedMedia,
    pad_windows,
)
from .towers_avllm import TOWER_FAMILIES, AudioTowerFamily, TowerFamily, VisionTowerFamily, tower_family
from .video_avllm import VideoClip, load_video, sample_frame_indices

# What ships to the Hub with the weights: every `*_avllm.py` of this folder (the export checks the folder holds them).
SHIPPED_FILES = frozenset(path.name for path in Path(__file__).parent.glob("*_avllm.py"))

__all__ = [
    "AUDIO",
    "AUDIO_SAMPLING_MODES",
    "AUDIO_EXTENSIONS",
    "AUDIO_VISUAL",
    "AUTO_MAP",
    "AVLlmAudioFeaturesOutput",
    "AVLlmBeatsConfig",
    "AVLlmBeatsFeatureExtractor",
    "AVLlmBeatsModel",
    "AVLlmConfig",
    "AVLlmConnectorInputMismatchError",
    "AVLlmEncoderOutput",
    "AVLlmForConditionalGeneration",
    "AVLlmModel",
    "AVLlmPlaceholderMismatchError",
    "AVLlmPreTrainedModel",
    "AVLlmProcessor",
    "AVLlmTransformersVersionError",
    "AudioTowerFamily",
    "CONTENT_ITEMS",
    "MISSING_AUDIO_POLICIES",
    "MODALITY_TOKENS",
    "MediaDecodeError",
    "MediaError",
    "MediaInfo",
    "MediaItem",
    "PreparedMedia",
    "MediaNotFoundError",
    "MediaTimeoutError",
    "MediaTooLargeError",
    "MissingStreamError",
    "PLACEHOLDER_TOKENS",
    "RENDER_CONTENT_MACRO",
    "ROW_TYPES",
    "SAMPLE_TYPES",
    "SHIPPED_FILES",
    "TEXT",
    "TOKEN_TYPE_IDS",
    "TOWER_FAMILIES",
    "TowerFamily",
    "VIDEO_EXTENSIONS",
    "VISUAL",
    "VideoClip",
    "VisionTowerFamily",
    "load_audio",
    "load_video",
    "probe_media",
    "pad_windows",
    "row_type",
    "row_type_indices",
    "sample_audio_clips",
    "sample_frame_indices",
    "split_audio_segments",
    "tower_family",
]
