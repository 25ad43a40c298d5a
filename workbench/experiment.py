"""The experiment unit: a teacher (trained here, or given), the distilled student and a scratch
baseline of the same architecture and initial weights, run as one unit with one callback
stream (payloads carry the role: teacher / student / baseline)."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn

from .config import DistillConfig
from .data import DataSplits, Split, as_splits
from .engine import Distiller, FitResult
from .evaluation import Evaluator
from .models import build_model, count_params, parse_model

ModelArg = nn.Module | str | Mapping[str, Any]


def make_model(arg: ModelArg, data: DataSplits, field_name: str, seed: int) -> nn.Module:
    """A model from a module (used as is), ``"mlp:16"``-style text or a spec dict; seeded init."""
    if isinstance(arg, nn.Module):
        return arg
    if isinstance(arg, str):
        try:
            family, size = parse_model(arg)
        except ValueError as e:
            raise ValueError(f"{field_name}: {e}") from None
    elif isinstance(arg, Mapping):
        size = dict(arg)
        family = size.pop("family", None)
        size.pop("input_shape", None)
        size.pop("num_classes", None)
    else:
        raise ValueError(f"{field_name}: expected an nn.Module, a spec like 'mlp:16' or a dict, got {type(arg).__name__}")
    torch.manual_seed(seed)
    try:
        return build_model(family, data, **size)
    except ValueError as e:
        raise ValueError(f"{field_name}: {e}") from None


@dataclass
class ExperimentResult:
    """The three fits of an experiment and a side-by-side table."""

    teacher: FitResult | None
    student: FitResult
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
        for role, r in self.fits.items():
            s = r.summary
            rows.append({"role": role, "status": r.status, "params": count_params(r.model),
                         "val_acc": s.get("val_acc"), "test_acc": s.get("test_acc"),
                         "test_agreement": s.get("test_agreement"), "seconds": s.get("seconds"),
                         "run_id": r.run_id})
        return pd.DataFrame(rows)

    @property
    def history(self):
        """All fits' events in one DataFrame (column ``role`` tells them apart)."""
        import pandas as pd

        return pd.concat([r.history for r in self.fits.values()], ignore_index=True)


class Experiment:
    """Teacher -> distilled student + scratch baseline on one dataset.

    ``teacher``/``student``: an ``nn.Module`` or a zoo spec (``"cnn2d"``, ``"mlp:16"``, a dict).
    A teacher given as a module is taken as trained unless ``train_teacher=True``; one given as
    a spec is built and trained with ``teacher_config``. The baseline is a copy of the student's
    initial weights trained on the labeled set alone with the same step budget.
    """

    def __init__(self, data: Any, teacher: ModelArg, student: ModelArg,
                 config: DistillConfig | None = None, teacher_config: DistillConfig | None = None,
                 baseline: bool = True, train_teacher: bool | None = None,
                 callbacks: Iterable[Any] = ()):
        self.data = as_splits(data)
        self.config = config or DistillConfig()
        # Fits without a teacher train on plain CE: their configs drop the KD-only settings.
        no_kd = dict(hint_student=None, hint_teacher=None, w_hint=0.0, w_ce=1.0, w_kd=0.0, w_mse=0.0)
        self.teacher_config = teacher_config or self.config.replace(labeled_fraction=1.0, mixup_alpha=0.0, **no_kd)
        self.baseline_config = self.config.replace(mixup_alpha=0.0, **no_kd)
        if teacher is student and teacher is not None:
            raise ValueError("teacher, student: the same object was passed as both; pass two models")
        self.teacher = make_model(teacher, self.data, "teacher", self.teacher_config.seed)
        self.student = make_model(student, self.data, "student", self.config.seed)
        if self.teacher is self.student:
            raise ValueError("teacher, student: the same module was passed as both; pass two models")
        self.train_teacher = (not isinstance(teacher, nn.Module)) if train_teacher is None else train_teacher
        self.baseline = baseline
        self.callbacks = list(callbacks)
        self._initial_student = copy.deepcopy(self.student) if baseline else None

    def run(self, make_distiller: Callable[..., Distiller] | None = None) -> ExperimentResult:
        """Train (or check) the teacher, then distill the student, then the scratch baseline.

        ``make_distiller`` builds each fit (default: :class:`Distiller`; a ``LiveRun`` passes
        ``run.distiller`` so stop, pause and live controls reach every fit).
        """
        make = make_distiller or Distiller
        cbs = self.callbacks
        notes: list[str] = []
        teacher_res = None
        if self.train_teacher:
            teacher_res = make(None, self.teacher, self.data, self.teacher_config, cbs, role="teacher").fit()
            if teacher_res.status != "completed":
                raise RuntimeError(f"teacher: training ended with status {teacher_res.status}: {teacher_res.message}")
        teacher_val = self._sanity_gate(teacher_res, notes)
        student_res = make(self.teacher, self.student, self.data, self.config, cbs, role="student").fit()
        baseline_res = None
        if self.baseline and student_res.status in ("completed",):
            baseline_res = make(None, self._initial_student, self.data, self.baseline_config, cbs,
                                role="baseline").fit()
        return ExperimentResult(teacher_res, student_res, baseline_res, teacher_val, notes)

    def _sanity_gate(self, teacher_res: FitResult | None, notes: list[str]) -> float | None:
        """Report the teacher's validation accuracy; warn when it is no better than chance."""
        split = "val" if self.data.val is not None else "test" if self.data.test is not None else "train"
        if teacher_res is not None and f"{split}_acc" in teacher_res.summary:
            acc = teacher_res.summary[f"{split}_acc"]
        else:
            data = self.data.splits()[split]
            ev = Evaluator(self.teacher, None, "sanity", "teacher", self.config.eval_batch_size)
            device = next((p.device for p in self.teacher.parameters()), torch.device("cpu"))
            acc = ev(split, data.to(device) if isinstance(data, Split) else data, 0, 0, 0.0).acc
        k = self.data.num_classes or 2
        if acc <= 1.0 / k + 0.5 * (1.0 / k):
            msg = (f"teacher: {split} accuracy {acc:.3f} is no better than chance (1/{k} = {1 / k:.3f}); "
                   "is it trained? distilling it will teach the student noise")
            warnings.warn(msg, stacklevel=3)
            notes.append(msg)
        if count_params(self.student) > count_params(self.teacher):
            notes.append(f"student has more parameters ({count_params(self.student)}) than the teacher "
                         f"({count_params(self.teacher)}): were they swapped?")
        return acc
