"""Shared fixtures. Every test gets its own WORKBENCH_HOME, so settings, conversations
and window state never touch the user's real files, and a keyring of its own (none, unless
it asks for `memory_keyring`), so no test reads or writes the user's real keyring and no
test depends on whether the machine has one."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.errors import PasswordDeleteError

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Optional extras and the modules each brings. A test that needs one is marked with its
# name (`@pytest.mark.train`) and skips without it, saying which extra and how to add it;
# WORKBENCH_REQUIRE_EXTRAS=train (CI, after installing it) turns a missing one into an
# error, so a broken install cannot pass as a run of skips.
EXTRAS = {"train": ("torch", "transformers", "peft")}


def missing_extra(extra: str) -> list[str]:
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def extra_skip_reason(extra: str) -> str:
    return (f"needs the optional {extra} extra ({', '.join(EXTRAS[extra])}): "
            f"make test WORKBENCH_EXTRAS={extra}")


def pytest_configure(config: pytest.Config) -> None:
    required = [e for e in os.environ.get("WORKBENCH_REQUIRE_EXTRAS", "").split(",") if e]
    for extra in required:
        if extra not in EXTRAS:
            raise pytest.UsageError(f"WORKBENCH_REQUIRE_EXTRAS: no extra named {extra!r}")
        if missing := missing_extra(extra):
            raise pytest.UsageError(f"WORKBENCH_REQUIRE_EXTRAS={extra}, but "
                                    f"{', '.join(missing)} cannot be imported")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for extra in EXTRAS:
        if not missing_extra(extra):
            continue
        skip = pytest.mark.skip(reason=extra_skip_reason(extra))
        for item in items:
            if item.get_closest_marker(extra) is not None:
                item.add_marker(skip)


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


class MemoryKeyring(KeyringBackend):
    """An OS keyring, in memory."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.store.pop((service, username), None) is None:
            raise PasswordDeleteError("no such password")


def _use_keyring(backend: KeyringBackend) -> None:
    from workbench import keystore

    keyring.set_keyring(backend)
    keystore.reset()


@pytest.fixture(autouse=True)
def no_keyring() -> Iterator[None]:
    """Every test starts on a machine without a keyring: secrets stay in memory."""
    previous = keyring.get_keyring()
    _use_keyring(fail.Keyring())
    yield
    _use_keyring(previous)


@pytest.fixture
def memory_keyring(no_keyring: None) -> MemoryKeyring:
    """A working OS keyring for this test, in memory."""
    backend = MemoryKeyring()
    _use_keyring(backend)
    return backend


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
