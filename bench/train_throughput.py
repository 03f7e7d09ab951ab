"""Training samples/s with the collator decoding media in DataLoader workers / with pre-made tensors (target >= 0.8),
and peak memory."""

import argparse
import resource
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import bench_model
from datasets import Dataset
from trl import SFTConfig

from transformers_avllm.data.media_writer import write_video
from transformers_avllm.tiny import build_processor, build_tokenizer
from transformers_avllm.training import AVLlmDataCollator, AVLlmSFTTrainer

WORDS = "what do you see and hear ? a moving square with a tone".split()


def make_rows(folder: Path, count: int) -> list[dict]:
    """`count` 3 s 320x240 clips (a moving square + a tone) and one question-answer row each."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        frames = rng.integers(0, 40, (36, 240, 320, 3), dtype=np.uint8)
        for t, frame in enumerate(frames):
            frame[100:140, 8 * t : 8 * t + 40] = (200, 40 + 5 * index, 40)
        tone = 0.3 * np.sin(2 * np.pi * (300 + 20 * index) * np.arange(48000) / 16000)
        path = write_video(folder / f"clip{index}.mp4", frames, fps=12, waveform=tone, sample_rate=16000)
        rows.append(
            {
                "id": f"clip{index}",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "video", "path": str(path)},
                            {"type": "text", "text": "what do you see and hear ?"},
                        ],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": "a moving square with a tone"}]},
                ],
            }
        )
    return rows


def samples_per_second(model, processor, dataset, collator, args) -> float:
    config = SFTConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        dataloader_num_workers=args.workers,
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=args.steps,
        save_strategy="no",
        activation_checkpointing=False,
        learning_rate=1e-4,
        disable_tqdm=True,
    )
    trainer = AVLlmSFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=processor, data_collator=collator
    )
    return trainer.train().metrics["train_samples_per_second"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)

    with tempfile.TemporaryDirectory() as folder:
        rows = make_rows(Path(folder), args.samples)
        model = bench_model()
        processor = build_processor(model.config, build_tokenizer([" ".join(WORDS)], vocab_size=4096))
        collator = AVLlmDataCollator(processor)
        cache = [collator.encode(row) for row in rows]

        def pre_made(examples):
            return collator.pad([cache[example["index"]] for example in examples])

        pre_made_rate = samples_per_second(
            model, processor, Dataset.from_list([{"index": i} for i in range(len(rows))]), pre_made, args
        )
        collator_rate = samples_per_second(model, processor, Dataset.from_list(rows), collator, args)
    peak_main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"{args.samples} clips (3 s, 320x240, h264 + aac), batch {args.batch_size}, {args.steps} steps, "
        f"{args.workers} DataLoader workers, {model.config.num_frames} frames + {model.config.num_audio_segments} "
        "audio segments per sample"
    )
    print(f"pre-made tensors   {pre_made_rate:6.2f} samples/s")
    print(f"collator decoding  {collator_rate:6.2f} samples/s")
    print(f"peak RSS: main {peak_main:.0f} MB, largest worker {peak_workers:.0f} MB")
    print(f"figure: train_throughput_ratio {collator_rate / pre_made_rate:.3f}")
    print(f"figure: train_peak_rss_mb {peak_main:.0f}")


if __name__ == "__main__":
    main()
