"""Read the header of a GGUF file on the Hugging Face Hub without downloading its weights.

The file's size comes from a HEAD request (get_hf_file_metadata); its bytes from HTTP
Range requests through huggingface_hub's shared session, fetched from the start in
growing chunks (1 MiB, then doubling) and kept, so only the header is ever downloaded:
typically 1-16 MB of a multi-gigabyte file. Every failure becomes a GGUFError.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session

from workbench.models.gguf import GGUFError, GGUFHeader, read_header
from workbench.models.split import read_split_header, split_parts

try:  # huggingface_hub 2.x speaks through httpx2, 1.x through httpx (same API)
    import httpx2
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as httpx2  # type: ignore[no-redef]

DEFAULT_MAX_HEADER_BYTES = 64 * 2**20
FIRST_CHUNK = 1 << 20
# Transient failures (a dropped connection, 502-504, 429) are retried this often,
# briefly: a header read is interactive.
RETRIES = 2
RETRY_WAIT_S = 0.25
TIMEOUT_S = 30.0
_RETRY_STATUS = (429, 502, 503, 504)


# Most specific first: GatedRepoError is a RepositoryNotFoundError.
_ERROR_CODES = ((GatedRepoError, "GatedRepo"), (RevisionNotFoundError, "RevisionNotFound"),
                (RepositoryNotFoundError, "RepoNotFound"), (EntryNotFoundError, "EntryNotFound"))


class RemoteFileMissing(GGUFError):
    """The repository, revision or file does not exist (HTTP 404)."""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _describe_status(status: int, error_code: str | None, name: str, repo_id: str,
                     revision: str) -> GGUFError:
    if status == 404 or error_code in ("RepoNotFound", "EntryNotFound", "RevisionNotFound"):
        if error_code == "RevisionNotFound":
            text = f"{repo_id} has no revision {revision!r} on the Hub."
        elif error_code == "RepoNotFound":
            text = (f"There is no model {repo_id} on the Hub (or it is private: sign in with "
                    "a token that can see it).")
        else:
            text = f"{name} was not found on the Hub (revision {revision})."
        # The Hub answers 401 for a repository it will not show: that is not a missing file.
        return RemoteFileMissing(text) if status == 404 else GGUFError(text)
    if error_code == "GatedRepo":
        return GGUFError(
            f"{repo_id} is a gated model: accept its terms on its Hub page, then sign in "
            "with a token of that account.")
    if status == 401:
        return GGUFError(
            f"{repo_id} needs you to sign in: it is private or gated. Add a Hugging Face "
            "token that has access to it.")
    if status == 403:
        return GGUFError(
            f"Your Hugging Face token has no access to {repo_id}. If it is a gated model, "
            "accept its terms on its Hub page; otherwise use a token with read access.")
    if status == 416:
        return GGUFError(f"The Hub refused to send part of {name} (HTTP 416). Try again.")
    if status == 429:
        return GGUFError("The Hub is limiting requests (HTTP 429). Try again in a few minutes.")
    if status >= 500:
        return GGUFError(
            f"The Hub failed to send {name} (HTTP {status}). It may be busy; try again later.")
    return GGUFError(f"The Hub refused to send {name} (HTTP {status}).")


def _describe_exception(exc: Exception, name: str, repo_id: str, revision: str,
                        endpoint: str) -> GGUFError:
    if isinstance(exc, OfflineModeIsEnabled):
        return GGUFError(
            f"Cannot read {name}: Hugging Face offline mode is on (HF_HUB_OFFLINE). "
            "Turn it off to browse models on the Hub.")
    if isinstance(exc, HfHubHTTPError):
        error_code = exc.response.headers.get("X-Error-Code")
        if error_code is None:  # huggingface_hub may have inferred it from the URL
            error_code = next((code for cls, code in _ERROR_CODES if isinstance(exc, cls)), None)
        return _describe_status(exc.response.status_code, error_code, name, repo_id, revision)
    if isinstance(exc, httpx2.TimeoutException):
        return GGUFError(f"The Hub at {endpoint} did not answer in time while sending {name}. "
                         "Check your connection and try again.")
    if isinstance(exc, httpx2.RemoteProtocolError):
        return GGUFError(f"The connection to the Hub dropped while reading {name}. Try again.")
    if isinstance(exc, (httpx2.TransportError, OSError)):
        return GGUFError(f"Cannot reach the Hub at {endpoint} ({exc}). "
                         "Check your internet connection.")
    return GGUFError(f"Reading {name} from the Hub failed: {exc}")


class HubFileSource:
    """A ByteSource over one file in a Hub repository, downloading only what is read.

    The bytes read are cached as one prefix of the file, grown by fetching chunks that
    double in size; nothing past `max_header_bytes` is ever fetched.
    """

    def __init__(self, repo_id: str, filename: str, *, revision: str = "main",
                 token: str | None = None, endpoint: str | None = None,
                 max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> None:
        self.repo_id, self.filename, self.revision = repo_id, filename, revision
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.name = f"{repo_id}/{filename}"
        self.path = Path(filename)
        self.max_header_bytes = max_header_bytes
        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=self.endpoint)
        try:
            meta = get_hf_file_metadata(url, token=token, endpoint=self.endpoint)
        except Exception as exc:
            raise self._error(exc) from exc
        if meta.size is None:
            raise GGUFError(f"The Hub did not say how large {self.name} is; try again later.")
        self.size: int = meta.size
        self.commit: str | None = meta.commit_hash
        self.url: str = meta.location
        headers = build_hf_headers(token=token)
        headers["Accept-Encoding"] = "identity"  # byte offsets must be those of the file
        if _origin(self.url) != _origin(url):
            # Redirected to a CDN with a signed URL: the token must not leave the Hub.
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        self._headers = headers
        self._cache = bytearray()
        self._chunk = FIRST_CHUNK
        self.requests = 0  # range requests made, for tests and diagnostics

    def _error(self, exc: Exception) -> GGUFError:
        return _describe_exception(exc, self.name, self.repo_id, self.revision, self.endpoint)

    def read(self, offset: int, n: int) -> bytes:
        stop = min(offset + n, self.size)
        if stop > self.max_header_bytes:
            if offset >= self.max_header_bytes:
                limit = self.max_header_bytes / 2**20
                raise GGUFError(
                    f"The header of {self.name} is larger than {limit:g} MiB, more than a "
                    "model header should be; the file is damaged or not a usual GGUF model.")
            stop = self.max_header_bytes
        while len(self._cache) < stop:
            start = len(self._cache)
            end = min(max(stop, start + self._chunk), self.max_header_bytes, self.size)
            self._cache += self._fetch(start, end)
            self._chunk *= 2
        return bytes(self._cache[offset:stop])

    def _fetch(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the file, with brief retries on transient failures."""
        attempt = 0
        while True:
            try:
                return self._fetch_once(start, stop)
            except _Transient as exc:
                if attempt == RETRIES:
                    raise exc.error from exc.__cause__
            time.sleep(RETRY_WAIT_S * 2**attempt)
            attempt += 1

    def _fetch_once(self, start: int, stop: int) -> bytes:
        want = stop - start
        headers = {**self._headers, "Range": f"bytes={start}-{stop - 1}"}
        self.requests += 1
        try:
            with get_session().stream("GET", self.url, headers=headers,
                                      timeout=TIMEOUT_S) as response:
                status = response.status_code
                if status >= 400:
                    error = _describe_status(status, response.headers.get("X-Error-Code"),
                                             self.name, self.repo_id, self.revision)
                    raise _Transient(error) if status in _RETRY_STATUS else error
                # A server that ignores Range answers 200 with the whole file: read only
                # as far as needed, then hang up.
                skip = start if status == 200 else 0
                if status == 206 and not response.headers.get("Content-Range", "").startswith(
                        f"bytes {start}-"):
                    raise GGUFError(f"The Hub sent the wrong part of {self.name}. Try again.")
                data = bytearray()
                for chunk in response.iter_raw():
                    data += chunk
                    if len(data) >= skip + want:
                        break
        except OfflineModeIsEnabled as exc:
            raise self._error(exc) from exc
        except httpx2.TransportError as exc:
            raise _Transient(self._error(exc)) from exc
        if len(data) < skip + want:
            raise _Transient(GGUFError(
                f"The connection to the Hub dropped while reading {self.name}. Try again."))
        return bytes(data[skip:skip + want])


class _Transient(Exception):
    """A failure worth retrying; `error` is what the user sees when retries run out."""

    def __init__(self, error: GGUFError) -> None:
        super().__init__(str(error))
        self.error = error


def read_remote_header(repo_id: str, filename: str, *, revision: str = "main",
                       token: str | None = None, endpoint: str | None = None,
                       max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> GGUFHeader:
    """Header of one GGUF file on the Hub. Raises GGUFError with a message for the user."""
    source = HubFileSource(repo_id, filename, revision=revision, token=token,
                           endpoint=endpoint, max_header_bytes=max_header_bytes)
    return read_header(source)


def read_remote_model_header(repo_id: str, filename: str, *, revision: str = "main",
                             token: str | None = None, endpoint: str | None = None,
                             max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> GGUFHeader:
    """Header of the model `filename` belongs to: all parts if it is a split part."""
    names = split_parts(filename)
    if len(names) == 1:
        return read_remote_header(repo_id, filename, revision=revision, token=token,
                                  endpoint=endpoint, max_header_bytes=max_header_bytes)
    sources: list[HubFileSource] = []
    for index, name in enumerate(names):
        try:
            source = HubFileSource(repo_id, name, revision=revision, token=token,
                                   endpoint=endpoint, max_header_bytes=max_header_bytes)
        except RemoteFileMissing as exc:
            raise GGUFError(
                f"{filename} is one part of a model split into {len(names)} files, but part "
                f"{index + 1}, {name}, is missing from {repo_id} on the Hub.") from exc
        # Later parts are read at the commit of the first, so a push between requests
        # cannot mix two versions of the model.
        if index == 0 and source.commit:
            revision = source.commit
        sources.append(source)
    return read_split_header(list(sources))
