"""API keys for remote servers, kept in the OS keyring (service "workbench-remote", one
entry per server address) and never in a file of ours (workbench.keystore: in memory for
the session where there is no keyring backend, and `key_storage()` says so).
"""

from __future__ import annotations

from workbench import keystore
from workbench.engine.remote_http import api_url

SERVICE = "workbench-remote"


def key_name(base_url: str) -> str:
    """The entry a server's key is stored under: its normalised API address, so that
    "localhost:8080", "http://localhost:8080/" and ".../v1" share one key."""
    return api_url(base_url).lower()


def key_storage() -> str:
    """"keyring" when keys are kept by the OS, "memory" when only for this session."""
    return keystore.storage()


def get_api_key(base_url: str) -> str | None:
    return keystore.get(SERVICE, key_name(base_url))


def set_api_key(base_url: str, key: str) -> None:
    """Keep `key` for this server; an empty one removes the stored key."""
    keystore.put(SERVICE, key_name(base_url), key)


def delete_api_key(base_url: str) -> None:
    keystore.delete(SERVICE, key_name(base_url))
