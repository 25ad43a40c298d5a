"""Runs on disk: one folder per fit, listed, loaded, compared and removed.

``<root>/<run_id>/`` holds ``config.json``, ``metrics.jsonl`` (one event per line, flushed as it
goes: readable while the run is live), ``status.json`` (a heartbeat, so a run killed with
SIGKILL reads as ``killed``), and at the end ``summary.json`` (written atomically) and the
weights (``model.pt``, a state_dict; ``spec.json`` rebuilds zoo models). The root is the
``root`` argument, else ``$WORKBENCH_RUNS``, else ``./runs``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import tempfile
import threading
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .events import FitEnd, FitStart, Payload

STALE_SECONDS = 30.0  # a heartbeat older than this means the process is gone


def runs_root(root: str | os.PathLike | None = None) -> Path:
    """The runs folder: ``root``, else ``$WORKBENCH_RUNS``, else ``./runs``."""
    return Path(root or os.environ.get("WORKBENCH_RUNS") or "runs")


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=str)
    os.replace(tmp, path)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` via a temp file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only.

    A file that would run code on load (a crafted pickle) is refused; a missing, corrupt or
    foreign file gets a ``ValueError`` that says which.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint: {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln), None)
        if detail is None:  # not a pickle stream torch understands: junk or a foreign format
            raise ValueError(f"checkpoint: {str(path)!r} is not a readable torch checkpoint "
                             "(unpickling failed)") from None
        raise ValueError(f"checkpoint: {str(path)!r} holds objects other than tensors and plain data; "
                         f"refused to load it (weights_only=True): {detail}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"checkpoint: {str(path)!r} is not a readable torch checkpoint "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunRecorder:
    """A callback that writes one fit to ``<root>/<run_id>/`` as it goes.

    ``model`` is the module being trained (its weights are saved at the end); ``meta`` adds
    fields to config.json (e.g. the data spec, the teacher's run id).
    """

    def __init__(self, model: nn.Module, root: str | os.PathLike | None = None,
                 meta: Mapping[str, Any] | None = None, heartbeat_every: float = 2.0):
        self.model, self.root, self.meta = model, runs_root(root), dict(meta or {})
        self.heartbeat_every = heartbeat_every
        self.path: Path | None = None
        self._f = None
        self._state: dict[str, Any] = {}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._lock = threading.Lock()

    def on_fit_start(self, p: FitStart) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / p.run_id
        self.path.mkdir(exist_ok=False)  # run ids are unique: never write over another run
        spec = getattr(self.model, "spec", None)
        atomic_write_json(self.path / "config.json", {
            "run_id": p.run_id, "role": p.role, "dataset": p.dataset, "config": dict(p.config),
            "model_spec": spec, "created": time.time(), "torch": torch.__version__, **self.meta})
        self._state = {"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.time(), "heartbeat": time.time(), "step": 0}
        atomic_write_json(self.path / "status.json", self._state)
        self._f = open(self.path / "metrics.jsonl", "a", encoding="utf-8")
        self._write(p)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="workbench-heartbeat", daemon=True)
        self._beat.start()

    def _write(self, p: Payload) -> None:
        with self._lock:
            self._f.write(json.dumps(p.to_dict()) + "\n")
            self._f.flush()
            self._state["step"] = getattr(p, "step", self._state.get("step", 0))

    def on_step_end(self, p: Payload) -> None:
        self._write(p)

    on_eval_end = on_epoch_end = on_step_end

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_every):
            with self._lock:
                self._state["heartbeat"] = time.time()
                atomic_write_json(self.path / "status.json", self._state)

    def on_fit_end(self, p: FitEnd) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        self._write(p)
        self._f.close()
        if p.step > 0 and p.status != "diverged":
            atomic_save(self.model.state_dict(), self.path / "model.pt")
        spec = getattr(self.model, "spec", None)
        if spec is not None:
            atomic_write_json(self.path / "spec.json", spec)
        summary = {k: v for k, v in p.to_dict().items() if k not in ("event", "best", "final")}
        summary.update({f"best_{k}": v for k, v in dict(p.best).items()})
        summary.update(dict(p.final))
        summary["params"] = sum(t.numel() for t in self.model.parameters())
        atomic_write_json(self.path / "summary.json", summary)
        self._state.update(status=p.status, heartbeat=time.time(), ended=time.time())
        atomic_write_json(self.path / "status.json", self._state)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_status(path: Path) -> str:
    """completed / stopped / diverged / error from the summary; else running or killed."""
    summary = _read_json(path / "summary.json")
    if summary is not None:
        return summary.get("status", "unknown")
    state = _read_json(path / "status.json")
    if state is None:
        return "killed"
    if state.get("host") == socket.gethostname() and not _alive(int(state.get("pid", -1))):
        return "killed"
    if time.time() - float(state.get("heartbeat", 0)) > STALE_SECONDS:
        return "killed"
    return "running"


def read_metrics(path: Path):
    """The events of ``metrics.jsonl`` as a DataFrame; a truncated last line is skipped with a warning."""
    import pandas as pd

    rows = []
    file = path / "metrics.jsonl"
    lines = file.read_text(encoding="utf-8").splitlines() if file.exists() else []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            warnings.warn(f"{file}: line {i + 1} is incomplete (the run was cut off while writing); skipped",
                          stacklevel=2)
            continue
        for name, v in (row.pop("terms", None) or {}).items():
            row[f"loss_{name}"] = v
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df) and "event" in df:
        df = df[df.event.isin(["step", "eval", "epoch"])].reset_index(drop=True)
    return df


@dataclass
class RunRecord:
    """A run read back from disk."""

    run_id: str
    path: Path
    status: str
    config: dict[str, Any]
    summary: dict[str, Any]
    history: Any  # pandas DataFrame
    model: nn.Module | None  # rebuilt from spec.json + model.pt (zoo models), else None
    state_dict: dict[str, torch.Tensor] | None


def _run_dir(run_id: str, root: str | os.PathLike | None) -> Path:
    path = runs_root(root) / run_id
    if not (path / "config.json").exists():
        known = [p.name for p in sorted(runs_root(root).glob("*")) if (p / "config.json").exists()]
        raise ValueError(f"run: {run_id!r} is not in {str(runs_root(root))!r}; "
                         f"known runs: {', '.join(known[-10:]) or 'none'}")
    return path


def load_run(run_id: str, root: str | os.PathLike | None = None) -> RunRecord:
    """Config, history, summary and model of one run (also of a live or killed one)."""
    from .models import build_model_from_spec

    path = _run_dir(run_id, root)
    config = _read_json(path / "config.json") or {}
    state = load_checkpoint(path / "model.pt") if (path / "model.pt").exists() else None
    model = None
    spec = _read_json(path / "spec.json")
    if state is not None and spec is not None:
        model = build_model_from_spec(spec)
        model.load_state_dict(state)
        model.eval()
    return RunRecord(run_id, path, run_status(path), config, _read_json(path / "summary.json") or {},
                     read_metrics(path), model, state)


def list_runs(root: str | os.PathLike | None = None):
    """One row per run, newest first: id, role, status, dataset, created, config.* and summary numbers."""
    import pandas as pd

    rows = []
    base = runs_root(root)
    for path in base.glob("*/config.json"):
        run = path.parent
        cfg = _read_json(path) or {}
        row = {"run_id": run.name, "role": cfg.get("role"), "status": run_status(run),
               "dataset": cfg.get("dataset"), "created": cfg.get("created"),
               "teacher_run_id": cfg.get("teacher_run_id")}
        row.update({f"config.{k}": v for k, v in (cfg.get("config") or {}).items()})
        summary = _read_json(run / "summary.json") or {}
        row.update({k: v for k, v in summary.items() if k not in row and not isinstance(v, (dict, list))})
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.sort_values("created", ascending=False).reset_index(drop=True) if len(df) else df


def remove_run(run_id: str, root: str | os.PathLike | None = None) -> None:
    """Delete a run's folder (refused while it is running)."""
    path = _run_dir(run_id, root)
    if run_status(path) == "running":
        raise ValueError(f"run: {run_id!r} is still running; stop it first")
    shutil.rmtree(path)
