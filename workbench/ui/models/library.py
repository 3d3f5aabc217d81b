"""The local library: GGUF files already on this computer — in the Hugging Face cache
(shared with other tools), the app's models folder and folders the user adds — with
their metadata; load, reveal in the file manager, delete (saying how much space)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from workbench.hardware.snapshot import HardwareSnapshot
from workbench.models.builtin import DISPLAY_NAME, BuiltinModelMissing, builtin_model_path
from workbench.models.fit import (
    VERDICT_LABELS,
    FitError,
    FitRequest,
    ModelShape,
    budgets_from_snapshot,
    plan,
)
from workbench.models.gguf import GGUFError
from workbench.models.library import LocalModel, delete_model, reveal_command, scan_library
from workbench.models.split import read_model_header
from workbench.ui import notify
from workbench.ui.fit.panel import fmt_bytes
from workbench.ui.tasks import op

COLUMNS = ("Model", "Architecture", "Quant", "Params", "Size", "Context", "Template",
           "Fit (4k context)", "Where")


def scan_with_fit(folders: list[Path], app_models_dir: Path,
                  snapshot: HardwareSnapshot | None) -> list[tuple[LocalModel, str]]:
    """The library (the built-in model first), each with a fit label for a 4k context.
    Runs off the GUI thread: it reads every header."""
    models = scan_library(folders, app_models_dir=app_models_dir)
    try:
        builtin = builtin_model_path()
        found = scan_library([builtin.parent], include_hf_cache=False,
                             app_models_dir=app_models_dir)
        models = [replace(m, source="built-in") for m in found if m.path == builtin] + \
            [m for m in models if m.path.resolve() != builtin.resolve()]
    except BuiltinModelMissing:
        pass
    budgets = budgets_from_snapshot(snapshot) if snapshot else None
    out = []
    for m in models:
        label = "?"
        if not m.error and budgets is not None:
            try:
                shape = ModelShape.from_header(read_model_header(m.path))
                req = FitRequest(n_ctx=min(4096, shape.n_ctx_train))
                label = VERDICT_LABELS[plan(shape, req, budgets).verdict]
            except (GGUFError, FitError):
                label = "unknown"
        out.append((m, label))
    return out


class LibraryPage(QWidget):
    sig_load = Signal(str)
    """Load this model file."""
    sig_folders_changed = Signal(list)
    """The user's extra model folders changed (list of str)."""
    sig_models_changed = Signal(list)
    """A scan finished: the LocalModels found, built-in first."""

    def __init__(self, folders: list[str], app_models_dir: Path,
                 snapshot: Callable[[], HardwareSnapshot | None] = lambda: None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.snapshot = snapshot
        self.fit: list[str] = []
        self.folders = list(folders)
        self.app_models_dir = app_models_dir
        self.models: list[LocalModel] = []
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.status = QLabel()
        self.load_button = QPushButton("Load")
        self.reveal_button = QPushButton("Show in folder")
        self.delete_button = QPushButton("Delete…")
        self.add_folder_button = QPushButton("Add folder…")
        self.refresh_button = QPushButton("Refresh")
        buttons = QHBoxLayout()
        for b in (self.load_button, self.reveal_button, self.delete_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.add_folder_button)
        buttons.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        self.load_button.clicked.connect(self._on_load_clicked)
        self.reveal_button.clicked.connect(self._on_reveal_clicked)
        self.delete_button.clicked.connect(lambda: self.delete_selected())
        self.add_folder_button.clicked.connect(self._on_add_folder_clicked)
        self.refresh_button.clicked.connect(self.refresh)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _item: self._on_load_clicked())
        self._update_buttons()

    def refresh(self) -> None:
        """Scan off the GUI thread (header reads only, never the weights)."""
        self.status.setText("Looking for models…")
        self.refresh_button.setEnabled(False)
        (op(scan_with_fit, [Path(f) for f in self.folders], self.app_models_dir,
            self.snapshot())
         .success(self.show_models).finally_(self._on_scan_finished).run())

    def _on_scan_finished(self) -> None:
        self.refresh_button.setEnabled(True)

    def show_models(self, found: list[tuple[LocalModel, str]]) -> None:
        self.models = [m for m, _ in found]
        self.fit = [label for _, label in found]
        self.sig_models_changed.emit(list(self.models))
        models = self.models
        self.table.setRowCount(len(models))
        for row, m in enumerate(models):
            params = f"{m.n_params / 1e9:.2f} B" if m.n_params >= 1e9 else \
                f"{m.n_params / 1e6:.0f} M"
            name = DISPLAY_NAME if m.source == "built-in" else m.name
            values = (name if not m.error else f"{m.path.name} (unreadable)",
                      m.architecture, m.quant, params, fmt_bytes(m.size_bytes),
                      f"{m.context_length:,}" if m.context_length else "?",
                      "yes" if m.has_chat_template else "no", self.fit[row],
                      m.repo_id or ("built-in" if m.source == "built-in"
                                    else str(m.path.parent)))
            for col, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setToolTip(m.error or str(m.path))
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        total = sum(m.size_bytes for m in models)
        self.status.setText(f"{len(models)} models, {fmt_bytes(total)}")
        self._update_buttons()

    def selected(self) -> LocalModel | None:
        rows = {i.row() for i in self.table.selectedItems()}
        return self.models[rows.pop()] if rows else None

    def _update_buttons(self) -> None:
        model = self.selected()
        for b in (self.load_button, self.reveal_button, self.delete_button):
            b.setEnabled(model is not None)
        if model is not None and model.error:
            self.load_button.setEnabled(False)
        if model is not None and model.source == "built-in":
            self.delete_button.setEnabled(False)  # it ships with the app

    def _on_load_clicked(self) -> None:
        model = self.selected()
        if model is not None and not model.error:
            self.sig_load.emit(str(model.path))

    def _on_reveal_clicked(self) -> None:
        model = self.selected()
        if model is not None:
            try:
                subprocess.Popen(reveal_command(model.path))
            except OSError as exc:
                notify.error("Cannot open the file manager", str(exc), str(model.path))

    def delete_selected(self, confirm: bool = True) -> int:
        model = self.selected()
        if model is None:
            return 0
        if confirm:
            answer = QMessageBox.question(
                self, "Delete model",
                f"Delete {model.path.name} ({fmt_bytes(model.size_bytes)})? This frees "
                f"the space on disk; you can download it again later.")
            if answer != QMessageBox.StandardButton.Yes:
                return 0
        try:
            freed = delete_model(model)
        except OSError as exc:
            notify.error("Could not delete the model", str(exc))
            return 0
        notify.info("Model deleted", f"{model.path.name}: {fmt_bytes(freed)} freed.",
                    key="library-delete")
        self.refresh()
        return freed

    def _on_add_folder_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder with GGUF models")
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str) -> None:
        if folder not in self.folders:
            self.folders.append(folder)
            self.sig_folders_changed.emit(list(self.folders))
        self.refresh()
