"""Run in a fresh Python process where `transformers_avllm` cannot be imported: load an exported folder with
`trust_remote_code=True` and print greedy generations (JSON) for a clip, as a Hub user would get them.

`AVLLM_FAKE_TRANSFORMERS_VERSION=5.22.0` makes the process report that transformers version to the remote code (to
check the version guard without installing an old release)."""

import json
import os
import sys


class _BlockPackage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "transformers_avllm":
            raise ImportError("transformers_avllm is blocked in this process")


sys.meta_path.insert(0, _BlockPackage())

from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor  # noqa: E402

# Importing from transformers may replace its lazy module in sys.modules: set and read the version there.
transformers = sys.modules["transformers"]
if os.environ.get("AVLLM_FAKE_TRANSFORMERS_VERSION"):
    transformers.__version__ = os.environ["AVLLM_FAKE_TRANSFORMERS_VERSION"]


def main(folder: str, clip: str, audio: str) -> None:
    try:
        import transformers_avllm  # noqa: F401

        raise SystemExit("transformers_avllm is importable: the check would prove nothing")
    except ImportError:
        pass
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    conversations = [
        [{"role": "user", "content": [{"type": "video", "path": clip}, {"type": "text", "text": "what is it ?"}]}],
        [{"role": "user", "content": [{"type": "audio", "path": audio}, {"type": "text", "text": "what is it ?"}]}],
    ]
    inputs = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True, return_dict=True)
    generated = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    print(
        json.dumps(
            {
                "tokens": generated.tolist(),
                "model_module": type(model).__module__,
                "processor_module": type(processor).__module__,
                "feature_extractor": type(processor.feature_extractor).__name__,
                "feature_extractor_module": type(processor.feature_extractor).__module__,
                "audio_config": type(model.config.audio_config).__name__,
                "base_class": type(base).__name__,
                "transformers": transformers.__version__,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
