"""Plain-HTTP helpers for the API server's tests: what a client without OpenAI's package
sends, including the malformed requests that package never would."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlsplit


def request(url: str, method: str = "GET", body: Any = None, *, raw: bytes | None = None,
            headers: dict[str, str] | None = None,
            timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """One request; (status, headers, body). `raw` sends bytes as they are."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    sent = {"Content-Type": "application/json", **(headers or {})}
    try:
        conn.request(method, parts.path, body=data, headers=sent)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def error_of(body: bytes) -> dict[str, Any]:
    """The `error` object of an OpenAI-shaped error body (asserting the shape)."""
    data = json.loads(body)
    assert set(data) == {"error"}, data
    error = data["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    return error


def open_stream(url: str, body: dict[str, Any], timeout: float = 60) -> socket.socket:
    """Send a POST on a raw socket and return it unread (to hang up mid-reply)."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
    sock.sendall(head.encode() + data)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = sock.recv(4096)
        if not chunk:
            break
        seen += chunk
    return seen
