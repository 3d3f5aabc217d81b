"""Switching the EngineController between a remote server and the local engine.

Both return at once: the remote model is selected on the engine's own thread and reported
through the controller's signals (sig_loaded or sig_load_failed), like a local load.
"""

from __future__ import annotations

from workbench.engine.local import LocalEngine
from workbench.engine.protocol import EventCallback, LoadSpec
from workbench.engine.remote import RemoteEngine
from workbench.engine.remote_http import api_url
from workbench.engine.remote_keys import get_api_key
from workbench.engine.remote_settings import (
    RemoteConnection,
    load_settings,
    remember,
    set_use_remote,
)
from workbench.ui.engine_controller import EngineController


def connect_remote(controller: EngineController, conn: RemoteConnection,
                   api_key: str | None) -> None:
    """Put `controller` on the server of `conn` and select `conn.model_id` there. An
    address that cannot be used at all raises httpx's InvalidURL, and the old engine
    stays; every other failure comes as sig_load_failed."""
    url = api_url(conn.base_url)

    def make(callback: EventCallback) -> RemoteEngine:
        return RemoteEngine(callback, url, api_key or None, timeout=conn.timeout_s)

    controller.switch_engine(make)
    controller.load(LoadSpec(conn.model_id))
    # Recent first, and "on a remote server" for the next start (the key stays in the
    # keyring: the dialog put it there).
    remember(conn)
    set_use_remote(True)


def use_local(controller: EngineController) -> bool:
    """Put `controller` back on the local engine (no model: the caller loads one). False,
    and nothing changes, when it is on the local engine already."""
    set_use_remote(False)
    if not controller.is_remote:
        return False
    controller.switch_engine(LocalEngine)
    return True


def startup_connection() -> RemoteConnection | None:
    """The server to reconnect to at start: the last one, if the app was on it when it
    closed; None to start on the local engine."""
    settings = load_settings()
    return settings.last if settings.use_remote else None


def reconnect_last(controller: EngineController) -> RemoteConnection | None:
    """At start: connect to `startup_connection()` with its stored key, if there is one."""
    conn = startup_connection()
    if conn is not None:
        connect_remote(controller, conn, get_api_key(conn.base_url))
    return conn
