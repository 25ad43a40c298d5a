"""Divergences against independent references: numpy float64 sums, hand-derived gradients,
F.kl_div, finite differences and hand loops over token positions."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.engine.divergences import (
    DIVERGENCES,
    TopKRecord,
    centred_logit_mse,
    flatten_positions,
    forward_kl,
    generalized_jsd,
    get_divergence,
    reverse_kl,
    top_k_record,
    topk_forward_kl,
)
from workbench.engine.losses import LossWeights, kd_term

NAMES = ("kl", "reverse_kl", "jsd", "mse", "topk_kl", "topk_kl_tail")


# ---------------------------------------------------------------- references (numpy, float64)


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_kl(a, b):
    """Per row sum_c a_c log(a_c / b_c), skipping a_c == 0."""
    safe_a, safe_b = np.where(a > 0, a, 1.0), np.where(a > 0, b, 1.0)
    return np.where(a > 0, a * np.log(safe_a / safe_b), 0.0).sum(axis=-1)


def np_divergence(name, s, t, T, beta=0.5):
    """Mean over rows of the named divergence, computed in probability space."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    p, q = np_softmax(t / T), np_softmax(s / T)
    if name == "kl":
        rows = T * T * np_kl(p, q)
    elif name == "reverse_kl":
        rows = T * T * np_kl(q, p)
    elif name == "jsd":
        m = beta * p + (1 - beta) * q
        rows = T * T * (beta * np_kl(p, m) + (1 - beta) * np_kl(q, m))
    elif name == "mse":
        d = (s - s.mean(-1, keepdims=True)) - (t - t.mean(-1, keepdims=True))
        rows = (d**2).mean(-1)
    return rows.mean()


def np_topk_kl(s, t, k, T, mode):
    """Top-k forward KL from the FULL teacher logits: buckets built by explicit index sets."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    p, q = np_softmax(t / T), np_softmax(s / T)
    rows = []
    for pr, qr in zip(p, q):
        top = np.argsort(-pr, kind="stable")[:k]
        rest = np.setdiff1d(np.arange(len(pr)), top)
        if mode == "renorm":
            a, b = pr[top] / pr[top].sum(), qr[top] / qr[top].sum()
        else:
            a = np.append(pr[top], pr[rest].sum())
            b = np.append(qr[top], qr[rest].sum())
        rows.append(np_kl(a[None], b[None])[0])
    return T * T * np.mean(rows)


def logits(*shape, seed=0, scale=2.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


def call(name, s, t, T, mask=None, beta=0.5, **options):
    """Call a registry entry; for the top-k ones the teacher logits become a full (k = V) record."""
    teacher = top_k_record(t, t.shape[-1], T) if name.startswith("topk_") else t
    return get_divergence(name)(s, teacher, T, mask=mask, beta=beta, **options)


# ---------------------------------------------------------------- values


def test_forward_kl_hand_computed_one_row():
    s, t, T = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), 2.0
    q = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    p = [1 / (1 + math.e), math.e / (1 + math.e)]
    want = T * T * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert forward_kl(s, t, T).item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "jsd", "mse"])
@pytest.mark.parametrize("T", [1.0, 3.0])
def test_values_match_numpy_reference(name, T):
    s, t = logits(6, 7, seed=1), logits(6, 7, seed=2, scale=3.0)
    got = call(name, s, t, T, beta=0.3)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(np_divergence(name, s, t, T, beta=0.3), rel=1e-5)


def test_forward_kl_matches_functional_kl_div_and_not_reverse():
    s, t, T = logits(8, 10, seed=3), logits(8, 10, seed=4, scale=3.0), 4.0
    ref = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True, reduction="batchmean") * T * T
    torch.testing.assert_close(forward_kl(s, t, T), ref)
    assert abs(forward_kl(s, t, T).item() - reverse_kl(s, t, T).item()) > 1e-3


def test_forward_kl_matches_losses_kd_term():
    losses = pytest.importorskip("workbench.engine.losses")
    s, t, T = logits(8, 10, seed=5), logits(8, 10, seed=6), 4.0
    torch.testing.assert_close(forward_kl(s, t, T), losses.kd_loss(s, t, T))


def test_mse_hand_computed_and_shift_invariant():
    s, t = torch.tensor([[1.0, 2.0, 3.0]]), torch.zeros(1, 3)
    assert centred_logit_mse(s, t).item() == pytest.approx(2.0 / 3.0)  # centred: (-1, 0, 1)
    s2, t2 = logits(4, 5, seed=7), logits(4, 5, seed=8)
    shift = torch.tensor([[3.0], [-2.0], [0.5], [10.0]])
    torch.testing.assert_close(centred_logit_mse(s2 + shift, t2 - shift), centred_logit_mse(s2, t2))


def test_identical_distributions_give_zero():
    t = logits(5, 6, seed=9)
    for name in NAMES:
        assert call(name, t.clone(), t, 2.0).item() == pytest.approx(0.0, abs=1e-6), name


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "jsd", "topk_kl"])
def test_t_squared_scaling(name):
    """At temperature T: T^2 times the same divergence at T = 1 of the logits divided by T."""
    s, t, T = logits(5, 6, seed=10), logits(5, 6, seed=11), 3.0
    at_t = call(name, s, t, T)
    at_one = call(name, s / T, t / T, 1.0)
    torch.testing.assert_close(at_t, T * T * at_one)


# ---------------------------------------------------------------- generalized JSD


def test_jsd_endpoints_are_exactly_forward_and_reverse_kl():
    s, t, T = logits(6, 5, seed=12), logits(6, 5, seed=13), 2.0
    assert torch.equal(generalized_jsd(s, t, T, beta=0.0), forward_kl(s, t, T))
    assert torch.equal(generalized_jsd(s, t, T, beta=1.0), reverse_kl(s, t, T))


def test_jsd_direction_near_the_endpoints():
    """The general formula behaves as beta*KL(p||q) near 0 and (1-beta)*KL(q||p) near 1."""
    s, t, T, eps = logits(6, 5, seed=14, dtype=torch.float64), logits(6, 5, seed=15), 1.0, 1e-5
    near0 = generalized_jsd(s, t, T, beta=eps) / eps
    near1 = generalized_jsd(s, t, T, beta=1 - eps) / eps
    assert near0.item() == pytest.approx(np_divergence("kl", s, t, T), rel=1e-3)
    assert near1.item() == pytest.approx(np_divergence("reverse_kl", s, t, T), rel=1e-3)


def test_jsd_symmetric_and_bounded_at_one_half():
    s, t, T = logits(6, 5, seed=16), logits(6, 5, seed=17, scale=5.0), 2.0
    torch.testing.assert_close(generalized_jsd(s, t, T, beta=0.5), generalized_jsd(t, s, T, beta=0.5))
    assert 0 < generalized_jsd(s, t, T, beta=0.5).item() <= T * T * math.log(2)
    assert abs(generalized_jsd(s, t, T, beta=0.2).item() - generalized_jsd(t, s, T, beta=0.2).item()) > 1e-4


# ---------------------------------------------------------------- gradients


def _grad(name, s, t, T, beta=0.3):
    s = s.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(call(name, s, t, T, beta=beta), s)
    return g


def test_gradients_match_hand_derived_formulas():
    s, t, T = logits(4, 6, seed=18, dtype=torch.float64), logits(4, 6, seed=19, dtype=torch.float64), 2.5
    n, c = s.shape
    p = torch.exp(t / T) / torch.exp(t / T).sum(1, keepdim=True)
    q = torch.exp(s / T) / torch.exp(s / T).sum(1, keepdim=True)
    # d/ds T^2 KL(p||q) = T (q - p), per row, over n rows.
    torch.testing.assert_close(_grad("kl", s, t, T), T * (q - p) / n)
    # d/ds T^2 KL(q||p) = T q (log q/p - KL(q||p)).
    ratio = torch.log(q / p)
    rev = (q * ratio).sum(1, keepdim=True)
    torch.testing.assert_close(_grad("reverse_kl", s, t, T), T * q * (ratio - rev) / n)
    # d/ds mean_c (s' - t')^2 = 2 (s' - t') / C, since the centred difference has mean 0.
    d = (s - s.mean(1, keepdim=True)) - (t - t.mean(1, keepdim=True))
    torch.testing.assert_close(_grad("mse", s, t, T), 2 * d / (c * n))
    torch.testing.assert_close(_grad("topk_kl", s, t, T), T * (q - p) / n)


def test_jsd_gradient_matches_probability_space_reference():
    s, t, T, beta = logits(4, 6, seed=20, dtype=torch.float64), logits(4, 6, seed=21), 2.0, 0.3
    ref_s = s.clone().requires_grad_(True)
    p = torch.softmax(t.double() / T, 1)
    q = torch.exp(ref_s / T) / torch.exp(ref_s / T).sum(1, keepdim=True)
    m = beta * p + (1 - beta) * q
    ref = T * T * (beta * p * torch.log(p / m) + (1 - beta) * q * torch.log(q / m)).sum(1).mean()
    (want,) = torch.autograd.grad(ref, ref_s)
    torch.testing.assert_close(_grad("jsd", s, t, T, beta=beta), want)


@pytest.mark.parametrize("name", NAMES)
def test_finite_difference_gradcheck(name):
    s = logits(3, 4, seed=22, dtype=torch.float64).requires_grad_(True)
    t = logits(3, 4, seed=23, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: call(name, x, t, 1.5, beta=0.4), (s,))


def test_finite_difference_gradcheck_topk_tail():
    s = logits(3, 6, seed=24, dtype=torch.float64).requires_grad_(True)
    record = top_k_record(logits(3, 6, seed=25, dtype=torch.float64), 2, T=1.5)
    assert torch.autograd.gradcheck(lambda x: topk_forward_kl(x, record, 1.5, mode="tail"), (s,))


def _tail_buckets_reference(s, t, k, T, mask):
    """Top-k forward KL with a tail bucket, built in float64 from both full softmaxes with autograd."""
    p, q = torch.softmax(t.double() / T, -1), torch.softmax(s.double() / T, -1)
    top = torch.topk(t.double(), k, dim=-1).indices
    off = torch.ones_like(p).scatter(-1, top, 0.0)
    p_b = torch.cat([p.gather(-1, top), (p * off).sum(-1, keepdim=True)], -1)
    q_b = torch.cat([q.gather(-1, top), (q * off).sum(-1, keepdim=True)], -1)
    per = torch.where(p_b > 0, p_b * (p_b.log() - q_b.log()), torch.zeros_like(p_b)).sum(-1)
    return T * T * per[mask].mean()


@pytest.mark.parametrize(("k", "T"), [(1, 1.0), (3, 2.0), (8, 1.0)])
def test_topk_tail_loss_and_gradient_match_autograd_through_the_buckets(k, T):
    """The tail mode's closed-form gradient vs autograd through a float64 reference, with masked tokens."""
    s = logits(2, 5, 9, seed=60).requires_grad_(True)
    t = logits(2, 5, 9, seed=61, scale=3.0)
    mask = torch.tensor([[True, True, False, True, True], [False, True, True, True, False]])
    loss = topk_forward_kl(s, top_k_record(t, k, T), T, mask, mode="tail")
    ref_s = s.detach().double().requires_grad_(True)
    ref = _tail_buckets_reference(ref_s, t, k, T, mask)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-7)
    (got,) = torch.autograd.grad(loss, s)
    (want,) = torch.autograd.grad(ref, ref_s)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-7)
    assert torch.equal(got[~mask], torch.zeros_like(got[~mask]))


def test_topk_tail_whose_student_tail_underflows_float32_keeps_its_exact_loss_and_gradient():
    """Off-S student logits 100 nats down: exp underflows in float32, the tail mass is taken in log space."""
    t = torch.tensor([[5.0, 4.0, -1.0, -2.0], [0.0, 3.0, 1.0, -4.0]])
    s = torch.tensor([[0.0, 0.0, -100.0, -101.0], [-120.0, 2.0, 1.0, -130.0]], requires_grad=True)
    loss = topk_forward_kl(s, top_k_record(t, 2), 1.0, mode="tail")
    ref_s = s.detach().double().requires_grad_(True)
    ref = _tail_buckets_reference(ref_s, t, 2, 1.0, torch.ones(2, dtype=torch.bool))
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    (got,) = torch.autograd.grad(loss, s)
    (want,) = torch.autograd.grad(ref, ref_s)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


def test_teacher_gets_no_gradient():
    s = logits(3, 4, seed=26).requires_grad_(True)
    t = logits(3, 4, seed=27).requires_grad_(True)
    for name in ("kl", "reverse_kl", "jsd", "mse"):
        (gt,) = torch.autograd.grad(call(name, s, t, 2.0) + 0 * t.sum(), t)
        assert torch.equal(gt, torch.zeros_like(t)), name


# ---------------------------------------------------------------- masking and token positions


def test_flatten_positions_shapes():
    x, m = logits(2, 3, 5), torch.tensor([[True, False, True], [False, False, True]])
    flat, flat_mask = flatten_positions(x, m)
    assert flat.shape == (6, 5) and torch.equal(flat[4], x[1, 1])
    assert flat_mask.tolist() == [True, False, True, False, False, True]
    flat2, none = flatten_positions(x[0])
    assert flat2.shape == (3, 5) and none is None


@pytest.mark.parametrize("name", NAMES)
def test_mask_normalises_per_target_token(name):
    """(B, L, V) with padding == a hand loop over the valid tokens, divided by their count."""
    B, L, V, T = 3, 4, 5, 2.0
    s, t = logits(B, L, V, seed=28), logits(B, L, V, seed=29)
    lengths = [4, 1, 2]
    mask = torch.tensor([[j < n for j in range(L)] for n in lengths])
    total, count = 0.0, 0
    for b in range(B):
        for j in range(L):
            if mask[b, j]:
                if name.startswith("topk_"):
                    mode = "tail" if name == "topk_kl_tail" else "renorm"
                    total += np_topk_kl(s[b, j][None], t[b, j][None], V, T, mode)
                else:
                    total += np_divergence(name, s[b, j][None], t[b, j][None], T)
                count += 1
    got = call(name, s, t, T, mask=mask).item()
    assert got == pytest.approx(total / count, rel=1e-5)
    per_sequence = np.mean([np_divergence("kl", s[b, :n], t[b, :n], T) for b, n in enumerate(lengths)])
    assert abs(call("kl", s, t, T, mask=mask).item() - per_sequence) > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_masked_positions_contribute_nothing_even_if_nan(name):
    s, t = logits(2, 3, 4, seed=30), logits(2, 3, 4, seed=31)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    clean = call(name, s, t, 2.0, mask=mask)
    s_bad, t_bad = s.clone(), t.clone()
    s_bad[~mask], t_bad[~mask] = float("nan"), float("nan")
    s_bad.requires_grad_(True)
    dirty = call(name, s_bad, t_bad, 2.0, mask=mask)
    torch.testing.assert_close(dirty, clean)
    (g,) = torch.autograd.grad(dirty, s_bad)
    assert torch.isfinite(g).all() and torch.equal(g[~mask], torch.zeros_like(g[~mask]))


@pytest.mark.parametrize("name", NAMES)
def test_mask_with_no_target_gives_zero_not_nan(name):
    s = logits(2, 3, 4, seed=32).requires_grad_(True)
    t = logits(2, 3, 4, seed=33)
    loss = call(name, s, t, 2.0, mask=torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    (g,) = torch.autograd.grad(loss, s)
    assert torch.equal(g, torch.zeros_like(s))


# ---------------------------------------------------------------- top-k teacher


def test_top_k_record_contents():
    t, T = logits(2, 3, 7, seed=34), 2.0
    record = top_k_record(t, 3, T)
    flat = t.reshape(-1, 7).numpy().astype(np.float64)
    order = np.argsort(-flat, axis=-1, kind="stable")[:, :3]
    assert record.indices.reshape(-1, 3).tolist() == order.tolist()
    np.testing.assert_allclose(record.values.reshape(-1, 3).numpy(), np.take_along_axis(flat, order, -1), rtol=1e-6)
    want_lse = np.log(np.exp(flat / T).sum(-1))
    np.testing.assert_allclose(record.logsumexp.reshape(-1).numpy(), want_lse, rtol=1e-6)
    assert (record.k, record.vocab_size, record.temperature) == (3, 7, 2.0)
    assert record.logsumexp.shape == (2, 3)


def test_top_k_record_select_and_round_trip(tmp_path):
    record = top_k_record(logits(5, 6, seed=35), 2)
    part = record.select(torch.tensor([4, 0]))
    assert torch.equal(part.values, record.values[[4, 0]]) and part.vocab_size == 6
    torch.save(record.as_dict(), tmp_path / "r.pt")
    back = TopKRecord.from_dict(torch.load(tmp_path / "r.pt", weights_only=True))
    assert torch.equal(back.indices, record.indices) and back.temperature == record.temperature


@pytest.mark.parametrize("mode", ["renorm", "tail"])
def test_topk_with_k_equal_vocab_is_full_forward_kl(mode):
    s, t, T = logits(6, 5, seed=36), logits(6, 5, seed=37), 2.0
    record = top_k_record(t, 5, T)
    torch.testing.assert_close(topk_forward_kl(s, record, T, mode=mode), forward_kl(s, t, T))


@pytest.mark.parametrize(("vocab", "dtype"), [(7, torch.uint8), (300, torch.int16), (40000, torch.int32)])
def test_compact_record_keeps_ids_in_a_small_dtype_and_the_same_loss(vocab, dtype):
    s, t = logits(3, 2, vocab, seed=44), logits(3, 2, vocab, seed=45, scale=3.0)
    record = top_k_record(t, 5, 1.0)
    small = record.compact()
    assert small.indices.dtype == dtype and torch.equal(small.indices.long(), record.indices)
    assert small.nbytes == 3 * 2 * (5 * 4 + 5 * small.indices.element_size() + 4)
    for mode in ("renorm", "tail"):
        assert torch.equal(topk_forward_kl(s, small, 1.0, mode=mode), topk_forward_kl(s, record, 1.0, mode=mode))


@pytest.mark.parametrize("mode", ["renorm", "tail"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_topk_matches_bucket_reference(mode, k):
    s, t, T = logits(6, 7, seed=38), logits(6, 7, seed=39, scale=3.0), 2.0
    got = topk_forward_kl(s, top_k_record(t, k, T), T, mode=mode)
    assert got.item() == pytest.approx(np_topk_kl(s, t, k, T, mode), rel=1e-5, abs=1e-7)


def test_topk_tail_finite_and_nonnegative_with_extreme_logits():
    t = torch.tensor([[1e4, -1e4, 0.0, 5.0], [-3e4, 3e4, 3e4, -3e4], [0.0, 0.0, 0.0, 0.0]])
    s = torch.tensor([[-1e4, 1e4, 0.0, 0.0], [3e4, -3e4, -3e4, 3e4], [80.0, -80.0, 0.0, 0.0]])
    s.requires_grad_(True)
    for k in (1, 2, 3):
        loss = topk_forward_kl(s, top_k_record(t, k), 1.0, mode="tail")
        (g,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and loss.item() >= 0 and torch.isfinite(g).all(), k


def test_bf16_and_fp16_inputs_are_upcast():
    s, t = logits(4, 6, seed=40), logits(4, 6, seed=41)
    for low in (torch.bfloat16, torch.float16):
        s_low, t_low = s.to(low), t.to(low)
        for name in NAMES:
            got = call(name, s_low, t_low, 2.0)
            assert got.dtype == torch.float32, (name, low)
            assert torch.equal(got, call(name, s_low.float(), t_low.float(), 2.0)), (name, low)


# ---------------------------------------------------------------- registry and errors


def test_registry_entries():
    assert tuple(DIVERGENCES) == NAMES
    assert [DIVERGENCES[n].needs_full_teacher for n in NAMES] == [True, True, True, True, False, False]
    assert [n for n in NAMES if DIVERGENCES[n].takes_beta] == ["jsd"]
    assert all(DIVERGENCES[n].formula for n in NAMES)
    s, t = logits(3, 4, seed=42), logits(3, 4, seed=43)
    torch.testing.assert_close(get_divergence("jsd")(s, t, 2.0, beta=0.2), generalized_jsd(s, t, 2.0, beta=0.2))
    torch.testing.assert_close(get_divergence("mse")(s, t, 2.0), centred_logit_mse(s, t))
    record = top_k_record(t, 2, 2.0)
    torch.testing.assert_close(
        get_divergence("topk_kl")(s, record, 2.0, mode="tail"), topk_forward_kl(s, record, 2.0, mode="tail")
    )
    torch.testing.assert_close(get_divergence("topk_kl")(s, record, 2.0), topk_forward_kl(s, record, 2.0))
    torch.testing.assert_close(
        get_divergence("topk_kl_tail")(s, record, 2.0), topk_forward_kl(s, record, 2.0, mode="tail")
    )


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="'kll'.*kl, reverse_kl, jsd, mse, topk_kl, topk_kl_tail"):
        get_divergence("kll")


@pytest.mark.parametrize("T", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_bad_temperature(T):
    s = logits(2, 3)
    with pytest.raises(ValueError, match="T: .* expected a finite number > 0"):
        forward_kl(s, s, T)
    with pytest.raises(ValueError, match="T: "):
        top_k_record(s, 2, T)


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan")])
def test_bad_beta(beta):
    s = logits(2, 3)
    with pytest.raises(ValueError, match=r"beta: .* valid range \[0, 1\]"):
        get_divergence("jsd")(s, s, 1.0, beta=beta)


def test_bad_shapes_and_masks():
    s = logits(2, 3)
    with pytest.raises(ValueError, match=r"student_logits: shape \(3,\)"):
        forward_kl(s[0], s[0], 1.0)
    with pytest.raises(ValueError, match=r"teacher_logits: shape \(2, 4\) does not match"):
        reverse_kl(s, logits(2, 4), 1.0)
    with pytest.raises(ValueError, match="teacher_logits: dtype torch.int64"):
        forward_kl(s, torch.zeros(2, 3, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match=r"mask: shape \(3,\) does not match"):
        forward_kl(s, s, 1.0, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask: torch.int64 .* bool tensor"):
        forward_kl(s, s, 1.0, mask=torch.ones(2, dtype=torch.long))


def test_bad_top_k_inputs():
    s, t = logits(2, 5), logits(2, 5, seed=1)
    for k in (0, 6, 2.0):
        with pytest.raises(ValueError, match=r"k: .* \[1, 5\]"):
            top_k_record(t, k)
    record = top_k_record(t, 2, T=1.0)
    with pytest.raises(ValueError, match="mode: 'bogus'.*renorm, tail"):
        topk_forward_kl(s, record, 1.0, mode="bogus")
    with pytest.raises(ValueError, match="T: 2.0 differs from the record's temperature 1.0"):
        topk_forward_kl(s, record, 2.0, mode="tail")
    topk_forward_kl(s, record, 2.0, mode="renorm")  # renorm works at any T
    with pytest.raises(ValueError, match="vocab_size 5 does not match the student's 6"):
        topk_forward_kl(logits(2, 6), record, 1.0)
    with pytest.raises(ValueError, match="teacher: expected a TopKRecord"):
        topk_forward_kl(s, t, 1.0)
    with pytest.raises(ValueError, match="indices: .* expected an integer tensor"):
        TopKRecord(record.values, record.indices.float(), record.logsumexp, 1.0, 5)
    with pytest.raises(ValueError, match="indices: .* expected an integer tensor"):
        TopKRecord(record.values, record.indices[:, :1], record.logsumexp, 1.0, 5)
    with pytest.raises(ValueError, match="topk_kl: options \\['beta_x'\\] are not valid"):
        get_divergence("topk_kl")(s, record, 1.0, beta_x=1)


# ---------------------------------------------------------------- the engine's KD term


@pytest.mark.parametrize(("name", "beta"), [("kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.3), ("mse", 0.5)])
def test_the_engines_kd_term_is_each_divergence(name, beta):
    """``losses.kd_term`` (what a training step uses) against the numpy reference, T^2 included."""
    s, t = logits(5, 7, seed=3), logits(5, 7, seed=4)
    value, scale = kd_term(s, t, LossWeights(temperature=2.5, divergence=name, beta=beta))
    want = np_divergence(name, s.double().numpy(), t.double().numpy(), 2.5, beta)
    assert (value * scale).item() == pytest.approx(want, rel=1e-5)
    assert scale == (6.25 if name == "kl" else 1.0)  # Hinton's T^2 is folded into the weight
