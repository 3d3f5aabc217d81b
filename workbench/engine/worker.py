"""The engine worker: the only process that loads llama.cpp.

It runs in a child process started by `LocalEngine`, and connects back to it (see
`connect_to_app`). A reader thread takes requests off the connection, so a cancel lands
while the main thread is generating; the main thread runs one request at a time. If
llama.cpp crashes, only this process dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import queue
import random
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Client, Connection
from typing import Any, BinaryIO

from workbench.engine import distribution, wire
from workbench.engine.adapters import AdapterSlots
from workbench.engine.generation import Generation, TokenText
from workbench.engine.limits import load_error, sampling_error
from workbench.engine.loading import LoadFailure, open_llama
from workbench.engine.perplexity import score_text
from workbench.engine.protocol import (
    AdapterSetting,
    AdaptersSet,
    ChatDone,
    ChatMessage,
    ChatStarted,
    EngineError,
    Event,
    Loaded,
    LoadSpec,
    ModelInfo,
    Stats,
    Token,
    Tokenized,
    Unloaded,
)
from workbench.engine.templates import (
    ResolvedTemplate,
    TemplateError,
    render_prompt,
    resolve_template,
)
from workbench.lora.gguf_lora import AdapterError
from workbench.models.gguf import GGUFError, GGUFHeader, read_header


def default_threads() -> int:
    """Physical cores: llama.cpp generation is memory-bound and hyper-threads slow it."""
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return max(1, os.cpu_count() or 1)


class Worker:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.requests: queue.Queue[wire.Request] = queue.Queue()
        self.send_lock = threading.Lock()
        self.cancel_lock = threading.Lock()
        self.cancel_event = threading.Event()
        self.current_chat: int | None = None
        self.cancelled: set[int] = set()
        self.llm: Any = None
        self.spec: LoadSpec | None = None
        self.template: ResolvedTemplate | None = None
        self.bos_text = ""
        self.eos_text = ""
        self.add_bos = False
        # LoRA adapters read for the loaded model and those applied now; they go with it.
        self.adapters: AdapterSlots | None = None
        self.applied: tuple[AdapterSetting, ...] = ()  # as last requested and applied
        self.header: GGUFHeader | None = None  # of the loaded model
        self.info: ModelInfo | None = None  # of the loaded model, as Loaded reported it

    # ------------------------------------------------------------ plumbing

    def send(self, event: Event) -> None:
        with self.send_lock:
            self.conn.send(event)

    def read_requests(self) -> None:
        while True:
            try:
                request = self.conn.recv()
            except (EOFError, OSError):
                # The app is gone: nobody to serve. Exit without running finalizers that
                # could block on llama.cpp.
                os._exit(0)
            if isinstance(request, wire.CancelRequest):
                with self.cancel_lock:
                    if request.request_id is None:
                        if self.current_chat is not None:
                            self.cancel_event.set()
                    else:
                        self.cancelled.add(request.request_id)
                        if request.request_id == self.current_chat:
                            self.cancel_event.set()
                continue
            self.requests.put(request)

    def run(self) -> None:
        threading.Thread(target=self.read_requests, name="engine-requests", daemon=True).start()
        handlers = {
            wire.LoadRequest: self.on_load,
            wire.ChatRequest: self.on_chat,
            wire.UnloadRequest: self.on_unload,
            wire.TokenizeRequest: self.on_tokenize,
            wire.StatsRequest: self.on_stats,
            wire.DistributionRequest: self.on_distribution,
            wire.PerplexityRequest: self.on_perplexity,
            wire.SetAdaptersRequest: self.on_set_adapters,
        }
        while True:
            request = self.requests.get()
            if isinstance(request, wire.ShutdownRequest):
                break
            try:
                handlers[type(request)](request)
            except Exception as exc:  # keep serving: one bad request must not end the engine
                self.send(EngineError(request.request_id, "internal", f"Engine error: {exc}"))
        self.unload_model()

    # ------------------------------------------------------------ load

    def unload_model(self) -> None:
        # Freeing the model frees its adapters (llama_model's destructor deletes the ones
        # still registered with it): forget the pointers, never free them again.
        self.adapters = None
        self.applied = ()
        self.info = None
        if self.llm is not None:
            with contextlib.suppress(Exception):
                self.llm.close()
            self.llm = None
            gc.collect()

    def on_load(self, req: wire.LoadRequest) -> None:
        """Load req.spec. If it fails, the model loaded before is loaded again (with its
        adapters), so a setting that does not fit never costs the user the model they
        were chatting with; the error says which model the engine holds."""
        spec, rid = req.spec, req.request_id
        if (refusal := load_error(rid, spec)) is not None:
            self.send(replace(refusal, still_loaded=self.info))
            return
        try:
            header = read_header(spec.model_path)
        except GGUFError as exc:  # nothing was unloaded: the model in use stays
            self.send(EngineError(rid, "load_failed", str(exc),
                                  "Choose another model file, or download this one again.",
                                  still_loaded=self.info))
            return
        previous = (self.spec, self.header, self.applied) if self.llm is not None else None
        self.unload_model()
        self.spec = self.template = None
        try:
            self._open(spec, header)
        except LoadFailure as exc:
            self.send(EngineError(rid, exc.kind, exc.message, exc.hint,
                                  still_loaded=self._restore(previous)))
            return
        self.send(Loaded(rid, self.info))

    def _restore(self, previous: tuple[LoadSpec | None, GGUFHeader | None,
                                       tuple[AdapterSetting, ...]] | None) -> ModelInfo | None:
        """Load the model of `previous` again, with its adapters; its info, or None."""
        if previous is None or previous[0] is None or previous[1] is None:
            return None
        spec, header, adapters = previous
        try:
            self._open(spec, header)
        except LoadFailure:
            return None
        if adapters and self.adapters is not None:
            with contextlib.suppress(AdapterError):
                self.adapters.apply(adapters)
                self.applied = adapters
        return self.info

    def _open(self, spec: LoadSpec, header: GGUFHeader) -> None:
        """Open `spec` with llama.cpp and make it the loaded model; raises LoadFailure."""
        threads = spec.n_threads or default_threads()
        started = time.perf_counter()
        llm = open_llama(spec, header, threads)
        try:
            template = resolve_template(
                {k: str(v) for k, v in llm.metadata.items()},
                spec.chat_template,
                lambda text: self._is_single_special(llm, text),
            )
        except TemplateError as exc:
            llm.close()
            raise LoadFailure("template", str(exc),
                              "Choose a chat format in the model settings.") from exc
        self.llm, self.spec, self.header, self.template = llm, spec, header, template
        # Adapters are checked against this header (all parts, for a split model, once one
        # is needed).
        self.adapters = AdapterSlots(llm, spec.model_path, header)
        self.bos_text = self._token_text(llm, llm.token_bos())
        self.eos_text = self._token_text(llm, llm.token_eos())
        self.add_bos = str(llm.metadata.get("tokenizer.ggml.add_bos_token", "false")) == "true"
        self.info = ModelInfo(
            path=spec.model_path,
            name=header.name,
            architecture=header.architecture,
            n_params=header.n_params,
            size_bytes=header.file_size,
            n_ctx=llm.n_ctx(),
            n_ctx_train=header.context_length or llm.n_ctx(),
            n_vocab=llm.n_vocab(),
            n_threads=threads,
            template_origin=template.origin,
            template_name=template.name,
            load_seconds=time.perf_counter() - started,
            metadata={k: str(v)[:2000] for k, v in llm.metadata.items()},
        )

    @staticmethod
    def _token_text(llm: Any, token: int) -> str:
        if token < 0:
            return ""
        return llm._model.token_get_text(token)

    @staticmethod
    def _is_single_special(llm: Any, text: str) -> bool:
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        return len(ids) == 1

    # ------------------------------------------------------------ chat

    def on_chat(self, req: wire.ChatRequest) -> None:
        received = time.perf_counter()
        if self.llm is None or self.template is None:
            self.send(EngineError(req.request_id, "not_loaded", "No model is loaded.",
                                  "Load a model first."))
            return
        if (refusal := sampling_error(req.request_id, req.sampling)) is not None:
            self.send(refusal)
            return
        with self.cancel_lock:
            self.cancel_event.clear()
            self.current_chat = req.request_id
            if req.request_id in self.cancelled:
                self.cancel_event.set()
        try:
            self._chat(req, received)
        finally:
            with self.cancel_lock:
                self.current_chat = None
                self.cancelled.discard(req.request_id)

    def _build_prompt(self, request_id: int,
                      messages: tuple[ChatMessage, ...]) -> tuple[str, list[int]] | None:
        """The prompt text and tokens a chat turn sends; None after reporting an error."""
        llm = self.llm
        try:
            prompt = render_prompt(
                self.template,
                [{"role": m.role, "content": m.content} for m in messages],
                bos_token=self.bos_text,
                eos_token=self.eos_text,
            )
        except TemplateError as exc:
            self.send(EngineError(request_id, "template", str(exc),
                                  "Choose another chat format in the model settings."))
            return None
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        if self.add_bos and (not tokens or tokens[0] != llm.token_bos()):
            tokens.insert(0, llm.token_bos())
        n_ctx = llm.n_ctx()
        if len(tokens) >= n_ctx:
            self.send(EngineError(
                request_id, "context_full",
                f"The conversation needs {len(tokens):,} tokens but the context holds "
                f"{n_ctx:,}.",
                "Drop older messages, start a new chat, or load the model with a larger "
                "context."))
            return None
        return prompt, tokens

    def _chat(self, req: wire.ChatRequest, received: float) -> None:
        llm, sampling = self.llm, req.sampling
        built = self._build_prompt(req.request_id, req.messages)
        if built is None:
            return
        prompt, tokens = built
        if req.fresh:
            self._forget_kv_cache()
        cached = self._cached_prefix(tokens)
        self.send(ChatStarted(req.request_id, prompt, len(tokens), cached))

        llm.set_seed(sampling.seed if sampling.seed is not None else random.getrandbits(31))
        llm.last_n_tokens_size = sampling.repeat_last_n
        stops = tuple(s for s in (*sampling.stop, *self.template.stop_strings) if s)
        generation = Generation(
            llm, tokens, sampling, stops, self.cancel_event,
            on_text=lambda text: self.send(Token(req.request_id, text)),
        )
        with self._abortable_prompt_eval():
            result = generation.run(first_token_hook=self._disarm_abort)
        timings = result.timings(received, len(tokens), cached, llm.n_tokens)
        self.send(ChatDone(req.request_id, result.reason, result.text, timings,
                           result.token_ids))

    def _cached_prefix(self, tokens: list[int]) -> int:
        """How many prompt tokens the KV cache already holds (llama-cpp-python reuses them)."""
        llm = self.llm
        n = 0
        for a, b in zip(llm._input_ids, tokens, strict=False):
            if a != b:
                break
            n += 1
        # The last prompt token is always evaluated again to get fresh logits.
        return min(n, len(tokens) - 1)

    # Prompt evaluation can take seconds on a big model; llama.cpp's abort callback lets
    # Stop interrupt it. It is removed once tokens flow, where the per-token check suffices
    # and a Python callback per graph node would cost throughput.
    @contextlib.contextmanager
    def _abortable_prompt_eval(self):  # type: ignore[no-untyped-def]
        import llama_cpp

        event = self.cancel_event
        self._abort_cb = llama_cpp.ggml_abort_callback(lambda _data: event.is_set())
        llama_cpp.llama_set_abort_callback(self.llm._ctx.ctx, self._abort_cb, None)
        try:
            yield
        finally:
            self._disarm_abort()

    def _disarm_abort(self) -> None:
        import llama_cpp

        if self.llm is not None:
            llama_cpp.llama_set_abort_callback(
                self.llm._ctx.ctx, ctypes.cast(None, llama_cpp.ggml_abort_callback), None
            )

    # ------------------------------------------------------------ the rest

    def on_unload(self, req: wire.UnloadRequest) -> None:
        self.unload_model()
        self.spec = self.template = None
        self.send(Unloaded(req.request_id))

    def on_tokenize(self, req: wire.TokenizeRequest) -> None:
        if self.llm is None:
            self.send(EngineError(req.request_id, "not_loaded", "No model is loaded."))
            return
        ids = self.llm.tokenize(req.text.encode(), add_bos=False, special=req.special)
        text = TokenText(self.llm._model)
        pieces = tuple(text.piece(i, special=True).decode("utf-8", errors="replace") for i in ids)
        self.send(Tokenized(req.request_id, tuple(ids), pieces))

    def on_distribution(self, req: wire.DistributionRequest) -> None:
        if self.llm is None or self.template is None:
            self.send(EngineError(req.request_id, "not_loaded", "No model is loaded.",
                                  "Load a model first."))
            return
        if (refusal := sampling_error(req.request_id, req.sampling)) is not None:
            self.send(refusal)
            return
        built = self._build_prompt(req.request_id, req.messages)
        if built is None:
            return
        tokens = built[1]
        # The same prompt the next chat turn sends, so its evaluation is not wasted: that
        # turn finds it cached and samples at once.
        distribution.eval_prompt(self.llm, tokens)
        try:
            stages = distribution.sampler_stages(distribution.last_logits(self.llm),
                                                 req.sampling)
        except distribution.NotShown as exc:
            self.send(EngineError(req.request_id, "unsupported", str(exc),
                                  "Set Mirostat off to see the stages."))
            return
        text = TokenText(self.llm._model)
        self.send(distribution.to_distribution(
            req.request_id, stages, len(tokens), req.top_n,
            lambda t: text.piece(t, special=True).decode("utf-8", errors="replace")))

    def on_perplexity(self, req: wire.PerplexityRequest) -> None:
        llm = self.llm
        if llm is None:
            self.send(EngineError(req.request_id, "not_loaded", "No model is loaded.",
                                  "Load a model first."))
            return
        tokens = llm.tokenize(req.text.encode(), add_bos=self.add_bos, special=False)
        if len(tokens) > llm.n_ctx():
            self.send(EngineError(
                req.request_id, "context_full",
                f"The text is {len(tokens):,} tokens but the context holds {llm.n_ctx():,}.",
                "Shorten the text, or load the model with a larger context."))
            return
        if len(tokens) < 2:
            self.send(EngineError(req.request_id, "internal",
                                  "Perplexity needs a text of at least two tokens."))
            return
        text = TokenText(llm._model)
        self.send(score_text(req.request_id, llm, tokens,
                             lambda t: text.piece(t).decode("utf-8", errors="replace")))

    # ------------------------------------------------------------ LoRA adapters

    def on_set_adapters(self, req: wire.SetAdaptersRequest) -> None:
        if self.llm is None or self.adapters is None:
            self.send(EngineError(req.request_id, "not_loaded", "No model is loaded.",
                                  "Load a model first, then apply adapters."))
            return
        try:
            changed = self.adapters.apply(req.adapters)
        except AdapterError as exc:
            self.send(EngineError(req.request_id, "adapter", exc.message, exc.hint))
            return
        self.applied = tuple(req.adapters)
        if changed:
            # Every logit changes with the adapters, so nothing cached holds: the next
            # chat, distribution or perplexity evaluates its prompt from scratch.
            self._forget_kv_cache()
        self.send(AdaptersSet(req.request_id, tuple(a for a in req.adapters if a.applies)))

    def _forget_kv_cache(self) -> None:
        """Empty the KV cache and llama-cpp-python's record of it, as perplexity does."""
        if self.llm is not None:
            self.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            self.llm.reset()

    def on_stats(self, req: wire.StatsRequest) -> None:
        import psutil

        self.send(Stats(
            req.request_id,
            model_loaded=self.llm is not None,
            n_ctx=self.llm.n_ctx() if self.llm else 0,
            n_ctx_used=self.llm.n_tokens if self.llm else 0,
            rss_bytes=psutil.Process().memory_info().rss,
            engine_pid=os.getpid(),
        ))


def worker_main(conn: Connection) -> None:
    """Serve requests on `conn` until told to shut down or the app goes away."""
    Worker(conn).run()


def connect_to_app(stream: BinaryIO | None = None) -> Connection:
    """Connect to the app's listener. LocalEngine writes where it is, and the key it
    wants, as one JSON line on our stdin: {"address", "family", "authkey" (hex)}."""
    if stream is None and sys.stdin is not None:
        stream = sys.stdin.buffer
    if stream is None:  # a windowed frozen build may have no sys.stdin, yet a pipe on fd 0
        stream = open(0, "rb", closefd=False)  # noqa: SIM115
    line = stream.readline()
    if not line.strip():
        raise SystemExit("workbench engine worker: no connection details on stdin; the app "
                         "starts this process, it is not run by hand")
    hello = json.loads(line)
    return Client(hello["address"], hello["family"],
                  authkey=bytes.fromhex(hello["authkey"]))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the engine process: `python -m workbench.children --engine-worker`
    (a frozen build: `workbench --engine-worker`), which loads llama.cpp's libraries before
    this module brings numpy in. It takes no arguments; see `connect_to_app`."""
    del argv  # nothing on the command line: the key must not be visible to other users
    worker_main(connect_to_app())


if __name__ == "__main__":
    main()
