"""`avllm train --config recipe.yaml`: TRL-style recipes (ScriptArguments, SFTConfig, ModelConfig + ours) for AVLlm.

Values come from, in rising priority: the stage's defaults (`stages.py`), the YAML recipe, the command line.
"""

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

from ..components import from_pretrained_components
from ..export import build_model_card, export_pretrained, recorded_base_models
from ..models.avllm import MISSING_AUDIO_POLICIES
from .collator import AVLlmDataCollator, TokenBudgetError, check_token_budget
from .data import DataMixture, DatasetEntry, DatasetFormatError, mix_datasets
from .stages import STAGES, apply_stage, stage_defaults
from .tower_cache import TowerCache
from .trainer import AVLlmSFTTrainer

logger = logging.getLogger(__name__)


@dataclass
class AVLlmArguments:
    """What the recipe adds to TRL's arguments."""

    stage: str = field(default="pretrain", metadata={"help": f"training stage: one of {sorted(STAGES)}"})
    llm: str | None = field(default=None, metadata={"help": "causal LLM checkpoint (when not resuming an AVLlm)"})
    vision_tower: str | None = field(default=None, metadata={"help": "CLIP / SigLIP checkpoint"})
    audio_tower: str | None = field(default=None, metadata={"help": "CLAP / Whisper / AST checkpoint"})
    connector_type: str = field(default="avllm", metadata={"help": "avllm | stc | pool"})
    audio_projector_type: str = field(default="linear", metadata={"help": "linear | mlp2x_gelu"})
    num_frames: int = 32
    num_audio_segments: int = 4
    audio_tokens_per_segment: int = 1
    audio_visual_order: str = field(
        default="visual_first", metadata={"help": "a new model's order of a video's runs: visual_first | audio_first"}
    )
    datasets: list[dict] = field(
        default_factory=list,
        metadata={
            "help": "the training data: a list of {path, weight, media_root, split, missing_audio, view, use_audio} "
            "(docs/training.md); without it, dataset_name is the one dataset"
        },
    )
    media_root: str | None = field(
        default=None, metadata={"help": "folder that relative media paths start from (for entries that set none)"}
    )
    missing_audio: str = field(
        default="error",
        metadata={"help": f"videos without an audio track (an entry may set its own): {MISSING_AUDIO_POLICIES}"},
    )
    text_budget: int = field(
        default=256,
        metadata={"help": "text tokens a row may hold: its limit is its own media tokens + this (max_length caps it)"},
    )
    max_audio_windows: int | None = field(
        default=None, metadata={"help": "cap on the windows that cover one audio segment (None: as the processor)"}
    )
    tower_cache: str | None = field(
        default=None,
        metadata={
            "help": "folder of a tower-output cache, for a stage that freezes the towers: entries missing there are "
            "built before training (once, on the main process), then the steps neither decode media nor run towers"
        },
    )
    skip_bad_samples: bool = False
    overflow: str = field(default="error", metadata={"help": "error | drop: rows whose cut would cut a placeholder"})
    export_dir: str | None = field(default=None, metadata={"help": "also export a Hub repo folder here"})


# Recipe keys that no longer exist, and what replaced them.
REMOVED_RECIPE_KEYS = {
    "modalities": "a recipe's `datasets` (visual-only, audio-only, audio-visual ones) mixed in every batch is MAT",
    "modality_probabilities": "each dataset of `datasets` has its `weight`",
}


def _stage_of(argv: list[str]) -> str:
    """The stage named on the command line or in the recipe (needed before parsing, to pick its defaults); refuses a
    recipe with a removed key, saying what replaced it."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--stage")
    known, _ = pre.parse_known_args(argv)
    recipe = {}
    if known.config:
        with open(known.config) as file:
            recipe = yaml.safe_load(file) or {}
    for key, replacement in REMOVED_RECIPE_KEYS.items():
        if key in recipe or f"--{key}" in argv:
            raise SystemExit(f"{key} is no longer a recipe key: {replacement} (docs/training.md)")
    return known.stage or recipe.get("stage", "pretrain")


def parse_train_args(argv: list[str]):
    parser = TrlParser((ScriptArguments, SFTConfig, ModelConfig, AVLlmArguments))
    stage = _stage_of(argv)
    if stage not in STAGES:
        raise SystemExit(f"unknown stage {stage!r}; choose one of {sorted(STAGES)}")
    # TRL's max_length (1024) is a text-only default: a row's limit is its media + `text_budget` unless a recipe
    # sets max_length itself
    parser.set_defaults_with_config(max_length=None, **stage_defaults(stage))
    return parser.parse_args_and_config(argv)


def build_model_and_processor(model_args: ModelConfig, av_args: AVLlmArguments):
    load_kwargs = {"dtype": model_args.dtype, "attn_implementation": model_args.attn_implementation}
    if model_args.model_name_or_path:
        model = AutoModelForImageTextToText.from_pretrained(model_args.model_name_or_path, **load_kwargs)
        return model, AutoProcessor.from_pretrained(model_args.model_name_or_path)
    if av_args.llm is None:
        raise SystemExit("give model_name_or_path (an AVLlm checkpoint) or llm + vision_tower and/or audio_tower")
    return from_pretrained_components(
        llm=av_args.llm,
        vision=av_args.vision_tower,
        audio=av_args.audio_tower,
        connector_type=av_args.connector_type,
        audio_projector_type=av_args.audio_projector_type,
        num_frames=av_args.num_frames,
        num_audio_segments=av_args.num_audio_segments,
        audio_tokens_per_segment=av_args.audio_tokens_per_segment,
        audio_visual_order=av_args.audio_visual_order,
        **{key: value for key, value in load_kwargs.items() if value is not None},
    )


def dataset_entries(script_args: ScriptArguments, av_args: AVLlmArguments) -> list[DatasetEntry]:
    """The recipe's `datasets` (entries without `media_root` take the recipe's), or `dataset_name` as the only one."""
    if av_args.datasets and script_args.dataset_name:
        raise DatasetFormatError("give either datasets (a list) or dataset_name (one dataset), not both")
    specs = av_args.datasets or (
        [{"path": script_args.dataset_name, "split": script_args.dataset_train_split}]
        if script_args.dataset_name
        else []
    )
    if not specs:
        raise DatasetFormatError("the recipe names no training data: give datasets (or dataset_name)")
    entries = []
    for spec in specs:
        if not isinstance(spec, dict) or "path" not in spec:
            raise DatasetFormatError(f"each entry of datasets needs a path: {spec!r}")
        unknown = set(spec) - set(DatasetEntry.__dataclass_fields__)
        if unknown:
            raise DatasetFormatError(
                f"datasets entry {spec['path']}: unknown keys {sorted(unknown)}; "
                f"known: {list(DatasetEntry.__dataclass_fields__)}"
            )
        entries.append(DatasetEntry(**{"media_root": av_args.media_root, **spec}))
    return entries


def build_tower_cache(folder: str, model, collator: AVLlmDataCollator, rows, training_args) -> TowerCache:
    """The recipe's tower-output cache for `model`'s frozen towers, with an entry for every media item of `rows` (the
    main process builds the missing ones on the training device, the others then find them). Refuses a stage that
    trains a tower, whose outputs would go stale."""
    for name in ("vision", "audio"):
        tower = getattr(model.model, f"{name}_tower")
        if tower is not None and any(parameter.requires_grad for parameter in tower.parameters()):
            raise SystemExit(f"tower_cache: this stage trains the {name} tower, so its outputs cannot be stored")
    cache = TowerCache(folder, model, collator.processor)
    with training_args.main_process_first(desc="tower cache"):
        # on the device the model trains on (the Trainer would move it there next)
        counts = cache.build(
            model.to(training_args.device), collator, rows, batch_size=training_args.per_device_train_batch_size
        )
    logger.info("tower cache %s: %s", folder, counts)
    return cache


def _weight_sharding(trainer: AVLlmSFTTrainer) -> str | None:
    """The sharding ("FSDP" or "ZeRO-3") when each of the trainer's processes holds only part of the weights."""
    if trainer.is_fsdp_enabled:
        return "FSDP"
    if trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
        return "ZeRO-3"
    return None


def train(argv: list[str]) -> AVLlmSFTTrainer:
    script_args, training_args, model_args, av_args = parse_train_args(argv)
    model, processor = build_model_and_processor(model_args, av_args)
    peft_config = apply_stage(
        model,
        av_args.stage,
        lora_r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
    )
    if av_args.max_audio_windows is not None:
        processor.max_audio_windows = av_args.max_audio_windows
    try:
        media_tokens = check_token_budget(model.config, av_args.text_budget, training_args.max_length)
        entries = dataset_entries(script_args, av_args)
        train_dataset = mix_datasets(entries, missing_audio=av_args.missing_audio)
    except (TokenBudgetError, DatasetFormatError) as err:
        raise SystemExit(f"avllm train: {err}") from err
    collator = AVLlmDataCollator(
        processor,
        max_length=training_args.max_length,
        text_budget=av_args.text_budget,
        overflow=av_args.overflow,
        skip_bad_samples=av_args.skip_bad_samples,
        missing_audio=av_args.missing_audio,
    )
    if av_args.tower_cache:
        rows = train_dataset.rows if isinstance(train_dataset, DataMixture) else train_dataset
        collator.tower_cache = build_tower_cache(av_args.tower_cache, model, collator, rows, training_args)
    trainer = AVLlmSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=processor,
        data_collator=collator,
        peft_config=peft_config,
    )
    sharding = _weight_sharding(trainer)
    if av_args.export_dir and sharding:
        raise SystemExit(
            f"export_dir: {sharding} splits the weights across the processes, so no process can export them; train "
            f"without export_dir, then: avllm export --model {training_args.output_dir} --output {av_args.export_dir}"
        )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    processor.save_pretrained(training_args.output_dir)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    stage = {
        "name": av_args.stage,
        "trainable": ", ".join(STAGES[av_args.stage].trainable) + (" + LoRA on the LLM" if peft_config else ""),
        "learning_rate": training_args.learning_rate,
        "steps": trainer.state.global_step,
        "final_loss": round(losses[-1], 4) if losses else None,
        "data": " + ".join(f"{entry.name} x{entry.weight:g}" for entry in entries),
        "max_media_tokens": max(media_tokens.values()),
        "text_budget": av_args.text_budget,
    }
    # The card travels with the checkpoint: its `base_model` is where a next stage or an export finds the base models.
    card = {
        "base_models": recorded_base_models(model),
        "training_stages": [stage],
        "datasets": [entry.name for entry in entries],
    }
    output_dir = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        build_model_card(model, output_dir.name, **card).save(output_dir / "README.md")
    if av_args.export_dir and trainer.is_world_process_zero():
        trained = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
        export_pretrained(trained, processor, av_args.export_dir, **card)
    return trainer
