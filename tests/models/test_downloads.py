"""The download manager against the loopback Hub: cache layout, resume, faults, tokens."""

from __future__ import annotations

import hashlib
import itertools
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import scan_cache_dir, try_to_load_from_cache

from tests.conftest import MemoryKeyring
from workbench.bench.hub_server import HubServer
from workbench.models import tokens
from workbench.models.downloads import DownloadManager, DownloadRequest, Progress, State

REPO = "org/model-GGUF"
NAME = "model-Q4_K_M.gguf"
MB = 2**20
TOKEN = "hf_SecretTokenValue123"



def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Recorder:
    """Progress events, and a latch that fires once a download has `at` bytes."""

    def __init__(self, at: int | None = None) -> None:
        self.events: list[tuple[float, Progress]] = []
        self.at = at
        self.reached = threading.Event()

    def __call__(self, progress: Progress) -> None:
        self.events.append((time.monotonic(), progress))
        if self.at is not None and progress.bytes_done >= self.at:
            self.reached.set()

    def states(self) -> list[State]:
        out: list[State] = []
        for _, p in self.events:
            if not out or out[-1] is not p.state:
                out.append(p.state)
        return out


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    return {"state": tmp_path / "state", "cache": tmp_path / "cache"}


def manager(dirs: dict[str, Path], recorder: Recorder | None = None,
            **kw: Any) -> DownloadManager:
    kw.setdefault("backoff_s", 0.01)
    return DownloadManager(dirs["state"], cache_dir=dirs["cache"],
                           on_progress=recorder or Recorder(), **kw)


@pytest.fixture
def model(hub: HubServer) -> bytes:
    data = payload(3 * MB + 12345)
    hub.add_file(REPO, NAME, data)
    return data


def partials(root: Path) -> list[Path]:
    return sorted(root.rglob("*.incomplete")) if root.exists() else []


def records(dirs: dict[str, Path]) -> list[Path]:
    return sorted(dirs["state"].glob("*.json"))


# -- plain downloads ----------------------------------------------------------------------


def test_download_into_the_hf_cache_is_found_by_huggingface_hub(
        hub: HubServer, model: bytes, dirs: dict[str, Path]) -> None:
    recorder = Recorder()
    m = manager(dirs, recorder)
    done = m.wait(m.start(DownloadRequest(REPO, (NAME,))), 30)
    m.close()
    assert done.state is State.DONE, done.message
    assert done.bytes_done == done.bytes_total == len(model)
    found = try_to_load_from_cache(REPO, NAME, cache_dir=dirs["cache"])
    assert isinstance(found, str) and done.paths == (found,)
    digest = hub.file(REPO, NAME).sha256
    assert sha256(found) == digest == hashlib.sha256(model).hexdigest()
    pointer = Path(found)
    assert pointer.is_symlink() and not Path(pointer.readlink()).is_absolute()
    assert pointer.resolve() == (dirs["cache"] / f"models--org--model-GGUF/blobs/{digest}")
    storage = dirs["cache"] / "models--org--model-GGUF"
    assert (storage / "refs" / "main").read_text() == hub.repos[REPO].commit
    assert pointer.parent.name == hub.repos[REPO].commit
    cached = {r.repo_id: r for r in scan_cache_dir(dirs["cache"]).repos}
    assert cached[REPO].size_on_disk == len(model)
    assert not partials(dirs["cache"]) and not records(dirs)
    assert recorder.states() == [State.QUEUED, State.RUNNING, State.VERIFYING, State.DONE]
    assert hub.bytes_served(REPO, NAME) == len(model)  # one pass: verified while writing


def test_progress_is_rate_limited_but_every_state_change_is_reported(
        hub: HubServer, dirs: dict[str, Path]) -> None:
    hub.add_file(REPO, NAME, payload(4 * MB))
    hub.stall(REPO, NAME, 2 * MB, 0.6)  # a slow stretch long enough for several reports
    recorder = Recorder()
    m = manager(dirs, recorder)
    assert m.wait(m.start(DownloadRequest(REPO, (NAME,))), 30).state is State.DONE
    running = [t for t, p in recorder.events if p.state is State.RUNNING]
    assert len(running) >= 2
    gaps = [b - a for a, b in itertools.pairwise(running[1:])]  # [0] follows a change
    # Ticks come at most every 0.1 s; a report forced by a state change (the stall's
    # retry) may land next to a tick, so allow a couple of short gaps, not a flood.
    assert sum(gap < 0.09 for gap in gaps) <= 2, gaps
    last = recorder.events[-1][1]
    assert last.state is State.DONE and last.paths and last.speed_bps == 0


def test_small_git_file_is_verified_by_its_git_blob_hash(
        hub: HubServer, dirs: dict[str, Path]) -> None:
    hub.add_file(REPO, "config.json", b'{"a": 1}\n', lfs=False)
    m = manager(dirs)
    done = m.wait(m.start(DownloadRequest(REPO, ("config.json",))), 30)
    assert done.state is State.DONE, done.message
    assert Path(done.paths[0]).read_bytes() == b'{"a": 1}\n'
    assert Path(done.paths[0]).resolve().name == hub.file(REPO, "config.json").blob_id


def test_download_into_a_folder(hub: HubServer, model: bytes, dirs: dict[str, Path],
                                tmp_path: Path) -> None:
    folder = tmp_path / "my models"
    m = manager(dirs)
    done = m.wait(m.start(DownloadRequest(REPO, (NAME,), folder=str(folder))), 30)
    assert done.state is State.DONE, done.message
    assert done.paths == (str(folder / NAME),)
    assert (folder / NAME).read_bytes() == model and not (folder / NAME).is_symlink()
    assert not dirs["cache"].exists() and not partials(folder)


def test_split_gguf_parts_are_one_item(hub: HubServer, dirs: dict[str, Path]) -> None:
    names = tuple(f"big/model-Q8_0-{i:05d}-of-00003.gguf" for i in (1, 2, 3))
    parts = [payload(MB + i * 1000, seed=i) for i in range(3)]
    for name, data in zip(names, parts, strict=True):
        hub.add_file(REPO, name, data)
    m = manager(dirs)
    done = m.wait(m.start(DownloadRequest(REPO, names)), 30)
    assert done.state is State.DONE, done.message
    assert done.bytes_total == sum(map(len, parts)) == done.bytes_done
    assert len(done.paths) == 3 and len(m.list()) == 1
    for name, data, path in zip(names, parts, done.paths, strict=True):
        assert try_to_load_from_cache(REPO, name, cache_dir=dirs["cache"]) == path
        assert Path(path).read_bytes() == data


# -- network faults -------------------------------------------------------------------------


def test_dropped_connections_resume_where_they_stopped(
        hub: HubServer, model: bytes, dirs: dict[str, Path]) -> None:
    hub.drop_after(REPO, NAME, MB)  # every response is cut after 1 MiB
    m = manager(dirs)
    done = m.wait(m.start(DownloadRequest(REPO, (NAME,))), 30)
    assert done.state is State.DONE, done.message
    assert sha256(done.paths[0]) == hub.file(REPO, NAME).sha256
    gets = hub.requests_for(NAME, "GET")
    assert [r.headers["range"] for r in gets] == [f"bytes={n * MB}-" for n in range(4)]
    assert hub.bytes_served(REPO, NAME) == len(model)  # nothing fetched twice


def test_stall_watchdog_drops_the_connection_and_retries(
        hub: HubServer, model: bytes, dirs: dict[str, Path]) -> None:
    hub.stall(REPO, NAME, MB, 20)
    m = manager(dirs, stall_timeout_s=0.5)
    started = time.monotonic()
    done = m.wait(m.start(DownloadRequest(REPO, (NAME,))), 15)
    assert done.state is State.DONE, done.message
    assert time.monotonic() - started < 10  # did not sit out the server's 20 s silence
    assert sha256(done.paths[0]) == hub.file(REPO, NAME).sha256
    # The stalled first response is still silent on the server, so only the retry is
    # logged; together they served the file once.
    assert [r.headers["range"] for r in hub.requests_for(NAME, "GET")] == [f"bytes={MB}-"]
    assert hub.bytes_served(REPO, NAME) == len(model)


def test_corrupted_bytes_are_never_used(hub: HubServer, model: bytes,
                                        dirs: dict[str, Path], tmp_path: Path) -> None:
    hub.corrupt(REPO, NAME, 123456)
    m = manager(dirs)
    failed = m.wait(m.start(DownloadRequest(REPO, (NAME,))), 30)
    assert failed.state is State.FAILED and "damaged" in failed.message
    assert failed.paths == ()
    assert try_to_load_from_cache(REPO, NAME, cache_dir=dirs["cache"]) is None
    assert not list(dirs["cache"].rglob(hub.file(REPO, NAME).sha256))
    assert not partials(dirs["cache"]) and not records(dirs)
    assert hub.bytes_served(REPO, NAME) == 2 * len(model)  # one retry from zero, no more
    folder = tmp_path / "folder"
    failed = m.wait(m.start(DownloadRequest(REPO, (NAME,), folder=str(folder))), 30)
    assert failed.state is State.FAILED and not (folder / NAME).exists()
    assert not partials(folder)


def test_server_errors_are_retried_then_fail(hub: HubServer, model: bytes,
                                             dirs: dict[str, Path]) -> None:
    hub.fail(REPO, NAME, 500)
    m = manager(dirs, max_retries=2)
    failed = m.wait(m.start(DownloadRequest(REPO, (NAME,))), 30)
    assert failed.state is State.FAILED and "HTTP 500" in failed.message
    assert "gave up after 3 tries" in failed.message
    assert len(hub.requests_for(NAME, "HEAD")) == 3
    hub.fail(REPO, NAME, 503, methods=("GET",))  # metadata works, the bytes do not
    hub.reset_counters()
    failed = m.wait(m.start(DownloadRequest(REPO, (NAME,))), 30)
    assert failed.state is State.FAILED and "HTTP 503" in failed.message
    assert len(hub.requests_for(NAME, "GET")) == 3
    hub.fail(REPO, NAME, None)  # the Hub is back: resuming a failed download works
    m.resume(failed.id)
    assert m.wait(failed.id, 30).state is State.DONE


def test_retry_after_is_honoured(hub: HubServer, model: bytes,
                                 dirs: dict[str, Path]) -> None:
    hub.fail(REPO, NAME, 429, methods=("GET",), retry_after=0.5)
    m = manager(dirs, max_retries=1)  # backoff alone would wait 0.01 s
    started = time.monotonic()
    failed = m.wait(m.start(DownloadRequest(REPO, (NAME,))), 30)
    assert failed.state is State.FAILED and "HTTP 429" in failed.message
    assert len(hub.requests_for(NAME, "GET")) == 2
    assert time.monotonic() - started >= 0.5


def test_the_same_request_twice_is_one_download(hub: HubServer, model: bytes,
                                                dirs: dict[str, Path]) -> None:
    m = manager(dirs)
    request = DownloadRequest(REPO, (NAME,))
    first, second = m.start(request), m.start(request)
    assert first == second and len(m.list()) == 1
    assert m.wait(first, 30).state is State.DONE
    assert hub.bytes_served(REPO, NAME) == len(model)


def test_missing_file_fails_with_not_found(hub: HubServer, model: bytes,
                                           dirs: dict[str, Path]) -> None:
    m = manager(dirs)
    for repo, name in ((REPO, "nope.gguf"), ("org/absent", NAME)):
        failed = m.wait(m.start(DownloadRequest(repo, (name,))), 30)
        assert failed.state is State.FAILED and "not found" in failed.message
        assert failed.bytes_done == 0
    assert not records(dirs) and hub.requests_for(NAME, "GET") == []


def test_gated_repo_needs_a_token_from_the_keyring(
        hub: HubServer, model: bytes, dirs: dict[str, Path],
        memory_keyring: MemoryKeyring, caplog: pytest.LogCaptureFixture) -> None:
    hub.add_repo(REPO, token=TOKEN, gated=True)
    hub.redirect_lfs = True
    m = manager(dirs)
    failed = m.wait(m.start(DownloadRequest(REPO, (NAME,))), 30)
    assert failed.state is State.FAILED
    assert "needs a Hugging Face token" in failed.message and "license" in failed.message
    tokens.set_token(TOKEN)
    assert tokens.token_storage() == "keyring"
    assert memory_keyring.store == {("workbench", "huggingface"): TOKEN}
    m.resume(failed.id)
    done = m.wait(failed.id, 30)
    assert done.state is State.DONE, done.message
    assert Path(done.paths[0]).read_bytes() == model
    cdn = [r for r in hub.log if r.path.startswith("/cdn/")]
    assert cdn and not any("authorization" in r.headers for r in cdn)
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.log)
    assert TOKEN not in caplog.text


def test_wrong_token_is_told_apart_from_no_token(hub: HubServer, model: bytes,
                                                 dirs: dict[str, Path]) -> None:
    hub.add_repo(REPO, token=TOKEN, gated=True)
    m = manager(dirs, token=lambda: "hf_wrong")
    failed = m.wait(m.start(DownloadRequest(REPO, (NAME,))), 30)
    assert failed.state is State.FAILED and "no access" in failed.message
    assert "license" in failed.message


def test_token_falls_back_to_memory_without_a_keyring() -> None:
    assert tokens.token_storage() == "memory" and tokens.get_token() is None
    tokens.set_token(" hf_abc ")
    assert tokens.get_token() == "hf_abc"
    tokens.delete_token()
    assert tokens.get_token() is None


# -- pause, resume, restart, cancel ----------------------------------------------------------


def _hold_at_half(hub: HubServer, model: bytes) -> int:
    """Make the server go silent half way, so a test can act on a running download."""
    half = len(model) // 2
    hub.stall(REPO, NAME, half, 20)
    return half


def test_pause_then_resume_continues_the_bytes(hub: HubServer, model: bytes,
                                               dirs: dict[str, Path]) -> None:
    half = _hold_at_half(hub, model)
    recorder = Recorder(at=half)
    m = manager(dirs, recorder)
    download = m.start(DownloadRequest(REPO, (NAME,)))
    assert recorder.reached.wait(15)
    m.pause(download)
    paused = m.wait(download, 5)  # prompt although the server is silent: the socket is shut
    assert paused.state is State.PAUSED and paused.bytes_done == half
    assert [p.stat().st_size for p in partials(dirs["cache"])] == [half]
    m.resume(download)
    done = m.wait(download, 30)
    assert done.state is State.DONE and sha256(done.paths[0]) == hub.file(REPO, NAME).sha256
    assert hub.requests_for(NAME, "GET")[-1].headers["range"] == f"bytes={half}-"
    assert hub.bytes_served(REPO, NAME) == len(model)


def test_restore_after_restart_resumes_from_the_partial_bytes(
        hub: HubServer, model: bytes, dirs: dict[str, Path]) -> None:
    half = _hold_at_half(hub, model)
    recorder = Recorder(at=half)
    first = manager(dirs, recorder)
    download = first.start(DownloadRequest(REPO, (NAME,)))
    assert recorder.reached.wait(15)
    first.close()
    assert len(records(dirs)) == 1

    second = manager(dirs)
    (restored,) = second.restore()
    assert restored.id == download and restored.state is State.PAUSED
    assert restored.bytes_done == half and restored.bytes_total == len(model)
    assert "Resume" in restored.message
    assert second.restore() == []  # already known
    second.resume(download)
    done = second.wait(download, 30)
    assert done.state is State.DONE and sha256(done.paths[0]) == hub.file(REPO, NAME).sha256
    refetched = hub.bytes_served(REPO, NAME) - len(model)
    assert 0 <= refetched < 0.01 * len(model)
    assert not records(dirs)


def test_cancel_removes_the_partial_bytes(hub: HubServer, model: bytes,
                                          dirs: dict[str, Path]) -> None:
    half = _hold_at_half(hub, model)
    recorder = Recorder(at=half)
    m = manager(dirs, recorder)
    download = m.start(DownloadRequest(REPO, (NAME,)))
    assert recorder.reached.wait(15)
    assert len(partials(dirs["cache"])) == 1
    m.cancel(download)
    cancelled = m.wait(download, 5)
    assert cancelled.state is State.CANCELLED and cancelled.bytes_done == 0
    assert not partials(dirs["cache"]) and not records(dirs)
    assert try_to_load_from_cache(REPO, NAME, cache_dir=dirs["cache"]) is None


def test_cancel_of_a_paused_download_removes_its_bytes(
        hub: HubServer, model: bytes, dirs: dict[str, Path]) -> None:
    half = _hold_at_half(hub, model)
    recorder = Recorder(at=half)
    m = manager(dirs, recorder)
    download = m.start(DownloadRequest(REPO, (NAME,)))
    assert recorder.reached.wait(15)
    m.pause(download)
    assert m.wait(download, 5).state is State.PAUSED and partials(dirs["cache"])
    m.cancel(download)
    assert m.wait(download, 5).state is State.CANCELLED
    assert not partials(dirs["cache"]) and not records(dirs)


# -- disk space, secrets -----------------------------------------------------------------------


def test_not_enough_disk_space_fails_before_any_byte(
        hub: HubServer, model: bytes, dirs: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(  # type: ignore[attr-defined]
        10 * len(model), 10 * len(model), len(model) - 1))
    m = manager(dirs)
    failed = m.wait(m.start(DownloadRequest(REPO, (NAME,))), 30)
    assert failed.state is State.FAILED and "disk space" in failed.message
    assert "3.0 MB" in failed.message  # how much is free
    assert hub.requests_for(NAME, "GET") == [] and hub.bytes_served(REPO, NAME) == 0


def test_disk_space_check_counts_the_partial_bytes(
        hub: HubServer, model: bytes, dirs: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    half = _hold_at_half(hub, model)
    recorder = Recorder(at=half)
    m = manager(dirs, recorder)
    download = m.start(DownloadRequest(REPO, (NAME,)))
    assert recorder.reached.wait(15)
    m.pause(download)
    m.wait(download, 5)
    remaining = len(model) - half
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(  # type: ignore[attr-defined]
        10 * len(model), 10 * len(model), remaining))
    m.resume(download)
    assert m.wait(download, 30).state is State.DONE


def test_the_token_is_never_written_to_the_state_files(
        hub: HubServer, model: bytes, dirs: dict[str, Path],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    hub.add_repo(REPO, token=TOKEN, gated=True)
    tokens.set_token(TOKEN)
    half = _hold_at_half(hub, model)
    recorder = Recorder(at=half)
    m = manager(dirs, recorder)
    download = m.start(DownloadRequest(REPO, (NAME,)))
    assert recorder.reached.wait(15)
    m.close()
    saved = records(dirs)
    assert saved and all(TOKEN not in p.read_text() for p in saved)
    assert '"state": "paused"' in saved[0].read_text()
    second = manager(dirs)
    second.restore()
    second.resume(download)
    assert second.wait(download, 30).state is State.DONE
    assert TOKEN not in caplog.text
    every_file = [p for p in dirs["state"].parent.rglob("*") if p.is_file()]
    assert every_file and not any(TOKEN.encode() in p.read_bytes() for p in every_file
                                  if p.stat().st_size < 2**20)


def test_download_benchmark_quick_run() -> None:
    from workbench.bench import download

    result = download.run(quick=True)
    assert result["benchmark"] == "download" and result["size_mb"] == 64
    for key in ("manager_mb_s", "hf_hub_download_mb_s", "ratio_vs_hf_hub_download"):
        assert result[key] > 0, result
    assert 0 <= result["refetch_fraction"] <= 0.01, result
