"""Export a trained model + processor as a self-contained Hub repo folder, write its model card, push it."""

from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token

from .models.avllm import SHIPPED_FILES, AVLlmForConditionalGeneration, AVLlmProcessor
from .space import SPACE_FILES, add_space

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


class ExportError(RuntimeError):
    """The exported folder is not a faithful, self-contained Hub repo."""


class HubAuthError(RuntimeError):
    """No Hugging Face token is available for pushing."""


USAGE = """```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)

# a video and its own audio track (rendered as <AUD_VIS>)
messages = [{{"role": "user", "content": [
    {{"type": "video", "path": "clip.mp4"}},
    {{"type": "text", "text": "What is making the sound?"}},
]}}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
output = model.generate(**inputs, max_new_tokens=64)
print(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))

# audio only (rendered as <AUD>); a video without its audio: {{"type": "video", "path": ..., "use_audio": False}}
messages = [{{"role": "user", "content": [
    {{"type": "audio", "path": "sound.wav"}},
    {{"type": "text", "text": "Describe the sound."}},
]}}]
```"""


def _architecture(model: AVLlmForConditionalGeneration) -> str:
    config = model.config
    lines = [
        f"- LLM: `{config.text_config.model_type}` (hidden size {config.text_config.hidden_size})",
        f"- vision tower: `{config.vision_config.model_type}`, {config.num_frames} frames per video, connector "
        f"`{config.connector_type}` -> {config.num_video_tokens} tokens per video, {config.num_image_tokens} per image"
        if config.vision_config is not None
        else "- vision tower: none (audio-only model)",
        f"- audio tower: `{config.audio_config.model_type}`, {config.num_audio_segments} segments -> "
        f"{config.num_audio_tokens} tokens per clip (`{config.audio_projector_type}` projector)"
        if config.audio_config is not None
        else "- audio tower: none (visual-only model)",
        f"- parameters: {model.num_parameters():,}",
    ]
    return "\n".join(lines)


def recorded_base_models(model: AVLlmForConditionalGeneration) -> list[str]:
    """The checkpoints `model` was built from, for a model card's `base_model`: those `from_pretrained_components`
    recorded on it (`model.base_models`), else the `base_model` of the model card in the folder it was loaded from
    (an export, or an `avllm train` output)."""
    recorded = getattr(model, "base_models", None)
    if recorded:
        return list(recorded.values())
    card = Path(model.name_or_path or "") / "README.md"
    if not model.name_or_path or not card.is_file():
        return []
    base_model = ModelCard.load(card).data.base_model
    return [base_model] if isinstance(base_model, str) else list(base_model or [])


def build_model_card(
    model: AVLlmForConditionalGeneration,
    repo_id: str,
    *,
    base_models: list[str] | None = None,
    license: str = "apache-2.0",
    training_stages: list[dict] | None = None,
    datasets: list[str] | None = None,
    eval_results: list[dict] | None = None,
) -> ModelCard:
    """A model card with Hub metadata (`library_name`, `pipeline_tag: any-to-any`, base models, tags, licence,
    datasets, `model-index` from `eval_results` = `[{"task", "dataset", "metric", "value"}]`) and a usage snippet.

    `base_models`: the checkpoints the model was built from (default: `recorded_base_models(model)`).
    `training_stages`: `[{"name", "trainable", "learning_rate", "epochs", ...}]`, e.g. from the trainer state."""
    base_models = recorded_base_models(model) if base_models is None else base_models
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="any-to-any",
        license=license,
        base_model=base_models or None,
        tags=["audio-visual", "video", "audio", "avllm", "trust-remote-code"],
        datasets=datasets,
        model_name=repo_id,
        eval_results=[
            EvalResult(
                task_type=result.get("task", "video-question-answering"),
                dataset_type=result["dataset"],
                dataset_name=result["dataset"],
                metric_type=result["metric"],
                metric_value=result["value"],
            )
            for result in eval_results or []
        ]
        or None,
    )
    stages = "\n".join(
        "- " + ", ".join(f"{key}: {value}" for key, value in stage.items()) for stage in training_stages or []
    )
    content = "\n\n".join(
        [
            "---\n" + card_data.to_yaml() + "\n---",
            f"# {repo_id}",
            "An audio-visual LLM built with the transformers-avllm package: it watches and listens to a "
            "video, or hears a sound alone, and answers in text. Load it with `trust_remote_code=True`; the model, "
            "processor and media-decoding code ship in this repository.",
            "## Usage\n\n" + USAGE.format(repo_id=repo_id),
            "## Architecture\n\n" + _architecture(model),
            "## Training\n\n" + (stages or "No training information was recorded."),
        ]
    )
    return ModelCard(content)


def check_export_folder(folder: str | Path) -> None:
    """Raises `ExportError` unless the folder holds safetensors weights, every shipped code file
    (`models/avllm/*_avllm.py`), no pickle files, and no other code (but a Space's app)."""
    folder = Path(folder)
    files = {path.name for path in folder.rglob("*") if path.is_file()}
    pickles = sorted(name for name in files if Path(name).suffix in PICKLE_SUFFIXES)
    foreign_code = sorted(
        name for name in files if name.endswith(".py") and name not in SHIPPED_FILES | set(SPACE_FILES)
    )
    missing = sorted(
        (SHIPPED_FILES | {"config.json", "processor_config.json", "chat_template.jinja", "README.md"}) - files
    )
    if not any(name.endswith(".safetensors") for name in files):
        missing.append("*.safetensors")
    if pickles or foreign_code or missing:
        raise ExportError(
            f"{folder}: pickle files {pickles}, code that is not ours {foreign_code}, missing files {missing}"
        )


def export_pretrained(
    model: AVLlmForConditionalGeneration,
    processor: AVLlmProcessor,
    output_dir: str | Path,
    *,
    repo_id: str | None = None,
    space: bool = False,
    **card_kwargs,
) -> Path:
    """Writes a Hub-ready folder: weights (safetensors), config with `auto_map`, generation config, processor files,
    tokenizer, chat template, our remote-code files (flat, copied by `save_pretrained`) and a model card.
    `card_kwargs` go to `build_model_card` (`base_models`, `training_stages`, `datasets`, `eval_results`, ...).
    `space=True` also makes it a Gradio Space (`space.add_space`: `app.py`, `requirements.txt`, the card's keys)."""
    output = Path(output_dir)
    tokenizer = processor.tokenizer
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if tokenizer.bos_token_id is not None:
        model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(output)
    processor.save_pretrained(output)
    build_model_card(model, repo_id or output.name, **card_kwargs).save(output / "README.md")
    if space:
        add_space(output)
    check_export_folder(output)
    return output


def upload_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    repo_type: str,
    commit_message: str,
    private: bool = False,
    token: str | None = None,
    allow_patterns: list[str] | None = None,
) -> str:
    """Creates `repo_id` (if needed) and uploads `folder` (the files matching `allow_patterns`, default all) with
    huggingface_hub's API; returns the commit URL. Raises `HubAuthError` without a token."""
    token = token or get_token()
    if not token:
        raise HubAuthError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, or pass token=")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type=repo_type,
        allow_patterns=allow_patterns,
        commit_message=commit_message,
    )
    return str(commit)


def push_to_hub(
    folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None, commit_message: str = ""
) -> str:
    """Checks an exported folder and uploads it to the model repo `repo_id` (created if needed); returns the commit
    URL."""
    check_export_folder(folder)
    message = commit_message or "Upload AVLlm"
    return upload_folder_to_hub(
        folder, repo_id, repo_type="model", commit_message=message, private=private, token=token
    )
