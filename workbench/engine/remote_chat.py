"""One chat request to an OpenAI-compatible server: the request fields for the sampling
knobs, the reader of its event stream, its timings, and the socket Stop shuts down. Also
the next-token distribution read from a reply's top_logprobs."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from workbench.engine.protocol import (
    Candidate,
    ChatMessage,
    ChatStarted,
    Distribution,
    Event,
    FinishReason,
    SamplerStage,
    Sampling,
    Timings,
    Token,
)
from workbench.engine.remote_http import (
    RemoteError,
    as_float,
    as_int,
    detail_from_json,
    host_of,
    httpx2,
    protocol_error,
    server_detail,
    sse_events,
    transport_error,
)

# Request fields outside the OpenAI API, dropped for servers that refuse unknown fields.
EXTENSIONS = frozenset({
    "top_k", "min_p", "typical_p", "repeat_penalty", "repetition_penalty", "repeat_last_n",
    "mirostat", "mirostat_mode", "mirostat_tau", "mirostat_eta", "cache_prompt",
})
PROMPT_NOTE = ("The server renders the prompt with its own chat template; the exact text is "
               "not available. The messages sent were:")


def sampling_fields(sampling: Sampling, *, standard_only: bool) -> dict[str, Any]:
    """The request fields for these knobs (OpenAI names first, then llama.cpp's/vLLM's)."""
    body: dict[str, Any] = {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
    }
    if sampling.max_tokens > 0:
        body["max_tokens"] = sampling.max_tokens
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if standard_only:
        return body
    return body | {
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,  # -1: off, on every server
        "min_p": sampling.min_p,
        "typical_p": sampling.typical_p,
        "repeat_penalty": sampling.repeat_penalty,  # llama.cpp, llama-cpp-python
        "repetition_penalty": sampling.repeat_penalty,  # vLLM
        "repeat_last_n": sampling.repeat_last_n,
        "mirostat": sampling.mirostat_mode,  # llama.cpp
        "mirostat_mode": sampling.mirostat_mode,  # llama-cpp-python
        "mirostat_tau": sampling.mirostat_tau,
        "mirostat_eta": sampling.mirostat_eta,
    }


def rejects_extensions(response: httpx2.Response) -> bool:
    """Whether a 400/422 answer complains about fields it does not know (OpenAI, strict
    proxies) rather than about a value."""
    if response.status_code not in (400, 422):
        return False
    detail = server_detail(response).lower()
    return any(name in detail for name in EXTENSIONS) or any(
        w in detail for w in ("unrecognized", "extra inputs", "extra_forbidden",
                              "unknown field", "unknown parameter"))


class Abandoned(Exception):
    """The reply was cancelled: the request thread drops what still arrives."""


class ChatStream:
    """One chat request: the text streamed so far, and the socket Stop shuts down.

    `finish` sends the reply's last event exactly once, under the lock that `add` sends
    tokens under, so no token of a cancelled reply goes out after its ChatDone.
    """

    def __init__(self, request_id: int, emit: Callable[[Event], None], base_url: str,
                 timeout_s: float) -> None:
        self.rid = request_id
        self.emit = emit
        self.base_url, self.timeout_s = base_url, timeout_s
        self.lock = threading.Lock()
        self.finished = False  # ChatDone or EngineError was sent: nothing more goes out
        self.sock: socket.socket | None = None
        self.pieces: list[str] = []
        self.sent_at = time.perf_counter()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.usage: dict[str, Any] = {}
        self.server_timings: dict[str, Any] = {}  # llama.cpp's own numbers, when sent
        self.finish_reason: str | None = None

    # ------------------------------------------------------------ Stop

    def trace(self, name: str, info: dict[str, Any]) -> None:
        """httpx's trace hook: note the socket of the reply's own connection."""
        if name not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self.lock:
            self.sock = sock
            finished = self.finished
        if finished:
            self.shutdown()

    def shutdown(self) -> None:
        """Wake the request thread and tell the server: a blocked recv() returns at once
        after shutdown(), which a close() from another thread does not promise."""
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                # The plain socket's method: an SSLSocket's own would drop its SSL state
                # under the reading thread.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    # ------------------------------------------------------------ events

    def add(self, text: str) -> None:
        with self.lock:
            if self.finished:
                raise Abandoned
            now = time.perf_counter()
            self.first_at = self.first_at or now
            self.last_at = now
            self.pieces.append(text)
            self.emit(Token(self.rid, text))

    def finish(self, event_for: Callable[[], Event]) -> bool:
        """Send the reply's last event unless one went out already."""
        with self.lock:
            if self.finished:
                return False
            self.finished = True
            self.emit(event_for())
            return True

    def timings(self) -> Timings:
        usage, server = self.usage, self.server_timings
        cached = as_int(server.get("cache_n")) or as_int(
            (usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
        n_prompt = as_int(usage.get("prompt_tokens")) or (as_int(server.get("prompt_n"))
                                                          + cached)
        evaluated = (as_int(server["prompt_n"]) if "prompt_n" in server
                     else max(n_prompt - cached, 0))
        n_generated = (as_int(usage.get("completion_tokens"))
                       or as_int(server.get("predicted_n"))
                       or len(self.pieces))  # else one piece per token, as servers stream
        end = self.last_at or time.perf_counter()
        ttft = (self.first_at or end) - self.sent_at
        prompt_ms = as_float(server.get("prompt_ms"))
        return Timings(
            n_prompt_tokens=n_prompt, n_evaluated_prompt_tokens=evaluated,
            n_generated_tokens=n_generated, ttft_s=ttft,
            prompt_eval_s=prompt_ms / 1000 if prompt_ms is not None else ttft,
            generation_s=end - self.first_at if self.first_at else 0.0,
            n_ctx_used=n_prompt + n_generated)

    def reason(self, sampling: Sampling) -> FinishReason:
        if self.finish_reason != "length":
            return "stop"  # "stop", or "content_filter"/"tool_calls": the reply is over
        # "length" before max_tokens were written means the context ran out; only the
        # server's own token count can tell.
        counted = self.usage.get("completion_tokens") or self.server_timings.get(
            "predicted_n")
        if counted and self.timings().n_generated_tokens < sampling.max_tokens:
            return "context_full"
        return "length"

    # ------------------------------------------------------------ the reply

    def read(self, response: httpx2.Response, messages: list[ChatMessage]) -> None:
        """Turn a 2xx answer into ChatStarted and Tokens; raises RemoteError or httpx's
        errors when it breaks off."""
        rendered = "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)
        with self.lock:
            if self.finished:
                raise Abandoned
            self.emit(ChatStarted(self.rid, f"{PROMPT_NOTE}\n\n{rendered}", 0, 0))
        if "text/event-stream" not in response.headers.get("content-type", ""):
            # Some servers answer a streamed request with the whole reply at once.
            response.read()
            try:
                data = response.json()
            except ValueError:
                raise protocol_error(self.base_url, "a reply that is neither an event "
                                     "stream nor JSON") from None
            self._take(data)
            return
        for field, payload in sse_events(response.iter_lines()):
            if field == "error":
                raise self._failure(payload)
            if payload.strip() == "[DONE]":
                return
            try:
                data = json.loads(payload)
            except ValueError:
                raise protocol_error(self.base_url, "a piece of the reply that is not "
                                     f"valid JSON, after {len(self.pieces)} good ones") \
                    from None
            self._take(data)
        if self.finish_reason is None:  # no [DONE], no finish_reason: it broke off
            raise transport_error(httpx2.RemoteProtocolError("stream ended early"),
                                  self.base_url, self.timeout_s, mid_reply=len(self.pieces))

    def _failure(self, payload: str) -> RemoteError:
        try:
            detail = detail_from_json(json.loads(payload))
        except ValueError:
            detail = payload.strip()[:300]
        return RemoteError("server", f"The server at {host_of(self.base_url)} failed in the "
                           f"middle of the reply: {detail or 'no reason given'}.",
                           "Send again to retry; if it keeps failing, the server's log says "
                           "why.")

    def _take(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise protocol_error(self.base_url, "a piece of the reply that is not an object")
        if data.get("error") and not data.get("choices"):  # vLLM's error mid-stream
            raise self._failure(json.dumps(data))
        if isinstance(data.get("usage"), dict):
            self.usage = data["usage"]
        if isinstance(data.get("timings"), dict):  # llama.cpp
            self.server_timings = data["timings"]
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if text is None:
                text = choice.get("text")  # a completions-style chunk
            if isinstance(text, str) and text:
                self.add(text)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])


def distribution_from(data: Any, request_id: int, n_vocab: int, base_url: str,
                      unsupported: RemoteError) -> Distribution:
    """The one-stage Distribution in a max_tokens=1 reply's top_logprobs. Probabilities are
    the server's, not renormalised: they sum to at most 1, the rest is the unlisted tail."""
    if not isinstance(data, dict):
        raise protocol_error(base_url, "an answer that is not a JSON object")
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    first = content[0] if isinstance(content, list) and content else {}
    top = first.get("top_logprobs") if isinstance(first, dict) else None
    if not isinstance(top, list) or not top:
        raise unsupported
    candidates = []
    for entry in top:
        logprob = as_float(entry.get("logprob")) if isinstance(entry, dict) else None
        if logprob is None or not math.isfinite(logprob):
            continue
        token_id = entry.get("id")  # llama.cpp sends ids; the OpenAI API does not
        candidates.append(Candidate(token_id=token_id if isinstance(token_id, int) else -1,
                                    text=str(entry.get("token", "")), logit=logprob,
                                    prob=math.exp(logprob)))
    candidates.sort(key=lambda c: -c.prob)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    # The server's stage is its whole vocabulary's distribution: as many kept as it has.
    stage = SamplerStage("server", tuple(candidates), n_vocab or len(candidates))
    return Distribution(request_id, (stage,), prompt_tokens=as_int(usage.get("prompt_tokens")))
