"""The Models and Library pages against the loopback Hub: browse, judge the fit before
downloading, download (verified), find it in the library, load it, delete it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from workbench.ui.main_window import MainWindow

pytestmark = pytest.mark.engine
REPO = "test-org/SmolLM2-135M-Instruct-GGUF"


@pytest.fixture
def served(hub, builtin_model: Path):
    hub.add_repo(REPO, downloads=1234, likes=56, tags=("gguf",),
                 card_data={"license": "apache-2.0"})
    hub.add_file(REPO, "README.md", b"# SmolLM2 GGUF\n\nA **tiny** model for tests.\n")
    hub.add_file(REPO, "SmolLM2-135M-Instruct-Q4_1.gguf", builtin_model)
    return hub


@pytest.fixture
def window(fresh_window: MainWindow, served) -> MainWindow:
    return fresh_window


def _this_machine():
    from workbench.hardware import probe

    return probe()


def first_file_item(page):
    group = page.files.topLevelItem(0)
    return group.child(0)


def test_browse_judge_download_and_load(qtbot, window: MainWindow, served) -> None:
    page = window.models
    window.hardware.show_snapshot(_this_machine())
    window.show_page("Models")
    page.search.setText("SmolLM2")
    page.run_search()
    qtbot.waitUntil(lambda: page.results.count() == 1
                    and REPO in page.results.item(0).text(), timeout=20_000)
    assert "1,234" in page.results.item(0).text()
    page.results.setCurrentRow(0)
    qtbot.waitUntil(lambda: page.files.topLevelItemCount() == 1, timeout=20_000)
    assert "apache-2.0" in page.title.text() and "tiny" in page.card.toPlainText()
    item = first_file_item(page)
    assert page.files.topLevelItem(0).text(0) == "Q4_1" and "MiB" in item.text(1)
    # The fit comes from a remote header read, before any download.
    qtbot.waitUntil(lambda: item.text(3) != "…", timeout=30_000)
    assert item.text(3) in ("fits (CPU)", "fits on GPU")
    assert "Best that fits whole" in page.picks.text()
    assert served.bytes_served(REPO, "SmolLM2-135M-Instruct-Q4_1.gguf") < 16 * 2**20

    page.files.setCurrentItem(item)
    assert page.download_button.isEnabled()
    with qtbot.waitSignal(page.sig_downloaded, timeout=120_000) as done:
        page.download_button.click()
    paths = done.args[0].paths
    assert paths and Path(paths[0]).is_file()
    # The library lists it (from the Hugging Face cache) and can load it.
    library = window.library
    qtbot.waitUntil(lambda: any(m.repo_id == REPO for m in library.models), timeout=20_000)
    row = next(i for i, m in enumerate(library.models) if m.repo_id == REPO)
    qtbot.waitUntil(lambda: library.table.item(row, 7).text() == "fits (CPU)", timeout=20_000)
    library.table.selectRow(row)
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=60_000):
        library.load_button.click()
    assert window.engine.model is not None and window.pages.currentWidget() is window.chat


def test_library_lists_deletes_and_adds_folders(qtbot, window: MainWindow, tmp_path: Path,
                                                builtin_model: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "my-models"
    folder.mkdir()
    (folder / "copy.gguf").write_bytes(builtin_model.read_bytes())
    (folder / "broken.gguf").write_bytes(b"not a model")
    library = window.library
    library.add_folder(str(folder))
    qtbot.waitUntil(lambda: len(library.models) == 3, timeout=20_000)
    assert window.settings.library_folders == (str(folder),)  # remembered
    assert library.models[0].source == "built-in"
    library.table.selectRow(0)
    assert library.load_button.isEnabled() and not library.delete_button.isEnabled()
    assert library.table.item(0, 1).text() == "llama" and library.table.item(0, 2).text() == \
        "Q4_1"
    broken = next(i for i, m in enumerate(library.models) if m.error)
    library.table.selectRow(broken)
    assert not library.load_button.isEnabled()  # an unreadable file is never offered
    good = next(i for i, m in enumerate(library.models)
                if not m.error and m.source != "built-in")
    library.table.selectRow(good)
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.Yes)
    freed = library.delete_selected()
    assert freed == builtin_model.stat().st_size and not (folder / "copy.gguf").exists()
    qtbot.waitUntil(lambda: len(library.models) == 2, timeout=20_000)


def test_download_into_a_folder_the_user_picks(qtbot, window: MainWindow, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from PySide6.QtWidgets import QFileDialog

    page = window.models
    page.open_repo(REPO)
    qtbot.waitUntil(lambda: page.files.topLevelItemCount() == 1, timeout=20_000)
    target = tmp_path / "picked"
    target.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(target))
    page.target.activated.emit(page.target.findData("choose"))
    assert page.target.currentData() == str(target)
    page.files.setCurrentItem(first_file_item(page))
    with qtbot.waitSignal(page.sig_downloaded, timeout=120_000) as done:
        page.download_button.click()
    assert done.args[0].paths == (str(target / "SmolLM2-135M-Instruct-Q4_1.gguf"),)
    assert not list(target.glob("*.incomplete"))
