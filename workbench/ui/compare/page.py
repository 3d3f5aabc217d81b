"""The Compare page: one prompt, one fixed seed, two columns that differ in one thing,
generated one after the other on the one engine, with where the replies part marked."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import replace

from PySide6.QtCore import Qt
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from workbench.chat.compare import (
    AXIS_LABELS,
    CompareAxis,
    CompareSetup,
    Variant,
    first_divergence,
)
from workbench.chat.knobs import PRESETS
from workbench.engine.protocol import ChatDone, EngineDied, EngineError, Sampling
from workbench.ui import notify
from workbench.ui.compare.columns import CompareColumn
from workbench.ui.compare.runner import CompareRunner

DEFAULT_PROMPT = "Write one sentence about the sea."


class ComparePage(QWidget):
    def __init__(self, runner: CompareRunner, base_sampling: Callable[[], Sampling],
                 current_model: Callable[[], str | None],
                 usable_adapters: Callable[[], list[tuple[str, str]]] = list,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.base_sampling = base_sampling
        self.current_model = current_model
        self.usable_adapters = usable_adapters

        self.prompt = QPlainTextEdit(DEFAULT_PROMPT)
        self.prompt.setFixedHeight(64)
        self.axis = QComboBox()
        for key, label in AXIS_LABELS.items():
            self.axis.addItem(label, key)
        self.axis.setToolTip("What the two columns differ in; everything else is shared.")
        self.axis.currentIndexChanged.connect(self._on_axis_changed)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=42)
        self.seed.setToolTip("Both replies use this seed, so only the difference between "
                             "the columns can make them differ.")
        self.max_tokens = QSpinBox(minimum=1, maximum=4096, value=96, singleStep=16)
        self.run_button = QPushButton("Run A then B")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.runner.stop)
        self.status = QLabel("")

        base = base_sampling()
        self.columns = (CompareColumn("A", PRESETS["Precise"]),
                        CompareColumn("B", replace(PRESETS["Creative"], stop=base.stop)))
        self.differences = QLabel("")
        self.differences.setWordWrap(True)
        self.summary = QLabel("")
        self.summary.setObjectName("compare-summary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        controls = QHBoxLayout()
        for label, widget in (("Differ in", self.axis), ("Seed", self.seed),
                              ("Max new tokens", self.max_tokens)):
            controls.addWidget(QLabel(label))
            controls.addWidget(widget)
        controls.addStretch(1)
        controls.addWidget(self.status)
        controls.addWidget(self.run_button)
        controls.addWidget(self.stop_button)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        for column in self.columns:
            splitter.addWidget(column)
            column.sampling_editor.sig_changed.connect(self._show_differences)
            column.model_editor.sig_changed.connect(self._show_differences)
            column.adapter_editor.sig_changed.connect(self._show_differences)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Prompt</b> — both columns answer it, one after the "
                                "other, on the same engine"))
        layout.addWidget(self.prompt)
        layout.addLayout(controls)
        layout.addWidget(self.differences)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.summary)

        runner.sig_step.connect(self.status.setText)
        runner.sig_column_started.connect(self._on_runner_column_started)
        runner.sig_column_token.connect(self._on_runner_column_token)
        runner.sig_column_done.connect(self._on_runner_column_done)
        runner.sig_finished.connect(self._on_runner_finished)
        runner.sig_failed.connect(self._on_runner_failed)
        self.prompt.textChanged.connect(self._show_differences)
        self.seed.valueChanged.connect(self._show_differences)
        self._on_axis_changed()

    # ------------------------------------------------------------ setup

    def axis_key(self) -> CompareAxis:
        return self.axis.currentData()

    def set_axis(self, axis: CompareAxis) -> None:
        self.axis.setCurrentIndex(self.axis.findData(axis))

    def set_models(self, models: list[tuple[str, str]]) -> None:
        """The models the model axis offers: (label, path), e.g. the Library's."""
        for column in self.columns:
            column.model_editor.set_models(models)
        current = self.current_model()
        a, b = (c.model_editor for c in self.columns)
        if current and not a.model_path():
            a.select(current)
        if not b.model_path() or b.model_path() == a.model_path():
            other = next((p for _, p in models if p != a.model_path()), None)
            if other:
                b.select(other)
        self._show_differences()

    def compare_setup(self) -> CompareSetup:
        """The setup the columns describe now: only the chosen axis differs."""
        base = replace(self.base_sampling(), max_tokens=self.max_tokens.value())
        axis = self.axis_key()
        variants = []
        for column in self.columns:
            path, sampling = self.current_model() or "", base
            adapters: tuple | None = None  # as the Adapters page applies them
            if axis == "model":
                # Bare models: the user's adapters were made for one of them at most.
                path, adapters = column.model_editor.model_path(), ()
            elif axis == "adapter":
                adapters = column.adapter_editor.adapters()
            else:
                sampling = replace(column.sampling_editor.sampling(),
                                   max_tokens=base.max_tokens, stop=base.stop)
            variants.append(Variant(column.label, path, sampling, adapters))
        return CompareSetup(self.prompt.toPlainText().strip(), self.seed.value(), *variants)

    def set_axes_unavailable(self, reasons: dict[str, str | None]) -> None:
        """Grey out the axes this engine cannot vary, with the reason as their tooltip;
        a greyed-out axis that was chosen gives way to sampling."""
        items = self.axis.model()
        for i in range(self.axis.count()):
            reason = reasons.get(self.axis.itemData(i))
            item = items.item(i)  # type: ignore[attr-defined]
            item.setEnabled(reason is None)
            item.setToolTip(reason or "")
        if reasons.get(self.axis_key()):
            self.set_axis("sampling")

    def refresh_adapters(self) -> None:
        """Offer the Adapters page's usable adapters; B defaults to the first one."""
        adapters = self.usable_adapters()
        for column in self.columns:
            column.adapter_editor.set_adapters(adapters)
        b = self.columns[1].adapter_editor
        if adapters and not b.adapter_path():
            b.select(adapters[0][1])
        self._show_differences()

    def showEvent(self, event: QShowEvent) -> None:
        self.refresh_adapters()
        super().showEvent(event)

    def _on_axis_changed(self, *_args: object) -> None:
        item = self.axis.model().item(self.axis.currentIndex())  # type: ignore[attr-defined]
        if item is not None and not item.isEnabled():  # chosen in code: not on this engine
            self.set_axis("sampling")
            return
        if self.axis_key() == "adapter":
            self.refresh_adapters()
        for column in self.columns:
            column.show_axis(self.axis_key())
        self._show_differences()

    def _show_differences(self, *_args: object) -> None:
        setup = self.compare_setup()
        found = setup.differences()
        text = ("<b>A and B differ in:</b> " + html.escape("; ".join(found)) if found else
                "<b>A and B are the same</b>: with one seed they should give the same reply "
                "— a determinism check.")
        if self.axis_key() != "sampling":
            s = setup.a.sampling
            text += (f"<br>Both use the chat's sampling settings (temperature "
                     f"{s.temperature:g}, top-k {s.top_k}, top-p {s.top_p:g}, min-p "
                     f"{s.min_p:g}) and seed {setup.seed}.")
        self.differences.setText(text)

    # ------------------------------------------------------------ running

    def run(self) -> bool:
        setup = self.compare_setup()
        problem = setup.problem() or self.runner.busy_reason()
        if problem:
            notify.warning("Cannot compare yet", problem, key="compare")
            return False
        notify.dismiss("compare")
        for column in self.columns:
            column.clear()
        self.summary.setText("")
        self._set_running(True)
        self.runner.start(setup)
        return True

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.axis.setEnabled(not running)

    def _on_runner_column_started(self, column: int) -> None:
        self.columns[column].clear()

    def _on_runner_column_token(self, column: int, text: str) -> None:
        self.columns[column].append(text)

    def _on_runner_column_done(self, column: int, done: ChatDone) -> None:
        self.columns[column].finish(done)

    def _on_runner_finished(self, completed: bool) -> None:
        self._set_running(False)
        a, b = (c.done for c in self.columns)
        if not completed or a is None or b is None:
            return
        divergence = first_divergence(a.text, b.text, a.token_ids, b.token_ids)
        for column in self.columns:
            column.mark_divergence(None if divergence.identical else divergence.char_index)
        self.summary.setText(divergence.summary(a.text, b.text))

    def _on_runner_failed(self, event: EngineError | EngineDied) -> None:
        notify.error("The comparison stopped", event.message, event.hint, key="compare")
