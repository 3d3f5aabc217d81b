"""One widget per decoding knob, built from the knob table (chat/knobs.py); shared by the
chat's settings panel and the compare view's columns."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QSpinBox, QWidget

from workbench.chat.knobs import Knob


def make_knob_widget(knob: Knob, on_change: Callable[..., None]) -> QWidget:
    """A spin box or choice box for `knob`, calling `on_change` when the user moves it."""
    if knob.kind == "choice":
        widget: QWidget = QComboBox()
        widget.addItems(list(knob.choices))
        widget.currentIndexChanged.connect(on_change)
    elif knob.kind == "int":
        widget = QSpinBox(minimum=int(knob.minimum), maximum=int(knob.maximum),
                          singleStep=int(knob.step))
        widget.valueChanged.connect(on_change)
    else:
        widget = QDoubleSpinBox(minimum=knob.minimum, maximum=knob.maximum,
                                singleStep=knob.step, decimals=knob.decimals)
        widget.valueChanged.connect(on_change)
    widget.setToolTip(knob.tooltip)
    widget.setObjectName(f"knob-{knob.key}")
    widget.setProperty("concept", knob.concept)
    return widget


def knob_value(widget: QWidget) -> float | int:
    if isinstance(widget, QComboBox):
        return widget.currentIndex()
    return widget.value()  # type: ignore[attr-defined]


def set_knob_value(widget: QWidget, value: float | int) -> None:
    if isinstance(widget, QComboBox):
        widget.setCurrentIndex(int(value))
    else:
        widget.setValue(value)  # type: ignore[attr-defined]
