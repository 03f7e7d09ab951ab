"""Peak memory of `avllm convert videollama2` against the size of the checkpoint it converts.

Builds a VideoLLaMA2.1-AV checkpoint in the reference's layout whose LLM is a Qwen2 of ~270M parameters (float32, four
safetensors shards; SigLIP and BEATs from the tiny reference fixture, so almost all bytes are the LLM's and the
connectors'), then converts it in a fresh process that samples its own memory (`/proc/self/status`, Linux) every
20 ms: the peak resident set (VmHWM) and the peak of its anonymous part (RssAnon: memory the process filled itself,
not pages of the safetensors files it maps), each above the level after the imports. A converter that held the source
and the converted model at once would be two checkpoints above that level. Ends with `figure:` lines.

    python bench/convert_memory.py [--workdir DIR]   # DIR keeps the generated checkpoint between runs
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

from transformers_avllm.models.avllm.connectors_avllm import AVLlmSTCConnector

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "videollama2_av"
LLM = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=4
)
NUM_SHARDS = 4
TOWERS = ("model.vision_tower.", "model.audio_tower.")
CONVERT = """
import json, re, threading, time

def memory():
    status = open("/proc/self/status").read()
    fields = ("VmRSS", "VmHWM", "RssAnon")
    return {{key: int(re.search(key + r":\\s+(\\d+)", status).group(1)) * 1024 for key in fields}}

from transformers_avllm.conversion.videollama2 import convert_videollama2
imported, peak_anon = memory(), [0]

def watch():
    while True:
        peak_anon[0] = max(peak_anon[0], memory()["RssAnon"])
        time.sleep(0.02)

threading.Thread(target=watch, daemon=True).start()
convert_videollama2({checkpoint!r}, {output!r}, beats_config={beats!r}, audio_seconds=0.5)
peak_anon[0] = max(peak_anon[0], memory()["RssAnon"])
print(json.dumps({{"imported": imported, "peak_rss": memory()["VmHWM"], "peak_anon": peak_anon[0]}}))
"""


def build_checkpoint(folder: Path) -> int:
    """The fixture checkpoint with its LLM (and the widths that follow it) scaled up (kept in a `--workdir` between
    runs); returns its weight bytes."""
    if (folder / "model.safetensors.index.json").is_file():
        return sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    shutil.copytree(FIXTURES / "model", folder, ignore=shutil.ignore_patterns("model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config.update(LLM, hidden_size_a=LLM["hidden_size"], vocab_size=32000)
    (folder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    llm = Qwen2ForCausalLM(Qwen2Config(**{**LLM, "vocab_size": 32000, "tie_word_embeddings": False}))
    state_dict = dict(llm.state_dict())
    width = LLM["hidden_size"]
    towers = load_file(FIXTURES / "model" / "model.safetensors")
    state_dict.update({key: value for key, value in towers.items() if key.startswith(TOWERS)})
    # the connectors' widths follow the LLM's: VideoLLaMA 2's STC (our module has its key names) and mlp2x_gelu
    stc_config = SimpleNamespace(
        text_config=SimpleNamespace(hidden_size=width), stc_downsample=(2, 2, 2), stc_depth=4, stc_padding=0
    )
    stc = AVLlmSTCConnector(stc_config, config["mm_hidden_size"])
    state_dict.update({f"model.mm_projector.{key}": value for key, value in stc.state_dict().items()})
    audio_width = config["mm_hidden_size_a"]
    state_dict.update(
        {
            "model.mm_projector_a.0.weight": torch.randn(width, audio_width) * 0.02,
            "model.mm_projector_a.0.bias": torch.zeros(width),
            "model.mm_projector_a.2.weight": torch.randn(width, width) * 0.02,
            "model.mm_projector_a.2.bias": torch.zeros(width),
        }
    )
    del llm, stc
    keys = sorted(state_dict)
    for index in range(NUM_SHARDS):
        shard = {key: state_dict[key].contiguous() for key in keys[index::NUM_SHARDS]}
        save_file(shard, folder / f"model-{index + 1:05d}-of-{NUM_SHARDS:05d}.safetensors")
    names = [f"model-{index + 1:05d}-of-{NUM_SHARDS:05d}.safetensors" for index in range(NUM_SHARDS)]
    weight_map = {key: names[index % NUM_SHARDS] for index, key in enumerate(keys)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return sum(value.numel() * value.element_size() for value in state_dict.values())


def conversion_memory(checkpoint: Path, output: Path) -> dict:
    """The memory figures (bytes) of a fresh process converting `checkpoint`."""
    code = CONVERT.format(checkpoint=str(checkpoint), output=str(output), beats=str(FIXTURES / "beats_config.json"))
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="convert-memory-"))
    checkpoint_bytes = build_checkpoint(workdir / "checkpoint")
    shutil.rmtree(workdir / "converted", ignore_errors=True)
    memory = conversion_memory(workdir / "checkpoint", workdir / "converted")
    rss = memory["peak_rss"] - memory["imported"]["VmRSS"]
    anon = memory["peak_anon"] - memory["imported"]["RssAnon"]
    gib = 2**30
    print(f"checkpoint weights: {checkpoint_bytes / gib:.2f} GiB in {NUM_SHARDS} shards")
    print(f"after the imports:  {memory['imported']['VmRSS'] / gib:.2f} GiB resident")
    print(f"conversion peak:    +{rss / gib:.2f} GiB resident, +{anon / gib:.2f} GiB of it anonymous")
    print(f"figure: convert_peak_rss_over_checkpoint {rss / checkpoint_bytes:.2f}")
    print(f"figure: convert_peak_anonymous_over_checkpoint {anon / checkpoint_bytes:.2f}")
    if not args.workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
