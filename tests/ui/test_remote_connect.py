"""Connecting the window to a remote server and back: the connection dialog, what each page
shows as unavailable there, reconnecting at start, and a server that is down."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from PySide6.QtCore import Qt

from tests.engine.openai_faults import MODEL, FaultServer
from workbench.engine import remote_keys
from workbench.engine.remote_settings import (
    RemoteConnection,
    load_settings,
    remember,
    set_use_remote,
    settings_path,
)
from workbench.ui.main_window import MainWindow
from workbench.ui.remote.dialog import ConnectionDialog


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def closed_port() -> str:
    """An address where nothing listens: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def open_dialog(qtbot, window: MainWindow) -> ConnectionDialog:
    window.show_page("Server")
    qtbot.mouseClick(window.server.connect_button, Qt.MouseButton.LeftButton)
    dialog = window.connection_dialog
    assert dialog is not None and dialog.isVisible()
    return dialog


def test_test_connection_lists_models_and_connect_puts_the_chat_on_the_server(
        qtbot, fresh_window: MainWindow, faults: FaultServer) -> None:
    window = fresh_window
    dialog = open_dialog(qtbot, window)
    assert not dialog.ok_button.isEnabled()  # no model chosen yet
    dialog.url_combo.setEditText(faults.url.removesuffix("/v1"))  # /v1 is added
    qtbot.keyClicks(dialog.key_edit, "sk-test")
    with qtbot.waitSignal(dialog.sig_test_finished, timeout=10_000) as test:
        qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
    assert test.args == [True] and dialog.models() == [MODEL]
    assert "1 model" in dialog.status.text() and dialog.ok_button.isEnabled()

    with qtbot.waitSignal(window.engine.sig_loaded, timeout=10_000):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert window.engine.is_remote and window.engine.model.name == MODEL
    host = faults.url.removeprefix("http://").removesuffix("/v1")
    assert window.engine_label.text() == f"{MODEL} on {host}"
    qtbot.waitUntil(lambda: window.connection_dialog is None)
    # Remembered for the next start, the key in the keystore (never in the file).
    assert load_settings().use_remote and load_settings().last.base_url == faults.url
    assert remote_keys.get_api_key(faults.url) == "sk-test"
    assert "sk-test" not in settings_path().read_text()

    # A reply streams from the server, and the key went with the request.
    with qtbot.waitSignal(window.engine.sig_chat_done, timeout=10_000):
        assert window.chat.send("Hi")
    assert window.store.messages(window.chat.conversation_id)[-1].content == "Hello, world!"
    assert faults.bodies[-1]["model"] == MODEL
    # What the server does not report (size, context) is left out, not shown as 0.
    label = window.panel.model_label.text()
    assert f"on {faults.url}" in label and "0M params" not in label
    assert window.chat.context_meter.format() == "4 tokens (context size not reported)"


def test_what_a_server_cannot_do_is_shown_as_unavailable(
        qtbot, fresh_window: MainWindow, faults: FaultServer) -> None:
    window = fresh_window
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=10_000):
        assert window.connect_to_server(RemoteConnection(faults.url, MODEL), None)
    # Load settings are the server's.
    assert not window.panel.n_ctx.isEnabled() and not window.panel.reload_button.isEnabled()
    assert "server's settings" in window.panel.load_settings_note.text()
    # Adapters, training and PEFT import need the model on this computer.
    assert "unavailable on a remote server" in window.adapters.title.text()
    assert not window.adapters.import_button.isEnabled()
    assert not window.adapters.train.controls.isEnabled()
    assert "needs a model on this computer" in window.adapters.train.unavailable.text()
    # Compare: sampling only; model and adapter axes greyed out with the reason.
    items = window.compare.axis.model()
    enabled = {window.compare.axis.itemData(i): items.item(i).isEnabled()
               for i in range(window.compare.axis.count())}
    assert enabled == {"sampling": True, "model": False, "adapter": False}
    # The explainer's file-based demos and perplexity say why they are empty.
    assert "Unavailable for a model on a server" in window.demos.kv_text.text()
    assert "Unavailable on this server" in window.demos.ppl_view.text()
    assert not window.demos.ppl_input.isEnabled()
    # The API server shares the local engine: its switch is off and says why.
    panel = window.server.server
    assert not panel.switch.isEnabled() and not panel.start()
    assert "Unavailable while chatting with a model on a server" in panel.status.text()
    assert "Chatting with" in window.server.engine_label.text()
    assert window.server.local_button.isEnabled()
    # Nothing above raised an error notice.
    assert not [n for n in window.visible_notices() if n.level == "error"]


@pytest.mark.engine
def test_use_the_local_engine_again_loads_the_local_model(
        qtbot, fresh_window: MainWindow, faults: FaultServer) -> None:
    window = fresh_window
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=10_000):
        window.connect_to_server(RemoteConnection(faults.url, MODEL), None)
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=60_000) as loaded:
        qtbot.mouseClick(window.server.local_button, Qt.MouseButton.LeftButton)
    assert not window.engine.is_remote and window.engine.pid is not None
    assert loaded.args[0].architecture == "llama"  # the built-in model
    assert window.panel.n_ctx.isEnabled() and window.adapters.import_button.isEnabled()
    assert all(window.compare.axis.model().item(i).isEnabled() for i in range(3))
    assert window.server.server.switch.isEnabled()
    assert not load_settings().use_remote  # the next start is local


def test_a_server_that_is_down_at_start_offers_the_local_model(
        qtbot, fresh_window: MainWindow, monkeypatch: pytest.MonkeyPatch) -> None:
    window = fresh_window
    remember(RemoteConnection(closed_port(), MODEL))
    set_use_remote(True)
    with qtbot.waitSignal(window.engine.sig_load_failed, timeout=20_000):
        window.start()
    assert window.engine.is_remote
    notices = [n for n in window.visible_notices() if n.title == "Could not use the server"]
    assert len(notices) == 1 and "refused" in notices[0].text.lower()
    assert [label for label, _ in notices[0].actions] == [
        "Try again", "Use the local model", "Connect to another…"]
    # "Use the local model" goes back to the local engine (the load itself is not waited for).
    local = []
    monkeypatch.setattr(window, "start_local", lambda: local.append(True))
    window.banners["load"].buttons["Use the local model"].click()
    assert local == [True] and not window.engine.is_remote
    assert not json.loads(settings_path().read_text())["use_remote"]


def test_the_dialog_says_why_a_test_failed_and_forgets_models_when_the_key_changes(
        qtbot, fresh_window: MainWindow, faults: FaultServer) -> None:
    dialog = open_dialog(qtbot, fresh_window)
    dialog.url_combo.setEditText("http://[::1")
    assert not dialog.test_connection() and "not a usable address" in dialog.status.text()

    faults.mode = "401"
    dialog.url_combo.setEditText(faults.url)
    with qtbot.waitSignal(dialog.sig_test_finished, timeout=10_000) as test:
        dialog.test_connection()
    assert test.args == [False] and "API key" in dialog.status.text()
    assert not dialog.ok_button.isEnabled()

    faults.mode = "ok"
    with qtbot.waitSignal(dialog.sig_test_finished, timeout=10_000):
        dialog.test_connection()
    assert dialog.models() == [MODEL]
    qtbot.keyClicks(dialog.key_edit, "x")  # models listed with another key prove nothing
    assert dialog.models() == [] and not dialog.ok_button.isEnabled()
    assert "key changed" in dialog.status.text()
    dialog.reject()
    qtbot.waitUntil(lambda: fresh_window.connection_dialog is None)
    assert not fresh_window.engine.is_remote


def test_compare_by_sampling_runs_on_the_server(
        qtbot, fresh_window: MainWindow, faults: FaultServer) -> None:
    window = fresh_window
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=10_000):
        window.connect_to_server(RemoteConnection(faults.url, MODEL), None)
    window.show_page("Compare")
    page = window.compare
    page.set_axis("model")  # greyed out on a server: sampling it is
    assert page.axis_key() == "sampling"
    page.prompt.setPlainText("Name a colour.")
    with qtbot.waitSignal(window.compare_runner.sig_finished, timeout=20_000) as done:
        assert page.run()
    assert done.args == [True]
    assert [c.done.text for c in page.columns] == ["Hello, world!"] * 2
    # Both requests went to the server with the one seed; no model was loaded in between.
    # (Once the run ends, the next-token demo may ask for its distribution too: a logprobs
    # request of its own, not one of the compared replies.)
    asked = [b for b in faults.bodies if not b.get("logprobs")][-2:]
    assert [b["seed"] for b in asked] == [page.seed.value()] * 2
    assert window.engine.is_remote and window.engine.model.name == MODEL
