"""Training stage presets: which parameters train, and the seeds' default hyper-parameters."""

from dataclasses import dataclass, field

from peft import LoraConfig

from ..models.avllm import AVLlmForConditionalGeneration

PROJECTORS = ("video_connector", "audio_projector")
# LoRA only on the LLM's attention and MLP projections: towers are never adapted.
LLM_LORA_TARGETS = r".*language_model\.layers\.\d+\..*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class Stage:
    """A training stage: modules of `AVLlmForConditionalGeneration.model` (plus `lm_head`) that train, whether the
    LLM gets LoRA adapters, and the stage's SFTConfig defaults."""

    trainable: tuple[str, ...]
    lora: bool = False
    defaults: dict = field(default_factory=dict)


# AdamW beta2 0.98, cosine schedule and 3% warm-up (a float warmup_steps < 1 is a ratio) throughout (AV-LLM);
# learning rates and epochs per stage.
COMMON_DEFAULTS = {"adam_beta2": 0.98, "lr_scheduler_type": "cosine", "warmup_steps": 0.03}
STAGES = {
    # AV-LLM stage 1: projectors only, lr 2e-3, 3 epochs.
    "pretrain": Stage(PROJECTORS, defaults={"learning_rate": 2e-3, "num_train_epochs": 3}),
    # AV-LLM stage 2: projectors + LLM, lr 2e-5, 1 epoch.
    "sft": Stage(PROJECTORS + ("language_model", "lm_head"), defaults={"learning_rate": 2e-5, "num_train_epochs": 1}),
    # 001: projectors + LoRA on the LLM.
    "lora": Stage(PROJECTORS, lora=True, defaults={"learning_rate": 2e-4, "num_train_epochs": 1}),
    # 001 / VideoLLaMA 2 A1 (`pretrain_audio.sh`): the audio projector alone, the vision branch frozen.
    "audio-pretrain": Stage(("audio_projector",), defaults={"learning_rate": 1e-3, "num_train_epochs": 1}),
    # VideoLLaMA 2 A2 (`finetune_audio.sh`): the audio tower and its projector, the LLM frozen; AdamW's default beta2
    # and no weight decay (VideoLLaMA 2 keeps transformers' optimizer defaults).
    "audio-finetune": Stage(
        ("audio_tower", "audio_projector"),
        defaults={"learning_rate": 2e-5, "num_train_epochs": 2, "adam_beta2": 0.999, "weight_decay": 0.0},
    ),
    # VideoLLaMA 2 A3 (`va_joint.sh`): everything but the vision tower (LLM, video connector, audio projector and
    # audio tower).
    "av-joint": Stage(
        PROJECTORS + ("audio_tower", "language_model", "lm_head"),
        defaults={"learning_rate": 2e-5, "num_train_epochs": 2, "adam_beta2": 0.999, "weight_decay": 0.0},
    ),
}


def stage_defaults(name: str) -> dict:
    """SFTConfig keyword defaults of a stage (the recipe or the command line overrides them)."""
    return {**COMMON_DEFAULTS, **STAGES[name].defaults}


def apply_stage(
    model: AVLlmForConditionalGeneration, name: str, lora_r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.05
) -> LoraConfig | None:
    """Freezes everything but the stage's modules; returns the LoraConfig to hand to SFTTrainer for `lora`."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose one of {sorted(STAGES)}")
    stage = STAGES[name]
    model.requires_grad_(False)
    for module_name in stage.trainable:
        module = model.lm_head if module_name == "lm_head" else getattr(model.model, module_name)
        if module is not None:
            module.requires_grad_(True)
    if not stage.lora:
        return None
    present = [module_name for module_name in PROJECTORS if getattr(model.model, module_name) is not None]
    return LoraConfig(
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=LLM_LORA_TARGETS,
        modules_to_save=present,
        task_type="CAUSAL_LM",
    )
