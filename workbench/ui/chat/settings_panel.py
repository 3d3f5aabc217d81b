"""The side panel: model and load settings, the conversation's system prompt, and the
decoding knobs with presets. Each knob tells the explainer when it gets focus."""

from __future__ import annotations

import html
from dataclasses import replace

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from workbench.chat.knobs import KNOBS, PRESETS, apply_preset
from workbench.engine.limits import LOAD_LIMITS
from workbench.engine.protocol import ModelInfo, Sampling
from workbench.engine.templates import template_names
from workbench.models.builtin import display_name
from workbench.settings import ModelSettings
from workbench.ui.chat.knob_widgets import knob_value, make_knob_widget, set_knob_value


def _lowest(key: str) -> int:
    return int(LOAD_LIMITS[key].minimum)


def _highest(key: str) -> int:
    return int(LOAD_LIMITS[key].maximum)


def parse_stop_strings(text: str) -> tuple[str, ...]:
    """One stop string per line; '\\n' and '\\t' written out stand for themselves."""
    out = []
    for line in text.splitlines():
        if line:
            out.append(line.replace("\\n", "\n").replace("\\t", "\t"))
    return tuple(out)


def format_stop_strings(stops: tuple[str, ...]) -> str:
    return "\n".join(s.replace("\n", "\\n").replace("\t", "\\t") for s in stops)


class SettingsPanel(QScrollArea):
    sig_sampling_changed = Signal(object)
    """The decoding settings changed (Sampling)."""
    sig_system_prompt_changed = Signal(str)
    """The user edited the conversation's system prompt."""
    sig_reload_requested = Signal(object)
    """Load the current model again with these ModelSettings."""
    sig_open_model = Signal()
    """The user wants to pick a GGUF file."""
    sig_load_builtin = Signal()
    """The user wants the built-in model."""
    sig_user_presets_changed = Signal(dict)
    """A user preset was saved (all user presets)."""
    sig_knob_focused = Signal(str, str)
    """(knob key, concept id): a knob got focus — the concept explainer's hook."""

    def __init__(self, sampling: Sampling, model: ModelSettings, preset: str,
                 user_presets: dict[str, dict], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumWidth(330)
        self.user_presets = dict(user_presets)
        self._sampling = sampling
        self._updating = False
        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.addWidget(self._build_model_group(model))
        layout.addWidget(self._build_system_group())
        layout.addWidget(self._build_sampling_group(preset))
        layout.addStretch(1)
        self.setWidget(inner)
        self.set_sampling(sampling)

    # ------------------------------------------------------------ model

    def _build_model_group(self, model: ModelSettings) -> QGroupBox:
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_label = QLabel("No model loaded")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        buttons = QHBoxLayout()
        self.open_button = QPushButton("Open GGUF…")
        self.builtin_button = QPushButton("Built-in")
        self.open_button.clicked.connect(self.sig_open_model.emit)
        self.builtin_button.clicked.connect(self.sig_load_builtin.emit)
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.builtin_button)
        form.addRow(buttons)

        self.n_ctx = QSpinBox(minimum=_lowest("n_ctx"), maximum=_highest("n_ctx"),
                              singleStep=1024, value=model.n_ctx)
        self.n_ctx.setToolTip("Context length: how many tokens of conversation the model sees.")
        # -1 shows "Auto" (the fit planner's choice); 1000 means all layers.
        layers = model.n_gpu_layers
        self.n_gpu_layers = QSpinBox(minimum=-1, maximum=1000)
        self.n_gpu_layers.setValue(-1 if layers is None else 1000 if layers < 0 else layers)
        self.n_gpu_layers.setSpecialValueText("Auto")
        self.n_gpu_layers.setToolTip(
            "Layers on the GPU. Auto: as many as fit (see Hardware). CPU builds ignore it.")
        self.n_threads = QSpinBox(minimum=0, maximum=_highest("n_threads"),
                                  value=model.n_threads or 0)
        self.n_threads.setSpecialValueText("Auto")
        self.n_threads.setToolTip("CPU threads (Auto: one per physical core).")
        self.n_batch = QSpinBox(minimum=_lowest("n_batch"), maximum=_highest("n_batch"),
                                singleStep=64, value=model.n_batch)
        self.n_batch.setToolTip("Prompt tokens evaluated per step.")
        self.flash_attn = QCheckBox("Flash attention", checked=model.flash_attn)
        self.type_k = QComboBox()
        self.type_v = QComboBox()
        for combo, value in ((self.type_k, model.type_k), (self.type_v, model.type_v)):
            combo.addItems(["f16", "q8_0", "q4_0"])
            combo.setCurrentText(value)
            combo.setToolTip("KV cache precision: q8_0 halves its memory, q4_0 quarters it.")
        self.type_v.setToolTip(self.type_v.toolTip() + " A quantized V cache needs flash "
                               "attention (llama.cpp cannot make one without it).")
        # Keep the pair llama.cpp can load: a quantized V cache turns flash attention on,
        # turning it off sets the V cache back to f16.
        self.type_v.currentTextChanged.connect(self._on_type_v_changed)
        self.flash_attn.toggled.connect(self._on_flash_attn_toggled)
        self.template = QComboBox()
        self.template.addItem("Automatic (from the model)", None)
        for name in template_names():
            self.template.addItem(name, name)
        index = self.template.findData(model.chat_template)
        self.template.setCurrentIndex(max(index, 0))
        self.template.setToolTip("Chat format. Automatic uses the GGUF's own template.")
        self.reload_button = QPushButton("Apply and reload")
        self.reload_button.clicked.connect(
            lambda: self.sig_reload_requested.emit(self.model_settings()))
        form.addRow("Context", self.n_ctx)
        form.addRow("GPU layers", self.n_gpu_layers)
        form.addRow("Threads", self.n_threads)
        form.addRow("Batch", self.n_batch)
        form.addRow(self.flash_attn)
        form.addRow("K cache", self.type_k)
        form.addRow("V cache", self.type_v)
        form.addRow("Chat format", self.template)
        form.addRow(self.reload_button)
        self.load_settings_note = QLabel(wordWrap=True, visible=False)
        form.addRow(self.load_settings_note)
        return box

    def _on_type_v_changed(self, value: str) -> None:
        if value != "f16":
            self.flash_attn.setChecked(True)

    def _on_flash_attn_toggled(self, on: bool) -> None:
        if not on:
            self.type_v.setCurrentText("f16")

    def model_settings(self) -> ModelSettings:
        return ModelSettings(
            n_ctx=self.n_ctx.value(),
            n_gpu_layers=None if self.n_gpu_layers.value() < 0 else self.n_gpu_layers.value(),
            n_threads=self.n_threads.value() or None,
            n_batch=self.n_batch.value(),
            n_ubatch=min(self.n_batch.value(), 512),
            flash_attn=self.flash_attn.isChecked(),
            type_k=self.type_k.currentText(),
            type_v=self.type_v.currentText(),
            chat_template=self.template.currentData(),
        )

    def show_remote(self, reason: str | None) -> None:
        """On a remote server (`reason` says why), the load settings are the server's:
        greyed out, with the reason as their tooltip."""
        for widget in (self.n_ctx, self.n_gpu_layers, self.n_threads, self.n_batch,
                       self.flash_attn, self.type_k, self.type_v, self.template,
                       self.reload_button):
            widget.setEnabled(reason is None)
        self.load_settings_note.setVisible(reason is not None)
        self.load_settings_note.setText(reason or "")

    def show_model(self, info: ModelInfo | None, state: str) -> None:
        if info is None:
            self.model_label.setText({"loading": "Loading…", "crashed": "Engine stopped"}.get(
                state, "No model loaded"))
            return
        # A server may not report some of these (0): they are left out, not shown as 0.
        facts = [text for value, text in (
            (info.architecture, info.architecture),
            (info.n_params, f"{info.n_params / 1e6:,.0f}M params"),
            (info.size_bytes, f"{info.size_bytes / 2**20:,.0f} MiB")) if value]
        context = f"context {info.n_ctx:,}" if info.n_ctx else ""
        if context and info.n_ctx_train:
            context += f" (trained {info.n_ctx_train:,})"
        where = info.metadata.get("server")
        chat_format = ("the server applies its chat format" if info.template_origin == "server"
                       else f"format {info.template_name}")
        lines = [f"<b>{html.escape(display_name(info))}</b>", ", ".join(facts),
                 " · ".join(t for t in (context, chat_format) if t)]
        if where:
            lines.append(f"on {html.escape(where)}")
        self.model_label.setText("<br>".join(line for line in lines if line))

    # ------------------------------------------------------------ system prompt

    def _build_system_group(self) -> QGroupBox:
        box = QGroupBox("System prompt (this chat)")
        layout = QVBoxLayout(box)
        self.system_prompt = QPlainTextEdit(placeholderText="e.g. You are a concise assistant.")
        self.system_prompt.setFixedHeight(70)
        self.system_prompt.textChanged.connect(
            lambda: self._updating or self.sig_system_prompt_changed.emit(
                self.system_prompt.toPlainText()))
        layout.addWidget(self.system_prompt)
        return box

    def set_system_prompt(self, text: str) -> None:
        self._updating = True
        self.system_prompt.setPlainText(text)
        self._updating = False

    # ------------------------------------------------------------ sampling

    def _build_sampling_group(self, preset: str) -> QGroupBox:
        box = QGroupBox("Sampling")
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.preset = QComboBox()
        self._fill_presets(preset)
        self.preset.textActivated.connect(self._on_preset_activated)
        self.save_preset = QPushButton("Save as…")
        self.save_preset.clicked.connect(self._on_save_preset_clicked)
        row.addWidget(self.preset, 1)
        row.addWidget(self.save_preset)
        form.addRow("Preset", row)

        self.knob_widgets: dict[str, QWidget] = {}
        for knob in KNOBS:
            widget = make_knob_widget(knob, self._on_knob_changed)
            widget.installEventFilter(self)
            self.knob_widgets[knob.key] = widget
            form.addRow(knob.label, widget)

        self.fixed_seed = QCheckBox("Fixed seed")
        self.fixed_seed.setToolTip("Same seed + same settings + same prompt = same reply.")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1)
        self.fixed_seed.toggled.connect(self.seed.setEnabled)
        self.fixed_seed.toggled.connect(self._on_knob_changed)
        self.seed.valueChanged.connect(self._on_knob_changed)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.fixed_seed)
        seed_row.addWidget(self.seed, 1)
        form.addRow("Seed", seed_row)
        self.stop_strings = QPlainTextEdit(placeholderText="One per line (\\n for a newline)")
        self.stop_strings.setFixedHeight(50)
        self.stop_strings.setToolTip("The reply ends where any of these strings would appear.")
        self.stop_strings.textChanged.connect(self._on_knob_changed)
        form.addRow("Stop strings", self.stop_strings)
        return box

    def _fill_presets(self, current: str) -> None:
        self.preset.blockSignals(True)
        self.preset.clear()
        self.preset.addItems([*PRESETS, *sorted(self.user_presets), "Custom"])
        self.preset.setCurrentText(current if self.preset.findText(current) >= 0 else "Custom")
        self.preset.blockSignals(False)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.FocusIn and watched.property("concept"):
            key = watched.objectName().removeprefix("knob-")
            self.sig_knob_focused.emit(key, watched.property("concept"))
        return super().eventFilter(watched, event)

    def focus_knob(self, key: str) -> bool:
        """Scroll to a knob (sampling or load setting) and give it focus."""
        others = {"seed": self.seed, "stop": self.stop_strings, "n_ctx": self.n_ctx,
                  "n_gpu_layers": self.n_gpu_layers, "n_threads": self.n_threads,
                  "n_batch": self.n_batch, "flash_attn": self.flash_attn,
                  "type_k": self.type_k, "type_v": self.type_v,
                  "chat_template": self.template}
        widget = self.knob_widgets.get(key) or others.get(key)
        if widget is None:
            return False
        self.ensureWidgetVisible(widget)
        widget.setFocus(Qt.FocusReason.OtherFocusReason)
        return True

    def sampling(self) -> Sampling:
        return self._sampling

    def set_sampling(self, sampling: Sampling) -> None:
        self._updating = True
        for key, widget in self.knob_widgets.items():
            set_knob_value(widget, getattr(sampling, key))
        self.fixed_seed.setChecked(sampling.seed is not None)
        self.seed.setEnabled(sampling.seed is not None)
        self.seed.setValue(sampling.seed or 0)
        self.stop_strings.setPlainText(format_stop_strings(sampling.stop))
        self._updating = False
        self._sampling = sampling
        self._show_matching_preset()

    def _show_matching_preset(self) -> None:
        """Name the preset these settings equal, or 'Custom'."""
        for name in [*PRESETS, *sorted(self.user_presets)]:
            if apply_preset(name, self._sampling, self.user_presets) == self._sampling:
                self.preset.setCurrentText(name)
                return
        self.preset.setCurrentText("Custom")

    def _read_widgets(self) -> Sampling:
        values: dict = {key: knob_value(w) for key, w in self.knob_widgets.items()}
        values["seed"] = self.seed.value() if self.fixed_seed.isChecked() else None
        values["stop"] = parse_stop_strings(self.stop_strings.toPlainText())
        return replace(self._sampling, **values)

    def _on_knob_changed(self, *_args: object) -> None:
        if self._updating:
            return
        self._sampling = self._read_widgets()
        self._show_matching_preset()
        self.sig_sampling_changed.emit(self._sampling)

    def _on_preset_activated(self, name: str) -> None:
        if name == "Custom":
            return
        self.set_sampling(apply_preset(name, self._sampling, self.user_presets))
        self.preset.setCurrentText(name)
        self.sig_sampling_changed.emit(self._sampling)

    def _on_save_preset_clicked(self) -> None:
        name, ok = QInputDialog.getText(self, "Save preset", "Preset name:")
        if ok and name.strip():
            self.store_user_preset(name.strip())

    def store_user_preset(self, name: str) -> None:
        if name in PRESETS or name == "Custom":
            name = f"{name} (mine)"
        self.user_presets[name] = self._sampling.to_dict()
        self._fill_presets(name)
        self.sig_user_presets_changed.emit(dict(self.user_presets))

    @property
    def preset_name(self) -> str:
        return self.preset.currentText()
