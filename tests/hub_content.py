"""What the loopback Hub (hub_server.py) serves: repositories and their files, and the
JSON the Hub API answers about them (model info siblings, tree entries)."""

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
    drop_after: int | None = None  # close the connection after this many body bytes
    bytes_served: int = 0
    requests: int = 0
    _sha256: str | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.source.stat().st_size  # type: ignore[union-attr]

    def read(self, start: int, stop: int) -> bytes:
        if self.data is not None:
            return self.data[start:stop]
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
                    digest.update(self.read(start, start + 8 * 2**20))
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
        return _git_blob_sha1(self.read(0, self.size))

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


def model_info(repo: HubRepo) -> dict[str, Any]:
    author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
    files = sorted(repo.files.values(), key=lambda f: f.filename)
    return {
        "_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id, "author": author,
        "sha": repo.commit, "lastModified": "2024-01-01T00:00:00.000Z",
        "createdAt": "2024-01-01T00:00:00.000Z",
        "private": repo.token is not None and not repo.gated,
        "gated": "auto" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0,
        "tags": ["gguf"] if any(f.filename.endswith(".gguf") for f in files) else [],
        "siblings": [f.sibling() for f in files],
        "usedStorage": sum(f.size for f in files),
    }


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
