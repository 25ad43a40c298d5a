"""Transfer sets: which inputs carry hard labels, which the teacher labels, and how batches
are drawn from each.

KD beats training from scratch when the teacher labels inputs the labels do not cover
(kd-facts.md): a labeled subset (``labeled_fraction``), extra unlabeled inputs, or mixup of the
transfer inputs. A step then takes a CE batch from the labeled set and a KD batch from the
transfer set; the number of steps per epoch is fixed by the full train split, so every method
gets the same optimizer-step budget.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def labeled_subset(y: torch.Tensor, fraction: float, seed: int,
                   class_names: Sequence[str] = ()) -> torch.Tensor:
    """Sorted indices of a seeded, stratified subset: ``round(fraction * n_c)`` of each class c.

    Raises ``ValueError`` when the fraction leaves a class without a labeled example.
    """
    if fraction >= 1.0:
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        k = int(round(fraction * len(idx)))
        if k == 0:
            name = class_names[c] if c < len(class_names) else str(c)
            raise ValueError(
                f"labeled_fraction: {fraction!r} leaves class {name!r} without a labeled example "
                f"(it has {len(idx)} train samples); use at least {math.ceil(50 / len(idx)) / 100:.2f}"
            )
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(picked).sort().values


class Stream:
    """Endless batches over aligned tensors (same first dimension), re-shuffled (seeded) at each
    pass. A pass gathers the tensors in permuted order once and then hands out slices (views):
    one gather per pass instead of one per step, which is markedly faster for small batches.
    The last batch of a pass may be short, so with ``ceil(n / batch_size)`` steps per epoch it
    is a plain epoch loop over a random permutation.
    """

    def __init__(self, tensors: Sequence[torch.Tensor | None], batch_size: int, generator: torch.Generator):
        self.tensors = list(tensors)
        self.n = int(next(t for t in self.tensors if t is not None).shape[0])
        self.batch_size, self.generator = batch_size, generator
        self._pass: list[torch.Tensor | None] = []
        self._pos = self.n  # start a pass on the first call

    def __call__(self) -> tuple[torch.Tensor | None, ...]:
        if self._pos >= self.n:
            order = torch.randperm(self.n, generator=self.generator)
            self._pass = [None if t is None else t[order.to(t.device)] for t in self.tensors]
            self._pos = 0
        a, b = self._pos, self._pos + self.batch_size
        self._pos = b
        return tuple(None if t is None else t[a:b] for t in self._pass)


def mixup(x: torch.Tensor, alpha: float, rng: np.random.Generator, generator: torch.Generator) -> torch.Tensor:
    """Mixup of a batch with a shuffled copy of itself: ``lam*x + (1-lam)*x[perm]`` with
    ``lam ~ Beta(alpha, alpha)`` per sample (no labels: the teacher labels the mix). Seeded:
    ``rng`` draws lam, ``generator`` the pairing."""
    b = x.shape[0]
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=b)).to(x.device, x.dtype)
    lam = lam.view(b, *([1] * (x.ndim - 1)))
    perm = torch.randperm(b, generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm]
