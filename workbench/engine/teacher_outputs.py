"""The teacher's outputs on a run's fixed transfer inputs, computed once and cached: its logits for
every class, or (for token data with a large vocabulary, or a top-k divergence) a top-k record that
keeps the k largest logits per position and the log-sum-exp that gives the tail mass. Which one a run
uses, and which live controls that choice rules out, are decided here too.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn

from ..data.splits import DataSplits, Split
from .config import DEFAULT_TOP_K, FULL_OUTPUTS_BUDGET, DistillConfig
from .divergences import TOPK_DIVERGENCES, TopKRecord, top_k_record
from .evaluation import logits_of
from .losses import LossWeights


def resolve_top_k(
    cfg: DistillConfig, data: DataSplits, teacher: nn.Module | None, sequence: bool
) -> tuple[int | None, str]:
    """The k of the cached top-k teacher outputs (None: every class, or no cache), and why so."""
    k = cfg.teacher_top_k
    if teacher is None:
        return None, ""
    train = data.train
    if not (cfg.cache_teacher and cfg.mixup_alpha == 0 and isinstance(train, Split)):
        why = (
            "cache_teacher=False"
            if not cfg.cache_teacher
            else "mixup"
            if cfg.mixup_alpha > 0
            else "data['train'] is a DataLoader"
        )
        if isinstance(k, int) or cfg.divergence in TOPK_DIVERGENCES:
            what = f"teacher_top_k: {k!r}" if isinstance(k, int) else f"divergence: {cfg.divergence!r}"
            raise ValueError(
                f"{what} needs the teacher's outputs cached on fixed inputs, but with {why} the teacher "
                "is queried live at every step; use a full-teacher divergence and teacher_top_k='auto'"
            )
        return None, f"the teacher is queried live at every step ({why})"
    vocab = int(data.num_classes or 0)
    if isinstance(k, int):
        if vocab and k > vocab:
            raise ValueError(
                f"teacher_top_k: {k!r} is more than the {vocab} classes; use at most {vocab}, or None for every class"
            )
        return k, ""
    positions = len(train) * (train.x.shape[1] if sequence else 1)
    if not sequence and cfg.use_unlabeled and data.unlabeled is not None:
        positions += len(data.unlabeled)
    full_bytes = positions * vocab * 4
    if k is None or not vocab:
        return None, ""
    if cfg.divergence in TOPK_DIVERGENCES:  # "auto" with a top-k divergence: a top-k record
        return min(DEFAULT_TOP_K, vocab), ""
    if full_bytes <= FULL_OUTPUTS_BUDGET or DEFAULT_TOP_K >= vocab:
        return None, ""
    note = (
        f"divergence {cfg.divergence!r} needs the teacher's full outputs, which would take "
        f"{full_bytes / 2**20:.0f} MB (over the {FULL_OUTPUTS_BUDGET // 2**20} MB of teacher_top_k='auto', "
        f"which caches the top {DEFAULT_TOP_K}): the teacher is queried live at each step; set "
        "teacher_top_k=None to cache every class, or use divergence 'topk_kl_tail' or 'topk_kl'"
    )
    warnings.warn(note, stacklevel=3)
    return DEFAULT_TOP_K, note


def check_controls(w: LossWeights, record: TopKRecord | None, full_note: str, teacher_top_k: Any) -> None:
    """Refuse live values this run cannot use: a top-k divergence with no top-k record, another T
    for the tail mode (its record holds the tail mass at one T)."""
    if w.divergence not in TOPK_DIVERGENCES:
        return
    if record is None:
        how = full_note or (f"this run caches the teacher's outputs for every class (teacher_top_k={teacher_top_k!r})")
        raise ValueError(
            f"divergence: {w.divergence!r} needs the teacher's cached top-k outputs, but {how}; "
            "start the run with a top-k divergence or an integer teacher_top_k to use it"
        )
    if w.divergence == "topk_kl_tail" and w.temperature != record.temperature:
        raise ValueError(
            f"temperature: {w.temperature!r} cannot be used with divergence 'topk_kl_tail': the teacher's "
            f"top-k record holds its tail mass at T={record.temperature:g} only; keep "
            f"T={record.temperature:g}, or use 'topk_kl' (renormalised over the top k, any T)"
        )


@torch.no_grad()
def teacher_outputs(
    teacher: nn.Module,
    x: torch.Tensor,
    *,
    top_k: int | None,
    temperature: float,
    batch_size: int,
    feature_tap: Any = None,
    cache: Any = None,
    teacher_key: str | None = None,
    hint_teacher: str | None = None,
) -> tuple[torch.Tensor | TopKRecord, torch.Tensor | None]:
    """The teacher's logits on ``x`` (with ``top_k``: its top-k :class:`TopKRecord` at ``temperature``,
    built batch by batch so the full logits are never held) and the features ``feature_tap`` caught;
    read from ``cache`` (an :class:`~workbench.store.cache.OutputCache`) when it has them, else computed
    and stored there for later runs."""
    key = None
    if cache is not None:
        key = cache.key(teacher_key, x, hint_teacher, top_k=top_k, temperature=temperature if top_k else None)
        hit = cache.get(key)
        if hit is not None:
            return _to_device(hit[0], x.device), (None if hit[1] is None else hit[1].to(x.device))
    parts, feats = [], []
    for i in range(0, len(x), batch_size):
        logits = logits_of(teacher(x[i : i + batch_size])).float()
        parts.append(logits if top_k is None else top_k_record(logits, top_k, temperature).compact())
        if feature_tap is not None:
            feats.append(feature_tap.value)
    outputs = _concat(parts), (torch.cat(feats) if feats else None)
    if key is not None:
        cache.put(key, *outputs)
    return outputs


def _to_device(t: torch.Tensor | TopKRecord, device: torch.device) -> torch.Tensor | TopKRecord:
    if isinstance(t, TopKRecord):
        return TopKRecord(
            t.values.to(device), t.indices.to(device), t.logsumexp.to(device), t.temperature, t.vocab_size
        )
    return t.to(device)


def _concat(parts: list[torch.Tensor] | list[TopKRecord]) -> torch.Tensor | TopKRecord:
    """Batches of logits, or of top-k records, joined along the first dimension."""
    if not isinstance(parts[0], TopKRecord):
        return torch.cat(parts)
    first = parts[0]
    return TopKRecord(
        torch.cat([r.values for r in parts]),
        torch.cat([r.indices for r in parts]),
        torch.cat([r.logsumexp for r in parts]),
        first.temperature,
        first.vocab_size,
    )


def output_nbytes(outputs: torch.Tensor | TopKRecord) -> int:
    """Bytes held by cached teacher outputs (logits, or a top-k record's tensors)."""
    return outputs.nbytes if isinstance(outputs, TopKRecord) else outputs.numel() * outputs.element_size()


def outputs_note(outputs: torch.Tensor | TopKRecord) -> str:
    """One line on the cached teacher outputs: what is kept, for how many positions, and their size."""
    mb = output_nbytes(outputs) / 2**20
    if isinstance(outputs, TopKRecord):
        positions = outputs.logsumexp.numel()
        full = positions * outputs.vocab_size * 4 / 2**20
        return (
            f"teacher outputs cached: top-{outputs.k} of {outputs.vocab_size} classes at T={outputs.temperature:g} "
            f"for {positions:,} positions, {mb:.1f} MB (every class: {full:.1f} MB)"
        )
    positions = outputs.shape[:-1].numel()
    return f"teacher outputs cached: all {outputs.shape[-1]} classes for {positions:,} positions, {mb:.1f} MB"
