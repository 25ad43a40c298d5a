import os
import random

import numpy as np
import pytest
import torch


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist (``make test`` runs two workers), each worker and what it starts (servers,
    kernels, torchrun) gets its share of the cores: two workers with two torch threads each on two
    cores ran a statistical test 7x slower (186 s vs 26 s) than the suite on one worker."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_the_cores_between_workers()


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same RNG state (CPU runs must be deterministic)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _tmp_roots(tmp_path, monkeypatch):
    """Runs and caches of a test go to its own temporary folder."""
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _no_live_run_outlives_its_test():
    """A test that leaves a live run going gets it stopped and joined here (and fails)."""
    yield
    import sys

    live = sys.modules.get("workbench.engine.live")
    if live is None:
        return
    left = live.stop_all(timeout=120)
    assert not left, f"the test left {len(left)} live run(s) going: {[r.name for r in left]}"
