"""Multi-process training: a 2-process DDP run (gloo, CPU) where one rank never sees audio, and the accelerate configs.

The DDP runs launch `tests/ddp_train.py` under `torch.distributed.run`; see its docstring for how the data is laid out
so that rank 0 only gets visual rows and rank 1 an audio and an audio-visual row at every step.
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
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
WORKER = TESTS / "ddp_train.py"
ACCELERATE_CONFIGS = ROOT / "recipes" / "accelerate"
STEPS = 3  # the worker's default --steps
TRAINABLE = ("audio_projector", "video_connector", "language_model")


def launch(command: list[str], timeout: float) -> tuple[int | None, str]:
    """Runs `python -m torch.distributed.run --standalone --nproc_per_node 2 *command`; returns (exit code, stdout +
    stderr), with exit code None when it ran past `timeout` and its whole process group was killed."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
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
    from transformers_avllm import AVLlmForConditionalGeneration
    from transformers_avllm.tiny import tiny_config

    fsdp = load_config_from_file(str(ACCELERATE_CONFIGS / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    wrapped_classes = set(fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","))
    with torch.device("meta"):
        model = AVLlmForConditionalGeneration(tiny_config())  # a Llama LLM, like the recipes' Vicuna
    wrapped = [name for name, module in model.named_modules() if type(module).__name__ in wrapped_classes]
    assert wrapped, f"{wrapped_classes} matches no module of an AVLlm with a Llama LLM"
    assert all(name.startswith("model.language_model.layers.") for name in wrapped), wrapped
    assert len(wrapped) == model.config.text_config.num_hidden_layers
