"""The Fit panel: move the context, KV cache type, flash attention and GPU layers, and
watch where the memory goes and whether the model fits.

The formulas run at once on every change; llama.cpp's own sizing of the KV cache (a
child process reading only the header) follows in the background when the knobs rest.
"""

from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from workbench.hardware.snapshot import HardwareSnapshot
from workbench.models.builtin import DISPLAY_NAME, is_builtin
from workbench.models.fit import (
    DeviceBudget,
    FitPlan,
    FitRequest,
    Measured,
    ModelShape,
    budgets_from_snapshot,
    fixes_for,
    plan,
)
from workbench.models.gguf import GGUFHeader, describe_quantization
from workbench.models.measure import measure
from workbench.models.split import read_model_header
from workbench.ui.tasks import op

MiB = 2**20
ROWS = ("weights", "kv", "compute", "output", "reserve", "total", "free")
ROW_LABELS = {"weights": "Weights", "kv": "KV cache", "compute": "Compute buffer",
              "output": "Output buffer", "reserve": "Runtime", "total": "Total",
              "free": "Free now"}
VERDICT_COLOURS = {"full_gpu": "#1b7f3b", "partial": "#9a6700", "cpu": "#1f4e79",
                   "wont_fit": "#b42318"}


def fmt_bytes(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / MiB:,.1f} MiB"


class FitPanel(QWidget):
    sig_plan_changed = Signal(object)
    """A new FitPlan for the current settings."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header: GGUFHeader | None = None
        self.shape: ModelShape | None = None
        self.snapshot: HardwareSnapshot | None = None
        self.measured: Measured | None = None
        self.plan: FitPlan | None = None
        self._measured_for: FitRequest | None = None
        self._measuring: FitRequest | None = None

        self.model_label = QLabel("No model chosen")
        self.model_label.setWordWrap(True)
        self.n_ctx = QSpinBox(minimum=256, maximum=1 << 20, singleStep=1024, value=4096)
        self.n_ctx.setToolTip("Context length in tokens: the KV cache grows with it.")
        self.kv_type = QComboBox()
        self.kv_type.addItems(["f16", "q8_0", "q4_0"])
        self.kv_type.setToolTip("KV cache precision (K and V).")
        self.flash_attn = QCheckBox("Flash attention")
        self.gpu_layers = QSpinBox(minimum=-1, maximum=1000, value=-1)
        self.gpu_layers.setSpecialValueText("Auto")
        self.gpu_layers.setToolTip("Layers on the GPU. Auto: as many as fit.")
        form = QFormLayout()
        form.addRow(self.model_label)
        form.addRow("Context", self.n_ctx)
        form.addRow("KV cache", self.kv_type)
        form.addRow(self.flash_attn)
        form.addRow("GPU layers", self.gpu_layers)

        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.verdict.setObjectName("fit-verdict")
        self.table = QTableWidget(len(ROWS), 0)
        self.table.setVerticalHeaderLabels([ROW_LABELS[r] for r in ROWS])
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(240)
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.RichText)

        box = QGroupBox("Will it fit?")
        inner = QHBoxLayout(box)
        inner.addLayout(form, 1)
        right = QVBoxLayout()
        right.addWidget(self.verdict)
        right.addWidget(self.table)
        right.addWidget(self.details)
        inner.addLayout(right, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(box)

        self._measure_timer = QTimer(self, singleShot=True, interval=400)
        self._measure_timer.timeout.connect(self._start_measure)
        for signal in (self.n_ctx.valueChanged, self.kv_type.currentIndexChanged,
                       self.flash_attn.toggled, self.gpu_layers.valueChanged):
            signal.connect(self._on_settings_changed)
        self.kv_type.currentTextChanged.connect(
            lambda t: t != "f16" and self.flash_attn.setChecked(True))
        self._render()

    # ------------------------------------------------------------ inputs

    def set_model(self, path: str) -> None:
        """Read the model's header off the GUI thread, then plan."""
        op(read_model_header, path).success(self.set_header).run()

    def set_header(self, header: GGUFHeader) -> None:
        self.header = header
        self.shape = ModelShape.from_header(header)
        self.measured = self._measured_for = None
        bpw = header.bits_per_weight
        name = DISPLAY_NAME if is_builtin(header.path) else header.name
        self.model_label.setText(
            f"<b>{html.escape(name)}</b><br>{header.architecture}, {header.n_params / 1e6:,.0f}M "
            f"params, {describe_quantization(header)} ({bpw:.2f} bits/weight), "
            f"{fmt_bytes(header.file_size)}, trained context {self.shape.n_ctx_train:,}")
        self.n_ctx.setMaximum(max(self.shape.n_ctx_train, 256))
        self._on_settings_changed()

    def set_snapshot(self, snapshot: HardwareSnapshot) -> None:
        self.snapshot = snapshot
        self._on_settings_changed()

    def set_request(self, n_ctx: int, kv_type: str, flash_attn: bool,
                    gpu_layers: int | None) -> None:
        """gpu_layers as llama.cpp takes it (negative: all), or None for the planner's."""
        self.n_ctx.setValue(n_ctx)
        self.kv_type.setCurrentText(kv_type)
        self.flash_attn.setChecked(flash_attn)
        if gpu_layers is None:
            self.gpu_layers.setValue(-1)  # "Auto"
        else:
            self.gpu_layers.setValue(gpu_layers if gpu_layers >= 0
                                     else self.gpu_layers.maximum())

    def request(self) -> FitRequest:
        kv = self.kv_type.currentText()
        layers = self.gpu_layers.value()
        return FitRequest(n_ctx=self.n_ctx.value(), type_k=kv, type_v=kv,
                          flash_attn=self.flash_attn.isChecked(),
                          n_gpu_layers=None if layers < 0 else layers)

    def budgets(self) -> list[DeviceBudget]:
        return budgets_from_snapshot(self.snapshot)

    # ------------------------------------------------------------ planning

    def _on_settings_changed(self, *_args: object) -> None:
        self._replan()
        # llama.cpp's sizing costs a child process: only for a panel someone is looking at.
        if self.header is not None and self.isVisible():
            self._measure_timer.start()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.header is not None and self._measured_for != replace(self.request(),
                                                                     n_gpu_layers=None):
            self._measure_timer.start()

    def _replan(self) -> None:
        if self.shape is None:
            self.plan = None
        else:
            req = self.request()
            # Only KV sizes measured for these exact settings stand in for the formula.
            usable = self.measured if self._measured_for == replace(req, n_gpu_layers=None) \
                else None
            self.plan = plan(self.shape, req, self.budgets(), usable)
        self._render()
        if self.plan is not None:
            self.sig_plan_changed.emit(self.plan)

    def _start_measure(self) -> None:
        if self.header is None or self.header.path is None or not Path(
                str(self.header.path)).is_file():
            return
        req = replace(self.request(), n_gpu_layers=None)
        if req.type_v != "f16" and not req.flash_attn:
            return  # llama.cpp refuses it; the planner already says why
        self._measuring = req
        op(measure, self.header.path, req).success(self._on_measured).failure(
            self._on_measure_failed).run()

    def _on_measured(self, result: Measured) -> None:
        if replace(self.request(), n_gpu_layers=None) == self._measuring:
            self.measured, self._measured_for = result, self._measuring
            self._replan()

    def _on_measure_failed(self, _exc: BaseException) -> None:
        # The formulas stand; the method line keeps saying so.
        pass

    # ------------------------------------------------------------ view

    def _render(self) -> None:
        p = self.plan
        if p is None:
            self.verdict.setText("Choose a model to see whether it fits.")
            self.table.setColumnCount(0)
            self.details.clear()
            return
        colour = VERDICT_COLOURS[p.verdict]
        layers = "all" if p.n_gpu_layers > (self.shape.n_layer if self.shape else 0) else \
            str(p.n_gpu_layers)
        self.verdict.setText(
            f"<span style='font-size: 15px; font-weight: 600; color: {colour}'>{p.summary}"
            f"</span><br>Loads with GPU layers: {layers} · largest context that fits: "
            f"{p.max_ctx:,} tokens")
        self.table.setColumnCount(len(p.devices))
        self.table.setHorizontalHeaderLabels(
            [f"{d.device} ({d.layers} layers)" if d.kind == "gpu" else d.device
             for d in p.devices])
        for col, device in enumerate(p.devices):
            values = {"weights": device.weights, "kv": device.kv, "compute": device.compute,
                      "output": device.output, "reserve": device.reserve,
                      "total": device.total, "free": device.free_bytes}
            for row, key in enumerate(ROWS):
                item = QTableWidgetItem(fmt_bytes(values[key]) if values[key] < 1 << 61
                                        else "—")
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if key == "total" and not device.fits:
                    item.setForeground(Qt.GlobalColor.red)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        how = ", ".join(f"{k}: {v}" for k, v in p.method.items())
        parts = [f"<small>How: {how}</small>"]
        parts += [f"⚠ {problem}" for problem in p.problems]
        if self.shape is not None and self.header is not None:
            bpw = self.header.bits_per_weight
            parts += [f"→ {fix}" for fix in fixes_for(self.shape, p, bpw)]
        self.details.setText("<br>".join(parts))
