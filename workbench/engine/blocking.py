"""A blocking facade over an Engine for headless callers: the self-test, the benchmarks
and core tests. The GUI never uses it; it reacts to events instead."""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    Stats,
    Token,
    Tokenized,
)


class EngineFailure(Exception):
    def __init__(self, event: EngineError | EngineDied) -> None:
        super().__init__(event.message)
        self.event = event


@dataclass
class ChatResult:
    started: ChatStarted | None
    done: ChatDone
    pieces: list[str]


class BlockingEngine:
    def __init__(self, make_engine: Callable[[EventCallback], Engine] = LocalEngine) -> None:
        """`make_engine` builds the engine from an event callback: LocalEngine by default,
        or e.g. `lambda cb: RemoteEngine(cb, url)`."""
        self.events: queue.Queue[Event] = queue.Queue()
        self.engine = make_engine(self.events.put)

    def __enter__(self) -> BlockingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.close()

    def _wait(self, rid: int, want: type, timeout: float,
              on_event: Callable[[Event], None] | None = None) -> Event:
        while True:
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"The engine did not answer in {timeout:.0f} s.") from None
            if isinstance(event, EngineDied):
                raise EngineFailure(event)
            if getattr(event, "request_id", None) != rid:
                continue
            if on_event is not None:
                on_event(event)
            if isinstance(event, EngineError):
                raise EngineFailure(event)
            if isinstance(event, want):
                return event

    def load(self, spec: LoadSpec, timeout: float = 120) -> ModelInfo:
        event = self._wait(self.engine.load(spec), Loaded, timeout)
        assert isinstance(event, Loaded)
        return event.info

    def chat(self, messages: list[ChatMessage], sampling: Sampling, timeout: float = 120,
             on_token: Callable[[str], None] | None = None,
             fresh: bool = False) -> ChatResult:
        result = ChatResult(started=None, done=None, pieces=[])  # type: ignore[arg-type]

        def seen(event: Event) -> None:
            if isinstance(event, ChatStarted):
                result.started = event
            elif isinstance(event, Token):
                result.pieces.append(event.text)
                if on_token is not None:
                    on_token(event.text)

        rid = self.engine.chat(messages, sampling, fresh=fresh)
        done = self._wait(rid, ChatDone, timeout, seen)
        assert isinstance(done, ChatDone)
        result.done = done
        return result

    def tokenize(self, text: str, special: bool = False, timeout: float = 30) -> Tokenized:
        event = self._wait(self.engine.tokenize(text, special=special), Tokenized, timeout)
        assert isinstance(event, Tokenized)
        return event

    def stats(self, timeout: float = 30) -> Stats:
        event = self._wait(self.engine.stats(), Stats, timeout)
        assert isinstance(event, Stats)
        return event

    def distribution(self, messages: list[ChatMessage], sampling: Sampling, top_n: int = 20,
                     timeout: float = 120) -> Distribution:
        rid = self.engine.distribution(messages, sampling, top_n)
        event = self._wait(rid, Distribution, timeout)
        assert isinstance(event, Distribution)
        return event

    def perplexity(self, text: str, timeout: float = 120) -> PerplexityResult:
        event = self._wait(self.engine.perplexity(text), PerplexityResult, timeout)
        assert isinstance(event, PerplexityResult)
        return event

    def set_adapters(self, adapters: Sequence[AdapterSetting],
                     timeout: float = 60) -> AdaptersSet:
        event = self._wait(self.engine.set_adapters(adapters), AdaptersSet, timeout)
        assert isinstance(event, AdaptersSet)
        return event
