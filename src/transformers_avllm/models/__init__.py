"""The model families of transformers-avllm, laid out as in transformers' `models/`."""
