"""ServeQueue: the API server's requests, run on the GUI's one engine between the chat's
own replies.

Requests arrive on the server's threads; a queued signal hops each to the GUI thread, where
it waits until the engine is free: a model is ready, no reply of the chat is being written
and no other page owns the engine (the compare view). Then the queue takes
`engine.owner = "API server"` — the chat and the other pages refuse to start work while it
is set — and runs the requests one after another, giving the engine back when none is left.
A reply of the chat is never interrupted: a request waits for it to finish.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from PySide6.QtCore import QObject, QTimer, Signal

from workbench.engine.protocol import (
    ChatDone,
    ChatMessage,
    ChatStarted,
    EngineDied,
    EngineError,
    ModelInfo,
    Sampling,
    Token,
)
from workbench.serve.backend import ServeBackend, Sink, Ticket, model_id_for
from workbench.ui.engine_controller import EngineController

OWNER = "API server"
RETRY_MS = 250  # the compare view frees the engine without a signal: look again this often


class ControllerBackend(ServeBackend):
    """The thread-safe face the HTTP server talks to; all work happens in ServeQueue."""

    def __init__(self, queue: ServeQueue) -> None:
        self._queue = queue

    def model_id(self) -> str | None:
        return self._queue.model_id  # a str set on the GUI thread: safe to read anywhere

    def submit(self, messages: Sequence[ChatMessage], sampling: Sampling, sink: Sink, *,
               fresh: bool = False) -> Ticket:
        ticket = Ticket(messages, sampling, sink, fresh)
        ticket.model_id = self._queue.model_id  # what the server checked the request against
        self._queue.sig_submit.emit(ticket)  # queued: runs on the GUI thread
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        ticket.cancelled = True
        self._queue.sig_cancel.emit(ticket)


class ServeQueue(QObject):
    sig_submit = Signal(object)
    """Internal: a Ticket from a server thread."""
    sig_cancel = Signal(object)
    """Internal: a Ticket to cancel, from a server thread."""
    sig_busy_changed = Signal(bool)
    """True while the engine is generating for the server."""
    sig_waiting_changed = Signal(int)
    """How many requests wait for the engine (not counting the one running)."""
    sig_served_changed = Signal(int)
    """How many requests have been answered in full since the queue was made."""

    def __init__(self, engine: EngineController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.backend = ControllerBackend(self)
        self.model_id: str | None = model_id_for(engine.model.path) if engine.model else None
        self.served = 0
        self._pending: deque[Ticket] = deque()
        self._current: Ticket | None = None
        self._retry = QTimer(self)
        self._retry.setInterval(RETRY_MS)
        self._retry.timeout.connect(self._pump)
        # Deferred: when the chat's reply ends, the chat page handles it before we start.
        self._pump_soon = QTimer(self)
        self._pump_soon.setSingleShot(True)
        self._pump_soon.setInterval(0)
        self._pump_soon.timeout.connect(self._pump)
        self.sig_submit.connect(self._on_submit)
        self.sig_cancel.connect(self._on_cancel)
        engine.sig_loaded.connect(self._on_engine_loaded)
        engine.sig_state_changed.connect(self._on_engine_state_changed)
        engine.sig_chat_started.connect(self._on_engine_chat_started)
        engine.sig_token.connect(self._on_engine_token)
        engine.sig_chat_done.connect(self._on_engine_chat_done)
        engine.sig_chat_failed.connect(self._on_engine_chat_failed)
        engine.sig_died.connect(self._on_engine_died)

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def cancel_all(self) -> None:
        """End every request, running or waiting (the server is stopping)."""
        for ticket in list(self._pending):
            ticket.cancelled = True
        self._drop_cancelled()
        if self._current is not None:
            self._current.cancelled = True
            self._cancel_running(self._current)

    # ------------------------------------------------------------ the queue

    def _on_submit(self, ticket: Ticket) -> None:
        if ticket.cancelled:
            ticket.end_cancelled()
            return
        if self.engine.state in ("empty", "crashed"):
            ticket.end_failed("not_loaded", "No model is loaded in Workbench.",
                              "Load a model and try again.")
            return
        self._pending.append(ticket)
        self.sig_waiting_changed.emit(len(self._pending))
        self._pump()

    def _on_cancel(self, ticket: Ticket) -> None:
        if ticket is self._current:
            self._cancel_running(ticket)
        else:
            self._drop_cancelled()

    def _cancel_running(self, ticket: Ticket) -> None:
        if ticket.request_id is not None:
            self.engine.engine.cancel(ticket.request_id)  # ends with ChatDone("cancelled")

    def _drop_cancelled(self) -> None:
        kept: deque[Ticket] = deque()
        for ticket in self._pending:
            if ticket.cancelled:
                ticket.end_cancelled()
            else:
                kept.append(ticket)
        if len(kept) != len(self._pending):
            self._pending = kept
            self.sig_waiting_changed.emit(len(kept))
            self._pump()

    def _engine_free(self) -> bool:
        return self.engine.state == "ready" and self.engine.owner in (None, OWNER)

    def _pump(self) -> None:
        """Start the next request if the engine is free; give it back if none waits."""
        if self._current is not None:
            return
        if not self._pending:
            self._retry.stop()
            if self.engine.owner == OWNER:
                self.engine.owner = None
            return
        if not self._engine_free():
            self._retry.start()  # signals cover the chat and loading; the timer the rest
            return
        self._retry.stop()
        ticket = self._pending.popleft()
        self.sig_waiting_changed.emit(len(self._pending))
        if ticket.model_id != self.model_id:  # another model was loaded while it waited
            ticket.end_failed("not_loaded", "Another model was loaded in Workbench while "
                              "the request waited.", "Send it again for the new model.")
            self._pump()
            return
        self._current = ticket
        self.engine.owner = OWNER
        ticket.request_id = self.engine.chat(ticket.messages, ticket.sampling,
                                             fresh=ticket.fresh)
        self.sig_busy_changed.emit(True)

    def _finish(self, ticket: Ticket, served: bool) -> None:
        if ticket is not self._current:
            return
        self._current = None
        if served:
            self.served += 1
            self.sig_served_changed.emit(self.served)
        self.sig_busy_changed.emit(False)
        self._pump()  # the next request, or the engine back to the chat

    def _fail_all(self, kind: str, message: str, hint: str = "") -> None:
        pending, self._pending = list(self._pending), deque()
        for ticket in pending:
            ticket.end_failed(kind, message, hint)
        if pending:
            self.sig_waiting_changed.emit(0)
        current = self._current
        if current is not None:
            current.end_failed(kind, message, hint)
            self._finish(current, served=False)
        elif self.engine.owner == OWNER:
            self.engine.owner = None

    # ------------------------------------------------------------ engine events

    def _on_engine_loaded(self, info: ModelInfo) -> None:
        self.model_id = model_id_for(info.path)

    def _on_engine_state_changed(self, state: str) -> None:
        if state in ("empty", "crashed"):
            self.model_id = None
            self._fail_all("not_loaded", "The model was unloaded in Workbench.",
                           "Load a model and try again.")
        elif state == "loading":
            self.model_id = None  # requests for the old model must not reach the new one
        elif state == "ready" and self._pending:
            self._pump_soon.start()

    def _on_engine_chat_started(self, event: ChatStarted) -> None:
        current = self._current
        if current is not None and event.request_id == current.request_id:
            current.deliver(event)

    def _on_engine_token(self, request_id: int, text: str) -> None:
        current = self._current
        if current is not None and request_id == current.request_id:
            current.deliver(Token(request_id, text))

    def _on_engine_chat_done(self, event: ChatDone) -> None:
        current = self._current
        if current is not None and event.request_id == current.request_id:
            current.deliver(event)
            self._finish(current, served=event.reason != "cancelled")

    def _on_engine_chat_failed(self, event: EngineError) -> None:
        current = self._current
        if current is not None and event.request_id == current.request_id:
            current.deliver(event)
            self._finish(current, served=False)

    def _on_engine_died(self, event: EngineDied) -> None:
        self.model_id = None
        self._fail_all("engine_died", event.message, event.hint)
