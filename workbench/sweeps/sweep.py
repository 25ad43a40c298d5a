"""Sweeps: student sizes x methods x seeds (x temperatures) sharing one teacher -> a tidy DataFrame.

"How small can my student be, and what does distillation buy at each size?" The teacher is trained
(or loaded from the teacher cache) once, in the parent. Each cell -- (student, method, seed,
temperature) -- is one fit, run by :func:`run_cell` in worker processes (forkserver, else spawn) with one torch
thread each, or in-process (``workers=1``, same thread count). A cell is seeded from its seed alone,
so serial and parallel sweeps give the same numbers. Rows are appended to
``<runs>/sweeps/<name>.csv`` as cells finish; the same sweep started again skips the cells saved
there. The analysis (``summarize``, ``paired_gain``, ...) lives in :mod:`workbench.sweeps.stats`
and is re-exported here.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import pickle
import re
import secrets
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..data.datasets import load_dataset
from ..data.splits import DataSplits, Split, as_splits
from ..engine.config import DEFAULT_W_KD, DistillConfig
from ..engine.distiller import Distiller
from ..engine.evaluation import predict_logits
from ..engine.hints import find_module
from ..engine.process_run import PRELOAD
from ..experiment import Experiment, make_model
from ..models.zoo import build_model_from_spec, count_macs, count_params, measure_latency
from ..store.cache import OutputCache, TeacherCache, digest, tensor_digest
from ..store.runs import RunRecorder, atomic_write_json, is_run_id, load_run, runs_root
from .stats import best_temperature, nondominated, paired_gain, pareto_front, summarize, t_quantile  # re-exported

if TYPE_CHECKING:  # pandas is imported where used: workers never load it (0.25 s each)
    import pandas as pd

__all__ = [
    "Method",
    "Sweep",
    "run_cell",
    "summarize",
    "paired_gain",
    "pareto_front",
    "nondominated",
    "best_temperature",
    "t_quantile",
    "run_histories",
    "COLUMNS",
]

COLUMNS = (
    "student",
    "method",
    "seed",
    "temperature",
    "params",
    "macs",
    "latency_ms",
    "val_acc",
    "test_acc",
    "test_agreement",
    "seconds",
    "status",
    "message",
    "run_id",
    "val_bpc",  # token data (bits per character); last, so a results file written before them still reads
    "test_bpc",
)
KEY = ("student", "method", "seed", "temperature")
_NO_HINTS = {"w_hint": 0.0, "hint_student": None, "hint_teacher": None}
# Built-in methods as DistillConfig overrides ("kd" and "hints" take the base config's CE/KD weights).
BUILTINS: dict[str, dict[str, Any]] = {
    "scratch": {"w_ce": 1.0, "w_kd": 0.0, "w_mse": 0.0, "mixup_alpha": 0.0, **_NO_HINTS},
    "kd": {"w_mse": 0.0, **_NO_HINTS},
    "mse": {"w_ce": 0.5, "w_kd": 0.0, "w_mse": 1.0, **_NO_HINTS},
    "hints": {"w_mse": 0.0, "w_hint": 1.0},
}


@dataclass(frozen=True)
class Method:
    """A named way to train a student: DistillConfig overrides, with or without the teacher."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    teacher: bool = True

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | Method, base: DistillConfig) -> Method:
        """A built-in name, a ``{"name": ..., **overrides}`` dict (``"teacher": False``: none) or a Method."""
        if isinstance(spec, Method):
            return spec
        spec = {"name": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ValueError(
                f"methods: {spec!r} is invalid; expected one of {', '.join(BUILTINS)} or a "
                "dict like {'name': 'my-kd', 'w_kd': 1.0, 'w_ce': 0.0}"
            )
        name, user = spec["name"], {k: v for k, v in spec.items() if k not in ("name", "teacher")}
        if name == "hints" and not user.get("hint_student"):
            raise ValueError(
                "methods: 'hints' needs the layers to match, e.g. {'name': 'hints', "
                "'hint_student': 'hidden.0', 'hint_teacher': 'features.2'}"
            )
        merged = dict(BUILTINS.get(name, {}))
        if name in ("kd", "hints"):
            merged.update(w_ce=base.w_ce, w_kd=base.w_kd or DEFAULT_W_KD)
        if "alpha" in user:  # the user's alpha sets both weights
            merged = {k: v for k, v in merged.items() if k not in ("w_ce", "w_kd")}
        method = cls(name, {**merged, **user}, bool(spec.get("teacher", name != "scratch")))
        method.config(base, 0, None)  # a bad override fails here, before any training
        return method

    def config(self, base: DistillConfig, seed: int, temperature: float | None) -> DistillConfig:
        """The config of one cell of this method (``temperature=None`` keeps the method's own)."""
        changes = dict(self.overrides, seed=seed)
        if temperature is not None:
            changes["temperature"] = temperature
        try:
            return base.replace(**changes)
        except ValueError as e:
            raise ValueError(f"methods[{self.name!r}]: {e}") from None

    def uses_temperature(self, base: DistillConfig) -> bool:
        """True when the loss has a KD term (the only one that depends on T)."""
        return self.teacher and self.config(base, 0, None).w_kd > 0


# -- one cell ------------------------------------------------------------------------------------
class _Context:
    """What the cells of one process share: the data, the teacher, its predictions on test."""

    def __init__(self, data: DataSplits, teacher: nn.Module, key: str | None, cache_dir: Any):
        self.data, self.teacher, self.teacher_key = data, teacher.eval(), key
        self.outputs = OutputCache(cache_dir) if key else None  # teacher logits, shared across cells
        self.teacher_test = predict_logits(teacher, data.test.x).argmax(-1) if isinstance(data.test, Split) else None


_CONTEXT: _Context | None = None  # set in each worker process by _init_worker
_ACTIVE: set[str] = set()  # sweep files being written by this process (two app sessions, one sweep)
_ACTIVE_LOCK = threading.Lock()


def _pool_context():
    """forkserver where the platform has one, else spawn. The fork server imports torch and this
    module once per process; every later sweep's workers are forked from it in a fraction of a
    second instead of importing torch again (~1.2 s each under spawn). Neither forks a parent
    that may hold threads (the app's, a notebook's)."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = get_context("forkserver")
        # read when the server starts (one per process, shared with the UIs' jobs: theirs too)
        ctx.set_forkserver_preload(["workbench.sweeps.sweep", *PRELOAD])
        return ctx
    return get_context("spawn")


def _init_worker(data: DataSplits, teacher: Mapping[str, Any], threads: int, env: Mapping[str, str]) -> None:
    """Worker initializer: the parent's environment (a forked server's may be older: cache and runs
    folders come from it), the torch threads, and the teacher (loaded, never trained)."""
    global _CONTEXT
    os.environ.clear()
    os.environ.update(env)
    torch.set_num_threads(threads)
    if "module" in teacher:
        model = teacher["module"]
    else:
        model = build_model_from_spec(teacher["spec"])
        if "state" in teacher:
            model.load_state_dict(teacher["state"])
        elif TeacherCache(teacher["cache_dir"]).load(teacher["key"], model) is None:
            raise RuntimeError(f"teacher: key {teacher['key']} is missing from the teacher cache")
    _CONTEXT = _Context(data, model, teacher.get("key"), teacher.get("cache_dir"))


def run_cell(cell: Mapping[str, Any]) -> dict[str, Any]:
    """Fit one cell in a worker process (after :func:`_init_worker`); returns its row."""
    return _fit_cell(_CONTEXT, cell)


def _fit_cell(ctx: _Context, cell: Mapping[str, Any]) -> dict[str, Any]:
    row = {k: cell[k] for k in (*KEY, "run_id")}
    try:
        student = make_model(cell["student"], ctx.data, "student", cell["seed"])  # same init for every method
        teacher = ctx.teacher if cell["teacher"] else None
        meta = {"sweep": cell["sweep"], "data_spec": dict(ctx.data.spec)}
        cbs = [RunRecorder(student, cell["runs"], meta=meta)] if cell["record"] else []
        res = Distiller(
            teacher,
            student,
            ctx.data,
            cell["config"],
            cbs,
            role="student" if teacher else "baseline",
            run_id=cell["run_id"],
            teacher_key=ctx.teacher_key if teacher else None,
            output_cache=ctx.outputs if teacher else None,
        ).fit()
        agree = None
        if ctx.teacher_test is not None and res.status == "completed":  # for scratch students too
            agree = (predict_logits(student, ctx.data.test.x).argmax(-1) == ctx.teacher_test).float().mean().item()
        s = res.summary
        row.update(
            val_acc=s.get("val_acc"),
            test_acc=s.get("test_acc"),
            test_agreement=agree,
            val_bpc=s.get("val_bpc"),
            test_bpc=s.get("test_bpc"),
            seconds=s.get("seconds"),
            status=res.status,
            message=res.message,
        )
    except Exception as e:  # a bad cell is a row with status "error", not a dead sweep
        row.update(status="error", message=f"{type(e).__name__}: {e}")
    return row


def _key(row: Mapping[str, Any]) -> tuple:
    t = row.get("temperature")
    t = None if t is None or t != t else round(float(t), 6)  # NaN (read from CSV) is "no temperature"
    return str(row["student"]), str(row["method"]), int(row["seed"]), t


class _StopFlag:
    """A callback that asks the teacher's fit to stop once the sweep is stopped."""

    stop_reason = "the sweep was stopped"

    def __init__(self, event: threading.Event):
        self.event = event

    @property
    def should_stop(self) -> bool:
        return self.event.is_set()

    def on_fit_end(self, p: Any) -> None:
        pass


# -- the sweep -----------------------------------------------------------------------------------
class Sweep:
    """Students x methods x seeds (x temperatures) distilled from one teacher; see the module doc.

    ``data``: a dataset name, a ``load_dataset`` spec dict, or anything ``as_splits`` takes.
    ``teacher``: a zoo spec (trained once, or loaded from the cache) or a trained module.
    ``methods``: built-in names (scratch, kd, mse, hints) or ``{"name": ..., **config overrides}``.
    ``workers``: processes (default: the CPU count; 0 or 1 runs in-process); ``threads``: torch
    threads per cell (the in-process path sets them too, for the duration of the run). ``name``:
    the saved file (default: a hash of data, teacher, config and methods: the same sweep resumes).
    ``record``: also write each fit to the runs folder (its ``run_id``); ``save``: write the CSV.
    """

    def __init__(
        self,
        data: Any,
        teacher: Any,
        students: Sequence[str],
        methods: Iterable[Any] = ("scratch", "kd"),
        seeds: int | Sequence[int] = 3,
        temperatures: Sequence[float] | None = None,
        config: DistillConfig | None = None,
        teacher_config: DistillConfig | None = None,
        workers: int | None = None,
        threads: int = 1,
        name: str | None = None,
        runs: Any = None,
        save: bool = True,
        record: bool = True,
        cache_dir: Any = None,
    ):
        if isinstance(data, str):
            data = load_dataset(data)
        elif isinstance(data, Mapping) and "name" in data and "train" not in data:
            data = load_dataset(**data)
        self.data, self.config = as_splits(data), config or DistillConfig()
        if isinstance(students, str) or not students:
            raise ValueError(f"students: {students!r} is invalid; expected a list of specs like ['mlp:8', 'mlp:32']")
        self.students = [str(s) for s in students]
        with torch.random.fork_rng(devices=[]):  # a bad spec fails here, before any training
            models = [make_model(s, self.data, "students", 0) for s in self.students]
        self.seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        if not self.seeds or min(self.seeds) < 0 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: {seeds!r} is invalid; expected a count >= 1 or distinct integers >= 0")
        self.temperatures = None if temperatures is None else [float(t) for t in temperatures]
        if self.temperatures is not None and (not self.temperatures or min(self.temperatures) <= 0):
            raise ValueError(f"temperatures: {temperatures!r} is invalid; expected numbers > 0 or None")
        self.methods = [Method.parse(m, self.config) for m in methods]
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"methods: names {names} must be distinct and at least one")
        self._stop = threading.Event()
        self.experiment = Experiment(
            self.data,
            teacher,
            self.students[0],
            self.config,
            teacher_config,
            baseline=False,
            callbacks=[_StopFlag(self._stop)],
            runs=(runs or True) if record else None,
            cache_dir=cache_dir,
        )
        for m in self.methods:  # hinted layers must exist in the teacher and in every student
            cfg = m.config(self.config, 0, None)
            if m.teacher and cfg.hint_student is not None:
                find_module(self.experiment.teacher, cfg.hint_teacher, "hint_teacher")
                for model in models:
                    find_module(model, cfg.hint_student, "hint_student")
        self.workers = (os.cpu_count() or 1) if workers is None else int(workers)
        self.threads, self.runs, self.save, self.record, self.cache_dir = threads, runs, save, record, cache_dir
        teacher_id = self.experiment.teacher_key or digest(
            [tensor_digest(v) for v in self.experiment.teacher.state_dict().values()]
        )
        self.meta = {
            "data": _data_id(self.data),
            "teacher": teacher_id,
            "config": self.config.to_dict(),
            "methods": {m.name: [dict(m.overrides), m.teacher] for m in self.methods},
        }
        if name is not None and not (is_run_id(name) and len(name) <= 120):
            raise ValueError(
                f"name: {name!r} is not a valid sweep name; expected 1-120 letters, digits, '.', '_' "
                "or '-', not starting with '.' or '-' (it names the sweep's file and its run ids)"
            )
        stem = re.sub(r"[^A-Za-z0-9.-]+", "_", str(self.data.name)).strip("._-")[:100] or "data"
        self.name = name or f"{stem}-{digest(self.meta)[:8]}"
        self.path = runs_root(runs) / "sweeps" / f"{self.name}.csv"
        self.teacher_summary: dict[str, Any] = {}
        self.sizes: dict[str, dict[str, float]] = {}
        self.stopped = False
        self.results: pd.DataFrame | None = None

    @property
    def cells(self) -> list[dict[str, Any]]:
        """Every cell as a plain, picklable dict (the argument of :func:`run_cell`; fresh run ids)."""
        out = []
        for student in self.students:
            for m in self.methods:
                own = m.config(self.config, 0, None).temperature
                temps = (self.temperatures or [own]) if m.uses_temperature(self.config) else [None]
                for t in temps:
                    for seed in self.seeds:
                        label = f"{student}-{m.name}-s{seed}" + (f"-T{t:g}" if t else "")
                        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", label)  # a folder name on every OS
                        out.append(
                            {
                                "student": student,
                                "method": m.name,
                                "seed": seed,
                                "temperature": t,
                                "teacher": m.teacher,
                                "config": m.config(self.config, seed, t).to_dict(),
                                "run_id": f"{self.name}-{slug}-{secrets.token_hex(3)}",
                                "sweep": self.name,
                                "record": self.record,
                                "runs": None if self.runs is None else str(self.runs),
                            }
                        )
        return out

    def stop(self) -> None:
        """End the sweep after the cells now running (or the teacher's epoch); callable from any thread."""
        self._stop.set()

    def run(self, on_progress: Callable[[dict[str, Any]], None] | None = None) -> pd.DataFrame:
        """Run the cells not saved yet; ``on_progress({"done", "total", "skipped", "row"})`` after each."""
        key = str(self.path) if self.save else secrets.token_hex(8)  # unsaved sweeps never clash
        with _ACTIVE_LOCK:
            if key in _ACTIVE:
                raise ValueError(
                    f"name: sweep {self.name!r} is already running in this process; wait for it or pass another name"
                )
            _ACTIVE.add(key)
        try:
            return self._run(on_progress)
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(key)

    def _run(self, on_progress: Callable[[dict[str, Any]], None] | None) -> pd.DataFrame:
        self._stop.clear()
        res = self.experiment.prepare_teacher()
        teacher_stopped = res is not None and res.status == "stopped"
        if res is not None and res.status not in ("completed", "stopped"):
            raise RuntimeError(f"teacher: training ended with status {res.status}: {res.message}")
        self.teacher_summary = dict(res.summary) if res is not None else {}
        rows = self._load_saved()
        saved = {_key(r) for r in rows}
        cells = (
            []
            if teacher_stopped
            else sorted(
                (c for c in self.cells if _key(c) not in saved), key=lambda c: -self._size(c["student"])["macs"]
            )
        )  # biggest first: the last wave is short
        skipped, done = len(self.cells) - len(cells), 0

        def emit(row: dict[str, Any]) -> None:
            nonlocal done
            row.update(self._size(row["student"]))
            self._append(row)
            rows.append(row)
            done += 1
            if on_progress is not None:
                on_progress({"done": done, "total": len(cells), "skipped": skipped, "row": dict(row)})

        workers = min(self.workers, len(cells))
        if workers > 1 and self._parallel_ok():
            self._run_pool(cells, emit, workers)
        else:
            self._run_serial(cells, emit)
        self.stopped = self._stop.is_set() and (teacher_stopped or done < len(cells))
        mine = {_key(c) for c in self.cells}  # the file may hold other cells (e.g. more seeds)
        self.results = _frame(r for r in rows if _key(r) in mine)
        return self.results

    def _run_serial(self, cells: list[dict], emit: Callable) -> None:
        ctx = _Context(self.data, self.experiment.teacher, self._cached_key(), self.cache_dir)
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # as in the workers: the same numbers either way
        try:
            for cell in cells:
                if self._stop.is_set():
                    break
                emit(_fit_cell(ctx, cell))
        finally:
            torch.set_num_threads(before)

    def _run_pool(self, cells: list[dict], emit: Callable, workers: int) -> None:
        # The splits travel as tensors: rebuilding MNIST-1D from its spec took 2.3 s per worker.
        args = (self.data, self._teacher_payload(), self.threads, dict(os.environ))
        todo, running, broken = iter(cells), set(), None
        with ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_init_worker, initargs=args) as pool:
            while True:  # at most `workers` cells in flight: stop() leaves nothing queued
                while len(running) < workers and not self._stop.is_set() and broken is None:
                    cell = next(todo, None)
                    if cell is None:
                        break
                    running.add(pool.submit(run_cell, cell))
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    if f.exception() is not None:  # cells catch their own errors: the pool itself broke
                        broken = broken or f.exception()
                    else:
                        emit(f.result())
        if broken is not None:
            raise RuntimeError(
                f"workers: the process pool failed ({type(broken).__name__}: {broken}); finished "
                "cells are saved. A script must start the sweep under `if __name__ == "
                "'__main__':` (worker processes import it), or pass workers=1"
            ) from broken

    def _size(self, student: str) -> dict[str, float]:
        if student not in self.sizes:  # measured once per spec, in the parent, batch 1
            with torch.random.fork_rng(devices=[]):
                m = make_model(student, self.data, "students", 0)
            shape = self.data.input_shape
            self.sizes[student] = {
                "params": count_params(m),
                "macs": count_macs(m, shape),
                "latency_ms": measure_latency(m, shape, batch_size=1)["median_ms"],
            }
        return self.sizes[student]

    def _cached_key(self) -> str | None:
        key = self.experiment.teacher_key
        return key if key and (TeacherCache(self.cache_dir).root / key / "meta.json").exists() else None

    def _teacher_payload(self) -> dict[str, Any]:
        """How a worker gets the teacher: by cache key, else as weights, else the pickled module."""
        t, key = self.experiment.teacher, self._cached_key()
        spec = getattr(t, "spec", None)
        if spec is None:
            return {"module": copy.deepcopy(t).cpu()}
        if key is None:
            return {"spec": spec, "state": {k: v.detach().cpu() for k, v in t.state_dict().items()}}
        return {"spec": spec, "key": key, "cache_dir": None if self.cache_dir is None else str(self.cache_dir)}

    def _parallel_ok(self) -> bool:
        teacher = self.experiment.teacher
        why = (
            "data: not in memory (DataLoader splits)"
            if not self.data.in_memory
            else "teacher: its class is defined in __main__, which spawned workers cannot import"
            if getattr(teacher, "spec", None) is None and type(teacher).__module__ == "__main__"
            else _unpicklable(teacher)
            if getattr(teacher, "spec", None) is None
            else None
        )
        if why:
            warnings.warn(f"workers: running the sweep in-process; {why}", stacklevel=4)
        return why is None

    def _load_saved(self) -> list[dict[str, Any]]:
        """Completed rows already saved; failed ones are dropped from the file (they run again)."""
        if not self.save:
            return []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta_path = self.path.with_suffix(".json")
        if meta_path.exists() and self.path.exists():
            old = json.loads(meta_path.read_text(encoding="utf-8"))
            diff = [k for k in self.meta if digest(old.get(k)) != digest(self.meta[k])]
            if diff:
                raise ValueError(
                    f"name: sweep {self.name!r} in {str(self.path)!r} was run with another "
                    f"{', '.join(diff)}; pass another name, or delete the file to start over"
                )
        atomic_write_json(meta_path, self.meta)
        if not self.path.exists():
            return []
        import pandas as pd

        df = pd.read_csv(self.path)
        rows = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df[df["status"] == "completed"].to_dict("records")
        ]
        if len(rows) < len(df):  # rewritten without the failed cells, atomically
            tmp = self.path.with_suffix(".csv.tmp")
            tmp.unlink(missing_ok=True)
            for r in rows:
                self._append(r, tmp)
            os.replace(tmp, self.path)
        return rows

    def _append(self, row: Mapping[str, Any], path: Path | None = None) -> None:
        if not self.save:
            return
        path = path or self.path
        new = not path.exists()
        fields = COLUMNS
        if not new:  # a file written by an older version keeps its own columns
            with open(path, newline="", encoding="utf-8") as f:
                fields = next(csv.reader(f), None) or COLUMNS
        with open(path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: "" if row.get(k) is None else row[k] for k in fields})


def _unpicklable(teacher: nn.Module) -> str | None:
    """Why a teacher without a zoo spec cannot be sent to worker processes (e.g. a loaded
    ``torch.export`` program), or None when it pickles."""
    try:
        pickle.dumps(teacher)
    except Exception as e:
        return f"teacher: it cannot be sent to worker processes ({type(e).__name__}: {str(e)[:120]})"
    return None


def _data_id(data: DataSplits) -> str:
    parts = [data.spec.get("name")]
    for s in (data.train, data.val, data.test):
        parts += [tensor_digest(s.x), tensor_digest(s.y)] if isinstance(s, Split) else [repr(type(s))]
    return digest(parts + [None if data.unlabeled is None else tensor_digest(data.unlabeled)])


def _frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame(list(rows), columns=list(COLUMNS))
    df["temperature"] = pd.to_numeric(df["temperature"])
    return df.sort_values(["params", "method", "temperature", "seed"], kind="stable").reset_index(drop=True)


def run_histories(rows: pd.DataFrame, root: Any = None) -> dict[str, pd.DataFrame]:
    """The histories of recorded cells by label, for :func:`workbench.plots.overlay_figure`."""
    out = {}
    for r in rows.to_dict("records"):
        t = r.get("temperature")
        label = f"{r['student']} {r['method']} s{r['seed']}" + ("" if t is None or t != t else f" T={t:g}")
        out[label] = load_run(r["run_id"], root).history
    return out
