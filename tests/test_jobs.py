"""The server-wide job registry behind the web app."""

import time

import pytest
from helpers import mlp, toy_data

from workbench import DistillConfig
from workbench.ui.jobs import JobRegistry, TooManyJobs


def long_job(live):
    return live.distiller(None, mlp(), toy_data(), DistillConfig(epochs=100_000)).fit()


def short_job(live):
    return live.distiller(None, mlp(), toy_data(), DistillConfig(epochs=1)).fit()


@pytest.fixture
def registries():
    """Makes registries; each is closed after the test (its jobs and cleanup thread stopped and joined)."""
    made = []

    def make(**kwargs):
        made.append(JobRegistry(**kwargs))
        return made[-1]

    yield make
    assert all(reg.close(60) for reg in made), "a job or a cleanup thread did not end"


def test_start_get_and_the_cap(registries):
    reg = registries(max_running=2)
    a = reg.start(long_job, "a", note=1)
    b = reg.start(long_job, "b")
    with pytest.raises(TooManyJobs, match="running 2 jobs, its limit"):
        reg.start(long_job, "c")
    assert reg.get(a.job_id) is a and a.context == {"note": 1}
    assert reg.get("unknown") is None and reg.get(None) is None
    a.run.stop()
    assert a.run.join(120)
    c = reg.start(short_job, "c")  # a slot is free again
    assert c.run.join(30) and c.run.status == "completed"
    b.run.stop()
    b.run.join(120)


def test_cleanup_drops_finished_and_abandoned_jobs(registries):
    reg = registries(max_running=4, keep_finished=10, abandon_after=5)
    done = reg.start(short_job)
    done.run.join(30)
    reg.get(done.job_id)  # seen after it finished
    live = reg.start(long_job)
    now = time.time()
    assert reg.cleanup(now) == []
    assert reg.cleanup(now + 6) == [live.job_id]  # nobody looked at it: stopped and dropped
    assert live.run.join(120) and live.run.status == "stopped"
    assert reg.cleanup(now + 11) == [done.job_id]
    assert reg.get(done.job_id) is None


def test_abandoned_jobs_are_stopped_even_when_nobody_starts_another(registries):
    reg = registries(max_running=4, abandon_after=0.5)
    live = reg.start(long_job)  # its page closes at once: nobody calls get() or start() again
    assert live.run.join(120) and live.run.status == "stopped"
    t0 = time.time()
    while reg.running() or live.job_id in reg._jobs:
        assert time.time() - t0 < 120, "the stopped job was not dropped"
        time.sleep(0.05)


def test_get_takes_any_url_text_and_only_ids_find_jobs(registries):
    reg = registries(max_running=1)
    job = reg.start(short_job)
    for junk in (["a"], {"a": 1}, 123, b"id", "", None, "x" * 10_000, "../" + job.job_id):
        assert reg.get(junk) is None
    assert reg.get(job.job_id) is job
    assert job.run.join(30)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"max_running": 0}, "max_running: 0 is invalid; expected a whole number >= 1"),
        ({"max_running": -2}, "max_running: -2 is invalid"),
        ({"max_running": True}, "max_running: True is invalid"),
        ({"max_running": 2.5}, "max_running: 2.5 is invalid"),
        ({"keep_finished": -1}, "keep_finished: -1 is invalid; expected a number of seconds > 0"),
        ({"abandon_after": float("nan")}, "abandon_after: nan is invalid"),
        ({"abandon_after": "600"}, "abandon_after: '600' is invalid"),
    ],
)
def test_bad_limits_are_named(kwargs, message):
    with pytest.raises(ValueError) as e:
        JobRegistry(**kwargs)
    assert message in str(e.value)


def test_a_bad_max_jobs_variable_is_named(monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "lots")
    with pytest.raises(ValueError, match="WORKBENCH_MAX_JOBS: 'lots' is invalid; expected a whole number >= 1"):
        JobRegistry()
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "0")
    with pytest.raises(ValueError, match="WORKBENCH_MAX_JOBS: 0 is invalid"):
        JobRegistry()
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", " 3 ")
    assert JobRegistry().max_running == 3


def test_close_stops_and_joins_every_job_and_the_cleanup_thread():
    reg = JobRegistry(max_running=2)
    a, b = reg.start(long_job), reg.start(long_job)
    reaper = reg._reaper
    assert reg.close(60)
    assert a.run.status == b.run.status == "stopped" and not reaper.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        reg.start(short_job)
