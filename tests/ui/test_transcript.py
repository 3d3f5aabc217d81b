"""Streaming touches only the reply being written, however long the history."""

from __future__ import annotations

import time

from workbench.chat.store import Message
from workbench.ui.chat import transcript as transcript_module
from workbench.ui.chat.transcript import Transcript
from workbench.ui.markdown import render_markdown

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


# Markdown that tests where one block ends: lazy lines, setext underlines, loose lists,
# tables, fences (one left open at the end), indented code, a rule between blocks.
VARIED = """# Title

Intro with *emphasis* across
two lines, a hard break\\
and `code`.

Setext heading
--------------

> A quote that
continues lazily
>
> - list in quote

1. first
2. second

   loose item paragraph

   - nested
3. third

- tight
- list
* another list

| a | b |
|---|:-:|
| 1 | 2 |

```python
def f(x):
    return x
```
```
plain fence
```

    indented code

***

After the rule, <b>escaped html</b> &amp; entities.
10) paren list

Last words before an open fence
```js
console.log(1)
"""


def whole_render(qtbot, text: str) -> str:
    reference = transcript_module._Body()
    qtbot.addWidget(reference)
    reference.setHtml(render_markdown(text))
    return reference.document().toHtml()


def test_streamed_reply_renders_exactly_as_a_whole_render(qtbot) -> None:
    # Only the last block is re-rendered while a reply grows; the document must still be
    # what rendering the whole text gives, at every step and at the end.
    view = transcript_module.MessageView(message(7, "assistant", "", status="streaming"))
    qtbot.addWidget(view)
    for end in [*range(1, len(VARIED), 9), len(VARIED)]:
        view.text = VARIED[:end]
        view.render()
        assert view.body.document().toHtml() == whole_render(qtbot, VARIED[:end]), end
    view.set_text(VARIED + "\n\n```\n\nDone.")  # the engine's final text
    assert view.body.document().toHtml() == whole_render(qtbot, view.text)


def test_reference_links_and_replaced_text_fall_back_to_whole_renders(qtbot) -> None:
    view = transcript_module.MessageView(message(8, "assistant", "", status="streaming"))
    qtbot.addWidget(view)
    # A definition arriving late turns an earlier [label] into a link.
    for text in ("See [docs].\n\nMore", "See [docs].\n\nMore\n\n[docs]: https://x.org/",
                 "Something else entirely.\n\nNew"):
        view.set_text(text)
        assert view.body.document().toHtml() == whole_render(qtbot, text)
    assert 'href="https://x.org/"' not in view.body.document().toHtml()
    view.set_text("See [docs].\n\n[docs]: https://x.org/")
    assert 'href="https://x.org/"' in view.body.document().toHtml()
