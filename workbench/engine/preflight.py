"""Checks before training: the device, settings that cannot work with the data, and one
forward pass of each model on two samples, so mistakes fail with a clear message before a
single step is taken."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..data.splits import DataSplits, Split, first_batch
from .batches import labeled_subset
from .config import DEVICE_TYPES, DistillConfig
from .evaluation import logits_of
from .hints import FeatureTap, find_module


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; other names are checked to exist."""
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise ValueError(f"device: {name!r} is invalid; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if (dev.type == "cuda" and not torch.cuda.is_available()) or (dev.type == "mps" and not has_mps):
        raise ValueError(f"device: {name!r} is not available on this machine; use 'auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device: {name!r} is not available; this machine has {torch.cuda.device_count()} "
            f"CUDA device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return dev


def num_params(m: nn.Module | None) -> int | None:
    """Parameter count of ``m`` (None for no model)."""
    return None if m is None else sum(p.numel() for p in m.parameters())


def check_transfer(cfg: DistillConfig, data: DataSplits, teacher: nn.Module | None) -> None:
    """Settings that cannot work with this data or device fail here, before any training."""
    train = data.train
    device = resolve_device(cfg.device)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision: 'fp16' needs a CUDA device (device={cfg.device!r} resolves to "
            f"{device.type}); use 'bf16' or 'fp32' on this machine"
        )
    for name, split in data.splits().items():
        if name != "train" and isinstance(split, DataLoader):
            first_batch(split, name)  # a wrong structure would fail only at the first evaluation
    if isinstance(train, Split) and len(torch.unique(train.y)) < 2:
        raise ValueError(f"data['train'] y: has a single class ({train.y[0].item()}); classification needs at least 2")
    if not isinstance(train, Split):
        for name, off in (("labeled_fraction", 1.0), ("mixup_alpha", 0.0)):
            if getattr(cfg, name) != off:
                raise ValueError(
                    f"{name}: {getattr(cfg, name)!r} needs in-memory data (tensors or arrays), not a DataLoader"
                )
    elif cfg.labeled_fraction < 1:
        labeled_subset(train.y, cfg.labeled_fraction, cfg.labels_seed, data.class_names)  # raises early
    if teacher is None and cfg.hint_student is not None:
        raise ValueError("hint_student, hint_teacher: feature hints need a teacher")
    if cfg.mixup_alpha > 0 and teacher is not None and cfg.w_ce == 0 and cfg.w_kd == 0 and cfg.w_mse == 0:
        warnings.warn("mixup_alpha: mixup only changes the KD/MSE terms, whose weights are 0", stacklevel=3)


def check_models(
    cfg: DistillConfig, data: DataSplits, teacher: nn.Module | None, student: nn.Module
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Run both models on two training samples so shape mistakes fail before training.

    Returns the per-sample shapes of the hinted student and teacher features, if any.
    """
    train = data.train
    x, y = (train.x[:2], train.y[:2]) if isinstance(train, Split) else first_batch(train, "train")
    x, y = x[:2], y[:2]
    _check_trainable(student)
    taps = {}
    if cfg.hint_student is not None and teacher is not None:
        taps = {
            "student": FeatureTap(find_module(student, cfg.hint_student, "hint_student")),
            "teacher": FeatureTap(find_module(teacher, cfg.hint_teacher, "hint_teacher")),
        }
    outs, shapes = {}, {}
    try:
        for name, m in (("student", student), ("teacher", teacher)):
            if m is None:
                continue
            out = _forward(m, name, x, grad=name == "student")
            _check_logits(out, name, x)
            outs[name] = out.shape[1]
            if name in taps:
                shapes[name] = tuple(taps[name].value.shape[1:])
    finally:
        for tap in taps.values():
            tap.remove()
    if len(outs) == 2 and outs["student"] != outs["teacher"]:
        raise ValueError(
            f"teacher, student: teacher outputs {outs['teacher']} classes, student {outs['student']}; they must match"
        )
    k = data.num_classes
    for name, c in outs.items():
        if k and c != k:
            raise ValueError(
                f"{name}: outputs {c} classes but the data has {k} (labels 0..{k - 1}); "
                f"expected a final layer with {k} outputs"
            )
        if not k and y.max().item() >= c:
            raise ValueError(
                f"data['train'] y: label {y.max().item()} in the first batch, but {name} outputs "
                f"{c} classes; expected labels 0..{c - 1}"
            )
    if teacher is not None and num_params(teacher) < num_params(student):
        warnings.warn(
            f"teacher has {num_params(teacher)} parameters, fewer than the student's "
            f"{num_params(student)}: were teacher and student swapped?",
            stacklevel=3,
        )
    return (shapes["student"], shapes["teacher"]) if shapes else None


def _check_trainable(student: nn.Module) -> None:
    """The student needs parameters that the optimizer may change."""
    n, trainable = num_params(student), sum(p.numel() for p in student.parameters() if p.requires_grad)
    if not trainable:
        why = "it has no parameters" if not n else f"all {n} of its parameters have requires_grad=False"
        raise ValueError(f"student: nothing to train ({why}); expected a model with trainable parameters")


def _forward(m: nn.Module, name: str, x: torch.Tensor, grad: bool) -> torch.Tensor:
    """The logits of ``m`` on ``x`` in eval mode (its mode is restored); any failure, a
    ``TypeError`` included, becomes a ``ValueError`` naming the model."""
    tensors = [*m.parameters(), *m.buffers()]
    if any(t.is_meta for t in tensors):
        raise ValueError(
            f"{name}: its weights are on the 'meta' device (never allocated); load them first, "
            "e.g. model.to_empty(device='cpu') then model.load_state_dict(...)"
        )
    dev = tensors[0].device if tensors else torch.device("cpu")
    was_training = m.training
    m.eval()
    try:
        with torch.set_grad_enabled(grad):
            out = m(x.to(dev))
    except Exception as e:
        raise ValueError(
            f"{name}: forward pass on inputs of shape {tuple(x.shape)} failed: "
            f"{type(e).__name__}: {e}{_mismatch_hint(tensors, x)}"
        ) from e
    finally:
        m.train(was_training)
    try:
        return logits_of(out)
    except TypeError as e:
        raise ValueError(f"{name}: {e}") from None


def _mismatch_hint(tensors: list[torch.Tensor], x: torch.Tensor) -> str:
    """Why a forward pass may have failed: weights on several devices, or of another dtype than the inputs."""
    devices = sorted({str(t.device) for t in tensors})
    if len(devices) > 1:
        return f" (its weights are on several devices: {', '.join(devices)}; move it with model.to(device))"
    dtypes = sorted({str(t.dtype) for t in tensors if t.is_floating_point()})
    if x.is_floating_point() and dtypes and str(x.dtype) not in dtypes:
        return f" (the inputs are {x.dtype} but its weights are {', '.join(dtypes)}; use model.float())"
    return ""


def _check_logits(out: torch.Tensor, name: str, x: torch.Tensor) -> None:
    """Logits must be floating-point scores of shape (batch, classes), finite, one row per input."""
    if out.ndim != 2:
        raise ValueError(
            f"{name}: expected logits of shape (batch, classes), got {tuple(out.shape)} "
            f"for inputs of shape {tuple(x.shape)}"
        )
    if out.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name}: returned {out.shape[0]} rows of logits for {x.shape[0]} inputs; "
            "expected one row per sample, shape (batch, classes)"
        )
    if out.shape[1] < 2:
        raise ValueError(
            f"{name}: outputs {out.shape[1]} class(es), shape {tuple(out.shape)}; classification "
            "needs logits for at least 2 classes"
        )
    if not out.is_floating_point():
        raise ValueError(
            f"{name}: returned logits of dtype {out.dtype}; expected floating-point scores "
            "(the logits, not predicted class indices)"
        )
    if not torch.isfinite(out).all():
        raise ValueError(
            f"{name}: outputs NaN or inf on two training samples; check its weights "
            "(e.g. torch.isfinite(p).all() for each parameter) and its forward"
        )
    if name == "student" and not out.requires_grad:
        raise ValueError(
            "student: its output does not depend on its trainable parameters (no gradient "
            "flows back); does forward() detach the output or run under torch.no_grad()?"
        )
