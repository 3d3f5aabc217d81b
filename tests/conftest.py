"""Shared fixtures. Every test gets its own WORKBENCH_HOME, so settings, conversations
and window state never touch the user's real files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def workbench_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    # The Hugging Face cache too: the Library scans it, downloads land in it.
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return home


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator:
    """A loopback Hub on 127.0.0.1 that huggingface_hub talks to instead of the real one."""
    from workbench.bench.hub_server import HubServer, patch_hub_env

    with HubServer() as server:
        patch_hub_env(monkeypatch, server, tmp_path)
        yield server


@pytest.fixture(scope="session")
def builtin_model() -> Path:
    from workbench.models.builtin import builtin_model_path

    return builtin_model_path()


@pytest.fixture(scope="module")
def engine(builtin_model: Path) -> Iterator:
    """A real engine process with the built-in model, shared by a module's tests."""
    from workbench.engine.blocking import BlockingEngine
    from workbench.engine.protocol import LoadSpec

    with BlockingEngine() as blocking:
        blocking.load(LoadSpec(str(builtin_model), n_ctx=2048))
        yield blocking
