"""Checks before training: the device, settings that cannot work with the data, and one
forward pass of each model on two samples, so mistakes fail with a clear message before a
single step is taken."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from .config import DistillConfig
from .data import DataSplits, Split
from .evaluation import logits_of
from .hints import FeatureTap, find_module
from .transfer import labeled_subset


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; other names are checked to exist."""
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device: {name!r} is invalid; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from e
    if (dev.type == "cuda" and not torch.cuda.is_available()) or (dev.type == "mps" and not has_mps):
        raise ValueError(f"device: {name!r} is not available on this machine; use 'auto' or 'cpu'")
    return dev


def num_params(m: nn.Module | None) -> int | None:
    """Parameter count of ``m`` (None for no model)."""
    return None if m is None else sum(p.numel() for p in m.parameters())


def check_transfer(cfg: DistillConfig, data: DataSplits, teacher: nn.Module | None) -> None:
    """Settings that cannot work with this data or device fail here, before any training."""
    train = data.train
    if cfg.precision == "fp16" and resolve_device(cfg.device).type != "cuda":
        raise ValueError(f"precision: 'fp16' needs a CUDA device (device={cfg.device!r} resolves to "
                         f"{resolve_device(cfg.device).type}); use 'bf16' or 'fp32' on this machine")
    if isinstance(train, Split) and len(torch.unique(train.y)) < 2:
        raise ValueError(f"data['train'] y: has a single class ({train.y[0].item()}); "
                         "classification needs at least 2")
    if not isinstance(train, Split):
        for name, off in (("labeled_fraction", 1.0), ("mixup_alpha", 0.0)):
            if getattr(cfg, name) != off:
                raise ValueError(f"{name}: {getattr(cfg, name)!r} needs in-memory data (tensors or "
                                 "arrays), not a DataLoader")
    elif cfg.labeled_fraction < 1:
        labeled_subset(train.y, cfg.labeled_fraction, cfg.labels_seed, data.class_names)  # raises early
    if teacher is None and cfg.hint_student is not None:
        raise ValueError("hint_student, hint_teacher: feature hints need a teacher")
    if cfg.mixup_alpha > 0 and teacher is not None and cfg.w_ce == 0 and cfg.w_kd == 0 and cfg.w_mse == 0:
        warnings.warn("mixup_alpha: mixup only changes the KD/MSE terms, whose weights are 0", stacklevel=3)


def check_models(cfg: DistillConfig, data: DataSplits, teacher: nn.Module | None,
                 student: nn.Module) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Run both models on two training samples so shape mistakes fail before training.

    Returns the per-sample shapes of the hinted student and teacher features, if any.
    """
    train = data.train
    x = train.x[:2] if isinstance(train, Split) else next(iter(train))[0][:2]
    taps = {}
    if cfg.hint_student is not None and teacher is not None:
        taps = {"student": FeatureTap(find_module(student, cfg.hint_student, "hint_student")),
                "teacher": FeatureTap(find_module(teacher, cfg.hint_teacher, "hint_teacher"))}
    outs, shapes = {}, {}
    try:
        for name, m in (("student", student), ("teacher", teacher)):
            if m is None:
                continue
            dev = next((p.device for p in m.parameters()), torch.device("cpu"))
            was_training = m.training
            m.eval()
            try:
                with torch.no_grad():
                    out = logits_of(m(x.to(dev)))
            except TypeError:
                raise
            except Exception as e:
                raise ValueError(f"{name}: forward pass on inputs of shape {tuple(x.shape)} failed: "
                                 f"{type(e).__name__}: {e}") from e
            finally:
                m.train(was_training)
            if out.ndim != 2:
                raise ValueError(f"{name}: expected logits of shape (batch, classes), got {tuple(out.shape)}")
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
            raise ValueError(f"{name}: outputs {c} classes but the data has {k} (labels 0..{k - 1}); "
                             f"expected a final layer with {k} outputs")
    if teacher is not None and num_params(teacher) < num_params(student):
        warnings.warn(
            f"teacher has {num_params(teacher)} parameters, fewer than the student's "
            f"{num_params(student)}: were teacher and student swapped?", stacklevel=3
        )
    return (shapes["student"], shapes["teacher"]) if shapes else None
