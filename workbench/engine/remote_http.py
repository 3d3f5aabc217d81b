"""HTTP plumbing for the remote engine: addresses, the model list, server-sent events, and
turning every way a request can fail into a `RemoteError` with a message for users.

No Qt and no engine state here, so the connection dialog can call `list_models` directly.
"""

from __future__ import annotations

import contextlib
import email.utils
import http
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from typing import Any

try:  # huggingface_hub 2.x brings httpx2, 1.x brings httpx (same API): use whichever is here
    import httpx2
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as httpx2  # type: ignore[no-redef]

DEFAULT_TIMEOUT_S = 60.0  # the longest the server may stay silent (prompt evaluation counts)
CONNECT_TIMEOUT_S = 10.0
_DETAIL_CHARS = 300


class RemoteError(Exception):
    """A request to the server failed. `message` and `hint` are written for users.

    kind: "connection" | "timeout" | "auth" | "not_found" | "rate_limited" | "server"
    | "bad_request" | "context_full" | "protocol" | "unsupported"
    """

    def __init__(self, kind: str, message: str, hint: str = "",
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint
        self.retry_after_s = retry_after_s


# ---------------------------------------------------------------- addresses


def api_url(base_url: str) -> str:
    """The API root requests are made under. A bare `http://host:port` gets `/v1` (what
    llama.cpp, vLLM and llama-cpp-python serve); any other path is taken as given, since
    some providers put the API elsewhere (`.../openai/v1`, `.../v1beta/openai`)."""
    url = base_url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url if httpx2.URL(url).path not in ("", "/") else url + "/v1"


def server_root(base_url: str) -> str:
    """Where server-specific extras live (llama.cpp's /tokenize, /props): the API root
    without its trailing /v1."""
    url = api_url(base_url)
    return url[: -len("/v1")] if url.endswith("/v1") else url


def host_of(base_url: str) -> str:
    url = httpx2.URL(api_url(base_url))
    return f"{url.host}:{url.port}" if url.port else url.host


def make_client(base_url: str, api_key: str | None, timeout_s: float, *,
                keepalive: bool = True) -> httpx2.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # A streamed reply gets a connection of its own (no keep-alive), so Stop can shut
    # exactly that socket down.
    limits = httpx2.Limits(max_keepalive_connections=20 if keepalive else 0)
    return httpx2.Client(
        base_url=api_url(base_url) + "/", headers=headers, limits=limits,
        timeout=httpx2.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S)))


# ---------------------------------------------------------------- errors


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError, IndexError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None


def server_detail(response: httpx2.Response) -> str:
    """The server's own words about an error, from the usual JSON shapes, or ""."""
    try:
        data: Any = response.json()
    except ValueError:
        text = response.text.strip()
        # An HTML error page says nothing a user can read here.
        return "" if text.startswith("<") else text[:_DETAIL_CHARS]
    return detail_from_json(data)


def detail_from_json(data: Any) -> str:
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message") or error.get("msg") or error.get("type")
        if isinstance(error, list) and error:  # FastAPI validation errors
            error = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e)
                              for e in error)
        if error:
            return str(error)[:_DETAIL_CHARS]
    return ""


def _looks_like_context_overflow(detail: str) -> bool:
    text = detail.lower()
    return "context" in text and any(w in text for w in ("length", "size", "exceed", "long"))


def status_error(response: httpx2.Response, base_url: str, *, model: str | None = None,
                 has_key: bool = False) -> RemoteError:
    """The error for a non-2xx answer. The body must have been read."""
    code = response.status_code
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = response.reason_phrase or "error"
    host = host_of(base_url)
    detail = server_detail(response)
    said = f": {detail}" if detail else ""
    said += "" if said.endswith((".", "!", "?")) else "."
    status = f"{code} {phrase}"
    wait = retry_after(response.headers.get("retry-after"))
    wait_hint = (f"The server asks to wait {wait:.0f} s before trying again."
                 if wait is not None else "Wait a little, then try again.")
    if code == 401:
        what = ("the API key was not accepted" if has_key else "it needs an API key")
        return RemoteError("auth", f"The server at {host} refused the request: {what} "
                           f"({status}).",
                           "Enter the right API key for this server in the connection "
                           "settings.")
    if code == 403:
        return RemoteError("auth", f"The server at {host} refused access ({status}){said}",
                           "Check that the API key is right and may use this model.")
    if code == 404:
        if model and "model" in detail.lower():
            return RemoteError("not_found", f"The server at {host} has no model called "
                               f"“{model}”.", "Choose one of the models the server lists.")
        path = response.request.url.path
        return RemoteError("not_found", f"The server at {host} has nothing at {path} "
                           f"({status}).",
                           "Check the address: for most servers it ends in /v1, as in "
                           "http://localhost:8080/v1.")
    if code == 429:
        return RemoteError("rate_limited", f"The server at {host} is limiting requests "
                           f"({status}){said}", wait_hint, wait)
    if code in (400, 413, 422) and _looks_like_context_overflow(detail):
        return RemoteError("context_full", f"The conversation is longer than the server's "
                           f"context for this model{said}",
                           "Drop older messages or start a new chat.")
    if 400 <= code < 500:
        return RemoteError("bad_request", f"The server at {host} rejected the request "
                           f"({status}){said}",
                           "A setting may be outside what this server accepts; try the "
                           "default settings.")
    if code == 503:
        return RemoteError("server", f"The server at {host} is unavailable or busy "
                           f"({status}){said}", wait_hint, wait)
    return RemoteError("server", f"The server at {host} failed ({status}){said}",
                       "Try again; if it keeps failing, the server's log says why.")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def transport_error(exc: Exception, base_url: str, timeout_s: float, *,
                    mid_reply: int = 0) -> RemoteError:
    """The error for a request that got no (complete) answer. `mid_reply`: how many pieces
    of a streamed reply had arrived when it broke."""
    host = host_of(base_url)
    causes = list(_causes(exc))
    text = " ".join(str(c) for c in causes).lower()
    if isinstance(exc, httpx2.ConnectTimeout):
        return RemoteError("timeout", f"The server at {host} did not accept a connection "
                           f"within {min(timeout_s, CONNECT_TIMEOUT_S):g} s.",
                           "Check the address, and that nothing (a firewall, a VPN) blocks "
                           "the port.")
    if isinstance(exc, httpx2.TimeoutException):
        where = (f" after {mid_reply} pieces of the reply" if mid_reply
                 else "")
        return RemoteError("timeout", f"The server at {host} stopped answering{where}: "
                           f"nothing came for {timeout_s:g} s.",
                           "It may be overloaded or still loading the model. Try again, "
                           "or allow a longer timeout in the connection settings.")
    if isinstance(exc, httpx2.ConnectError):
        if any(isinstance(c, ConnectionRefusedError) for c in causes) or "refused" in text:
            return RemoteError("connection", f"Could not connect to {host}: the connection "
                               "was refused.",
                               "Check that the server is running and that the address and "
                               "port are right.")
        if any(isinstance(c, socket.gaierror) for c in causes) or any(
                w in text for w in ("name or service", "nodename", "getaddrinfo",
                                    "name resolution")):
            return RemoteError("connection", f"Could not find the server {host}: the name "
                               "does not resolve.",
                               "Check the address for typos, and the network connection.")
        if any(isinstance(c, ssl.SSLError) for c in causes):
            return RemoteError("connection", f"The secure connection to {host} failed: "
                               f"{causes[-1]}.",
                               "Check that the address uses the right scheme (http or "
                               "https) and that the server's certificate is valid.")
        return RemoteError("connection", f"Could not connect to {host}: {causes[-1]}.",
                           "Check the address and the network connection.")
    if mid_reply:
        return RemoteError("connection", f"The connection to {host} broke off after "
                           f"{mid_reply} pieces of the reply.",
                           "The server may have stopped or restarted. Send again to retry.")
    return RemoteError("connection", f"The connection to {host} broke off before the server "
                       "answered.",
                       "The server may have stopped or restarted. Try again.")


def protocol_error(base_url: str, what: str) -> RemoteError:
    return RemoteError("protocol", f"The server at {host_of(base_url)} sent {what}.",
                       "It may not be an OpenAI-compatible server, or a proxy in between "
                       "changed the answer. Check the address.")


# ---------------------------------------------------------------- server-sent events


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(field, payload) for each event of a text/event-stream: field "data" normally, or
    "error", which llama.cpp's server uses for a failure mid-stream. Comments, event names,
    ids and lines of unknown fields are ignored, as the SSE specification says."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "data", "\n".join(data)
                data = []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "error":
            yield "error", value
    if data:
        yield "data", "\n".join(data)


# ---------------------------------------------------------------- the model list


def fetch_models(client: httpx2.Client, base_url: str, has_key: bool) -> list[dict[str, Any]]:
    """The entries of GET /v1/models (each a dict with at least "id")."""
    try:
        response = client.get("models")
        response.read()
    except httpx2.HTTPError as exc:
        raise transport_error(exc, base_url, _timeout_of(client)) from exc
    if response.status_code >= 400:
        raise status_error(response, base_url, has_key=has_key)
    try:
        data = response.json()
    except ValueError:
        raise protocol_error(base_url, "something other than a model list for /models") \
            from None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise protocol_error(base_url, "something other than a model list for /models")
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]


def _timeout_of(client: httpx2.Client) -> float:
    return client.timeout.read or DEFAULT_TIMEOUT_S


def list_models(base_url: str, api_key: str | None = None,
                timeout_s: float = CONNECT_TIMEOUT_S) -> list[str]:
    """The ids of the models a server offers; raises RemoteError (for the connection
    dialog's "Test connection")."""
    with make_client(base_url, api_key, timeout_s) as client:
        return [e["id"] for e in fetch_models(client, base_url, bool(api_key))]


def as_int(value: Any) -> int:
    """A JSON number as an int; 0 for anything else (servers differ in what they send)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
