"""Where downloaded files go, and the download records kept across restarts.

Two targets:
- the Hugging Face cache, laid out exactly as huggingface_hub lays it out, so that other
  tools (and try_to_load_from_cache / scan_cache_dir) find what Workbench downloaded:
  `models--org--name/blobs/<etag>` holds the bytes, `snapshots/<commit>/<filename>` is a
  relative symlink to the blob (a copy where symlinks fail), `refs/<revision>` the commit.
  The etag of an LFS file is its sha256; of a small git file, its git blob sha1.
- a folder the user picked: `<folder>/<filename>`.

Bytes being downloaded live at `<final>.incomplete` (for the cache, next to the blob; the
name differs from huggingface_hub's own `<etag>.<random>.incomplete`, so the two never
write the same file). Nothing reaches the final path before it is verified.

Records are one JSON file per download in the state folder. They hold what is needed to
resume (repository, files, sizes, expected hashes, commit) and never a token.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from huggingface_hub.file_download import repo_folder_name

_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
RECORD_VERSION = 1


@dataclass(frozen=True)
class FilePlan:
    """One file to fetch, as the Hub described it."""

    filename: str
    size: int
    etag: str  # normalized (no quotes): sha256 for LFS files, git blob sha1 otherwise

    @property
    def digest_kind(self) -> str | None:
        """"sha256", "git-sha1" or None (a server that gave no usable hash: size only)."""
        if _SHA256.fullmatch(self.etag):
            return "sha256"
        if _GIT_SHA1.fullmatch(self.etag):
            return "git-sha1"
        return None

    def new_hasher(self) -> Any:
        if self.digest_kind == "git-sha1":
            # git hashes "blob <size>\0" then the content: the Hub's etag for small files.
            return hashlib.sha1(b"blob %d\0" % self.size)
        return hashlib.sha256()

    def matches(self, hexdigest: str) -> bool:
        return self.digest_kind is None or hexdigest == self.etag


def check_filename(filename: str) -> None:
    """Refuse names that would land outside the target (absolute, "..", backslashes)."""
    path = PurePosixPath(filename)
    if (not filename or path.is_absolute() or "\\" in filename
            or any(part in ("", ".", "..") for part in filename.split("/"))):
        raise ValueError(f"Not a file name inside a repository: {filename!r}")


class Target:
    """The paths of one download's files, in the HF cache or in a folder."""

    def __init__(self, repo_id: str, folder: str | None, cache_dir: Path) -> None:
        self.repo_id = repo_id
        self.folder = Path(folder).expanduser() if folder is not None else None
        self.cache_dir = cache_dir
        self.storage = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")

    @property
    def root(self) -> Path:
        """The folder whose disk the bytes land on (for the free-space check)."""
        return self.folder if self.folder is not None else self.cache_dir

    def blob(self, plan: FilePlan) -> Path:
        return self.storage / "blobs" / plan.etag

    def partial(self, plan: FilePlan) -> Path:
        if self.folder is not None:
            return self.folder / (plan.filename + ".incomplete")
        return self.storage / "blobs" / (plan.etag + ".incomplete")

    def final(self, plan: FilePlan, commit: str) -> Path:
        if self.folder is not None:
            return self.folder.joinpath(*plan.filename.split("/"))
        return self.storage / "snapshots" / commit / Path(*plan.filename.split("/"))

    def partial_size(self, plan: FilePlan) -> int:
        try:
            return self.partial(plan).stat().st_size
        except OSError:
            return 0

    def have_blob(self, plan: FilePlan) -> bool:
        """The cache already holds these bytes (another tool, or an earlier download):
        huggingface_hub trusts a blob named by its hash, and so do we."""
        return self.folder is None and plan.digest_kind is not None and self.blob(plan).is_file()

    def remove_partial(self, plan: FilePlan) -> None:
        self.partial(plan).unlink(missing_ok=True)

    def finish(self, plan: FilePlan, commit: str, revision: str) -> Path:
        """Move the verified bytes into place; returns the path users open."""
        final = self.final(plan, commit)
        final.parent.mkdir(parents=True, exist_ok=True)
        if self.folder is not None:
            os.replace(self.partial(plan), final)
            return final
        blob = self.blob(plan)
        if not self.have_blob(plan):
            os.replace(self.partial(plan), blob)
        else:
            self.remove_partial(plan)
        _link(blob, final)
        if revision != commit:
            _write_atomic(self.storage / "refs" / revision, commit)
        return final


def _link(blob: Path, pointer: Path) -> None:
    """A relative symlink, as huggingface_hub makes (it survives moving the cache); a copy
    where the file system or the OS refuses symlinks."""
    if os.path.lexists(pointer):
        if pointer.is_symlink() and pointer.resolve() == blob.resolve():
            return
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:
        shutil.copyfile(blob, pointer)


def _write_atomic(path: Path, text: str) -> None:
    """Readers (other processes, a crash) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class HashState:
    """The hash of a partial file's first `count` bytes, carried from one run to the next
    within a session so a pause/resume never re-reads the file."""

    def __init__(self, plan: FilePlan) -> None:
        self.hasher = plan.new_hasher()
        self.count = 0

    def update(self, data: bytes | memoryview) -> None:
        self.hasher.update(data)
        self.count += len(data)


class PartialWriter:
    """Appends received blocks to a partial file and hashes them on a helper thread.

    Writing and sha256 both run without the GIL, so on their own thread they overlap the
    network reads instead of adding to them: the receiving loop only hands blocks over,
    `batch_bytes` at a time. Blocks are written, then hashed, in order, so after close()
    the file holds exactly `hashed.count` bytes (unless a write failed, when close() raises
    and the next run re-hashes the file instead of trusting the count).
    """

    def __init__(self, path: Path, hashed: HashState, batch_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                           | getattr(os, "O_BINARY", 0), 0o666)
        self._hashed, self._batch_bytes = hashed, batch_bytes
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # Bounded: a disk slower than the network holds the receiver back, not memory.
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=4)
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._drain, daemon=True, name="partial-writer")
        self._thread.start()

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= self._batch_bytes:
            self._queue.put(self._pending)
            self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        if self._pending:
            self._queue.put(self._pending)
            self._pending, self._pending_bytes = [], 0
        self._queue.put(None)
        self._thread.join()
        os.close(self._fd)
        if self.error is not None:
            raise self.error

    def _drain(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self.error is not None:
                continue  # keep taking batches so the receiver never blocks on a full queue
            try:
                for block in batch:
                    view = memoryview(block)
                    while view:
                        view = view[os.write(self._fd, view):]
                    self._hashed.update(block)
            except OSError as exc:
                self.error = exc


# -- records ------------------------------------------------------------------------------


def record(*, download_id: str, request: dict[str, Any], state: str, message: str,
           cache_dir: Path, commit: str | None, plans: list[FilePlan] | None) -> dict[str, Any]:
    return {
        "version": RECORD_VERSION, "id": download_id, "request": request, "state": state,
        "message": message, "cache_dir": str(cache_dir), "commit": commit,
        "files": None if plans is None else [asdict(p) for p in plans],
    }


def save_record(state_dir: Path, data: dict[str, Any]) -> None:
    _write_atomic(state_dir / f"{data['id']}.json", json.dumps(data, indent=1))


def remove_record(state_dir: Path, download_id: str) -> None:
    (state_dir / f"{download_id}.json").unlink(missing_ok=True)


def load_records(state_dir: Path) -> list[dict[str, Any]]:
    """Every readable record; a damaged one is skipped rather than failing the app's start."""
    records = []
    for path in sorted(state_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("version") == RECORD_VERSION and "id" in data:
            records.append(data)
    return records


def plans_from_record(data: dict[str, Any]) -> list[FilePlan] | None:
    files = data.get("files")
    if files is None:
        return None
    return [FilePlan(f["filename"], int(f["size"]), f["etag"]) for f in files]
