"""Fetch one file from the Hub into its `.incomplete` file, surviving a bad network.

Metadata (size, commit, etag) comes from huggingface_hub's get_hf_file_metadata; bytes
from HTTP GET with Range through huggingface_hub's shared session, following the LFS
redirect by hand so that the token never goes to another host. Each byte is hashed as it
is written, so verifying a finished file costs nothing more; a partial file left by an
earlier session is hashed once before resuming.

Dropped connections, 408/429/5xx and stalls are retried with exponential backoff (or the
server's Retry-After), resuming where the bytes stopped. A stall is a socket read that
waits `stall_timeout_s` for data: httpx's read timeout is exactly that watchdog. Pause and
cancel shut the socket down from the calling thread, so they act at once even mid-stall.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

from huggingface_hub import get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.file_download import HfFileMetadata
from huggingface_hub.utils import build_hf_headers, get_session

from workbench.models.download_store import FilePlan, HashState, PartialWriter

try:  # huggingface_hub 2.x speaks through httpx2, 1.x through httpx (same API)
    import httpx2
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as httpx2  # type: ignore[no-redef]

T = TypeVar("T")
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_REHASH_BLOCK = 8 * 2**20
_MAX_REDIRECTS = 5
_MAX_RETRY_AFTER_S = 120.0  # a server asking for longer is waited on no more than this


class Stopped(Exception):
    """The user paused or cancelled, or the app is closing: `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DownloadFailed(Exception):
    """A failure to show the user; retrying would not help (or retries ran out)."""


class _Transient(Exception):
    """Worth retrying: a dropped connection, a stall, a busy server."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class FetchOptions:
    stall_timeout_s: float = 30.0
    max_retries: int = 6
    backoff_s: float = 0.5  # first wait; doubles per failed attempt up to backoff_cap_s
    backoff_cap_s: float = 8.0
    chunk_size: int = 4 * 2**20  # bytes handed to the writer thread at a time


@dataclass(frozen=True)
class Source:
    """Which file of which repository, and how to reach the Hub."""

    repo_id: str
    revision: str  # the commit, once known, so a push mid-download cannot mix versions
    endpoint: str
    token: Callable[[], str | None]


class Control:
    """The stop switch of one download, shared by its worker and the manager."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason: str | None = None
        self._socket: socket.socket | None = None

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.reason != "cancel":  # a cancel is never downgraded to a pause
                self.reason = reason
            self._event.set()
            sock = self._socket
        if sock is not None:
            # Wakes a read blocked on a stalled server; the worker then sees the flag.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def check(self) -> None:
        if self._event.is_set():
            raise Stopped(self.reason or "pause")

    def sleep(self, seconds: float) -> None:
        self._event.wait(seconds)
        self.check()

    def watch(self, response: Any) -> None:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._socket = sock
        if self._event.is_set():
            self.stop(self.reason or "pause")

    def unwatch(self) -> None:
        with self._lock:
            self._socket = None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _has_auth(headers: dict[str, str]) -> bool:
    return any(k.lower() == "authorization" for k in headers)


def _without_auth(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return min(_MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        delay = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        return min(_MAX_RETRY_AFTER_S, max(0.0, delay))
    except (TypeError, ValueError):
        return None


def describe_status(status: int, source: Source, filename: str, *, token_sent: bool,
                    gated: bool = False) -> str:
    """What an HTTP error means to the user, and what to do about it."""
    repo = source.repo_id
    if status in (401, 403):
        if not token_sent:
            return (f"{repo} needs a Hugging Face token: it is gated or private. Add your "
                    "token in Settings and, if the model is gated, accept its license on its "
                    "Hub page. Then resume.")
        return (f"Your Hugging Face token has no access to {repo}. If the model is gated, "
                "accept its license on its Hub page with the account the token belongs to; "
                "otherwise use a token with read access. Then resume.")
    if status == 404:
        return (f"{filename} was not found in {repo} on the Hub (revision {source.revision}): "
                "the repository, the revision or the file does not exist, or was renamed.")
    if status == 429:
        return "The Hub is limiting requests (HTTP 429). Resume in a few minutes."
    if status >= 500:
        return (f"The Hub failed to send {filename} (HTTP {status}) after several tries. It "
                "may be busy: resume later.")
    return f"The Hub refused to send {filename} (HTTP {status})."


def resolve(source: Source, filename: str) -> tuple[HfFileMetadata, dict[str, str]]:
    """The file's metadata, and the headers for fetching its bytes from `location`."""
    token = source.token()
    hub_headers = build_hf_headers(token=token)
    url = hf_hub_url(source.repo_id, filename, revision=source.revision,
                     endpoint=source.endpoint)
    try:
        meta = get_hf_file_metadata(url, token=token, endpoint=source.endpoint)
    except OfflineModeIsEnabled as exc:
        raise DownloadFailed("Hugging Face offline mode is on (HF_HUB_OFFLINE): turn it off "
                             "to download models.") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code
        message = describe_status(status, source, filename, token_sent=_has_auth(hub_headers))
        if status in _RETRY_STATUS:
            raise _Transient(message, _retry_after(exc.response.headers)) from exc
        raise DownloadFailed(message) from exc
    except (httpx2.TransportError, OSError) as exc:
        raise _Transient(f"Cannot reach the Hub at {source.endpoint}: check your internet "
                         "connection, then resume.") from exc
    headers = {**hub_headers, "Accept-Encoding": "identity"}  # offsets are the file's bytes
    if _origin(meta.location) != _origin(url):
        headers = _without_auth(headers)  # a CDN URL is signed: the token stays with the Hub
    return meta, headers


def _delay(options: FetchOptions, failures: int, exc: _Transient) -> float:
    if exc.retry_after is not None:
        return exc.retry_after
    return min(options.backoff_cap_s, options.backoff_s * 2 ** (failures - 1))


def with_retries(call: Callable[[], T], control: Control, options: FetchOptions) -> T:
    """`call()`, retried with backoff while it fails transiently."""
    failures = 0
    while True:
        control.check()
        try:
            return call()
        except _Transient as exc:
            control.check()
            failures += 1
            if failures > options.max_retries:
                raise DownloadFailed(f"{exc} (gave up after {failures} tries)") from exc
            control.sleep(_delay(options, failures, exc))


class FileFetch:
    """Brings one file's partial bytes up to its full size, hashing as it goes."""

    def __init__(self, source: Source, plan: FilePlan, partial: Path, control: Control,
                 options: FetchOptions, on_bytes: Callable[[int], None],
                 hashed: HashState | None = None,
                 location: tuple[str, dict[str, str]] | None = None) -> None:
        self.source, self.plan, self.partial = source, plan, partial
        self.control, self.options, self.on_bytes = control, options, on_bytes
        self.hash = hashed
        self.location = location
        self.done = 0
        self.requests = 0

    def run(self) -> HashState:
        """Returns the hash of the whole file (compare with plan.etag); raises Stopped,
        DownloadFailed."""
        self._load_partial()
        failures = 0
        location, self.location = self.location, None
        while self.done < self.plan.size:
            self.control.check()
            before = self.done
            try:
                if location is None:
                    meta, headers = resolve(self.source, self.plan.filename)
                    location = (meta.location, headers)
                self._stream(*location)
            except _Transient as exc:
                self.control.check()
                # Bytes arrived, so the network works: the retry count starts over.
                failures = 1 if self.done > before else failures + 1
                if failures > self.options.max_retries:
                    raise DownloadFailed(f"{exc} (gave up after {failures} tries)") from exc
                location = None  # a signed CDN URL may have expired: ask the Hub again
                self.control.sleep(_delay(self.options, failures, exc))
        assert self.hash is not None
        return self.hash

    def _load_partial(self) -> None:
        """Pick up the bytes already there, hashing them unless this session already did."""
        size = self.partial.stat().st_size if self.partial.exists() else 0
        if size > self.plan.size:
            size = self._truncate()
        if self.hash is not None and self.hash.count == size:
            self.done = size
            return
        self.hash = HashState(self.plan)
        if size:
            with self.partial.open("rb") as fh:
                while self.hash.count < size:
                    self.control.check()
                    block = fh.read(min(_REHASH_BLOCK, size - self.hash.count))
                    if not block:
                        break
                    self.hash.update(block)
        self.done = self.hash.count
        self.on_bytes(self.done)

    def _truncate(self) -> int:
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        with self.partial.open("wb"):
            pass
        self.hash = HashState(self.plan)
        self.done = 0
        self.on_bytes(0)
        return 0

    def _stream(self, url: str, headers: dict[str, str]) -> None:
        timeout = httpx2.Timeout(self.options.stall_timeout_s)
        for _ in range(_MAX_REDIRECTS + 1):
            self.requests += 1
            request_headers = {**headers, "Range": f"bytes={self.done}-"}
            try:
                with get_session().stream("GET", url, headers=request_headers, timeout=timeout,
                                          follow_redirects=False) as response:
                    if response.is_redirect and "Location" in response.headers:
                        target = urljoin(url, response.headers["Location"])
                        if _origin(target) != _origin(url):
                            headers = _without_auth(headers)
                        url = target
                        continue
                    self._receive(response, headers)
                    return
            except (httpx2.TransportError, OSError) as exc:
                self.control.check()  # a pause that shut the socket is not a failure
                raise self._transport_failure(exc) from exc
            finally:
                self.control.unwatch()
        raise _Transient(f"The Hub redirected {self.plan.filename} too many times.")

    def _transport_failure(self, exc: Exception) -> Exception:
        if isinstance(exc, httpx2.TimeoutException):
            return _Transient(f"The download of {self.plan.filename} stalled (no data for "
                              f"{self.options.stall_timeout_s:g} s).")
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
            return DownloadFailed(f"Cannot write {self.partial}: {exc.strerror or exc}. Free "
                                  "some disk space or check the folder, then resume.")
        return _Transient(f"The connection dropped while downloading {self.plan.filename}.")

    def _receive(self, response: Any, headers: dict[str, str]) -> None:
        status = response.status_code
        if status == 416 and self.done:
            self._truncate()  # the server has fewer bytes than the partial: start over
            raise _Transient(f"The Hub refused to resume {self.plan.filename}; restarting.")
        if status >= 400:
            message = describe_status(status, self.source, self.plan.filename,
                                      token_sent=_has_auth(headers))
            if status in _RETRY_STATUS:
                raise _Transient(message, _retry_after(response.headers))
            raise DownloadFailed(message)
        if status == 200 and self.done:
            self._truncate()  # the server ignored Range and sends it all: take it from 0
        elif status == 206 and not response.headers.get("Content-Range", "").startswith(
                f"bytes {self.done}-"):
            raise _Transient(f"The Hub sent the wrong part of {self.plan.filename}.")
        elif status not in (200, 206):
            raise _Transient(f"Unexpected answer from the Hub (HTTP {status}).")
        self.control.watch(response)
        self.control.check()
        assert self.hash is not None
        remaining = self.plan.size - self.done
        writer = PartialWriter(self.partial, self.hash, self.options.chunk_size)
        try:
            # This loop only receives: the writer thread writes and hashes. Progress counts
            # bytes received; the disk is at most a few batches behind, and close() waits.
            for data in response.iter_raw():
                if len(data) > remaining:
                    data = data[:remaining]  # more than the file holds: never past its size
                writer.write(data)
                remaining -= len(data)
                self.on_bytes(self.plan.size - remaining)
                if remaining == 0 or self.control.stopped:
                    break
        finally:
            writer.close()  # everything received is on disk and hashed (or OSError)
            self.done = self.hash.count
        self.control.check()
        if remaining:
            raise _Transient(f"The connection dropped while downloading {self.plan.filename}.")
