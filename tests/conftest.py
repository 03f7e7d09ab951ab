"""Fixtures shared by several test modules."""

import pytest
from chat_model import train_chat_model


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory):
    """A small model trained on the synthetic task for chatting, exported as a Hub folder (`chat_model.ChatModel`)."""
    return train_chat_model(tmp_path_factory.mktemp("chat-model"))
