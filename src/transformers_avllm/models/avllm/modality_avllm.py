"""The modality vocabulary of AVLlm, defined once: the sample types, the modality tokens a prompt names them by, the
placeholder tokens the processor expands those into and their `mm_token_type_ids` codes, and how each sample type is
written as a chat content item.

A sample's type decides which towers run (AV-LLM §3.2): `visual` (frames only: `<VIS>`), `audio` (a sound, or a video
file's own audio track: `<AUD>`) or `audio_visual` (a video with its own audio track: `<AUD_VIS>`). The processor
replaces each modality token by placeholder runs, first `<image>` (an image, a one-frame video) or `<video>` for the
frames, then `<audio>` for the sound, and the model fills the placeholders with the connectors' features.
"""

import torch

VISUAL, AUDIO, AUDIO_VISUAL = "visual", "audio", "audio_visual"
SAMPLE_TYPES = (VISUAL, AUDIO, AUDIO_VISUAL)
# A row of a batch without media; `ROW_TYPES[has frames + 2 * has sound]` names what a row carries.
TEXT = "text"
ROW_TYPES = (TEXT, VISUAL, AUDIO, AUDIO_VISUAL)

# The token each sample type renders as in a prompt.
MODALITY_TOKENS = {VISUAL: "<VIS>", AUDIO: "<AUD>", AUDIO_VISUAL: "<AUD_VIS>"}

# The placeholder token of each kind of model input, and the codes of transformers' `mm_token_type_ids` (0 is text).
PLACEHOLDER_TOKENS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
TOKEN_TYPE_IDS = {TEXT: 0, "image": 1, "video": 2, "audio": 3}

# How a chat message asks for each sample type (the training format, docs/training.md): a video item without or with
# its own audio track, or an audio item (an audio file, or a video file whose track is all that is used).
CONTENT_ITEMS = {
    VISUAL: {"type": "video", "use_audio": False},
    AUDIO: {"type": "audio"},
    AUDIO_VISUAL: {"type": "video", "use_audio": True},
}


def row_type(has_frames: bool, has_sound: bool) -> str:
    """What inputs that carry frames and/or sound are: a sample type, or `"text"` for neither."""
    return ROW_TYPES[int(has_frames) + 2 * int(has_sound)]


def row_type_indices(mm_token_type_ids: torch.Tensor) -> torch.Tensor:
    """`(batch,)` indices into `ROW_TYPES` of the rows of `mm_token_type_ids` `(batch, seq)`: whether each row holds
    frame placeholders (image or video) and sound placeholders (audio)."""
    frame_codes = torch.tensor([TOKEN_TYPE_IDS["image"], TOKEN_TYPE_IDS["video"]], device=mm_token_type_ids.device)
    has_frames = torch.isin(mm_token_type_ids, frame_codes).any(dim=1)
    has_sound = (mm_token_type_ids == TOKEN_TYPE_IDS["audio"]).any(dim=1)
    return has_frames.long() + 2 * has_sound.long()


__all__ = [
    "AUDIO",
    "AUDIO_VISUAL",
    "CONTENT_ITEMS",
    "MODALITY_TOKENS",
    "PLACEHOLDER_TOKENS",
    "ROW_TYPES",
    "SAMPLE_TYPES",
    "TEXT",
    "TOKEN_TYPE_IDS",
    "VISUAL",
    "row_type",
    "row_type_indices",
]
