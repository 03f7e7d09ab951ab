"""Training: the multimodal collator, the data mixture, stage presets and the SFTTrainer for AVLlm models (not shipped
to the Hub)."""

from .collator import (
    AVLlmDataCollator,
    BadSampleError,
    SampleTooLongError,
    TokenBudgetError,
    check_token_budget,
    media_tokens_per_sample_type,
)
from .data import (
    DataMixture,
    DatasetEntry,
    DatasetFormatError,
    MixtureSampler,
    canonical_dataset,
    from_llava_format,
    load_av_dataset,
    mix_datasets,
)
from .stages import STAGES, apply_stage, stage_defaults
from .tower_cache import TowerCache, TowerCacheMissError
from .trainer import AVLlmSFTTrainer

__all__ = [
    "AVLlmDataCollator",
    "AVLlmSFTTrainer",
    "BadSampleError",
    "DataMixture",
    "DatasetEntry",
    "DatasetFormatError",
    "MixtureSampler",
    "STAGES",
    "SampleTooLongError",
    "TokenBudgetError",
    "TowerCache",
    "TowerCacheMissError",
    "apply_stage",
    "canonical_dataset",
    "check_token_budget",
    "from_llava_format",
    "load_av_dataset",
    "media_tokens_per_sample_type",
    "mix_datasets",
    "stage_defaults",
]
