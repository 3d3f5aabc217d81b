"""Background work for the UI: one small task abstraction, used for anything that could
make the GUI thread wait (file probes, header reads, benchmarks).

    op(read_header, path).success(show).failure(report).run()

The function runs on Qt's global thread pool and must not touch widgets; its results
come back through signals, delivered on the GUI thread. A failure without a handler goes
to the app's one error channel (`workbench.ui.notify`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from workbench.ui import notify

_running: set[Task] = set()  # keep tasks alive until they finish


class TaskSignals(QObject):
    started = Signal()
    """The function began running on a pool thread."""
    yielded = Signal(object)
    """A generator function produced a value (progress, partial results)."""
    returned = Signal(object)
    """The function returned a value (for generators: their return value)."""
    errored = Signal(object)
    """The function raised; the argument is the exception."""
    finished = Signal()
    """Always last, after returned or errored."""


class _Runner(QRunnable):
    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict,
                 signals: TaskSignals) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs, self.signals = fn, args, kwargs, signals

    def _emit(self, name: str, *args: object) -> None:
        # RuntimeError: the signals object is gone (the app is quitting): nobody to tell.
        with contextlib.suppress(RuntimeError):
            getattr(self.signals, name).emit(*args)

    def run(self) -> None:
        self._emit("started")
        try:
            result = self.fn(*self.args, **self.kwargs)
            if isinstance(result, Iterator):
                try:
                    while True:
                        self._emit("yielded", next(result))
                except StopIteration as stop:
                    result = stop.value
            self._emit("returned", result)
        except Exception as exc:
            self._emit("errored", exc)
        finally:
            self._emit("finished")


class Task:
    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.signals = TaskSignals()
        self._runner = _Runner(fn, args, kwargs, self.signals)
        self._runner.setAutoDelete(False)
        self._failure: Callable[[BaseException], None] | None = None
        self.signals.errored.connect(self._on_signals_errored)
        self.signals.finished.connect(lambda: _running.discard(self))

    def success(self, callback: Callable[[Any], None]) -> Task:
        self.signals.returned.connect(callback)
        return self

    def progress(self, callback: Callable[[Any], None]) -> Task:
        self.signals.yielded.connect(callback)
        return self

    def failure(self, callback: Callable[[BaseException], None]) -> Task:
        self._failure = callback
        return self

    def finally_(self, callback: Callable[[], None]) -> Task:
        self.signals.finished.connect(callback)
        return self

    def run(self, pool: QThreadPool | None = None) -> Task:
        _running.add(self)
        (pool or QThreadPool.globalInstance()).start(self._runner)
        return self

    def _on_signals_errored(self, exc: BaseException) -> None:
        if self._failure is not None:
            self._failure(exc)
        else:
            notify.error("Something went wrong", str(exc) or type(exc).__name__)


def op(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Task:
    """Build a background task; call .run() to start it."""
    return Task(fn, *args, **kwargs)
