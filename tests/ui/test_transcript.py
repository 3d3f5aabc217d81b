"""Streaming touches only the reply being written, however long the history."""

from __future__ import annotations

import time

from workbench.chat.store import Message
from workbench.ui.chat import transcript as transcript_module
from workbench.ui.chat.transcript import Transcript

PARAGRAPH = ("The quick brown fox jumps over the lazy dog while **markdown** and `code` "
             "render. ") * 12  # roughly 250 tokens


def message(mid: int, role: str, content: str, status: str = "complete") -> Message:
    return Message(id=mid, conversation_id=1, role=role, content=content, status=status,
                   settings={}, stats={}, prompt_text="", created_at=0.0)


def test_streaming_renders_only_the_active_reply(qtbot, monkeypatch) -> None:
    view = Transcript()
    qtbot.addWidget(view)
    view.resize(900, 700)
    view.show()
    # About 10k tokens of history.
    history = [message(i, "user" if i % 2 else "assistant", PARAGRAPH) for i in range(1, 41)]
    view.set_messages(history)
    active = view.add_message(message(99, "assistant", "", status="streaming"))
    renders: dict[int, int] = {}
    original = transcript_module.MessageView.render

    def counting(self) -> None:
        renders[self.message_id] = renders.get(self.message_id, 0) + 1
        original(self)

    monkeypatch.setattr(transcript_module.MessageView, "render", counting)
    started = time.perf_counter()
    for i in range(300):
        active.append_text(f"word{i} ")
    appended = time.perf_counter() - started
    qtbot.waitUntil(lambda: renders.get(99, 0) >= 1)
    assert set(renders) == {99}  # no other message was re-rendered
    assert renders[99] <= 3  # 300 tokens, coalesced by the render timer
    assert appended < 0.5  # appending does no rendering work itself
    active.set_status("complete", {"n_generated_tokens": 300, "tokens_per_s": 50.0})
    assert "word299" in active.body.toPlainText() and "300 tokens" in active.footer.text()


def test_remove_from_drops_later_messages(qtbot) -> None:
    view = Transcript()
    qtbot.addWidget(view)
    view.set_messages([message(i, "user", f"m{i}") for i in (1, 2, 3)])
    view.remove_from(2)
    assert list(view.views) == [1] and view.placeholder.isHidden()
    view.remove_from(1)
    assert not view.views
