import random

import numpy as np
import pytest
import torch


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
