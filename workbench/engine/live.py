"""LiveRun: a fit (or a sequence of fits) on a background thread, for UIs.

The UI thread only reads the thread-safe :class:`EventBuffer` and sets flags (stop, pause,
controls); nothing on the training thread touches a UI. An exception in the job never leaves a
silently dead thread: ``status`` becomes "error" and ``error``/``traceback`` say why.
"""

from __future__ import annotations

import atexit
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from .distiller import Controls, Distiller, FitResult
from .events import FitEnd, Payload
from .losses import LossWeights

_SEVERITY = {"completed": 0, "stopped": 1, "diverged": 2, "error": 3}
_STARTED: weakref.WeakSet[LiveRun] = weakref.WeakSet()  # runs whose thread was started


def running() -> list[LiveRun]:
    """Live runs started in this process that have not finished."""
    return [r for r in list(_STARTED) if r._thread.is_alive()]


def stop_all(timeout: float = 30.0) -> list[LiveRun]:
    """Stop every unfinished live run and wait for each (up to ``timeout`` s in all); returns them.

    Called at interpreter exit: a training thread still inside a torch op while Python shuts
    down aborts the process ("terminate called without an active exception").
    """
    runs = running()
    for r in runs:
        r.stop()
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.daemon = True
    timer.start()
    for r in runs:
        while not deadline.is_set() and not r.join(0.1):
            pass
    timer.cancel()
    return runs


atexit.register(stop_all)


class EventBuffer:
    """Thread-safe, append-only log of payloads; each reader keeps its own cursor."""

    def __init__(self) -> None:
        self._events: list[Payload] = []
        self._lock = threading.Lock()
        self._cursor = 0

    def append(self, p: Any) -> None:
        """Add one item (a payload, or any record such as a sweep's progress dict)."""
        with self._lock:
            self._events.append(p)

    on_fit_start = on_step_end = on_eval_end = on_epoch_end = on_fit_end = append

    def __len__(self) -> int:
        return len(self._events)

    def since(self, cursor: int) -> tuple[list[Payload], int]:
        """Payloads after position ``cursor`` and the new cursor (for readers that redraw)."""
        with self._lock:
            new = self._events[cursor:]
            return new, cursor + len(new)

    def drain(self) -> list[Payload]:
        """Payloads not returned by an earlier ``drain()`` (one consumer)."""
        new, self._cursor = self.since(self._cursor)
        return new

    def all(self) -> list[Payload]:
        with self._lock:
            return list(self._events)


class LiveRun:
    """Runs ``target`` on a daemon thread: a :class:`Distiller`, or a callable ``target(run)``
    that builds its fits with ``run.distiller(...)`` so stop, pause and controls reach each one.
    """

    def __init__(self, target: Distiller | Callable[[LiveRun], Any], name: str = ""):
        if not (isinstance(target, Distiller) or callable(target)):
            raise ValueError(f"target: expected a Distiller or a callable, got {type(target).__name__}")
        self.name = name
        self.reason = ""  # a UI's note on how this run trains (e.g. why on a thread, not a process)
        self.buffer = EventBuffer()
        self.result: Any = None
        self.error: str | None = None
        self.traceback: str | None = None
        self.controls: Controls | None = None
        self._pending: dict[str, float] = {}
        self._target = target
        self._current: Distiller | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._paused = False
        self._final_status: str | None = None
        self._stop_hooks: list[Callable[[], Any]] = []
        self._thread = threading.Thread(target=self._main, name=f"workbench-live-{name}", daemon=True)
        if isinstance(target, Distiller):
            target.add_callback(self.buffer)
            self._adopt(target)

    # -- building fits inside a job ----------------------------------------------------------
    def distiller(self, teacher, student, data, config=None, callbacks: Iterable[Any] = (), **kwargs: Any) -> Distiller:
        """A Distiller wired to this run (events into the buffer; stop/pause/controls apply)."""
        d = Distiller(teacher, student, data, config, [*callbacks, self.buffer], **kwargs)
        self._adopt(d)
        return d

    def _adopt(self, d: Distiller) -> None:
        with self._lock:
            # The live temperature and weights belong to the distilled student(s). A fit without a
            # teacher (the teacher itself, a scratch baseline) keeps its own plain-CE weights:
            # otherwise a teacher trained first in a job would hand the student its w_kd=0.
            if d.teacher is not None:
                if self.controls is None:
                    self.controls = Controls(d.config.weights)
                    if self._pending:
                        self.controls.update(**self._pending)
                d.use_controls(self.controls)
            self._current = d
            if self._stopped:
                d.stop()
            elif self._paused:
                d.pause()

    # -- control from the UI thread ----------------------------------------------------------
    def start(self) -> LiveRun:
        _STARTED.add(self)
        self._thread.start()
        return self

    def on_stop(self, hook: Callable[[], Any]) -> None:
        """Call ``hook`` when the job is stopped (e.g. a sweep's own ``stop``)."""
        with self._lock:
            self._stop_hooks.append(hook)
            stopped = self._stopped
        if stopped:
            hook()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Stop the current fit (and any later fit of this job) before its next step."""
        with self._lock:
            self._stopped = True
            if self._current is not None:
                self._current.stop()
            hooks = list(self._stop_hooks)
        for hook in hooks:
            hook()

    def pause(self) -> None:
        with self._lock:
            self._paused = True
            if self._current is not None:
                self._current.pause()

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            if self._current is not None:
                self._current.resume()

    def set_controls(self, **values: float) -> LossWeights | None:
        """Change temperature / weights from the next step; a bad value raises ValueError here."""
        with self._lock:
            if self.controls is None:
                probe = Controls(LossWeights())
                probe.update(**{**self._pending, **values})  # validate now
                self._pending.update(values)
                return None
            return self.controls.update(**values)

    def wait_paused(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for the job's current fit to block in pause; True once it has.

        Follows the job from fit to fit (a fit started while paused pauses before its first
        step); False at once when the job has finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._final_status is None:
            with self._lock:
                current = self._current
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            slice_s = 0.05 if left is None else min(0.05, left)
            if current is None:
                time.sleep(slice_s)
            elif current.wait_paused(slice_s):
                return True
        return False

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job; True when it has finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def done(self) -> bool:
        return self._final_status is not None

    @property
    def status(self) -> str:
        """created, running, paused, or the final status: completed, stopped, diverged, error."""
        if self._final_status is not None:
            return self._final_status
        if not self._thread.is_alive():
            return "created"
        return "paused" if self._paused else "running"

    # -- the training thread -----------------------------------------------------------------
    def _main(self) -> None:
        status = "completed"
        try:
            if isinstance(self._target, Distiller):
                self.result = self._target.fit()
            else:
                self.result = self._target(self)
            if isinstance(self.result, FitResult):
                status = self.result.status
                if status == "error":
                    self.error, self.traceback = self.result.message, self.result.traceback
            else:
                ends = [p for p in self.buffer.all() if isinstance(p, FitEnd)]
                worst = max(ends, key=lambda p: _SEVERITY.get(p.status, 0), default=None)
                if worst is not None and worst.status != "completed":
                    status = worst.status
                    if status == "error":
                        self.error = worst.message
                elif self._stopped:
                    status = "stopped"
        except BaseException as e:  # never a silently dead thread
            status = "error"
            self.error = f"{type(e).__name__}: {e}"
            self.traceback = traceback.format_exc()
        finally:
            self._final_status = status
