"""Train a LoRA on the loaded model from a JSONL of chat examples: settings, a progress
bar, the live loss, Cancel. The training runs in a child process (torch, transformers and
peft never load into the app); its stdout is one JSON event per line."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QProcess, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from workbench.lora.chat_examples import DataError, read_examples
from workbench.lora.train import (
    DEFAULT_TARGETS,
    TrainConfig,
    TrainEvent,
    discard_partial,
    parse_progress_line,
    train_available,
    train_command,
)
from workbench.resources import resources_dir
from workbench.ui import notify
from workbench.ui.engine_controller import EngineController
from workbench.ui.lora.loss_plot import LossPlot
from workbench.ui.tasks import op

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_STDERR_KEPT = 4000  # characters of the child's stderr kept for an error message


def example_data() -> Path:
    return resources_dir() / "train" / "marker_example.jsonl"


class TrainPanel(QGroupBox):
    sig_trained = Signal(str)
    """A training run finished: the GGUF adapter's path."""

    def __init__(self, engine: EngineController, out_dir: Path,
                 parent: QWidget | None = None) -> None:
        super().__init__("Train a new adapter", parent)
        self.engine = engine
        self.out_dir = out_dir
        self.process: QProcess | None = None
        self.config: TrainConfig | None = None
        self.result: TrainEvent | None = None  # the "done" or "error" event
        self._stdout_rest = ""
        self._stderr = ""
        self._cancelled = False

        self.data = QLineEdit(str(example_data()))
        self.data.setToolTip('A .jsonl file: one {"messages": [...]} chat per line; the '
                             "loss counts only the assistant's words.")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        self.name = QLineEdit("")
        self.name.setPlaceholderText("the data file's name")
        self.rank = QSpinBox(minimum=1, maximum=256, value=8)
        self.alpha = QDoubleSpinBox(minimum=0.5, maximum=512.0, value=16.0, decimals=1)
        self.targets = {m: QCheckBox(m) for m in TARGETS}
        for m, box in self.targets.items():
            box.setChecked(m in DEFAULT_TARGETS)
        # decimals before value: Qt rounds a value to the decimals in force when it is set
        # (2 by default), and 2e-3 rounded to 0.00 would clamp to the minimum, 1e-5.
        self.learning_rate = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=0.1,
                                            singleStep=1e-4)
        self.learning_rate.setValue(2e-3)
        self.epochs = QSpinBox(minimum=1, maximum=100, value=10)
        self.max_steps = QSpinBox(minimum=0, maximum=100_000, value=0)
        self.max_steps.setSpecialValueText("from the epochs")
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setFormat("step %v of %m")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.plot = LossPlot()
        self.unavailable = QLabel("")
        self.unavailable.setWordWrap(True)
        self.unavailable.setObjectName("train-unavailable")

        data_row = QHBoxLayout()
        data_row.addWidget(self.data, 1)
        data_row.addWidget(browse)
        target_row = QHBoxLayout()
        for box in self.targets.values():
            target_row.addWidget(box)
        form = QFormLayout()
        form.addRow("Examples (JSONL)", data_row)
        form.addRow("Adapter name", self.name)
        form.addRow("Rank r / alpha α", self._pair(self.rank, self.alpha))
        form.addRow("Target modules", target_row)
        form.addRow("Learning rate", self.learning_rate)
        form.addRow("Epochs / max steps", self._pair(self.epochs, self.max_steps))
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)
        self.controls = QWidget()
        controls = QVBoxLayout(self.controls)
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addLayout(form)
        controls.addLayout(buttons)
        controls.addWidget(self.status)
        controls.addWidget(self.plot)
        layout = QVBoxLayout(self)
        layout.addWidget(self.unavailable)
        layout.addWidget(self.controls)
        self._missing = train_available()
        engine.sig_engine_switched.connect(lambda _kind: self.show_availability(self._missing))
        self.show_availability(self._missing)

    @staticmethod
    def _pair(a: QWidget, b: QWidget) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(a)
        row.addWidget(b)
        return box

    def show_availability(self, missing: str | None) -> None:
        """Instead of the controls, say what stands in the way: on a remote model, that
        training needs a local one; without the training packages, how to get them (both,
        when both hold: a person fixing one should not then meet the other)."""
        self._missing = missing
        remote = self.engine.unavailable("model_file")
        reasons = []
        if remote:
            reasons.append(f"<b>Training needs a model on this computer.</b> "
                           f"{html.escape(remote)}")
        if missing:
            reasons.append("<b>Training is not installed.</b>"
                           f"<pre>{html.escape(missing)}</pre>")
        text = "<br>".join(reasons)
        self.unavailable.setVisible(bool(text))
        self.unavailable.setText(text)
        self.controls.setEnabled(not text)

    @property
    def running(self) -> bool:
        return self.process is not None

    # ------------------------------------------------------------ start

    def train_config(self) -> TrainConfig | None:
        model = self.engine.model
        if model is None or self.engine.is_remote:
            return None
        return TrainConfig(
            base_gguf=model.path, data_path=self.data.text().strip(),
            out_dir=str(self.out_dir), name=self.name.text().strip(),
            rank=self.rank.value(), alpha=self.alpha.value(),
            target_modules=tuple(m for m, box in self.targets.items() if box.isChecked()),
            learning_rate=self.learning_rate.value(), epochs=self.epochs.value(),
            max_steps=self.max_steps.value())

    def start(self) -> None:
        if self.running:
            return
        config = self.train_config()
        if config is None:
            notify.warning("Load a model first", "An adapter is trained on the loaded model.",
                           key="train")
            return
        problems = config.problems()
        if problems:
            notify.error("Cannot train with these settings", "; ".join(problems) + ".",
                         key="train")
            return

        def checked(examples: list) -> None:
            self.status.setText(f"{len(examples)} examples read; starting…")
            self._launch(config)

        def bad_data(exc: BaseException) -> None:
            hint = exc.hint if isinstance(exc, DataError) else ""
            notify.error("Cannot train on this file", str(exc), hint, key="train")

        self.train_button.setEnabled(False)
        (op(read_examples, config.data_path).success(checked).failure(bad_data)
         .finally_(lambda: self.train_button.setEnabled(not self.running)).run())

    def _launch(self, config: TrainConfig) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        settings = config.save(self.out_dir / f".{config.adapter_name}.train.json")
        self.config, self.result = config, None
        self._stdout_rest, self._stderr, self._cancelled = "", "", False
        self.plot.clear()
        self.progress.setRange(0, 0)  # busy until the child says how many steps
        self.process = QProcess(self)
        self.process.readyReadStandardOutput.connect(self._on_process_stdout)
        self.process.readyReadStandardError.connect(self._on_process_stderr)
        self.process.finished.connect(self._on_process_finished)
        self.process.errorOccurred.connect(self._on_process_error)
        command = train_command(settings)
        self.process.start(command[0], command[1:])
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        notify.dismiss("train")

    def cancel(self) -> None:
        if self.process is None:
            return
        self._cancelled = True
        self.status.setText("Cancelling…")
        process = self.process
        process.terminate()  # the child stops at the next step and removes its parts
        # Never wait here: if it has not gone in 3 s, kill it.
        # The process is the timer's context: were it deleted first, the timer is dropped.
        QTimer.singleShot(3000, process, process.kill)

    # ------------------------------------------------------------ the child's output

    def _on_process_stdout(self) -> None:
        assert self.process is not None
        text = self._stdout_rest + bytes(self.process.readAllStandardOutput()).decode(
            "utf-8", errors="replace")
        *lines, self._stdout_rest = text.split("\n")
        for line in lines:
            event = parse_progress_line(line)
            if event is not None:
                self.handle_event(event)

    def _on_process_stderr(self) -> None:
        assert self.process is not None
        self._stderr = (self._stderr + bytes(self.process.readAllStandardError()).decode(
            "utf-8", errors="replace"))[-_STDERR_KEPT:]

    def handle_event(self, event: TrainEvent) -> None:
        if event.kind == "status":
            self.status.setText(event.message)
        elif event.kind == "started":
            self.progress.setRange(0, max(event.total_steps, 1))
            self.plot.clear(event.total_steps)
            self.status.setText(f"Training {event.trainable_params:,} parameters on "
                                f"{event.sequences} sequences…")
        elif event.kind == "step":
            self.progress.setValue(event.step)
            if event.loss is not None:
                self.plot.add(event.step, event.loss)
                self.status.setText(f"Step {event.step} of {event.total_steps}: loss "
                                    f"{event.loss:.3f} ({event.elapsed_s:.0f} s)")
        elif event.kind == "saved":
            self.status.setText("Converting the adapter to GGUF…")
        elif event.kind in ("done", "error"):
            self.result = event

    def _on_process_finished(self, exit_code: int, _status: QProcess.ExitStatus) -> None:
        self._on_process_stdout()  # lines written just before exit
        config, result = self.config, self.result
        self.process = None
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self._cancelled:
            if config is not None:
                discard_partial(config)
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.status.setText("Cancelled; nothing was kept.")
            return
        if result is not None and result.kind == "done":
            self.progress.setValue(self.progress.maximum())
            loss = f" (final loss {result.final_loss:.3f})" if result.final_loss else ""
            self.status.setText(f"Trained {Path(result.gguf).name}{loss}; it is on the list "
                                "above and applied.")
            self.sig_trained.emit(result.gguf)
            return
        if result is not None and result.kind == "error":
            notify.error("Training stopped", result.message, result.hint, key="train")
        else:
            tail = self._stderr.strip().splitlines()[-1:] or [f"exit code {exit_code}"]
            notify.error("Training stopped", f"The training process ended: {tail[0]}",
                         "Your conversations and other adapters are unaffected.",
                         key="train")
        self.status.setText("Training stopped.")

    def _on_process_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.process = None
            self.train_button.setEnabled(True)
            self.cancel_button.setEnabled(False)
            notify.error("Training could not start", "The training process did not start.",
                         key="train")

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Chat examples", self.data.text(),
                                              "JSON Lines (*.jsonl);;All files (*)")
        if path:
            self.data.setText(path)
