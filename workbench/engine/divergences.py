"""Divergences between teacher and student output distributions, for classes and tokens alike.

Every divergence takes student logits of shape (positions, classes) -- or (batch, length,
classes), flattened by :func:`flatten_positions` -- and an optional boolean ``mask`` of the
positions that count. With ``p = softmax(t / T)`` (teacher) and ``q = softmax(s / T)``
(student), each one computes a per-position value and averages it over the target positions
(``mask.sum()``, or all positions without a mask), so a sequence loss is normalised per token,
not per sequence. A mask with no True position gives a loss of exactly 0 (still connected to
the student's graph, with zero gradient), never NaN.

Computation runs in float32 (bf16/fp16 inputs are upcast; float64 stays float64) with
``log_softmax`` for stability. The teacher is a fixed target: no gradient flows into it.
Soft terms carry an explicit ``T^2`` so their gradients keep their size across temperatures.

:data:`DIVERGENCES` names them for the config, the CLI and the UIs; :func:`get_divergence`
looks one up. Each entry is called as ``div(student_logits, teacher, T, mask=None, beta=0.5,
**options)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

TOPK_MODES = ("renorm", "tail")
INDEX_DTYPES = (torch.uint8, torch.int16, torch.int32, torch.int64)  # a TopKRecord's class ids


def index_dtype(vocab_size: int) -> torch.dtype:
    """The smallest dtype of :data:`INDEX_DTYPES` that holds class ids ``0 .. vocab_size - 1``."""
    if vocab_size <= 256:
        return torch.uint8
    return torch.int16 if vocab_size <= 2**15 else torch.int32 if vocab_size <= 2**31 else torch.int64


# ---------------------------------------------------------------- validation and positions


def _check_logits(x: Any, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3) or x.shape[-1] < 1:
        raise ValueError(
            f"{name}: shape {tuple(x.shape)} is not valid; expected (positions, "
            f"classes) or (batch, length, classes) with at least one class"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name}: dtype {x.dtype} is not valid; expected a floating-point tensor")


def _check_temperature(T: Any) -> None:
    if isinstance(T, bool) or not isinstance(T, numbers.Real) or not math.isfinite(T) or T <= 0:
        raise ValueError(f"T: {T!r} is not a valid temperature; expected a finite number > 0")


def check_beta(beta: Any) -> None:
    """``beta`` must be a real number in [0, 1]; raises ``ValueError`` naming it otherwise."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta: {beta!r} is outside the valid range [0, 1]")


def flatten_positions(
    logits: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, K) or (B, L, V) logits and a mask of their leading shape -> ((P, C), (P,) or None).

    ``P = B`` for class logits and ``P = B * L`` for token logits; ``mask`` must be a bool
    tensor of shape ``logits.shape[:-1]`` (True = the position counts).
    """
    _check_logits(logits, "logits")
    flat = logits.reshape(-1, logits.shape[-1])  # (P, C)
    if mask is None:
        return flat, None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        what = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask: {what} is not valid; expected a bool tensor (True = counts)")
    if mask.shape != logits.shape[:-1]:
        raise ValueError(
            f"mask: shape {tuple(mask.shape)} does not match the logits' positions "
            f"{tuple(logits.shape[:-1])}; expected logits.shape[:-1]"
        )
    return flat, mask.reshape(-1)  # (P,)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16/fp16 are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _paired_rows(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate, flatten and select the target rows of (student, detached teacher) logits."""
    _check_logits(student_logits, "student_logits")
    _check_logits(teacher_logits, "teacher_logits")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits: shape {tuple(teacher_logits.shape)} does not match "
            f"student_logits shape {tuple(student_logits.shape)}"
        )
    _check_temperature(T)
    s, flat_mask = flatten_positions(student_logits, mask)
    t = teacher_logits.detach().reshape(s.shape)
    if flat_mask is not None:
        s, t = s[flat_mask], t[flat_mask]  # (N, C): only the target positions
    dtype = _compute_dtype(s, t)
    return s.to(dtype), t.to(dtype)


def _mean_over_positions(per_position: torch.Tensor) -> torch.Tensor:
    """Sum over the N selected positions divided by N; exactly 0 when N == 0."""
    return per_position.sum() / max(per_position.shape[0], 1)


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per row ``sum_c p_c (log p_c - log q_c)``, with ``0 log 0 = 0``."""
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(-1)


# ---------------------------------------------------------------- full-teacher divergences


def forward_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Hinton KD: ``T^2 * mean_n KL(p_n || q_n) = T^2 * mean_n sum_c p_nc log(p_nc / q_nc)``.

    Mode-covering: the student is pushed to put mass wherever the teacher does.
    """
    s, t = _paired_rows(student_logits, teacher_logits, T, mask)
    per_position = _kl_rows(F.log_softmax(t / T, dim=-1), F.log_softmax(s / T, dim=-1))
    return (T * T) * _mean_over_positions(per_position)


def reverse_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Reverse KL: ``T^2 * mean_n KL(q_n || p_n) = T^2 * mean_n sum_c q_nc log(q_nc / p_nc)``.

    Mode-seeking: the student may drop teacher modes but is punished for mass where p is small.
    """
    s, t = _paired_rows(student_logits, teacher_logits, T, mask)
    per_position = _kl_rows(F.log_softmax(s / T, dim=-1), F.log_softmax(t / T, dim=-1))
    return (T * T) * _mean_over_positions(per_position)


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    T: float,
    mask: torch.Tensor | None = None,
    beta: float = 0.5,
) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence (GKD, Agarwal et al. 2023; TRL's convention).

    ``M = beta * p + (1 - beta) * q`` and, for ``0 < beta < 1``,
    ``T^2 * mean_n [beta * KL(p_n || M_n) + (1 - beta) * KL(q_n || M_n)]``,
    with ``log M`` computed in log space (``logaddexp``). ``beta = 0.5`` is the symmetric JSD.

    Endpoints, as in TRL's ``GKDTrainer``: ``beta = 0`` returns :func:`forward_kl`
    ``T^2 KL(p || q)`` and ``beta = 1`` returns :func:`reverse_kl` ``T^2 KL(q || p)``, exactly.
    The general formula itself tends to 0 at both ends (it behaves as
    ``beta * KL(p || q)`` near 0 and ``(1 - beta) * KL(q || p)`` near 1), so the endpoints are
    special cases: the loss's scale jumps there, its direction does not.
    """
    check_beta(beta)
    if beta == 0:
        return forward_kl(student_logits, teacher_logits, T, mask)
    if beta == 1:
        return reverse_kl(student_logits, teacher_logits, T, mask)
    s, t = _paired_rows(student_logits, teacher_logits, T, mask)
    log_p = F.log_softmax(t / T, dim=-1)
    log_q = F.log_softmax(s / T, dim=-1)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    per_position = beta * _kl_rows(log_p, log_m) + (1 - beta) * _kl_rows(log_q, log_m)
    return (T * T) * _mean_over_positions(per_position)


def centred_logit_mse(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Logit matching up to a shift: ``mean_n (1/C) sum_c (s'_nc - t'_nc)^2``.

    ``s'_n = s_n - mean_c s_nc`` and ``t'_n = t_n - mean_c t_nc`` (softmax ignores a per-row
    shift, so it is removed from both); the mean runs over the C classes of each position,
    then over the target positions. No temperature.
    """
    s, t = _paired_rows(student_logits, teacher_logits, 1.0, mask)
    diff = (s - s.mean(-1, keepdim=True)) - (t - t.mean(-1, keepdim=True))  # (N, C)
    return _mean_over_positions(diff.square().mean(-1))


# ---------------------------------------------------------------- sparse (top-k) teacher


@dataclass(frozen=True)
class TopKRecord:
    """A cached sparse teacher: its k largest logits per position and its full log-sum-exp.

    ``values`` (..., k): raw teacher logits (before temperature), largest first;
    ``indices`` (..., k) int64: their class ids; ``logsumexp`` (...,) float:
    ``log sum_c exp(t_c / temperature)`` over all ``vocab_size`` classes, which gives the
    teacher's exact probabilities at the top-k ids and the mass outside them ("tail" mode)
    at that temperature only. Leading shapes match the student's positions.
    """

    values: torch.Tensor
    indices: torch.Tensor
    logsumexp: torch.Tensor
    temperature: float
    vocab_size: int

    def __post_init__(self) -> None:
        if not self.values.is_floating_point() or self.values.dim() < 2:
            raise ValueError(
                f"values: shape {tuple(self.values.shape)} dtype {self.values.dtype}"
                f" is not valid; expected floating (..., k)"
            )
        if self.indices.shape != self.values.shape or self.indices.dtype not in INDEX_DTYPES:
            raise ValueError(
                f"indices: shape {tuple(self.indices.shape)} dtype "
                f"{self.indices.dtype} is not valid; expected an integer tensor (int64, or uint8 / int16 / "
                f"int32 to save memory) of shape {tuple(self.values.shape)} like values"
            )
        if self.logsumexp.shape != self.values.shape[:-1]:
            raise ValueError(
                f"logsumexp: shape {tuple(self.logsumexp.shape)} is not valid; "
                f"expected {tuple(self.values.shape[:-1])} (values without k)"
            )
        _check_temperature(self.temperature)
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < self.k:
            raise ValueError(f"vocab_size: {self.vocab_size!r} is not valid; expected an int >= k = {self.k}")

    @property
    def k(self) -> int:
        return int(self.values.shape[-1])

    @property
    def nbytes(self) -> int:
        """Bytes held by the record's tensors."""
        return sum(t.numel() * t.element_size() for t in (self.values, self.indices, self.logsumexp))

    def compact(self) -> TopKRecord:
        """The same record with its ids in the smallest integer dtype that holds ``vocab_size``
        (uint8 up to 256 classes, int16 up to 32768, else int32): what a cache keeps."""
        dtype = index_dtype(self.vocab_size)
        return TopKRecord(self.values, self.indices.to(dtype), self.logsumexp, self.temperature, self.vocab_size)

    def select(self, index: torch.Tensor | slice) -> TopKRecord:
        """The record of the positions ``index`` picks along the first dimension (batching)."""
        return TopKRecord(
            self.values[index], self.indices[index], self.logsumexp[index], self.temperature, self.vocab_size
        )

    def rows(self, mask: torch.Tensor) -> TopKRecord:
        """The record of the positions a bool ``mask`` of its leading shape marks, as rows (N, k);
        a view when it marks every position."""
        if bool(mask.all()):
            k = self.k
            return TopKRecord(
                self.values.reshape(-1, k),
                self.indices.reshape(-1, k),
                self.logsumexp.reshape(-1),
                self.temperature,
                self.vocab_size,
            )
        return self.select(mask)

    def as_dict(self) -> dict[str, Any]:
        """Tensors and plain numbers only: loadable with ``torch.load(weights_only=True)``."""
        return {
            "values": self.values,
            "indices": self.indices,
            "logsumexp": self.logsumexp,
            "temperature": self.temperature,
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> TopKRecord:
        missing = {"values", "indices", "logsumexp", "temperature", "vocab_size"} - set(record)
        if missing:
            raise ValueError(f"record: missing keys {sorted(missing)}")
        return cls(
            record["values"],
            record["indices"],
            record["logsumexp"],
            float(record["temperature"]),
            int(record["vocab_size"]),
        )


def top_k_record(teacher_logits: torch.Tensor, k: int, T: float = 1.0) -> TopKRecord:
    """Cache record of ``teacher_logits`` (..., V): top-k raw logits and ids, ``logsumexp(t/T)``."""
    _check_logits(teacher_logits, "teacher_logits")
    vocab = int(teacher_logits.shape[-1])
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
        raise ValueError(f"k: {k!r} is not valid; expected an int in [1, {vocab}] (the vocabulary)")
    _check_temperature(T)
    with torch.no_grad():
        values, indices = torch.topk(teacher_logits, k, dim=-1)
        scaled = teacher_logits.to(_compute_dtype(teacher_logits)) / T
        return TopKRecord(values, indices, torch.logsumexp(scaled, dim=-1), float(T), vocab)


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(a))`` for ``a <= 0``, accurate at both ends (Maechler 2012)."""
    a = a.clamp(max=0.0)
    return torch.where(a > -math.log(2.0), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def _topk_rows(
    student_logits: torch.Tensor,
    teacher: TopKRecord,
    mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate, flatten and select rows: (student (N, V), values (N, k), ids, logsumexp (N,))."""
    _check_logits(student_logits, "student_logits")
    if not isinstance(teacher, TopKRecord):
        raise ValueError(f"teacher: expected a TopKRecord (see top_k_record), got {type(teacher).__name__}")
    if teacher.values.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(
            f"teacher: record positions {tuple(teacher.values.shape[:-1])} do not "
            f"match student_logits positions {tuple(student_logits.shape[:-1])}"
        )
    if teacher.vocab_size != student_logits.shape[-1]:
        raise ValueError(
            f"teacher: record vocab_size {teacher.vocab_size} does not match the "
            f"student's {student_logits.shape[-1]} classes"
        )
    s, flat_mask = flatten_positions(student_logits, mask)
    values = teacher.values.detach().reshape(-1, teacher.k)
    indices = teacher.indices.reshape(-1, teacher.k).long()  # a cache keeps them compact; gather takes int64
    lse = teacher.logsumexp.detach().reshape(-1)
    if flat_mask is not None:
        s, values, indices, lse = s[flat_mask], values[flat_mask], indices[flat_mask], lse[flat_mask]
    dtype = _compute_dtype(s, values, lse)
    return s.to(dtype), values.to(dtype), indices, lse.to(dtype)


def topk_forward_kl(
    student_logits: torch.Tensor, teacher: TopKRecord, T: float, mask: torch.Tensor | None = None, mode: str = "renorm"
) -> torch.Tensor:
    """Forward KL ``T^2 * mean_n KL(p_n || q_n)`` against a cached top-k teacher (S = its k ids).

    ``"renorm"``: p and q both renormalised over S, ``p_i = softmax(t_S / T)_i`` and
    ``q_i = q_i / sum_{j in S} q_j``; works at any T.
    ``"tail"``: exact teacher probabilities ``p_i = exp(t_i / T - logsumexp)`` on S plus one
    tail bucket ``p_tail = 1 - sum_S p_i`` (via ``log1p(-exp)``), against the student's
    ``q_i`` on S and ``q_tail = sum_{c not in S} q_c`` (summed over the other classes: no
    cancellation). Needs ``T == teacher.temperature``. With k = V both modes equal
    :func:`forward_kl`.
    """
    _check_temperature(T)
    if mode not in TOPK_MODES:
        raise ValueError(f"mode: {mode!r} is not valid; expected one of {', '.join(TOPK_MODES)}")
    s, values, indices, lse = _topk_rows(student_logits, teacher, mask)
    if mode == "tail" and T != teacher.temperature:
        raise ValueError(
            f"T: {T!r} differs from the record's temperature {teacher.temperature!r};"
            f" the tail mass is known only at the record's T (make the record at "
            f"this T, or use mode='renorm')"
        )
    if T != 1.0:  # at T = 1 (the text default) skip two (N, V) divisions: a KD step is many small ops
        s, values = s / T, values / T
    if mode == "tail" and teacher.k < teacher.vocab_size:  # a closed-form gradient (see _TailKL)
        log_p_top = values - lse.unsqueeze(-1)  # (N, k)
        log_p_tail = _log1mexp(torch.logsumexp(log_p_top, dim=-1))  # (N,)
        return (T * T) * _mean_over_positions(_TailKL.apply(s, log_p_top, log_p_tail, indices))
    log_q_top = F.log_softmax(s, dim=-1).gather(-1, indices)  # (N, k)
    if mode == "renorm":
        per_position = _kl_rows(F.log_softmax(values, dim=-1), F.log_softmax(log_q_top, dim=-1))
    else:  # k = V: the tail is empty on both sides, plain KL over the classes
        per_position = _kl_rows(values - lse.unsqueeze(-1), log_q_top)
    return (T * T) * _mean_over_positions(per_position)


def _log_tail_mass(log_q: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``log sum_{c not in S} q_c`` per row, from log-probabilities ``log_q`` (N, V) and the ids S (N, k):
    a sum of positive terms (no cancellation); rows whose tail underflows float32's exp take a log-sum-exp."""
    off = log_q.scatter(-1, indices, float("-inf"))  # (N, V): the classes off S
    mass = off.exp().sum(-1)  # log_q <= 0: no overflow
    small = mass < 1e-30  # (its terms may have underflowed): rare, e.g. a student far from the teacher
    log_mass = mass.log()
    if bool(small.any()):
        log_mass = torch.where(small, torch.logsumexp(off, dim=-1), log_mass)
    return log_mass


class _TailKL(torch.autograd.Function):
    """Per row ``KL(p || q)`` over the k ids S and one tail bucket, from the scaled student logits
    ``z = s / T`` (N, V), with its gradient in closed form (a step costs about half the tensor passes
    of autograd through log_softmax, gather, scatter and logsumexp):

        L = sum_{i in S} p_i (log p_i - log q_i) + p_tail (log p_tail - log q_tail),  q = softmax(z)
        dL/dz_c = q_c - r_c,  r_c = p_c on S,  r_c = p_tail q_c / q_tail off S  (sum_c r_c = 1)

    ``log_p_top`` (N, k), ``log_p_tail`` (N,) and ``indices`` (N, k) are the teacher's: no gradient.
    """

    @staticmethod
    def forward(ctx, z, log_p_top, log_p_tail, indices):  # noqa: D102
        log_q = F.log_softmax(z, dim=-1)  # (N, V)
        log_q_top = log_q.gather(-1, indices)  # (N, k)
        log_q_tail = _log_tail_mass(log_q, indices)  # (N,)
        per_position = _kl_rows(
            torch.cat([log_p_top, log_p_tail.unsqueeze(-1)], dim=-1),  # (N, k + 1): the tail bucket last
            torch.cat([log_q_top, log_q_tail.unsqueeze(-1)], dim=-1),
        )
        # log(p_tail / q_tail); p_tail = 0 (teacher sure of S) gives r = 0 off S, even where q_tail = 0
        log_ratio = torch.where(torch.isneginf(log_p_tail), log_p_tail, log_p_tail - log_q_tail)
        ctx.save_for_backward(log_q, log_p_top, log_ratio, indices)
        return per_position

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: D102
        log_q, log_p_top, log_ratio, indices = ctx.saved_tensors
        g = grad.unsqueeze(-1)  # (N, 1)
        q = log_q.exp()
        # off S: q_c - p_tail q_c / q_tail = q_c - exp(log q_c + log p_tail - log q_tail); both <= 1, no overflow
        out = (q - (log_q + log_ratio.unsqueeze(-1)).exp()).mul_(g)
        on_s = (log_q.gather(-1, indices).exp() - log_p_top.exp()).mul_(g)  # on S: q_i - p_i
        return out.scatter_(-1, indices, on_s), None, None, None


def topk_forward_kl_tail(
    student_logits: torch.Tensor, teacher: TopKRecord, T: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Top-k forward KL with the tail as one bucket: ``T^2 * mean_n KL(p_n || q_n)`` over k + 1 buckets.

    Buckets: the teacher's k ids S, with exact ``p_i = exp(t_i / T - logsumexp)`` and the
    student's ``q_i``, plus ``p_tail = 1 - sum_S p_i`` against ``q_tail = sum_{c not in S} q_c``.
    :func:`topk_forward_kl` with ``mode="tail"``; needs ``T == teacher.temperature``.
    """
    return topk_forward_kl(student_logits, teacher, T, mask, mode="tail")


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class Divergence:
    """A named divergence: its function, formula text for UIs, and what it needs."""

    name: str
    fn: Callable[..., torch.Tensor]
    formula: str
    needs_full_teacher: bool  # False: takes a TopKRecord instead of full teacher logits
    takes_beta: bool
    uses_temperature: bool = True
    options: tuple[str, ...] = ()  # extra keyword arguments it accepts

    def __call__(
        self,
        student_logits: torch.Tensor,
        teacher: Any,
        T: float,
        mask: torch.Tensor | None = None,
        beta: float = 0.5,
        **options: Any,
    ) -> torch.Tensor:
        """The common signature; ``T`` and ``beta`` are passed on only where they are used."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise ValueError(f"{self.name}: options {unknown} are not valid; valid options: {valid}")
        kwargs = dict(options)
        if self.uses_temperature:
            kwargs["T"] = T
        if self.takes_beta:
            kwargs["beta"] = beta
        return self.fn(student_logits, teacher, mask=mask, **kwargs)


DIVERGENCES: dict[str, Divergence] = {
    d.name: d
    for d in (
        Divergence(
            "kl",
            forward_kl,
            "T^2 * KL(p || q) = T^2 * sum_c p_c log(p_c / q_c)",
            needs_full_teacher=True,
            takes_beta=False,
        ),
        Divergence(
            "reverse_kl",
            reverse_kl,
            "T^2 * KL(q || p) = T^2 * sum_c q_c log(q_c / p_c)",
            needs_full_teacher=True,
            takes_beta=False,
        ),
        Divergence(
            "jsd",
            generalized_jsd,
            "T^2 * [beta KL(p || M) + (1 - beta) KL(q || M)], M = beta p + (1 - beta) q; "
            "beta=0: forward KL, beta=1: reverse KL",
            needs_full_teacher=True,
            takes_beta=True,
        ),
        Divergence(
            "mse",
            centred_logit_mse,
            "mean_c (s'_c - t'_c)^2, logits centred per position (s' = s - mean_c s)",
            needs_full_teacher=True,
            takes_beta=False,
            uses_temperature=False,
        ),
        Divergence(
            "topk_kl",
            topk_forward_kl,
            "T^2 * KL(p || q) over the teacher's top-k classes, p and q both renormalised over them "
            "(topk_kl_tail keeps the rest of the mass as one more class instead)",
            needs_full_teacher=False,
            takes_beta=False,
            options=("mode",),
        ),
        Divergence(
            "topk_kl_tail",
            topk_forward_kl_tail,
            "T^2 * KL(p || q) over the teacher's top-k classes + one bucket for the tail mass "
            "(p_tail = 1 - sum_topk p); T must be the cached record's",
            needs_full_teacher=False,
            takes_beta=False,
        ),
    )
}
TOPK_DIVERGENCES = tuple(name for name, d in DIVERGENCES.items() if not d.needs_full_teacher)


def get_divergence(name: str) -> Divergence:
    """The registered divergence called ``name``; ValueError listing the valid names otherwise."""
    if not isinstance(name, str) or name not in DIVERGENCES:
        raise ValueError(f"divergence: {name!r} is not known; valid names: {', '.join(DIVERGENCES)}")
    return DIVERGENCES[name]
