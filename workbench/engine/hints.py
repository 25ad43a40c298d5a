"""Feature hints (FitNets): capture named layers with forward hooks and adapt the student's
feature to the teacher's shape with a small learned module."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn


def find_module(model: nn.Module, path: str, field: str) -> nn.Module:
    """The submodule at ``path`` (e.g. ``"hidden.1"``); a ValueError lists the valid names."""
    modules = dict(model.named_modules())
    if path not in modules or path == "":
        names = [n for n in modules if n]
        shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
        raise ValueError(f"{field}: {path!r} is not a layer of the {field.split('_')[-1]}; valid: {shown}")
    return modules[path]


class FeatureTap:
    """Keeps the output of one module from the latest forward pass (a forward hook)."""

    def __init__(self, module: nn.Module):
        self.value: torch.Tensor | None = None
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.value = output[0] if isinstance(output, (tuple, list)) else output

    def remove(self) -> None:
        self._handle.remove()
        self.value = None


class Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


def make_adapter(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """A learned map from per-sample student feature shape to the teacher's.

    Same rank: vectors -> Linear; feature maps (C, L) / (C, H, W) -> 1x1 convolution, after an
    adaptive average pool when the spatial sizes differ. Otherwise: flatten + Linear + reshape.
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) == len(t) == 1:
        return nn.Linear(s[0], t[0])
    if len(s) == len(t) in (2, 3):
        conv = nn.Conv1d(s[0], t[0], 1) if len(s) == 2 else nn.Conv2d(s[0], t[0], 1)
        if s[1:] == t[1:]:
            return conv
        pool = nn.AdaptiveAvgPool1d(t[1]) if len(s) == 2 else nn.AdaptiveAvgPool2d(t[1:])
        return nn.Sequential(pool, conv)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(s), math.prod(t)), Reshape(t))
