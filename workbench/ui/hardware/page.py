"""The Hardware page: what this machine has, what the installed llama.cpp build can use,
and a Fit panel for the loaded model."""

from __future__ import annotations

import html
import importlib.metadata
from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from workbench.hardware.builds import gpu_build_for
from workbench.hardware.isolated import probe_isolated
from workbench.hardware.snapshot import HardwareSnapshot
from workbench.installation import Installation, how_installed
from workbench.ui import notify
from workbench.ui.fit.panel import FitPanel, fmt_bytes
from workbench.ui.tasks import op


class MemoryBar(QProgressBar):
    """Used / total with the free amount spelled out."""

    def show_usage(self, used: int, total: int) -> None:
        self.setMaximum(max(total // 2**20, 1))
        self.setValue(min(used // 2**20, self.maximum()))
        self.setFormat(f"{fmt_bytes(used)} used of {fmt_bytes(total)} · "
                       f"{fmt_bytes(total - used)} free")


def gpu_build_hint(snapshot: HardwareSnapshot,
                   installation: Installation | None = None) -> str:
    """Tell a GPU owner running a CPU-only build which build would use their GPU, in the
    terms of how this copy was installed: the download to get for an installer, the
    CMAKE_ARGS to rebuild with for a checkout or a pip install."""
    choice = gpu_build_for(snapshot)
    if choice is None:
        return ""
    where = installation or how_installed()
    gpu = html.escape(choice.gpu)
    if where == "installer":
        return (f"This Workbench runs llama.cpp on the CPU only, so your {gpu} sits idle. "
                f"<b>{choice.backend}</b> would use it: install {choice.download}.")
    if where == "checkout":
        command = f'CMAKE_ARGS="{choice.cmake_args}" make run'
    else:
        command = (f'CMAKE_ARGS="{choice.cmake_args}" pip install --force-reinstall '
                   f'--no-cache-dir --no-deps "llama-cpp-python=={_llama_version()}"')
    return (f"This llama.cpp build runs on the CPU only, so your {gpu} sits idle. Rebuild "
            f"with <code>{html.escape(command, quote=False)}</code> to use it "
            f"({choice.backend}; the installers call it {choice.download}).")


def _llama_version() -> str:
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return "VERSION"


class HardwarePage(QScrollArea):
    sig_snapshot = Signal(object)
    """A new HardwareSnapshot was taken."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.snapshot: HardwareSnapshot | None = None
        self._probing = False
        # Called with the snapshot (None if the probe failed) once a probe ends.
        self._waiting: list[Callable[[HardwareSnapshot | None], None]] = []
        inner = QWidget()
        layout = QVBoxLayout(inner)
        top = QHBoxLayout()
        self.status = QLabel("Probing…")
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        top.addWidget(self.status, 1)
        top.addWidget(self.refresh_button)
        layout.addLayout(top)

        self.system_box = QGroupBox("This computer")
        system = QVBoxLayout(self.system_box)
        self.system_label = QLabel()
        self.system_label.setWordWrap(True)
        self.ram_bar = MemoryBar()
        system.addWidget(self.system_label)
        system.addWidget(QLabel("Memory (RAM)"))
        system.addWidget(self.ram_bar)
        layout.addWidget(self.system_box)

        self.gpu_box = QGroupBox("GPUs")
        self.gpu_layout = QVBoxLayout(self.gpu_box)
        layout.addWidget(self.gpu_box)

        self.llama_box = QGroupBox("What llama.cpp can use")
        llama = QVBoxLayout(self.llama_box)
        self.llama_label = QLabel()
        self.llama_label.setWordWrap(True)
        llama.addWidget(self.llama_label)
        layout.addWidget(self.llama_box)

        self.fit = FitPanel()
        layout.addWidget(self.fit)
        layout.addStretch(1)
        self.setWidget(inner)

    def when_probed(self, callback: Callable[[HardwareSnapshot | None], None]) -> None:
        """Call `callback` with the snapshot: now if there is one, else when the probe now
        running (or started here) ends; with None if it fails."""
        if self.snapshot is not None:
            callback(self.snapshot)
            return
        self._waiting.append(callback)
        if not self._probing:
            self.refresh()

    def refresh(self) -> None:
        """Probe in a child process, off the GUI thread."""
        self._probing = True
        self.refresh_button.setEnabled(False)
        self.status.setText("Probing…")
        # Bound methods, not lambdas: Qt drops them if this page is gone by then.
        (op(probe_isolated).success(self.show_snapshot).failure(self._on_probe_failed)
         .finally_(self._on_probe_finished).run())

    def _on_probe_failed(self, exc: BaseException) -> None:
        self.status.setText("The hardware probe failed.")
        notify.error("Hardware probe failed", str(exc), key="probe")

    def _on_probe_finished(self) -> None:
        self._probing = False
        self.refresh_button.setEnabled(True)
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback(self.snapshot)

    def show_snapshot(self, snapshot: HardwareSnapshot) -> None:
        self.snapshot = snapshot
        cpu = snapshot.cpu
        self.status.setText(f"{snapshot.os} {snapshot.os_version} · {snapshot.machine}")
        self.system_label.setText(
            f"<b>{html.escape(cpu.model)}</b> — {cpu.physical_cores} cores "
            f"({cpu.logical_cores} threads)<br>Instruction sets: "
            f"{', '.join(cpu.features) or 'none detected'}")
        mem = snapshot.memory
        self.ram_bar.show_usage(mem.total_bytes - mem.available_bytes, mem.total_bytes)
        self._show_gpus(snapshot)
        build = snapshot.llama
        if build is None:
            text = "Could not ask the llama.cpp build what it supports."
        else:
            devices = "<br>".join(
                f"• {html.escape(d.name)} ({d.kind}): {html.escape(d.description)}, "
                f"{fmt_bytes(d.free_bytes)} free" for d in build.devices)
            text = (f"GPU offload: <b>{'yes' if build.supports_gpu_offload else 'no'}</b>"
                    f"<br>{devices}")
        hint = gpu_build_hint(snapshot)
        notes = "".join(f"<br><i>{html.escape(n)}</i>" for n in snapshot.notes)
        self.llama_label.setText(text + (f"<br><br>{hint}" if hint else "") + notes)
        self.fit.set_snapshot(snapshot)
        self.sig_snapshot.emit(snapshot)

    def _show_gpus(self, snapshot: HardwareSnapshot) -> None:
        while self.gpu_layout.count():
            item = self.gpu_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        if not snapshot.gpus:
            self.gpu_layout.addWidget(QLabel("No GPU found (or no driver for it). Models run "
                                             "on the CPU from system memory."))
            return
        for gpu in snapshot.gpus:
            kind = "unified memory" if gpu.unified_memory else "VRAM"
            label = QLabel(f"<b>{html.escape(gpu.name)}</b> ({gpu.vendor}, {kind}"
                           f"{', driver ' + html.escape(gpu.driver) if gpu.driver else ''})")
            bar = MemoryBar()
            bar.show_usage(gpu.total_bytes - gpu.free_bytes, gpu.total_bytes)
            self.gpu_layout.addWidget(label)
            self.gpu_layout.addWidget(bar)
            for process in gpu.processes:
                used = fmt_bytes(process.used_bytes) if process.used_bytes else "?"
                self.gpu_layout.addWidget(QLabel(
                    f"    {html.escape(process.name)} (pid {process.pid}): {used}"))
