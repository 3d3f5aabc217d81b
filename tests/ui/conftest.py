"""UI fixtures: a main window on a fresh WORKBENCH_HOME, not yet loading any model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workbench.chat.store import ChatStore
from workbench.settings import SettingsStore, data_dir
from workbench.ui.main_window import MainWindow


@pytest.fixture
def fresh_window(qtbot) -> Iterator[MainWindow]:
    store = ChatStore(data_dir() / "conversations.db")
    window = MainWindow(store, SettingsStore())
    qtbot.addWidget(window)
    window.show()
    yield window
    window.close()
    store.close()
