"""Random model inputs for the tests and the benchmarks: rows of given modalities with a config's placeholders."""

import torch

from transformers_avllm.models.avllm import AVLlmConfig, tower_family


def random_rows(config: AVLlmConfig, modalities: list[str], text_lengths=None, seed: int = 0, padding_side="right"):
    """Model inputs for rows of the given modalities ("text", "image", "video", "audio", "av" = video + audio, "all" =
    video + image + audio): a few random text tokens, then the row's placeholders, then more text; padded with
    `pad_token_id` on `padding_side`.

    Returns (batch dict, list of per-row dicts holding the same row alone, unpadded).
    """
    generator = torch.Generator().manual_seed(seed)
    text_lengths = text_lengths or [3 + 2 * i for i in range(len(modalities))]
    rows = []
    for modality, length in zip(modalities, text_lengths, strict=True):
        row = {}
        placeholders = []
        if modality in ("video", "av", "all"):
            size = config.vision_config.image_size
            row["pixel_values_videos"] = torch.randn(1, config.num_frames, 3, size, size, generator=generator)
            placeholders += [config.video_token_id] * config.num_video_tokens
        if modality in ("image", "all"):
            size = config.vision_config.image_size
            row["pixel_values"] = torch.randn(1, 3, size, size, generator=generator)
            placeholders += [config.image_token_id] * config.num_image_tokens
        if modality in ("audio", "av", "all"):
            segment_shape = tower_family(config.audio_config).input_shape(config.audio_config)
            row["input_features"] = torch.randn(1, config.num_audio_segments, *segment_shape, generator=generator)
            placeholders += [config.audio_token_id] * config.num_audio_tokens
        prefix = torch.randint(3, 100, (length,), generator=generator).tolist()
        suffix = torch.randint(3, 100, (2,), generator=generator).tolist()
        ids = torch.tensor([[1] + prefix + placeholders + suffix])
        row["input_ids"], row["attention_mask"] = ids, torch.ones_like(ids)
        rows.append(row)
    width = max(row["input_ids"].shape[1] for row in rows)
    batch = {"input_ids": [], "attention_mask": []}
    for row in rows:
        pad = width - row["input_ids"].shape[1]
        pad_ids, pad_mask = torch.zeros(1, pad, dtype=torch.long), torch.zeros(1, pad, dtype=torch.long)
        parts = [(pad_ids, pad_mask), (row["input_ids"], row["attention_mask"])]
        if padding_side == "right":
            parts.reverse()
        batch["input_ids"].append(torch.cat([parts[0][0], parts[1][0]], dim=1))
        batch["attention_mask"].append(torch.cat([parts[0][1], parts[1][1]], dim=1))
    batch = {key: torch.cat(value) for key, value in batch.items()}
    for key in ("pixel_values_videos", "pixel_values", "input_features"):
        tensors = [row[key] for row in rows if key in row]
        if tensors:
            batch[key] = torch.cat(tensors)
    return batch, rows
