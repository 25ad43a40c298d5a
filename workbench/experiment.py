"""The experiment unit: a teacher (trained here, or given), the distilled student and a scratch
baseline of the same architecture and initial weights, run as one unit with one callback
stream (payloads carry the role: teacher / student / baseline)."""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .data.splits import DataSplits, Split, as_splits
from .engine import distributed
from .engine.callbacks import History
from .engine.config import DistillConfig
from .engine.distiller import Distiller, FitResult, resolve_device
from .engine.evaluation import Evaluator, predict_logits
from .engine.events import Dispatcher, FitEnd, FitStart, frozen_map
from .engine.sequence import SequenceEvaluator, is_sequence
from .models.hf import first_line
from .models.load import LoadedModel, load_model
from .models.zoo import build_model, count_params, parse_model
from .store.cache import OutputCache, TeacherCache, check_cache_root, check_folder, teacher_key
from .store.runs import RunRecorder, runs_root

ModelArg = nn.Module | str | os.PathLike | Mapping[str, Any]
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".safetensors", ".pt2", ".ts", ".torchscript")
# Fits without a teacher (a teacher, a scratch baseline) train on plain CE: none of these apply.
_NO_KD = {"hint_student": None, "hint_teacher": None, "w_hint": 0.0, "w_ce": 1.0, "w_kd": 0.0, "w_mse": 0.0}
DEFAULT_TEMPERATURE = DistillConfig().temperature
DEFAULT_DIVERGENCE, DEFAULT_BETA = DistillConfig().divergence, DistillConfig().beta


def teacher_config_for(
    config: DistillConfig, *, epochs: int | None = None, lr: float | None = None, labeled_fraction: float = 1.0
) -> DistillConfig:
    """The config a teacher trains with, from a student's (or a teacher's own) config.

    The one place the CLI, the app (through :class:`Experiment`) and Python derive it, so the
    same teacher is cached once for all of them: it keeps what changes what a teacher learns
    (optimization, seed, epochs, batch size, precision) and resets the student's loss settings
    (temperature, weights, divergence, hints, mixup, text transfer sets), which a fit without a
    teacher never uses.
    ``epochs`` / ``lr``: the teacher's own (None keeps the config's); ``labeled_fraction``: the
    share of train labels it trains on (all of them unless asked).
    """
    changes: dict[str, Any] = dict(
        _NO_KD,
        alpha=None,
        temperature=DEFAULT_TEMPERATURE,
        mixup_alpha=0.0,
        labeled_fraction=labeled_fraction,
        divergence=DEFAULT_DIVERGENCE,
        beta=DEFAULT_BETA,
        generated_blocks=0,  # text transfer sets: a teacher trains on the text itself
        generate_temperature=1.0,
        on_policy=0.0,
    )
    if labeled_fraction >= 1.0:
        changes["label_seed"] = None  # every label: which subset would be drawn does not matter
    if epochs is not None:
        changes["epochs"] = epochs
    if lr is not None:
        changes["lr"] = lr
    return config.replace(**changes)


def is_source(arg: Any) -> bool:
    """Whether ``arg`` names a model to load (``load_model``) rather than a zoo spec to build:
    ``"run:ID"``, a path object, text with a folder separator or a model file suffix, or text
    that is not a zoo spec but names a file or folder that exists (a Hugging Face folder)."""
    if isinstance(arg, os.PathLike):
        return True
    if not isinstance(arg, str):
        return False
    if arg.startswith("run:") or "/" in arg or os.sep in arg or arg.lower().endswith(MODEL_FILE_SUFFIXES):
        return True
    try:
        parse_model(arg)
    except ValueError:
        return os.path.exists(arg)
    return False


def load_source(
    arg: str | os.PathLike,
    data: DataSplits,
    field_name: str,
    *,
    trusted: bool = False,
    root: str | os.PathLike | None = None,
) -> LoadedModel:
    """``load_model(arg)`` checked against ``data`` (as a teacher when ``field_name`` names one,
    else as a student); its errors name ``field_name`` and the file."""
    role = "teacher" if "teacher" in field_name else "student"
    try:
        with warnings.catch_warnings():  # torch's note on a plain pickle's protocol, said before it is refused
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return load_model(arg, trusted=trusted, data=data, role=role, root=root)
    except (ValueError, ImportError) as e:
        what, sep, rest = str(e).partition(": ")  # the loader's field names the file: the role names it here
        named = sep and what in ("source", "run", "checkpoint", "spec", role)
        raise type(e)(f"{field_name}: {rest if named else e}") from None


def estimate_params(
    arg: ModelArg,
    data: DataSplits,
    field_name: str = "model",
    *,
    trusted: bool = False,
    root: str | os.PathLike | None = None,
) -> int:
    """The parameter count of a model spec, counted on the meta device (no memory is allocated),
    so a size too large to build can be refused before it is built; a source is loaded and counted."""
    if isinstance(arg, nn.Module):
        return count_params(arg)
    if is_source(arg):  # its weights exist already: loading them is the only way to count them
        return count_params(load_source(arg, data, field_name, trusted=trusted, root=root).module)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # make_model seeds the global RNG
        return count_params(make_model(arg, data, field_name, 0))


def make_model(
    arg: ModelArg,
    data: DataSplits,
    field_name: str,
    seed: int,
    *,
    trusted: bool = False,
    root: str | os.PathLike | None = None,
) -> nn.Module:
    """A model from a module (used as is), a source (``"run:ID"``, a weights file with its spec, a
    Hugging Face folder, with ``trusted`` a .pt2/TorchScript program; see :func:`load_source`),
    ``"mlp:16"``-style text or a spec dict (seeded init). ``root``: the runs folder of ``run:ID``."""
    if isinstance(arg, nn.Module):
        return arg
    if is_source(arg):
        return load_source(arg, data, field_name, trusted=trusted, root=root).module
    if isinstance(arg, str):
        try:
            family, size = parse_model(arg)
        except ValueError as e:
            raise ValueError(
                f"{field_name}: {e}; or a model to load: 'run:ID', a .pt/.pth/.safetensors file "
                "with its spec, a Hugging Face folder"
            ) from None
    elif isinstance(arg, Mapping):
        size = dict(arg)
        family = size.pop("family", None)
        size.pop("input_shape", None)
        size.pop("num_classes", None)
    else:
        raise ValueError(
            f"{field_name}: expected an nn.Module, a spec like 'mlp:16' or a dict, or a model to load "
            f"('run:ID', a file path), got {type(arg).__name__}"
        )
    torch.manual_seed(seed)
    try:
        return build_model(family, data, **size)
    except ValueError as e:
        raise ValueError(f"{field_name}: {e}") from None
    except (RuntimeError, MemoryError) as e:  # sizes whose tensors overflow, or do not fit in memory
        if not _too_large(e):
            raise
        raise ValueError(
            f"{field_name}: {arg!r} is too large to build here ({first_line(e)}); expected a smaller model"
        ) from None


def _check_token_module(module: nn.Module, data: DataSplits, role: str) -> None:
    """A module given for token data runs on two blocks and predicts over the data's vocabulary
    (an embedding of another vocabulary or block size failed deep in torch, or in a later step)."""
    train = data.train
    if not isinstance(train, Split):
        return
    x, k = train.x[:2], data.num_classes
    try:
        logits = predict_logits(module, x)
    except Exception as e:
        raise ValueError(
            f"{role}: the {type(module).__name__} given does not accept blocks of data {data.name!r} "
            f"(shape {tuple(x.shape)}, token ids 0..{k - 1}): {first_line(e)}; expected a model built for "
            f"this data (its vocabulary of {k} and block size {x.shape[1]})"
        ) from None
    if tuple(logits.shape) != (*x.shape, k):
        raise ValueError(
            f"{role}: the {type(module).__name__} given outputs logits of shape {tuple(logits.shape)} for "
            f"blocks of shape {tuple(x.shape)}; data {data.name!r} needs {(*x.shape, k)} (a vocabulary of {k})"
        )


def _too_large(e: BaseException) -> bool:
    """An error of building a model whose tensors cannot be allocated (or whose sizes overflow)."""
    text = str(e).lower()
    return isinstance(e, MemoryError) or any(w in text for w in ("overflow", "allocate", "out of memory"))


@dataclass
class ExperimentResult:
    """The three fits of an experiment and a side-by-side table."""

    teacher: FitResult | None
    student: FitResult | None  # None when the run was stopped while training the teacher
    baseline: FitResult | None
    teacher_val_acc: float | None
    warnings: list[str] = field(default_factory=list)

    @property
    def fits(self) -> dict[str, FitResult]:
        return {r.role: r for r in (self.teacher, self.student, self.baseline) if r is not None}

    def table(self):
        """One row per role: status, params, accuracies, agreement with the teacher, seconds."""
        import pandas as pd

        rows = []
        tokens = any("test_bpc" in r.summary or "val_bpc" in r.summary for r in self.fits.values())
        for role, r in self.fits.items():
            s = r.summary
            row = {
                "role": role,
                "status": r.status,
                "params": count_params(r.model),
                "val_acc": s.get("val_acc"),
                "test_acc": s.get("test_acc"),
                "test_agreement": s.get("test_agreement"),
            }
            if tokens:  # token data: bits per character first, accuracy is per token
                row = {
                    "role": role,
                    "status": r.status,
                    "params": row["params"],
                    "val_bpc": s.get("val_bpc"),
                    "test_bpc": s.get("test_bpc"),
                    **{k: v for k, v in row.items() if k not in ("role", "status", "params")},
                }
            rows.append({**row, "seconds": s.get("seconds"), "run_id": r.run_id})
        return pd.DataFrame(rows)

    @property
    def history(self):
        """All fits' events in one DataFrame (column ``role`` tells them apart)."""
        import pandas as pd

        return pd.concat([r.history for r in self.fits.values()], ignore_index=True)


class Experiment:
    """Teacher -> distilled student + scratch baseline on one dataset.

    ``teacher``/``student``: an ``nn.Module``, a zoo spec (``"cnn2d"``, ``"mlp:16"``, a dict), or a
    model to load (``"run:ID"``, a .pt/.pth/.safetensors file with its spec, a Hugging Face
    folder; with ``trusted=True`` also a .pt2 or TorchScript program, which runs code from the
    file). A loaded model is checked against the data before any training (errors name the file);
    ``runs`` is the runs folder ``run:ID`` is looked up in.
    A teacher given as a module or loaded is taken as trained (frozen; its outputs are cached by
    its weights) unless ``train_teacher=True``; one given as a spec is built and trained with
    ``teacher_config`` -- or loaded from the teacher cache when the same teacher was trained
    before on the same data (``retrain=True`` forces training). A loaded student is fine-tuned.
    The baseline is a copy of the student's initial weights (for a loaded student: the loaded
    weights, so both start from the same point) trained on the labeled set alone with the same
    step budget. ``runs``: a folder (or True for the default root) to record each fit in;
    ``cache``: use the teacher and teacher-output caches.
    With ``config=None`` the defaults fit the data: :meth:`DistillConfig.for_text` for token data
    (e.g. ``load_dataset("shakespeare-char")`` with ``"gpt:2,64"`` and ``"gpt:1,32"``), else
    ``DistillConfig()``.
    """

    def __init__(
        self,
        data: Any,
        teacher: ModelArg,
        student: ModelArg,
        config: DistillConfig | None = None,
        teacher_config: DistillConfig | None = None,
        baseline: bool = True,
        train_teacher: bool | None = None,
        callbacks: Iterable[Any] = (),
        runs: str | os.PathLike | bool | None = None,
        cache: bool = True,
        retrain: bool = False,
        cache_dir: str | os.PathLike | None = None,
        trusted: bool = False,
    ):
        self.data = as_splits(data)
        self.config = config or (DistillConfig.for_text() if is_sequence(self.data) else DistillConfig())
        self.teacher_config = (
            teacher_config_for(self.config)
            if teacher_config is None
            else teacher_config_for(teacher_config, labeled_fraction=teacher_config.labeled_fraction)
        )
        self.baseline_config = self.config.replace(mixup_alpha=0.0, **_NO_KD)
        if teacher is student and teacher is not None and not isinstance(teacher, (str, os.PathLike)):
            raise ValueError("teacher, student: the same object was passed as both; pass two models")
        if not isinstance(trusted, bool):
            raise ValueError(f"trusted: {trusted!r} is invalid; expected True or False")
        self.runs = None if runs in (None, False) else (None if runs is True else runs)
        self.record = runs not in (None, False)
        self.loaded: dict[str, LoadedModel] = {}  # role -> what was loaded for it (its description)
        self.teacher = self._model(teacher, "teacher", self.teacher_config.seed, trusted)
        self.student = self._model(student, "student", self.config.seed, trusted)
        if self.teacher is self.student:
            raise ValueError("teacher, student: the same module was passed as both; pass two models")
        hf = [role for role, m in self.loaded.items() if m.kind == "hf"]
        if hf and self.config.mixup_alpha > 0:
            raise ValueError(
                f"mixup_alpha: {self.config.mixup_alpha!r} cannot be used with the Hugging Face {' and '.join(hf)}: "
                "its inputs are token ids, which a mix of two inputs turns into fractions; use 0"
            )
        given = isinstance(teacher, nn.Module) or "teacher" in self.loaded
        self.train_teacher = (not given) if train_teacher is None else train_teacher
        self.baseline = baseline
        self.callbacks = list(callbacks)
        self.cache, self.retrain, self.cache_dir = cache, retrain, cache_dir
        if cache:  # a cache or runs path that is a file fails now, not after training
            check_cache_root(cache_dir)
        if self.record:
            check_folder(
                runs_root(self.runs),
                "runs" if self.runs else "WORKBENCH_RUNS" if os.environ.get("WORKBENCH_RUNS") else "runs folder",
            )
        # A module given from Python or a file: its weights (trained or initial) are part of what it is.
        self.teacher_key = teacher_key(self.teacher, self.teacher_config.to_dict(), self.data, weights=given)
        self.teacher_result: FitResult | None = None
        # For a loaded student: the loaded weights, so the baseline and the distilled student start alike.
        self._initial_student = copy.deepcopy(self.student) if baseline else None

    def _model(self, arg: ModelArg, role: str, seed: int, trusted: bool) -> nn.Module:
        """``make_model`` for ``role``; a loaded model is kept in ``self.loaded[role]``."""
        if isinstance(arg, nn.Module) and is_sequence(self.data):
            _check_token_module(arg, self.data, role)
        if isinstance(arg, nn.Module) or not is_source(arg):
            return make_model(arg, self.data, role, seed)
        self.loaded[role] = load_source(arg, self.data, role, trusted=trusted, root=self.runs)
        return self.loaded[role].module

    def run(self, live: Any = None) -> ExperimentResult:
        """Train (or check) the teacher, then distill the student, then the scratch baseline.

        ``live``: the :class:`~workbench.engine.live.LiveRun` this runs on (``LiveRun(exp.run)``), so
        its buffer gets every event and stop, pause and live controls reach every fit.
        """
        make = live.distiller if live is not None else Distiller
        cbs = self.callbacks
        notes: list[str] = []
        teacher_res = self.prepare_teacher(live)
        teacher_res = teacher_res or self.teacher_result
        if teacher_res is not None and teacher_res.status == "stopped":
            return ExperimentResult(teacher_res, None, None, None, notes)
        teacher_val = self._sanity_gate(teacher_res, notes)
        teacher_run = teacher_res.run_id if teacher_res is not None else self._teacher_run_id()
        outputs = OutputCache(self.cache_dir) if (self.cache and self.teacher_key is not None) else None
        student_res = make(
            self.teacher,
            self.student,
            self.data,
            self.config,
            cbs + self._recorder(self.student, teacher_run),
            role="student",
            teacher_key=self.teacher_key,
            output_cache=outputs,
        ).fit()
        baseline_res = None
        if self.baseline and student_res.status in ("completed",):
            baseline_res = make(
                None,
                self._initial_student,
                self.data,
                self.baseline_config,
                cbs + self._recorder(self._initial_student),
                role="baseline",
            ).fit()
        return ExperimentResult(teacher_res, student_res, baseline_res, teacher_val, notes)

    def prepare_teacher(self, live: Any = None) -> FitResult | None:
        """Train the teacher, or load it from the cache; None when it was given trained."""
        if not self.train_teacher:
            return self.teacher_result
        make = live.distiller if live is not None else Distiller
        teacher_res = None
        device = resolve_device(self.config.device)
        distributed.init(device)  # under torchrun every rank must take the same path below
        if self.cache and not self.retrain and distributed.all_ranks(self._cache_has_teacher(), device):
            teacher_res = self._cached_teacher([live.buffer] if live is not None else [])
        if teacher_res is None:
            teacher_res = make(
                None,
                self.teacher,
                self.data,
                self.teacher_config,
                self.callbacks + self._recorder(self.teacher),
                role="teacher",
            ).fit()
            if teacher_res.status not in ("completed", "stopped"):
                raise RuntimeError(f"teacher: training ended with status {teacher_res.status}: {teacher_res.message}")
            if (
                self.cache
                and self.teacher_key is not None
                and teacher_res.status == "completed"
                and distributed.is_main()
            ):
                TeacherCache(self.cache_dir).save(
                    self.teacher_key,
                    self.teacher,
                    {
                        "run_id": teacher_res.run_id,
                        "summary": teacher_res.summary,
                        "model_spec": getattr(self.teacher, "spec", None),
                        "data_spec": dict(self.data.spec),
                        "config": self.teacher_config.to_dict(),
                    },
                )
        self.train_teacher = teacher_res.status != "completed"  # trained: a second run() distills at once
        self.teacher_result = teacher_res
        return teacher_res

    def _teacher_run_id(self) -> str | None:
        """The run a teacher was loaded from (``run:ID``), recorded as the student's teacher run."""
        loaded = self.loaded.get("teacher")
        return loaded.source[len("run:") :] if loaded is not None and loaded.kind == "run" else None

    def _cache_has_teacher(self) -> bool:
        return self.teacher_key is not None and (TeacherCache(self.cache_dir).root / self.teacher_key).is_dir()

    def _recorder(self, model: nn.Module, teacher_run: str | None = None) -> list[Any]:
        if not self.record or not distributed.is_main():  # only rank 0 writes runs
            return []
        return [RunRecorder(model, self.runs, meta={"data_spec": dict(self.data.spec), "teacher_run_id": teacher_run})]

    def _cached_teacher(self, extra_callbacks: list[Any]) -> FitResult | None:
        """The teacher from the cache, announced by a fit_start / fit_end pair; None on a miss."""
        if self.teacher_key is None:
            return None
        meta = TeacherCache(self.cache_dir).load(self.teacher_key, self.teacher)
        if meta is None:
            return None
        self.teacher.to(resolve_device(self.config.device)).eval()
        summary = dict(meta.get("summary") or {})
        run_id = meta.get("run_id") or f"teacher-cached-{self.teacher_key}"
        summary.update(cached=True, cache_key=self.teacher_key)
        recorder = History()
        events = Dispatcher([recorder, *self.callbacks, *extra_callbacks])
        message = f"loaded from the teacher cache (key {self.teacher_key}); retrain=True trains it again"
        train = self.data.train
        events(
            "on_fit_start",
            FitStart(
                run_id=run_id,
                role="teacher",
                config=frozen_map(self.teacher_config.to_dict()),
                device=str(next(self.teacher.parameters()).device),
                dataset=self.data.name,
                num_classes=self.data.num_classes,
                train_size=len(train.dataset) if hasattr(train, "dataset") else len(train),
                student_params=count_params(self.teacher),
                teacher_params=None,
                epochs=0,
                steps_per_epoch=0,
                steps_planned=0,
                started_at=time.time(),
            ),
        )
        final = {k: v for k, v in summary.items() if k.split("_")[0] in ("train", "val", "test")}
        events(
            "on_fit_end",
            FitEnd(
                run_id=run_id,
                role="teacher",
                status="completed",
                message=message,
                step=int(summary.get("steps", 0)),
                epoch=int(summary.get("epochs", 0)),
                seconds=0.0,
                best=frozen_map({}),
                final=frozen_map(final),
            ),
        )
        return FitResult(run_id, "teacher", "completed", message, summary, self.teacher, recorder)

    def _sanity_gate(self, teacher_res: FitResult | None, notes: list[str]) -> float | None:
        """Report the teacher's validation accuracy; warn when it is no better than chance."""
        split = "val" if self.data.val is not None else "test" if self.data.test is not None else "train"
        if teacher_res is not None and f"{split}_acc" in teacher_res.summary:
            acc = teacher_res.summary[f"{split}_acc"]
        else:
            data = self.data.splits()[split]
            bs = self.config.eval_batch_size
            ev = (
                SequenceEvaluator(self.teacher, None, "sanity", "teacher", bs, self.data)
                if is_sequence(self.data)
                else Evaluator(self.teacher, None, "sanity", "teacher", bs)
            )
            device = next((p.device for p in self.teacher.parameters()), torch.device("cpu"))
            acc = ev(split, data.to(device) if isinstance(data, Split) else data, 0, 0, 0.0).acc
        k = self.data.num_classes or 2
        labels = self.data.splits()[split]
        if isinstance(labels, Split):  # chance = always guessing the most common class (token)
            targets = labels.y[labels.y >= 0] if labels.y.ndim == 2 else labels.y  # token data: its targets
            chance = torch.bincount(targets).max().item() / len(targets)
            n = len(targets)
        else:
            chance, n = 1.0 / k, 1000
        margin = 2 * math.sqrt(chance * (1 - chance) / n)  # two standard errors of a guess
        if acc <= chance + margin:
            msg = (
                f"teacher: {split} accuracy {acc:.3f} is no better than chance ({chance:.3f}, the most "
                "common class); is it trained? distilling it will teach the student noise"
            )
            warnings.warn(msg, stacklevel=3)
            notes.append(msg)
        if count_params(self.student) > count_params(self.teacher):
            notes.append(
                f"student has more parameters ({count_params(self.student)}) than the teacher "
                f"({count_params(self.teacher)}): were they swapped?"
            )
        return acc
