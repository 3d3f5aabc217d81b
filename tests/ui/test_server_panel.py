"""The API server switch in the GUI: one engine shared by the chat and the server, with a
real engine and the built-in model. HTTP clients run on their own threads: the server's
requests need the Qt event loop, which the test keeps running with qtbot.waitUntil."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from PySide6.QtCore import Qt

from tests.serve.http_client import error_of, request
from workbench.engine.protocol import ChatMessage, LoadSpec, Sampling
from workbench.serve import settings as serve_settings
from workbench.ui import notify
from workbench.ui.engine_controller import EngineController
from workbench.ui.serve.backend import OWNER
from workbench.ui.serve.panel import ServerPanel

pytestmark = pytest.mark.engine
ASK = [{"role": "user", "content": "List three colours of the rainbow."}]


@pytest.fixture
def controller(qtbot, builtin_model: Path) -> Iterator[EngineController]:
    controller = EngineController()
    with qtbot.waitSignal(controller.sig_loaded, timeout=60_000):
        # One thread: llama.cpp's spinning thread pool crawls on a crowded CPU.
        controller.load(LoadSpec(str(builtin_model), n_ctx=2048, n_threads=1))
    yield controller
    controller.close()


@pytest.fixture
def panel(qtbot, controller: EngineController) -> Iterator[ServerPanel]:
    panel = ServerPanel(controller)
    qtbot.addWidget(panel)
    yield panel
    panel.shutdown()


@pytest.fixture
def notices() -> Iterator[list[notify.Notice]]:
    seen: list[notify.Notice] = []
    notify.hub().sig_notice.connect(seen.append)
    yield seen
    notify.hub().sig_notice.disconnect(seen.append)


def in_thread(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run a client call off the GUI thread; the dict gets "result" or "error", "done"."""
    box: dict[str, Any] = {"done": False}

    def run() -> None:
        try:
            box["result"] = fn()
        except Exception as exc:
            box["error"] = exc
        box["done"] = True

    threading.Thread(target=run, daemon=True).start()
    return box


def client_for(panel: ServerPanel, key: str = "unused") -> openai.OpenAI:
    assert panel.server is not None
    return openai.OpenAI(base_url=panel.server.url, api_key=key, max_retries=0, timeout=60)


def streamed(client: openai.OpenAI, model: str, max_tokens: int) -> str:
    stream = client.chat.completions.create(model=model, messages=ASK, temperature=0,
                                            max_tokens=max_tokens, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_the_switch_serves_the_loaded_model(qtbot, panel: ServerPanel) -> None:
    assert not panel.switch.isChecked() and panel.server is None  # off by default
    assert panel.status.text() == "Off."
    panel.switch.setChecked(True)
    assert panel.running
    url = panel.url.text()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    assert "Serving SmolLM2-135M-Instruct.Q4_1 at " + url in panel.status.text()
    assert "curl " + url + "/chat/completions" in panel.example.toPlainText()
    box = in_thread(lambda: [m.id for m in client_for(panel).models.list()])
    qtbot.waitUntil(lambda: box["done"], timeout=10_000)
    assert box["result"] == ["SmolLM2-135M-Instruct.Q4_1"]
    panel.switch.setChecked(False)
    assert panel.server is None and panel.status.text() == "Off."
    with pytest.raises(OSError):
        request(url + "/models", timeout=5)


def test_a_request_streams_and_holds_the_engine_meanwhile(qtbot, panel: ServerPanel,
                                                          controller: EngineController
                                                          ) -> None:
    panel.start()
    model = panel.queue.model_id or ""
    owners: list[str | None] = []
    controller.sig_token.connect(lambda *_: owners.append(controller.owner))
    box = in_thread(lambda: streamed(client_for(panel), model, 12))
    qtbot.waitUntil(lambda: box["done"], timeout=60_000)
    assert box.get("error") is None and box["result"].strip()
    assert owners and set(owners) == {OWNER}  # the chat page refuses to send meanwhile
    qtbot.waitUntil(lambda: controller.owner is None and controller.state == "ready")
    assert "1 request served" in panel.status.text() and "idle" in panel.status.text()


def test_a_request_waits_for_the_chats_reply(qtbot, panel: ServerPanel,
                                             controller: EngineController) -> None:
    panel.start()
    model = panel.queue.model_id or ""
    order: list[str] = []
    ui_rid = controller.chat([ChatMessage("user", "Tell me about the sea.")],
                             Sampling(temperature=0.0, max_tokens=24))
    controller.sig_chat_done.connect(
        lambda done: order.append("ui done" if done.request_id == ui_rid else "api done"))
    panel.queue.sig_busy_changed.connect(lambda busy: order.append(f"api busy {busy}"))
    box = in_thread(lambda: streamed(client_for(panel), model, 6))
    qtbot.waitUntil(lambda: panel.queue.waiting == 1, timeout=10_000)
    assert controller.owner is None and controller.state == "busy"  # the chat's reply runs
    assert "waiting for the chat" in panel.status.text()
    qtbot.waitUntil(lambda: box["done"], timeout=60_000)
    assert box.get("error") is None and box["result"].strip()
    # The chat's reply finished before the server's request started.
    assert order[:2] == ["ui done", "api busy True"] and "api done" in order
    qtbot.waitUntil(lambda: controller.owner is None)


def test_stopping_the_server_cancels_its_reply(qtbot, panel: ServerPanel,
                                               controller: EngineController) -> None:
    panel.start()
    model = panel.queue.model_id or ""
    box = in_thread(lambda: streamed(client_for(panel), model, 1500))
    qtbot.waitUntil(lambda: panel.queue.busy, timeout=20_000)
    panel.stop()  # what the main window's closeEvent does
    qtbot.waitUntil(lambda: controller.state == "ready" and controller.owner is None,
                    timeout=10_000)
    qtbot.waitUntil(lambda: box["done"], timeout=10_000)
    assert not panel.queue.busy and panel.queue.served == 0


def test_serving_to_the_network_needs_confirmation(qtbot, panel: ServerPanel,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   notices: list[notify.Notice]) -> None:
    asked: list[str] = []
    monkeypatch.setattr(panel, "confirm_exposure", lambda host: asked.append(host) or False)
    panel.host.setCurrentIndex(1)
    assert asked == ["0.0.0.0"] and panel.host.currentData() == "127.0.0.1"
    assert panel.exposure_warning.isHidden()
    monkeypatch.setattr(panel, "confirm_exposure", lambda host: True)
    panel.host.setCurrentIndex(1)
    assert panel.host.currentData() == "0.0.0.0" and not panel.exposure_warning.isHidden()
    assert panel.start() and panel.server is not None
    assert panel.server.url.startswith("http://127.0.0.1:")  # the way in from here
    warnings = [n for n in notices if n.level == "warning"]
    assert warnings and "reachable from your network" in warnings[-1].title
    assert "API key" in warnings[-1].hint
    status, _, _ = request(panel.server.url + "/models", timeout=10)
    assert status == 200


def test_a_taken_port_is_a_clear_error(panel: ServerPanel,
                                       notices: list[notify.Notice]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        panel.port.setValue(port)
        panel.switch.setChecked(True)
    assert not panel.switch.isChecked() and panel.server is None
    assert f"Port {port} on 127.0.0.1 is already in use" in panel.status.text()
    assert notices[-1].level == "error" and "already in use" in notices[-1].text


def test_the_api_key_is_generated_kept_and_required(qtbot, panel: ServerPanel) -> None:
    panel.start()
    assert panel.server is not None and panel.server.api_key is None
    qtbot.mouseClick(panel.generate, Qt.MouseButton.LeftButton)
    key = panel.key.text()
    assert key.startswith("wb-") and serve_settings.get_api_key() == key
    assert "until Workbench closes" in panel.key_note.text()  # no keyring on this machine
    url = panel.server.url
    status, _, body = request(url + "/models", timeout=10)
    assert status == 401 and error_of(body)["code"] == "invalid_api_key"
    box = in_thread(lambda: [m.id for m in client_for(panel, key).models.list()])
    qtbot.waitUntil(lambda: box["done"], timeout=10_000)
    assert box["result"] == [panel.queue.model_id]
    again = ServerPanel(panel.engine)  # the next session finds it
    qtbot.addWidget(again)
    assert again.key.text() == key
