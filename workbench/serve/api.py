"""ApiServer: the loaded model behind an OpenAI-compatible HTTP API, on a background
thread (the standard library's ThreadingHTTPServer: one thread per connection).

Routes (with or without the /v1 prefix): GET /v1/models, GET /v1/models/{id},
POST /v1/chat/completions (streamed as server-sent events, or one JSON reply), GET /health.
/v1/completions and /v1/embeddings answer 501. When an API key is set every route but
/health needs `Authorization: Bearer KEY`. A client that goes away while its request waits
or streams cancels it, so the engine is free again at once.

On a loopback address, requests must name a loopback host: a web page cannot reach the
server through DNS rebinding (a name of its own that resolves to 127.0.0.1).
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import queue
import select
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from workbench.engine.protocol import ChatDone, ChatStarted, EngineError, Sampling, Token
from workbench.serve.backend import ServeBackend, ServeEvent, Ticket
from workbench.serve.openai_format import (
    ApiError,
    ChatCall,
    chunk_body,
    completion_body,
    error_for,
    model_entry,
    models_body,
    parse_chat_request,
    usage_chunk,
)
from workbench.serve.settings import ServerSettings, is_loopback

log = logging.getLogger(__name__)

MAX_BODY = 32 << 20
POLL_S = 0.1  # how often a waiting request checks that its client is still there
NOT_HERE = ("completions", "embeddings", "audio", "images", "responses")


class ServeError(Exception):
    """The server cannot start: the text says why, for users."""


class _Gone(Exception):
    """The client disconnected, or the server is stopping."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR lets another program's listening port be taken over on Windows.
    allow_reuse_address = sys.platform != "win32"
    api: ApiServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class ApiServer:
    def __init__(self, backend: ServeBackend, settings: ServerSettings | None = None,
                 api_key: str | None = None, defaults: Sampling | None = None,
                 max_waiting: int = 32) -> None:
        """`defaults`: the sampling for what a request leaves out (Sampling() if None).
        `max_waiting`: requests beyond this many in progress are refused with 429."""
        self.backend = backend
        self.settings = settings or ServerSettings()
        self.api_key = api_key or None
        self.defaults = defaults or Sampling()
        self.max_waiting = max_waiting
        self.created = int(time.time())
        self.served = 0  # chat requests answered in full
        self._lock = threading.Lock()
        self._tickets: set[Ticket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stopping = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind and serve on a background thread; ServeError if the address is unusable."""
        problem = self.settings.problem()
        if problem:
            raise ServeError(problem)
        host = self.settings.host.strip("[]")
        host = "127.0.0.1" if host.lower() == "localhost" else host
        kind = _Server6 if ":" in host else _Server
        try:
            httpd = kind((host, self.settings.port), _Handler)
        except OSError as exc:
            raise ServeError(_bind_problem(exc, host, self.settings.port)) from exc
        httpd.api = self
        self.stopping = False
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="api-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and cancel what is in progress. Safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.stopping = True
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            tickets = list(self._tickets)
        for ticket in tickets:
            self.backend.cancel(ticket)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self.settings.port

    @property
    def url(self) -> str:
        """The API's base URL for a client on this machine (what OpenAI's base_url takes)."""
        host = self.settings.host.strip("[]")
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    @property
    def in_progress(self) -> int:
        with self._lock:
            return len(self._tickets)

    def _track(self, ticket: Ticket, add: bool) -> None:
        with self._lock:
            if add:
                self._tickets.add(ticket)
            else:
                self._tickets.discard(ticket)

    def _count_served(self) -> None:
        with self._lock:
            self.served += 1


def _bind_problem(exc: OSError, host: str, port: int) -> str:
    if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
        return (f"Port {port} on {host} is already in use by another program. Choose "
                "another port, or 0 for any free one.")
    if exc.errno in (errno.EACCES, getattr(errno, "WSAEACCES", -1)):
        return (f"Port {port} needs administrator rights on this system (ports below 1024 "
                "usually do). Choose a port above 1024, or 0 for any free one.")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"This computer has no network address {host}."
    return f"Cannot listen on {host}:{port}: {exc.strerror or exc}."


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for plain replies; streams close
    server_version = "Workbench"
    timeout = 300  # an idle keep-alive connection's thread ends after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    @property
    def api(self) -> ApiServer:
        return self.server.api

    # ------------------------------------------------------------ routing

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        # A body left unread (a request refused before reading it) would be parsed as the
        # next request on this keep-alive connection: such a connection is closed instead.
        self._body_unread = (self.headers.get("Content-Length") or "0").strip() not in ("", "0")
        try:
            self._route(method, urlsplit(self.path).path.rstrip("/") or "/")
        except ApiError as err:
            if self._body_unread:
                self.close_connection = True
            self._send_json(err.status, err.body())
        except _Gone:
            self.close_connection = True
        except Exception:  # a bug must answer 500, not drop the connection silently
            log.exception("API request failed")
            self._send_json(500, ApiError(500, "Internal server error.",
                                          kind="server_error").body())

    def _route(self, method: str, path: str) -> None:
        self._check_host()
        if path == "/health":
            self._send_json(200, {"status": "ok"})
            return
        self._check_key()
        route = path.removeprefix("/v1")
        if route == "/models" and method == "GET":
            self._send_json(200, models_body(self.api.backend.model_id(), self.api.created))
        elif route.startswith("/models/") and method == "GET":
            wanted = route.removeprefix("/models/")
            if wanted != self.api.backend.model_id():
                raise _unknown_model(wanted, self.api.backend.model_id())
            self._send_json(200, model_entry(wanted, self.api.created))
        elif route == "/chat/completions" and method == "POST":
            self._chat(self._read_json())
        elif route.lstrip("/").split("/")[0] in NOT_HERE:
            raise ApiError(501, f"{route} is not supported by this server; use "
                           "/v1/chat/completions.", code="not_implemented")
        elif route in ("/models", "/chat/completions"):
            raise ApiError(405, f"{method} is not allowed on {path}.",
                           code="method_not_allowed")
        else:
            raise ApiError(404, f"There is no route {method} {path}.", code="not_found")

    def _check_host(self) -> None:
        if not self.api.settings.loopback:
            return
        host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        if host and not is_loopback(host):  # browsers always send Host; old tools may not
            raise ApiError(403, "This server only answers requests addressed to this "
                           "computer (127.0.0.1 or localhost).", code="forbidden_host")

    def _check_key(self) -> None:
        key = self.api.api_key
        if not key:
            return
        given = self.headers.get("Authorization") or ""
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), key.encode()):
            what = "Incorrect API key provided." if given else "No API key provided."
            raise ApiError(401, f"{what} Send it as 'Authorization: Bearer KEY'.",
                           code="invalid_api_key")

    def _read_json(self) -> Any:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise ApiError(411, "Send the body with a Content-Length.")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number.") from None
        if length > MAX_BODY:
            self.close_connection = True  # the unread body must not be parsed as a request
            raise ApiError(413, f"The request body is larger than {MAX_BODY >> 20} MB.")
        raw = self.rfile.read(length) if length else b""
        self._body_unread = False
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"The request body is not valid JSON: {exc}.") from None

    # ------------------------------------------------------------ chat

    def _chat(self, body: Any) -> None:
        api = self.api
        call = parse_chat_request(body, api.defaults)
        model = api.backend.model_id()
        if model is None:
            raise ApiError(503, "No model is loaded in Workbench; load one and try again.",
                           kind="server_error", code="model_not_loaded")
        if call.model != model:
            raise _unknown_model(call.model, model)
        if api.in_progress >= api.max_waiting:
            raise ApiError(429, "Too many requests are waiting for the model; try again "
                           "later.", kind="rate_limit_error", code="queue_full")
        events: queue.Queue[ServeEvent] = queue.Queue()
        ticket = api.backend.submit(call.messages, call.sampling, events.put,
                                    fresh=call.fresh)
        api._track(ticket, True)
        try:
            if call.stream:
                self._stream(call, model, ticket, events)
            else:
                self._complete(model, ticket, events)
        finally:
            api._track(ticket, False)
            if not ticket.finished:
                api.backend.cancel(ticket)  # the client left, or the server stops

    def _next_event(self, events: queue.Queue[ServeEvent]) -> ServeEvent:
        while True:
            try:
                return events.get(timeout=POLL_S)
            except queue.Empty:
                if self.api.stopping or self._client_gone():
                    raise _Gone from None

    def _client_gone(self) -> bool:
        """True when the client closed its end (a request may still be queued or in
        prompt evaluation, when nothing is written that would fail)."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _complete(self, model: str, ticket: Ticket,
                  events: queue.Queue[ServeEvent]) -> None:
        while True:
            event = self._next_event(events)
            if isinstance(event, EngineError):
                raise error_for(event)
            if isinstance(event, ChatDone):
                if event.reason == "cancelled":
                    raise _Gone
                self.api._count_served()
                body = completion_body(_completion_id(), int(time.time()), model, event)
                self._send_json(200, body)
                return

    def _stream(self, call: ChatCall, model: str, ticket: Ticket,
                events: queue.Queue[ServeEvent]) -> None:
        cid, created, usage = _completion_id(), int(time.time()), call.include_usage
        started = False
        while True:
            event = self._next_event(events)
            if not started:
                if isinstance(event, EngineError):
                    raise error_for(event)  # nothing sent yet: a proper HTTP error
                if isinstance(event, ChatDone) and event.reason == "cancelled":
                    raise _Gone
                self._start_events()
                self._event(chunk_body(cid, created, model, {"role": "assistant",
                                                             "content": ""}, with_usage=usage))
                started = True
            if isinstance(event, ChatStarted):
                continue
            if isinstance(event, Token):
                self._event(chunk_body(cid, created, model, {"content": event.text},
                                       with_usage=usage))
            elif isinstance(event, EngineError):
                self._event(error_for(event).body())  # OpenAI's clients raise on it
                return
            elif isinstance(event, ChatDone):
                if event.reason == "cancelled":
                    raise _Gone
                finish = completion_body(cid, created, model, event)["choices"][0]
                self._event(chunk_body(cid, created, model, {}, finish["finish_reason"],
                                       with_usage=usage))
                if usage:
                    self._event(usage_chunk(cid, created, model, event))
                self._write(b"data: [DONE]\n\n")
                self.api._count_served()
                return

    # ------------------------------------------------------------ writing

    def _start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        self.close_connection = True

    def _event(self, data: dict[str, Any]) -> None:
        self._write(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")

    def _write(self, raw: bytes) -> None:
        try:
            self.wfile.write(raw)
            self.wfile.flush()
        except OSError:
            raise _Gone from None

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(raw)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def _unknown_model(wanted: str, served: str | None) -> ApiError:
    offer = f"this server serves '{served}'" if served else "no model is loaded"
    return ApiError(404, f"The model '{wanted}' does not exist: {offer} (see /v1/models).",
                    param="model", code="model_not_found")
