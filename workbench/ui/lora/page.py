"""The Adapters page: LoRA adapters on the loaded model, several at once, each switched on
or off and scaled live (no reload); what each one is; PEFT import; training."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from workbench.engine.protocol import AdapterSetting, AdaptersSet, EngineError, ModelInfo
from workbench.lora.gguf_lora import AdapterError, AdapterInfo, check_compatible, read_adapter
from workbench.lora.peft_import import convert_peft_adapter
from workbench.models.gguf import GGUFHeader
from workbench.models.split import read_model_header
from workbench.ui import notify
from workbench.ui.engine_controller import EngineController
from workbench.ui.lora.rows import AdapterRow
from workbench.ui.lora.train_panel import TrainPanel
from workbench.ui.tasks import op

APPLY_DELAY_MS = 120  # a dragged slider applies once it rests, not at every pixel


def describe_adapter(info: AdapterInfo, base_params: int | None, scale: float) -> str:
    """The details pane for one adapter, as rich text."""
    share = (f" — {info.share_of(base_params):.3%} of the base model's {base_params:,}"
             if base_params else "")
    rank = (f"{info.min_rank}–{info.rank} (differs per tensor)" if info.ranks_differ
            else str(info.rank))
    rows = [
        ("File", f"{html.escape(info.path.name)} ({info.file_size / 2**20:,.1f} MiB)"),
        ("Made for", html.escape(info.base_model_name or "not recorded in the file")),
        ("Architecture", html.escape(info.architecture)),
        ("Rank r", rank),
        ("Alpha α", f"{info.alpha:g}" if info.alpha else "not set (llama.cpp then uses 1)"),
        ("Targets", html.escape(", ".join(info.target_modules))
         + f" in {info.n_layers_touched} layers"),
        ("Trainable parameters", f"{info.n_params:,}{share}"),
        ("Effective factor", f"s·α/r = {scale:g} × {info.scale_at(1.0):g} = "
                             f"{info.scale_at(scale):g}"),
    ]
    table = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in rows)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in info.notes)
    return (f"<table cellspacing=4>{table}</table>"
            + (f"<ul>{notes}</ul>" if notes else "")
            + "<p>h = W·x + s·(α/r)·B·A·x: the adapter adds a low-rank update B·A to each "
              "targeted weight W, and the scale s sets how much of it applies. "
              "<a href='concept:lora'>What is LoRA?</a></p>")


class AdaptersPage(QWidget):
    sig_adapters_changed = Signal(tuple)
    """The list or a setting changed (tuple of AdapterSetting), for the settings file."""
    sig_show_concept = Signal(str)
    """Open this concept in the explainer."""

    def __init__(self, engine: EngineController, adapters: tuple[AdapterSetting, ...],
                 adapters_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.adapters_dir = adapters_dir
        self.rows: list[AdapterRow] = []
        self.base_header: GGUFHeader | None = None
        self.selected: AdapterRow | None = None
        self._apply_timer = QTimer(self, singleShot=True, interval=APPLY_DELAY_MS)
        self._apply_timer.timeout.connect(self.apply)

        self.title = QLabel()
        self.add_button = QPushButton("Add GGUF adapter…")
        self.add_button.clicked.connect(self._on_add_clicked)
        self.import_button = QPushButton("Import PEFT adapter…")
        self.import_button.setToolTip("A folder with adapter_config.json and "
                                      "adapter_model.safetensors, converted to GGUF here.")
        self.import_button.clicked.connect(self._on_import_clicked)
        self.applied = QLabel("")
        self.list_area = QVBoxLayout()
        self.empty = QLabel("No adapters yet. Add a GGUF LoRA file, import a PEFT adapter, "
                            "or train one below.")
        self.empty.setWordWrap(True)
        self.list_area.addWidget(self.empty)
        self.list_area.addStretch(1)
        holder = QWidget()
        holder.setLayout(self.list_area)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(holder)
        self.details = QLabel("Select an adapter to see what it is.")
        self.details.setObjectName("adapter-details")
        self.details.setWordWrap(True)
        self.details.setMinimumWidth(320)
        self.details.linkActivated.connect(self._on_details_link_activated)

        buttons = QHBoxLayout()
        buttons.addWidget(self.title, 1)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.import_button)
        split = QSplitter()
        split.addWidget(scroll)
        split.addWidget(self.details)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.layout_ = QVBoxLayout(self)
        self.layout_.addLayout(buttons)
        self.layout_.addWidget(split, 1)
        self.layout_.addWidget(self.applied)
        self.train = TrainPanel(engine, adapters_dir)
        self.train.sig_trained.connect(self.add_adapter)
        self.layout_.addWidget(self.train)

        engine.sig_loaded.connect(self._on_engine_loaded)
        engine.sig_adapters_set.connect(self._on_engine_adapters_set)
        engine.sig_adapters_failed.connect(self._on_engine_adapters_failed)
        engine.sig_state_changed.connect(lambda _s: self._show_title())
        engine.sig_engine_switched.connect(self._on_engine_switched)
        for setting in adapters:
            self._add_row(setting)
        self._show_title()

    # ------------------------------------------------------------ list

    def settings(self) -> tuple[AdapterSetting, ...]:
        return tuple(r.setting for r in self.rows)

    def add_adapter(self, path: str, scale: float = 1.0) -> AdapterRow:
        """Put a GGUF adapter on the list (switched on) and apply it once it is checked."""
        existing = next((r for r in self.rows if Path(r.setting.path) == Path(path)), None)
        if existing is not None:
            self.select(existing)
            return existing
        row = self._add_row(AdapterSetting(path, scale, True))
        self._changed()
        return row

    def _add_row(self, setting: AdapterSetting) -> AdapterRow:
        row = AdapterRow(setting)
        row.sig_changed.connect(self._changed)
        row.sig_selected.connect(lambda: self.select(row))
        row.sig_remove.connect(lambda: self.remove(row))
        self.rows.append(row)
        self.list_area.insertWidget(len(self.rows) - 1, row)
        self.empty.hide()
        self._read(row)
        if self.selected is None:
            self.select(row)
        return row

    def remove(self, row: AdapterRow) -> None:
        self.rows.remove(row)
        row.hide()
        row.deleteLater()
        if self.selected is row:
            self.selected = None
            self.details.setText("Select an adapter to see what it is.")
        self.empty.setVisible(not self.rows)
        self._changed()

    def select(self, chosen: AdapterRow) -> None:
        self.selected = chosen
        for row in self.rows:
            row.setStyleSheet("AdapterRow { border: 2px solid #4a90d9; }" if row is chosen
                              else "")
        self._show_details()

    def _show_details(self) -> None:
        row = self.selected
        if row is None:
            return
        if row.info is None:
            self.details.setText(html.escape(row.read_error or "Reading…"))
            return
        base = self.engine.model.n_params if self.engine.model else None
        self.details.setText(describe_adapter(row.info, base, row.setting.scale))

    def _changed(self) -> None:
        self.sig_adapters_changed.emit(self.settings())
        self._show_details()
        self._apply_timer.start()

    # ------------------------------------------------------------ reading and checking

    def _read(self, row: AdapterRow) -> None:
        def read_failed(exc: BaseException) -> None:
            row.set_info(None, str(exc) if isinstance(exc, AdapterError)
                         else f"Cannot read {Path(row.setting.path).name}: {exc}")
            self._show_details()

        def read(info: AdapterInfo) -> None:
            row.set_info(info)
            self._check(row)
            self._show_details()
            self._apply_timer.start()

        op(read_adapter, row.setting.path).success(read).failure(read_failed).run()

    def _check(self, row: AdapterRow) -> None:
        if row.info is not None and self.base_header is not None:
            row.set_problems(check_compatible(row.info, self.base_header))

    def _on_engine_switched(self, _kind: str) -> None:
        self.base_header = None  # the old engine's model is gone
        remote = self.engine.unavailable("adapters")
        self.import_button.setEnabled(remote is None)  # converting reads the base's file
        self._show_title()

    def _on_engine_loaded(self, info: ModelInfo) -> None:
        self.base_header = None
        self._show_title()
        if self.engine.is_remote:
            return  # no file here to check adapters against, nothing to apply them to

        def have_base(header: GGUFHeader) -> None:
            if self.engine.model is None or self.engine.model.path != info.path:
                return  # another model was loaded meanwhile
            self.base_header = header
            for row in self.rows:
                self._check(row)
            self.apply()

        op(read_model_header, info.path).success(have_base).run()

    # ------------------------------------------------------------ applying

    def wanted(self) -> tuple[AdapterSetting, ...]:
        """What the engine should apply: switched-on rows that are read and fit."""
        return tuple(r.setting for r in self.rows if r.usable and r.setting.applies)

    def apply(self) -> None:
        if not self.engine.ready or self.base_header is None:
            return  # applied when the model is loaded and checked
        if self.engine.owner is not None:
            self._apply_timer.start(500)  # the compare view is running; try again soon
            return
        wanted = self.wanted()
        if wanted == self.engine.adapters:
            self._on_engine_adapters_set(AdaptersSet(0, wanted))
            return
        self.engine.set_adapters(wanted)

    def _on_engine_adapters_set(self, event: AdaptersSet) -> None:
        active = {Path(a.path) for a in event.active}
        for row in self.rows:
            row.show_status(applied=Path(row.setting.path) in active)
        self.applied.setText(
            f"{len(event.active)} adapter{'s' if len(event.active) != 1 else ''} applied; "
            "changes apply at once, without reloading the model." if event.active else
            "No adapter applied: the model answers as it was trained.")

    def _on_engine_adapters_failed(self, event: EngineError) -> None:
        notify.error("Adapter not applied", event.message, event.hint, key="adapter")

    def _show_title(self) -> None:
        model = self.engine.model
        remote = self.engine.unavailable("adapters")
        if remote:
            self.title.setText(f"<b>LoRA adapters</b> — unavailable on a remote server. "
                               f"{html.escape(remote)}")
            self.title.setWordWrap(True)
        else:
            self.title.setText(f"<b>LoRA adapters</b> on {html.escape(model.name)}" if model
                               else "<b>LoRA adapters</b> — load a model to apply them")

    # ------------------------------------------------------------ adding

    def _on_add_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a GGUF LoRA adapter",
                                              str(self.adapters_dir),
                                              "GGUF adapters (*.gguf);;All files (*)")
        if path:
            self.add_adapter(path)

    def _on_import_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a PEFT adapter folder")
        if folder:
            self.import_peft(folder)

    def import_peft(self, folder: str,
                    then: Callable[[AdapterRow], None] | None = None) -> None:
        """Convert a PEFT adapter for the loaded model off the GUI thread, then list it."""
        model = self.engine.model
        if model is None:
            notify.warning("Load a model first",
                           "A PEFT adapter is converted for the model it will run on.",
                           key="adapter")
            return
        self.adapters_dir.mkdir(parents=True, exist_ok=True)
        out = self.adapters_dir / f"{Path(folder).name}.gguf"
        self.import_button.setEnabled(False)

        def done(info: AdapterInfo) -> None:
            notify.info("Adapter imported", f"{Path(folder).name} is converted to "
                        f"{info.path.name} and applied.", key="adapter")
            row = self.add_adapter(str(info.path))
            if then is not None:
                then(row)

        def failed(exc: BaseException) -> None:
            if isinstance(exc, AdapterError):
                notify.error("Cannot import this adapter", exc.message, exc.hint,
                             key="adapter")
            else:
                notify.error("Cannot import this adapter", str(exc), key="adapter")

        (op(convert_peft_adapter, folder, model.path, out).success(done).failure(failed)
         .finally_(lambda: self.import_button.setEnabled(True)).run())

    def _on_details_link_activated(self, link: str) -> None:
        if link.startswith("concept:"):
            self.sig_show_concept.emit(link.removeprefix("concept:"))
