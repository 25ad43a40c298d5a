"""Runs on disk: one folder per fit, listed, loaded, compared and removed.

``<root>/<run_id>/`` holds ``config.json``, ``metrics.jsonl`` (one event per line, flushed as it
goes: readable while the run is live), ``status.json`` (a heartbeat, so a run killed with
SIGKILL reads as ``killed``), and at the end ``summary.json`` (written atomically) and the
weights (``model.pt``, a state_dict; ``spec.json`` rebuilds zoo models). The root is the
``root`` argument, else ``$WORKBENCH_RUNS``, else ``./runs``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..engine.events import FitEnd, FitStart, Payload

STALE_SECONDS = 30.0  # a heartbeat older than this means the process is gone
FUTURE_SECONDS = 3600.0  # clocks of hosts sharing a runs folder differ by less than this
FINAL_STATUSES = ("completed", "stopped", "diverged", "error")
STATUSES = (*FINAL_STATUSES, "running", "killed")
# Generated ids are ``<role>-<date>-<time>-<hex>`` or ``<sweep>-<slug>-<hex>`` (slugs keep
# [A-Za-z0-9.-] and turn the rest into '_'): one folder name, safe on every OS and terminal.
RUN_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
RUN_ID_RULE = (
    "one folder name of 1-200 letters, digits, '.', '_' or '-' that does not start with "
    "'.' or '-' (e.g. 'student-20250101-120000-a1b2c3')"
)
# The files a run writes: an export never overwrites them.
RECORD_FILES = ("config.json", "metrics.jsonl", "status.json", "summary.json", "model.pt", "spec.json")
# Summary fields that hold text; every other summary field is a number.
SUMMARY_TEXT = ("run_id", "role", "status", "message", "dataset", "traceback")  # and exported_*


def runs_root(root: str | os.PathLike | None = None) -> Path:
    """The runs folder: ``root``, else ``$WORKBENCH_RUNS``, else ``./runs``."""
    return Path(root or os.environ.get("WORKBENCH_RUNS") or "runs")


def is_run_id(run_id: Any) -> bool:
    """Whether ``run_id`` is a well-formed run id (:data:`RUN_ID_RULE`)."""
    return isinstance(run_id, str) and RUN_ID_RE.fullmatch(run_id) is not None


def check_run_id(run_id: Any) -> str:
    """``run_id`` itself, or a ``ValueError`` saying what a run id may be (so it never leaves the root)."""
    if not is_run_id(run_id):
        raise ValueError(f"run: {run_id!r} is not a valid run id; expected {RUN_ID_RULE}")
    return run_id


def _inside(path: Path, base: Path) -> bool:
    """Whether ``path`` is a real entry directly in ``base``: not a link (which could lead anywhere)."""
    return not path.is_symlink() and path.resolve().parent == base.resolve()


def run_dir(run_id: Any, root: str | os.PathLike | None = None, *, exists: bool = True) -> Path:
    """The folder of ``run_id`` in the runs root: the one gate every store entry point goes through.

    The id must be one folder name (:func:`check_run_id`) and the folder must lie in the root
    itself, not behind a symbolic link; with ``exists`` the run must hold a ``config.json``.
    Anything else is a ``ValueError`` and nothing is read, written or removed.
    """
    check_run_id(run_id)
    base = runs_root(root)
    path = base / run_id
    if (path.exists() or path.is_symlink()) and not _inside(path, base):
        raise ValueError(
            f"run: {run_id!r} in {str(base)!r} is a link, not a real folder in the runs folder; "
            "refused (a link may lead out of the runs folder)"
        )
    if exists and not (path / "config.json").is_file():
        with warnings.catch_warnings():  # odd folders are the listing's to report, not this error's
            warnings.simplefilter("ignore")
            known = list_run_ids(root)
        raise ValueError(f"run: {run_id!r} is not in {str(base)!r}; known runs: {', '.join(known[-10:]) or 'none'}")
    return path


def list_run_ids(root: str | os.PathLike | None = None) -> list[str]:
    """Ids of the run folders in the root, sorted; odd folders (bad names, links out) are skipped with a warning."""
    base = runs_root(root)
    if not base.exists():
        return []
    if not base.is_dir():
        raise ValueError(f"runs: {str(base)!r} is not a folder; expected the runs folder (or a path to create it)")
    ids = []
    for path in sorted(base.iterdir()):
        if not (path / "config.json").is_file():
            continue  # not a run (e.g. the sweeps folder)
        if not is_run_id(path.name):
            warnings.warn(f"{str(base)!r}: skipped {path.name!r}: not a valid run id ({RUN_ID_RULE})", stacklevel=2)
            continue
        if not _inside(path, base):
            warnings.warn(
                f"{str(base)!r}: skipped {path.name!r}: a link, not a real folder in the runs folder", stacklevel=2
            )
            continue
        ids.append(path.name)
    return ids


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


# Words torch uses when its weights-only unpickler meets a class or function it will not import
# (torch 2.4-2.13: "Unsupported global: GLOBAL x", "unsupported GLOBAL posix.system whose module
# posix is blocked", "not an allowed global", "safe_globals"). Any one of them means: refused.
_REFUSAL_MARKERS = ("global", "blocked", "allowlist", "safe_globals", "not allowed")


def _refused_name(message: str) -> str | None:
    """The class or function a weights-only load refused (``'posix.system'``), '' if unnamed, None if not a refusal."""
    low = message.lower()
    if not any(m in low for m in _REFUSAL_MARKERS):
        return None
    found = re.search(r"GLOBAL\s+([\w.]+)", message)
    return found.group(1) if found else ""


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only.

    A file that would import or call anything on load (a crafted pickle) is refused; a missing,
    corrupt or foreign file gets a ``ValueError`` that says which. Nothing in the file runs.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint: {str(path)!r} does not exist (or is not a file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's wording changes between versions: classify, never match one text
        text = str(e)
        name = _refused_name(text) if isinstance(e, (pickle.UnpicklingError, RuntimeError)) else None
        if name is not None:
            what = f" ({name})" if name else ""
            raise ValueError(
                f"checkpoint: {str(path)!r} holds objects other than tensors and plain data{what}; "
                "refused to load it (weights_only=True: loading it could run code)"
            ) from None
        if isinstance(e, pickle.UnpicklingError):
            why = "unpickling failed: not a stream of tensors and plain data"
        else:
            first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
            why = f"{type(e).__name__}{': ' + first[:200] if first else ''}"
        raise ValueError(f"checkpoint: {str(path)!r} is not a readable torch checkpoint ({why})") from None


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

    def __init__(
        self,
        model: nn.Module,
        root: str | os.PathLike | None = None,
        meta: Mapping[str, Any] | None = None,
        heartbeat_every: float = 2.0,
    ):
        self.model, self.root, self.meta = model, runs_root(root), dict(meta or {})
        self.heartbeat_every = heartbeat_every
        self.path: Path | None = None
        self._f = None
        self._state: dict[str, Any] = {}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._lock = threading.Lock()

    def on_fit_start(self, p: FitStart) -> None:
        path = run_dir(p.run_id, self.root, exists=False)  # a bad id is refused before anything is made
        self.root.mkdir(parents=True, exist_ok=True)
        path.mkdir(exist_ok=False)  # run ids are unique: never write over another run
        self.path = path
        spec = getattr(self.model, "spec", None)
        atomic_write_json(
            self.path / "config.json",
            {
                "run_id": p.run_id,
                "role": p.role,
                "dataset": p.dataset,
                "config": dict(p.config),
                "model_spec": spec,
                "created": time.time(),
                "torch": torch.__version__,
                **self.meta,
            },
        )
        self._state = {
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "heartbeat": time.time(),
            "step": 0,
        }
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
        if self._f is None or self._f.closed:  # on_fit_start was refused: there is no run to finish
            return
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


_JSON_KINDS = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _read_json(path: Path) -> tuple[Any, str]:
    """The JSON in ``path`` and '', or None and why it could not be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), ""
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except (ValueError, RecursionError):
        return None, "is not valid JSON"
    except OSError as e:
        return None, f"is unreadable ({e.strerror or e})"


def read_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} if it is missing, and {} with a warning if it is unreadable or not an object."""
    if not path.exists():
        return {}
    obj, why = _read_json(path)
    if not isinstance(obj, dict):
        why = why or f"holds {_JSON_KINDS.get(type(obj), type(obj).__name__)}"
        warnings.warn(f"{str(path)!r} {why}; expected a JSON object; ignored", stacklevel=3)
        return {}
    return obj


def _number(value: Any) -> float | None:
    """``value`` as a finite float if it is a real number (not text, not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return value if math.isfinite(value) else None


def _printable(value: Any) -> Any:
    """Text with control characters escaped (safe to print on a terminal); other values as they are."""
    if isinstance(value, str) and not value.isprintable():
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
    return value


def run_status(path: Path, summary: dict[str, Any] | None = None) -> str:
    """completed / stopped / diverged / error from the summary (read unless given); else running or killed;
    unknown if the files do not say."""
    summary = read_object(path / "summary.json") if summary is None else summary
    if summary:
        status = summary.get("status")
        return status if status in STATUSES else "unknown"
    if not (path / "status.json").exists():
        return "killed"
    state = read_object(path / "status.json")
    if state.get("status") in FINAL_STATUSES:  # the run ended (its summary is missing or damaged)
        return state["status"]
    pid, beat = state.get("pid"), _number(state.get("heartbeat"))
    if beat is None or beat > time.time() + FUTURE_SECONDS:  # a beat from the future would say "running" forever
        if state:
            warnings.warn(
                f"{str(path / 'status.json')!r}: heartbeat is {_brief(state.get('heartbeat'))}, expected "
                "the time of the last beat (seconds since the epoch); status unknown",
                stacklevel=2,
            )
        return "unknown"
    local = state.get("host") == socket.gethostname()
    if local and type(pid) is int and 0 < pid < 2**31 and not _alive(pid):
        return "killed"
    if time.time() - beat > STALE_SECONDS:
        return "killed"
    return "running"


def _metrics_row(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """One line of ``metrics.jsonl`` as a dict, or None and why it cannot be one."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except (ValueError, RecursionError):
        return None, "not JSON"
    if not isinstance(row, dict):
        return None, "not JSON objects"
    terms = row.pop("terms", None)
    for name, v in terms.items() if isinstance(terms, dict) else ():
        row[f"loss_{name}"] = v
    return row, ""


def read_metrics(path: Path):
    """The events of ``metrics.jsonl`` as a DataFrame; lines that are not JSON objects are skipped with a warning."""
    import pandas as pd

    rows, skipped = [], {}
    file = path / "metrics.jsonl"
    lines = file.read_bytes().splitlines() if file.exists() else []
    for i, raw in enumerate(lines):
        row, why = _metrics_row(raw)
        if row is not None:
            rows.append(row)
        elif why == "not JSON" and i == len(lines) - 1:
            warnings.warn(
                f"{str(file)!r}: line {i + 1} is incomplete (the run was cut off while writing); skipped", stacklevel=2
            )
        else:
            skipped.setdefault(why, []).append(i + 1)
    for why, numbers in skipped.items():  # one warning per kind of damage, not one per line
        more = f" (and {len(numbers) - 5} more)" if len(numbers) > 5 else ""
        warnings.warn(
            f"{str(file)!r}: line(s) {', '.join(map(str, numbers[:5]))}{more} are {why}; skipped", stacklevel=2
        )
    if any("event" in row for row in rows):  # the fit_start / fit_end events are in config and summary
        rows = [row for row in rows if isinstance(row.get("event"), str) and row["event"] in ("step", "eval", "epoch")]
    return pd.DataFrame(rows)


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


def _load_model(path: Path) -> tuple[nn.Module | None, dict[str, torch.Tensor] | None]:
    """The run's weights (``model.pt``) and, for zoo models (``spec.json``), the model holding them."""
    from ..models.zoo import build_model_from_spec

    weights = path / "model.pt"
    if not weights.exists():
        return None, None
    state = load_checkpoint(weights)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"checkpoint: {str(weights)!r} holds a {type(state).__name__} that is not a state_dict; "
            "expected a dict of parameter names to tensors (model.state_dict())"
        )
    if not (path / "spec.json").exists():
        return None, state
    spec = read_object(path / "spec.json")
    try:
        model = build_model_from_spec(spec)
    except Exception as e:
        raise ValueError(
            f"spec: {str(path / 'spec.json')!r} does not describe a zoo model ({e}); "
            "expected the model.spec dict the run was trained with"
        ) from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise ValueError(
            f"checkpoint: {str(weights)!r} does not fit the model in spec.json; expected its "
            f"state_dict (the same names and shapes): {detail}"
        ) from None
    return model.eval(), state


def load_run(run_id: str, root: str | os.PathLike | None = None) -> RunRecord:
    """Config, history, summary and model of one run (also of a live or killed one)."""
    path = run_dir(run_id, root)
    model, state = _load_model(path)
    summary = read_object(path / "summary.json")
    return RunRecord(
        run_id,
        path,
        run_status(path, summary),
        read_object(path / "config.json"),
        summary,
        read_metrics(path),
        model,
        state,
    )


def _brief(value: Any) -> str:
    """A short repr for a warning (a hand-edited file may hold megabytes in one field)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _config_fields(file: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """role, dataset, created, teacher_run_id and config.* of a run's config.json; wrong types become None."""
    row: dict[str, Any] = {}
    for key, kind, expected in (
        ("role", str, "text"),
        ("dataset", str, "text"),
        ("created", float, "a number (seconds since the epoch)"),
        ("teacher_run_id", str, "text"),
    ):
        value = cfg.get(key)
        good = _number(value) if kind is float else (value if isinstance(value, str) else None)
        if good is None and value is not None:
            warnings.warn(f"{str(file)!r}: {key} is {_brief(value)}, expected {expected}; ignored", stacklevel=4)
        row[key] = _printable(good)
    inner = cfg.get("config")
    if inner is not None and not isinstance(inner, dict):
        warnings.warn(f"{str(file)!r}: config is {_brief(inner)}, expected an object; ignored", stacklevel=4)
    row.update({f"config.{k}": v for k, v in (inner.items() if isinstance(inner, dict) else ())})
    return row


def _run_row(run: Path) -> dict[str, Any]:
    """One row of :func:`list_runs`; fields of the wrong type are left out with a warning naming the file."""
    cfg, summary = read_object(run / "config.json"), read_object(run / "summary.json")
    fields = _config_fields(run / "config.json", cfg)
    row = {"run_id": run.name, "role": fields.pop("role"), "status": run_status(run, summary), **fields}
    for k, v in summary.items():
        if k in row or isinstance(v, (dict, list)):
            continue
        if isinstance(v, str) and k not in SUMMARY_TEXT and not k.startswith("exported_"):
            warnings.warn(
                f"{str(run / 'summary.json')!r}: {k} is {_brief(v)}, expected a number; ignored", stacklevel=3
            )
            continue
        row[_printable(k)] = _printable(v)
    return row


def list_runs(root: str | os.PathLike | None = None):
    """One row per run, newest first: id, role, status, dataset, created, config.* and summary numbers.

    A run whose files are unreadable or of the wrong shape is still listed, with those fields
    left out and a warning naming the file; folders that are not runs are skipped.
    """
    import pandas as pd

    base = runs_root(root)
    df = pd.DataFrame([_run_row(base / run_id) for run_id in list_run_ids(root)])
    return df.sort_values("created", ascending=False).reset_index(drop=True) if len(df) else df


def remove_run(run_id: str, root: str | os.PathLike | None = None) -> None:
    """Delete a run's folder (refused while it is running)."""
    remove_runs([run_id], root)


def remove_runs(run_ids: Iterable[str], root: str | os.PathLike | None = None) -> list[str]:
    """Delete several runs, all or none: every id is checked (valid, present, not running) before any is removed."""
    paths = {}
    for run_id in run_ids if not isinstance(run_ids, str) else [run_ids]:
        path = run_dir(run_id, root)
        if run_status(path) == "running":
            raise ValueError(f"run: {run_id!r} is still running; stop it first")
        paths[run_id] = path
    for path in paths.values():
        shutil.rmtree(path)
    return list(paths)
