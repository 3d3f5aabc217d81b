"""The user's Hugging Face token, kept in the OS keyring and never in a file of ours
(workbench.keystore: in memory for the session where there is no keyring backend, and
`token_storage()` says so)."""

from __future__ import annotations

from workbench import keystore

SERVICE = "workbench"
USER = "huggingface"


def token_storage() -> str:
    """"keyring" when the token is kept by the OS, "memory" when only for this session."""
    return keystore.storage()


def get_token() -> str | None:
    return keystore.get(SERVICE, USER)


def set_token(token: str) -> None:
    """Keep `token`; an empty one removes the stored token."""
    keystore.put(SERVICE, USER, token)


def delete_token() -> None:
    keystore.delete(SERVICE, USER)
