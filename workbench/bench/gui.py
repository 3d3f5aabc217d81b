"""Does the chat window keep up at GPU speed? The real chat page (offscreen), its
transcript preloaded with ~10,000 words of earlier messages, gets a reply streamed at
1,000 tokens/s the way the app receives one: a stand-in engine calls the controller's
event callback from its own thread (as the local engine's reader thread does), one piece
per FLUSH_S as workbench/engine/generation.py coalesces them, and the queued signal
carries it to ChatPage on the GUI thread. A 1 ms heartbeat timer on the GUI thread
records how late it fires: stall = gap between firings - interval.

Absolute targets (p99 ≤ 16 ms: a frame; max ≤ 50 ms); the same heartbeat with nothing
streaming is printed as idle_stall_*, the machine's floor. The per_token_* variant sends
every token as its own event (an engine that does not coalesce)."""

from __future__ import annotations

import os
import random
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.engine.protocol import (
    ChatDone,
    ChatMessage,
    ChatStarted,
    Engine,
    EventCallback,
    Loaded,
    LoadSpec,
    ModelInfo,
    Sampling,
    Timings,
    Token,
)

if TYPE_CHECKING:  # Qt is imported only when the benchmark runs
    from workbench.ui.chat.page import ChatPage

RATE = 1000  # tokens/s: a small model on a GPU
# The engine sends streamed text at most this often (FLUSH_S in engine/generation.py).
FLUSH_S = 1 / 60
HEARTBEAT_MS = 1
TARGET_P99_MS, TARGET_MAX_MS = 16.0, 50.0
HISTORY_TURNS, USER_WORDS, ASSISTANT_WORDS = 10, 60, 940  # ~10,000 words
WINDOW_SIZE = (1340, 860)  # the chat page at the app's default window size

_VOCABULARY = ("the model token context layer cache memory thread value weight sample prompt "
          "reply window speed batch file size data time rate user text line code list step "
          "test case run load call read write check state queue event signal slot widget "
          "layout render frame scroll view page bench score target limit report")
_WORDS = _VOCABULARY.split()
_CODE = ("def {a}_{b}({c}: int) -> int:\n    \"\"\"Return the {b} of {c}.\"\"\"\n"
         "    total = 0\n    for i in range({c}):\n        total += i * {n}\n"
         "    return total\n\n\nprint({a}_{b}({n}))\n")


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 18))]
    i = rng.randrange(len(words))
    words[i] = rng.choice((f"**{words[i]}**", f"`{words[i]}`", f"*{words[i]}*", words[i]))
    return " ".join(words).capitalize() + "."


def _paragraph(rng: random.Random, n_words: int) -> str:
    out: list[str] = []
    while sum(len(s.split()) for s in out) < n_words:
        out.append(_sentence(rng))
    return " ".join(out)


def markdown_text(rng: random.Random, n_words: int) -> str:
    """A reply-like Markdown text of about n_words: heading, paragraphs, lists, code."""
    parts = [f"## {_paragraph(rng, 3).rstrip('.')}"]
    while sum(len(p.split()) for p in parts) < n_words:
        kind = rng.random()
        if kind < 0.6:
            parts.append(_paragraph(rng, rng.randint(40, 90)))
        elif kind < 0.75:
            parts.append("\n".join(f"- {_sentence(rng)}" for _ in range(rng.randint(3, 6))))
        elif kind < 0.85:
            parts.append("\n".join(f"{i}. {_sentence(rng)}" for i in range(1, 5)))
        else:
            a, b, c = rng.sample(_WORDS, 3)
            parts.append("```python\n" + _CODE.format(a=a, b=b, c=c, n=rng.randint(2, 99))
                         + "```")
    return "\n\n".join(parts)


def tokens_of(text: str) -> list[str]:
    """Split like a tokenizer roughly does: ~4 characters, leading whitespace attached."""
    return re.findall(r"\s*\S{1,5}|\s+$", text)


def _stall_stats(times: Sequence[float]) -> tuple[float, float]:
    """p99 and max stall in ms: the gap between heartbeats minus the interval."""
    stalls = sorted(max(0.0, (b - a) * 1000 - HEARTBEAT_MS) for a, b in pairwise(times))
    if not stalls:
        return 0.0, 0.0
    return round(stalls[int(0.99 * (len(stalls) - 1))], 2), round(stalls[-1], 2)


class FeedEngine(Engine):
    """Stands in for the engine: loads nothing, streams canned text at RATE from a thread,
    through the same callback (and so the same queued signal) as the real one."""

    def __init__(self, callback: EventCallback) -> None:
        self.callback = callback
        self._next_id = 0
        self.tokens: list[str] = []
        self.seconds = 1.0
        self.per_token = False
        self.sent: deque[tuple[float, int]] = deque()  # (sent at, tokens) per delivery
        self.started_at = 0.0  # when the first token was "sampled"

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def load(self, spec: LoadSpec) -> int:
        rid = self._id()
        info = ModelInfo(path=spec.model_path, name="feed", architecture="none", n_params=0,
                         size_bytes=0, n_ctx=32768, n_ctx_train=32768, n_vocab=0,
                         n_threads=1, template_origin="builtin:none", template_name="none",
                         load_seconds=0.0)
        # From another thread, as a real engine answers: the controller must see the id first.
        threading.Thread(target=self.callback, args=(Loaded(rid, info),), daemon=True).start()
        return rid

    def chat(self, messages: list[ChatMessage], sampling: Sampling, *,
             fresh: bool = False) -> int:
        rid = self._id()
        threading.Thread(target=self._feed, args=(rid,), daemon=True).start()
        return rid

    def _feed(self, rid: int) -> None:
        self.callback(ChatStarted(rid, "(bench prompt)", 13_000, 13_000))
        n_total = int(self.seconds * RATE)
        start, sent, tick = time.perf_counter(), 0, 0
        self.started_at = start
        while sent < n_total:
            tick += 1
            if self.per_token:
                due, upto = start + tick / RATE, tick
            else:  # what the model produced by this flush goes out as one piece
                due = start + tick * FLUSH_S
                upto = min(n_total, round(tick * FLUSH_S * RATE))
            time.sleep(max(0.0, due - time.perf_counter()))
            if upto > sent:
                self.sent.append((time.perf_counter(), upto - sent))
                self.callback(Token(rid, self._text(sent, upto)))
                sent = upto
        timings = Timings(13_000, 0, n_total, 0.01, 0.01, self.seconds, 13_000 + n_total)
        self.callback(ChatDone(rid, "length", self._text(0, n_total), timings))

    def _text(self, start: int, end: int) -> str:
        return "".join(self.tokens[i % len(self.tokens)] for i in range(start, end))

    def _answer_nothing(self, *_args: object, **_kwargs: object) -> int:
        return self._id()

    # What the chat page never waits for (and nothing to cancel or close).
    unload = tokenize = stats = distribution = perplexity = set_adapters = _answer_nothing
    cancel = close = _answer_nothing


# ------------------------------------------------------------------ the measurement


def _spin_until(done: Callable[[], bool], timeout_s: float) -> None:
    """Run the GUI event loop until done() or the timeout, without busy-waiting."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    check = QTimer(interval=10)
    check.timeout.connect(lambda: done() and loop.quit())
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    check.start()
    if not done():
        loop.exec()
    check.stop()


def _measure(action: Callable[[], object], done: Callable[[], bool],
             timeout_s: float) -> list[float]:
    """Heartbeat times while action() runs on the GUI thread and until done()."""
    from PySide6.QtCore import Qt, QTimer

    beats: list[float] = []
    heartbeat = QTimer(interval=HEARTBEAT_MS, timerType=Qt.TimerType.PreciseTimer)
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    heartbeat.start()
    QTimer.singleShot(0, action)
    _spin_until(done, timeout_s)
    heartbeat.stop()
    return beats


def _stream(page: ChatPage, feed: FeedEngine, per_token: bool, seconds: float,
            start: Callable[[], object]) -> dict:
    """Stream one reply started by start(); stalls, delivered rate and lag."""
    feed.per_token, feed.seconds = per_token, seconds
    feed.sent.clear()
    arrivals: list[tuple[float, float, int]] = []  # (arrived, sent, tokens)

    def on_token(_rid: int, _text: str) -> None:
        sent_at, n = feed.sent.popleft()
        arrivals.append((time.perf_counter(), sent_at, n))

    page.engine.sig_token.connect(on_token)  # after the page's own slot
    finished = {"at": 0.0}

    def done() -> bool:  # the reply ended in the page, then 0.2 s more to settle
        if page.active is None and arrivals and not finished["at"]:
            finished["at"] = time.perf_counter()
        return bool(finished["at"]) and time.perf_counter() - finished["at"] > 0.2

    beats = _measure(start, done, seconds * 4 + 10)
    page.engine.sig_token.disconnect(on_token)
    p99, worst = _stall_stats(beats)
    lags = sorted(arrived - sent for arrived, sent, _ in arrivals) or [0.0]
    span = arrivals[-1][0] - feed.started_at if arrivals else 0.0
    delivered = sum(n for *_, n in arrivals) / span if span else 0.0
    return {
        "stall_p99_ms": p99, "stall_max_ms": worst,
        "tokens_per_s_delivered": round(delivered, 1),
        "deliveries": len(arrivals),
        "delivery_lag_p99_ms": round(lags[int(0.99 * (len(lags) - 1))] * 1000, 2),
        "meets_targets": p99 <= TARGET_P99_MS and worst <= TARGET_MAX_MS,
    }


def run(model: str | None = None, quick: bool = False) -> dict:
    """`model` is ignored: the text is fed, no model runs (none reaches 1,000 tok/s here)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from workbench.chat.store import ChatStore
    from workbench.settings import Settings
    from workbench.ui.chat.page import ChatPage
    from workbench.ui.chat.settings_panel import SettingsPanel
    from workbench.ui.engine_controller import EngineController

    seconds = 1.0 if quick else 5.0
    app = QApplication.instance() or QApplication([])  # noqa: F841 (kept alive)
    with tempfile.TemporaryDirectory(prefix="wb-gui-") as tmp:
        store = ChatStore(Path(tmp) / "conversations.db")
        controller = EngineController(make_engine=FeedEngine)
        feed = controller.engine
        assert isinstance(feed, FeedEngine)
        settings = Settings()
        panel = SettingsPanel(settings.sampling, settings.model, settings.preset, {})
        page = ChatPage(store, controller, panel)
        page.resize(*WINDOW_SIZE)
        page.show()

        rng = random.Random(13)
        cid = store.create_conversation("Benchmark").id
        history = []
        for _ in range(HISTORY_TURNS):
            history.append(store.add_message(cid, "user", _paragraph(rng, USER_WORDS)))
            history.append(store.add_message(cid, "assistant",
                                             markdown_text(rng, ASSISTANT_WORDS)))
        page.conversations.refresh()
        page.open_conversation(cid)
        controller.load(LoadSpec("(fed text)"))
        feed.tokens = tokens_of(markdown_text(random.Random(7), 2000))
        _spin_until(lambda: controller.ready, 10)
        _spin_until(lambda: False, 0.5)  # the first layout and paint

        idle = _measure(lambda: None, lambda: False, seconds)
        idle_p99, idle_max = _stall_stats(idle)
        coalesced = _stream(page, feed, False, seconds, lambda: page.send("Go on."))
        reply_id = page.store.messages(cid)[-1].id
        per_token = _stream(page, feed, True, seconds, lambda: page.regenerate(reply_id))
        reply = page.store.messages(cid)[-1]

        all_text = "".join(m.content for m in history)
        result = {
            "benchmark": "gui",
            "tokens_per_s_fed": RATE,
            "stream_s": seconds,
            "flush_s": round(FLUSH_S, 4),
            "heartbeat_ms": HEARTBEAT_MS,
            "transcript_messages": len(history),
            "transcript_words": len(all_text.split()),
            "transcript_tokens_est": len(tokens_of(all_text)),
            "reply_chars": len(reply.content),
            "idle_stall_p99_ms": idle_p99,
            "idle_stall_max_ms": idle_max,
            "target_p99_ms": TARGET_P99_MS,
            "target_max_ms": TARGET_MAX_MS,
            **coalesced,
            **{f"per_token_{k}": v for k, v in per_token.items()},
        }
        page.close()
        page.deleteLater()
        controller.close()
        store.close()
    return result
