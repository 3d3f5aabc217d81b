"""Secrets (the Hugging Face token, API keys) kept in the OS keyring, never in a file of ours.

Where no keyring backend exists (a headless Linux box without Secret Service, say), a
secret lives in this process's memory for the session only, and `storage()` says so, so
the UI can tell the user it will be asked for again after a restart. One store serves
every kind of secret; each kind is a keyring service, each entry a name within it.
"""

from __future__ import annotations

import threading

import keyring
import keyring.errors
from keyring.backends import fail

_lock = threading.Lock()
_memory: dict[tuple[str, str], str] = {}  # the fallback store, when there is no keyring
_use_memory = False  # set once a keyring call showed there is no usable backend


def _keyring_usable() -> bool:
    return not _use_memory and not isinstance(keyring.get_keyring(), fail.Keyring)


def _give_up_on_keyring() -> None:
    global _use_memory
    _use_memory = True


def storage() -> str:
    """"keyring" when secrets are kept by the OS, "memory" when only for this session."""
    with _lock:
        return "keyring" if _keyring_usable() else "memory"


def get(service: str, name: str) -> str | None:
    with _lock:
        if _keyring_usable():
            try:
                return keyring.get_password(service, name) or None
            except keyring.errors.NoKeyringError:
                _give_up_on_keyring()
            except keyring.errors.KeyringError:
                return None  # a locked or broken keyring: as if there were no secret
        return _memory.get((service, name))


def put(service: str, name: str, secret: str) -> None:
    """Keep `secret` (stripped); an empty one deletes the entry."""
    secret = secret.strip()
    if not secret:
        delete(service, name)
        return
    with _lock:
        if _keyring_usable():
            try:
                keyring.set_password(service, name, secret)
                _memory.pop((service, name), None)
                return
            except (keyring.errors.NoKeyringError, keyring.errors.PasswordSetError):
                _give_up_on_keyring()
        _memory[(service, name)] = secret


def delete(service: str, name: str) -> None:
    with _lock:
        _memory.pop((service, name), None)
        if _keyring_usable():
            try:
                keyring.delete_password(service, name)
            except keyring.errors.PasswordDeleteError:
                pass  # there was none
            except keyring.errors.NoKeyringError:
                _give_up_on_keyring()


def reset() -> None:
    """Forget the session fallback and retry the keyring (tests switch backends)."""
    global _use_memory
    with _lock:
        _memory.clear()
        _use_memory = False
