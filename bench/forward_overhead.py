"""AV forward time / (vision tower + audio tower + bare LLM forward on the same sequence length). Target <= 1.05."""

import torch
from common import av_inputs, bare_llm, bench_model, best_seconds

from transformers_avllm.models.avllm import tower_family


def main():
    torch.set_num_threads(2)
    model = bench_model()
    llm = bare_llm(model)
    inputs = av_inputs(model)
    frames = inputs["pixel_values_videos"].flatten(0, 1)
    segments = inputs["input_features"].flatten(0, 1)
    text_ids = torch.randint(3, 4000, inputs["input_ids"].shape)

    vision, audio = tower_family(model.config.vision_config), tower_family(model.config.audio_config)
    with torch.inference_mode():
        times = best_seconds(
            {
                "av": lambda: model(**inputs),
                "vision": lambda: vision.frame_features(model.model.vision_tower, frames, -2),
                "audio": lambda: audio.segment_sequence(model.model.audio_tower, segments),
                "llm": lambda: llm(input_ids=text_ids, attention_mask=inputs["attention_mask"]),
            }
        )
    av_time, vision_time, audio_time, llm_time = times["av"], times["vision"], times["audio"], times["llm"]
    parts = vision_time + audio_time + llm_time
    print(f"sequence length {inputs['input_ids'].shape[1]}, batch {inputs['input_ids'].shape[0]}")
    print(f"AV forward      {av_time * 1000:8.1f} ms")
    print(f"vision tower    {vision_time * 1000:8.1f} ms")
    print(f"audio tower     {audio_time * 1000:8.1f} ms")
    print(f"bare LLM        {llm_time * 1000:8.1f} ms")
    print(f"figure: forward_overhead {av_time / parts:.3f}")


if __name__ == "__main__":
    main()
