"""Transfer sets: which inputs carry hard labels, which the teacher labels, and how batches
are drawn from each.

KD beats training from scratch when the teacher labels inputs the labels do not cover
(kd-facts.md): a labeled subset (``labeled_fraction``), extra unlabeled inputs, or mixup of the
transfer inputs. A step then takes a CE batch from the labeled set and a KD batch from the
transfer set; the number of steps per epoch is fixed by the full train split, so every method
gets the same optimizer-step budget.

Token data (blocks ``x`` (N, L) with targets ``y`` (N, L)) is drawn the same way, a block being
a sample: the labeled subset is a seeded set of blocks, and the KD stream carries the mask of
the positions that have a target (``y != IGNORE_INDEX``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.splits import Split
from ..data.text import IGNORE_INDEX
from . import distributed
from .config import DistillConfig
from .divergences import TopKRecord


def labeled_subset(y: torch.Tensor, fraction: float, seed: int, class_names: Sequence[str] = ()) -> torch.Tensor:
    """Sorted indices of a seeded, stratified subset: ``round(fraction * n_c)`` of each class c.

    For token blocks (``y`` of shape (N, L)): ``round(fraction * N)`` blocks drawn at random.
    Raises ``ValueError`` when the fraction leaves a class (or the data) without a labeled example.
    """
    if fraction >= 1.0:
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    if y.ndim == 2:  # token blocks: a block is a sample, its targets come together
        k = int(round(fraction * len(y)))
        if k == 0:
            raise ValueError(
                f"labeled_fraction: {fraction!r} leaves no labeled block of the {len(y)} train blocks; "
                f"use at least {math.ceil(50 / len(y)) / 100:.2f}"
            )
        return torch.randperm(len(y), generator=g)[:k].sort().values
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
    is a plain epoch loop over a random permutation. With ``drop_single`` a last batch of one
    sample is skipped (a BatchNorm layer in training mode cannot normalise one sample): the pass
    ends one sample early and the next one starts.
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor | None],
        batch_size: int,
        generator: torch.Generator,
        drop_single: bool = False,
    ):
        self.tensors = list(tensors)
        self.n = int(next(t for t in self.tensors if t is not None).shape[0])
        self.batch_size, self.generator = batch_size, generator
        self._end = self.n - 1 if (drop_single and self.n % batch_size == 1 and self.n > 1) else self.n
        self.drops_single = self._end < self.n
        self._pass: list[torch.Tensor | None] = []
        self._pos = self.n  # start a pass on the first call

    def __call__(self) -> tuple[torch.Tensor | None, ...]:
        if self._pos >= self._end:
            order = torch.randperm(self.n, generator=self.generator)
            self._pass = [None if t is None else t[order.to(t.device)] for t in self.tensors]
            self._pos = 0
        a, b = self._pos, self._pos + self.batch_size
        self._pos = b
        return tuple(None if t is None else t[a:b] for t in self._pass)


def steps_per_epoch(n: int, batch_size: int, drop_single: bool = False) -> int:
    """``ceil(n / batch_size)``, less the last batch when it would hold one sample and ``drop_single``."""
    steps = math.ceil(n / batch_size)
    return steps - 1 if (drop_single and n % batch_size == 1 and n > 1) else steps


def _teacher_parts(t: torch.Tensor | TopKRecord | None) -> list[torch.Tensor | None]:
    """The tensors a stream batches for the teacher's cached outputs: logits, or a record's three."""
    return [t.values, t.indices, t.logsumexp] if isinstance(t, TopKRecord) else [t]


def _teacher_batch(parts: Sequence[torch.Tensor | None], like: TopKRecord | None) -> torch.Tensor | TopKRecord | None:
    """The inverse of :func:`_teacher_parts` on one batch's slices (``like``: the cached record)."""
    if like is None:
        return parts[0]
    values, indices, lse = parts
    return TopKRecord(values, indices, lse, like.temperature, like.vocab_size)


def mixup(x: torch.Tensor, alpha: float, rng: np.random.Generator, generator: torch.Generator) -> torch.Tensor:
    """Mixup of a batch with a shuffled copy of itself: ``lam*x + (1-lam)*x[perm]`` with
    ``lam ~ Beta(alpha, alpha)`` per sample (no labels: the teacher labels the mix). Seeded:
    ``rng`` draws lam, ``generator`` the pairing."""
    b = x.shape[0]
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=b)).to(x.device, x.dtype)
    lam = lam.view(b, *([1] * (x.ndim - 1)))
    perm = torch.randperm(b, generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm]


class Batch(NamedTuple):
    """One step's tensors: the CE batch, the KD batch (None: the CE batch) and the teacher's outputs
    on it (full logits, a top-k :class:`TopKRecord`, or None: query the teacher live); ``kd_mask``
    (B, L) marks the KD batch's target positions of token data drawn in two streams (else None:
    every row counts, or the CE targets tell)."""

    x_ce: torch.Tensor
    y_ce: torch.Tensor
    x_kd: torch.Tensor | None
    t_kd: torch.Tensor | TopKRecord | None
    tf_kd: torch.Tensor | None
    kd_mask: torch.Tensor | None = None


class BatchSource:
    """Draws the batches of a run: a :class:`Batch` per step (``batches``), or its first five
    items ``(x_ce, y_ce, x_kd, t_kd, tf_kd)`` (``epoch``).

    One stream (``x_kd is None``): the CE batch is also the KD batch, with the teacher's cached
    logits ``t_kd`` / features ``tf_kd`` (or None: query the teacher live). Two streams: a CE
    batch from the labeled set and a KD batch from the transfer set.

    ``teacher_outputs(x) -> (logits or TopKRecord, features or None)`` gives the teacher's outputs
    on the transfer inputs ``x``; it is called once, here, when ``config.cache_teacher`` is on and
    there is no mixup. ``None`` means the run has no teacher (plain cross-entropy on one stream).
    ``drop_single``: skip a last batch of one sample (a student with BatchNorm layers).
    """

    def __init__(
        self,
        train: Split | DataLoader,
        config: DistillConfig,
        device: torch.device,
        gen: torch.Generator,
        class_names: Sequence[str] = (),
        unlabeled: torch.Tensor | None = None,
        teacher_outputs: Callable[[torch.Tensor], tuple[torch.Tensor | TopKRecord, torch.Tensor | None]] | None = None,
        drop_single: bool = False,
    ):
        cfg, has_teacher = config, teacher_outputs is not None
        self.loader = None if isinstance(train, Split) else train
        self.record: TopKRecord | None = None  # the cached top-k teacher, batched as its three tensors
        self.drops_single = False  # a last batch of one sample is skipped in a stream
        if self.loader is not None:
            self.steps_per_epoch, self.labeled, self.transfer = len(train), len(train.dataset), 0
            return
        self.steps_per_epoch = steps_per_epoch(len(train), cfg.batch_size, drop_single)  # one budget for all methods
        pool = labeled_subset(train.y.cpu(), cfg.labeled_fraction, cfg.labels_seed, class_names).to(device)
        x_ce, y_ce = (train.x, train.y) if len(pool) == len(train) else (train.x[pool], train.y[pool])
        extra = unlabeled if (has_teacher and cfg.use_unlabeled) else None
        x_kd = train.x if extra is None else torch.cat([train.x, extra.to(device, torch.float32)])
        tokens = train.y.ndim == 2  # token blocks: targets per position
        m_kd = (train.y != IGNORE_INDEX) if (tokens and extra is None) else None  # (N, L) the KD targets
        self.one_stream = not has_teacher or (x_kd is train.x and len(pool) == len(train) and cfg.mixup_alpha == 0)
        self.mix = cfg.mixup_alpha
        self.rng, self.gen = np.random.default_rng(cfg.seed), gen
        self.labeled, self.transfer = len(x_ce), (len(x_kd) if has_teacher else 0)
        t_kd = tf_kd = None
        if has_teacher and cfg.cache_teacher and self.mix == 0:
            t_kd, tf_kd = teacher_outputs(x_kd)  # once per run (or shared across runs by the caller)
            self.record = t_kd if isinstance(t_kd, TopKRecord) else None
        teacher = _teacher_parts(t_kd)
        if self.one_stream:
            self.ce = Stream([x_ce, y_ce, *teacher, tf_kd], cfg.batch_size, gen, drop_single)
        else:
            self.ce = Stream([x_ce, y_ce], cfg.batch_size, gen, drop_single)
            self.kd = Stream([x_kd, *teacher, tf_kd, m_kd], cfg.batch_size, gen, drop_single)
        self.drops_single = self.ce.drops_single or (not self.one_stream and self.kd.drops_single)

    def epoch(self, device: torch.device) -> Iterator[tuple]:
        """One epoch of ``(x_ce, y_ce, x_kd, t_kd, tf_kd)`` tuples (the batches without ``kd_mask``)."""
        for batch in self.batches(device):
            yield tuple(batch[:5])

    def batches(self, device: torch.device) -> Iterator[Batch]:
        """One epoch of :class:`Batch` es, ``steps_per_epoch`` of them (a DataLoader's own count)."""
        if self.loader is not None:
            for xb, yb in self.loader:
                yield Batch(xb.to(device, non_blocking=True), yb.to(device, non_blocking=True), None, None, None)
            return
        sh = distributed.shard  # under DDP each rank takes its share of every global batch
        n_teacher = 3 if self.record is not None else 1
        for _ in range(self.steps_per_epoch):
            if self.one_stream:
                x, y, *t, tf = self.ce()
                yield Batch(sh(x), sh(y), None, _teacher_batch([sh(p) for p in t], self.record), sh(tf))
                continue
            x, y = self.ce()
            xk, *rest = self.kd()
            t, (tf, m) = rest[:n_teacher], rest[n_teacher:]
            if self.mix > 0:
                xk = mixup(xk, self.mix, self.rng, self.gen)
            yield Batch(sh(x), sh(y), sh(xk), _teacher_batch([sh(p) for p in t], self.record), sh(tf), sh(m))
