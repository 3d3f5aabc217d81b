"""LocalEngine: the engine protocol served by a worker process on this machine.

The app never loads llama.cpp itself. A crash in the worker (segfault, OOM kill,
`kill -9`) reaches the app as an `EngineDied` event; the next `load` starts a new worker.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection

from workbench.children import child_command
from workbench.engine import wire
from workbench.engine.protocol import (
    AdapterSetting,
    ChatDone,
    ChatMessage,
    Engine,
    EngineDied,
    EngineError,
    EventCallback,
    LoadSpec,
    Sampling,
)

_TERMINAL = (ChatDone, EngineError)


def worker_command(fd: int) -> list[str]:
    """The command line that starts a worker speaking on file descriptor `fd`."""
    return child_command("--engine-worker", [str(fd)])


def describe_exit(exit_code: int | None) -> str:
    """Say in words how the engine process ended."""
    if exit_code is None:
        return "The engine process stopped answering."
    if exit_code < 0:
        sig = -exit_code
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGKILL:
            return (f"The engine process was killed ({name}). The system may have run out "
                    "of memory, or another program ended it.")
        if sig == signal.SIGSEGV:
            return f"The engine process crashed ({name}) inside llama.cpp."
        return f"The engine process was ended by {name}."
    return f"The engine process exited unexpectedly (exit code {exit_code})."


class LocalEngine(Engine):
    def __init__(self, on_event: EventCallback) -> None:
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._closing = False
        self._closed = False  # close() is final: no request may start a new worker
        self._chat_in_flight: int | None = None

    # ------------------------------------------------------------ process

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.alive else None  # type: ignore[union-attr]

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the worker process if it is not running. Cheap: it loads no model."""
        with self._lock:
            if self.alive:
                return
            # A plain subprocess, not multiprocessing's spawn: spawn re-imports the
            # caller's __main__, which breaks scripts and frozen builds.
            parent_sock, child_sock = socket.socketpair()
            proc = subprocess.Popen(
                worker_command(child_sock.fileno()),
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            child_sock.close()  # the worker holds the only other end: EOF means it died
            parent = Connection(parent_sock.detach())
            self._proc, self._conn, self._closing = proc, parent, False
            threading.Thread(target=self._read_events, args=(proc, parent),
                             name="engine-events", daemon=True).start()

    def _read_events(self, proc: subprocess.Popen[bytes], conn: Connection) -> None:
        while True:
            try:
                event = conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(event, _TERMINAL) and event.request_id == self._chat_in_flight:
                self._chat_in_flight = None
            self._on_event(event)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        with self._lock:
            if self._proc is proc:
                self._proc = self._conn = None
            closing = self._closing
        with contextlib.suppress(OSError):
            conn.close()
        if not closing:
            in_flight, self._chat_in_flight = self._chat_in_flight, None
            self._on_event(EngineDied(
                request_id=in_flight or 0,
                exit_code=proc.returncode,
                message=describe_exit(proc.returncode),
                hint="Your conversation is saved. Reload the model to go on; if this keeps "
                     "happening, try a smaller model or a shorter context.",
            ))

    def _send(self, request: wire.Request) -> None:
        if self._closed:
            return  # the app is shutting down; a late request must not revive the engine
        self.start()
        with self._lock:
            conn = self._conn
        if conn is None:
            raise RuntimeError("engine process is not running")
        # If the worker just died, the reader thread reports it; the request dies with it.
        with contextlib.suppress(OSError):
            conn.send(request)

    # ------------------------------------------------------------ protocol

    def load(self, spec: LoadSpec) -> int:
        rid = next(self._ids)
        self._send(wire.LoadRequest(rid, spec))
        return rid

    def chat(self, messages: list[ChatMessage], sampling: Sampling, *,
             fresh: bool = False) -> int:
        rid = next(self._ids)
        self._chat_in_flight = rid
        self._send(wire.ChatRequest(rid, tuple(messages), sampling, fresh))
        return rid

    def cancel(self, request_id: int | None = None) -> None:
        if not self.alive:
            return
        with self._lock:
            conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(wire.CancelRequest(request_id))

    def unload(self) -> int:
        rid = next(self._ids)
        self._send(wire.UnloadRequest(rid))
        return rid

    def tokenize(self, text: str, *, special: bool = False) -> int:
        rid = next(self._ids)
        self._send(wire.TokenizeRequest(rid, text, special))
        return rid

    def stats(self) -> int:
        rid = next(self._ids)
        self._send(wire.StatsRequest(rid))
        return rid

    def distribution(self, messages: list[ChatMessage], sampling: Sampling,
                     top_n: int = 20) -> int:
        rid = next(self._ids)
        self._send(wire.DistributionRequest(rid, tuple(messages), sampling, top_n))
        return rid

    def perplexity(self, text: str) -> int:
        rid = next(self._ids)
        self._send(wire.PerplexityRequest(rid, text))
        return rid

    def set_adapters(self, adapters: Sequence[AdapterSetting]) -> int:
        rid = next(self._ids)
        self._send(wire.SetAdaptersRequest(rid, tuple(adapters)))
        return rid

    def close(self, timeout: float = 3.0) -> None:
        with self._lock:
            proc, conn = self._proc, self._conn
            self._closing = self._closed = True
        if proc is None:
            return
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(wire.CancelRequest(None))
                conn.send(wire.ShutdownRequest())
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2)
