"""The user's Hugging Face token, kept in the OS keyring and never in a file of ours.

Where no keyring backend exists (a headless Linux box without Secret Service, say), the
token lives in this process's memory for the session only, and `token_storage()` says so,
so the UI can tell the user it will be asked for again after a restart.
"""

from __future__ import annotations

import threading

import keyring
import keyring.errors
from keyring.backends import fail

SERVICE = "workbench"
USER = "huggingface"

_lock = threading.Lock()
_memory: str | None = None  # the fallback store, when there is no keyring
_use_memory = False  # set once a keyring call showed there is no usable backend


def _keyring_usable() -> bool:
    return not _use_memory and not isinstance(keyring.get_keyring(), fail.Keyring)


def _give_up_on_keyring() -> None:
    global _use_memory
    _use_memory = True


def token_storage() -> str:
    """"keyring" when the token is kept by the OS, "memory" when only for this session."""
    with _lock:
        return "keyring" if _keyring_usable() else "memory"


def get_token() -> str | None:
    with _lock:
        if _keyring_usable():
            try:
                return keyring.get_password(SERVICE, USER) or None
            except keyring.errors.NoKeyringError:
                _give_up_on_keyring()
            except keyring.errors.KeyringError:
                return None  # a locked or broken keyring: as if there were no token
        return _memory


def set_token(token: str) -> None:
    global _memory
    token = token.strip()
    if not token:
        delete_token()
        return
    with _lock:
        if _keyring_usable():
            try:
                keyring.set_password(SERVICE, USER, token)
                _memory = None
                return
            except (keyring.errors.NoKeyringError, keyring.errors.PasswordSetError):
                _give_up_on_keyring()
        _memory = token


def delete_token() -> None:
    global _memory
    with _lock:
        _memory = None
        if _keyring_usable():
            try:
                keyring.delete_password(SERVICE, USER)
            except keyring.errors.PasswordDeleteError:
                pass  # there was none
            except keyring.errors.NoKeyringError:
                _give_up_on_keyring()


def _reset_for_tests() -> None:
    """Forget the session fallback (tests switch keyring backends between cases)."""
    global _memory, _use_memory
    with _lock:
        _memory, _use_memory = None, False
