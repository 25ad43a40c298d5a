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
