"""Every shipped recipe (`recipes/*.yaml`) trains two optimizer steps end to end through `avllm train`, on tiny
stand-ins that keep its token geometry (frames, patch grid, connector, audio segments and tokens, the order of a
video's runs, the LLM's positions) and on a mixed dataset in each of its data slots.

A recipe is run as written except for: its checkpoints (tiny stand-ins, below), its data slots' paths (a mixed jsonl
each; every other setting of the slot is kept), the number of steps and the batch, and the run's plumbing (CPU,
fp32, output and tower-cache folders, no reports). A recipe that starts from another recipe's `output_dir` starts from
a tiny model built as that recipe builds its own.

To cover a new recipe: give each checkpoint it names a stand-in in `TINY_LLMS` / `TINY_TOWERS` (a tiny config of the
same family with the real model's patch grid, audio window and context length), and, if it starts from a checkpoint
that no recipe writes, an entry in `STARTING_RECIPES` (another recipe builds it) or `STARTING_CHECKPOINTS` (a converted
checkpoint); add its paper's media token counts to `PAPER_MEDIA_TOKENS`.
"""

import json
from pathlib import Path

import pytest
import torch
import yaml
from media_fixtures import write_audio, write_video
from PIL import Image
from transformers import LlamaForCausalLM, WhisperModel

from transformers_avllm.cli import main
from transformers_avllm.components import from_pretrained_components
from transformers_avllm.conversion.videollama2 import avllm_config_from_reference, beats_frames
from transformers_avllm.models.avllm import AVLlmConfig, AVLlmForConditionalGeneration, AVLlmProcessor, tower_family
from transformers_avllm.tiny import (
    SAMPLING_RATE,
    build_tokenizer,
    tiny_audio_config,
    tiny_text_config,
    tiny_vision_config,
)

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
WORDS = "what do you see hear and ? a red square low tone describe the clip".split()

# LLM checkpoint -> its context length (a tiny Llama keeps it: the start-up budget check reads it).
TINY_LLMS = {
    "lmsys/vicuna-7b-v1.5": 4096,
    "microsoft/phi-2": 2048,
    "mistralai/Mistral-7B-Instruct-v0.2": 32768,
}
# Tower checkpoint -> a tiny config of its family with the real geometry: the vision tower's patch grid
# (image size / patch size), the audio tower's window (Whisper: 1500 encoder positions = 30 s).
TINY_TOWERS = {
    "openai/clip-vit-large-patch14": lambda: tiny_vision_config("clip", image_size=32, patch_size=2),  # 16 x 16
    "openai/clip-vit-large-patch14-336": lambda: tiny_vision_config("clip", image_size=48, patch_size=2),  # 24 x 24
    "google/siglip-so400m-patch14-384": lambda: tiny_vision_config("siglip", image_size=54, patch_size=2),  # 27 x 27
    "laion/clap-htsat-unfused": lambda: tiny_audio_config("clap"),
    "openai/whisper-small": lambda: tiny_audio_config("whisper", max_source_positions=1500),
    "openai/whisper-large-v3": lambda: tiny_audio_config("whisper", max_source_positions=1500),
}
# Recipe -> the recipe whose model it starts from, where no recipe's `output_dir` is its `model_name_or_path`.
STARTING_RECIPES: dict[str, str] = {}


def videollama2_16f_with_beats(folder: Path) -> Path:
    """VideoLLaMA 2's A1 starting point as `avllm convert videollama2 --audio-tower` writes it (VideoLLaMA2.1-7B-16F +
    BEATs; conversion/videollama2.py builds its config): Qwen2 with 32k positions, SigLIP-so400m-384's 27 x 27 patch
    grid, `stc_connector_v35` over 16 frames, BEATs over 30 s of audio (1496 tokens), VideoLLaMA 2's audio sampling and
    square padding (A3's `--image_aspect_ratio pad`, the conversion's `--pad-to-square`); tiny widths."""
    tokenizer = build_tokenizer([" ".join(WORDS)])
    reference = {"num_frames": 16, "mm_projector_type": "stc_connector_v35", "mm_projector_a_type": "mlp2x_gelu"}
    vision = TINY_TOWERS["google/siglip-so400m-patch14-384"]()
    beats = tiny_audio_config("beats", max_length=beats_frames(30.0))
    text = tiny_text_config("qwen2", max_position_embeddings=32768)
    config = avllm_config_from_reference(reference, text, vision, beats, tokenizer)
    torch.manual_seed(0)
    AVLlmForConditionalGeneration(config).save_pretrained(folder)
    vision_family, audio_family = tower_family(vision), tower_family(beats)
    AVLlmProcessor.for_model(
        config,
        tokenizer,
        image_processor=vision_family.processor_class(**vision_family.processor_settings(vision)),
        feature_extractor=audio_family.processor_class(**audio_family.processor_settings(beats, 16000)),
        missing_audio="silence",
        audio_sampling="videollama2",
        pad_to_square=True,
    ).save_pretrained(folder)
    return folder


# `model_name_or_path` -> a builder of its tiny stand-in in a folder, for a starting checkpoint no recipe writes.
STARTING_CHECKPOINTS = {"outputs/videollama2.1-7b-16f-beats": videollama2_16f_with_beats}
# Recipe -> the media tokens its paper gives: (a video's visual tokens, an audio clip's tokens).
PAPER_MEDIA_TOKENS = {
    "avllm_stage1": (32 + 256, 4),  # 000 §3.1: T = 32 temporal + N = 16 x 16 spatial tokens, K = 4 auditory tokens
    "avllm_stage2": (32 + 256, 4),
    "owlet_001_audio_pretrain": (829, 64),  # 001 §3: "converted into 64 and 829 token embeddings"
    "owlet_001": (829, 64),
    # 003 (VideoLLaMA 2.1 AV): `stc_connector_v35` (no padding, stride 2 in time and space) over 16 frames of 27 x 27
    # SigLIP patches: 8 x 13 x 13 = 1352; BEATs over 30 s: 187 x 8 = 1496 patches, each a token
    **dict.fromkeys(
        ("videollama2_a1_audio_pretrain", "videollama2_a2_audio_finetune", "videollama2_a3_av_joint"), (1352, 1496)
    ),
}
MODEL_KEYS = ("llm", "vision_tower", "audio_tower")
GEOMETRY_KEYS = (
    "connector_type",
    "audio_projector_type",
    "num_frames",
    "num_audio_segments",
    "audio_tokens_per_segment",
    "audio_visual_order",
)


def read_recipe(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def stand_in_checkpoints(recipe: dict, folder: Path) -> dict[str, str]:
    """Saves a tiny stand-in for each checkpoint the recipe names; returns the recipe keys pointing at them."""
    paths = {}
    for key in MODEL_KEYS:
        name = recipe.get(key)
        if name is None:
            continue
        table_name = "TINY_LLMS" if key == "llm" else "TINY_TOWERS"
        table = TINY_LLMS if key == "llm" else TINY_TOWERS
        assert name in table, f"no tiny stand-in for {name!r}: add one to {table_name}"
        target = folder / key
        torch.manual_seed(0)
        if key == "llm":
            LlamaForCausalLM(tiny_text_config(max_position_embeddings=table[name])).save_pretrained(target)
            build_tokenizer([" ".join(WORDS)], media_tokens=False).save_pretrained(target)
        else:
            config = table[name]()
            family = tower_family(config)
            tower = WhisperModel(config) if config.model_type == "whisper" else family.tower_class(config)
            tower.save_pretrained(target)
            family.processor_class(**family.processor_settings(config, SAMPLING_RATE)).save_pretrained(target)
        paths[key] = str(target)
    return paths


def starting_model(recipe_name: str, recipe: dict, folder: Path) -> str:
    """The tiny checkpoint a recipe that starts from `model_name_or_path` trains: built as the recipe that writes
    that folder builds its model."""
    if recipe["model_name_or_path"] in STARTING_CHECKPOINTS:
        return str(STARTING_CHECKPOINTS[recipe["model_name_or_path"]](folder / "start"))
    source_name = STARTING_RECIPES.get(recipe_name)
    if source_name is None:
        start = recipe["model_name_or_path"]
        sources = [path.stem for path in RECIPES if read_recipe(path).get("output_dir") == start]
        assert sources, f"{recipe_name} starts from {recipe['model_name_or_path']}: add it to STARTING_RECIPES"
        source_name = sources[0]
    source = read_recipe(next(path for path in RECIPES if path.stem == source_name))
    if "llm" not in source:
        return starting_model(source_name, source, folder)
    parts = stand_in_checkpoints(source, folder / "parts")
    geometry = {key: source[key] for key in GEOMETRY_KEYS if key in source}
    model, processor = from_pretrained_components(
        parts["llm"], parts.get("vision_tower"), parts.get("audio_tower"), **geometry
    )
    model.save_pretrained(folder / "start")
    processor.save_pretrained(folder / "start")
    return str(folder / "start")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recipe_media")
    write_video(folder / "av.mp4", seconds=1, fps=8, audio=("aac", 440.0))
    write_audio(folder / "tone.wav", seconds=1, tone_hz=330.0, rate=16000)
    Image.new("RGB", (24, 24), (200, 30, 30)).save(folder / "red.png")
    return folder


def slot_rows(slot: dict, has_vision: bool, has_audio: bool) -> list[dict]:
    """A mixed dataset for a data slot: an image, a visual-only video, an audio clip and a video with its audio (those
    the model takes and the slot's view can show), in LLaVA-style rows where the slot is LLaVA-only (`use_audio`)."""
    kinds = {"image": has_vision, "visual": has_vision, "audio": has_audio, "audio_visual": has_vision and has_audio}
    view = slot.get("view")
    shown = {None: kinds, "visual": {"image", "visual", "audio_visual"}, "audio": {"audio", "visual", "audio_visual"}}
    shown["audio_visual"] = {"visual", "audio_visual"}
    kinds = [kind for kind, present in kinds.items() if present and kind in shown[view]]
    answer = "a red square and a low tone"
    if "use_audio" in slot:  # LLaVA-style rows: a video row brings its audio as the slot says
        media_key = {"image": "image", "visual": "video", "audio": "audio", "audio_visual": "video"}
        files = {"image": "red.png", "visual": "av.mp4", "audio": "tone.wav", "audio_visual": "av.mp4"}
        return [
            {
                "id": f"{kind}-{index}",
                media_key[kind]: files[kind],
                "conversations": [
                    {"from": "human", "value": f"<{media_key[kind]}>\ndescribe the clip"},
                    {"from": "gpt", "value": answer},
                ],
            }
            for index, kind in enumerate(kinds)
            if kind != ("visual" if slot["use_audio"] else "audio_visual")  # one video kind per LLaVA slot
        ]
    items = {
        "image": {"type": "image", "path": "red.png"},
        "visual": {"type": "video", "path": "av.mp4", "use_audio": False},
        "audio": {"type": "audio", "path": "tone.wav"},
        "audio_visual": {"type": "video", "path": "av.mp4", "use_audio": True},
    }
    return [
        {
            "id": f"{kind}-{index}",
            "messages": [
                {"role": "user", "content": [items[kind], {"type": "text", "text": "describe the clip"}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            ],
        }
        for index, kind in enumerate(kinds)
    ]


@pytest.mark.parametrize("path", RECIPES, ids=[path.stem for path in RECIPES])
def test_recipe_trains_two_steps_on_tiny_stand_ins_with_its_token_geometry(path, media, tmp_path):
    recipe = read_recipe(path)
    run = dict(recipe)
    if "model_name_or_path" in recipe:
        run["model_name_or_path"] = starting_model(path.stem, recipe, tmp_path)
        config = AVLlmConfig.from_pretrained(run["model_name_or_path"])
        has_vision, has_audio = config.vision_config is not None, config.audio_config is not None
    else:
        run.update(stand_in_checkpoints(recipe, tmp_path))
        has_vision, has_audio = "vision_tower" in recipe, "audio_tower" in recipe
    assert recipe.get("datasets"), f"{path.name} names no data slots"
    run["datasets"] = []
    for index, slot in enumerate(recipe["datasets"]):
        data = tmp_path / f"slot{index}.jsonl"
        data.write_text("\n".join(json.dumps(row) for row in slot_rows(slot, has_vision, has_audio)))
        run["datasets"].append({**slot, "path": str(data), "media_root": str(media)})
    output = tmp_path / "out"
    run.update(
        output_dir=str(output),
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    run.pop("save_total_limit", None)
    if "tower_cache" in recipe:
        run["tower_cache"] = str(tmp_path / "tower-cache")
    (tmp_path / path.name).write_text(yaml.safe_dump(run))

    main(["train", "--config", str(tmp_path / path.name)])

    state = json.loads((output / "checkpoint-2" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == 2 and len(losses) == 2 and all(loss == loss and loss > 0 for loss in losses)
    saved = AVLlmConfig.from_pretrained(output) if (output / "config.json").exists() else None
    if saved is None:  # a LoRA stage saves its adapter; the model it adapts is the starting one
        assert (output / "adapter_config.json").exists()
        saved = AVLlmConfig.from_pretrained(run["model_name_or_path"])
    for key in GEOMETRY_KEYS:
        if key in recipe:
            assert getattr(saved, key) == recipe[key], key
    if "tower_cache" in recipe:  # the towers ran once, before training, into the cache
        assert any(Path(run["tower_cache"]).glob("*/*.safetensors"))
    if path.stem in PAPER_MEDIA_TOKENS:
        assert (saved.num_video_tokens, saved.num_audio_tokens) == PAPER_MEDIA_TOKENS[path.stem]
