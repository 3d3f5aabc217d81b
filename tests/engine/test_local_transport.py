"""How LocalEngine reaches its worker: a Listener at a private address, a one-time key on
the worker's stdin. The same code path runs on Windows (a named pipe instead of a socket
file), so these run everywhere; none needs a model."""

from __future__ import annotations

import io
import os
import queue
import stat
import subprocess
import sys
import tempfile
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path

import pytest

from workbench.engine.blocking import BlockingEngine, EngineFailure
from workbench.engine.local import LocalEngine, _Rendezvous, describe_exit
from workbench.engine.protocol import EngineDied, LoadSpec
from workbench.engine.worker import connect_to_app


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the listener's socket directory goes, so a test can see what is left."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


def leftovers(where: Path) -> list[str]:
    return sorted(str(p.relative_to(where)) for p in where.rglob("*"))


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_worker_that_dies_before_connecting_is_reported_at_once(private_tmp: Path) -> None:
    # As a frozen build missing llama.cpp, or a worker crashing at import, would.
    failing = python("import sys; print('starting', file=sys.stderr); "
                     "sys.exit('ImportError: libllama.so: cannot open shared object file')")
    started = time.perf_counter()
    blocking = BlockingEngine(lambda cb: LocalEngine(cb, command=failing))
    with pytest.raises(EngineFailure) as failure:
        blocking.load(LoadSpec("model.gguf"), timeout=10)
    assert time.perf_counter() - started < 5
    event = failure.value.event
    assert isinstance(event, EngineDied) and event.exit_code == 1
    assert event.message.startswith(describe_exit(1))
    assert event.message.endswith("It said: ImportError: libllama.so: cannot open shared "
                                  "object file")
    assert "saved" in event.hint
    assert not blocking.engine.alive
    blocking.close()
    assert leftovers(private_tmp) == []


def test_a_worker_that_never_connects_is_ended_after_the_timeout(private_tmp: Path) -> None:
    events: queue.Queue = queue.Queue()
    engine = LocalEngine(events.put, command=python("import time; time.sleep(60)"),
                         connect_timeout=1.0)
    engine.stats()
    # Meanwhile the socket waits in a directory only this user may enter.
    (folder,) = private_tmp.iterdir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and (folder / "sock").exists()
    pid = engine.pid
    event = events.get(timeout=10)
    assert isinstance(event, EngineDied) and event.exit_code is None
    assert event.message == describe_exit(None)
    assert not engine.alive and pid is not None
    assert leftovers(private_tmp) == []
    engine.close()


def test_close_before_the_worker_connects_leaves_nothing(private_tmp: Path) -> None:
    events: queue.Queue = queue.Queue()
    engine = LocalEngine(events.put, command=python("import time; time.sleep(60)"))
    engine.stats()
    proc = engine._proc
    assert proc is not None and leftovers(private_tmp)
    started = time.perf_counter()
    engine.close(timeout=0.5)
    assert time.perf_counter() - started < 4
    assert proc.poll() is not None and leftovers(private_tmp) == []
    time.sleep(0.2)
    assert events.empty()  # the app ended it: no EngineDied


def test_the_real_worker_connects_and_its_socket_is_gone_once_it_has(
        private_tmp: Path) -> None:
    with BlockingEngine() as blocking:
        stats = blocking.stats(timeout=60)  # sent before the worker connected; waits for it
        assert not stats.model_loaded and stats.engine_pid == blocking.engine.pid
        assert leftovers(private_tmp) == []
        proc = blocking.engine._proc
    assert proc is not None and proc.returncode == 0  # shut down when asked
    assert leftovers(private_tmp) == []


def test_the_key_is_not_on_the_command_line(private_tmp: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    real_popen = subprocess.Popen

    def popen(args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(list(args))
        return real_popen(args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    with BlockingEngine() as blocking:
        blocking.stats(timeout=60)
    (command,) = seen
    assert command[1:] == ["-m", "workbench.children", "--engine-worker"]


def test_the_listener_turns_away_a_peer_without_the_key(private_tmp: Path) -> None:
    rendezvous = _Rendezvous()
    with pytest.raises(AuthenticationError):
        Client(rendezvous.address, rendezvous.family, authkey=b"not the key")
    hello = io.BytesIO(rendezvous.handshake())
    worker_end = connect_to_app(hello)  # still listening after the impostor
    proc = subprocess.Popen(python("import time; time.sleep(30)"))
    try:
        app_end = rendezvous.wait(proc, timeout=10)
        assert app_end is not None
        worker_end.send("ping")
        assert app_end.recv() == "ping"
    finally:
        proc.kill()
        proc.wait()
    assert leftovers(private_tmp) == []
    worker_end.close()
    app_end.close()


def test_a_worker_started_by_hand_says_what_it_needs() -> None:
    with pytest.raises(SystemExit, match="no connection details on stdin"):
        connect_to_app(io.BytesIO(b""))


@pytest.mark.parametrize(("code", "words"), [
    (-9, "was killed (SIGKILL)"),
    (-11, "crashed (SIGSEGV) inside llama.cpp"),
    (3, "exit code 3"),
    (1, "exit code 1"),  # Windows: TerminateProcess, as Task Manager or Popen.kill do it
    (0xC0000005, "crashed with an access violation (0xC0000005)"),
    (0xC000001D, "CPU features"),
    (0xC0000409, "fail-fast"),
    (0xC0001234, "crashed (exception 0xC0001234)"),
])
def test_describe_exit(code: int, words: str) -> None:
    assert words in describe_exit(code)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_the_socket_directory_is_private(private_tmp: Path) -> None:
    rendezvous = _Rendezvous()
    try:
        path = Path(rendezvous.address)
        assert rendezvous.family == "AF_UNIX" and path.parent.parent == private_tmp
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        rendezvous.close()
    assert leftovers(private_tmp) == []
