"""What the loopback Hub (hub_server.py) serves: repositories and their files, and the
JSON the Hub API answers about them (model info siblings, tree entries, model listings)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack")
LFS_MIN_SIZE = 10 * 2**20
_DISK_SHA256: dict[tuple[str, int, int], str] = {}


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubFile:
    filename: str
    data: bytes | None = None  # in memory, or:
    source: Path | None = None  # served from disk, read per request
    lfs: bool = False
    fail_status: int | None = None
    fail_methods: tuple[str, ...] = ("GET", "HEAD")
    fail_error_code: str | None = None
    fail_retry_after: float | None = None  # seconds, sent as Retry-After with the failure
    drop_after: int | None = None  # close the connection after this many body bytes
    # (after_bytes, seconds, close afterwards, responses left to stall; None: every response)
    stall: tuple[int, float, bool, int | None] | None = None
    corrupt_offset: int | None = None  # this byte is served flipped (the sha256 stays true)
    bytes_served: int = 0
    requests: int = 0
    _sha256: str | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.source.stat().st_size  # type: ignore[union-attr]

    def read(self, start: int, stop: int) -> bytes | memoryview:
        """Bytes as served, with the injected corruption if any."""
        chunk = self.read_true(start, stop)
        at = self.corrupt_offset
        if at is not None and start <= at < start + len(chunk):
            mutable = bytearray(chunk)
            mutable[at - start] ^= 0xFF
            chunk = bytes(mutable)
        return chunk

    def read_true(self, start: int, stop: int) -> bytes | memoryview:
        if self.data is not None:
            # A view, not a copy: the server of a benchmark must not be its bottleneck.
            return memoryview(self.data)[start:stop]
        with self.source.open("rb") as fh:  # type: ignore[union-attr]
            fh.seek(start)
            return fh.read(stop - start)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            key = None
            if self.source is not None:  # big files on disk are hashed once per test run
                st = self.source.stat()
                key = (str(self.source), st.st_size, st.st_mtime_ns)
                self._sha256 = _DISK_SHA256.get(key)
            if self._sha256 is None:
                digest = hashlib.sha256()
                for start in range(0, self.size, 8 * 2**20):
                    digest.update(self.read_true(start, start + 8 * 2**20))
                self._sha256 = digest.hexdigest()
            if key is not None:
                _DISK_SHA256[key] = self._sha256
        return self._sha256

    @property
    def pointer(self) -> bytes:
        """The git-lfs pointer file the repository holds in place of an LFS file."""
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                f"size {self.size}\n").encode()

    @property
    def blob_id(self) -> str:
        if self.lfs:
            return _git_blob_sha1(self.pointer)
        return _git_blob_sha1(self.read_true(0, self.size))

    def sibling(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": self.filename, "size": self.size,
                                 "blobId": self.blob_id}
        if self.lfs:
            entry["lfs"] = {"sha256": self.sha256, "size": self.size,
                            "pointerSize": len(self.pointer)}
        return entry

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": self.blob_id, "size": self.size,
                                 "path": self.filename}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size,
                            "pointerSize": len(self.pointer)}
        return entry


@dataclass
class HubRepo:
    repo_id: str
    commit: str
    token: str | None = None  # if set, requests must carry "Authorization: Bearer <token>"
    gated: bool = False
    files: dict[str, HubFile] = field(default_factory=dict)
    downloads: int = 0
    likes: int = 0
    trending_score: int = 0
    tags: list[str] | None = None  # None: derived from the files ("gguf" if any)
    last_modified: str = "2024-01-01T00:00:00.000Z"
    created_at: str = "2024-01-01T00:00:00.000Z"
    card_data: dict[str, Any] | None = None  # the model card's YAML header, e.g. {"license": ...}

    @property
    def private(self) -> bool:
        return self.token is not None and not self.gated

    def all_tags(self) -> list[str]:
        if self.tags is not None:
            return list(self.tags)
        return ["gguf"] if any(n.endswith(".gguf") for n in self.files) else []


def _summary(repo: HubRepo) -> dict[str, Any]:
    """The fields a listing entry and model info share."""
    return {
        "_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id,
        "lastModified": repo.last_modified, "createdAt": repo.created_at,
        "private": repo.private, "gated": "auto" if repo.gated else False,
        "downloads": repo.downloads, "likes": repo.likes, "trendingScore": repo.trending_score,
        "tags": repo.all_tags(),
    }


def model_info(repo: HubRepo) -> dict[str, Any]:
    author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
    files = sorted(repo.files.values(), key=lambda f: f.filename)
    info = {
        **_summary(repo), "author": author, "sha": repo.commit, "disabled": False,
        "siblings": [f.sibling() for f in files],
        "usedStorage": sum(f.size for f in files),
    }
    if repo.card_data is not None:
        info["cardData"] = repo.card_data
    return info


_SORT_KEYS = {"downloads": "downloads", "likes": "likes", "lastModified": "lastModified",
              "trendingScore": "trendingScore", "createdAt": "createdAt"}


def list_models(repos: list[HubRepo], query: dict[str, list[str]],
                authorized: set[str]) -> list[dict[str, Any]]:
    """GET /api/models: what HfApi.list_models sends is search, filter (repeated: all must
    match), author, sort, direction (-1, the Hub's default when sorting, is descending),
    limit, and full/cardData for more fields. Private repositories are listed only to a
    client whose token opens them (`authorized`)."""
    search = query.get("search", [""])[-1].lower()
    wanted = [t for value in query.get("filter", []) for t in value.split(",") if t]
    author = query.get("author", [None])[-1]
    full = query.get("full", ["False"])[-1].lower() == "true"
    card = full or query.get("cardData", ["False"])[-1].lower() == "true"
    found = []
    for repo in repos:
        if repo.private and repo.repo_id not in authorized:
            continue
        if search not in repo.repo_id.lower() or not all(t in repo.all_tags() for t in wanted):
            continue
        if author is not None and repo.repo_id.split("/")[0] != author:
            continue
        entry = _summary(repo)
        if card and repo.card_data is not None:
            entry["cardData"] = repo.card_data
        if full:
            entry["siblings"] = [{"rfilename": n} for n in sorted(repo.files)]
        found.append(entry)
    sort = _SORT_KEYS.get(query.get("sort", [""])[-1])
    if sort is not None:
        descending = query.get("direction", ["-1"])[-1] != "1"
        found.sort(key=lambda e: e[sort], reverse=descending)
    limit = query.get("limit", [None])[-1]
    return found[: int(limit)] if limit else found


def tree(repo: HubRepo, folder: str, recursive: bool) -> list[dict[str, Any]] | None:
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    entries: list[dict[str, Any]] = []
    folders: set[str] = set()
    for name in sorted(repo.files):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix):].split("/")
        # Every folder between `folder` and the file is listed (only the first if not recursive).
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            entries.append(repo.files[name].tree_entry())
    if prefix and not entries and not folders:
        return None
    dirs = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0,
             "path": d} for d in sorted(folders)]
    return dirs + entries
