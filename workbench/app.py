"""Builds and wires the application. Also the headless entry points:

    workbench                 open the window
    workbench --self-test     load the built-in model in the engine process, stream a short
                              reply, print one JSON object, exit 0 on success
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


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


def run_gui(argv: list[str]) -> int:
    from PySide6.QtWidgets import QApplication

    from workbench.chat.store import ChatStore, StoreError
    from workbench.settings import SettingsStore, data_dir
    from workbench.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("Workbench")
    try:
        store = ChatStore(data_dir() / "conversations.db")
    except StoreError as exc:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.critical(None, "Workbench cannot open its conversations", str(exc))
        return 1
    store.recover_interrupted()
    window = MainWindow(store, SettingsStore())
    window.show()
    window.start()
    code = app.exec()
    store.close()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--engine-worker"]:  # frozen builds start the engine through here
        from workbench.engine.worker import main as worker_main

        worker_main(argv[1:])
        return 0
    if argv[:1] == ["--probe-hardware"]:  # frozen builds probe through here
        from workbench.hardware.__main__ import main as probe_main

        return probe_main()
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--self-test", action="store_true",
                        help="load the built-in model, generate, print JSON, exit")
    args, qt_args = parser.parse_known_args(argv)
    if args.self_test:
        return self_test()
    if sys.stdout is None:  # a windowed frozen build has no console
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    return run_gui([sys.argv[0], *qt_args])


if __name__ == "__main__":
    sys.exit(main())
