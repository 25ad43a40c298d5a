"""The server-wide job registry behind the web app."""

import time

import pytest

from helpers import mlp, toy_data
from workbench import DistillConfig
from workbench.jobs import JobRegistry, TooManyJobs


def long_job(live):
    return live.distiller(None, mlp(), toy_data(), DistillConfig(epochs=100_000)).fit()


def short_job(live):
    return live.distiller(None, mlp(), toy_data(), DistillConfig(epochs=1)).fit()


def test_start_get_and_the_cap():
    reg = JobRegistry(max_running=2)
    a = reg.start(long_job, "a", note=1)
    b = reg.start(long_job, "b")
    with pytest.raises(TooManyJobs, match="running 2 jobs, its limit"):
        reg.start(long_job, "c")
    assert reg.get(a.job_id) is a and a.context == {"note": 1}
    assert reg.get("unknown") is None and reg.get(None) is None
    a.run.stop()
    assert a.run.join(10)
    c = reg.start(short_job, "c")  # a slot is free again
    assert c.run.join(30) and c.run.status == "completed"
    b.run.stop()
    b.run.join(10)


def test_cleanup_drops_finished_and_abandoned_jobs():
    reg = JobRegistry(max_running=4, keep_finished=10, abandon_after=5)
    done = reg.start(short_job)
    done.run.join(30)
    reg.get(done.job_id)  # seen after it finished
    live = reg.start(long_job)
    now = time.time()
    assert reg.cleanup(now) == []
    assert reg.cleanup(now + 6) == [live.job_id]  # nobody looked at it: stopped and dropped
    assert live.run.join(10) and live.run.status == "stopped"
    assert reg.cleanup(now + 11) == [done.job_id]
    assert reg.get(done.job_id) is None


def test_abandoned_jobs_are_stopped_even_when_nobody_starts_another():
    reg = JobRegistry(max_running=4, abandon_after=0.5)
    live = reg.start(long_job)  # its page closes at once: nobody calls get() or start() again
    assert reg.reap_every == 1.0
    assert live.run.join(10) and live.run.status == "stopped"
    t0 = time.time()
    while reg.running() or live.job_id in reg._jobs:
        assert time.time() - t0 < 5, "the stopped job was not dropped"
        time.sleep(0.05)

