"""Render the app's pages offscreen into PNGs for docs/: `make screenshots`.

Runs a real chat with the built-in model in a throwaway WORKBENCH_HOME.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer, SignalInstance


def _wait(signal: SignalInstance, timeout_ms: int = 120_000) -> None:
    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()


def _settle(ms: int = 300) -> None:
    """Let pending renders and layouts run."""
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def main(out_dir: str = "docs") -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["WORKBENCH_HOME"] = tempfile.mkdtemp(prefix="workbench-shots-")
    from PySide6.QtWidgets import QApplication

    from workbench.chat.store import ChatStore
    from workbench.engine.protocol import Sampling
    from workbench.settings import SettingsStore, data_dir
    from workbench.ui.main_window import MainWindow

    _app = QApplication.instance() or QApplication(sys.argv[:1])  # kept alive: a local
    store = ChatStore(data_dir() / "conversations.db")
    window = MainWindow(store, SettingsStore())
    window.resize(1400, 860)
    window.panel.set_sampling(Sampling(temperature=0.0, max_tokens=160, seed=1))
    window.show()
    window.start()
    _wait(window.engine.sig_loaded)
    window.chat.panel.system_prompt.setPlainText("You are a helpful assistant.")
    for prompt in ("What is a large language model, in two sentences?",
                   "Write a Python function that reverses a string."):
        window.chat.send(prompt)
        _wait(window.engine.sig_chat_done)
    _settle()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(out / "chat.png"))
    print(f"wrote {out / 'chat.png'}")

    if window.hardware.snapshot is None:
        _wait(window.hardware.sig_snapshot)
    window.show_page("Hardware")
    fit = window.hardware.fit
    fit.n_ctx.setValue(8192)
    _wait(fit.sig_plan_changed, 10_000)  # llama.cpp's own sizing, from the header
    _settle()
    window.grab().save(str(out / "hardware.png"))
    print(f"wrote {out / 'hardware.png'}")
    window.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
