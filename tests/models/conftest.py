"""Fixtures for the model tests: a loopback Hugging Face Hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub_server import HubServer, patch_hub_env


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    """A HubServer on 127.0.0.1 that huggingface_hub talks to instead of the real Hub."""
    with HubServer() as server:
        patch_hub_env(monkeypatch, server, tmp_path)
        yield server
