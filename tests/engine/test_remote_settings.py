"""Recent remote connections: kept most recent first, one per server, never a key, and a
damaged file reads as none."""

from __future__ import annotations

import json

import pytest

from workbench.engine.remote_http import DEFAULT_TIMEOUT_S
from workbench.engine.remote_settings import (
    MAX_RECENT,
    MAX_TIMEOUT_S,
    RemoteConnection,
    load_settings,
    remember,
    set_use_remote,
    settings_path,
)


def test_recent_first_one_entry_per_server_at_most_eight() -> None:
    remember(RemoteConnection("localhost:8080", "a"))
    remember(RemoteConnection("http://other:9000/v1", "b"))
    settings = remember(RemoteConnection("http://LOCALHOST:8080/", "c", timeout_s=1e9))
    assert [(c.base_url, c.model_id) for c in settings.recent] == [
        ("http://LOCALHOST:8080/v1", "c"), ("http://other:9000/v1", "b")]
    assert settings.recent[0].timeout_s == MAX_TIMEOUT_S  # clamped
    for i in range(MAX_RECENT + 3):
        remember(RemoteConnection(f"host{i}:1", "m"))
    recent = load_settings().recent
    assert len(recent) == MAX_RECENT and recent[0].base_url == f"http://host{MAX_RECENT + 2}:1/v1"


def test_use_remote_needs_a_connection_to_go_back_to() -> None:
    assert not set_use_remote(True).use_remote  # nothing remembered yet
    remember(RemoteConnection("localhost:8080", "a"))
    assert set_use_remote(True).use_remote and load_settings().use_remote
    assert load_settings().last == RemoteConnection("http://localhost:8080/v1", "a")
    assert not set_use_remote(False).use_remote


@pytest.mark.parametrize("content", ["", "[1, 2]", "{not json", '{"recent": "x"}',
                                     '{"recent": [{"base_url": 3}, {"model_id": "m"}]}'])
def test_a_damaged_file_reads_as_no_connections(content: str) -> None:
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text(content)
    settings = load_settings()
    assert settings.recent == () and not settings.use_remote


def test_odd_entries_are_skipped_and_odd_timeouts_defaulted() -> None:
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text(json.dumps({"use_remote": True, "recent": [
        {"base_url": "  ", "model_id": "m"},
        {"base_url": "h:1", "model_id": " m ", "timeout_s": "NaN"},
        "junk"]}))
    settings = load_settings()
    assert settings.recent == (RemoteConnection("http://h:1/v1", "m", DEFAULT_TIMEOUT_S),)
    assert settings.use_remote
