"""Where the API server listens, and its optional API key.

The address lives in a small JSON file next to the app's settings; the key lives in the OS
keyring (service "workbench-serve") and never in a file of ours. As with the Hugging Face
token (workbench.models.tokens): without a keyring backend, the key is kept in this
process's memory for the session only, and `key_storage()` says so.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keyring
import keyring.errors
from keyring.backends import fail

from workbench.settings import config_dir

LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
SERVICE = "workbench-serve"
USER = "api-key"


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


@dataclass(frozen=True)
class ServerSettings:
    """Where the server listens. Off at every start: whether it runs is not stored."""

    host: str = LOOPBACK
    port: int = 0  # 0: any free port, chosen by the system when the server starts

    def problem(self) -> str | None:
        """Why these settings cannot be used, in words; None when they can."""
        if not 0 <= self.port <= 65535:
            return f"Port {self.port} is not a valid port (0–65535)."
        if self.host.lower() != "localhost":
            try:
                ipaddress.ip_address(self.host.strip("[]"))
            except ValueError:
                return f"“{self.host}” is not an IP address."
        return None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def settings_path() -> Path:
    return config_dir() / "server.json"


def load_settings(path: Path | None = None) -> ServerSettings:
    """The stored address, or the defaults (a damaged file is ignored, not fatal)."""
    try:
        data: Any = json.loads((path or settings_path()).read_text("utf-8"))
        settings = ServerSettings(host=str(data.get("host", LOOPBACK)),
                                  port=int(data.get("port", 0)))
    except (OSError, ValueError, TypeError, AttributeError):
        return ServerSettings()
    return settings if settings.problem() is None else ServerSettings()


def save_settings(settings: ServerSettings, path: Path | None = None) -> None:
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(settings), indent=2), "utf-8")


# ---------------------------------------------------------------- the API key

_lock = threading.Lock()
_memory: str | None = None  # the fallback store, when there is no keyring
_use_memory = False  # set once a keyring call showed there is no usable backend


def generate_api_key() -> str:
    return "wb-" + secrets.token_urlsafe(24)


def _keyring_usable() -> bool:
    return not _use_memory and not isinstance(keyring.get_keyring(), fail.Keyring)


def _give_up_on_keyring() -> None:
    global _use_memory
    _use_memory = True


def key_storage() -> str:
    """"keyring" when the key is kept by the OS, "memory" when only for this session."""
    with _lock:
        return "keyring" if _keyring_usable() else "memory"


def get_api_key() -> str | None:
    with _lock:
        if _keyring_usable():
            try:
                return keyring.get_password(SERVICE, USER) or None
            except keyring.errors.NoKeyringError:
                _give_up_on_keyring()
            except keyring.errors.KeyringError:
                return None  # a locked or broken keyring: as if there were no key
        return _memory


def set_api_key(key: str) -> None:
    global _memory
    key = key.strip()
    if not key:
        delete_api_key()
        return
    with _lock:
        if _keyring_usable():
            try:
                keyring.set_password(SERVICE, USER, key)
                _memory = None
                return
            except (keyring.errors.NoKeyringError, keyring.errors.PasswordSetError):
                _give_up_on_keyring()
        _memory = key


def delete_api_key() -> None:
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
        _memory = None
        _use_memory = False
