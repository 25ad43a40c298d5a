"""ProcessRun: a UI job trained in a child process, looking to the UI like a LiveRun thread."""

import os
import signal
import sys
import time

import pytest
import torch
from helpers import ChildProbe, SlowSteps

from workbench import DistillConfig, LiveRun
from workbench.data.datasets import load_dataset
from workbench.engine.events import FitEnd, StepEnd
from workbench.engine.process_run import ExperimentJob, ProcessRun, UnpicklableTarget
from workbench.experiment import Experiment
from workbench.ui.jobs import JobRegistry, job_run


def _wait_for(cond, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def _experiment(tmp_path, epochs=3, callbacks=()):
    data = load_dataset("moons", n_samples=400, seed=0)
    return Experiment(
        data,
        "mlp:32",
        "mlp:8",
        DistillConfig(epochs=epochs, seed=0),
        teacher_config=DistillConfig(epochs=3, seed=0),
        runs=tmp_path / "runs",
        cache_dir=tmp_path / "cache",
        callbacks=callbacks,
    )


def _steps(run, role="student"):
    return [p for p in run.buffer.all() if isinstance(p, StepEnd) and p.role == role]


def test_an_experiment_in_a_child_matches_the_same_experiment_here_and_the_parent_takes_its_weights(tmp_path):
    here = _experiment(tmp_path / "here")
    want = here.run()
    there = _experiment(tmp_path / "there")
    student_before = there.student
    run = ProcessRun(ExperimentJob(there), name="same", threads=torch.get_num_threads()).start()
    assert run.join(300) and run.status == "completed", run.error
    got = run.result
    for role in ("teacher", "student", "baseline"):
        assert got.fits[role].summary["test_acc"] == want.fits[role].summary["test_acc"]
        assert got.fits[role].status == "completed"
    assert there.student is student_before and got.student.model is there.student  # trained in place
    for a, b in zip(there.student.state_dict().values(), here.student.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert there.teacher_result is not None and not there.train_teacher  # the child's state, taken
    ends = [p for p in run.buffer.all() if isinstance(p, FitEnd)]
    assert [p.role for p in ends] == ["teacher", "student", "baseline"]  # every event came over
    assert len(_steps(run)) == len(want.student.steps)
    assert run.pid is not None and run.pid != os.getpid() and run.exitcode == 0


def test_controls_pause_and_stop_reach_the_child_and_a_refused_value_raises_here(tmp_path):
    exp = _experiment(tmp_path, epochs=200, callbacks=[SlowSteps(0.01)])
    run = ProcessRun(ExperimentJob(exp), name="steer", threads=1).start()
    try:
        _wait_for(lambda: _steps(run) or run.done)
        w = run.set_controls(temperature=7.0)
        assert w.temperature == 7.0 and run.controls.current.temperature == 7.0
        _wait_for(lambda: any(p.temperature == 7.0 and p.controls_changed for p in _steps(run)) or run.done)
        with pytest.raises(ValueError, match="temperature: -1 is invalid"):
            run.set_controls(temperature=-1)
        with pytest.raises(ValueError, match="unknown name"):
            run.set_controls(warmth=2.0)
        assert run.controls.current.temperature == 7.0  # refused: nothing changed
        run.pause()
        assert run.wait_paused(60) and run.status == "paused"
        time.sleep(0.3)  # steps sent before the pause have arrived
        seen = len(_steps(run))
        time.sleep(0.3)
        assert len(_steps(run)) == seen  # paused: no step
        run.resume()
        _wait_for(lambda: len(_steps(run)) > seen or run.done)
        run.stop()
        assert run.join(120) and run.status == "stopped"
        assert run.result.baseline is None and run.result.student.status == "stopped"
    finally:
        run.stop()
        run.join(60)


def test_the_child_gets_its_threads_environment_and_folder_from_now_not_from_the_fork_servers_start(
    tmp_path, monkeypatch
):
    warm = ProcessRun(ChildProbe("threads"), threads=1).start()  # the fork server is up before the change
    assert warm.join(120) and warm.result == 1
    monkeypatch.setenv("WORKBENCH_PROBE", "set later")
    monkeypatch.chdir(tmp_path)
    run = ProcessRun(ChildProbe("env"), threads=2).start()
    assert run.join(120) and run.status == "completed", run.error
    assert run.result[:2] == ("set later", str(tmp_path)) and run.result[2] == run.pid != os.getpid()
    threads = ProcessRun(ChildProbe("threads"), threads=2).start()
    assert threads.join(120) and threads.result == 2


def test_an_error_in_the_child_and_a_killed_child_end_the_run_with_status_error():
    failed = ProcessRun(ChildProbe("raise"), threads=1).start()
    assert failed.join(120) and failed.status == "error"
    assert "probe: failed on purpose" in failed.error and "RuntimeError" in failed.traceback
    run = ProcessRun(ChildProbe("wait"), threads=1).start()
    _wait_for(lambda: run.pid is not None)
    os.kill(run.pid, signal.SIGKILL)
    assert run.join(120) and run.status == "error"
    assert "ended unexpectedly (killed by signal 9" in run.error
    with pytest.raises(ValueError, match="temperature"):  # after the end: checked here, as on a thread
        run.set_controls(temperature=0)


def test_a_stopped_waiting_job_ends_and_stop_before_start_reaches_the_child():
    run = ProcessRun(ChildProbe("wait"), threads=1)
    run.stop()
    run.start()
    assert run.join(120) and run.result == "stopped"


def test_targets_that_cannot_go_to_a_child_train_on_a_thread_and_say_why(monkeypatch):
    cls = type("NotebookTarget", (ChildProbe,), {"__module__": "__main__"})
    monkeypatch.setattr(sys.modules["__main__"], "NotebookTarget", cls, raising=False)
    with pytest.raises(UnpicklableTarget, match="NotebookTarget is defined in __main__"):
        ProcessRun(cls("threads"))
    run = job_run(cls("threads"), "notebook", threads=1)
    assert type(run) is LiveRun and "__main__" in run.reason
    assert run.start().join(60) and run.result == 1
    closure = job_run(lambda live: 3, "closure", threads=1)
    assert type(closure) is LiveRun and "cannot be sent to a child process" in closure.reason
    assert type(job_run(ChildProbe("threads"), "probe", threads=1)) is ProcessRun
    monkeypatch.setenv("WORKBENCH_JOB_PROCESS", "0")
    assert type(job_run(ChildProbe("threads"), "probe", threads=1)) is LiveRun
    monkeypatch.setenv("WORKBENCH_JOB_PROCESS", "yes")
    with pytest.raises(ValueError, match="WORKBENCH_JOB_PROCESS: 'yes' is invalid"):
        job_run(ChildProbe("threads"))


def test_a_registry_stops_and_waits_for_its_process_jobs_on_close():
    reg = JobRegistry()
    job = reg.start(ChildProbe("wait"), "wait", process=True)
    assert isinstance(job.run, ProcessRun)
    _wait_for(lambda: job.run.pid is not None)
    assert reg.close(60) and job.run.status == "stopped" and job.run.result == "stopped"
