"""One row of the Adapters list: on/off, scale slider, what the engine made of it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QWidget,
)

from workbench.engine.protocol import AdapterSetting
from workbench.lora.gguf_lora import AdapterInfo, Problem

SCALE_MIN, SCALE_MAX = -2.0, 2.0
_SLIDER_STEPS = 100  # slider units per 1.0 of scale


class AdapterRow(QFrame):
    sig_changed = Signal()
    """The user switched the adapter or moved its scale."""
    sig_selected = Signal()
    """The user clicked the row (show its details)."""
    sig_remove = Signal()
    """The user asked to take the adapter off the list."""

    def __init__(self, setting: AdapterSetting, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setting = setting
        self.info: AdapterInfo | None = None
        self.problems: list[Problem] = []
        self.read_error: str | None = None
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.enabled = QCheckBox(Path(setting.path).stem)
        self.enabled.setChecked(setting.enabled)
        self.enabled.setToolTip(setting.path)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(int(SCALE_MIN * _SLIDER_STEPS), int(SCALE_MAX * _SLIDER_STEPS))
        self.slider.setMinimumWidth(160)
        self.scale = QDoubleSpinBox(minimum=SCALE_MIN, maximum=SCALE_MAX, singleStep=0.05,
                                    decimals=2)
        self.scale.setToolTip("How strongly the adapter applies: 0 is the base model, 1 is "
                              "as trained, negative pushes the other way.")
        self.status = QLabel("Reading…")
        self.status.setWordWrap(True)
        self.remove = QPushButton("Remove")
        layout = QHBoxLayout(self)
        layout.addWidget(self.enabled, 2)
        layout.addWidget(self.slider, 2)
        layout.addWidget(self.scale)
        layout.addWidget(self.status, 3)
        layout.addWidget(self.remove)
        self._set_scale_widgets(setting.scale)
        self.enabled.toggled.connect(self._on_enabled_toggled)
        self.slider.valueChanged.connect(self._on_slider_value_changed)
        self.scale.valueChanged.connect(self._on_scale_value_changed)
        self.remove.clicked.connect(self.sig_remove.emit)

    # ------------------------------------------------------------ state

    @property
    def usable(self) -> bool:
        """Readable and fits the loaded model (soft problems allowed)."""
        return (self.info is not None and self.read_error is None
                and not any(p.fatal for p in self.problems))

    def set_info(self, info: AdapterInfo | None, error: str | None = None) -> None:
        self.info, self.read_error = info, error
        self.show_status()

    def set_problems(self, problems: list[Problem]) -> None:
        self.problems = problems
        self.show_status()

    def show_status(self, applied: bool | None = None) -> None:
        if self.read_error:
            text, colour = self.read_error, "#b3261e"
        elif self.info is None:
            text, colour = "Reading…", "#555"
        elif any(p.fatal for p in self.problems):
            text = next(p.text for p in self.problems if p.fatal)
            colour = "#b3261e"
        elif applied:
            text, colour = f"Applied at {self.setting.scale:g}", "#1b6e20"
        elif applied is False or not self.setting.applies:
            text, colour = "Off", "#555"
        else:
            text, colour = "Fits the loaded model", "#555"
        soft = [p.text for p in self.problems if not p.fatal]
        if soft and not self.read_error:
            text += " — " + " ".join(soft)
        self.status.setText(f"<span style='color:{colour}'>{text}</span>")

    # ------------------------------------------------------------ events

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.sig_selected.emit()
        super().mousePressEvent(event)

    def _set_scale_widgets(self, scale: float) -> None:
        for w in (self.slider, self.scale):
            w.blockSignals(True)
        self.slider.setValue(round(scale * _SLIDER_STEPS))
        self.scale.setValue(scale)
        for w in (self.slider, self.scale):
            w.blockSignals(False)

    def _on_enabled_toggled(self, on: bool) -> None:
        self.setting = replace(self.setting, enabled=on)
        self.sig_changed.emit()

    def _on_slider_value_changed(self, value: int) -> None:
        self.set_scale(value / _SLIDER_STEPS)

    def _on_scale_value_changed(self, value: float) -> None:
        self.set_scale(value)

    def set_scale(self, scale: float) -> None:
        scale = round(max(SCALE_MIN, min(SCALE_MAX, scale)), 2)
        self._set_scale_widgets(scale)
        if scale != self.setting.scale:
            self.setting = replace(self.setting, scale=scale)
            self.sig_changed.emit()
