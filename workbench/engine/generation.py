"""One reply's token loop: sample, decode UTF-8 safely, honour stop strings, cancel and
the context limit. Runs inside the engine worker on a llama_cpp.Llama."""

from __future__ import annotations

import codecs
import ctypes
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from workbench.engine.protocol import FinishReason, Sampling, Timings


@dataclass
class GenerationResult:
    text: str
    reason: FinishReason
    n_generated: int
    first_token_at: float | None  # None: cancelled before any token was sampled
    last_token_at: float | None  # None: the first token ended the reply (or none came)
    token_ids: tuple[int, ...] = ()  # the sampled tokens (end-of-generation excluded)

    def timings(self, received: float, n_prompt: int, n_cached: int, n_ctx_used: int,
                now: float | None = None) -> Timings:
        """Timings of this reply; `received` is when the request reached the engine."""
        first = self.first_token_at if self.first_token_at is not None else (
            now if now is not None else time.perf_counter())
        last = self.last_token_at if self.last_token_at is not None else first
        return Timings(
            n_prompt_tokens=n_prompt,
            n_evaluated_prompt_tokens=n_prompt - n_cached,
            n_generated_tokens=self.n_generated,
            ttft_s=first - received if self.first_token_at is not None else 0.0,
            prompt_eval_s=first - received,
            generation_s=last - first,
            n_ctx_used=n_ctx_used,
        )


def holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that could be the start of a stop string.

    That tail is held back from the stream so a stop string is never shown half-typed.
    """
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


class TokenText:
    """Token -> bytes through llama.cpp directly: llama-cpp-python's helpers pad the
    result with NULs or fail on pieces longer than 32 bytes."""

    def __init__(self, model: Any) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._vocab = model.vocab
        self._buf = ctypes.create_string_buffer(64)

    def piece(self, token: int, special: bool = False) -> bytes:
        n = self._lib.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0,
                                           special)
        if n < 0:  # buffer too small: -n is the size needed
            self._buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf),
                                               0, special)
        return self._buf.raw[:n]

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))


def find_stop(text: str, stops: Sequence[str], start: int) -> int:
    """Index of the earliest stop string in text[start:], or -1."""
    hits = [i for s in stops if (i := text.find(s, start)) >= 0]
    return min(hits) if hits else -1


class Generation:
    def __init__(
        self,
        llm: Any,
        prompt_tokens: list[int],
        sampling: Sampling,
        stops: Sequence[str],
        cancel: threading.Event,
        on_text: Callable[[str], None],
    ) -> None:
        self.llm = llm
        self.prompt_tokens = prompt_tokens
        self.sampling = sampling
        self.stops = tuple(stops)
        self.cancel = cancel
        self.on_text = on_text

    def run(self, first_token_hook: Callable[[], None] = lambda: None) -> GenerationResult:
        llm, s = self.llm, self.sampling
        room = llm.n_ctx() - len(self.prompt_tokens)
        budget = min(s.max_tokens, room)
        limit_reason: FinishReason = "length" if s.max_tokens <= room else "context_full"
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pieces = TokenText(llm._model)
        longest_stop = max((len(x) for x in self.stops), default=0)

        text, emitted, n = "", 0, 0
        ids: list[int] = []
        first_at: float | None = None
        last_at: float | None = None
        reason: FinishReason = limit_reason
        tokens = llm.generate(
            self.prompt_tokens,
            top_k=s.top_k,
            top_p=s.top_p,
            min_p=s.min_p,
            typical_p=s.typical_p,
            temp=s.temperature,
            repeat_penalty=s.repeat_penalty,
            frequency_penalty=s.frequency_penalty,
            presence_penalty=s.presence_penalty,
            mirostat_mode=s.mirostat_mode,
            mirostat_tau=s.mirostat_tau,
            mirostat_eta=s.mirostat_eta,
        )
        try:
            for token in tokens:
                now = time.perf_counter()
                if first_at is None:
                    first_at = now
                    first_token_hook()
                if self.cancel.is_set():
                    reason = "cancelled"
                    break
                if pieces.is_end_of_generation(token):
                    reason = "stop"
                    break
                n += 1
                ids.append(token)
                last_at = now
                text += decoder.decode(pieces.piece(token))
                if self.stops:
                    hit = find_stop(text, self.stops, max(0, emitted - longest_stop))
                    if hit >= 0:
                        text = text[:hit]
                        reason = "stop_string"
                        break
                safe = len(text) - holdback(text, self.stops)
                if safe > emitted:
                    self.on_text(text[emitted:safe])
                    emitted = safe
                if n >= budget:
                    break
        except RuntimeError:
            # llama_decode returns non-zero when the abort callback fired during prompt
            # evaluation; anything else is a real failure.
            if not self.cancel.is_set():
                raise
            reason = "cancelled"
        finally:
            tokens.close()
        text += decoder.decode(b"", final=True)
        if len(text) > emitted:
            self.on_text(text[emitted:])
        return GenerationResult(text, reason, n, first_at, last_at, tuple(ids))
