"""A loopback OpenAI-compatible server that misbehaves on demand, for the remote engine's
failure tests. Set `server.mode` before a request:

ok           a short streamed reply ("Hello, world!")
hang         accept the request, never answer
401 429 500  an error status with a JSON error body (429 says Retry-After: 7)
bad_json     two good pieces, then a data line that is not JSON
garbage      stray non-SSE lines between good pieces (to be ignored, as SSE says)
disconnect   two good pieces, then the connection drops mid-chunk
error_event  two good pieces, then llama.cpp's `error:` event
html         200 with an HTML page instead of an event stream
strict       400 for any request field outside the OpenAI API, else as ok
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "fault-model"
REPLY = ("Hello", ",", " world", "!")
STANDARD = {"model", "messages", "stream", "stream_options", "temperature", "top_p",
            "max_tokens", "seed", "stop", "presence_penalty", "frequency_penalty",
            "logprobs", "top_logprobs"}


def chunk(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": text} if text is not None else {}
    data = {"object": "chat.completion.chunk", "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(data)}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _fault(self) -> bool:
        """Answer with the current fault, if it is one that ignores the request."""
        mode = self.server.owner.mode
        if mode == "hang":
            self.server.owner.release.wait(30)
            self.close_connection = True
            return True
        if mode in ("401", "429", "500"):
            messages = {"401": "Invalid API key", "429": "Rate limit reached for requests",
                        "500": "CUDA error: out of memory"}
            headers = {"Retry-After": "7"} if mode == "429" else {}
            self._json(int(mode), {"error": {"message": messages[mode],
                                             "type": "error"}}, headers)
            return True
        return False

    def do_GET(self) -> None:
        if self._fault():
            return
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "Not found"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.server.owner.bodies.append(body)
        if self._fault():
            return
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": "Not found"}})
            return
        mode = self.server.owner.mode
        if mode == "strict" and (extra := sorted(set(body) - STANDARD)):
            self._json(400, {"error": {"message": "Unrecognized request argument supplied: "
                                                  + ", ".join(extra)}})
            return
        if not body.get("stream"):  # a whole reply, without logprobs
            self._json(200, {"object": "chat.completion", "model": MODEL, "choices": [{
                "index": 0, "message": {"role": "assistant", "content": REPLY[0]},
                "logprobs": None, "finish_reason": "length"}]})
            return
        if mode == "html":
            page = b"<html><body>Welcome to nginx!</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._stream(mode)

    def _send(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
        time.sleep(0.01)

    def _stream(self, mode: str) -> None:
        first, rest = REPLY[:2], REPLY[2:]
        for text in first:
            self._send(chunk(text))
        if mode == "bad_json":
            self._send(b"data: {\"choices\": [{\"delta\": {\"content\": \"x\"\n\n")
            self.server.owner.release.wait(5)
            self.close_connection = True
            return
        if mode == "error_event":
            self._send(b'error: {"code": 500, "message": "slot unavailable", '
                       b'"type": "server_error"}\n\n')
            self._send(b"")
            return
        if mode == "disconnect":
            self.wfile.write(b"400\r\ndata: {\"choi")  # a chunk promised, never finished
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if mode == "garbage":
            self._send(b"this is not server-sent events\n: a comment\nevent: message\n\n")
        for text in rest:
            self._send(chunk(text))
        self._send(chunk(finish="stop"))
        self._send(b"data: [DONE]\n\n")
        self._send(b"")  # the last chunk


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FaultServer


class FaultServer:
    def __init__(self) -> None:
        self.mode = "ok"
        self.bodies: list[dict[str, Any]] = []  # every POSTed request body
        self.release = threading.Event()  # ends hanging requests
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="openai-faults", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
