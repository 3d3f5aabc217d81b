"""API keys for remote servers, kept in the OS keyring (service "workbench-remote", one
entry per server address) and never in a file of ours.

As with the Hugging Face token (workbench.models.tokens): where no keyring backend exists,
keys live in this process's memory for the session only, and `key_storage()` says so.
"""

from __future__ import annotations

import threading

import keyring
import keyring.errors
from keyring.backends import fail

from workbench.engine.remote_http import api_url

SERVICE = "workbench-remote"

_lock = threading.Lock()
_memory: dict[str, str] = {}  # the fallback store, when there is no keyring
_use_memory = False  # set once a keyring call showed there is no usable backend


def key_name(base_url: str) -> str:
    """The entry a server's key is stored under: its normalised API address, so that
    "localhost:8080", "http://localhost:8080/" and ".../v1" share one key."""
    return api_url(base_url).lower()


def _keyring_usable() -> bool:
    return not _use_memory and not isinstance(keyring.get_keyring(), fail.Keyring)


def _give_up_on_keyring() -> None:
    global _use_memory
    _use_memory = True


def key_storage() -> str:
    """"keyring" when keys are kept by the OS, "memory" when only for this session."""
    with _lock:
        return "keyring" if _keyring_usable() else "memory"


def get_api_key(base_url: str) -> str | None:
    name = key_name(base_url)
    with _lock:
        if _keyring_usable():
            try:
                return keyring.get_password(SERVICE, name) or None
            except keyring.errors.NoKeyringError:
                _give_up_on_keyring()
            except keyring.errors.KeyringError:
                return None  # a locked or broken keyring: as if there were no key
        return _memory.get(name)


def set_api_key(base_url: str, key: str) -> None:
    key = key.strip()
    if not key:
        delete_api_key(base_url)
        return
    name = key_name(base_url)
    with _lock:
        if _keyring_usable():
            try:
                keyring.set_password(SERVICE, name, key)
                _memory.pop(name, None)
                return
            except (keyring.errors.NoKeyringError, keyring.errors.PasswordSetError):
                _give_up_on_keyring()
        _memory[name] = key


def delete_api_key(base_url: str) -> None:
    name = key_name(base_url)
    with _lock:
        _memory.pop(name, None)
        if _keyring_usable():
            try:
                keyring.delete_password(SERVICE, name)
            except keyring.errors.PasswordDeleteError:
                pass  # there was none
            except keyring.errors.NoKeyringError:
                _give_up_on_keyring()


def _reset_for_tests() -> None:
    """Forget the session fallback (tests switch keyring backends between cases)."""
    global _use_memory
    with _lock:
        _memory.clear()
        _use_memory = False
