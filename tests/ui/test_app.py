"""`workbench` (make run) builds the window, loads the built-in model, and shuts the
engine down when the window closes."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QTimer

from workbench.app import run_gui
from workbench.ui.main_window import MainWindow

pytestmark = pytest.mark.engine


def test_run_gui_opens_the_window_with_the_builtin_model(qapp) -> None:
    seen: dict = {}
    # Windows of earlier tests may still exist (closed, not yet deleted). Closing one of
    # them instead of run_gui's left app.exec() running until the guard's quit(), whose
    # Quit event then ended the next test's first event loop at once.
    earlier = [w for w in qapp.topLevelWidgets() if isinstance(w, MainWindow)]

    def poll() -> None:
        windows = [w for w in qapp.topLevelWidgets()
                   if isinstance(w, MainWindow) and not any(w is e for e in earlier)]
        if windows and windows[0].engine.ready:
            window = windows[0]
            seen["title"] = window.windowTitle()
            seen["model"] = window.engine.model.name
            seen["engine"] = window.engine.engine
            window.close()  # the last window closing ends app.exec()
        else:
            QTimer.singleShot(50, poll)

    QTimer.singleShot(50, poll)
    guard = QTimer(singleShot=True, interval=60_000)  # a guard, not a wait
    guard.timeout.connect(qapp.quit)
    guard.start()
    try:
        assert run_gui(["workbench"]) == 0
    finally:
        guard.stop()  # else its quit() would end a later test's event loop
    assert "engine" in seen, "the window never became ready: the guard ended the app"
    assert seen["title"] == "Workbench" and "135M" in seen["model"]
    assert not seen["engine"].alive  # closing the window stopped the engine process
