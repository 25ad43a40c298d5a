"""LiveRun: a fit on a background thread, steered from the test (UI) thread."""

import subprocess
import sys
import threading
import time

import pytest
import torch.nn as nn
from helpers import mlp, toy_data

from workbench import DistillConfig, Distiller, LiveRun
from workbench.engine.events import FitEnd, StepEnd


def _wait_for(cond, timeout=120.0):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


class Slow:
    """Slows each reported step so a thread test has time to act (and records the thread)."""

    def __init__(self, seconds=0.002):
        self.seconds, self.threads = seconds, set()

    def on_step_end(self, p):
        self.threads.add(threading.get_ident())
        time.sleep(self.seconds)


def _live(epochs=500, **kw):
    slow = Slow()
    d = Distiller(
        mlp(hidden=32, seed=1),
        mlp(seed=2),
        toy_data(),
        DistillConfig(epochs=epochs, log_every=1, **kw),
        callbacks=[slow],
    )
    return LiveRun(d), slow


def steps(run):
    return [p for p in run.buffer.all() if isinstance(p, StepEnd)]


def test_stop_from_another_thread_within_a_second():
    run, slow = _live()
    assert run.status == "created"
    run.start()
    _wait_for(lambda: len(steps(run)) >= 5)
    assert run.status == "running"
    assert slow.threads and threading.get_ident() not in slow.threads  # trains off the UI thread
    run.stop()
    n = len(steps(run))  # counted after stop(): at most one step was in flight then
    assert run.join(timeout=60)
    assert run.result.summary["steps"] <= n + 1  # only the step in flight finishes
    assert run.status == "stopped" and run.result.status == "stopped"
    assert len(steps(run)) == run.result.summary["steps"]  # everything logged is kept
    assert isinstance(run.buffer.all()[-1], FitEnd)


def test_pause_and_resume():
    run, _ = _live(epochs=30)
    run.start()
    _wait_for(lambda: len(steps(run)) >= 3)
    run.pause()
    assert run.wait_paused(60)  # the training thread is blocked in pause: not just a flag set
    assert run.status == "paused"
    n = len(steps(run))
    time.sleep(0.3)
    assert len(steps(run)) == n  # nothing moves while paused
    run.resume()
    assert not run.wait_paused(0.05)
    assert run.join(timeout=60)
    assert run.status == "completed" and len(steps(run)) == 60


def test_wait_paused_follows_a_job_from_fit_to_fit():
    data = toy_data()
    cfg = DistillConfig(epochs=2, log_every=1)

    def job(run):
        teacher = mlp(hidden=32, seed=1)
        run.distiller(None, teacher, data, cfg).fit()
        run.pause()  # the student fit is built paused: it must block before its first step
        return run.distiller(teacher, mlp(seed=2), data, cfg).fit()

    run = LiveRun(job)
    assert not run.wait_paused(0.05)  # not started
    run.start()
    assert run.wait_paused(60)
    time.sleep(0.2)
    assert {p.role for p in steps(run)} == {"teacher"}  # the student has not taken a step
    run.resume()
    assert run.join(60) and run.status == "completed"
    assert [p.role for p in steps(run)].count("student") == 4
    t0 = time.monotonic()
    assert not run.wait_paused(30) and time.monotonic() - t0 < 5  # a finished job answers at once


def test_stop_while_paused():
    run, _ = _live()
    run.start()
    _wait_for(lambda: len(steps(run)) >= 2)
    run.pause()
    run.stop()
    assert run.join(timeout=60) and run.status == "stopped"


def test_live_temperature_change_from_another_thread():
    run, _ = _live()
    run.start()
    _wait_for(lambda: len(steps(run)) >= 5)
    run.set_controls(temperature=8.0, w_kd=0.9)
    _wait_for(lambda: steps(run)[-1].temperature == 8.0)
    run.stop()
    assert run.join(60)
    ts = [p.temperature for p in steps(run)]
    first = ts.index(8.0)
    assert set(ts[:first]) == {4.0} and set(ts[first:]) == {8.0}
    changed = [p for p in steps(run) if p.controls_changed]
    assert len(changed) == 1 and changed[0].w_kd == 0.9
    with pytest.raises(ValueError, match="temperature: -1"):
        run.set_controls(temperature=-1)


def test_drain_and_since_cursors():
    run, _ = _live(epochs=2)
    run.start().join(120)
    everything = run.buffer.all()
    assert run.buffer.drain() == everything and run.buffer.drain() == []
    part, cur = run.buffer.since(3)
    assert part == everything[3:] and cur == len(everything)


def test_error_in_the_thread_is_readable():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = mlp()

        def forward(self, x):
            if self.training:
                raise RuntimeError("kaboom")
            return self.m(x)

    run = LiveRun(Distiller(None, Boom(), toy_data())).start()
    assert run.join(120)
    assert run.status == "error" and "kaboom" in run.error and "Traceback" in run.traceback


def test_job_of_several_fits_shares_stop_and_controls():
    data = toy_data()

    def job(run):
        teacher = mlp(hidden=32, seed=1)
        run.distiller(None, teacher, data, DistillConfig(epochs=3)).fit()
        return run.distiller(teacher, mlp(seed=2), data, DistillConfig(epochs=3, log_every=1)).fit()

    run = LiveRun(job)
    run.set_controls(temperature=6.0)  # before the student fit exists: applied when it starts
    run.start().join(20)
    assert run.status == "completed"
    roles = [p.role for p in run.buffer.all() if isinstance(p, FitEnd)]
    assert roles == ["teacher", "student"]
    assert {p.temperature for p in steps(run) if p.role == "student"} == {6.0}

    def crashing_job(run):
        run.distiller(None, mlp(), data, DistillConfig(epochs=1)).fit()
        raise OSError("disk full")

    run = LiveRun(crashing_job).start()
    run.join(20)
    assert run.status == "error" and run.error == "OSError: disk full"


def test_engine_imports_no_ui_package():
    code = (
        "import sys\n"
        "for m in ('streamlit', 'ipywidgets', 'plotly', 'IPython', 'anywidget'):\n"
        "    sys.modules[m] = None  # any import of it now fails\n"
        "import workbench, workbench.engine.distiller, workbench.engine.live, workbench.engine.callbacks\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('streamlit', 'ipywidgets', 'plotly') and sys.modules[m]]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_import_workbench_is_lazy():
    code = "import sys, workbench; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_stop_hooks_reach_work_that_is_not_a_fit():
    import threading as th

    halted = th.Event()

    def job(run):
        run.on_stop(halted.set)
        halted.wait(20)
        return "halted" if halted.is_set() else "timeout"

    run = LiveRun(job).start()
    time.sleep(0.1)
    run.stop()
    assert run.join(120) and run.result == "halted" and run.status == "stopped"


def test_stop_all_stops_and_joins_every_unfinished_run():
    from workbench.engine import live

    a, _ = _live()
    b, _ = _live()
    a.start(), b.start()
    _wait_for(lambda: len(steps(a)) >= 2 and len(steps(b)) >= 2)
    assert set(live.running()) == {a, b}
    assert set(live.stop_all(timeout=120)) == {a, b}
    assert a.status == b.status == "stopped" and live.running() == []
