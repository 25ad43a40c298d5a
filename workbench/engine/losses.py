"""Distillation losses: pure functions of logits/features that return named terms.

All terms are means over rows: the samples of a classifier batch, or the target tokens of a
sequence batch once its (B, L, V) logits are flattened to rows and the ignored positions
dropped (see ``sequence.target_rows``), so a token loss is normalised per token. Conventions (kd-facts.md): the soft term carries an explicit T^2 so
its gradient keeps the same size across temperatures; KL runs from the teacher distribution to
the student's, ``KL(p_t || p_s)``, computed with ``F.kl_div(log p_s, log p_t, log_target=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .divergences import TopKRecord, get_divergence

TERMS = ("ce", "kd", "mse", "hint")


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Hard-label cross-entropy: ``mean_i -log softmax(s_i)[y_i]``."""
    return F.cross_entropy(student_logits, labels)


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``mean_i KL(softmax(t_i/T) || softmax(s_i/T))`` in float32 (no T^2)."""
    if student_logits.dtype != torch.float32:
        student_logits = student_logits.float()
    if teacher_logits.dtype != torch.float32:
        teacher_logits = teacher_logits.float()
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, scale_t2: bool = True
) -> torch.Tensor:
    """Hinton KD: ``T^2 * mean_i KL(softmax(t_i/T) || softmax(s_i/T))``.

    ``KL(p || q) = sum_k p_k (log p_k - log q_k)``; computed in float32 for stability at high T.
    With ``scale_t2=False`` the T^2 factor is omitted (its gradient then shrinks as 1/T^2).
    """
    kl = _kl(student_logits, teacher_logits, temperature)
    return kl * (temperature * temperature) if scale_t2 else kl


def mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Plain output matching on logits: ``mean_{i,k} (s_ik - t_ik)^2``."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def hint_loss(adapted_student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNets feature hint: ``mean (adapter(f_s) - f_t)^2`` over all elements.

    The caller applies the learned adapter; shapes must match exactly.
    """
    if adapted_student_feature.shape != teacher_feature.shape:
        raise ValueError(
            f"hint: adapted student feature shape {tuple(adapted_student_feature.shape)} does not "
            f"match teacher feature shape {tuple(teacher_feature.shape)}"
        )
    return F.mse_loss(adapted_student_feature.float(), teacher_feature.float())


@dataclass(frozen=True)
class LossWeights:
    """Temperature, term weights and the KD term's divergence (and its ``beta``) used by one step."""

    temperature: float = 4.0
    ce: float = 0.5
    kd: float = 0.5
    mse: float = 0.0
    hint: float = 0.0
    divergence: str = "kl"
    beta: float = 0.5

    @classmethod
    def from_alpha(cls, alpha: float, temperature: float = 4.0) -> LossWeights:
        """The popular preset ``alpha * CE + (1 - alpha) * T^2 * KL``."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha: {alpha!r} is outside the valid range [0, 1]")
        return cls(temperature=temperature, ce=alpha, kd=1.0 - alpha)

    def as_dict(self) -> dict[str, float]:
        return {
            "temperature": self.temperature,
            "w_ce": self.ce,
            "w_kd": self.kd,
            "w_mse": self.mse,
            "w_hint": self.hint,
            "divergence": self.divergence,
            "beta": self.beta,
        }


def kd_term(
    student_logits: torch.Tensor, teacher: torch.Tensor | TopKRecord, weights: LossWeights
) -> tuple[torch.Tensor, float]:
    """The KD term ``D(p_t, p_s)`` of ``weights.divergence`` as ``(value without the T^2, T^2 factor)``.

    "kl": ``T^2 * mean_i KL(softmax(t_i/T) || softmax(s_i/T))`` (Hinton, via ``F.kl_div``);
    "reverse_kl": ``T^2 * mean_i KL(q_i || p_i)``; "jsd": ``T^2 * mean_i [beta KL(p_i||M_i) +
    (1-beta) KL(q_i||M_i)]`` with ``M = beta p + (1-beta) q``; "mse": ``mean_i (1/C) sum_c
    (s'_ic - t'_ic)^2`` on centred logits (no T, factor 1); "topk_kl" / "topk_kl_tail": ``T^2 *
    mean_i KL(p_i || q_i)`` over the teacher's top-k ids S, renormalised over S / plus one tail
    bucket ``1 - sum_S p``. ``teacher`` is full logits, or a :class:`TopKRecord` for the top-k ones.
    Rows are samples or target tokens.
    """
    T = weights.temperature
    divergence = get_divergence(weights.divergence)
    if divergence.needs_full_teacher == isinstance(teacher, TopKRecord):
        want = "full teacher logits" if divergence.needs_full_teacher else "the teacher's top-k record"
        raise ValueError(f"divergence: {weights.divergence!r} needs {want}, got {type(teacher).__name__}")
    if weights.divergence == "kl":  # today's Hinton term, bit for bit: T^2 kept apart to fold into the weight
        return _kl(student_logits, teacher, T), T * T
    value = divergence(student_logits, teacher, T, beta=weights.beta)
    return value, 1.0  # the registry's divergences carry their own T^2


def distill_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor | None,
    teacher_logits: torch.Tensor | None,
    weights: LossWeights,
    student_feature: torch.Tensor | None = None,
    teacher_feature: torch.Tensor | None = None,
    kd_student_logits: torch.Tensor | None = None,
    teacher_topk: TopKRecord | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the terms with non-zero weight; returns ``(total, {name: term})``.

    ``total = w_ce*CE(s, y) + w_kd*T^2*KL(p_t||p_s) + w_mse*MSE(s, t) + w_hint*MSE(a(f_s), f_t)``,
    with the KD term of ``weights.divergence`` (:func:`kd_term`). Rows are samples or target tokens.
    ``teacher_topk``: the teacher's cached top-k record of the same rows, read by the top-k
    divergences (the full ``teacher_logits`` may then be None unless the MSE term needs them).
    ``labels`` may be None (no labeled samples in the batch); ``kd_student_logits`` are the
    student's logits on the transfer batch when it differs from the labeled batch.
    Only ``total`` carries gradients; the terms are detached, unweighted values for reporting
    (``kd`` includes its T^2). They stay tensors: the caller syncs when it reports.
    """
    terms: dict[str, torch.Tensor] = {}
    parts: list[tuple[float, torch.Tensor]] = []  # (weight, tensor) summed into the total
    s_kd = student_logits if kd_student_logits is None else kd_student_logits
    if weights.ce > 0 and labels is not None:
        ce = ce_loss(student_logits, labels)
        terms["ce"] = ce.detach()
        parts.append((weights.ce, ce))
    if teacher_logits is not None or teacher_topk is not None:
        if weights.kd > 0:
            topk = not get_divergence(weights.divergence).needs_full_teacher
            kd, scale = kd_term(s_kd, teacher_topk if topk else teacher_logits, weights)
            terms["kd"] = kd.detach() * scale
            parts.append((weights.kd * scale, kd))  # the T^2 folded into the weight: one op
        if weights.mse > 0 and teacher_logits is not None:
            mse = mse_loss(s_kd, teacher_logits)
            terms["mse"] = mse.detach()
            parts.append((weights.mse, mse))
    if weights.hint > 0 and student_feature is not None and teacher_feature is not None:
        hint = hint_loss(student_feature, teacher_feature)
        terms["hint"] = hint.detach()
        parts.append((weights.hint, hint))
    if not parts:
        raise ValueError("loss: every term has weight 0 or lacks its inputs; nothing to train on")
    total = parts[0][0] * parts[0][1]
    for w, term in parts[1:]:
        total = total + w * term
    return total, terms
