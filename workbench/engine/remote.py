"""RemoteEngine: the engine protocol over an OpenAI-compatible HTTP API (llama.cpp's
`llama-server`, vLLM, llama-cpp-python's server, LM Studio, Ollama, hosted APIs).

What maps how:
- `load(LoadSpec)` selects a model the server already serves: `LoadSpec.model_path` holds
  the model's id as /v1/models lists it ("" takes the first one). The other LoadSpec
  fields are the server's business and are ignored.
- `chat` streams /v1/chat/completions. Sampling knobs outside the OpenAI API (top_k, min_p,
  typical_p, repeat_penalty, mirostat, ...) are sent under the names llama.cpp and vLLM
  read; a server that rejects unknown fields (400) is asked again without them, once, and
  from then on gets only standard fields. `fresh` sends llama.cpp's `cache_prompt: false`.
- `cancel` ends the reply at once: ChatDone(reason="cancelled") with the text so far is
  sent from the cancelling call, and the reply's socket is shut down so the server notices
  and the request thread wakes; nothing of that reply is delivered afterwards.
- `distribution` asks for one token with top_logprobs (at most 20) and answers with one
  stage named "server": the server's probabilities, not renormalised, so they sum to at
  most 1. Servers that report no logprobs get EngineError(kind="unsupported").
- `tokenize` uses llama.cpp's or vLLM's /tokenize, or llama-cpp-python's /extras/tokenize.
- `perplexity` and `set_adapters` (with any adapter) are "unsupported".

A reply that fails after some text has streamed ends with EngineError (kind "connection",
"timeout", "protocol" or "server"), not ChatDone: every Token was delivered before it, so the
text is with the caller, who should keep it and mark the reply interrupted. Saying "stop"
or "cancelled" would claim the reply ended normally or that the user stopped it.

Requests run one at a time on a thread of the engine, in order, as with the local engine;
events are delivered on another engine-owned thread.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from workbench.engine.limits import sampling_error
from workbench.engine.protocol import (
    AdapterSetting,
    AdaptersSet,
    ChatDone,
    ChatMessage,
    Engine,
    EngineError,
    Event,
    EventCallback,
    FinishReason,
    Loaded,
    LoadSpec,
    ModelInfo,
    Sampling,
    Stats,
    Unloaded,
)
from workbench.engine.remote_chat import (
    EXTENSIONS,
    Abandoned,
    ChatStream,
    distribution_from,
    rejects_extensions,
    sampling_fields,
)
from workbench.engine.remote_http import (
    DEFAULT_TIMEOUT_S,
    RemoteError,
    api_url,
    as_int,
    fetch_models,
    host_of,
    httpx2,
    make_client,
    protocol_error,
    server_root,
    status_error,
    transport_error,
)
from workbench.engine.remote_tokenize import tokenize_remote

log = logging.getLogger(__name__)

MAX_TOP_LOGPROBS = 20  # the OpenAI API's limit; servers that allow more are rare


class RemoteEngine(Engine):
    def __init__(self, on_event: EventCallback, base_url: str, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """`timeout`: how long the server may stay silent before a request fails (a long
        prompt's evaluation counts); connecting gets at most 10 s."""
        self.base_url = api_url(base_url)
        self.root = server_root(base_url)
        self.timeout = timeout
        self._on_event = on_event
        self._has_key = bool(api_key)
        self._client = make_client(base_url, api_key, timeout)
        self._stream_client = make_client(base_url, api_key, timeout, keepalive=False)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._chats: dict[int, ChatStream] = {}
        self._model: str | None = None
        self._info: ModelInfo | None = None
        self._n_ctx_used = 0
        self._standard_only = False  # the server refused the extension fields once
        self._tokenizer: str | None = None  # the tokenize route that worked
        self._closed = False
        self._events: queue.Queue[Event | None] = queue.Queue()
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._dispatcher = threading.Thread(target=self._dispatch, name="remote-events",
                                            daemon=True)
        self._worker = threading.Thread(target=self._work, name="remote-requests",
                                        daemon=True)
        self._dispatcher.start()
        self._worker.start()

    @property
    def model(self) -> str | None:
        return self._model

    # ------------------------------------------------------------ threads

    def _emit(self, event: Event) -> None:
        self._events.put(event)

    def _dispatch(self) -> None:
        while (event := self._events.get()) is not None:
            try:
                self._on_event(event)
            except Exception:  # a broken callback must not silence every later event
                log.exception("event callback failed for %r", event)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if not self._closed:  # after close(), what is still queued is dropped
                job()

    def _submit(self, handler: Callable[..., None], *args: Any) -> int:
        rid = next(self._ids)
        if not self._closed:
            self._jobs.put(lambda: self._run(rid, handler, *args))
        return rid

    def _run(self, rid: int, handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(rid, *args)
        except RemoteError as err:
            self._emit(EngineError(rid, err.kind, err.message, err.hint))
        except httpx2.HTTPError as exc:
            err = transport_error(exc, self.base_url, self.timeout)
            self._emit(EngineError(rid, err.kind, err.message, err.hint))
        except Exception as exc:
            log.exception("remote request failed")
            self._emit(EngineError(rid, "internal", f"Talking to the server failed: {exc}",
                                   "This is a bug in the app; please report it."))

    # ------------------------------------------------------------ HTTP helpers

    def _need_model(self) -> str:
        if self._model is None:
            raise RemoteError("not_loaded", "No model is selected.",
                              "Choose one of the server's models first.")
        return self._model

    def _status_error(self, response: httpx2.Response) -> RemoteError:
        return status_error(response, self.base_url, model=self._model,
                            has_key=self._has_key)

    def _post(self, url: str, body: dict[str, Any], *, allow_missing: bool = False) -> Any:
        """POST JSON, answer the parsed JSON (None for a missing route if allowed)."""
        for attempt in (0, 1):
            try:
                response = self._client.post(url, json=body)
            except httpx2.HTTPError as exc:
                raise transport_error(exc, self.base_url, self.timeout) from exc
            if allow_missing and response.status_code in (404, 405, 501):
                return None
            if response.status_code < 400:
                break
            if attempt == 0 and not self._standard_only and rejects_extensions(response):
                self._standard_only = True
                body = {k: v for k, v in body.items() if k not in EXTENSIONS}
                continue
            raise self._status_error(response)
        try:
            return response.json()
        except ValueError:
            raise protocol_error(self.base_url, "an answer that is not valid JSON") from None

    def _chat_body(self, messages: Sequence[ChatMessage], sampling: Sampling, *,
                   stream: bool, fresh: bool = False) -> dict[str, Any]:
        # Refused here as the local engine refuses it: servers differ in what they accept.
        if (refusal := sampling_error(0, sampling)) is not None:
            raise RemoteError(refusal.kind, refusal.message, refusal.hint)
        body: dict[str, Any] = {
            "model": self._need_model(),
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": stream,
            **sampling_fields(sampling, standard_only=self._standard_only),
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if fresh and not self._standard_only:
            body["cache_prompt"] = False  # llama.cpp: evaluate the whole prompt again
        return body

    # ------------------------------------------------------------ load

    def load(self, spec: LoadSpec) -> int:
        """Select `spec.model_path`, a model id from /v1/models ("" picks the first)."""
        return self._submit(self._load, spec)

    def _load(self, rid: int, spec: LoadSpec) -> None:
        started = time.perf_counter()
        self._model = self._info = None
        self._tokenizer = None
        entries = fetch_models(self._client, self.base_url, self._has_key)
        host = host_of(self.base_url)
        if not entries:
            raise RemoteError("not_found", f"The server at {host} offers no models.",
                              "Load a model on the server, then connect again.")
        wanted = spec.model_path.strip()
        entry = next((e for e in entries if e["id"] == wanted), None) if wanted else entries[0]
        if entry is None:
            offered = ", ".join(e["id"] for e in entries[:8])
            raise RemoteError("not_found", f"The server at {host} has no model called "
                              f"“{wanted}”.", f"It offers: {offered}.")
        info = self._model_info(entry, started)
        self._model, self._info, self._n_ctx_used = entry["id"], info, 0
        self._emit(Loaded(rid, info))

    def _model_info(self, entry: dict[str, Any], started: float) -> ModelInfo:
        meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
        n_ctx = as_int(entry.get("max_model_len")) or as_int(entry.get("context_length"))
        template = ""
        if meta or entry.get("owned_by") == "llamacpp":
            props = self._llama_cpp_props()
            settings = props.get("default_generation_settings") or {}
            n_ctx = n_ctx or as_int(settings.get("n_ctx")) or as_int(props.get("n_ctx"))
            template = str(props.get("chat_template") or "")
        model_id = entry["id"]
        return ModelInfo(
            path=model_id, name=model_id.rstrip("/").rsplit("/", 1)[-1],
            architecture=str(meta.get("general.architecture", "")),
            n_params=as_int(meta.get("n_params")), size_bytes=as_int(meta.get("size")),
            n_ctx=n_ctx, n_ctx_train=as_int(meta.get("n_ctx_train")),
            n_vocab=as_int(meta.get("n_vocab")), n_threads=0,
            template_origin="server", template_name="server",
            load_seconds=time.perf_counter() - started,
            metadata={"server": self.base_url, "owned_by": str(entry.get("owned_by", "")),
                      **({"chat_template": template} if template else {})})

    def _llama_cpp_props(self) -> dict[str, Any]:
        """llama.cpp's GET /props (the context size, the template), or {}: it is a bonus."""
        with contextlib.suppress(httpx2.HTTPError, ValueError):
            response = self._client.get(self.root + "/props", timeout=5.0)
            if response.status_code == 200 and isinstance(data := response.json(), dict):
                return data
        return {}

    def unload(self) -> int:
        return self._submit(self._unload)

    def _unload(self, rid: int) -> None:
        self._model = self._info = None
        self._n_ctx_used = 0
        self._emit(Unloaded(rid))

    # ------------------------------------------------------------ chat

    def chat(self, messages: list[ChatMessage], sampling: Sampling, *,
             fresh: bool = False) -> int:
        rid = next(self._ids)
        chat = ChatStream(rid, self._emit, self.base_url, self.timeout)
        with self._lock:
            self._chats[rid] = chat
        if not self._closed:
            self._jobs.put(lambda: self._chat(chat, list(messages), sampling, fresh))
        return rid

    def cancel(self, request_id: int | None = None) -> None:
        with self._lock:
            chats = [c for rid, c in self._chats.items()
                     if request_id is None or rid == request_id]
        for chat in chats:
            self._end_chat(chat, "cancelled")
            chat.shutdown()

    def _end_chat(self, chat: ChatStream, reason: FinishReason,
                  error: RemoteError | None = None) -> None:
        def event() -> Event:
            if error is not None:
                return EngineError(chat.rid, error.kind, error.message, error.hint)
            timings = chat.timings()
            self._n_ctx_used = timings.n_ctx_used
            return ChatDone(chat.rid, reason, "".join(chat.pieces), timings)

        chat.finish(event)
        with self._lock:
            self._chats.pop(chat.rid, None)

    def _chat(self, chat: ChatStream, messages: list[ChatMessage], sampling: Sampling,
              fresh: bool) -> None:
        if chat.finished:  # cancelled while it waited: cancel() answered already
            return
        try:
            self._stream_chat(chat, messages, sampling, fresh)
        except Abandoned:
            return
        except RemoteError as err:
            self._end_chat(chat, "stop", err)
        except httpx2.HTTPError as exc:
            self._end_chat(chat, "stop", transport_error(
                exc, self.base_url, self.timeout, mid_reply=len(chat.pieces)))
        except Exception as exc:  # after a cancel, the shut socket may fail in any way
            if not chat.finished:
                log.exception("remote chat failed")
                self._end_chat(chat, "stop", RemoteError(
                    "internal", f"Talking to the server failed: {exc}",
                    "This is a bug in the app; please report it."))
        else:
            self._end_chat(chat, chat.reason(sampling))
        finally:
            with self._lock:
                self._chats.pop(chat.rid, None)

    def _stream_chat(self, chat: ChatStream, messages: list[ChatMessage], sampling: Sampling,
                     fresh: bool) -> None:
        for attempt in (0, 1):
            body = self._chat_body(messages, sampling, stream=True, fresh=fresh)
            chat.sent_at = time.perf_counter()
            with self._stream_client.stream("POST", "chat/completions", json=body,
                                            extensions={"trace": chat.trace}) as response:
                if response.status_code >= 400:
                    response.read()
                    if attempt == 0 and not self._standard_only and rejects_extensions(
                            response):
                        self._standard_only = True
                        continue
                    raise self._status_error(response)
                chat.read(response, messages)
                return

    # ------------------------------------------------------------ inspection

    def distribution(self, messages: list[ChatMessage], sampling: Sampling,
                     top_n: int = 20) -> int:
        return self._submit(self._distribution, list(messages), sampling, top_n)

    def _distribution(self, rid: int, messages: list[ChatMessage], sampling: Sampling,
                      top_n: int) -> None:
        body = self._chat_body(messages, sampling, stream=False)
        body |= {"max_tokens": 1, "logprobs": True,
                 "top_logprobs": max(1, min(top_n, MAX_TOP_LOGPROBS))}
        unsupported = RemoteError(
            "unsupported", "This server does not report token probabilities, so the "
            "next-token view is not available for its models.",
            "llama.cpp's server, vLLM and the OpenAI API report them; use one of those or a "
            "local model.")
        try:
            data = self._post("chat/completions", body)
        except RemoteError as err:
            if err.kind == "bad_request" and "logprob" in err.message.lower():
                raise unsupported from None
            raise
        n_vocab = self._info.n_vocab if self._info else 0
        self._emit(distribution_from(data, rid, n_vocab, self.base_url, unsupported))

    def tokenize(self, text: str, *, special: bool = False) -> int:
        return self._submit(self._tokenize, text, special)

    def _tokenize(self, rid: int, text: str, special: bool) -> None:
        model = self._need_model()
        self._tokenizer, event = tokenize_remote(
            self._post, self.root, model, rid, text, special, self._tokenizer)
        self._emit(event)

    def perplexity(self, text: str) -> int:
        return self._submit(self._unsupported, "Perplexity needs the probability of every "
                            "token of a text, which this server does not report.",
                            "Measure perplexity on a local model.")

    def set_adapters(self, adapters: Sequence[AdapterSetting]) -> int:
        if not any(a.applies for a in adapters):
            return self._submit(lambda rid: self._emit(AdaptersSet(rid, ())))
        return self._submit(self._unsupported, "LoRA adapters can only be applied to local "
                            "models from here.",
                            "Start the server with the adapter (llama.cpp: --lora), or use "
                            "a local model.")

    def _unsupported(self, rid: int, message: str, hint: str) -> None:
        self._emit(EngineError(rid, "unsupported", message, hint))

    def stats(self) -> int:
        rid = next(self._ids)  # known locally: answered at once, not behind a chat
        self._emit(Stats(rid, model_loaded=self._model is not None,
                         n_ctx=self._info.n_ctx if self._info else 0,
                         n_ctx_used=self._n_ctx_used, rss_bytes=0, engine_pid=0))
        return rid

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.cancel()
        self._jobs.put(None)
        self._worker.join(timeout=2.0)
        self._client.close()
        self._stream_client.close()
        self._events.put(None)
        self._dispatcher.join(timeout=2.0)
