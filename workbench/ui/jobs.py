"""A server-wide registry of live jobs for web UIs (no UI import here).

The Streamlit app keeps one :class:`JobRegistry` in ``st.cache_resource``; a browser session
keeps only a job id (in the page URL), so a page refresh finds its running job again. The
registry caps concurrent jobs and drops finished or abandoned ones after a while. Each job has
one :class:`~workbench.ui.live_history.LiveHistory` that every session watching it reads.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..engine import process_run
from ..engine.live import LiveRun
from ..engine.process_run import ProcessRun, UnpicklableTarget
from .live_history import LiveHistory


class TooManyJobs(RuntimeError):
    """The server already runs as many jobs as it allows."""


@dataclass
class Job:
    """One job: its LiveRun, what it was started with, when it was last looked at, and the history
    its live views draw (shared by every session watching it; thread-safe)."""

    job_id: str
    run: LiveRun
    label: str
    context: dict[str, Any] = field(default_factory=dict)  # e.g. the Settings and the Experiment
    created: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.time)
    finished: float | None = None
    history: LiveHistory = field(default_factory=LiveHistory)

    def touch(self) -> None:
        self.seen = time.time()
        if self.run.done and self.finished is None:
            self.finished = time.time()


class JobRegistry:
    """Thread-safe map of job id -> :class:`Job` with a cap on jobs running at once.

    ``keep_finished`` seconds after a job ends, and ``abandon_after`` seconds after a running job
    was last looked at (its page closed), the job is stopped and dropped.
    """

    def __init__(self, max_running: int | None = None, keep_finished: float = 3600.0, abandon_after: float = 600.0):
        self.max_running = _max_running(max_running)
        self.keep_finished = _positive_seconds("keep_finished", keep_finished)
        self.abandon_after = _positive_seconds("abandon_after", abandon_after)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()
        # cleanup also runs on its own: a page closed mid-run must not leave its job training
        self.reap_every = max(1.0, min(60.0, abandon_after / 4))

    def running(self) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if not j.run.done]

    def start(self, target: Callable[[LiveRun], Any], label: str = "", process: bool = False, **context: Any) -> Job:
        """Start ``target`` on a LiveRun (``process``: in a child process where it can, see
        :func:`job_run`); raises :class:`TooManyJobs` past the cap."""
        self.cleanup()
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("this job registry is closed; it starts no more jobs")
            busy = sum(not j.run.done for j in self._jobs.values())
            if busy >= self.max_running:
                raise TooManyJobs(
                    f"the server is running {busy} jobs, its limit (WORKBENCH_MAX_JOBS="
                    f"{self.max_running}); try again when one finishes"
                )
            run = job_run(target, label) if process else LiveRun(target, name=label)
            job = Job(secrets.token_urlsafe(8), run, label, dict(context))
            self._jobs[job.job_id] = job
        job.run.start()
        self._start_reaper()
        return job

    def _start_reaper(self) -> None:
        with self._lock:
            if self._reaper is not None:
                return
            self._reaper = threading.Thread(target=self._reap, name="workbench-job-reaper", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        while not self._closed.wait(self.reap_every):
            self.cleanup()

    def close(self, timeout: float = 30.0) -> bool:
        """Stop every job and the cleanup thread, and wait for them; True when all have ended."""
        self._closed.set()
        with self._lock:
            jobs, reaper = list(self._jobs.values()), self._reaper
        for job in jobs:
            job.run.stop()
        deadline = time.monotonic() + timeout
        ended = all([job.run.join(max(0.0, deadline - time.monotonic())) for job in jobs])
        if reaper is not None:
            reaper.join(max(0.0, deadline - time.monotonic()))
            ended = ended and not reaper.is_alive()
        return ended

    def get(self, job_id: str | None) -> Job | None:
        """The job, marked as seen; None when unknown, already cleaned up, or not an id at all
        (the id comes from a page's URL: any text, or none)."""
        if not isinstance(job_id, str) or not job_id:
            return None
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            job.touch()
        return job

    def cleanup(self, now: float | None = None) -> list[str]:
        """Stop and drop finished jobs past ``keep_finished`` and unseen ones past ``abandon_after``."""
        now = now or time.time()
        dropped = []
        with self._lock:
            for job_id, job in list(self._jobs.items()):
                if job.run.done and job.finished is None:
                    job.finished = now
                expired = job.finished is not None and now - job.finished > self.keep_finished
                abandoned = not job.run.done and now - job.seen > self.abandon_after
                if abandoned:
                    job.run.stop()
                if expired or abandoned:
                    del self._jobs[job_id]
                    dropped.append(job_id)
        return dropped


def job_threads() -> int:
    """Torch threads for a server's jobs: ``$WORKBENCH_TORCH_THREADS``, else one core fewer than the
    machine has (at least 1). The page, the browser and other jobs share the cores: with as many
    threads as cores, a busy 2-core machine ran a transformer step about 13 times slower."""
    raw = os.environ.get("WORKBENCH_TORCH_THREADS", "").strip()
    if not raw:
        return max(1, (os.cpu_count() or 1) - 1)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"WORKBENCH_TORCH_THREADS: {raw!r} is invalid; expected a whole number >= 1")
    return value


def job_process() -> bool:
    """Whether UI jobs train in a child process: ``$WORKBENCH_JOB_PROCESS`` (1, the default, or 0)."""
    raw = os.environ.get("WORKBENCH_JOB_PROCESS", "").strip()
    if raw in ("", "1"):
        return True
    if raw == "0":
        return False
    raise ValueError(f"WORKBENCH_JOB_PROCESS: {raw!r} is invalid; expected 1 (jobs train in a child process) or 0")


def warm_up_jobs() -> None:
    """Start the jobs' fork server on a background thread (it imports torch: seconds), so the first
    Run starts at once; nothing when jobs train on threads (or the setting is bad: Run says so)."""
    try:
        if not job_process():
            return
    except ValueError:
        return
    threading.Thread(target=process_run.warm_up, name="workbench-warm-up", daemon=True).start()


def job_run(target: Callable[[LiveRun], Any], name: str = "", threads: int | None = None) -> LiveRun:
    """A UI job for ``target(live)``: a :class:`~workbench.engine.process_run.ProcessRun` (training in a
    child process, with ``threads`` torch threads, default :func:`job_threads`) when ``target`` pickles
    and :func:`job_process` allows it; else a LiveRun thread with those torch threads (``reason`` on the
    returned run says why it is not a process).

    Why a process: a training thread shares the GIL with the server's threads (Streamlit's script
    runs, a kernel's comms); with a page open and drawing, a fit took 1.5-2x as long as without.
    """
    threads = job_threads() if threads is None else threads
    why = "WORKBENCH_JOB_PROCESS=0"
    if job_process():
        try:
            return ProcessRun(target, name=name, threads=threads)
        except UnpicklableTarget as e:
            why = str(e)
    run = LiveRun(with_job_threads(target, threads), name=name)
    run.reason = f"trains on a thread: {why}"
    return run


def with_job_threads(fn: Callable[[LiveRun], Any], threads: int | None = None) -> Callable[[LiveRun], Any]:
    """``fn`` for a LiveRun's thread, run with ``threads`` (default :func:`job_threads`) torch threads.

    ``torch.set_num_threads`` sets the count of the calling thread and of threads started after it
    (threads already running, such as a kernel's, keep theirs): the count before is put back when
    ``fn`` ends.
    ``job_threads()`` is read here, so a bad WORKBENCH_TORCH_THREADS is refused before any training.
    """
    threads = job_threads() if threads is None else threads

    def target(run: LiveRun) -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn(run)
        finally:
            torch.set_num_threads(before)

    return target


def _max_running(value: int | None) -> int:
    """The cap on jobs running at once: ``value``, else ``$WORKBENCH_MAX_JOBS``, else 4."""
    field_name = "max_running"
    if value is None:
        field_name, value = "WORKBENCH_MAX_JOBS", os.environ.get("WORKBENCH_MAX_JOBS", "").strip() or "4"
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"WORKBENCH_MAX_JOBS: {value!r} is invalid; expected a whole number >= 1") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field_name}: {value!r} is invalid; expected a whole number >= 1")
    return value


def _positive_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{name}: {value!r} is invalid; expected a number of seconds > 0")
    return float(value)
