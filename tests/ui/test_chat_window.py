"""The main window with the real engine and the built-in model, offscreen."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from workbench.chat.store import ChatStore
from workbench.engine.protocol import Sampling
from workbench.settings import SettingsStore, data_dir
from workbench.ui.main_window import MainWindow

pytestmark = pytest.mark.engine
QUICK = Sampling(temperature=0.0, max_tokens=24, seed=1)


def open_window(qtbot, sampling: Sampling = QUICK) -> MainWindow:
    store = ChatStore(data_dir() / "conversations.db")
    store.recover_interrupted()
    window = MainWindow(store, SettingsStore())
    qtbot.addWidget(window)
    window.panel.set_sampling(sampling)
    window.show()
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=60_000):
        window.start()
    return window


@pytest.fixture
def window(qtbot) -> Iterator[MainWindow]:
    w = open_window(qtbot)
    yield w
    w.close()
    w.store.close()


def send_and_wait(qtbot, window: MainWindow, text: str) -> None:
    with qtbot.waitSignal(window.engine.sig_chat_done, timeout=60_000):
        assert window.chat.send(text)


def test_first_start_loads_the_builtin_model_and_chats(qtbot, window: MainWindow) -> None:
    assert window.engine.model is not None and "135M" in window.engine.model.name
    assert window.engine.pid not in (None, os.getpid())  # inference lives elsewhere
    send_and_wait(qtbot, window, "What is 2+2?")
    messages = window.store.messages(window.chat.conversation_id)
    assert [m.role for m in messages] == ["user", "assistant"]
    reply = messages[1]
    assert reply.status == "complete" and reply.content.strip()
    assert reply.stats["n_generated_tokens"] > 0 and reply.stats["tokens_per_s"] > 0
    assert reply.settings["temperature"] == 0.0  # settings stored with the reply
    assert reply.prompt_text.endswith("<|im_start|>assistant\n")
    view = window.chat.transcript.views[reply.id]
    assert view.text == reply.content and "tok/s" in view.footer.text()
    assert "/ 2,048" in window.chat.context_meter.text() or window.chat.context_meter.value() > 0
    # The conversation got a title from the first message.
    assert window.store.get_conversation(reply.conversation_id).title == "What is 2+2?"
    window.grab().save(str(Path(os.environ["WORKBENCH_HOME"]) / "chat.png"))


def test_stop_settles_at_once_and_keeps_the_partial_reply(qtbot, window: MainWindow) -> None:
    window.panel.set_sampling(Sampling(temperature=0.8, max_tokens=2000, seed=5))
    tokens: list[str] = []
    window.engine.sig_token.connect(lambda _rid, t: tokens.append(t))
    assert window.chat.send("Write a very long story about the sea.")
    qtbot.waitUntil(lambda: len(tokens) >= 5, timeout=60_000)
    window.chat.stop_button.click()
    # Settled synchronously, before the engine confirms: nothing to wait for.
    assert window.chat.active is None and not window.chat.stop_button.isEnabled()
    reply = window.store.messages(window.chat.conversation_id)[-1]
    assert reply.status == "stopped" and reply.content
    shown = reply.content
    # Sending at once is fine: the engine finishes the cancel, then takes this request.
    window.panel.set_sampling(QUICK)
    assert window.chat.send("Now a short answer, please.")
    cid = window.chat.conversation_id
    qtbot.waitUntil(lambda: window.store.messages(cid)[-1].status == "complete",
                    timeout=60_000)
    assert window.store.get_message(reply.id).content == shown  # no late tokens after Stop
    assert window.store.get_message(reply.id).stats.get("n_generated_tokens", 0) > 0


def test_regenerate_and_edit_and_resend(qtbot, window: MainWindow) -> None:
    send_and_wait(qtbot, window, "Say a word.")
    cid = window.chat.conversation_id
    first_reply = window.store.messages(cid)[-1]
    with qtbot.waitSignal(window.engine.sig_chat_done, timeout=60_000):
        window.chat.regenerate(first_reply.id)
    messages = window.store.messages(cid)
    assert len(messages) == 2 and messages[-1].id != first_reply.id
    assert messages[-1].content == first_reply.content  # greedy: same words again
    user = messages[0]
    window.chat.begin_edit(user.id)
    assert window.chat.composer.toPlainText() == "Say a word."
    qtbot.keyClick(window.chat.composer, Qt.Key.Key_Escape)
    assert window.chat.editing_message_id is None and not window.chat.composer.toPlainText()
    window.chat.begin_edit(user.id)
    window.chat.composer.setPlainText("Say a number.")
    send_and_wait(qtbot, window, window.chat.composer.toPlainText())
    messages = window.store.messages(cid)
    assert [m.content for m in messages][:1] == ["Say a number."] and len(messages) == 2


def test_view_prompt_and_copy(qtbot, window: MainWindow) -> None:
    send_and_wait(qtbot, window, "Hello there")
    reply = window.store.messages(window.chat.conversation_id)[-1]
    window.chat.view_prompt(reply.id)
    text = window.chat.prompt_dialog.findChild(type(window.chat.composer).__mro__[1])
    assert text is not None and "Hello there<|im_end|>" in text.toPlainText()
    window.chat.transcript.views[reply.id].buttons["Copy"].click()
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == reply.content


def test_conversations_new_rename_search_delete(qtbot, window: MainWindow,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    send_and_wait(qtbot, window, "Tell me about cats")
    first = window.chat.conversation_id
    window.chat.new_conversation()
    send_and_wait(qtbot, window, "Tell me about dogs")
    second = window.chat.conversation_id
    assert first != second and window.chat.conversations.list.count() == 2
    window.chat.conversations.rename(first, "Feline facts")
    window.chat.conversations.search.setText("dogs")
    qtbot.waitUntil(lambda: window.chat.conversations.list.count() == 1)
    assert window.chat.conversations.list.item(0).text() == "Tell me about dogs"
    window.chat.conversations.search.clear()
    qtbot.waitUntil(lambda: window.chat.conversations.list.count() == 2)
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.Yes)
    window.chat.conversations.delete(second)
    assert [c.title for c in window.store.list_conversations()] == ["Feline facts"]
    assert window.chat.conversation_id == first


def test_system_prompt_is_per_conversation_and_sent(qtbot, window: MainWindow) -> None:
    window.chat.new_conversation()
    window.panel.system_prompt.setPlainText("You are a pirate.")
    send_and_wait(qtbot, window, "Hi")
    cid = window.chat.conversation_id
    assert window.store.get_conversation(cid).system_prompt == "You are a pirate."
    reply = window.store.messages(cid)[-1]
    assert reply.prompt_text.startswith("<|im_start|>system\nYou are a pirate.<|im_end|>")
    window.chat.new_conversation()
    assert window.panel.system_prompt.toPlainText() == ""


def test_engine_killed_mid_stream_window_survives(qtbot, window: MainWindow) -> None:
    window.panel.set_sampling(Sampling(temperature=0.8, max_tokens=2000, seed=9))
    tokens: list[str] = []
    window.engine.sig_token.connect(lambda _rid, t: tokens.append(t))
    assert window.chat.send("Write a very long poem.")
    qtbot.waitUntil(lambda: len(tokens) >= 5, timeout=60_000)
    with qtbot.waitSignal(window.engine.sig_died, timeout=30_000):
        os.kill(window.engine.pid, signal.SIGKILL)
    assert window.isVisible()
    reply = window.store.messages(window.chat.conversation_id)[-1]
    assert reply.status == "interrupted" and reply.content  # the partial reply is kept
    view = window.chat.transcript.views[reply.id]
    assert "Interrupted" in view.footer.text()
    notices = window.visible_notices()
    died = [n for n in notices if n.title == "The engine stopped"]
    assert died and "killed" in died[0].text
    # The offered action reloads the model in a new engine process.
    banner = window.banners["engine-died"]
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=60_000):
        banner.buttons["Reload model"].click()
    send_and_wait(qtbot, window, "Are you back?")
    assert window.store.messages(window.chat.conversation_id)[-1].status == "complete"


def test_conversations_persist_across_restart(qtbot) -> None:
    first = open_window(qtbot)
    send_and_wait(qtbot, first, "Remember me")
    cid = first.chat.conversation_id
    first.close()
    first.store.close()
    second = open_window(qtbot)
    try:
        assert second.chat.conversation_id == cid
        contents = [v.text for v in second.chat.transcript.views.values()]
        assert contents[0] == "Remember me" and contents[1]
    finally:
        second.close()
        second.store.close()


def test_reply_cut_by_a_kill_of_the_app_is_marked_interrupted(qtbot) -> None:
    store = ChatStore(data_dir() / "conversations.db")
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "Hi")
    store.add_message(conv.id, "assistant", "Half a sen", status="streaming")
    store.close()
    window = open_window(qtbot)
    try:
        reply = window.store.messages(conv.id)[-1]
        assert reply.status == "interrupted" and reply.content == "Half a sen"
    finally:
        window.close()
        window.store.close()


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00", b"not a model at all"])
def test_bad_model_file_shows_a_clear_message(qtbot, window: MainWindow, tmp_path: Path,
                                              content: bytes) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    before = window.engine.model
    window.load_model(str(bad))
    qtbot.waitUntil(lambda: any(n.title == "Cannot load this model"
                                for n in window.visible_notices()), timeout=10_000)
    notice = next(n for n in window.visible_notices() if n.title == "Cannot load this model")
    assert "bad.gguf" in notice.text
    assert window.engine.model is before and window.engine.ready  # the chat carries on
    send_and_wait(qtbot, window, "Still there?")


def test_context_full_offers_choices(qtbot, window: MainWindow) -> None:
    window.panel.set_sampling(Sampling(temperature=0.0, max_tokens=8))
    assert window.chat.send("word " * 5000)  # more than the default 4,096-token context
    qtbot.waitUntil(lambda: "context-full" in window.banners, timeout=60_000)
    banner = window.banners["context-full"]
    assert {"Drop oldest messages", "New chat with last message"} <= set(banner.buttons)
    # No empty reply is left behind; the user's message is kept.
    messages = window.store.messages(window.chat.conversation_id)
    assert [m.role for m in messages] == ["user"]
