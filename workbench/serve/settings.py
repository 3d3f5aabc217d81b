"""Where the API server listens, and its optional API key.

The address lives in a small JSON file next to the app's settings; the key lives in the OS
keyring (service "workbench-serve") and never in a file of ours: see workbench.keystore,
which keeps it in memory for the session where there is no keyring.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbench import keystore
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


def generate_api_key() -> str:
    return "wb-" + secrets.token_urlsafe(24)


def key_storage() -> str:
    """"keyring" when the key is kept by the OS, "memory" when only for this session."""
    return keystore.storage()


def get_api_key() -> str | None:
    return keystore.get(SERVICE, USER)


def set_api_key(key: str) -> None:
    """Keep `key`; an empty one removes the stored key."""
    keystore.put(SERVICE, USER, key)


def delete_api_key() -> None:
    keystore.delete(SERVICE, USER)
