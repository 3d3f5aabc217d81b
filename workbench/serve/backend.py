"""ServeBackend: what the API server needs from an engine — the loaded model's id, and a
queue that runs one generation at a time — and EngineBackend, one over any Engine.

The server calls `submit` and `cancel` on its request threads; events reach the request's
sink on the backend's threads. The sink must be thread-safe and must not block (the API
server passes `queue.Queue.put`).
"""

from __future__ import annotations

import abc
import itertools
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence

from workbench.engine.blocking import EngineFailure
from workbench.engine.local import LocalEngine
from workbench.engine.protocol import (
    ChatDone,
    ChatMessage,
    ChatStarted,
    Engine,
    EngineDied,
    EngineError,
    Event,
    EventCallback,
    Loaded,
    LoadSpec,
    ModelInfo,
    Sampling,
    Timings,
    Token,
)

ServeEvent = ChatStarted | Token | ChatDone | EngineError
Sink = Callable[[ServeEvent], None]

_ticket_ids = itertools.count(1)


def model_id_for(path: str) -> str:
    """The id clients name a model by: its file name without ".gguf" (a remote model's id
    keeps its last path part). Distinct quantisations of one model stay distinct."""
    name = path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name[:-5] if name.lower().endswith(".gguf") else name


class Ticket:
    """One submitted generation, from its submission to its last event."""

    def __init__(self, messages: Sequence[ChatMessage], sampling: Sampling, sink: Sink,
                 fresh: bool) -> None:
        self.id = next(_ticket_ids)
        self.messages = list(messages)
        self.sampling = sampling
        self.fresh = fresh
        self.request_id: int | None = None  # the engine's, once it runs
        self.model_id: str | None = None  # the model it was accepted for, where known
        self.cancelled = False
        self.finished = False  # the terminal event went out: nothing more will
        self._sink = sink
        self._lock = threading.Lock()

    def deliver(self, event: ServeEvent) -> None:
        """Pass an event to the sink; after ChatDone or EngineError nothing more goes."""
        with self._lock:  # under the lock: a late token never follows the terminal event
            if self.finished:
                return
            if isinstance(event, ChatDone | EngineError):
                self.finished = True
            self._sink(event)

    def end_cancelled(self) -> None:
        """The terminal event of a ticket dropped before the engine ran it."""
        self.deliver(ChatDone(self.request_id or 0, "cancelled", "", Timings(
            0, 0, 0, 0.0, 0.0, 0.0, 0)))

    def end_failed(self, kind: str, message: str, hint: str = "") -> None:
        self.deliver(EngineError(self.request_id or 0, kind, message, hint))


class ServeBackend(abc.ABC):
    @abc.abstractmethod
    def model_id(self) -> str | None:
        """The loaded model's id for clients; None while none is ready. Thread-safe."""

    @abc.abstractmethod
    def submit(self, messages: Sequence[ChatMessage], sampling: Sampling, sink: Sink, *,
               fresh: bool = False) -> Ticket:
        """Queue a generation and return at once; thread-safe. The sink then gets
        ChatStarted and Token events and exactly one ChatDone or EngineError; a cancelled
        ticket ends with ChatDone(reason="cancelled")."""

    @abc.abstractmethod
    def cancel(self, ticket: Ticket) -> None:
        """Stop a running generation, or drop a waiting one. Thread-safe."""


class EngineBackend(ServeBackend):
    """A backend that owns its Engine (headless serving, tests): FIFO, one at a time."""

    def __init__(self, make_engine: Callable[[EventCallback], Engine] = LocalEngine) -> None:
        # One lock orders everything: the event thread takes it to route an event, so an
        # event cannot overtake the bookkeeping of the call that caused it.
        self._lock = threading.Lock()
        self._pending: deque[Ticket] = deque()
        self._current: Ticket | None = None
        self._waiters: dict[int, queue.Queue[Event]] = {}
        self._model_id: str | None = None
        self._closed = False
        self.engine = make_engine(self._on_event)

    def load(self, spec: LoadSpec, timeout: float = 120.0) -> ModelInfo:
        """Load a model (blocking); queued generations wait for it in the engine."""
        box: queue.Queue[Event] = queue.Queue()
        with self._lock:
            self._model_id = None
            rid = self.engine.load(spec)
            self._waiters[rid] = box
        try:
            event = box.get(timeout=timeout)
        finally:
            with self._lock:
                self._waiters.pop(rid, None)
        if isinstance(event, Loaded):
            self._model_id = model_id_for(event.info.path)
            return event.info
        assert isinstance(event, EngineError | EngineDied)
        raise EngineFailure(event)

    def model_id(self) -> str | None:
        return self._model_id

    def submit(self, messages: Sequence[ChatMessage], sampling: Sampling, sink: Sink, *,
               fresh: bool = False) -> Ticket:
        ticket = Ticket(messages, sampling, sink, fresh)
        with self._lock:
            if self._closed:
                ticket.end_failed("not_loaded", "The server is shutting down.")
                return ticket
            self._pending.append(ticket)
            self._start_next()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        with self._lock:
            ticket.cancelled = True
            if ticket in self._pending:
                self._pending.remove(ticket)
                ticket.end_cancelled()
            elif ticket is self._current and ticket.request_id is not None:
                self.engine.cancel(ticket.request_id)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def _start_next(self) -> None:
        """Start the next waiting ticket if the engine is free. Called under the lock."""
        if self._current is not None or not self._pending:
            return
        ticket = self._current = self._pending.popleft()
        ticket.request_id = self.engine.chat(ticket.messages, ticket.sampling,
                                             fresh=ticket.fresh)

    def _on_event(self, event: Event) -> None:
        rid = getattr(event, "request_id", None)
        with self._lock:
            box = self._waiters.get(rid) if rid is not None else None
            current = self._current
        if isinstance(event, EngineDied):
            self._model_id = None
            with self._lock:
                boxes = list(self._waiters.values())
            for waiting_load in boxes:
                waiting_load.put(event)
            if current is not None:
                current.end_failed("engine_died", event.message, event.hint)
                self._finished(current)
            return
        if box is not None:
            box.put(event)
            return
        if current is None or rid != current.request_id:
            return
        if isinstance(event, ChatStarted | Token | ChatDone | EngineError):
            current.deliver(event)
        if isinstance(event, ChatDone | EngineError):
            self._finished(current)

    def _finished(self, ticket: Ticket) -> None:
        with self._lock:
            if self._current is ticket:
                self._current = None
            self._start_next()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            dropped, self._pending = list(self._pending), deque()
        for ticket in dropped:
            ticket.end_cancelled()
        self.engine.close()
        current = self._current
        if current is not None:
            current.end_failed("engine_died", "The engine was closed.")
