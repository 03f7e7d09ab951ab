"""Talking to an audio-visual LLM about clips, turn after turn: `ChatSession`, the engine of `avllm chat` and `avllm
web`.

Flat and self-contained (torch, transformers and the standard library), so that a Hugging Face Space made by `avllm
export --space` runs it beside the model's own remote code, without this package.

A session keeps the conversation as chat messages, each attachment's processed media tensors (decoded once, when it is
attached), and the KV cache of the turns so far. Each turn re-renders the whole conversation with the processor's chat
template, tokenizes it (text only: every placeholder run comes from its attachment), and hands `generate()` the cache:
`generate()` runs the model only on the tokens the cache does not hold yet, and the media whose placeholders lie there
(transformers' cache continuation). Where the re-rendered prompt departs from what the cache holds (a template that
renders an answer differently from the generated tokens), the cache is cropped back to the common prefix; a cache
that cannot be cropped is dropped and the prompt, with every attachment's tensors, is encoded anew.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    DynamicCache,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

MEDIA_KINDS = ("video", "audio", "image")
MEDIA_INPUTS = ("pixel_values", "pixel_values_videos", "input_features")
# `mm_token_type_ids` values (the processor's): 0 text, 1 image, 2 video, 3 audio placeholder.
AUDIO_PLACEHOLDER = 3


@dataclass
class Attachment:
    """A media file attached to the conversation, processed once.

    `marker` is the modality token it renders as (`<AUD_VIS>`, `<VIS>` or `<AUD>`), `placeholders` the token ids of
    the placeholder run that replaces the marker (`(n,)`, their `mm_token_type_ids` in `placeholder_types`), `inputs`
    its media tensors (`pixel_values_videos (1, T, 3, H, W)`, `pixel_values (1, 3, H, W)`, `input_features (1, K,
    ...)`) and `note` what the user should know about it."""

    kind: str
    path: str
    marker: str
    placeholders: torch.Tensor
    placeholder_types: torch.Tensor
    inputs: dict[str, torch.Tensor]
    note: str = ""

    @property
    def use_audio(self) -> bool:
        return self.kind == "video" and bool((self.placeholder_types == AUDIO_PLACEHOLDER).any())

    def content(self) -> dict:
        """The chat-message content item the processor renders as `marker`."""
        item = {"type": self.kind, "path": self.path}
        if self.kind == "video":
            item["use_audio"] = self.use_audio
        return item

    def describe(self) -> str:
        return f"{self.kind} {self.path} -> {self.marker}" + (f" ({self.note})" if self.note else "")


@dataclass
class ChatSession:
    """A multi-turn conversation with an AVLlm model about attached videos, audio clips and images.

    `attach()` decodes a file right away (a bad one raises one of `input_errors`, the processor's `MediaError` or a
    `ValueError`, and leaves the session as it was); the attachments go with the next question. `stream(question)`
    yields the answer's text as it is generated; `ask(question)` returns it whole. Greedy decoding unless
    `generation_kwargs` say otherwise."""

    model: torch.nn.Module
    processor: object
    max_new_tokens: int = 128
    generation_kwargs: dict = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list, init=False)
    attachments: list[Attachment] = field(default_factory=list, init=False)
    pending: list[Attachment] = field(default_factory=list, init=False)
    reused_tokens: int = field(default=0, init=False)  # prompt tokens of the last turn taken from the cache

    def __post_init__(self):
        self.model.eval()
        # The modality tokens and media errors, from the processor's own modules (this package's, or the remote code's
        # in a Space).
        processing = inspect.getmodule(type(self.processor))
        media = importlib.import_module(".media_avllm", processing.__package__)
        self._marker_pattern = processing.MODALITY_TOKEN_PATTERN
        self._visual_token = processing.MODALITY_TOKENS["visual"]
        # generate()'s keyword for a cache to continue from, as the model's own compat_avllm.py names it (transformers
        # 5.24 `cache`, 5.23 `past_key_values`); the modeling module imports it from there.
        self._cache_keyword = inspect.getmodule(type(self.model)).CACHE_NAME
        # What a user's file or request can go wrong with: the processor's `MediaError` (this package's, or the remote
        # code's in a Space) and `ValueError` (e.g. a modality the model has no tower for).
        self.input_errors = (media.MediaError, ValueError)
        self.reset()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        dtype: str = "auto",
        device: str | None = None,
        trust_remote_code: bool = False,
        **kwargs,
    ):
        """Loads a saved or exported AVLlm model (a folder or a Hub id) and its processor through the Auto classes:
        this package's classes once `transformers_avllm` is imported, the folder's own code with
        `trust_remote_code=True`. `device` defaults to CUDA when available; `kwargs` go to the session."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        loading = {"trust_remote_code": trust_remote_code}
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=dtype, **loading).to(device)
        return cls(model, AutoProcessor.from_pretrained(name_or_path, **loading), **kwargs)

    # ---- the conversation ------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forgets the conversation, the attachments and the cache."""
        self.messages, self.attachments, self.pending = [], [], []
        self._drop_cache()

    def _drop_cache(self) -> None:
        """An empty cache (laid out for the LLM's layers: sliding-window ones included); `_cached_ids`: the tokens it
        holds."""
        self._cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        self._cached_ids = torch.zeros(0, dtype=torch.long)

    def attach(self, kind: str, path: str, use_audio: bool = True) -> Attachment:
        """Decodes `path` as a `kind` ("video", "audio" or "image") for the next question. A video renders as
        `<AUD_VIS>` (frames + its own audio track), or `<VIS>` with `use_audio=False` or when the file has no audio
        track. Raises `MediaError` (the file) or `ValueError` (a modality this model lacks)."""
        if kind not in MEDIA_KINDS:
            raise ValueError(f"unknown media kind {kind!r}; one of {MEDIA_KINDS}")
        item = {"type": kind, "path": str(path)}
        if kind == "video":
            item["use_audio"] = use_audio
        conversation = [{"role": "user", "content": [item]}]
        _, (resolved,) = self.processor.resolve_conversation(conversation, missing_audio="visual_only")
        note = ""
        if kind == "video":
            note = "no audio track: video only" if use_audio and not resolved.use_audio else ""
            item["use_audio"] = resolved.use_audio
        encoded = self.processor.apply_chat_template(conversation, tokenize=True, return_dict=True)
        types = encoded["mm_token_type_ids"][0]
        attachment = Attachment(
            kind,
            str(path),
            resolved.marker,
            encoded["input_ids"][0][types != 0],
            types[types != 0],
            {key: encoded[key] for key in MEDIA_INPUTS if key in encoded},
            note,
        )
        self.pending.append(attachment)
        return attachment

    def mute(self) -> Attachment | None:
        """Uses the last attached, not yet asked-about video without its audio track (`<VIS>`); None without one."""
        video = next((item for item in reversed(self.pending) if item.kind == "video" and item.use_audio), None)
        if video is not None:
            keep = video.placeholder_types != AUDIO_PLACEHOLDER
            video.placeholders, video.placeholder_types = video.placeholders[keep], video.placeholder_types[keep]
            video.inputs.pop("input_features")
            video.marker, video.note = self._visual_token, "muted"
        return video

    def ask(self, question: str) -> str:
        """The whole answer to `question` (with the pending attachments)."""
        return "".join(self.stream(question))

    def stream(self, question: str) -> Iterator[str]:
        """Asks `question` about the pending attachments (and everything before) and yields the answer as it is
        generated (transformers' `TextIteratorStreamer`, `generate()` in a thread)."""
        content = [attachment.content() for attachment in self.pending] + [{"type": "text", "text": question}]
        messages = self.messages + [{"role": "user", "content": content}]
        attachments = self.attachments + self.pending
        inputs, prefix = self._inputs(messages, attachments)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop, result = threading.Event(), {}

        def generate():
            try:
                result["sequences"] = self.model.generate(
                    **inputs,
                    **{self._cache_keyword: self._cache},
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Stop(stop)]),
                    max_new_tokens=self.max_new_tokens,
                    **{"do_sample": False, **self.generation_kwargs},
                )
            except BaseException as err:  # handed to the caller once the streamer is closed
                result["error"] = err
                streamer.end()

        worker = threading.Thread(target=generate, name="avllm-chat-generate", daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:  # also when the caller stops reading (Ctrl-C, a closed web page): the turn is not recorded
            stop.set()
            worker.join()
            if "sequences" in result:
                self._cached_ids = result["sequences"][0, : self._cache.get_seq_length()].cpu()
            else:
                self._drop_cache()
        if "error" in result:
            raise result["error"]
        answer = self.processor.decode(
            result["sequences"][0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        ).strip()
        self.messages = messages + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        self.attachments, self.pending, self.reused_tokens = attachments, [], prefix

    # ---- model inputs ----------------------------------------------------------------------------------------------

    def _inputs(self, messages: list[dict], attachments: list[Attachment]) -> tuple[dict, int]:
        """Model inputs for the whole conversation, with only the media of attachments the cache does not hold; crops
        (or drops) the cache to the prefix it shares with the new prompt. Returns the inputs and that prefix length."""
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        markers = self._marker_pattern.findall(prompt)
        if markers != [attachment.marker for attachment in attachments]:
            raise ValueError(
                f"the chat template rendered the modality tokens {markers} for the attachments "
                f"{[attachment.marker for attachment in attachments]}"
            )
        in_order = iter(attachments)
        expanded = self._marker_pattern.sub(
            lambda _: "".join(self.processor.tokenizer.convert_ids_to_tokens(next(in_order).placeholders.tolist())),
            prompt,
        )
        input_ids = self.processor.tokenizer(expanded, return_tensors="pt")["input_ids"]
        types = torch.as_tensor(self.processor.create_mm_token_type_ids(input_ids))
        runs = self._runs(types[0], attachments)
        prefix = self._reuse_cache(input_ids[0], runs)
        fresh = [attachment for attachment, (start, _) in zip(attachments, runs, strict=True) if start >= prefix]
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "mm_token_type_ids": types}
        for key in MEDIA_INPUTS:
            tensors = [attachment.inputs[key] for attachment in fresh if key in attachment.inputs]
            if tensors:
                inputs[key] = torch.cat(tensors).to(self.model.dtype)
        return {key: value.to(self.model.device) for key, value in inputs.items()}, prefix

    @staticmethod
    def _runs(types: torch.Tensor, attachments: list[Attachment]) -> list[tuple[int, int]]:
        """`(start, end)` of each attachment's placeholder run in the prompt (the runs come in attachment order)."""
        positions = (types != 0).nonzero().flatten().tolist()
        runs, offset = [], 0
        for attachment in attachments:
            runs.append((positions[offset], positions[offset] + len(attachment.placeholders)))
            offset += len(attachment.placeholders)
        return runs

    def _reuse_cache(self, input_ids: torch.Tensor, runs: list[tuple[int, int]]) -> int:
        """Crops the cache to the longest prefix of the prompt it holds (never inside a placeholder run, and at least
        one token short of the prompt) and returns that prefix's length; drops a cache that cannot be cropped."""
        cached = self._cached_ids
        length = min(len(cached), len(input_ids) - 1)
        differs = (cached[:length] != input_ids[:length]).nonzero()
        prefix = int(differs[0]) if len(differs) else length
        prefix = next((start for start, end in runs if start < prefix < end), prefix)
        if prefix < len(cached):
            if not self._cache.is_croppable:
                self._drop_cache()
                return 0
            self._cache.crop(prefix - len(cached))
        self._cached_ids = cached[:prefix]
        return prefix


class _Stop(StoppingCriteria):
    """Ends generation once `event` is set (the reader of the stream went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), device=input_ids.device)
