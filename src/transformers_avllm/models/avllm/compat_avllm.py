"""The one place where AVLlm's Hub-shipped code meets the installed transformers release.

It holds the window of transformers releases this code was tested on, checks the installed release at import (below
the floor: `AVLlmTransformersVersionError` naming both versions; above the tested ceiling: one warning), and the names
that changed inside the window: transformers 5.24 renamed the KV cache from `past_key_values` to `cache` (forward
arguments and model outputs) and added the multimodal output bases. The modeling code is written the 5.24 way; on
5.23 this file supplies the same names with the old spelling underneath. When the floor moves past 5.23, the legacy
branch below is deleted and nothing else changes.
"""

import re
from dataclasses import dataclass

import torch
import transformers
from transformers.utils import logging

logger = logging.get_logger(__name__)

# The tested window (major, minor): pyproject.toml declares `transformers>=5.23,<5.25`; a test keeps the two equal.
TRANSFORMERS_FLOOR = (5, 23)
TRANSFORMERS_TESTED_CEILING = (5, 24)


class AVLlmTransformersVersionError(ImportError):
    """The installed transformers release is older than the oldest one this model's code supports."""


def _release(version: str) -> tuple[int, int]:
    """`(major, minor)` of a version string such as `5.24.0` or `5.25.0.dev0`."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise AVLlmTransformersVersionError(f"cannot read the transformers version {version!r}")
    return int(match.group(1)), int(match.group(2))


def _spelled(release: tuple[int, int]) -> str:
    return ".".join(map(str, release))


def check_transformers_version(installed: str) -> tuple[int, int]:
    """Raises `AVLlmTransformersVersionError` below the floor, warns once above the tested ceiling; returns the
    installed `(major, minor)`."""
    release = _release(installed)
    if release < TRANSFORMERS_FLOOR:
        upper = _spelled((TRANSFORMERS_TESTED_CEILING[0], TRANSFORMERS_TESTED_CEILING[1] + 1))
        raise AVLlmTransformersVersionError(
            f"AVLlm needs transformers >= {_spelled(TRANSFORMERS_FLOOR)}, but transformers {installed} is installed; "
            f"run `pip install 'transformers>={_spelled(TRANSFORMERS_FLOOR)},<{upper}'`"
        )
    if release > TRANSFORMERS_TESTED_CEILING:
        logger.warning_once(
            f"AVLlm was tested with transformers {_spelled(TRANSFORMERS_FLOOR)} to "
            f"{_spelled(TRANSFORMERS_TESTED_CEILING)}; transformers {installed} is untested with it"
        )
    return release


INSTALLED_TRANSFORMERS = check_transformers_version(transformers.__version__)

if INSTALLED_TRANSFORMERS >= (5, 24):
    from transformers.modeling_outputs import MultimodalBaseModelOutputWithPast, MultimodalCausalLMOutputWithPast
    from transformers.utils.deprecation import deprecate_kwarg

    # The keyword the language model takes its KV cache under.
    CACHE_NAME = "cache"
    accepts_past_key_values = deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
else:  # transformers 5.23: the cache is `past_key_values`, in and out; generate() reads and passes that name.
    from transformers.cache_utils import Cache
    from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput

    CACHE_NAME = "past_key_values"

    def accepts_past_key_values(forward):
        """5.23's `generate()` passes the cache as `past_key_values`: hand it to a forward that takes `cache`."""

        def wrapped(*args, **kwargs):
            if "past_key_values" in kwargs:
                kwargs["cache"] = kwargs.pop("past_key_values")
            return forward(*args, **kwargs)

        wrapped.__wrapped__ = forward
        wrapped.__name__, wrapped.__doc__ = forward.__name__, forward.__doc__
        return wrapped

    class _CacheAliasMeta(type):
        """Wraps the `__init__` that `@dataclass` gives every output class so that it takes 5.24's `cache=` and stores
        it as 5.23's `past_key_values` (5.24 does the reverse for old remote code)."""

        def __setattr__(cls, name, value):
            if name == "__init__":
                init = value

                def __init__(self, *args, **kwargs):
                    if "cache" in kwargs:
                        kwargs["past_key_values"] = kwargs.pop("cache")
                    init(self, *args, **kwargs)

                value = __init__
            super().__setattr__(name, value)

    class _MultimodalOutput(ModelOutput, metaclass=_CacheAliasMeta):
        """Exposes the cache as `.cache`, like 5.24's outputs."""

        @property
        def cache(self) -> Cache | None:
            return self.past_key_values

        def to_tuple(self) -> tuple:
            encoders = ("image_outputs", "video_outputs", "audio_outputs")
            return tuple(self[key] if key not in encoders else self[key].to_tuple() for key in self.keys())

    @dataclass
    class MultimodalBaseModelOutputWithPast(_MultimodalOutput):
        last_hidden_state: torch.FloatTensor | None = None
        past_key_values: Cache | None = None
        hidden_states: tuple[torch.FloatTensor, ...] | None = None
        attentions: tuple[torch.FloatTensor, ...] | None = None
        image_outputs: BaseModelOutputWithPooling | None = None
        video_outputs: BaseModelOutputWithPooling | None = None
        audio_outputs: BaseModelOutputWithPooling | None = None

    @dataclass
    class MultimodalCausalLMOutputWithPast(_MultimodalOutput):
        loss: torch.FloatTensor | None = None
        logits: torch.FloatTensor | None = None
        past_key_values: Cache | None = None
        hidden_states: tuple[torch.FloatTensor, ...] | None = None
        attentions: tuple[torch.FloatTensor, ...] | None = None
        image_outputs: BaseModelOutputWithPooling | None = None
        video_outputs: BaseModelOutputWithPooling | None = None
        audio_outputs: BaseModelOutputWithPooling | None = None


__all__ = [
    "AVLlmTransformersVersionError",
    "CACHE_NAME",
    "MultimodalBaseModelOutputWithPast",
    "MultimodalCausalLMOutputWithPast",
    "TRANSFORMERS_FLOOR",
    "TRANSFORMERS_TESTED_CEILING",
    "accepts_past_key_values",
    "check_transformers_version",
]
