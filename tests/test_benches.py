"""Bench scripts CI keeps working: `bench/gpu_scale.py --tiny` runs the real-size bench's code paths on the CPU."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ("stage1_peak_gb", "stage1_samples_per_s", "stage1_tower_share", "tower_cache_step_speedup")
EXPECTED = {
    **{f"avllm_7b_{name}": None for name in ("prefill_overhead", "connector_share", "decode_eager_ratio")},
    **{f"avllm_7b_{name}": None for name in ("decode_static_ratio", "lora_peak_gb", "lora_samples_per_s", *TRAINING)},
    "avllm_7b_decode_static_graph_breaks": 0.0,
    **{
        f"{system}_{name}": None
        for system in ("videollama2_av_7b", "owlet_001")
        for name in ("prefill_overhead", "connector_share", "decode_eager_ratio")
    },
}


def test_gpu_scale_tiny_prints_its_figures():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_scale.py"), "--tiny"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = dict(re.findall(r"^figure: scale_(\w+) (\S+)$", result.stdout, re.M))
    assert sorted(figures) == sorted(EXPECTED)
    for name, expected in EXPECTED.items():
        if expected is not None:  # the decode step compiled without graph breaks
            assert float(figures[name]) == expected, name
        elif name.endswith(("samples_per_s", "tower_share", "prefill_overhead")):  # timing ratios may be noise on CPU
            assert float(figures[name]) > 0, name
        elif not name.endswith("peak_gb"):  # peak memory is only measured on a GPU
            assert math.isfinite(float(figures[name])), name
