"""What survives a fault: the promise that bad input gets a clear message and nothing is lost.

- engine kills: the real window streams a reply; the engine process gets SIGKILL. A round
  survives if the window and its controller stay up and say so, the partial reply is kept
  (marked interrupted), and a reload chats again to the end.
- app kills: the whole app process (faults_app.py) gets SIGKILL mid-reply. A round is
  `db_ok` if SQLite's integrity_check says ok, every message committed before the kill is
  still there, and the app opens the database again.
- bad files: damaged GGUFs (faults_files.py) loaded by the real engine. `crashes` counts the
  engine dying, a load hanging, or a damaged file loading as if it were fine.

Counts, not ratios: the target is every round surviving and no crash. The kills use the
built-in model, as a first start does; --model picks the file the damaged ones are made of."""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from workbench.bench.common import model_path
from workbench.bench.faults_app import LONG_REPLY, PROMPT
from workbench.bench.faults_files import CRASHES, run_cases

ROUNDS, QUICK_ROUNDS = 20, 3
SEED = 7
SHORT_REPLY = 24  # tokens: the reply after a reload runs to its end
APP_START_S = 120.0  # for the child app to load the model and start streaming
ORPHAN_EXIT_S = 10.0  # for an engine worker to notice its app is gone


@contextlib.contextmanager
def _scratch_home() -> Iterator[Path]:
    """A WORKBENCH_HOME of its own, so nothing touches the user's files."""
    saved = {k: os.environ.get(k) for k in ("WORKBENCH_HOME", "HF_HUB_CACHE")}
    with tempfile.TemporaryDirectory(prefix="wb-faults-") as tmp:
        os.environ["WORKBENCH_HOME"] = str(Path(tmp) / "home")
        os.environ["HF_HUB_CACHE"] = str(Path(tmp) / "hf-cache")
        try:
            yield Path(tmp)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


# ------------------------------------------------------------------ engine kills


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Run the Qt event loop until `condition()` holds or `timeout_s` passes."""
    from PySide6.QtCore import QEventLoop, QTimer

    if condition():
        return True
    loop = QEventLoop()
    poll, deadline = QTimer(), QTimer()
    poll.setInterval(10)
    poll.timeout.connect(lambda: loop.quit() if condition() else None)
    deadline.setSingleShot(True)
    deadline.timeout.connect(loop.quit)
    poll.start()
    deadline.start(int(timeout_s * 1000))
    loop.exec()
    poll.stop()
    deadline.stop()
    return condition()


def wait_while_progressing(finished: Callable[[], bool], progress: Callable[[], int],
                           stall_s: float = 60.0, cap_s: float = 600.0) -> bool:
    """Like wait_until, but a slow machine is not a failure: give up only when `progress()`
    has not moved for `stall_s` (or after `cap_s` in all)."""
    deadline = time.monotonic() + cap_s
    while time.monotonic() < deadline:
        seen = progress()
        if not wait_until(lambda seen=seen: finished() or progress() != seen, stall_s):
            return False
        if finished():
            return True
    return False


def _event_loop_answers() -> bool:
    from PySide6.QtCore import QTimer

    fired: list[bool] = []
    QTimer.singleShot(0, lambda: fired.append(True))
    return wait_until(lambda: bool(fired), 1.0)


def _set_reply_length(window: object, max_tokens: int, seed: int) -> None:
    panel = window.panel  # type: ignore[attr-defined]
    panel.set_sampling(replace(panel.sampling(), max_tokens=max_tokens, seed=seed))


def _reload(window: object) -> str:
    """Reload as the user would: the notice's Reload button if there is one."""
    for banner in window.banners.values():  # type: ignore[attr-defined]
        for label, button in banner.buttons.items():
            if label.startswith("Reload") and button.isVisible():
                button.click()
                return "notice button"
    window.engine.reload()  # type: ignore[attr-defined]
    return "controller"


def _after_kill(window: object, cid: int, streamed: str) -> str | None:
    """What is wrong right after the engine died, or None."""
    chat, engine, store = window.chat, window.engine, window.store  # type: ignore[attr-defined]
    if not (window.isVisible() and _event_loop_answers()):  # type: ignore[attr-defined]
        return "the window stopped answering"
    if engine.state != "crashed" or chat.active is not None:
        return f"controller state {engine.state!r}, reply still active: {chat.active}"
    last = store.messages(cid)[-1]
    if last.role != "assistant" or last.status != "interrupted":
        return f"last message is {last.role}/{last.status}, not an interrupted reply"
    if not streamed or last.content != streamed:
        return f"partial reply not kept ({len(last.content)} of {len(streamed)} chars)"
    if not any(n.level == "error" for n in window.visible_notices()):  # type: ignore[attr-defined]
        return "no notice says the engine stopped"
    return None


def _engine_kill_round(window: object, n_tokens: int, seed: int) -> str | None:
    """One kill; None if the round survived, else what failed."""
    chat, engine, store = window.chat, window.engine, window.store  # type: ignore[attr-defined]
    pieces: list[str] = []
    died: list[object] = []
    done: list[object] = []

    def on_token(rid: int, text: str) -> None:
        if chat.active is not None and rid == chat.active.request_id:
            pieces.append(text)

    connections = [(engine.sig_token, on_token), (engine.sig_died, died.append),
                   (engine.sig_chat_done, done.append)]
    for sig, slot in connections:
        sig.connect(slot)
    try:
        _set_reply_length(window, LONG_REPLY, seed)
        cid = chat.new_conversation()
        if not chat.send(PROMPT):
            return "the message was not sent"
        if not wait_while_progressing(lambda: len(pieces) >= n_tokens or bool(done),
                                      lambda: len(pieces)):
            return f"the reply stalled after {len(pieces)} tokens"
        if done:
            return "the reply ended before the kill"
        pid = engine.pid
        os.kill(pid, signal.SIGKILL)
        if not wait_until(lambda: bool(died), 15):
            return "no 'engine died' signal"
        partial_id, partial = store.messages(cid)[-1].id, "".join(pieces)
        problem = _after_kill(window, cid, partial)
        if problem:
            return problem
        _reload(window)
        if not wait_until(lambda: engine.ready, 120):
            return f"the reload did not finish (state {engine.state!r})"
        _set_reply_length(window, SHORT_REPLY, seed)
        done.clear()
        before = len(pieces)
        if not chat.send("Now say hello."):
            return "the message after the reload was not sent"
        if not wait_while_progressing(lambda: bool(done) and chat.active is None,
                                      lambda: len(pieces)):
            return (f"the reply after the reload stalled ({len(pieces) - before} tokens, "
                    f"state {engine.state!r}, done {len(done)})")
        last = store.messages(cid)[-1]
        if last.status != "complete" or not last.content:
            return f"the reply after the reload is {last.status!r}, {len(last.content)} chars"
        if store.get_message(partial_id).content != partial:
            return "the partial reply changed after the reload"
        return None
    finally:
        for sig, slot in connections:
            sig.disconnect(slot)


def engine_kills(rounds: int) -> dict:
    """Kill the engine under the real window `rounds` times."""
    from PySide6.QtWidgets import QApplication

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication.instance() or QApplication([sys.argv[0]])
    from workbench.chat.store import ChatStore
    from workbench.settings import SettingsStore, data_dir
    from workbench.ui.main_window import MainWindow

    failures: list[str] = []
    with _scratch_home():
        store = ChatStore(data_dir() / "conversations.db")
        window = MainWindow(store, SettingsStore())
        window.show()
        try:
            window.load_builtin()
            if not wait_until(lambda: window.engine.ready, 120):
                raise RuntimeError(f"the built-in model did not load ({window.engine.state})")
            for i in range(rounds):
                problem = _engine_kill_round(window, n_tokens=2 + (i * 3) % 16, seed=SEED + i)
                if problem:
                    failures.append(f"round {i + 1}: {problem}")
                    if not window.engine.ready:  # leave the next round a working engine
                        window.engine.reload()
                        wait_until(lambda: window.engine.ready, 60)
        finally:
            window.close()
            store.close()
            app.processEvents()
    return {"engine_kills": rounds, "engine_kills_survived": rounds - len(failures),
            "engine_kill_failures": failures}


# ------------------------------------------------------------------ app kills


def _committed(db: Path) -> dict[int, tuple]:
    """Every message row as another process sees it now: id -> (conversation, role,
    content, status)."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        rows = conn.execute("SELECT id, conversation_id, role, content, status FROM messages")
        return {r[0]: r[1:] for r in rows.fetchall()}
    finally:
        conn.close()


def _lines(stream: object) -> queue.Queue[str]:
    """The child's stdout lines, read on a thread so the parent can wait with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line.strip())
        lines.put("")  # end of output

    threading.Thread(target=pump, name="faults-child-stdout", daemon=True).start()
    return lines


def _wait_streaming(lines: queue.Queue[str]) -> int | None:
    """The message id the child streams into, once it says so."""
    deadline = time.monotonic() + APP_START_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            return None
        if line.startswith("streaming "):
            return int(line.split()[1])
        if not line or line.startswith(("done early", "load failed", "not sent")):
            return None
    return None


def _kill_app(proc: subprocess.Popen[str]) -> int:
    """SIGKILL the app; its engine worker must then exit by itself (its connection is
    gone). Returns how many of its processes had to be killed after all."""
    import psutil

    descendants = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _gone, alive = psutil.wait_procs(descendants, timeout=ORPHAN_EXIT_S)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    return len(alive)


def _check_db(db: Path, before: dict[int, tuple], streaming_id: int) -> str | None:
    """What is wrong with the database after the kill, or None."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    if result != "ok":
        return f"integrity_check: {result}"
    after = _committed(db)
    for mid, (conv, role, content, status) in before.items():
        now = after.get(mid)
        if now is None:
            return f"message {mid} is gone"
        # A reply still streaming may have saved more of its text since: it only grows.
        same = now[2].startswith(content) if status == "streaming" else now[2] == content
        if now[:2] != (conv, role) or not same:
            return f"message {mid} changed"
    if streaming_id not in after:
        return f"the streaming reply {streaming_id} is gone"
    return _reopen(db, streaming_id)


def _reopen(db: Path, streaming_id: int) -> str | None:
    """The app's own start-up on this database: open it, mark cut-off replies."""
    from workbench.chat.store import ChatStore, StoreError

    try:
        with ChatStore(db) as store:
            store.recover_interrupted()
            status = store.get_message(streaming_id).status
            store.list_conversations()
    except (StoreError, KeyError) as exc:
        return f"the app cannot open the database again: {exc}"
    return None if status == "interrupted" else f"the cut-off reply is {status!r}"


def _app_kill_round(tmp: Path, seed: int, delay_s: float) -> tuple[str | None, int, bool]:
    """(what failed or None, processes killed after the app, partial text kept)."""
    home, db = tmp / "home", tmp / "home" / "data" / "conversations.db"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HF_HUB_CACHE": str(tmp / "hf")}
    with (tmp / "child.log").open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.bench.faults_app", str(home), str(seed)],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    mid = _wait_streaming(_lines(proc.stdout))
    if mid is None:
        _kill_app(proc)
        said = (tmp / "child.log").read_text(errors="replace").strip().splitlines()
        last = said[-1] if said else "no output"
        return f"the app did not start streaming ({last})", 0, False
    time.sleep(delay_s)  # kill at a different moment each round, saves included
    before = _committed(db)
    lingering = _kill_app(proc)
    problem = _check_db(db, before, mid)
    kept = bool(_committed(db).get(mid, ("", "", ""))[2])
    return problem, lingering, kept


def app_kills(rounds: int) -> dict:
    """Kill the whole app mid-reply `rounds` times, on one database."""
    rng = random.Random(SEED)
    failures: list[str] = []
    lingering = kept = 0
    with tempfile.TemporaryDirectory(prefix="wb-faults-app-") as name:
        for i in range(rounds):
            problem, killed, partial = _app_kill_round(Path(name), SEED + i,
                                                       rng.uniform(0.0, 2.5))
            lingering += killed
            kept += partial
            if problem:
                failures.append(f"round {i + 1}: {problem}")
    return {"app_kills": rounds, "app_kills_db_ok": rounds - len(failures),
            "app_kill_failures": failures, "app_kills_partial_text_kept": kept,
            "orphan_workers_killed": lingering}


# ------------------------------------------------------------------ all of it


def run(model: str | None = None, quick: bool = False) -> dict:
    path = model_path(model)
    rounds = QUICK_ROUNDS if quick else ROUNDS
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wb-faults-files-") as folder:
        rows, engine_usable = run_cases(path, Path(folder), quick)
    engine = engine_kills(rounds)
    app = app_kills(rounds)
    outcomes = [r["outcome"] for r in rows]
    return {
        "benchmark": "faults",
        "model": path.name,
        **engine,
        **app,
        "bad_files": len(rows),
        "bad_files_clear_errors": outcomes.count("clear_error"),
        "loaded_anyway": outcomes.count("loaded_anyway"),
        "crashes": sum(o in CRASHES for o in outcomes),
        "not_clear": [r["name"] for r in rows
                      if r["outcome"] not in ("clear_error", "loaded_anyway")],
        "caught_by_precheck": sum(r["precheck"] == "GGUFError" for r in rows),
        "engine_loads_after_bad_files": engine_usable,
        "slowest_bad_file_s": max((r["seconds"] for r in rows), default=0.0),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
