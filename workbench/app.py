"""Builds and wires the application. Also the headless entry points:

    workbench                 open the window
    workbench --self-test     load the built-in model in the engine process, stream a short
                              reply, print one JSON object, exit 0 on success

A frozen build also starts its own child processes through flags (--engine-worker,
--probe-hardware, --measure-fit, --requantize, --train-lora): see workbench/children.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from workbench.children import CHILDREN, run_child

APP_ID = "org.workbench.Workbench"  # also the installers' desktop, AppStream and bundle id


def self_test(timeout: float = 120.0) -> int:
    """Prove the install works end to end, without a window."""
    from workbench.engine.blocking import BlockingEngine, EngineFailure
    from workbench.engine.protocol import ChatMessage, LoadSpec, Sampling
    from workbench.models.builtin import BuiltinModelMissing, builtin_model_path

    report: dict = {"ok": False}
    try:
        path = builtin_model_path()
        report["model"] = path.name
        with BlockingEngine() as engine:
            info = engine.load(LoadSpec(str(path), n_ctx=1024), timeout=timeout)
            report["engine_pid"] = engine.engine.pid
            started = time.perf_counter()
            result = engine.chat([ChatMessage("user", "Say hello in five words.")],
                                 Sampling(temperature=0.0, max_tokens=24, seed=1),
                                 timeout=timeout)
            t = result.done.timings
            report.update(
                model=info.name,
                tokens=t.n_generated_tokens,
                tokens_per_s=round(t.tokens_per_s, 2),
                ttft_s=round(t.ttft_s, 3),
                seconds=round(time.perf_counter() - started, 3),
                reply=result.done.text,
                ok=t.n_generated_tokens > 0,
            )
    except (BuiltinModelMissing, EngineFailure, TimeoutError) as exc:
        report["error"] = str(exc)
    except Exception as exc:  # the self-test reports, it does not crash
        report["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(report))
    return 0 if report["ok"] else 1


def _report_startup(window: object, timeout_s: float = 120.0) -> None:
    """For --startup-timing: print when the window was first shown and when the built-in
    model was ready, in seconds since this process was created (so a frozen build's
    bootloader counts), as one JSON line, then close the window."""
    import psutil
    from PySide6.QtCore import QTimer

    born = psutil.Process().create_time()
    report: dict = {}

    def finish(ok: bool) -> None:
        if "model_ready_s" in report or "timed_out" in report:
            return
        report["model_ready_s" if ok else "timed_out"] = round(time.time() - born, 3)
        print(json.dumps(report), flush=True)
        window.close()  # type: ignore[attr-defined]

    def shown() -> None:  # the first event-loop turn after show(): the window is mapped
        report["window_shown_s"] = round(time.time() - born, 3)

    window.engine.sig_loaded.connect(lambda _info: finish(True))  # type: ignore[attr-defined]
    window.engine.sig_load_failed.connect(lambda _err: finish(False))  # type: ignore[attr-defined]
    QTimer.singleShot(0, shown)
    QTimer.singleShot(int(timeout_s * 1000), lambda: finish(False))


def run_gui(argv: list[str], startup_timing: bool = False) -> int:
    from PySide6.QtWidgets import QApplication

    from workbench.chat.store import ChatStore, StoreError
    from workbench.settings import SettingsStore, data_dir
    from workbench.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("Workbench")
    # The installed .desktop file's name (packaging/linux/): docks and Wayland compositors
    # match the window to its launcher and icon by it.
    app.setDesktopFileName(APP_ID)
    try:
        store = ChatStore(data_dir() / "conversations.db")
    except StoreError as exc:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.critical(None, "Workbench cannot open its conversations", str(exc))
        return 1
    store.recover_interrupted()
    window = MainWindow(store, SettingsStore())
    window.show()
    if startup_timing:
        _report_startup(window)
    window.start()
    code = app.exec()
    store.close()
    return code


def _ensure_std_streams() -> None:
    """A windowed frozen build (Windows, macOS .app) starts with sys.stdout/stderr None;
    anything that writes to them would crash. A child whose output is captured has them."""
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115


def _environment_for_children() -> None:
    """What a frozen build's own environment must not pass on.

    PyInstaller marks its processes with variables (_PYI_*) that a child inherits; the
    bundle's executable started again with them believes it is already set up and skips
    its start-up, so on Linux it runs without the bundle's folder on LD_LIBRARY_PATH, and
    llama.cpp's libraries then miss the libgomp the bundle carries (seen on a clean Debian
    12, which has none of its own). PYINSTALLER_RESET_ENVIRONMENT makes every child a fresh
    start of the app.

    And a frozen Linux build starts with LD_LIBRARY_PATH pointing into the bundle. This
    process has loaded its libraries by now; programs it starts (xdg-open, a file manager)
    must get the system's own. Workbench's children set it again at their own start."""
    if not getattr(sys, "frozen", False):
        return
    os.environ["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    if not sys.platform.startswith("linux"):
        return
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        os.environ["LD_LIBRARY_PATH"] = original
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _ensure_std_streams()
    _environment_for_children()
    if argv[:1] and argv[0] in CHILDREN:  # a frozen build starts its child processes so
        return run_child(argv[0], argv[1:])  # (workbench/children.py)
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--self-test", action="store_true",
                        help="load the built-in model, generate, print JSON, exit")
    parser.add_argument("--startup-timing", action="store_true",
                        help="open the window, print when it was shown and when the built-in "
                             "model was ready (JSON), close")
    args, qt_args = parser.parse_known_args(argv)
    if args.self_test:
        return self_test()
    return run_gui([sys.argv[0], *qt_args], startup_timing=args.startup_timing)


if __name__ == "__main__":
    sys.exit(main())
