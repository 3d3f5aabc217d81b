"""The download list: progress with speed and ETA, pause, resume, cancel. Downloads run
on the manager's own threads; their progress hops to the GUI thread through a signal."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from workbench.models.downloads import DownloadManager, DownloadRequest, Progress, State
from workbench.ui import notify
from workbench.ui.fit.panel import fmt_bytes

_STATE_TEXT = {
    State.QUEUED: "Waiting", State.RUNNING: "Downloading", State.PAUSED: "Paused",
    State.VERIFYING: "Checking SHA-256", State.DONE: "Ready", State.FAILED: "Failed",
    State.CANCELLED: "Cancelled",
}


def describe(p: Progress) -> str:
    """'1.2 GiB of 4.9 GiB · 38.0 MiB/s · 1 min 40 s left'."""
    parts = [f"{fmt_bytes(p.bytes_done)} of {fmt_bytes(p.bytes_total)}"]
    if p.state == State.RUNNING and p.speed_bps > 0:
        parts.append(f"{fmt_bytes(int(p.speed_bps))}/s")
        if p.eta_s is not None:
            minutes, seconds = divmod(int(p.eta_s), 60)
            parts.append(f"{minutes} min {seconds} s left" if minutes else f"{seconds} s left")
    return " · ".join(parts)


class DownloadBridge(QObject):
    sig_progress = Signal(object)
    """A Progress, delivered on the GUI thread."""


class DownloadRow(QWidget):
    def __init__(self, manager: DownloadManager, progress: Progress,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.manager, self.id = manager, progress.id
        req = progress.request
        self.title = QLabel(f"<b>{req.repo_id}</b> / {req.filenames[0]}"
                            + (f" (+{len(req.filenames) - 1} parts)"
                               if len(req.filenames) > 1 else ""))
        self.bar = QProgressBar()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.cancel_button = QPushButton("Cancel")
        self.pause_button.clicked.connect(lambda: self.manager.pause(self.id))
        self.resume_button.clicked.connect(lambda: self.manager.resume(self.id))
        self.cancel_button.clicked.connect(lambda: self.manager.cancel(self.id))
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        for button in (self.pause_button, self.resume_button, self.cancel_button):
            top.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        self.update_progress(progress)

    def update_progress(self, p: Progress) -> None:
        self.progress = p
        self.bar.setMaximum(max(p.bytes_total // 2**20, 1))
        self.bar.setValue(min(p.bytes_done // 2**20, self.bar.maximum()))
        text = f"{_STATE_TEXT[p.state]} · {describe(p)}"
        if p.message:
            text += f"<br>{p.message}"
        self.status.setText(text)
        active = p.state in (State.QUEUED, State.RUNNING, State.VERIFYING)
        self.pause_button.setVisible(active)
        self.resume_button.setVisible(p.state in (State.PAUSED, State.FAILED))
        self.cancel_button.setVisible(p.state not in (State.DONE, State.CANCELLED))


class DownloadsPanel(QWidget):
    sig_finished = Signal(object)
    """A download finished and was verified (Progress with its paths)."""

    def __init__(self, state_dir: Path, *, endpoint: str | None = None,
                 token=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = DownloadBridge()
        self.bridge.sig_progress.connect(self._on_manager_progress)
        self.manager = DownloadManager(state_dir, on_progress=self.bridge.sig_progress.emit,
                                       endpoint=endpoint, token=token)
        self.rows: dict[str, DownloadRow] = {}
        self.empty = QLabel("No downloads yet. Pick a file above and press Download.")
        self._layout = QVBoxLayout(self)
        self._layout.addWidget(QLabel("<b>Downloads</b>"))
        self._layout.addWidget(self.empty)
        self._layout.addStretch(1)
        for progress in self.manager.restore():  # unfinished downloads from last time
            self._on_manager_progress(progress)

    def start(self, request: DownloadRequest) -> str:
        return self.manager.start(request)

    def close_manager(self) -> None:
        self.manager.close()

    def _on_manager_progress(self, progress: Progress) -> None:
        row = self.rows.get(progress.id)
        if row is None:
            row = DownloadRow(self.manager, progress)
            self.rows[progress.id] = row
            self._layout.insertWidget(self._layout.count() - 1, row)
            row.show()
            self.empty.hide()
        previous = row.progress.state
        row.update_progress(progress)
        if progress.state == State.DONE and previous != State.DONE:
            self.sig_finished.emit(progress)
        elif progress.state == State.FAILED and previous != State.FAILED:
            notify.error("Download failed", progress.message or "The download stopped.",
                         "Partial files are kept aside and never offered for loading.",
                         key=f"download-{progress.id}")
