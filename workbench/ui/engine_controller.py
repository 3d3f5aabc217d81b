"""EngineController: the engine as the UI sees it — Qt signals on the GUI thread, and a
state the window can show (no model, loading, ready, busy, crashed)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from workbench.engine.local import LocalEngine
from workbench.engine.protocol import (
    AdapterSetting,
    AdaptersSet,
    ChatDone,
    ChatMessage,
    ChatStarted,
    Distribution,
    Engine,
    EngineDied,
    EngineError,
    Event,
    EventCallback,
    Loaded,
    LoadSpec,
    ModelInfo,
    PerplexityResult,
    Sampling,
    Token,
    Tokenized,
    Unloaded,
)


class EngineController(QObject):
    sig_event = Signal(object)
    """Internal: carries an engine event from the engine's thread to the GUI thread."""
    sig_state_changed = Signal(str)
    """'empty' | 'loading' | 'ready' | 'busy' | 'crashed'."""
    sig_loaded = Signal(object)
    """A model finished loading (ModelInfo)."""
    sig_load_failed = Signal(object)
    """Loading failed (EngineError or EngineDied)."""
    sig_chat_started = Signal(object)
    """ChatStarted: the exact prompt and how much of it was cached."""
    sig_token = Signal(int, str)
    """(request id, text) of a streamed piece."""
    sig_chat_done = Signal(object)
    """ChatDone."""
    sig_chat_failed = Signal(object)
    """EngineError for a chat request."""
    sig_died = Signal(object)
    """EngineDied: the engine process is gone."""
    sig_tokenized = Signal(object)
    """Tokenized: the answer to tokenize()."""
    sig_distribution = Signal(object)
    """Distribution: the next token through each sampler stage."""
    sig_perplexity = Signal(object)
    """PerplexityResult."""
    sig_query_failed = Signal(object)
    """EngineError for a tokenize/distribution/perplexity query."""
    sig_adapters_set = Signal(object)
    """AdaptersSet: these LoRA adapters are now applied."""
    sig_adapters_failed = Signal(object)
    """EngineError: the requested adapters could not be applied (the previous set holds)."""

    def __init__(self, parent: QObject | None = None,
                 make_engine: Callable[[EventCallback], Engine] = LocalEngine) -> None:
        super().__init__(parent)
        # Events arrive on the engine's reader thread; a queued signal hops them here.
        self.sig_event.connect(self._on_engine_event)
        self.engine = make_engine(self.sig_event.emit)
        self.state = "empty"
        self.model: ModelInfo | None = None
        self.spec: LoadSpec | None = None
        self._load_id: int | None = None
        self._chat_id: int | None = None
        self._adapters_id: int | None = None
        self.adapters: tuple[AdapterSetting, ...] = ()  # applied now
        # Who is driving the engine for a multi-step job ("compare"), None for the chat.
        # The chat refuses to send while someone else owns the engine.
        self.owner: str | None = None

    # ------------------------------------------------------------ commands

    def load(self, spec: LoadSpec) -> None:
        self.spec = spec
        self._load_id = self.engine.load(spec)
        self._set_state("loading")

    def reload(self) -> None:
        if self.spec is not None:
            self.load(self.spec)

    def chat(self, messages: list[ChatMessage], sampling: Sampling, *,
             fresh: bool = False) -> int:
        self._chat_id = self.engine.chat(messages, sampling, fresh=fresh)
        self._set_state("busy")
        return self._chat_id

    def cancel(self) -> None:
        if self._chat_id is not None:
            self.engine.cancel(self._chat_id)

    def tokenize(self, text: str) -> int:
        return self.engine.tokenize(text, special=False)

    def distribution(self, messages: list[ChatMessage], sampling: Sampling,
                     top_n: int = 10) -> int:
        return self.engine.distribution(messages, sampling, top_n)

    def perplexity(self, text: str) -> int:
        return self.engine.perplexity(text)

    def set_adapters(self, adapters: tuple[AdapterSetting, ...]) -> int:
        self._adapters_id = self.engine.set_adapters(adapters)
        return self._adapters_id

    def unload(self) -> None:
        self.engine.unload()

    def close(self) -> None:
        self.engine.close()

    @property
    def pid(self) -> int | None:
        return getattr(self.engine, "pid", None)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # ------------------------------------------------------------ events

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.sig_state_changed.emit(state)

    def _on_engine_event(self, event: Event) -> None:
        if isinstance(event, Token):
            self.sig_token.emit(event.request_id, event.text)
        elif isinstance(event, ChatStarted):
            self.sig_chat_started.emit(event)
        elif isinstance(event, ChatDone):
            if event.request_id == self._chat_id:
                self._chat_id = None
                self._set_state("ready")
            self.sig_chat_done.emit(event)
        elif isinstance(event, Loaded):
            if event.request_id == self._load_id:
                self.model = event.info
                self.adapters = ()  # a new model starts without adapters
                self._set_state("ready")
                self.sig_loaded.emit(event.info)
        elif isinstance(event, EngineError):
            if event.request_id == self._load_id:
                self.model = None
                self._set_state("empty")
                self.sig_load_failed.emit(event)
            elif event.request_id == self._adapters_id:
                self.sig_adapters_failed.emit(event)
            elif event.request_id == self._chat_id:
                self._chat_id = None
                self._set_state("ready" if self.model else "empty")
                self.sig_chat_failed.emit(event)
            else:
                self.sig_query_failed.emit(event)
        elif isinstance(event, Tokenized):
            self.sig_tokenized.emit(event)
        elif isinstance(event, Distribution):
            self.sig_distribution.emit(event)
        elif isinstance(event, PerplexityResult):
            self.sig_perplexity.emit(event)
        elif isinstance(event, AdaptersSet):
            self.adapters = event.active
            self.sig_adapters_set.emit(event)
        elif isinstance(event, Unloaded):
            self.model = None
            self._set_state("empty")
        elif isinstance(event, EngineDied):
            loading = self.state == "loading"
            self.model = None
            self.adapters = ()
            self._chat_id = None
            self._set_state("crashed")
            if loading:
                self.sig_load_failed.emit(event)
            self.sig_died.emit(event)
