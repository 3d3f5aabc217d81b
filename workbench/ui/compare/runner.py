"""CompareRunner: runs a compare setup's two variants one after the other on the one
engine — loading another model or applying other adapters first where a variant needs
it — and puts back the model and adapters the user had afterwards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from workbench.chat.compare import CompareSetup
from workbench.engine.protocol import (
    AdapterSetting,
    AdaptersSet,
    ChatDone,
    EngineDied,
    EngineError,
    LoadSpec,
    ModelInfo,
)
from workbench.ui.engine_controller import EngineController

OWNER = "compare"


class CompareRunner(QObject):
    sig_step = Signal(str)
    """What the run is doing now, in words (for the status line)."""
    sig_column_started = Signal(int)
    """Column 0 (A) or 1 (B) started generating."""
    sig_column_token = Signal(int, str)
    """(column, text) of a streamed piece."""
    sig_column_done = Signal(int, object)
    """(column, ChatDone) a column's reply is complete."""
    sig_finished = Signal(bool)
    """The run ended; True when both columns completed (False: stopped or failed)."""
    sig_failed = Signal(object)
    """EngineError or EngineDied that ended the run."""

    def __init__(self, engine: EngineController,
                 default_spec: Callable[[str], LoadSpec],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.default_spec = default_spec
        self.setup: CompareSetup | None = None
        self.column = 0
        self.results: list[ChatDone | None] = [None, None]
        self._original: LoadSpec | None = None
        self._original_adapters: tuple[AdapterSetting, ...] = ()
        self._chat_id: int | None = None
        self._loading = False
        self._applying = False
        self._restoring = False  # loading the user's model back after a run
        self._stopping = False
        engine.sig_loaded.connect(self._on_engine_loaded)
        engine.sig_load_failed.connect(self._on_engine_load_failed)
        engine.sig_token.connect(self._on_engine_token)
        engine.sig_chat_done.connect(self._on_engine_chat_done)
        engine.sig_chat_failed.connect(self._on_engine_chat_failed)
        engine.sig_died.connect(self._on_engine_died)
        engine.sig_adapters_set.connect(self._on_engine_adapters_set)
        engine.sig_adapters_failed.connect(self._on_engine_adapters_failed)

    @property
    def running(self) -> bool:
        return self.setup is not None

    def busy_reason(self) -> str | None:
        """Why a run cannot start now, in words; None when it can."""
        if self.running:
            return "A comparison is already running."
        if self.engine.owner not in (None, OWNER):
            return f"The engine is busy with {self.engine.owner}."
        if self.engine.state in ("busy", "loading"):
            return "The model is busy: wait for the chat's reply (or stop it) and try again."
        return None

    def start(self, setup: CompareSetup) -> None:
        self.setup = setup
        self.column = 0
        self.results = [None, None]
        self._original = self.engine.spec
        self._original_adapters = self.engine.adapters
        self._stopping = False
        self.engine.owner = OWNER
        self._next()

    def stop(self) -> None:
        """Stop now: a running reply is cancelled; a load in progress ends the run once it
        is done (llama.cpp cannot interrupt a load)."""
        if not self.running:
            return
        self._stopping = True
        if self._chat_id is not None:
            self.engine.cancel()
        elif not (self._loading or self._applying):
            self._end(False)

    # ------------------------------------------------------------ steps

    def _spec_for(self, path: str) -> LoadSpec:
        # The same load settings as the model the user had (context, cache type, GPU
        # layers), so the comparison changes the file and nothing else.
        base = self._original
        return replace(base, model_path=path) if base else self.default_spec(path)

    def _next(self) -> None:
        setup = self.setup
        assert setup is not None
        if self.column >= 2:
            self._end(True)
            return
        variant = setup.variants[self.column]
        spec = self.engine.spec
        same_model = spec is not None and Path(spec.model_path) == Path(variant.model_path)
        if not same_model or self.engine.state != "ready":
            self._loading = True
            self.sig_step.emit(f"Loading {Path(variant.model_path).name} for "
                               f"{variant.label}…")
            self.engine.load(self._spec_for(variant.model_path))
            return
        wanted = None if variant.adapters is None else tuple(
            a for a in variant.adapters if a.applies)  # what the engine reports back
        if wanted is not None and wanted != self.engine.adapters:
            self._applying = True
            self.sig_step.emit(f"Applying {variant.label}'s adapters…")
            self.engine.set_adapters(wanted)
            return
        self.sig_step.emit(f"Generating {variant.label}…")
        # Fresh: each column evaluates the prompt from an empty cache, so both start from
        # bit-identical logits and only the variants' difference separates them.
        self._chat_id = self.engine.chat(setup.messages(), setup.sampling_for(variant),
                                         fresh=True)
        self.sig_column_started.emit(self.column)

    def _end(self, completed: bool) -> None:
        self.setup = None
        self._chat_id = None
        self._loading = self._applying = False
        self.engine.owner = None
        original = self._original
        if (original is not None and self.engine.spec != original
                and self.engine.state != "loading"):
            # The Adapters page applies its adapters again once the model is back.
            self.sig_step.emit(f"Loading {Path(original.model_path).name} back…")
            self._restoring = True
            self.engine.load(original)
        elif self.engine.adapters != self._original_adapters and self.engine.model:
            self.sig_step.emit("Putting your adapters back…")
            self.engine.set_adapters(self._original_adapters)
        else:
            self.sig_step.emit("Done." if completed else "Stopped.")
        self.sig_finished.emit(completed)

    # ------------------------------------------------------------ engine events

    def _on_engine_loaded(self, info: ModelInfo) -> None:
        if self._restoring:
            self._restoring = False
            self.sig_step.emit(f"Done; {Path(info.path).name} is loaded again.")
        if not self._loading:
            return
        self._loading = False
        if self._stopping:
            self._end(False)
        else:
            self._next()

    def _on_engine_load_failed(self, event: EngineError | EngineDied) -> None:
        if self._loading:
            self._fail(event)

    def _on_engine_adapters_set(self, _event: AdaptersSet) -> None:
        if not self._applying:
            return
        self._applying = False
        if self._stopping:
            self._end(False)
        else:
            self._next()

    def _on_engine_adapters_failed(self, event: EngineError) -> None:
        if self._applying:
            self._fail(event)

    def _on_engine_token(self, request_id: int, text: str) -> None:
        if request_id == self._chat_id:
            self.sig_column_token.emit(self.column, text)

    def _on_engine_chat_done(self, done: ChatDone) -> None:
        if done.request_id != self._chat_id:
            return
        self._chat_id = None
        self.results[self.column] = done
        self.sig_column_done.emit(self.column, done)
        if self._stopping or done.reason == "cancelled":
            self._end(False)
            return
        self.column += 1
        self._next()

    def _on_engine_chat_failed(self, event: EngineError) -> None:
        if event.request_id == self._chat_id:
            self._fail(event)

    def _on_engine_died(self, event: EngineDied) -> None:
        if self.running:
            self._fail(event)

    def _fail(self, event: EngineError | EngineDied) -> None:
        self._loading = self._applying = False
        self._chat_id = None
        self.sig_failed.emit(event)
        self._end(False)
