"""EngineController: the engine as the UI sees it — Qt signals on the GUI thread, and a
state the window can show (no model, loading, ready, busy, crashed).

The engine behind it can be swapped (`switch_engine`): the local llama.cpp engine or a
remote OpenAI-compatible server. Events still on their way from a replaced engine are
dropped, so nothing of the old engine reaches the pages after the switch."""

from __future__ import annotations

import contextlib
import threading
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
from workbench.engine.remote import RemoteEngine

EngineFactory = Callable[[EventCallback], Engine]
CLOSE_WAIT_S = 5.0  # how long close() waits for replaced engines still shutting down

# What only the local engine can do, and why a server cannot, in the user's words: pages
# show these as unavailable (not broken) while the app is on a remote server.
LOCAL_ONLY = {
    "model_file": "This needs the model's GGUF file, and the file stays on the server.",
    "adapters": "LoRA adapters are applied here to a model on this computer; a server "
                "applies its own (vLLM: --enable-lora, llama.cpp: --lora).",
    "perplexity": "Perplexity needs the probability of every token of the text, which "
                  "OpenAI-compatible servers do not report.",
    "load_settings": "Context size, GPU layers and the KV cache type are the server's "
                     "settings: set them where the server is started.",
    "serve": "The API server shares the local engine. Clients can use the remote server "
             "directly, at the address this app is connected to.",
}


class EngineController(QObject):
    sig_event = Signal(int, object)
    """Internal: (engine generation, event) from the engine's thread to the GUI thread."""
    sig_engine_switched = Signal(str)
    """switch_engine() put a new engine in place: 'local' | 'remote'."""
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
                 make_engine: EngineFactory = LocalEngine) -> None:
        super().__init__(parent)
        # Events arrive on the engine's reader thread; a queued signal hops them here.
        self.sig_event.connect(self._on_sig_event)
        self._generation = 0  # which engine's events count; bumped by switch_engine
        self._closers: list[threading.Thread] = []  # replaced engines shutting down
        self.engine = make_engine(self._callback_for(self._generation))
        self.state = "empty"
        self.model: ModelInfo | None = None
        self.spec: LoadSpec | None = None
        self._load_id: int | None = None
        # Each load request's spec until it is answered, and the spec of the model the
        # engine last reported loaded (which a failed load leaves in place).
        self._requested: dict[int, LoadSpec] = {}
        self._held_spec: LoadSpec | None = None
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
        self._requested[self._load_id] = spec
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
        # Replaced engines close in the background; the app must not exit before they have
        # (a local engine's process would be left behind).
        for closer in self._closers:
            closer.join(CLOSE_WAIT_S)
        self._closers = [c for c in self._closers if c.is_alive()]

    def switch_engine(self, make_engine: EngineFactory) -> None:
        """Replace the engine with `make_engine(callback)` (a LocalEngine or RemoteEngine).

        A running reply is cancelled and the old engine closed (in the background, so a slow
        shutdown does not freeze the window); nothing it sends afterwards is delivered. The
        controller starts over with no model ("empty"): the caller loads one next."""
        generation = self._generation + 1
        # Made first: if it fails (a malformed address), the old engine stays in place.
        engine = make_engine(self._callback_for(generation))
        old = self.engine
        if self._chat_id is not None:
            with contextlib.suppress(Exception):  # a dead engine cannot cancel; close() ends it
                old.cancel(self._chat_id)
        self._generation, self.engine = generation, engine
        closer = threading.Thread(target=self._close_quietly, args=(old,),
                                  name="engine-close", daemon=True)
        closer.start()
        self._closers = [c for c in self._closers if c.is_alive()] + [closer]
        self.model = None
        self.spec = None
        self.adapters = ()
        self._load_id = self._chat_id = self._adapters_id = None
        self._requested, self._held_spec = {}, None
        self.owner = None  # whoever drove the old engine has lost it
        # Always said, even from "empty": the pages show which engine they are on.
        self.state = "empty"
        self.sig_state_changed.emit("empty")
        self.sig_engine_switched.emit(self.kind)

    @staticmethod
    def _close_quietly(engine: Engine) -> None:
        with contextlib.suppress(Exception):  # it may be dead already; nothing to report
            engine.close()

    def _callback_for(self, generation: int) -> EventCallback:
        def deliver(event: Event) -> None:
            self.sig_event.emit(generation, event)
        return deliver

    @property
    def is_remote(self) -> bool:
        return isinstance(self.engine, RemoteEngine)

    @property
    def kind(self) -> str:
        """'local' | 'remote'."""
        return "remote" if self.is_remote else "local"

    @property
    def remote_url(self) -> str | None:
        """The API address of the server, when on one."""
        engine = self.engine
        return engine.base_url if isinstance(engine, RemoteEngine) else None

    def unavailable(self, feature: str) -> str | None:
        """Why `feature` (a LOCAL_ONLY key) cannot be used on this engine; None if it can."""
        if feature not in LOCAL_ONLY:
            raise KeyError(feature)
        return LOCAL_ONLY[feature] if self.is_remote else None

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

    def _on_sig_event(self, generation: int, event: Event) -> None:
        if generation == self._generation:  # else from an engine switch_engine replaced
            self._on_engine_event(event)

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
            self._held_spec = self._requested.pop(event.request_id, None)
            if event.request_id == self._load_id:
                self.model = event.info
                self.adapters = ()  # a new model starts without adapters
                self._set_state("ready")
                self.sig_loaded.emit(event.info)
        elif isinstance(event, EngineError):
            self._requested.pop(event.request_id, None)
            if event.request_id == self._load_id:
                # The engine still holds the model it had before (kept or loaded again,
                # with its adapters), or none.
                self.model = event.still_loaded
                if self.model is None:
                    self.adapters = ()
                else:
                    self.spec = self._held_spec
                self._set_state("ready" if self.model is not None else "empty")
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
            self.model = self._held_spec = None
            self._set_state("empty")
        elif isinstance(event, EngineDied):
            loading = self.state == "loading"
            self.model = self._held_spec = None
            self._requested.clear()
            self.adapters = ()
            self._chat_id = None
            self._set_state("crashed")
            if loading:
                self.sig_load_failed.emit(event)
            self.sig_died.emit(event)
