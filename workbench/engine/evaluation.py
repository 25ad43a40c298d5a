"""Model outputs and evaluation: accuracy, CE, teacher accuracy, agreement and KL per split."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data.splits import Split
from .events import EvalEnd


def logits_of(out: Any) -> torch.Tensor:
    """Logits from a model output: a tensor, a tuple/list (first item), or ``.logits`` / ``["logits"]``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    raise TypeError(
        f"model output: cannot find logits in {_describe(out)}; return a tensor, a tuple "
        "whose first item is the logits, or an object/dict with a 'logits' entry"
    )


class inference:
    """A context in which ``model`` runs as for inference: eval mode and no grad, its mode restored after.

    The one place that puts a model in eval mode for a measurement or a prediction, so no caller
    forgets to restore a model that was training (a teacher in the middle of a live run, say).
    """

    def __init__(self, model: nn.Module):
        self.model, self.was_training, self.no_grad = model, model.training, torch.no_grad()

    def __enter__(self) -> nn.Module:
        self.model.eval()
        self.no_grad.__enter__()
        return self.model

    def __exit__(self, *exc: Any) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def predict_logits(model: nn.Module, x: Any, batch_size: int = 1024) -> torch.Tensor:
    """The model's logits on ``x`` (a tensor or array) as float32 on the CPU.

    Eval mode, no grad, inputs moved to the model's device in batches of ``batch_size``, and the
    model's train/eval mode restored after: every prediction outside the training loop (plots,
    sweeps, the explorers, checks before training) goes through here.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: {batch_size!r} is invalid; expected an integer >= 1")
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    device = model_device(model)
    with inference(model):
        parts = [logits_of(model(x[i : i + batch_size].to(device))).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0)


def soft_targets(model: nn.Module, x: Any, temperature: float, batch_size: int = 1024) -> torch.Tensor:
    """softmax(logits / T) of the model on ``x``: the teacher's softened distribution, per row."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature: {temperature!r} is invalid; expected a number > 0")
    return torch.softmax(predict_logits(model, x, batch_size) / float(temperature), dim=-1)


def _describe(out: Any) -> str:
    """What a model returned, for an error message: its type and keys or first item."""
    if isinstance(out, Mapping):
        keys = sorted(map(str, out))
        if "logits" in out:
            return f"a {type(out).__name__} whose 'logits' is a {type(out['logits']).__name__}, not a tensor"
        return f"a {type(out).__name__} with keys {keys} (no 'logits')"
    if isinstance(out, (tuple, list)):
        first = f"whose first item is a {type(out[0]).__name__}" if out else "that is empty"
        return f"a {type(out).__name__} {first}"
    return f"a {type(out).__name__}"


def batches(
    split: Split | DataLoader, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of a split in order, on ``device``."""
    if isinstance(split, Split):
        for i in range(0, len(split), batch_size):
            yield split.x[i : i + batch_size], split.y[i : i + batch_size]
    else:
        for xb, yb in split:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


class Evaluator:
    """Evaluates a student (and its frozen teacher) on named splits.

    The teacher's log-probabilities, predictions and accuracy on an in-memory split are computed
    once and reused: it does not change during a run.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None, run_id: str, role: str, batch_size: int):
        self.student, self.teacher, self.run_id, self.role = student, teacher, run_id, role
        self.batch_size = batch_size
        self._teacher_cache: dict[str, tuple[torch.Tensor, torch.Tensor, float] | None] = {}

    @torch.no_grad()
    def _teacher_on(self, split, device) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        if not isinstance(split, Split):
            return None
        t = torch.cat([logits_of(self.teacher(xb)).float() for xb, _ in batches(split, self.batch_size, device)])
        pred = t.argmax(1)
        return F.log_softmax(t, 1), pred, (pred == split.y).float().mean().item()

    @torch.no_grad()
    def __call__(self, name: str, split: Split | DataLoader, step: int, epoch: int, t0: float) -> EvalEnd:
        teacher, student = self.teacher, self.student
        device = next((p.device for p in student.parameters()), torch.device("cpu"))
        if teacher is not None and name not in self._teacher_cache:
            self._teacher_cache[name] = self._teacher_on(split, device)
        cached = self._teacher_cache.get(name)
        was_training = student.training
        student.eval()
        try:
            n = 0
            sums = []  # per batch: [student correct, CE sum(, agreement, KL sum(, teacher correct))]
            for xb, yb in batches(split, self.batch_size, device):
                logp = F.log_softmax(logits_of(student(xb)).float(), 1)  # (B, K)
                pred = logp.argmax(1)
                row = [(pred == yb).sum(dtype=torch.float32), F.nll_loss(logp, yb, reduction="sum")]
                if teacher is not None:
                    if cached is not None:
                        t_logp, t_pred = cached[0][n : n + xb.shape[0]], cached[1][n : n + xb.shape[0]]
                    else:
                        t_logp = F.log_softmax(logits_of(teacher(xb)).float(), 1)
                        t_pred = t_logp.argmax(1)
                    row += [
                        (t_pred == pred).sum(dtype=torch.float32),
                        F.kl_div(logp, t_logp, reduction="sum", log_target=True),
                    ]
                    if cached is None:
                        row.append((t_pred == yb).sum(dtype=torch.float32))
                sums.append(torch.stack(row))
                n += xb.shape[0]
            if n == 0:
                raise ValueError(f"data[{name!r}]: has 0 samples to evaluate")
            totals = (sums[0] if len(sums) == 1 else torch.stack(sums).sum(0)).tolist()
        finally:
            student.train(was_training)
        if teacher is None:
            t_acc = agreement = kl = None
        else:
            t_acc = cached[2] if cached is not None else totals[4] / n
            agreement, kl = totals[2] / n, totals[3] / n
        return EvalEnd(
            run_id=self.run_id,
            role=self.role,
            step=step,
            epoch=epoch,
            split=name,
            acc=totals[0] / n,
            loss=totals[1] / n,
            n=n,
            seconds=time.perf_counter() - t0,
            teacher_acc=t_acc,
            agreement=agreement,
            kl=kl,
        )
