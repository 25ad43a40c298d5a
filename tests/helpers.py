"""Small seeded data and models shared by the engine tests."""

import base64
import json

import numpy as np
import torch
import torch.nn as nn


def plotly_spec(text: str) -> dict:
    """A plotly JSON spec (e.g. a Streamlit chart's ``proto.spec``) with its typed arrays
    (``{"dtype", "bdata"}``: how plotly sends numpy arrays) decoded to lists, as plotly.js reads them."""

    def decode(v):
        if isinstance(v, dict):
            if {"dtype", "bdata"} <= set(v):
                a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
                return a.reshape(v["shape"]).tolist() if "shape" in v else a.tolist()
            return {k: decode(x) for k, x in v.items()}
        if isinstance(v, list):
            return [decode(x) for x in v]
        return v

    return decode(json.loads(text))


def widget_message(data: dict, buffers=None) -> dict:
    """A widget's comm message with its binary buffers put back and the numpy arrays in it (plotly's
    ``{"dtype", "shape", "value"}``) turned into lists, as the browser's model reads them."""
    import copy

    data = copy.deepcopy(data)
    state = data.get("state", {})
    for path, buffer in zip(data.get("buffer_paths", ()), buffers or ()):
        obj = state
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = buffer

    def decode(v):
        if isinstance(v, dict):
            if {"dtype", "shape"} <= set(v) and ("buffer" in v or "value" in v):
                raw = bytes(v["buffer"] if "buffer" in v else v["value"])
                return np.frombuffer(raw, dtype=v["dtype"]).reshape(v["shape"]).tolist()
            return {k: decode(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [decode(x) for x in v]
        return v

    return decode(data)


def as_list(values) -> list:
    """A plotly trace's x or y as a list: plotly keeps a numpy array as given, a list as a tuple, unset as None."""
    if values is None:
        return []
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


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


class SlowSteps:
    """A callback that slows each reported step (picklable: it can go into a child process)."""

    def __init__(self, seconds=0.01):
        self.seconds = seconds

    def on_step_end(self, p):
        import time

        time.sleep(self.seconds)


class ChildProbe:
    """A job target that reports what it finds where it runs (for ProcessRun tests)."""

    def __init__(self, what):
        self.what = what

    def __call__(self, live):
        import os
        import time

        if self.what == "threads":
            return torch.get_num_threads()
        if self.what == "env":
            return os.environ.get("WORKBENCH_PROBE"), os.getcwd(), os.getpid()
        if self.what == "raise":
            raise RuntimeError("probe: failed on purpose")
        if self.what == "wait":  # until stopped (or killed)
            while not live.stopped:
                time.sleep(0.01)
            return "stopped"
        raise ValueError(self.what)
