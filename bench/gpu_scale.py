"""The seeds at their real sizes on one GPU (issue #16): prefill overhead, decoding speed against the bare LLM (eager,
and compiled with a static cache, beside the HBM-bandwidth floor), training-step throughput and memory, and what the
tower-output cache saves. Random weights, bf16, sdpa (CLAP-HTSAT has only eager attention).

    python bench/gpu_scale.py                      # a CUDA machine: about 3-5 minutes
    python bench/gpu_scale.py --tiny               # the same code paths on the CPU with tiny configs, in seconds (CI)
    python bench/gpu_scale.py --systems avllm_7b --skip-compiled --hbm-tbps 3.35

Systems: `avllm_7b` (CLIP ViT-L/14-224, 32 frames; CLAP-HTSAT, 4 segments; a Vicuna-7B-shaped Llama; a 359-token
prompt), `videollama2_av_7b` (CLIP ViT-L/14-336, 16 frames, STC; Whisper-large-v3's encoder; Mistral-7B shape) and
`owlet_001` (SigLIP-so400m-384, 100 frames, pooling; Whisper-small's encoder; phi-2 shape). Models are built directly
on the GPU in bf16 (never in fp32 on the CPU). Training (stage 1: projectors; LoRA r64 + activation checkpointing;
stage 1 from the tower cache) and compiled decoding run for `avllm_7b` only, as in the issue's table. Every figure is a
`figure: scale_<system>_<name> VALUE` line; `--tiny` prints the same names (CPU values, not comparable).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch._dynamo.utils import counters
from transformers import (
    AutoModelForCausalLM,
    ClapAudioConfig,
    CLIPVisionConfig,
    CompileConfig,
    LlamaConfig,
    MistralConfig,
    PhiConfig,
    SiglipVisionConfig,
    WhisperConfig,
)

from transformers_avllm import AVLlmConfig, AVLlmForConditionalGeneration
from transformers_avllm.models.avllm import AVLlmEncoderOutput, tower_family
from transformers_avllm.tiny import tiny_audio_config, tiny_text_config, tiny_vision_config
from transformers_avllm.training import apply_stage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_seconds, decode_tokens_per_second  # noqa: E402

# Peak HBM bandwidth (TB/s) by a substring of `torch.cuda.get_device_name()`, from the vendors' data sheets; the
# first match wins (longer names first). `--hbm-tbps` overrides it.
HBM_TBPS = {
    "H200": 4.8,
    "H100 PCIe": 2.0,
    "H100 NVL": 3.9,
    "H100": 3.35,
    "GH200": 4.0,
    "B200": 8.0,
    "A100-SXM4-80GB": 2.039,
    "A100 80GB PCIe": 1.935,
    "A100": 1.555,
    "L40S": 0.864,
    "L4": 0.3,
    "A10G": 0.6,
    "RTX 4090": 1.008,
}

# Whisper's decoder is never built (the encoder is the tower); these only keep the config small.
WHISPER_DECODER = dict(decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64)


@dataclass
class System:
    vision: PretrainedConfigSpec
    audio: PretrainedConfigSpec
    text: PretrainedConfigSpec
    connector: str
    audio_projector: str
    num_frames: int
    num_audio_segments: int
    text_tokens: int  # text tokens of the prompt besides the placeholders
    settings: dict = field(default_factory=dict)


@dataclass
class PretrainedConfigSpec:
    config_class: type
    sizes: dict
    tiny: tuple[str, str]  # (tiny.py builder, kind) for --tiny
    attn: str = "sdpa"


def tiny_sizes(spec: PretrainedConfigSpec):
    builder, kind = spec.tiny
    builders = {"vision": tiny_vision_config, "audio": tiny_audio_config, "text": tiny_text_config}
    return builders[builder](kind)


SYSTEMS = {
    "avllm_7b": System(
        vision=PretrainedConfigSpec(
            CLIPVisionConfig,
            dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 image_size=224, patch_size=14, projection_dim=768),
            ("vision", "clip"),
        ),
        audio=PretrainedConfigSpec(ClapAudioConfig, {}, ("audio", "clap"), attn="eager"),
        text=PretrainedConfigSpec(
            LlamaConfig,
            dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
            ("text", "llama"),
        ),
        connector="avllm",
        audio_projector="linear",
        num_frames=32,
        num_audio_segments=4,
        text_tokens=359 - (32 + 256) - 4,  # a 359-token prompt: 32 + 16 x 16 video placeholders, 4 audio
    ),
    "videollama2_av_7b": System(
        vision=PretrainedConfigSpec(
            CLIPVisionConfig,
            dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 image_size=336, patch_size=14, projection_dim=768),
            ("vision", "clip"),
        ),
        audio=PretrainedConfigSpec(
            WhisperConfig,
            dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, num_mel_bins=128,
                 max_source_positions=1500, vocab_size=51866, **WHISPER_DECODER),
            ("audio", "whisper"),
        ),
        text=PretrainedConfigSpec(
            MistralConfig,
            dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096),
            ("text", "llama"),
        ),
        connector="stc",
        audio_projector="mlp2x_gelu",
        num_frames=16,
        num_audio_segments=1,
        text_tokens=64,
    ),
    "owlet_001": System(
        vision=PretrainedConfigSpec(
            SiglipVisionConfig,
            dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                 image_size=384, patch_size=14),
            ("vision", "siglip"),
        ),
        audio=PretrainedConfigSpec(
            WhisperConfig,
            dict(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072, num_mel_bins=80,
                 max_source_positions=1500, vocab_size=51865, **WHISPER_DECODER),
            ("audio", "whisper"),
        ),
        text=PretrainedConfigSpec(
            PhiConfig,
            dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32,
                 vocab_size=51200, max_position_embeddings=2048),
            ("text", "llama"),
        ),
        connector="pool",
        audio_projector="mlp2x_gelu",
        num_frames=100,
        num_audio_segments=1,
        text_tokens=64,
    ),
}  # fmt: skip


def build(system: System, tiny: bool, device: torch.device, dtype: torch.dtype) -> AVLlmForConditionalGeneration:
    """The system's model with random weights, created directly on `device` in `dtype`."""
    configs = {
        name: tiny_sizes(spec) if tiny else spec.config_class(**spec.sizes)
        for name, spec in (("vision", system.vision), ("audio", system.audio), ("text", system.text))
    }
    text = configs["text"]
    config = AVLlmConfig(
        vision_config=configs["vision"],
        audio_config=configs["audio"],
        text_config=text,
        connector_type=system.connector,
        audio_projector_type=system.audio_projector,
        num_frames=min(system.num_frames, 4) if tiny else system.num_frames,
        num_audio_segments=system.num_audio_segments,
        image_token_id=text.vocab_size - 3,
        video_token_id=text.vocab_size - 2,
        audio_token_id=text.vocab_size - 1,
        stc_depth=1 if tiny else 4,
    )
    attention = {f"{name}_config": spec.attn for name, spec in (("vision", system.vision), ("audio", system.audio))}
    torch.manual_seed(0)
    with torch.device(device):
        model = AVLlmForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation={**attention, "text_config": "sdpa"}
        )
    model.generation_config.pad_token_id = 0
    return model.eval()


def bare_llm(model: AVLlmForConditionalGeneration) -> nn.Module:
    """The same language model as a plain causal LM, sharing the weights (no copy)."""
    with torch.device("meta"):
        bare = AutoModelForCausalLM.from_config(model.config.text_config)
    bare.model, bare.lm_head = model.model.language_model, model.lm_head
    bare.generation_config.pad_token_id = 0
    return bare.eval()


def prompt(model, system: System, batch_size: int, device, dtype) -> dict:
    """A batch of prompts with one audio-visual clip each: text, then the placeholders, then text; random media."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    text_tokens = min(system.text_tokens, config.text_config.max_position_embeddings // 8)
    before = text_tokens // 2
    text = torch.randint(3, config.text_config.vocab_size - 3, (batch_size, text_tokens), generator=generator)
    video, audio = [config.video_token_id] * config.num_video_tokens, [config.audio_token_id] * config.num_audio_tokens
    runs = torch.tensor(video + audio).expand(batch_size, -1)
    input_ids = torch.cat([text[:, :before], runs, text[:, before:]], dim=1)
    size = config.vision_config.image_size
    segment = tower_family(config.audio_config).input_shape(config.audio_config)
    pixel_values = torch.randn(batch_size, config.num_frames, 3, size, size, generator=generator)
    features = torch.randn(batch_size, config.num_audio_segments, *segment, generator=generator)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids, device=device),
        "pixel_values_videos": pixel_values.to(device, dtype),
        "input_features": features.to(device, dtype),
    }


def prefill_figures(model, bare, inputs, repeats, device) -> dict:
    """AV forward / (vision tower + audio tower + connectors + bare LLM prefill, each timed alone), and the connectors'
    share of the AV forward."""
    avllm, config = model.model, model.config
    vision, audio = tower_family(config.vision_config), tower_family(config.audio_config)
    frames = inputs["pixel_values_videos"].flatten(0, 1)
    segments = inputs["input_features"].flatten(0, 1)
    text_ids = torch.randint_like(inputs["input_ids"], 3, config.text_config.vocab_size - 3)
    with torch.inference_mode():
        features = vision.frame_features(avllm.vision_tower, frames, config.vision_feature_layer)
        summary, grid = features.pooler_output.unflatten(0, (1, -1)), features.last_hidden_state.unflatten(0, (1, -1))
        sequence = audio.segment_sequence(avllm.audio_tower, segments).last_hidden_state

        def connectors():
            avllm.video_connector(summary, grid)
            tokens = nn.functional.adaptive_avg_pool1d(sequence.transpose(1, 2), config.audio_tokens_per_segment)
            avllm.audio_projector(tokens.transpose(1, 2).reshape(1, -1, sequence.shape[-1]))

        times = best_seconds(
            {
                "av": lambda: model(**inputs, logits_to_keep=1),
                "vision": lambda: vision.frame_features(avllm.vision_tower, frames, config.vision_feature_layer),
                "audio": lambda: audio.segment_sequence(avllm.audio_tower, segments),
                "connectors": connectors,
                "llm": lambda: bare(input_ids=text_ids, attention_mask=inputs["attention_mask"], logits_to_keep=1),
            },
            repeats,
            device=device,
        )
    parts = times["vision"] + times["audio"] + times["connectors"] + times["llm"]
    print(
        "  prefill ms: AV {av:.1f} | vision {vision:.1f} audio {audio:.1f} connectors {connectors:.1f} "
        "bare LLM {llm:.1f}".format(**{name: 1000 * value for name, value in times.items()})
    )
    return {"prefill_overhead": times["av"] / parts, "connector_share": times["connectors"] / times["av"]}


def decode_figures(model, bare, inputs, compiled: bool, new_tokens, repeats, device) -> dict:
    """Ours (media prefix) / bare LLM (same-length text prefix) decode tokens/s, eager or with a static cache (which
    transformers compiles on accelerators; on the CPU `--tiny` asks for it with the `eager` backend)."""
    text_ids = torch.randint_like(inputs["input_ids"], 3, model.config.text_config.vocab_size - 3)
    settings = dict(do_sample=False)
    if compiled:
        settings["cache_implementation"] = "static"
        if device.type != "cuda":
            config = CompileConfig(backend="eager", mode=None)
            config._compile_all_devices = True
            settings["compile_config"] = config
    counters.clear()
    with torch.inference_mode():
        speeds = decode_tokens_per_second(
            {
                "ours": lambda n, processors: model.generate(
                    **inputs, max_new_tokens=n, min_new_tokens=n, logits_processor=processors, **settings
                ),
                "bare": lambda n, processors: bare.generate(
                    input_ids=text_ids, attention_mask=inputs["attention_mask"], max_new_tokens=n, min_new_tokens=n,
                    logits_processor=processors, **settings,
                ),
            },
            new_tokens,
            repeats,
            device,
        )  # fmt: skip
    mode = "static" if compiled else "eager"
    print(f"  decode {mode}: ours {speeds['ours']:.1f} tokens/s, bare {speeds['bare']:.1f} tokens/s")
    figures = {f"decode_{mode}_ratio": speeds["ours"] / speeds["bare"]}
    if compiled:
        figures["decode_static_graph_breaks"] = sum(counters["graph_break"].values())
    return figures, speeds


def hbm_floor(model, device, hbm_tbps: float | None) -> float | None:
    """Tokens/s at which reading every LLM weight once per token saturates the card's HBM bandwidth."""
    if hbm_tbps is None and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        hbm_tbps = next((value for key, value in HBM_TBPS.items() if key in name), None)
        print(f"  card: {name}, HBM {hbm_tbps} TB/s (bench/gpu_scale.py HBM_TBPS; --hbm-tbps to set it)")
    if hbm_tbps is None:
        return None
    llm = list(model.model.language_model.parameters()) + list(model.lm_head.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in llm}.values())
    print(f"  LLM weights {weight_bytes / 1e9:.2f} GB: floor {hbm_tbps * 1e12 / weight_bytes:.0f} tokens/s")
    return hbm_tbps * 1e12 / weight_bytes


def training_batch(model, system, batch_size, device, dtype) -> dict:
    batch = prompt(model, system, batch_size, device, dtype)
    labels = batch["input_ids"].clone()
    labels[labels >= model.config.text_config.vocab_size - 3] = -100
    batch["labels"] = labels
    return batch


def step_seconds(model, batch, steps: int, device) -> tuple[float, float]:
    """Median seconds of a training step (forward, backward, AdamW step) after a warm-up step, and the peak memory
    (GB) of the device."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = [best_seconds({"step": step}, 1, device=device)["step"] for _ in range(steps)]
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    return sorted(times)[len(times) // 2], peak


def training_figures(model, system, batch_size, steps, device, dtype) -> dict:
    """Stage 1 (projectors) live and from the tower cache, the towers' share of its step, then LoRA r64 with activation
    checkpointing (last: PEFT wraps the model)."""
    figures = {}
    batch = training_batch(model, system, batch_size, device, dtype)
    apply_stage(model, "pretrain")
    model.train()
    stage1, figures["stage1_peak_gb"] = step_seconds(model, batch, steps, device)
    figures["stage1_samples_per_s"] = batch_size / stage1
    avllm = model.model
    with torch.no_grad():
        towers = best_seconds(
            {
                "video": lambda: avllm.get_video_features(batch["pixel_values_videos"]),
                "audio": lambda: avllm.get_audio_features(batch["input_features"]),
            },
            steps,
            device=device,
        )
        video = avllm.get_video_features(batch["pixel_values_videos"]).connector_inputs
        audio = avllm.get_audio_features(batch["input_features"]).connector_inputs
    cached = {"video": AVLlmEncoderOutput(connector_inputs=video), "audio": AVLlmEncoderOutput(connector_inputs=audio)}
    figures["stage1_tower_share"] = (towers["video"] + towers["audio"]) / stage1
    from_cache = {key: value for key, value in batch.items() if key not in ("pixel_values_videos", "input_features")}
    cached_step, _ = step_seconds(model, {**from_cache, "mm_encoder_outputs": cached}, steps, device)
    figures["tower_cache_step_speedup"] = stage1 / cached_step
    print(
        f"  stage 1, batch {batch_size}: {stage1:.3f} s/step ({batch_size / stage1:.1f} samples/s), towers "
        f"{figures['stage1_tower_share']:.0%} of it; from the tower cache {cached_step:.3f} s/step"
    )
    from peft import get_peft_model

    lora = get_peft_model(model, apply_stage(model, "lora", lora_r=64, lora_alpha=128, lora_dropout=0.0))
    lora.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora.train()
    lora_step, figures["lora_peak_gb"] = step_seconds(lora, batch, steps, device)
    figures["lora_samples_per_s"] = batch_size / lora_step
    print(f"  LoRA r64 + activation checkpointing: {lora_step:.3f} s/step ({batch_size / lora_step:.1f} samples/s)")
    return figures


def run_system(name: str, args, device, dtype) -> dict:
    system = SYSTEMS[name]
    model = build(system, args.tiny, device, dtype)
    bare = bare_llm(model)
    inputs = prompt(model, system, 1, device, dtype)
    print(f"{name}: prompt of {inputs['input_ids'].shape[1]} tokens, {model.config.num_frames} frames")
    figures = prefill_figures(model, bare, inputs, args.repeats, device)
    eager, _ = decode_figures(model, bare, inputs, False, args.new_tokens, args.repeats, device)
    figures.update(eager)
    if name == "avllm_7b":
        if not args.skip_compiled:
            compiled, speeds = decode_figures(model, bare, inputs, True, args.new_tokens, args.repeats, device)
            figures.update(compiled)
            floor = hbm_floor(model, device, args.hbm_tbps)
            if floor is not None:
                figures["decode_static_floor_share_ours"] = speeds["ours"] / floor
                figures["decode_static_floor_share_bare"] = speeds["bare"] / floor
        if not args.skip_training:
            figures.update(training_figures(model, system, args.batch_size, args.steps, device, dtype))
    del model, bare, inputs
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (CI)")
    parser.add_argument("--systems", nargs="+", choices=sorted(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--hbm-tbps", type=float, help="the card's HBM bandwidth in TB/s (default: HBM_TBPS)")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8, help="training batch")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per setting")
    parser.add_argument("--skip-compiled", action="store_true", help="no static-cache decoding (saves the compiles)")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    if args.tiny:
        device, dtype = torch.device("cpu"), torch.float32
        args.new_tokens, args.repeats, args.steps, args.batch_size = 4, 1, 1, 2
        torch.set_num_threads(2)
    elif torch.cuda.is_available():
        device, dtype = torch.device("cuda"), torch.bfloat16
    else:
        raise SystemExit("no CUDA device: run with --tiny for the CPU smoke run")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu (tiny configs)'}")
    start = time.perf_counter()
    for name in args.systems:
        for figure, value in run_system(name, args, device, dtype).items():
            print(f"figure: scale_{name}_{figure} {value:.3f}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
