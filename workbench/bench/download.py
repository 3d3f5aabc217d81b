"""Download throughput of the DownloadManager next to huggingface_hub's hf_hub_download,
and how much a resumed download fetches twice.

Both download the same file of pseudo-random bytes (not compressible) from the loopback
Hub (hub_server.py, in this process) into fresh cache folders, alternating which goes
first, 3 runs each (1 when quick). Times run from the call to a file in place: the
manager hashes every byte (sha256) as it writes, hf_hub_download does not hash.

ratio_vs_hf_hub_download = median manager MB/s ÷ median hf_hub_download MB/s (target
≥ 0.95); the median, because hf_hub_download's runs spread widely on a small machine
(its own 10 MB chunks), and one lucky run should not set the reference. The ratio of the
best runs is reported too.
refetch_fraction: the server drops the connection half way; the app is closed while the
manager waits to retry, and a new manager restores the download and finishes it:
(bytes served − file size) ÷ file size (target ≤ 0.01).
"""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench.bench.hub_server import HubServer, patch_hub_env
from workbench.models.downloads import DownloadManager, DownloadRequest, Progress, State

REPO = "bench/model-GGUF"
NAME = "model-Q4_K_M.gguf"
MB = 2**20


class _Patch:
    """The part of pytest's monkeypatch that patch_hub_env uses, undone on exit."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, ...]] = []

    def setenv(self, name: str, value: str) -> None:
        self._undo.append(("env", name, os.environ.get(name)))
        os.environ[name] = value

    def delenv(self, name: str, raising: bool = True) -> None:
        self._undo.append(("env", name, os.environ.get(name)))
        os.environ.pop(name, None)

    def setattr(self, target: Any, name: str, value: Any) -> None:
        self._undo.append(("attr", target, name, getattr(target, name)))
        setattr(target, name, value)

    def undo(self) -> None:
        for kind, *args in reversed(self._undo):
            if kind == "env":
                name, old = args
                if old is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = old
            else:
                target, name, old = args
                setattr(target, name, old)
        self._undo.clear()


def _no_token() -> None:
    return None  # the loopback Hub needs none; the user's keyring is not to be touched


def _payload(size: int) -> bytes:
    return np.random.default_rng(20240601).bytes(size)


def _hf_hub_download(cache: Path) -> float:
    from huggingface_hub import hf_hub_download

    started = time.perf_counter()
    hf_hub_download(REPO, NAME, cache_dir=cache)
    return time.perf_counter() - started


def _manager_download(work: Path) -> float:
    manager = DownloadManager(work / "state", cache_dir=work / "cache", token=_no_token)
    started = time.perf_counter()
    done = manager.wait(manager.start(DownloadRequest(REPO, (NAME,))), 600)
    elapsed = time.perf_counter() - started
    manager.close()
    if done.state is not State.DONE:
        raise RuntimeError(f"manager download failed: {done.message}")
    return elapsed


def _refetch(hub: HubServer, work: Path, size: int) -> float:
    """Drop at 50%, close the app while it waits to retry, restore, finish."""
    hub.reset_counters()
    hub.drop_after(REPO, NAME, size // 2)
    half = threading.Event()

    def on_progress(progress: Progress) -> None:
        if progress.bytes_done >= size // 2:
            half.set()

    # A long backoff keeps the first manager waiting after the drop, as a real one would
    # while the network is down, until the app closes.
    first = DownloadManager(work / "state", cache_dir=work / "cache", on_progress=on_progress,
                            backoff_s=60.0, token=_no_token)
    download = first.start(DownloadRequest(REPO, (NAME,)))
    if not half.wait(600):
        raise RuntimeError("the interrupted download never reached half way")
    first.close()
    hub.drop_after(REPO, NAME, None)
    second = DownloadManager(work / "state", cache_dir=work / "cache", token=_no_token)
    restored = {p.id: p for p in second.restore()}
    if restored.get(download) is None or restored[download].bytes_done != size // 2:
        raise RuntimeError(f"restore did not bring the partial download back: {restored}")
    second.resume(download)
    done = second.wait(download, 600)
    second.close()
    if done.state is not State.DONE:
        raise RuntimeError(f"resumed download failed: {done.message}")
    return (hub.bytes_served(REPO, NAME) - size) / size


def run(model: str | None = None, quick: bool = False) -> dict:
    del model  # the benchmark serves its own bytes
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    size = (64 if quick else 200) * MB
    reps = 1 if quick else 3
    patch = _Patch()
    disable_progress_bars()  # hf_hub_download at its fastest: no terminal output
    try:
        with HubServer() as hub, tempfile.TemporaryDirectory(prefix="wb-bench-") as tmp:
            root = Path(tmp)
            patch_hub_env(patch, hub, root)
            hub.add_file(REPO, NAME, _payload(size))
            assert hub.file(REPO, NAME).sha256  # hashed now, not while serving the first run
            manager_s: list[float] = []
            hf_s: list[float] = []
            for rep in range(reps):
                order = ("manager", "hf") if rep % 2 == 0 else ("hf", "manager")
                for who in order:
                    work = root / f"{who}-{rep}"
                    gc.collect()  # the other's garbage is not collected on this one's time
                    if who == "manager":
                        manager_s.append(_manager_download(work))
                    else:
                        hf_s.append(_hf_hub_download(work / "cache"))
                    shutil.rmtree(work)  # each run writes into a fresh cache
            refetch = _refetch(hub, root / "refetch", size)
    finally:
        patch.undo()
        enable_progress_bars()
    manager_mb_s = size / MB / statistics.median(manager_s)
    hf_mb_s = size / MB / statistics.median(hf_s)
    return {
        "benchmark": "download",
        "size_mb": size // MB,
        "manager_mb_s": round(manager_mb_s, 1),
        "hf_hub_download_mb_s": round(hf_mb_s, 1),
        "ratio_vs_hf_hub_download": round(manager_mb_s / hf_mb_s, 3),
        "ratio_best_vs_hf_hub_download": round(min(hf_s) / min(manager_s), 3),
        "refetch_fraction": round(refetch, 4),
        "runs": reps,
        "method": "loopback Hub in-process; median of runs, alternating order; the manager "
                  "verifies sha256, hf_hub_download does not",
    }
