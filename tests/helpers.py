"""Small seeded data and models shared by the engine tests."""

import torch
import torch.nn as nn


def toy_data(n_train=96, n_val=32, n_test=32, features=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_val + n_test
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, classes, generator=g)
    y = (x @ w).argmax(1)
    a, b = n_train, n_train + n_val
    return {"train": (x[:a], y[:a]), "val": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}


def mlp(features=8, hidden=16, classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class Recorder:
    """Records every hook call in order."""

    def __init__(self):
        self.calls = []

    def on_fit_start(self, p):
        self.calls.append(("fit_start", p))

    def on_step_end(self, p):
        self.calls.append(("step", p))

    def on_eval_end(self, p):
        self.calls.append(("eval", p))

    def on_epoch_end(self, p):
        self.calls.append(("epoch", p))

    def on_fit_end(self, p):
        self.calls.append(("fit_end", p))

    def of(self, kind):
        return [p for k, p in self.calls if k == kind]
