"""One column of the compare view: what the variant changes (its sampling knobs or its
model) above, its reply and numbers below."""

from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStackedWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from workbench.chat.compare import ColumnStats
from workbench.chat.knobs import KNOBS_BY_KEY, PRESETS, apply_preset
from workbench.engine.protocol import AdapterSetting, ChatDone, Sampling
from workbench.ui.chat.knob_widgets import knob_value, make_knob_widget, set_knob_value

# The knobs a column offers: the ones that shape the distribution. Seed is shared and
# max tokens is set once for both; Mirostat replaces the chain and has its own concept.
COLUMN_KNOBS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty",
                "presence_penalty", "frequency_penalty")

DIVERGED_STYLE = "background-color: #ffe08a;"


class SamplingEditor(QWidget):
    sig_changed = Signal()
    """The settings changed (a knob, a preset, or set_sampling)."""

    def __init__(self, sampling: Sampling, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.preset = QComboBox()
        self.preset.addItems([*PRESETS, "Custom"])
        self.preset.textActivated.connect(self._on_preset_activated)
        form.addRow("Preset", self.preset)
        self.knob_widgets: dict[str, QWidget] = {}
        for key in COLUMN_KNOBS:
            knob = KNOBS_BY_KEY[key]
            widget = make_knob_widget(knob, self._on_knob_changed)
            self.knob_widgets[key] = widget
            form.addRow(knob.label, widget)
        self._sampling = sampling
        self._updating = False
        self.set_sampling(sampling)

    def sampling(self) -> Sampling:
        return self._sampling

    def set_sampling(self, sampling: Sampling) -> None:
        self._updating = True
        for key, widget in self.knob_widgets.items():
            set_knob_value(widget, getattr(sampling, key))
        self._updating = False
        self._sampling = sampling
        name = next((n for n in PRESETS if apply_preset(n, sampling, {}) == sampling),
                    "Custom")
        self.preset.setCurrentText(name)
        self.sig_changed.emit()

    def _on_preset_activated(self, name: str) -> None:
        if name in PRESETS:
            self.set_sampling(apply_preset(name, self._sampling, {}))

    def _on_knob_changed(self, *_args: object) -> None:
        if self._updating:
            return
        values = {key: knob_value(w) for key, w in self.knob_widgets.items()}
        self.set_sampling(replace(self._sampling, **values))


class ModelEditor(QWidget):
    sig_changed = Signal()
    """The user chose another model file."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(20)
        self.combo.currentIndexChanged.connect(lambda _i: self.sig_changed.emit())
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._on_browse_clicked)
        row.addWidget(self.combo, 1)
        row.addWidget(self.browse)

    def set_models(self, models: list[tuple[str, str]]) -> None:
        """(label, path) pairs; the current choice is kept when it is still there."""
        current = self.model_path()
        self.combo.blockSignals(True)
        self.combo.clear()
        for label, path in models:
            self.combo.addItem(label, path)
        self.combo.blockSignals(False)
        if current:
            self.select(current)

    def select(self, path: str) -> None:
        index = self.combo.findData(path)
        if index < 0:
            self.combo.addItem(Path(path).name, path)
            index = self.combo.count() - 1
        self.combo.setCurrentIndex(index)

    def model_path(self) -> str:
        return self.combo.currentData() or ""

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF model", "",
                                              "GGUF models (*.gguf);;All files (*)")
        if path:
            self.select(path)


class AdapterEditor(QWidget):
    sig_changed = Signal()
    """The user chose another adapter or scale."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(16)
        self.scale = QDoubleSpinBox(minimum=-2.0, maximum=2.0, singleStep=0.1, value=1.0,
                                    decimals=2)
        self.scale.setToolTip("The adapter's scale s in h = W·x + s·(α/r)·B·A·x.")
        self.combo.currentIndexChanged.connect(lambda _i: self.sig_changed.emit())
        self.scale.valueChanged.connect(lambda _v: self.sig_changed.emit())
        row.addWidget(self.combo, 1)
        row.addWidget(QLabel("Scale"))
        row.addWidget(self.scale)
        self.set_adapters([])

    def set_adapters(self, adapters: list[tuple[str, str]]) -> None:
        """(label, path) of the adapters on the Adapters page that fit the model."""
        current = self.adapter_path()
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItem("No adapter (base model)", "")
        for label, path in adapters:
            self.combo.addItem(label, path)
        index = self.combo.findData(current)
        self.combo.setCurrentIndex(max(index, 0))
        self.combo.blockSignals(False)

    def select(self, path: str, scale: float = 1.0) -> None:
        index = self.combo.findData(path)
        if index >= 0:
            self.combo.setCurrentIndex(index)
        self.scale.setValue(scale)

    def adapter_path(self) -> str:
        return self.combo.currentData() or ""

    def adapters(self) -> tuple[AdapterSetting, ...]:
        path = self.adapter_path()
        return (AdapterSetting(path, self.scale.value()),) if path else ()


class CompareColumn(QWidget):
    """Column A or B."""

    def __init__(self, label: str, sampling: Sampling, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = label
        self.title = QLabel(f"<b>{label}</b>")
        self.sampling_editor = SamplingEditor(sampling)
        self.model_editor = ModelEditor()
        self.adapter_editor = AdapterEditor()
        self.editors = QStackedWidget()
        self.editors.addWidget(self.sampling_editor)
        self.editors.addWidget(self.model_editor)
        self.editors.addWidget(self.adapter_editor)
        self.reply = QTextBrowser()
        self.reply.setObjectName(f"compare-reply-{label}")
        self.reply.setOpenLinks(False)
        self.stats = QLabel("")
        self.stats.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.editors)
        layout.addWidget(self.reply, 1)
        layout.addWidget(self.stats)
        self.text = ""
        self.done: ChatDone | None = None

    def show_axis(self, axis: str) -> None:
        self.editors.setCurrentWidget({"model": self.model_editor,
                                       "adapter": self.adapter_editor}.get(
                                           axis, self.sampling_editor))
        self.editors.setFixedHeight(self.editors.currentWidget().sizeHint().height())

    def clear(self) -> None:
        self.text = ""
        self.done = None
        self.reply.clear()
        self.stats.setText("")

    def append(self, text: str) -> None:
        self.text += text
        self.reply.setPlainText(self.text)

    def finish(self, done: ChatDone) -> None:
        self.done = done
        self.text = done.text
        self.reply.setPlainText(self.text)
        self.stats.setText(ColumnStats.from_done(done).line())

    def mark_divergence(self, char_index: int | None) -> None:
        """Show the reply with the part after the common prefix highlighted."""
        if char_index is None or char_index >= len(self.text):
            body = html.escape(self.text)
        else:
            same, rest = self.text[:char_index], self.text[char_index:]
            body = (f"{html.escape(same)}<span style='{DIVERGED_STYLE}'>"
                    f"{html.escape(rest)}</span>")
        self.reply.setHtml(f"<div style='white-space: pre-wrap'>{body}</div>")
