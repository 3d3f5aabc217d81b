"""A loopback stand-in for the Hugging Face Hub, for tests and benchmarks: the real Hub is
unreachable from them.

Serves files registered in memory or from disk the way huggingface_hub expects:

- GET/HEAD /{repo_id}/resolve/{revision}/{filename}, with Range (206, Content-Range,
  Accept-Ranges), ETag, X-Repo-Commit, Content-Length, and for LFS files X-Linked-Etag
  and X-Linked-Size (what get_hf_file_metadata reads). With `redirect_lfs`, LFS files
  answer 302 to a "CDN" URL on a different origin (localhost instead of 127.0.0.1), as
  the real Hub does, so a client must not send its token there.
- GET /api/models/{repo_id}[/revision/{rev}] (siblings with size, blobId and lfs, cardData,
  gated) and /api/models/{repo_id}/tree/{rev}[/{path}] (?recursive=true).
- GET /api/models?search=&filter=&author=&sort=&direction=&limit= (HfApi.list_models).

Fault switches per file (fail with a status, drop the connection after N body bytes, stall
mid-body, serve a flipped byte), repositories that need a token, a request log and per-file
byte counters.
Use `patch_hub_env` to point huggingface_hub at a server.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from workbench.bench.hub_content import (
    LFS_MIN_SIZE,
    LFS_SUFFIXES,
    HubFile,
    HubRepo,
    list_models,
    model_info,
    tree,
)

__all__ = ["HubFile", "HubRepo", "HubServer", "LoggedRequest", "patch_hub_env"]

_SEND_CHUNK = 1 << 20
_DEFAULT_ERROR_CODES = {404: "EntryNotFound"}


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    status: int
    body_bytes: int


class HubServer:
    """Start with `with HubServer() as hub:`; `hub.endpoint` is the base URL."""

    def __init__(self, *, redirect_lfs: bool = False) -> None:
        self.redirect_lfs = redirect_lfs
        self.repos: dict[str, HubRepo] = {}
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()  # ends injected stalls so that stop() is prompt

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> HubServer:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._stopping.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True,
                         name="hub-server").start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_endpoint(self) -> str:
        # Same server, different origin: what matters to clients is that it is not the Hub.
        return f"http://localhost:{self.port}"

    # -- content -----------------------------------------------------------------------

    def add_repo(self, repo_id: str, *, token: str | None = None, gated: bool = False,
                 downloads: int | None = None, likes: int | None = None,
                 trending_score: int | None = None, tags: list[str] | None = None,
                 last_modified: str | None = None,
                 card_data: dict[str, Any] | None = None) -> HubRepo:
        """Register (or update) a repository; listing attributes left None keep their value."""
        if repo_id not in self.repos:
            commit = hashlib.sha1(repo_id.encode()).hexdigest()
            self.repos[repo_id] = HubRepo(repo_id, commit)
        repo = self.repos[repo_id]
        repo.token, repo.gated = token, gated
        for name, value in (("downloads", downloads), ("likes", likes), ("tags", tags),
                            ("trending_score", trending_score), ("card_data", card_data),
                            ("last_modified", last_modified)):
            if value is not None:
                setattr(repo, name, value)
        return repo

    def add_file(self, repo_id: str, filename: str, content: bytes | str | Path, *,
                 lfs: bool | None = None) -> HubFile:
        """Serve `content` (bytes, or a path on disk) as `filename` in `repo_id`."""
        repo = self.repos.get(repo_id) or self.add_repo(repo_id)
        if isinstance(content, bytes):
            hub_file = HubFile(filename, data=content)
        else:
            hub_file = HubFile(filename, source=Path(content))
        hub_file.lfs = (filename.lower().endswith(LFS_SUFFIXES) or hub_file.size >= LFS_MIN_SIZE
                        if lfs is None else lfs)
        repo.files[filename] = hub_file
        return hub_file

    def file(self, repo_id: str, filename: str) -> HubFile:
        return self.repos[repo_id].files[filename]

    def fail(self, repo_id: str, filename: str, status: int | None, *,
             error_code: str | None = None, methods: tuple[str, ...] = ("GET", "HEAD"),
             retry_after: float | None = None) -> None:
        """Answer requests for the file with `status` (None: serve normally again), with a
        Retry-After header if given."""
        f = self.file(repo_id, filename)
        f.fail_status, f.fail_error_code, f.fail_methods = status, error_code, methods
        f.fail_retry_after = retry_after

    def drop_after(self, repo_id: str, filename: str, n_bytes: int | None) -> None:
        """Close the connection after sending `n_bytes` of each response body."""
        self.file(repo_id, filename).drop_after = n_bytes

    def stall(self, repo_id: str, filename: str, after_bytes: int, seconds: float, *,
              close: bool = False, times: int | None = 1) -> None:
        """Stop sending for `seconds` after `after_bytes` of a response body, then go on (or
        close the connection). Applies to the next `times` responses (None: all of them)."""
        self.file(repo_id, filename).stall = (after_bytes, seconds, close, times)

    def corrupt(self, repo_id: str, filename: str, offset: int | None) -> None:
        """Serve the byte at `offset` flipped (None: serve the true bytes again)."""
        self.file(repo_id, filename).corrupt_offset = offset

    def bytes_served(self, repo_id: str, filename: str | None = None) -> int:
        files = self.repos[repo_id].files
        return sum(f.bytes_served for name, f in files.items() if filename in (None, name))

    def requests_for(self, filename: str, method: str | None = None) -> list[LoggedRequest]:
        return [r for r in self.log if unquote(r.path.split("?")[0]).endswith("/" + filename)
                and method in (None, r.method)]

    def reset_counters(self) -> None:
        with self._lock:
            self.log.clear()
            for repo in self.repos.values():
                for f in repo.files.values():
                    f.bytes_served = f.requests = 0

    # -- request handling (called on server threads) -------------------------------------

    def _split_repo(self, segments: list[str]) -> tuple[HubRepo | None, list[str]]:
        """The repository named by the first one or two segments, and what follows."""
        for n in (2, 1):
            repo = self.repos.get("/".join(segments[:n]))
            if repo is not None and len(segments) >= n:
                return repo, segments[n:]
        return None, segments

    def _record(self, req: _Handler, status: int, body_bytes: int) -> None:
        with self._lock:
            self.log.append(LoggedRequest(req.command, req.path,
                                          {k.lower(): v for k, v in req.headers.items()},
                                          status, body_bytes))


class _Unsatisfiable(Exception):
    pass


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """(start, stop) of a single byte range, None without one; _Unsatisfiable if outside."""
    if not value:
        return None
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", value.split(",")[0].strip())
    if m is None or (not m[1] and not m[2]):
        return None  # malformed: ignored, as HTTP allows
    if not m[1]:
        start, stop = max(0, size - int(m[2])), size
    else:
        start = int(m[1])
        stop = min(size, int(m[2]) + 1) if m[2] else size
    if start >= size or start >= stop:
        raise _Unsatisfiable
    return start, stop


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real Hub
    server_hub: HubServer
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    # -- routing -------------------------------------------------------------------------

    def _dispatch(self) -> None:
        hub = self.server_hub
        url = urlsplit(self.path)
        segments = [unquote(s) for s in url.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if segments == ["api", "models"]:
            return self._list_models(parse_qs(url.query))
        if segments[:2] == ["api", "models"]:
            repo, rest = hub._split_repo(segments[2:])
            return self._api(repo, rest, query)
        if segments[:1] == ["cdn"]:
            repo, rest = hub._split_repo(segments[1:])
            if repo is not None and len(rest) >= 2 and rest[0] == repo.commit:
                return self._serve(repo, "/".join(rest[1:]), cdn=True)
            return self._error(404, "EntryNotFound", "Not found")
        repo, rest = hub._split_repo(segments)
        if repo is None or len(rest) < 3 or rest[0] != "resolve":
            return self._error(404, "RepoNotFound", "Repository not found")
        if not self._authorized(repo) or not self._revision_ok(repo, rest[1]):
            return None
        return self._serve(repo, "/".join(rest[2:]))

    def _authorized(self, repo: HubRepo) -> bool:
        if repo.token is None:
            return True
        sent = self.headers.get("Authorization")
        if sent == f"Bearer {repo.token}":
            return True
        if sent is None:
            self._error(401, "GatedRepo" if repo.gated else "RepoNotFound",
                        "Access to this model is restricted: you must be authenticated.")
        elif repo.gated:
            self._error(403, "GatedRepo", "Access to this gated model is not granted.")
        else:
            self._error(401, None, "Invalid credentials in Authorization header")
        return False

    def _list_models(self, query: dict[str, list[str]]) -> None:
        sent = self.headers.get("Authorization")
        repos = list(self.server_hub.repos.values())
        opened = {r.repo_id for r in repos if r.token and sent == f"Bearer {r.token}"}
        payload = list_models(repos, query, opened)
        self._send(200, {"Content-Type": "application/json"}, json.dumps(payload).encode())

    def _revision_ok(self, repo: HubRepo, revision: str) -> bool:
        if revision in ("main", repo.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return False

    # -- responses -------------------------------------------------------------------------

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        sent = 0
        if body and self.command != "HEAD":
            self.wfile.write(body)
            sent = len(body)
        self.server_hub._record(self, status, sent)

    def _error(self, status: int, code: str | None, message: str,
               retry_after: float | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        self._send(status, headers, json.dumps({"error": message}).encode())

    def _json(self, repo: HubRepo, payload: Any) -> None:
        self._send(200, {"Content-Type": "application/json", "X-Repo-Commit": repo.commit},
                   json.dumps(payload).encode())

    def _api(self, repo: HubRepo | None, rest: list[str], query: dict[str, str]) -> None:
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if not self._authorized(repo):
            return None
        if not rest or rest[0] == "revision":
            if rest and not self._revision_ok(repo, "/".join(rest[1:])):
                return None
            return self._json(repo, model_info(repo))
        if rest[0] == "tree" and len(rest) >= 2:
            if not self._revision_ok(repo, rest[1]):
                return None
            entries = tree(repo, "/".join(rest[2:]), query.get("recursive") == "true")
            if entries is None:
                return self._error(404, "EntryNotFound", "Path not found")
            return self._json(repo, entries)
        return self._error(404, None, "Not found")

    def _serve(self, repo: HubRepo, filename: str, *, cdn: bool = False) -> None:
        hub_file = repo.files.get(filename)
        if hub_file is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist")
        with self.server_hub._lock:
            hub_file.requests += 1
        if hub_file.fail_status is not None and self.command in hub_file.fail_methods:
            code = hub_file.fail_error_code or _DEFAULT_ERROR_CODES.get(hub_file.fail_status)
            return self._error(hub_file.fail_status, code, "Injected failure",
                               hub_file.fail_retry_after)
        size = hub_file.size
        headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if hub_file.lfs:
            headers.update({"ETag": f'"{hub_file.sha256}"', "X-Linked-Etag": f'"{hub_file.sha256}"',
                            "X-Linked-Size": str(size)})
            if self.server_hub.redirect_lfs and not cdn:
                location = (f"{self.server_hub.cdn_endpoint}/cdn/{repo.repo_id}/{repo.commit}/"
                            f"{quote(filename)}")
                return self._send(302, {**headers, "Location": location})
        else:
            headers["ETag"] = f'"{hub_file.blob_id}"'
        try:
            span = _parse_range(self.headers.get("Range"), size)
        except _Unsatisfiable:
            return self._send(416, {**headers, "Content-Range": f"bytes */{size}"})
        status, start, stop = 200, 0, size
        if span is not None:
            status, (start, stop) = 206, span
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        headers["Content-Length"] = str(stop - start)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        sent = 0 if self.command == "HEAD" else self._send_body(hub_file, start, stop)
        self.server_hub._record(self, status, sent)
        return None

    def _take_stall(self, hub_file: HubFile) -> tuple[int, float, bool] | None:
        """The stall this response is to have, if any (counting it against `times`)."""
        with self.server_hub._lock:
            if hub_file.stall is None:
                return None
            after, seconds, close, times = hub_file.stall
            if times is not None:
                hub_file.stall = (after, seconds, close, times - 1) if times > 1 else None
            return after, seconds, close

    def _send_body(self, hub_file: HubFile, start: int, stop: int) -> int:
        limit = stop if hub_file.drop_after is None else min(stop, start + hub_file.drop_after)
        stall = self._take_stall(hub_file)
        stall_at = None if stall is None else start + stall[0]
        sent = 0
        try:
            pos = start
            while pos < limit:
                end = min(pos + _SEND_CHUNK, limit)
                if stall_at is not None and pos < stall_at < end:
                    end = stall_at  # send exactly up to the stall point
                if stall is not None and pos == stall_at:
                    self.wfile.flush()
                    self.server_hub._stopping.wait(stall[1])  # the injected fault: silence
                    stall_at = None
                    if stall[2]:
                        limit = pos
                        break
                chunk = hub_file.read(pos, end)
                self.wfile.write(chunk)
                sent += len(chunk)
                pos = end
                with self.server_hub._lock:
                    hub_file.bytes_served += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client hung up early: allowed
            return sent
        if limit < stop:
            self.wfile.flush()
            self.close_connection = True  # the injected fault: body cut short
        return sent


def patch_hub_env(monkeypatch: Any, server: HubServer, tmp_path: Path) -> None:
    """Point huggingface_hub at `server`, online, with no token of the user's.

    `monkeypatch` is pytest's fixture, or anything with its setenv/delenv/setattr (duck-typed
    so that this module does not need pytest, which the app does not ship).

    huggingface_hub reads its environment at import, so its constants are patched too.
    """
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
