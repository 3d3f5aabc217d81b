"""The chat page on a remote engine (a loopback OpenAI-compatible server): a reply that
breaks off mid-stream keeps what streamed, marked interrupted, and says why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.engine.openai_faults import MODEL, FaultServer
from workbench.chat.store import ChatStore
from workbench.engine.protocol import LoadSpec
from workbench.engine.remote import RemoteEngine
from workbench.settings import SettingsStore, data_dir
from workbench.ui.engine_controller import EngineController
from workbench.ui.main_window import MainWindow


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def window(qtbot, faults: FaultServer) -> Iterator[MainWindow]:
    store = ChatStore(data_dir() / "conversations.db")
    controller = EngineController(make_engine=lambda cb: RemoteEngine(cb, faults.url,
                                                                      timeout=5))
    window = MainWindow(store, SettingsStore(), controller)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(controller.sig_loaded, timeout=10_000):
        controller.load(LoadSpec(MODEL))
    yield window
    window.close()
    store.close()


def test_a_remote_reply_streams_into_the_chat(qtbot, window, faults) -> None:
    faults.mode = "ok"
    with qtbot.waitSignal(window.engine.sig_chat_done, timeout=10_000):
        assert window.chat.send("Hi")
    messages = window.store.messages(window.chat.conversation_id)
    assert messages[-1].content == "Hello, world!" and messages[-1].status == "complete"


@pytest.mark.parametrize("mode", ["disconnect", "bad_json"])
def test_a_reply_that_breaks_off_keeps_its_text(qtbot, window, faults, mode) -> None:
    faults.mode = mode
    with qtbot.waitSignal(window.engine.sig_chat_failed, timeout=10_000):
        assert window.chat.send("Hi")
    last = window.store.messages(window.chat.conversation_id)[-1]
    assert last.role == "assistant" and last.content == "Hello," and \
        last.status == "interrupted"
    assert any(n.title == "The reply broke off" for n in window.visible_notices())
    assert window.chat.send_button.isEnabled()
