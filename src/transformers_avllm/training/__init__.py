"""Training: the multimodal collator, stage presets and the SFTTrainer for AVLlm models (not shipped to the Hub)."""

from .collator import AVLlmDataCollator, BadSampleError, SampleTooLongError
from .data import from_llava_format, load_av_dataset, mix_modalities, modality_view
from .stages import STAGES, apply_stage, stage_defaults
from .tower_cache import TowerCache, TowerCacheMissError
from .trainer import AVLlmSFTTrainer

__all__ = [
    "AVLlmDataCollator",
    "AVLlmSFTTrainer",
    "BadSampleError",
    "SampleTooLongError",
    "STAGES",
    "TowerCache",
    "TowerCacheMissError",
    "apply_stage",
    "from_llava_format",
    "load_av_dataset",
    "mix_modalities",
    "modality_view",
    "stage_defaults",
]
