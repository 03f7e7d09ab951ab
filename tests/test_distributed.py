"""Multi-process training on two CPU processes (gloo) where one rank never sees audio, and the accelerate configs.

- DDP: `tests/ddp_train.py` under `torch.distributed.run` (see its docstring for how the data is laid out so that rank
  0 only gets visual rows and rank 1 an audio and an audio-visual row at every step).
- FSDP2, and DeepSpeed ZeRO-2 / ZeRO-3 where deepspeed is installed: `avllm train` under `accelerate launch` with the
  shipped `recipes/accelerate/*.yaml`, through `tests/accelerate_train.py` (see its docstring for what it adds on
  CPU), with recipes written here. Their rows are read in order, so that rank 0 gets two visual rows and rank 1 an
  audio row and a visual row at every step.
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType
from accelerate_train import PARTS, model_part, parameter_checksum
from ddp_train import NUM_CLIPS, WORDS, row, write_clips
from transformers import ClapAudioModel, CLIPVisionModel, LlamaForCausalLM

from transformers_avllm import AVLlmForConditionalGeneration
from transformers_avllm.tiny import (
    build_processor,
    build_tokenizer,
    tiny_audio_config,
    tiny_config,
    tiny_text_config,
    tiny_vision_config,
)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
WORKER = TESTS / "ddp_train.py"
RECIPE_WORKER = TESTS / "accelerate_train.py"
ACCELERATE_CONFIGS = ROOT / "recipes" / "accelerate"
STEPS = 3  # the worker's default --steps
TRAINABLE = ("audio_projector", "video_connector", "language_model")


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def accelerate_launcher(config: str) -> list[str]:
    """`accelerate launch` of a shipped config on two processes, in fp32 (the configs say bf16), on a free port."""
    return [
        *[sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / config)],
        *["--num_processes", "2", "--mixed_precision", "no", "--main_process_port", "0"],
    ]


def launch(
    command: list[str], timeout: float, launcher: list[str] = TORCHRUN, env: dict | None = None
) -> tuple[int | None, str]:
    """Runs `*launcher *command` (by default `python -m torch.distributed.run --standalone --nproc_per_node 2`);
    returns (exit code, stdout + stderr), with exit code None when it ran past `timeout` and its whole process group
    was killed."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        **(env or {}),
    }
    process = subprocess.Popen(
        [*launcher, *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the launcher and both workers share a process group we can kill
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output


def rank_tracebacks(output: str) -> dict[int, str]:
    """The lines each worker printed with torch's `[rankN]:` prefix (its uncaught exception), joined per rank."""
    lines: dict[int, list[str]] = {}
    for match in re.finditer(r"^\[rank(\d+)\]:(.*)$", output, flags=re.MULTILINE):
        lines.setdefault(int(match.group(1)), []).append(match.group(2))
    return {rank: "\n".join(text) for rank, text in lines.items()}


@pytest.fixture(scope="module")
def ddp_reports(tmp_path_factory) -> dict[int, dict]:
    output_dir = tmp_path_factory.mktemp("ddp")
    code, output = launch([str(WORKER), str(output_dir)], timeout=180)
    assert code == 0, f"2-process DDP run {'hung' if code is None else f'exited {code}'}:\n{output[-6000:]}"
    return {rank: json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)}


def test_ddp_run_where_one_rank_has_no_audio_finishes(ddp_reports):
    for rank, report in ddp_reports.items():
        assert report["rank"] == rank and report["world_size"] == 2
        assert report["ddp_wrapped"] and report["find_unused_parameters"] is False
        assert report["backend"] == "gloo"
        assert report["touch_absent_modalities"], "AVLlmSFTTrainer turns the zero-weighted pass on when distributed"
        assert report["global_step"] == STEPS and len(report["step_losses"]) == STEPS
        assert all(math.isfinite(loss) for loss in report["step_losses"]) and math.isfinite(report["train_loss"])

    rank0, rank1 = ddp_reports[0], ddp_reports[1]
    # Rank 0's batches carried no audio at all: no features, no placeholders; rank 1's carried audio at every step.
    assert not rank0["saw_audio"] and rank0["modalities"] == ["visual"]
    assert all(not batch["input_features"] and batch["audio_placeholders"] == 0 for batch in rank0["batches"])
    assert rank1["saw_audio"] and rank1["modalities"] == ["audio", "audio_visual"]
    assert all(batch["input_features"] and batch["audio_placeholders"] > 0 for batch in rank1["batches"])


def test_ddp_gradients_are_all_reduced_across_ranks(ddp_reports):
    rank0, rank1 = ddp_reports[0]["checksums"], ddp_reports[1]["checksums"]
    for name in TRAINABLE:
        assert rank0[name]["initial"] == rank1[name]["initial"], f"{name}: ranks started from different weights"
        # Rank 0 never ran real audio, so its audio projector can only move by the gradient all-reduced from rank 1.
        assert rank0[name]["final"] != rank0[name]["initial"], f"{name} did not train on rank 0"
        assert rank0[name]["final"] == rank1[name]["final"], f"{name} diverged between the ranks"


def test_ddp_without_the_zero_weighted_pass_fails(tmp_path):
    """The failure the zero-weighted pass prevents: rank 0 never gives the audio projector a gradient, so DDP's
    gradient reduction cannot complete. Rank 1 waits in backward for a bucket rank 0 never sends, while rank 0 goes
    on to its next collective; without a timeout both wait forever."""
    ddp_timeout = 10
    code, output = launch([str(WORKER), str(tmp_path), "--no-touch", "--ddp-timeout", str(ddp_timeout)], timeout=180)

    assert code is not None, f"still running after 180 s despite --ddp-timeout {ddp_timeout}:\n{output[-4000:]}"
    assert code != 0, f"the run without the zero-weighted pass finished cleanly:\n{output[-6000:]}"
    assert not list(tmp_path.glob("rank*.json")), "a rank finished training"
    tracebacks = rank_tracebacks(output)
    reduction_stuck = [
        rank
        for rank, text in tracebacks.items()
        if re.search(r"Expected to have finished reduction|unused parameters", text)
        or ("backward" in text and "Timed out" in text)
    ]
    assert reduction_stuck, f"no rank failed in the gradient reduction:\n{output[-6000:]}"


CONFIGS = {
    "ddp.yaml": DistributedType.MULTI_GPU,
    "fsdp.yaml": DistributedType.FSDP,
    "zero2.yaml": DistributedType.DEEPSPEED,
    "zero3.yaml": DistributedType.DEEPSPEED,
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_accelerate_config_loads(name):
    config = load_config_from_file(str(ACCELERATE_CONFIGS / name))  # raises on keys accelerate does not know
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == CONFIGS[name]
    assert config.mixed_precision == "bf16" and not config.use_cpu
    assert config.num_processes == 8 and config.num_machines == 1
    header = (ACCELERATE_CONFIGS / name).read_text().splitlines()[:3]
    assert any(f"accelerate launch --config_file recipes/accelerate/{name}" in line for line in header)
    if name.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(name[4])
        # Components are assembled by copying state dicts, which zero.Init would leave partitioned (see the file).
        assert config.deepspeed_config["zero3_init_flag"] is False
    else:
        assert not config.deepspeed_config


def test_fsdp_config_wraps_only_the_llm_decoder_layers():
    """Towers must stay in FSDP's root unit: their order depends on which modalities a rank's batch carries."""
    fsdp = load_config_from_file(str(ACCELERATE_CONFIGS / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    wrapped_classes = set(fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","))
    with torch.device("meta"):
        model = AVLlmForConditionalGeneration(tiny_config())  # a Llama LLM, like the recipes' Vicuna
    wrapped = [name for name, module in model.named_modules() if type(module).__name__ in wrapped_classes]
    assert wrapped, f"{wrapped_classes} matches no module of an AVLlm with a Llama LLM"
    assert all(name.startswith("model.language_model.layers.") for name in wrapped), wrapped
    assert len(wrapped) == model.config.text_config.num_hidden_layers


# `avllm train` under `accelerate launch` with the shipped configs, through tests/accelerate_train.py.

RECIPE_STEPS = 4  # optimizer steps of the stage-2 runs; the training file holds exactly this many
# The trainer keeps the CPU (gloo) process group and state that tests/accelerate_train.py creates.
CPU_PROCESSES = {"use_cpu": True, "accelerator_config": {"use_configured_state": True}}


@pytest.fixture(scope="module")
def recipe_workspace(tmp_path_factory) -> Path:
    """A saved tiny AVLlm (CLIP + CLAP + Llama) with its processor, and `train.jsonl`: per step two visual rows
    (batch 2s, rank 0) and an audio row and a visual row (batch 2s + 1, rank 1)."""
    root = tmp_path_factory.mktemp("recipes")
    torch.manual_seed(0)
    config = tiny_config()
    AVLlmForConditionalGeneration(config).save_pretrained(root / "model")
    build_processor(config, build_tokenizer([" ".join(WORDS)])).save_pretrained(root / "model")
    clips = write_clips(root / "clips")
    rows = []
    for step in range(RECIPE_STEPS):
        a, b = (2 * step) % NUM_CLIPS, (2 * step + 1) % NUM_CLIPS
        rows += [row(clips[a], a, "visual"), row(clips[b], b, "visual")]
        rows += [row(clips[b], b, "audio"), row(clips[a], a, "visual")]
    (root / "train.jsonl").write_text("\n".join(json.dumps(item) for item in rows))
    return root


def write_recipe(folder: Path, name: str, **fields) -> Path:
    """`folder/name.yaml`: a recipe reading `train.jsonl` in order, two rows per process and step, every step logged,
    activation checkpointing on as in the shipped recipes; `fields` add to it or override it."""
    recipe = {
        "dataset_name": str(folder / "train.jsonl"),
        "modalities": ["visual"],  # the view keeps these rows as they are: videos without their audio, audio items
        "per_device_train_batch_size": 2,
        "train_sampling_strategy": "sequential",
        "logging_steps": 1,
        "bf16": False,
        "activation_checkpointing": True,
        "report_to": [],
        "save_strategy": "no",
        "disable_tqdm": True,
        **fields,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def launch_recipe(config: str, folder: Path, name: str, *worker_args: str, env=None, **fields):
    """Writes recipe `name` and trains it with `accelerate launch --config_file recipes/accelerate/{config}` on two
    processes; the worker's reports go to `folder/name-report`. Returns `launch`'s (exit code, output)."""
    recipe = write_recipe(folder, name, output_dir=str(folder / name), **fields)
    command = [str(RECIPE_WORKER), str(folder / f"{name}-report"), *worker_args, "--", "--config", str(recipe)]
    return launch(command, timeout=300, launcher=accelerate_launcher(config), env=env)


def train_recipe(config: str, folder: Path, name: str, env=None, **fields) -> dict[int, dict]:
    code, output = launch_recipe(config, folder, name, env=env, **fields)
    assert code == 0, f"{name} under {config} {'hung' if code is None else f'exited {code}'}:\n{output[-6000:]}"
    return {rank: json.loads((folder / f"{name}-report" / f"rank{rank}.json").read_text()) for rank in (0, 1)}


def saved_checksums(folder: Path) -> dict[str, str]:
    """The checksum of each part of the model saved in `folder`, as the worker computes them."""
    model = AVLlmForConditionalGeneration.from_pretrained(folder)
    return {part: parameter_checksum(model_part(model, part).named_parameters()) for part in PARTS}


def changed_parts(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {part for part in PARTS if before[part] != after[part]}


def assert_trained_with_a_rank_without_audio(reports: dict[int, dict], distributed_type: str, wrapper: str):
    for rank, report in reports.items():
        assert report["rank"] == rank and report["world_size"] == 2
        assert report["distributed_type"] == distributed_type and report["wrapper"] == wrapper
        assert report["backend"] == "gloo"
        assert report["touch_absent_modalities"], "AVLlmSFTTrainer turns the zero-weighted pass on when distributed"
        assert all(math.isfinite(loss) for loss in report["losses"].values())
    # Rank 0's batches carried no audio at all (no features, no placeholders); rank 1's carried audio every time.
    rank0, rank1 = reports[0]["batches"], reports[1]["batches"]
    assert rank0 and all(batch["rows"] == ["visual", "visual"] for batch in rank0)
    assert all(not batch["input_features"] and batch["audio_placeholders"] == 0 for batch in rank0)
    assert rank1 and all(batch["rows"] == ["audio", "visual"] for batch in rank1)
    assert all(batch["input_features"] and batch["audio_placeholders"] > 0 for batch in rank1)


def assert_ranks_agree_with_the_saved_model(reports: dict[int, dict], folder: Path, sharded: bool):
    """Both ranks end with the same full weights, which are what `trainer.save_model()` wrote; with `sharded`, each
    rank held only its share of every part, otherwise all of it."""
    saved = saved_checksums(folder)
    for part in PARTS:
        rank0, rank1 = reports[0]["parts"][part], reports[1]["parts"][part]
        assert rank0["checksum"] == rank1["checksum"] == saved[part], f"{part} differs between the ranks or on disk"
        if sharded:
            assert rank0["local_numel"] + rank1["local_numel"] == rank0["numel"], f"{part} is not split in two"
            assert 0 < rank0["local_numel"] < rank0["numel"]
        else:
            assert rank0["local_numel"] == rank1["local_numel"] == rank0["numel"]


def assert_saved_with_our_remote_code(folder: Path, reference: Path):
    """The checkpoint carries the model's own remote-code files and auto_map, nothing of the training wrapper."""
    assert {path.name for path in folder.glob("*.py")} == {path.name for path in reference.glob("*.py")}
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == json.loads((reference / "config.json").read_text())["auto_map"]


def assert_resumed_run_matches(uninterrupted: dict[int, dict], resumed: dict[int, dict], checkpoint: Path):
    """The run resumed from `checkpoint` (step 2) logs the same losses at steps 3 and 4 as the uninterrupted run
    that wrote it, and ends with the same weights."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2]
    for rank in (0, 1):
        assert uninterrupted[rank]["global_step"] == resumed[rank]["global_step"] == RECIPE_STEPS
        assert len(resumed[rank]["batches"]) == RECIPE_STEPS - 2, "the resumed run did not skip the trained batches"
        for step in ("3", "4"):
            assert resumed[rank]["losses"][step] == uninterrupted[rank]["losses"][step], f"step {step}, rank {rank}"
        for part in PARTS:
            assert resumed[rank]["parts"][part]["checksum"] == uninterrupted[rank]["parts"][part]["checksum"], part


@pytest.fixture(scope="module")
def fsdp_runs(recipe_workspace) -> dict[str, dict[int, dict]]:
    """Stage `pretrain` (projectors), then stage `sft` (projectors + LLM) from its output with a checkpoint at step 2,
    then `sft` again resumed from that checkpoint; and, as the reference, the same `pretrain` under DDP (with an
    `export_dir`)."""
    folder = recipe_workspace
    pretrain = dict(stage="pretrain", model_name_or_path=str(folder / "model"), max_steps=2, **CPU_PROCESSES)
    sft = dict(stage="sft", model_name_or_path=str(folder / "fsdp-pretrain"), max_steps=RECIPE_STEPS)
    sft.update(learning_rate=1e-3, **CPU_PROCESSES)
    checkpoint, export_dir = str(folder / "fsdp-sft" / "checkpoint-2"), str(folder / "ddp-hub")
    return {
        "ddp-pretrain": train_recipe("ddp.yaml", folder, "ddp-pretrain", export_dir=export_dir, **pretrain),
        "fsdp-pretrain": train_recipe("fsdp.yaml", folder, "fsdp-pretrain", **pretrain),
        "fsdp-sft": train_recipe("fsdp.yaml", folder, "fsdp-sft", save_strategy="steps", save_steps=2, **sft),
        "fsdp-resumed": train_recipe("fsdp.yaml", folder, "fsdp-resumed", resume_from_checkpoint=checkpoint, **sft),
    }


def test_fsdp_two_stages_train_with_a_rank_that_never_sees_audio(fsdp_runs, recipe_workspace):
    folder = recipe_workspace
    assert_trained_with_a_rank_without_audio(fsdp_runs["ddp-pretrain"], "MULTI_CPU", "DistributedDataParallel")
    assert_ranks_agree_with_the_saved_model(fsdp_runs["ddp-pretrain"], folder / "ddp-pretrain", sharded=False)
    assert saved_checksums(folder / "ddp-hub") == saved_checksums(folder / "ddp-pretrain")  # the main process exported
    for name in ("fsdp-pretrain", "fsdp-sft", "fsdp-resumed"):
        assert_trained_with_a_rank_without_audio(fsdp_runs[name], "FSDP", "FSDPAVLlmForConditionalGeneration")
        assert_ranks_agree_with_the_saved_model(fsdp_runs[name], folder / name, sharded=True)
        assert_saved_with_our_remote_code(folder / name, folder / "model")
    assert_saved_with_our_remote_code(folder / "fsdp-sft" / "checkpoint-2", folder / "model")
    initial, pretrained = saved_checksums(folder / "model"), saved_checksums(folder / "fsdp-pretrain")
    assert changed_parts(initial, pretrained) == {"video_connector", "audio_projector"}
    sft = saved_checksums(folder / "fsdp-sft")
    assert changed_parts(pretrained, sft) == {"video_connector", "audio_projector", "language_model", "lm_head"}


def test_fsdp_trains_the_same_weights_as_ddp(fsdp_runs, recipe_workspace):
    """The reference: DDP, proven above and replicating every weight, reaches the same weights and losses."""
    assert fsdp_runs["fsdp-pretrain"][0]["losses"] == pytest.approx(fsdp_runs["ddp-pretrain"][0]["losses"], abs=1e-6)
    fsdp = AVLlmForConditionalGeneration.from_pretrained(recipe_workspace / "fsdp-pretrain").state_dict()
    ddp = AVLlmForConditionalGeneration.from_pretrained(recipe_workspace / "ddp-pretrain").state_dict()
    for name, value in fsdp.items():
        torch.testing.assert_close(value, ddp[name], rtol=0, atol=1e-6, msg=name)


def test_fsdp_resumed_run_matches_the_uninterrupted_run(fsdp_runs, recipe_workspace):
    checkpoint = recipe_workspace / "fsdp-sft" / "checkpoint-2"
    assert_resumed_run_matches(fsdp_runs["fsdp-sft"], fsdp_runs["fsdp-resumed"], checkpoint)


def test_fsdp_without_the_zero_weighted_pass_fails(recipe_workspace):
    """Rank 0 gives the audio projector no gradient, so the ranks reduce-scatter gradient buffers of different sizes
    for the root unit (towers, connectors, embeddings): gloo aborts on the mismatch."""
    folder = recipe_workspace
    pretrain = dict(stage="pretrain", model_name_or_path=str(folder / "model"), max_steps=2, **CPU_PROCESSES)
    code, output = launch_recipe("fsdp.yaml", folder, "fsdp-untouched", "--no-touch", "--timeout", "20", **pretrain)
    assert code is not None, f"still running after 300 s despite --timeout 20:\n{output[-4000:]}"
    assert code != 0, f"the run without the zero-weighted pass finished cleanly:\n{output[-6000:]}"
    assert not list((folder / "fsdp-untouched-report").glob("rank*.json")), "a rank finished training"
    assert "reduce_scatter" in output or "collective mismatch" in output, output[-6000:]


@pytest.fixture(scope="module")
def deepspeed_env() -> dict[str, str]:
    pytest.importorskip("deepspeed", reason="the ZeRO runs need deepspeed (not a dependency); see docs/training.md")
    return {"DS_ACCELERATOR": "cpu"}


@pytest.fixture(scope="module")
def components(recipe_workspace) -> dict[str, str]:
    """Separate LLM, vision tower and audio tower checkpoints, as `recipes/avllm_stage1.yaml` starts from."""
    folder = recipe_workspace / "components"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_text_config("llama", vocab_size=120)).save_pretrained(folder / "llm")
    build_tokenizer([" ".join(WORDS)], vocab_size=120, media_tokens=False).save_pretrained(folder / "llm")
    processor = build_processor(tiny_config(), build_tokenizer([" ".join(WORDS)]))
    CLIPVisionModel(tiny_vision_config("clip")).save_pretrained(folder / "clip")
    processor.image_processor.save_pretrained(folder / "clip")
    ClapAudioModel(tiny_audio_config("clap")).save_pretrained(folder / "clap")
    processor.feature_extractor.save_pretrained(folder / "clap")
    return {
        "llm": str(folder / "llm"),
        "vision_tower": str(folder / "clip"),
        "audio_tower": str(folder / "clap"),
        "num_frames": 4,
        "num_audio_segments": 2,
    }


@pytest.fixture(scope="module")
def zero_runs(recipe_workspace, components, deepspeed_env) -> dict[str, dict[int, dict]]:
    """The shipped recipes' plan: stage `pretrain` assembled from components under ZeRO-2, then stage `sft` from its
    output under ZeRO-3 with a checkpoint at step 2, then that `sft` resumed from the checkpoint. The ZeRO-2 run
    exports too."""
    folder = recipe_workspace
    pretrain = dict(stage="pretrain", max_steps=2, **components, **CPU_PROCESSES)
    sft = dict(stage="sft", model_name_or_path=str(folder / "zero2-pretrain"), max_steps=RECIPE_STEPS)
    sft.update(learning_rate=1e-3, **CPU_PROCESSES)
    checkpoint = str(folder / "zero3-sft" / "checkpoint-2")
    return {
        "zero2-pretrain": train_recipe(
            "zero2.yaml", folder, "zero2-pretrain", env=deepspeed_env, export_dir=str(folder / "zero2-hub"), **pretrain
        ),
        "zero3-sft": train_recipe(
            "zero3.yaml", folder, "zero3-sft", env=deepspeed_env, save_strategy="steps", save_steps=2, **sft
        ),
        "zero3-resumed": train_recipe(
            "zero3.yaml", folder, "zero3-resumed", env=deepspeed_env, resume_from_checkpoint=checkpoint, **sft
        ),
    }


def test_zero2_then_zero3_train_with_a_rank_that_never_sees_audio(zero_runs, recipe_workspace):
    folder = recipe_workspace
    for name, stage in (("zero2-pretrain", 2), ("zero3-sft", 3), ("zero3-resumed", 3)):
        assert_trained_with_a_rank_without_audio(zero_runs[name], "DEEPSPEED", "DeepSpeedEngine")
        assert zero_runs[name][0]["zero_stage"] == zero_runs[name][1]["zero_stage"] == stage
        assert_ranks_agree_with_the_saved_model(zero_runs[name], folder / name, sharded=stage == 3)
        assert_saved_with_our_remote_code(folder / name, folder / "model")
    pretrained, sft = saved_checksums(folder / "zero2-pretrain"), saved_checksums(folder / "zero3-sft")
    assert saved_checksums(folder / "zero2-hub") == pretrained  # the main process exported
    assert changed_parts(pretrained, sft) == {"video_connector", "audio_projector", "language_model", "lm_head"}


def test_zero3_resumed_run_matches_the_uninterrupted_run(zero_runs, recipe_workspace):
    checkpoint = recipe_workspace / "zero3-sft" / "checkpoint-2"
    assert_resumed_run_matches(zero_runs["zero3-sft"], zero_runs["zero3-resumed"], checkpoint)


def test_zero3_cannot_assemble_a_model_from_components(recipe_workspace, components, deepspeed_env):
    """With zero3.yaml (zero3_init_flag: false) from_pretrained still partitions each component, leaving empty
    tensors to copy into the assembled model: why stage 1 runs under ZeRO-2."""
    pretrain = dict(stage="pretrain", max_steps=2, **components, **CPU_PROCESSES)
    code, output = launch_recipe("zero3.yaml", recipe_workspace, "zero3-components", env=deepspeed_env, **pretrain)
    assert code not in (0, None), output[-6000:]
    assert re.search(r"size mismatch for \S+: copying a param with shape torch.Size\(\[0\]\)", output), output[-6000:]


def test_zero3_refuses_export_dir_before_training(recipe_workspace, deepspeed_env):
    sft = dict(stage="sft", model_name_or_path=str(recipe_workspace / "model"), max_steps=2, **CPU_PROCESSES)
    export_dir = recipe_workspace / "zero3-hub"
    code, output = launch_recipe(
        "zero3.yaml", recipe_workspace, "zero3-export", env=deepspeed_env, export_dir=str(export_dir), **sft
    )
    assert code not in (0, None), output[-6000:]
    assert "export_dir: ZeRO-3 splits the weights across the processes" in output, output[-6000:]
    assert "avllm export --model" in output and not export_dir.exists()
