"""The public types of downloads, and one download's bookkeeping (see downloads.py)."""

from __future__ import annotations

import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from workbench.models.download_fetch import Control
from workbench.models.download_store import FilePlan, HashState, Target

_SPEED_WINDOW_S = 3.0


@dataclass(frozen=True)
class DownloadRequest:
    repo_id: str
    filenames: tuple[str, ...]  # one file, or all parts of a split GGUF (one item)
    revision: str = "main"
    folder: str | None = None  # None: the standard Hugging Face cache; else a folder


class State(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (State.QUEUED, State.RUNNING, State.VERIFYING)
SETTLED = (State.PAUSED, State.DONE, State.FAILED, State.CANCELLED)


@dataclass(frozen=True)
class Progress:
    id: str
    request: DownloadRequest
    state: State
    bytes_done: int
    bytes_total: int
    speed_bps: float
    eta_s: float | None
    message: str = ""  # for users: what happened and what to do
    paths: tuple[str, ...] = ()  # final file paths, only when DONE (verified)


@dataclass(eq=False)
class Job:
    id: str
    request: DownloadRequest
    target: Target
    state: State
    message: str = ""
    commit: str | None = None
    plans: list[FilePlan] | None = None
    file_bytes: dict[str, int] = field(default_factory=dict)
    hashes: dict[str, HashState] = field(default_factory=dict)  # this session's, per file
    # Where the planning request said each file's bytes are (a signed CDN URL expires, so
    # these are used once, by the run that planned, and never saved).
    locations: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    paths: tuple[str, ...] = ()
    control: Control | None = None  # of the current run; a stale worker's is not this
    worker: threading.Thread | None = None
    worker_alive: bool = False
    retried_from_zero: bool = False
    emitted: tuple[State, int] | None = None  # what the last report said
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    @property
    def bytes_done(self) -> int:
        return sum(self.file_bytes.values())

    @property
    def bytes_total(self) -> int:
        return sum(p.size for p in self.plans) if self.plans else 0

    def snapshot(self) -> Progress:
        """What the user sees now (lock held: this also feeds the speed window)."""
        now = time.monotonic()
        done, total = self.bytes_done, self.bytes_total
        speed, eta = 0.0, None
        if self.state is State.RUNNING:
            samples = self.samples
            samples.append((now, done))
            while len(samples) > 2 and now - samples[0][0] > _SPEED_WINDOW_S:
                samples.popleft()
            (t0, b0), (t1, b1) = samples[0], samples[-1]
            if t1 > t0 and b1 > b0:
                speed = (b1 - b0) / (t1 - t0)
                eta = max(0.0, total - done) / speed
        return Progress(self.id, self.request, self.state, done, total, speed, eta, self.message,
                        self.paths if self.state is State.DONE else ())


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"


def free_space(path: Path) -> int:
    while not path.exists() and path.parent != path:
        path = path.parent  # the target folder may not exist yet: its disk does
    return shutil.disk_usage(path).free
