"""ProcessRun: a LiveRun whose training runs in a child process, so watching it costs it nothing.

A UI's server (Streamlit's, a Jupyter kernel) runs Python threads of its own: a training thread in
the same process shares the GIL with them, and a page open and drawing slowed a fit 1.5-2x on a
2-core machine. A :class:`ProcessRun` looks the same to the UI as a :class:`LiveRun` (the same
``buffer``, ``status``, ``stop``, ``pause``, ``set_controls``, ``result``), but its ``target`` runs
in a child process forked from a server process that has torch and workbench loaded (the
``forkserver`` start method: a fork of a clean, single-threaded process, never of the UI's):

- the child runs ``target(live)`` on its own LiveRun and sends the payloads in batches (every
  ``FORWARD_SECONDS``) over a pipe into this process's EventBuffer;
- stop, pause and resume are sent to the child at once; ``set_controls`` waits for the child's
  answer, so a value the run refuses raises ``ValueError`` here, as with a LiveRun;
- when the target ends, the child sends back its result and the target itself: a target with an
  ``adopt(returned, result)`` method (:class:`ExperimentJob`) takes the trained state from it;
- a child that dies (killed, out of memory) ends the run with status "error" and says so.

The target must pickle; a module defined in a notebook, a TorchScript program or
a closure do not, and :func:`workbench.ui.jobs.job_run` runs those on a thread instead.
"""

from __future__ import annotations

import copyreg
import io
import itertools
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .distiller import Controls, FitResult
from .live import LiveRun

FORWARD_SECONDS = 0.05  # how often the child sends its new payloads
ANSWER_SECONDS = 30.0  # how long set_controls waits for the child's answer
# what the fork server imports (warm: what a fit would load in each child)
PRELOAD = ["workbench.engine.process_run", "workbench.experiment", "workbench.engine.warm"]
_context_lock = threading.Lock()
_context: Any = None


def _mapping_proxy(d: dict) -> MappingProxyType:
    return MappingProxyType(d)


def _reduce_proxy(m: MappingProxyType) -> tuple:
    return _mapping_proxy, (dict(m),)


class _Pickler(pickle.Pickler):
    """Plain pickle (tensors by value, no shared memory) that also takes payloads' read-only maps."""

    dispatch_table = {**copyreg.dispatch_table, MappingProxyType: _reduce_proxy}


class _TargetPickler(_Pickler):
    """Also refuses what was defined in ``__main__`` (a notebook's or a script's own class or
    function): a child process has another ``__main__``, where it is not found."""

    def reducer_override(self, obj: Any) -> Any:
        kind = obj if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__") else type(obj)
        if getattr(kind, "__module__", None) == "__main__":
            raise pickle.PicklingError(f"{getattr(kind, '__qualname__', kind)!s} is defined in __main__")
        return NotImplemented


def dumps(obj: Any, pickler: type[pickle.Pickler] = _Pickler) -> bytes:
    buf = io.BytesIO()
    pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


class UnpicklableTarget(ValueError):
    """A job target that cannot be sent to a child process."""


def context() -> Any:
    """The multiprocessing context children start from (``forkserver``, preloaded with torch and
    workbench); where the platform has no fork server, ``spawn``."""
    global _context
    with _context_lock:
        if _context is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                _context = multiprocessing.get_context("forkserver")
                _context.set_forkserver_preload([*PRELOAD, "workbench.sweeps.sweep"])  # one server: the sweeps' too
            else:  # Windows
                _context = multiprocessing.get_context("spawn")
        return _context


def _process_class(ctx: Any) -> type:
    """``ctx.Process``; for the fork server, :class:`_Process` (no ``__main__`` in the child)."""
    return _Process if ctx.get_start_method() == "forkserver" and _Process is not None else ctx.Process


try:
    from multiprocessing import forkserver as _forkserver
    from multiprocessing import popen_forkserver as _popen_forkserver
    from multiprocessing import reduction as _reduction
    from multiprocessing import spawn as _spawn
    from multiprocessing import util as _util
    from multiprocessing.context import ForkServerProcess as _ForkServerProcess
    from multiprocessing.context import set_spawning_popen as _set_spawning_popen
except ImportError:  # no fork server here (Windows): children are spawned
    _Process = None
else:

    class _Popen(_popen_forkserver.Popen):
        """The fork server's Popen, less the parent's main module.

        multiprocessing runs the parent's main script again in each child (as ``__mp_main__``) to
        find what was defined there: under Streamlit that is the page's script (which draws a page);
        in a script without an ``if __name__ == "__main__"`` guard it starts the job again. A job
        never needs it (a target that refers to ``__main__`` is refused before it is sent)."""

        def _launch(self, process_obj: Any) -> None:  # popen_forkserver.Popen._launch, less init_main_*
            prep = _spawn.get_preparation_data(process_obj._name)
            prep = {k: v for k, v in prep.items() if not k.startswith("init_main")}
            buf = io.BytesIO()
            _set_spawning_popen(self)
            try:
                _reduction.dump(prep, buf)
                _reduction.dump(process_obj, buf)
            finally:
                _set_spawning_popen(None)
            self.sentinel, w = _forkserver.connect_to_new_process(self._fds)
            parent_w = os.dup(w)
            self.finalizer = _util.Finalize(self, _util.close_fds, (parent_w, self.sentinel))
            with open(w, "wb", closefd=True) as f:
                f.write(buf.getbuffer())
            self.pid = _forkserver.read_signed(self.sentinel)

    class _Process(_ForkServerProcess):
        @staticmethod
        def _Popen(process_obj: Any) -> _Popen:
            return _Popen(process_obj)


def warm_up() -> None:
    """Start the fork server now (it imports torch: seconds), so the first job starts at once."""
    ctx = context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


class ProcessRun(LiveRun):
    """A :class:`LiveRun` whose ``target(live)`` runs in a child process (see the module's notes).

    ``threads``: torch threads in the child (default: torch's count in this process).
    Raises :class:`UnpicklableTarget` (a ValueError) when ``target`` does not pickle.
    """

    def __init__(self, target: Callable[[LiveRun], Any], name: str = "", threads: int | None = None):
        if not callable(target):
            raise ValueError(f"target: expected a callable, got {type(target).__name__}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: {threads!r} is invalid; expected a whole number >= 1")
        why = None
        try:
            self._blob = dumps(target, _TargetPickler)
        except Exception as e:  # pickle raises many kinds: PicklingError, TypeError, AttributeError, ...
            why = f"{type(e).__name__}: {e}"
        if why is not None:
            raise UnpicklableTarget(f"target: {target!r} cannot be sent to a child process ({why})")
        super().__init__(target, name)
        self.threads = threads or torch.get_num_threads()
        self.exitcode: int | None = None
        self.pid: int | None = None  # the child's, once started
        self._conn: Any = None
        self._send_lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pause_gen = 0
        self._paused_ack = -1
        self._ids = itertools.count()
        self._answers: dict[int, list] = {}

    def distiller(self, *args: Any, **kwargs: Any):
        raise RuntimeError("a ProcessRun's fits are built in its child process, by its target")

    # -- control ---------------------------------------------------------------------------------
    def _send(self, msg: tuple) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            with self._send_lock:
                conn.send_bytes(dumps(msg))
        except (OSError, ValueError):  # the child has ended (the pipe is closed)
            return False
        return True

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            hooks = list(self._stop_hooks)
        self._send(("stop",))
        for hook in hooks:
            hook()

    def pause(self) -> None:
        with self._lock:
            self._paused = True
            self._pause_gen += 1
            gen = self._pause_gen
        self._send(("pause", gen))

    def resume(self) -> None:
        with self._lock:
            self._paused = False
        self._send(("resume",))

    def set_controls(self, **values: float):
        with self._lock:
            if self._conn is None or self._final_status is not None:  # not started, or ended
                return self._set_here(values)
            key = next(self._ids)
            answer: list = [threading.Event(), None]
            self._answers[key] = answer
        if not self._send(("controls", key, values)):
            answer[0].set()
        if not answer[0].wait(ANSWER_SECONDS):
            with self._lock:
                self._answers.pop(key, None)
            raise TimeoutError(f"controls: the training process did not answer in {ANSWER_SECONDS:.0f} s")
        with self._lock:
            self._answers.pop(key, None)
            if answer[1] is None:  # the job ended first: checked here, as after any run
                return self._set_here(values)
        ok, value = answer[1]
        if not ok:
            raise ValueError(value)
        return value

    def _set_here(self, values: dict) -> Any:
        """``set_controls`` with no child to ask (called holding the lock)."""
        if self.controls is None:
            Controls(self._weights_default()).update(**{**self._pending, **values})  # validate now
            self._pending.update(values)
            return None
        return self.controls.update(**values)

    @staticmethod
    def _weights_default():
        from .losses import LossWeights

        return LossWeights()

    def _take_weights(self, weights: Any) -> None:
        if weights is None:
            return
        if self.controls is None:
            self.controls = Controls(weights)
        else:
            self.controls.current = weights

    def wait_paused(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._final_status is None:
                if self._paused and self._paused_ack == self._pause_gen:
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(0.5 if left is None else min(0.5, left))
        return False

    # -- the reader thread -------------------------------------------------------------------------
    def _main(self) -> None:
        status, proc, conn = "error", None, None
        try:
            ctx = context()
            conn, there = ctx.Pipe(duplex=True)
            env = dict(os.environ)  # as now (a fork server keeps the environment it started with)
            proc = _process_class(ctx)(
                target=_child_main,
                args=(there, self._blob, env, os.getcwd(), self.threads, self.name),
                name=f"workbench-job-{self.name}",
                daemon=True,
            )
            try:
                proc.start()
            finally:
                there.close()
            self.pid = proc.pid
            with self._lock:
                self._conn = conn
                pending, stopped, paused, gen = dict(self._pending), self._stopped, self._paused, self._pause_gen
            if pending:
                self._send(("controls", None, pending))
            if paused:
                self._send(("pause", gen))
            if stopped:
                self._send(("stop",))
            status = self._read(conn, proc)
        except BaseException as e:  # never a silently dead thread
            self.error = f"{type(e).__name__}: {e}"
            self.traceback = traceback.format_exc()
        finally:
            with self._lock:
                self._conn = None
            if conn is not None:
                conn.close()
            if proc is not None and proc.pid is not None:
                proc.join(5.0)
                self.exitcode = proc.exitcode
            with self._changed:
                for answer in self._answers.values():
                    answer[0].set()
                self._final_status = status
                self._changed.notify_all()

    def _read(self, conn: Any, proc: Any) -> str:
        while True:
            try:
                msg = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                proc.join(5.0)
                code = proc.exitcode
                why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                self.error = (
                    f"the training process ended unexpectedly ({why}; out of memory?); "
                    "runs recorded before it ended are kept"
                )
                return "error"
            kind = msg[0]
            if kind == "events":
                for p in msg[1]:
                    self.buffer.append(p)
            elif kind == "weights":
                with self._lock:
                    self._take_weights(msg[1])
            elif kind == "answer":
                _, key, ok, value = msg
                with self._lock:
                    if ok:
                        self._take_weights(value)
                    answer = self._answers.get(key)
                    if answer is not None:
                        answer[1] = (ok, value)
                        answer[0].set()
            elif kind == "paused":
                with self._changed:
                    self._paused_ack = msg[1]
                    self._changed.notify_all()
            elif kind == "done":
                _, status, error, tb, blob = msg
                self.error, self.traceback = error, tb
                if blob is not None:
                    result, returned = pickle.loads(blob)
                    adopt = getattr(self._target, "adopt", None)
                    self.result = adopt(returned, result) if callable(adopt) else result
                return status


def _child_main(conn: Any, blob: bytes, env: dict, cwd: str, threads: int, name: str) -> None:
    """The child: run the target on a LiveRun, forward its payloads, obey the parent's commands."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the server's terminal: the parent stops us
    os.environ.clear()
    os.environ.update(env)
    try:
        os.chdir(cwd)
    except OSError:
        pass
    torch.set_num_threads(threads)
    send_lock = threading.Lock()

    def send(msg: tuple) -> None:
        data = dumps(msg)
        with send_lock:
            conn.send_bytes(data)

    try:
        target = pickle.loads(blob)
        live = LiveRun(target, name)
    except BaseException as e:
        send(("done", "error", f"{type(e).__name__}: {e}", traceback.format_exc(), None))
        return
    paused_gen = [None]

    def report_pause(gen: int) -> None:
        while not live.done and paused_gen[0] == gen:
            if live.wait_paused(0.2):
                if paused_gen[0] == gen:
                    send(("paused", gen))
                return

    def commands() -> None:
        while True:
            try:
                msg = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):  # the parent is gone: nobody watches, nobody takes the result
                live.stop()
                return
            kind = msg[0]
            if kind == "stop":
                live.stop()
            elif kind == "pause":
                paused_gen[0] = msg[1]
                live.pause()
                threading.Thread(target=report_pause, args=(msg[1],), daemon=True).start()
            elif kind == "resume":
                paused_gen[0] = None
                live.resume()
            elif kind == "controls":
                _, key, values = msg
                try:
                    value, ok = live.set_controls(**values), True
                except ValueError as e:
                    value, ok = str(e), False
                if key is not None:
                    send(("answer", key, ok, value))

    threading.Thread(target=commands, name="workbench-job-commands", daemon=True).start()
    live.start()
    cursor, weights = 0, None
    try:
        while True:
            finished = live.join(FORWARD_SECONDS)
            new, cursor = live.buffer.since(cursor)
            if new:
                send(("events", new))
            current = live.controls.current if live.controls is not None else None
            if current is not weights:
                weights = current
                send(("weights", current))
            if finished:
                break
        status, error, tb = live.status, live.error, live.traceback
        try:
            returned = dumps((live.result, target))
        except Exception as e:
            returned = None
            if status != "error":
                status, error = "error", f"the job's result could not be sent back ({type(e).__name__}: {e})"
        send(("done", status, error, tb, returned))
    except (OSError, ValueError):  # the parent is gone
        live.stop()
        live.join(30.0)


class ExperimentJob:
    """``experiment.<method>(live)`` as a job target that can run in a child process.

    After the child ends, :meth:`adopt` puts what the run changed into this process's experiment:
    the trained weights go into its own teacher and student modules (in place, so a module a person
    passed in is trained as on a thread), the rest of its state (the teacher's result, what was
    loaded) is taken as it came back, and the result's fits point at this process's modules.
    """

    METHODS = ("run", "prepare_teacher")

    def __init__(self, experiment: Any, method: str = "run"):
        if method not in self.METHODS:
            raise ValueError(f"method: {method!r} is invalid; expected one of {', '.join(self.METHODS)}")
        self.experiment, self.method = experiment, method

    def __call__(self, live: LiveRun) -> Any:
        return getattr(self.experiment, self.method)(live)

    def __repr__(self) -> str:
        return f"ExperimentJob({type(self.experiment).__name__}.{self.method})"

    def adopt(self, returned: ExperimentJob, result: Any) -> Any:
        mine, theirs = self.experiment.__dict__, returned.experiment.__dict__
        same: dict[int, nn.Module] = {}
        for key, module in mine.items():
            other = theirs.get(key)
            if isinstance(module, nn.Module) and isinstance(other, nn.Module) and type(other) is type(module):
                _copy_into(module, other)
                same[id(other)] = module
        for key, value in theirs.items():
            if key != "data" and id(value) not in same:
                mine[key] = _remap(value, same)
        return _remap(result, same)


def _copy_into(dst: nn.Module, src: nn.Module) -> None:
    """``src``'s parameters, buffers and train/eval modes into ``dst`` (kept on its device)."""
    dst.load_state_dict(src.state_dict())
    for a, b in zip(dst.modules(), src.modules(), strict=False):
        a.training = b.training


def _remap(value: Any, same: dict[int, nn.Module]) -> Any:
    """``value`` with its fits' models (``FitResult.model``) swapped for this process's modules."""
    if isinstance(value, FitResult):
        value.model = same.get(id(value.model), value.model)
        return value
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        for name in value.__dataclass_fields__:
            item = getattr(value, name, None)
            if isinstance(item, FitResult):
                _remap(item, same)
    return value
