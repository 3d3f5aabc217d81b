"""Recent connections to remote servers, and whether the app was last on one.

Kept in config_dir()/remote.json, most recent first. API keys are never written here:
they live in the OS keyring (workbench.engine.remote_keys). A damaged or foreign file
reads as "no recent connections", never as an error.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from workbench.engine.remote_http import DEFAULT_TIMEOUT_S, api_url
from workbench.settings import config_dir

MAX_RECENT = 8
MIN_TIMEOUT_S = 1.0
MAX_TIMEOUT_S = 3600.0
VERSION = 1


@dataclass(frozen=True)
class RemoteConnection:
    """A server and the model chosen on it. `timeout_s`: how long the server may stay
    silent before a request fails (RemoteEngine's `timeout`)."""

    base_url: str
    model_id: str
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def key(self) -> str:
        """What makes two connections the same server (an address typed either way)."""
        return normalised_url(self.base_url).lower()


@dataclass(frozen=True)
class RemoteSettings:
    recent: tuple[RemoteConnection, ...] = ()
    # True while the app is on a remote server: the next start reconnects to recent[0].
    use_remote: bool = False

    @property
    def last(self) -> RemoteConnection | None:
        return self.recent[0] if self.recent else None


def normalised_url(base_url: str) -> str:
    """The API root for `base_url` ("localhost:8080" -> "http://localhost:8080/v1"); the
    text as typed (stripped) when it is not a usable address."""
    try:
        return api_url(base_url)
    except Exception:  # httpx's InvalidURL and friends: keep what the user wrote
        return base_url.strip()


def settings_path() -> Path:
    return config_dir() / "remote.json"


def clean_timeout(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return DEFAULT_TIMEOUT_S
    if not math.isfinite(seconds):
        return DEFAULT_TIMEOUT_S
    return min(max(seconds, MIN_TIMEOUT_S), MAX_TIMEOUT_S)


def _connection_from(data: Any) -> RemoteConnection | None:
    if not isinstance(data, dict):
        return None
    url, model = data.get("base_url"), data.get("model_id")
    if not isinstance(url, str) or not url.strip() or not isinstance(model, str):
        return None
    return RemoteConnection(normalised_url(url), model.strip(),
                            clean_timeout(data.get("timeout_s", DEFAULT_TIMEOUT_S)))


def _deduplicated(connections: list[RemoteConnection]) -> tuple[RemoteConnection, ...]:
    seen: set[str] = set()
    kept: list[RemoteConnection] = []
    for conn in connections:
        if conn.key not in seen:
            seen.add(conn.key)
            kept.append(conn)
    return tuple(kept[:MAX_RECENT])


def load_settings(path: Path | None = None) -> RemoteSettings:
    """What is stored, or the defaults; entries that do not make sense are skipped."""
    try:
        data: Any = json.loads((path or settings_path()).read_text("utf-8"))
    except (OSError, ValueError):
        return RemoteSettings()
    if not isinstance(data, dict):
        return RemoteSettings()
    entries = data.get("recent")
    recent = _deduplicated([c for e in (entries if isinstance(entries, list) else [])
                            if (c := _connection_from(e)) is not None])
    return RemoteSettings(recent, use_remote=data.get("use_remote") is True and bool(recent))


def save_settings(settings: RemoteSettings, path: Path | None = None) -> None:
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": VERSION, "use_remote": settings.use_remote,
            "recent": [{"base_url": c.base_url, "model_id": c.model_id,
                        "timeout_s": c.timeout_s} for c in settings.recent[:MAX_RECENT]]}
    # Written aside and renamed: a crash mid-write leaves the old file, not half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), "utf-8")
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def load_recent(path: Path | None = None) -> list[RemoteConnection]:
    return list(load_settings(path).recent)


def remember(conn: RemoteConnection, path: Path | None = None) -> RemoteSettings:
    """Put `conn` first (replacing an older entry for the same server), keep 8."""
    conn = RemoteConnection(normalised_url(conn.base_url), conn.model_id.strip(),
                            clean_timeout(conn.timeout_s))
    current = load_settings(path)
    settings = replace(current, recent=_deduplicated([conn, *current.recent]))
    save_settings(settings, path)
    return settings


def set_use_remote(use_remote: bool, path: Path | None = None) -> RemoteSettings:
    """Record whether the app is on a remote server now (for the next start)."""
    current = load_settings(path)
    settings = replace(current, use_remote=use_remote and bool(current.recent))
    if settings != current:
        save_settings(settings, path)
    return settings
