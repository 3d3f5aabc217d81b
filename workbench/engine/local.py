"""LocalEngine: the engine protocol served by a worker process on this machine.

The app never loads llama.cpp itself. A crash in the worker (segfault, OOM kill,
`kill -9`) reaches the app as an `EngineDied` event; the next `load` starts a new worker.

How the worker gets its connection, the same way on Linux, macOS and Windows: the app
opens a `multiprocessing.connection.Listener` at a fresh private address (a Unix socket in
a temporary directory only this user can enter; a named pipe on Windows) with a one-time
random key, starts the worker, and writes the address and the key as one JSON line to the
worker's stdin (never on the command line, where any user's `ps` would show the key). The
worker connects with `Client`; both ends prove they hold the key before a request flows.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection, Listener
from typing import IO

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
CONNECT_TIMEOUT = 120.0  # s a worker may take to connect: a frozen build's first start on
# Windows, with the virus scanner reading every bundled file, can take most of a minute.
_STDERR_KEPT = 4000  # characters of the worker's stderr kept to explain a failed start
_DIED_HINT = ("Your conversation is saved. Reload the model to go on; if this keeps "
              "happening, try a smaller model or a shorter context.")


def worker_command() -> list[str]:
    """The command line that starts a worker. It takes no arguments: where to connect
    arrives on its stdin (see the module docstring)."""
    return child_command("--engine-worker")


# Windows reports a crash as the NTSTATUS that ended the process, a large exit code.
_NTSTATUS = {
    0xC0000005: ("crashed", "an access violation"),
    0xC000001D: ("crashed", "an illegal instruction; this llama.cpp build may need CPU "
                            "features this computer lacks"),
    0xC00000FD: ("crashed", "a stack overflow"),
    0xC0000409: ("stopped", "a fatal error (fail-fast)"),  # abort() and failed checks
    0xC0000017: ("stopped", "running out of memory"),
    0xC0000135: ("could not start", "a missing DLL"),
}


def describe_exit(exit_code: int | None) -> str:
    """Say in words how the engine process ended.

    POSIX: a negative code is the signal that ended it. Windows has no signals: a kill
    (Task Manager, `Popen.kill`, which is TerminateProcess) leaves exit code 1, and a crash
    leaves an NTSTATUS such as 0xC0000005, which Python reports as a large positive code.
    """
    if exit_code is None:
        return "The engine process stopped answering."
    if exit_code < 0:
        sig = -exit_code
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == getattr(signal, "SIGKILL", 9):  # no SIGKILL in Windows' signal module
            return (f"The engine process was killed ({name}). The system may have run out "
                    "of memory, or another program ended it.")
        if sig == signal.SIGSEGV:
            return f"The engine process crashed ({name}) inside llama.cpp."
        return f"The engine process was ended by {name}."
    if exit_code >= 0xC0000000:  # an NTSTATUS error; POSIX exit codes stop at 255
        what = _NTSTATUS.get(exit_code)
        if what is None:
            return f"The engine process crashed (exception 0x{exit_code:08X})."
        verb, cause = what
        return f"The engine process {verb} with {cause} (0x{exit_code:08X})."
    return f"The engine process exited unexpectedly (exit code {exit_code})."


class _Rendezvous:
    """The one place a new worker connects to: a Listener at a fresh private address that
    only accepts a peer holding `authkey`. Accepting runs in a thread of its own, because
    `Listener.accept` has no timeout and closing the listener does not wake it (on Windows
    it waits on the pipe with INFINITE, on Linux close() leaves accept() blocked): a worker
    that dies before connecting is given up on by connecting to it ourselves."""

    def __init__(self) -> None:
        self.authkey = secrets.token_bytes(32)
        self._dir: str | None = None
        if sys.platform == "win32":
            # No Unix sockets: a named pipe \\.\pipe\pyc-PID-N-RANDOM, picked by Listener.
            # Its default security lets only this user (and admins, SYSTEM) open it for
            # writing, which connecting needs; the key guards it as well.
            self.family, address = "AF_PIPE", None
        else:
            # mkdtemp makes the directory 0700. Names stay short: macOS caps a socket path at
            # 104 bytes, and its $TMPDIR is already about 50.
            self._dir = tempfile.mkdtemp(prefix="wb-engine-")
            self.family, address = "AF_UNIX", os.path.join(self._dir, "sock")
        try:
            self._listener = Listener(address, self.family, authkey=self.authkey)
        except BaseException:
            self._remove_dir()
            raise
        self.address: str = self._listener.address
        self._lock = threading.Lock()  # held through close(): a second caller waits for it
        self._closed = False
        self._given_up = False
        self._accepted: Connection | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="engine-accept", daemon=True)
        self._thread.start()

    def handshake(self) -> bytes:
        """The line the worker reads on its stdin."""
        hello = {"address": self.address, "family": self.family, "authkey": self.authkey.hex()}
        return json.dumps(hello).encode() + b"\n"

    def _accept(self) -> None:
        from multiprocessing import AuthenticationError

        try:
            while not self._given_up:
                try:
                    conn = self._listener.accept()
                except (AuthenticationError, EOFError, ConnectionError):
                    continue  # a peer without the key, or a worker that died mid-handshake
                if self._given_up:  # our own connection from give_up(), or one too late
                    conn.close()
                else:
                    self._accepted = conn
                return
        except OSError:
            return  # the listener was closed
        finally:
            self._done.set()

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> Connection | None:
        """The worker's connection; None if it exited first or took longer than
        `timeout` seconds. Either way the listener is gone afterwards."""
        deadline = time.monotonic() + timeout
        while not self._done.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
        self.close()
        return self._accepted

    def close(self) -> None:
        """Stop listening and remove the socket and its directory. Idempotent; returns
        once both are gone, whoever called first."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._done.is_set():
                self._give_up()
            self._listener.close()  # unlinks the socket file
            self._remove_dir()

    def _give_up(self) -> None:
        self._given_up = True

        def connect_to_ourselves() -> None:
            with contextlib.suppress(Exception):
                Client(self.address, self.family, authkey=self.authkey).close()

        threading.Thread(target=connect_to_ourselves, name="engine-accept-abandon",
                         daemon=True).start()
        # Waking the accept takes milliseconds. Should it not come (it cannot, short of a
        # broken platform), the daemon thread is left behind rather than hanging the app.
        self._done.wait(5)

    def _remove_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


class _StderrTail:
    """Passes the worker's stderr on to ours and keeps its end, to explain a failed start.
    (A windowed Windows or macOS app has no stderr to inherit: this way the worker's
    traceback is not lost there.)"""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._thread = threading.Thread(target=self._drain, name="engine-stderr",
                                        daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        with self._stream:
            while chunk := self._stream.read1(65536):  # type: ignore[attr-defined]
                self._chunks.append(chunk)
                self._size += len(chunk)
                while self._size - len(self._chunks[0]) >= _STDERR_KEPT:
                    self._size -= len(self._chunks.popleft())
                err = sys.stderr
                if err is not None:
                    with contextlib.suppress(Exception):
                        err.write(chunk.decode("utf-8", errors="replace"))
                        err.flush()

    def last_line(self, timeout: float = 2.0) -> str:
        """The last non-empty line the worker wrote, once it has closed stderr."""
        self._thread.join(timeout)
        text = b"".join(self._chunks).decode("utf-8", errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else ""


@dataclass(eq=False)
class _Worker:
    """One worker process and what the app holds of it."""

    proc: subprocess.Popen[bytes]
    rendezvous: _Rendezvous
    stderr: _StderrTail
    conn: Connection | None = None  # None until the worker has connected
    pending: list[wire.Request] = field(default_factory=list)  # sent before it connected


class LocalEngine(Engine):
    def __init__(self, on_event: EventCallback, *, command: Sequence[str] | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        """`command` is the worker's command line, `worker_command()` by default (tests
        pass one that fails); `connect_timeout` how long a started worker may take to
        connect before it is ended and reported."""
        self._on_event = on_event
        self._command = list(command) if command is not None else None
        self._connect_timeout = connect_timeout
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._closing = False
        self._closed = False  # close() is final: no request may start a new worker
        self._chat_in_flight: int | None = None

    # ------------------------------------------------------------ process

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        worker = self._worker
        return worker.proc if worker is not None else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.alive else None  # type: ignore[union-attr]

    @property
    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def start(self) -> None:
        """Start the worker process if it is not running. Cheap: it loads no model, and it
        does not wait for the worker to connect; requests sent meanwhile wait for it."""
        with self._lock:
            if self.alive:
                return
            rendezvous = _Rendezvous()
            try:
                # A plain subprocess, not multiprocessing's spawn: spawn re-imports the
                # caller's __main__, which breaks scripts and frozen builds.
                proc = subprocess.Popen(
                    self._command or worker_command(),
                    stdin=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            except BaseException:
                rendezvous.close()
                raise
            assert proc.stdin is not None and proc.stderr is not None
            with contextlib.suppress(OSError):  # a worker already dead is found below
                proc.stdin.write(rendezvous.handshake())
            with contextlib.suppress(OSError):
                proc.stdin.close()
            worker = _Worker(proc, rendezvous, _StderrTail(proc.stderr))
            self._worker, self._closing = worker, False
            threading.Thread(target=self._serve, args=(worker,), name="engine-events",
                             daemon=True).start()

    def _serve(self, worker: _Worker) -> None:
        conn = worker.rendezvous.wait(worker.proc, self._connect_timeout)
        if conn is None:
            self._failed_to_connect(worker)
            return
        with self._lock:
            # In order, before anything sent from now on: a request that finds `conn` set
            # goes after these.
            for request in worker.pending:
                with contextlib.suppress(OSError):
                    conn.send(request)
            worker.pending.clear()
            worker.conn = conn
        self._read_events(worker, conn)

    def _failed_to_connect(self, worker: _Worker) -> None:
        proc = worker.proc
        timed_out = proc.poll() is None
        if timed_out:  # alive but silent: hung at start
            proc.kill()  # Windows: TerminateProcess
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        said = worker.stderr.last_line()
        self._ended(worker, None if timed_out else proc.returncode, said)

    def _read_events(self, worker: _Worker, conn: Connection) -> None:
        while True:
            try:
                event = conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(event, _TERMINAL) and event.request_id == self._chat_in_flight:
                self._chat_in_flight = None
            self._on_event(event)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            conn.close()
        self._ended(worker, worker.proc.returncode)

    def _ended(self, worker: _Worker, exit_code: int | None, said: str = "") -> None:
        """The worker is gone: forget it, and report it unless the app ended it."""
        with self._lock:
            if self._worker is worker:
                self._worker = None
            closing = self._closing
        if closing:
            return
        message = describe_exit(exit_code)
        if said:  # it never connected: what it printed last says why (a traceback's end)
            message += f" It said: {said}"
        in_flight, self._chat_in_flight = self._chat_in_flight, None
        self._on_event(EngineDied(request_id=in_flight or 0, exit_code=exit_code,
                                  message=message, hint=_DIED_HINT))

    def _deliver(self, request: wire.Request) -> None:
        with self._lock:
            worker = self._worker
            if worker is None:
                raise RuntimeError("engine process is not running")
            conn = worker.conn
            if conn is None:  # not connected yet: it gets this when it does
                worker.pending.append(request)
                return
        # If the worker just died, the reader thread reports it; the request dies with it.
        with contextlib.suppress(OSError):
            conn.send(request)

    def _send(self, request: wire.Request) -> None:
        if self._closed:
            return  # the app is shutting down; a late request must not revive the engine
        self.start()
        self._deliver(request)

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
        # The worker reads requests on a thread of their own, so this lands mid-generation.
        if not self.alive:
            return
        with contextlib.suppress(RuntimeError):  # it died just now: nothing to cancel
            self._deliver(wire.CancelRequest(request_id))

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
            worker = self._worker
            self._closing = self._closed = True
        if worker is None:
            return
        with contextlib.suppress(RuntimeError):  # gone already
            self._deliver(wire.CancelRequest(None))
            self._deliver(wire.ShutdownRequest())
        proc = worker.proc
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # Windows: TerminateProcess, no signal
            proc.wait(2)
        # A worker that never connected leaves the listener waiting: no socket file or
        # directory may outlive close().
        worker.rendezvous.close()
