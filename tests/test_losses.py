"""Losses against hand-computed values and torch.nn.functional."""

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.engine.losses import LossWeights, ce_loss, distill_loss, hint_loss, kd_loss, mse_loss


def test_ce_hand_computed():
    s = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 2])
    z0 = math.log(math.exp(2) + 2)
    z1 = math.log(math.e + 2)
    want = ((z0 - 2.0) + (z1 - 0.0)) / 2
    assert ce_loss(s, y).item() == pytest.approx(want, rel=1e-6)
    torch.testing.assert_close(ce_loss(s, y), F.cross_entropy(s, y))


def test_kd_hand_computed_one_sample():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])
    T = 2.0
    ps = torch.softmax(s / T, 1)[0].tolist()
    pt = torch.softmax(t / T, 1)[0].tolist()
    kl = sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps))  # KL(p_t || p_s)
    assert kd_loss(s, t, T).item() == pytest.approx(T * T * kl, rel=1e-6)
    assert kd_loss(s, t, T, scale_t2=False).item() == pytest.approx(kl, rel=1e-6)


def test_kd_matches_functional_and_argument_order():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(16, 10, generator=g), 3 * torch.randn(16, 10, generator=g)
    T = 4.0
    ref = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
    torch.testing.assert_close(kd_loss(s, t, T), ref)
    # The reverse direction KL(p_s || p_t) is a different number: argument order matters.
    reverse = F.kl_div(F.log_softmax(t / T, 1), F.softmax(s / T, 1), reduction="batchmean") * T * T
    assert abs(kd_loss(s, t, T).item() - reverse.item()) > 1e-3
    # Zero exactly when the student matches the teacher.
    assert kd_loss(t, t, T).item() == pytest.approx(0.0, abs=1e-6)


def _soft_grad(s, t, T, scale_t2=True):
    s = s.clone().requires_grad_(True)
    kd_loss(s, t, T, scale_t2=scale_t2).backward()
    return s.grad


def test_t_squared_keeps_gradient_size():
    """At T=20, d(T^2 KL)/ds is within 5% of its large-T limit (s~ - t~) / (K * B)."""
    g = torch.Generator().manual_seed(2)
    B, K = 8, 10
    s, t = torch.randn(B, K, generator=g), torch.randn(B, K, generator=g)
    limit = ((s - s.mean(1, keepdim=True)) - (t - t.mean(1, keepdim=True))) / (K * B)
    grad = _soft_grad(s, t, 20.0)
    assert (grad - limit).norm() / limit.norm() < 0.05
    # With T^2 the size is steady across temperatures ...
    g8, g20 = _soft_grad(s, t, 8.0).norm(), grad.norm()
    assert g8 / g20 == pytest.approx(1.0, rel=0.05)
    # ... without it the gradient shrinks as 1/T^2 (Hinton et al. 2015, section 2):
    # doubling T from 10 to 20 divides it by about 4.
    n10 = _soft_grad(s, t, 10.0, scale_t2=False).norm()
    n20 = _soft_grad(s, t, 20.0, scale_t2=False).norm()
    assert n10 / n20 == pytest.approx(4.0, rel=0.05)


def test_mse_and_hint():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[0.0, 2.0], [3.0, 6.0]])
    assert mse_loss(s, t).item() == pytest.approx((1 + 0 + 0 + 4) / 4)
    torch.testing.assert_close(hint_loss(s, t), F.mse_loss(s, t))
    with pytest.raises(ValueError, match=r"hint: .*\(2, 2\).*\(2, 3\)"):
        hint_loss(s, torch.zeros(2, 3))


def test_total_is_weighted_sum_and_alpha_preset():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    fs, ft = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    w = LossWeights(temperature=3.0, ce=0.2, kd=0.7, mse=0.1, hint=0.5)
    total, terms = distill_loss(s, y, t, w, student_feature=fs, teacher_feature=ft)
    assert set(terms) == {"ce", "kd", "mse", "hint"}
    want = (
        0.2 * F.cross_entropy(s, y)
        + 0.7 * 9 * F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="batchmean")
        + 0.1 * F.mse_loss(s, t)
        + 0.5 * F.mse_loss(fs, ft)
    )
    torch.testing.assert_close(total, want)
    # alpha * CE + (1 - alpha) * T^2 * KL
    a = LossWeights.from_alpha(0.9, temperature=4.0)
    total, terms = distill_loss(s, y, t, a)
    assert set(terms) == {"ce", "kd"}
    torch.testing.assert_close(total, 0.9 * F.cross_entropy(s, y) + 0.1 * kd_loss(s, t, 4.0))
    with pytest.raises(ValueError, match=r"alpha: 1.5 .*\[0, 1\]"):
        LossWeights.from_alpha(1.5)


def test_zero_weight_terms_are_not_computed():
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    _, terms = distill_loss(s, y, t, LossWeights(4.0, ce=0.0, kd=1.0))
    assert set(terms) == {"kd"}
    with pytest.raises(ValueError, match="nothing to train on"):
        distill_loss(s, None, None, LossWeights(4.0, ce=0.0, kd=1.0))
