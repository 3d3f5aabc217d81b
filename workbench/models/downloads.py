"""Downloads of model files from the Hugging Face Hub: resumable, verified, restartable.

A download is one item of one or more files (all parts of a split GGUF are one item). It
runs in a background thread: metadata first (size, commit, expected hash), a disk-space
check, then each file's bytes into `<final>.incomplete` (see download_fetch), verified
against the Hub's sha256 before anything reaches its final place (see download_store).

Each download's record lives in `state_dir` as JSON and is rewritten on every state
change, so after a restart `restore()` brings unfinished downloads back, paused, with
their partial bytes. Tokens are asked for on each attempt and never stored or logged.

Progress goes to `on_progress` from background threads: every state change at once, and
bytes from one ticker thread every PROGRESS_INTERVAL_S while anything runs (so the hot
receive loop only stores a number, and the last bytes before a stall are still shown).
It must not block (a GUI posts it to its own thread).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from huggingface_hub import constants

from workbench.models import tokens
from workbench.models.download_fetch import (
    Control,
    DownloadFailed,
    FetchOptions,
    FileFetch,
    Source,
    Stopped,
    resolve,
    with_retries,
)
from workbench.models.download_job import (
    ACTIVE,
    SETTLED,
    DownloadRequest,
    Job,
    Progress,
    State,
    free_space,
    gib,
)
from workbench.models.download_store import (
    FilePlan,
    Target,
    check_filename,
    load_records,
    plans_from_record,
    record,
    remove_record,
    save_record,
)

__all__ = ["DownloadManager", "DownloadRequest", "Progress", "State"]

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.1


class DownloadManager:
    def __init__(self, state_dir: Path, *, on_progress: Callable[[Progress], None] = lambda p: None,
                 endpoint: str | None = None, token: Callable[[], str | None] | None = None,
                 cache_dir: Path | None = None, stall_timeout_s: float = 30.0,
                 max_retries: int = 6, chunk_size: int = 4 * 2**20, backoff_s: float = 0.5,
                 max_parallel: int = 3) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._on_progress = on_progress
        self._endpoint = endpoint
        self._token = token or tokens.get_token
        self._cache_dir = cache_dir
        self._options = FetchOptions(stall_timeout_s=stall_timeout_s, max_retries=max_retries,
                                     backoff_s=backoff_s, chunk_size=chunk_size)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._emit_lock = threading.RLock()  # callbacks in the order states changed
        self._slots = threading.Semaphore(max_parallel)
        self._closed = False
        self._ticker: threading.Thread | None = None
        self._closing = threading.Event()

    # -- public API ----------------------------------------------------------------------

    def start(self, request: DownloadRequest) -> str:
        if not request.filenames:
            raise ValueError("A download needs at least one file name.")
        for name in request.filenames:
            check_filename(name)
        with self._lock:
            if self._closed:
                raise RuntimeError("The download manager is closed.")
            # Two writers of one partial file would ruin it: the same request is one item,
            # and a cancelled one still deleting its bytes is waited for.
            same = [j for j in self._jobs.values() if j.request == request]
            job = next((j for j in same if j.state not in (State.DONE, State.CANCELLED)), None)
            if job is not None:
                if not self._resume_locked(job):
                    return job.id
            else:
                cache_dir = Path(self._cache_dir or constants.HF_HUB_CACHE)
                job = Job(uuid.uuid4().hex[:12], request,
                          Target(request.repo_id, request.folder, cache_dir), State.QUEUED)
                self._jobs[job.id] = job
                dying = next((j.worker for j in same if j.worker_alive), None)
                self._spawn(job, dying)
                self._save(job)
        self._emit(job)
        return job.id

    def pause(self, id: str) -> None:
        with self._lock:
            job = self._jobs[id]
            if job.state not in ACTIVE:
                return
            job.state, job.message = State.PAUSED, "Paused. Resume to continue where it stopped."
            control = job.control
            self._save(job)
            self._changed.notify_all()
        if control is not None:
            control.stop("pause")
        self._emit(job)

    def resume(self, id: str) -> None:
        with self._lock:
            if not self._resume_locked(self._jobs[id]):
                return
        self._emit(self._jobs[id])

    def _resume_locked(self, job: Job) -> bool:
        """Queue a paused or failed download again (lock held); False if it is neither."""
        if self._closed or job.state not in (State.PAUSED, State.FAILED):
            return False
        if job.state is State.FAILED:
            job.retried_from_zero = False  # the user asked again: a fresh allowance
        job.state, job.message = State.QUEUED, ""
        self._spawn(job)
        self._save(job)
        return True

    def cancel(self, id: str) -> None:
        """Stop and delete the partial bytes (finished files are left alone)."""
        with self._lock:
            job = self._jobs[id]
            if job.state in (State.DONE, State.CANCELLED):
                return
            job.state, job.message = State.CANCELLED, "Cancelled; the partial download was deleted."
            control = job.control
            if not job.worker_alive:
                self._discard(job)  # otherwise the worker does it once it has stopped writing
            self._changed.notify_all()
        if control is not None:
            control.stop("cancel")
        self._emit(job)

    def list(self) -> list[Progress]:
        with self._lock:
            return [job.snapshot() for job in self._jobs.values()]

    def restore(self) -> list[Progress]:
        """Unfinished downloads of an earlier session, PAUSED with their partial bytes."""
        restored = []
        with self._lock:
            for data in load_records(self.state_dir):
                if data["id"] in self._jobs:
                    continue
                req = data["request"]
                request = DownloadRequest(req["repo_id"], tuple(req["filenames"]),
                                          req.get("revision", "main"), req.get("folder"))
                if data["state"] in (State.DONE.value, State.CANCELLED.value):
                    remove_record(self.state_dir, data["id"])
                    continue
                message = data.get("message") if data["state"] == State.FAILED.value else ""
                job = Job(data["id"], request,
                           Target(request.repo_id, request.folder, Path(data["cache_dir"])),
                           State.PAUSED, commit=data.get("commit"),
                           plans=plans_from_record(data),
                           message=message or "Paused when Workbench closed. Resume to continue "
                                              "where it stopped.")
                for plan in job.plans or []:
                    job.file_bytes[plan.filename] = (plan.size if job.target.have_blob(plan)
                                                     else job.target.partial_size(plan))
                self._jobs[job.id] = job
                self._save(job)
                restored.append(job)
        for job in restored:
            self._emit(job)
        with self._lock:
            return [job.snapshot() for job in restored]

    def wait(self, id: str, timeout: float) -> Progress:
        """Block until the download is settled (paused, done, failed or cancelled, with its
        worker stopped); TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            job = self._jobs[id]
            while job.state not in SETTLED or job.worker_alive:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"download {id} still {job.state.value} after {timeout} s")
                self._changed.wait(left)
            return job.snapshot()

    def close(self, timeout: float = 10.0) -> None:
        """Stop every worker, keeping partial bytes; running downloads are saved PAUSED."""
        with self._lock:
            self._closed = True
            self._closing.set()
            jobs = list(self._jobs.values())
            for job in jobs:
                if job.state in ACTIVE:
                    job.state = State.PAUSED
                    job.message = "Paused when Workbench closed. Resume to continue."
                    self._save(job)
                if job.control is not None:
                    job.control.stop("close")
        deadline = time.monotonic() + timeout
        for job in jobs:
            if job.worker is not None:
                job.worker.join(max(0.0, deadline - time.monotonic()))

    # -- worker ----------------------------------------------------------------------------

    def _spawn(self, job: Job, previous: threading.Thread | None = None) -> None:
        """Start a run of `job` (lock held). It first waits for the previous run to end (or
        `previous`, a cancelled download of the same files still deleting its bytes), so two
        runs never write the same partial file."""
        previous = previous or job.worker
        control = Control()
        job.control, job.worker_alive = control, True
        job.worker = threading.Thread(target=self._run, args=(job, control, previous),
                                      daemon=True, name=f"download-{job.id}")
        job.worker.start()
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True,
                                            name="download-progress")
            self._ticker.start()

    def _tick(self) -> None:
        """Report the bytes of running downloads every PROGRESS_INTERVAL_S; ends when
        nothing is queued or running (the next start begins another)."""
        while True:
            with self._lock:
                if self._closed or not any(j.state in ACTIVE or j.worker_alive
                                           for j in self._jobs.values()):
                    self._ticker = None
                    return
                moved = [j for j in self._jobs.values() if j.state is State.RUNNING
                         and j.emitted != (j.state, j.bytes_done)]
            for job in moved:
                self._emit(job)
            self._closing.wait(PROGRESS_INTERVAL_S)  # the pace of reports

    def _owns(self, job: Job, control: Control) -> bool:
        return job.control is control

    def _run(self, job: Job, control: Control, previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join()
        try:
            while not self._slots.acquire(timeout=0.1):
                control.check()
            try:
                self._advance(job, control, State.RUNNING)
                self._download(job, control)
            finally:
                self._slots.release()
        except Stopped as stop:
            self._stopped(job, control, stop.reason)
        except DownloadFailed as exc:
            self._failed(job, control, str(exc))
        except Exception as exc:  # a bug must not leave a download "running" forever
            log.exception("download %s failed unexpectedly", job.id)
            self._failed(job, control, f"The download failed unexpectedly: {exc}")
        finally:
            with self._lock:
                if self._owns(job, control):
                    job.worker_alive = False
                self._changed.notify_all()

    def _source(self, job: Job) -> Source:
        return Source(job.request.repo_id, job.commit or job.request.revision,
                      (self._endpoint or constants.ENDPOINT).rstrip("/"), self._token)

    def _plan(self, job: Job, control: Control) -> None:
        """Size, commit and expected hash of each file, from the Hub (first run only)."""
        source = self._source(job)
        plans: list[FilePlan] = []
        commit = None
        for name in job.request.filenames:
            meta, headers = with_retries(partial(resolve, source, name), control,
                                         self._options)
            job.locations[name] = (meta.location, headers)
            if meta.size is None:
                raise DownloadFailed(f"The Hub did not say how large {name} is; try later.")
            if commit is None and meta.commit_hash:
                # Later parts are read at the first part's commit: one version of the model.
                commit = meta.commit_hash
                source = replace(source, revision=commit)
            plans.append(FilePlan(name, meta.size, (meta.etag or "").lower()))
        if commit is None and job.request.folder is None:
            raise DownloadFailed("The Hub did not say which commit it is sending, which the "
                                 "Hugging Face cache needs; try again later.")
        with self._lock:
            job.plans, job.commit = plans, commit
            self._save(job)

    def _download(self, job: Job, control: Control) -> None:
        if job.plans is None:
            self._plan(job, control)
        assert job.plans is not None
        target = job.target
        with self._lock:  # snapshots read this dict from other threads
            for plan in job.plans:
                job.file_bytes[plan.filename] = (plan.size if target.have_blob(plan)
                                                 else target.partial_size(plan))
        needed = sum(p.size - job.file_bytes[p.filename] for p in job.plans)
        free = free_space(target.root)
        if needed > free:
            raise DownloadFailed(
                f"Not enough disk space in {target.root}: this download needs {gib(needed)} "
                f"more and {gib(free)} is free. Free some space or pick another folder, then "
                "resume.")
        source = self._source(job)
        for plan in job.plans:
            if not target.have_blob(plan):
                self._fetch_verified(job, control, source, plan)
        self._advance(job, control, State.VERIFYING)
        paths = tuple(str(target.finish(p, job.commit or "", job.request.revision))
                      for p in job.plans)
        with self._lock:
            job.hashes.clear()
            job.paths = paths
            if not self._owns(job, control):
                return
            if job.state is State.CANCELLED:  # too late to cancel: the files are complete
                remove_record(self.state_dir, job.id)
                return
            # DONE even if a pause came during the moves: the files are in place, verified.
            job.state, job.message = State.DONE, ""
            self._save(job)
            self._changed.notify_all()
        self._emit(job)

    def _fetch_verified(self, job: Job, control: Control, source: Source,
                        plan: FilePlan) -> None:
        target = job.target
        while True:
            def on_bytes(n: int, name: str = plan.filename) -> None:
                job.file_bytes[name] = n  # the ticker reports it

            fetch = FileFetch(source, plan, target.partial(plan), control, self._options,
                              on_bytes, job.hashes.pop(plan.filename, None),
                              job.locations.pop(plan.filename, None))
            try:
                hashed = fetch.run()
            finally:  # kept so that a resume in this session need not re-read the partial
                if fetch.hash is not None:
                    job.hashes[plan.filename] = fetch.hash
            digest = hashed.hasher.hexdigest()
            if plan.matches(digest):
                return
            job.hashes.pop(plan.filename, None)
            target.remove_partial(plan)  # damaged bytes are never kept, let alone used
            job.file_bytes[plan.filename] = 0
            log.warning("%s/%s: hash mismatch (got %s, want %s)", job.request.repo_id,
                        plan.filename, digest, plan.etag)
            if job.retried_from_zero:
                raise DownloadFailed(
                    f"{plan.filename} arrived damaged twice: its checksum does not match the "
                    "Hub's, so it was deleted. Try again later; if it keeps happening, the "
                    "file on the Hub or a proxy on the way may be broken.")
            job.retried_from_zero = True

    def _stopped(self, job: Job, control: Control, reason: str) -> None:
        with self._lock:
            if not self._owns(job, control):
                return
            if reason == "cancel" or job.state is State.CANCELLED:
                self._discard(job)
            else:
                self._save(job)
        self._emit(job)

    def _failed(self, job: Job, control: Control, message: str) -> None:
        with self._lock:
            if not self._owns(job, control) or job.state is State.CANCELLED:
                return
            log.info("download %s failed: %s", job.id, message)
        self._set(job, control, State.FAILED, message)

    def _discard(self, job: Job) -> None:
        """Delete partial bytes and the record (lock held)."""
        for plan in job.plans or []:
            job.target.remove_partial(plan)
            job.file_bytes[plan.filename] = 0
        job.hashes.clear()
        remove_record(self.state_dir, job.id)

    # -- state, records, progress ------------------------------------------------------------

    def _set(self, job: Job, control: Control, state: State, message: str) -> bool:
        """Move the worker's download to `state`, unless the user (or close) already moved
        it on and this worker is on its way out."""
        with self._lock:
            if not self._owns(job, control) or job.state in (State.PAUSED, State.CANCELLED):
                return False
            job.state, job.message = state, message
            if state is State.RUNNING:
                job.samples.clear()
            self._save(job)
            self._changed.notify_all()
        self._emit(job)
        return True

    def _advance(self, job: Job, control: Control, state: State) -> None:
        if not self._set(job, control, state, ""):
            raise Stopped(control.reason or "pause")

    def _save(self, job: Job) -> None:
        """Rewrite the record (lock held). A finished or abandoned download keeps none; a
        failed one keeps it only while partial bytes remain to resume from."""
        if job.state is State.DONE or (job.state is State.FAILED and job.bytes_done == 0):
            remove_record(self.state_dir, job.id)
            return
        data = record(download_id=job.id, request=asdict(job.request), state=job.state.value,
                      message=job.message, cache_dir=job.target.cache_dir, commit=job.commit,
                      plans=job.plans)
        try:
            save_record(self.state_dir, data)
        except OSError:  # a full disk must not also break the download in memory
            log.warning("cannot save the state of download %s", job.id, exc_info=True)

    def _emit(self, job: Job) -> None:
        with self._emit_lock:
            with self._lock:
                snapshot = job.snapshot()
                job.emitted = (snapshot.state, snapshot.bytes_done)
            try:
                self._on_progress(snapshot)
            except Exception:  # a broken listener must not stop a download
                log.exception("download progress callback failed")
