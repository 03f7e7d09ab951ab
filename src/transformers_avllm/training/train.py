"""`avllm train --config recipe.yaml`: TRL-style recipes (ScriptArguments, SFTConfig, ModelConfig + ours) for AVLlm.

Values come from, in rising priority: the stage's defaults (`stages.py`), the YAML recipe, the command line.
"""

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

from ..components import from_pretrained_components
from ..export import build_model_card, export_pretrained, recorded_base_models
from ..models.avllm import AUDIO_VISUAL, SAMPLE_TYPES
from .collator import AVLlmDataCollator
from .data import load_av_dataset, mix_modalities, modality_view
from .stages import STAGES, apply_stage, stage_defaults
from .trainer import AVLlmSFTTrainer


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
    modalities: list[str] = field(
        default_factory=lambda: [AUDIO_VISUAL],
        metadata={"help": f"modality views of the dataset to mix (of {', '.join(SAMPLE_TYPES)}): >1 is MAT"},
    )
    modality_probabilities: list[float] | None = field(default=None, metadata={"help": "sampling weight per view"})
    media_root: str | None = field(default=None, metadata={"help": "folder that relative media paths start from"})
    skip_bad_samples: bool = False
    overflow: str = field(default="error", metadata={"help": "error | drop: rows whose cut would cut a placeholder"})
    export_dir: str | None = field(default=None, metadata={"help": "also export a Hub repo folder here"})


def _stage_of(argv: list[str]) -> str:
    """The stage named on the command line or in the recipe (needed before parsing, to pick its defaults)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--stage")
    known, _ = pre.parse_known_args(argv)
    if known.stage:
        return known.stage
    if known.config:
        with open(known.config) as file:
            return (yaml.safe_load(file) or {}).get("stage", "pretrain")
    return "pretrain"


def parse_train_args(argv: list[str]):
    parser = TrlParser((ScriptArguments, SFTConfig, ModelConfig, AVLlmArguments))
    stage = _stage_of(argv)
    if stage not in STAGES:
        raise SystemExit(f"unknown stage {stage!r}; choose one of {sorted(STAGES)}")
    parser.set_defaults_with_config(**stage_defaults(stage))
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
        **{key: value for key, value in load_kwargs.items() if value is not None},
    )


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
    dataset = load_av_dataset(script_args.dataset_name, script_args.dataset_train_split, av_args.media_root)
    views = {modality: modality_view(dataset, modality) for modality in av_args.modalities}
    probabilities = (
        dict(zip(av_args.modalities, av_args.modality_probabilities, strict=True))
        if (av_args.modality_probabilities)
        else None
    )
    train_dataset = (
        mix_modalities(views, probabilities, seed=training_args.seed) if len(views) > 1 else views.popitem()[1]
    )
    collator = AVLlmDataCollator(
        processor,
        max_length=training_args.max_length,
        overflow=av_args.overflow,
        skip_bad_samples=av_args.skip_bad_samples,
    )
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
        "modalities": "+".join(av_args.modalities),
    }
    # The card travels with the checkpoint: its `base_model` is where a next stage or an export finds the base models.
    card = {
        "base_models": recorded_base_models(model),
        "training_stages": [stage],
        "datasets": [script_args.dataset_name],
    }
    output_dir = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        build_model_card(model, output_dir.name, **card).save(output_dir / "README.md")
    if av_args.export_dir and trainer.is_world_process_zero():
        trained = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
        export_pretrained(trained, processor, av_args.export_dir, **card)
    return trainer
