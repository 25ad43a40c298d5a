"""Teacher outputs cached as top-k for token data: the KD terms "topk_kl" / "topk_kl_tail" through the
engine against a reference re-derived here from the teacher's full logits, k = V against full forward KL,
cached vs live equality at full vocabulary, live controls refused where no record exists, the output
cache on disk and in memory with its size reported, and how teacher_top_k='auto' resolves."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import Recorder

import workbench as wb
from workbench.data.splits import DataSplits, Split
from workbench.data.text import IGNORE_INDEX
from workbench.engine import teacher_outputs as teacher_outputs_module
from workbench.engine.divergences import TopKRecord
from workbench.models.gpt import GPT
from workbench.store.cache import OutputCache

VOCAB, BLOCK = 11, 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny transformers run many small ops: on a shared 2-core machine one thread is far faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_output_memory():
    OutputCache.clear_memory()
    yield
    OutputCache.clear_memory()


def tiny_gpt(seed, width=16):
    torch.manual_seed(seed)
    return GPT(VOCAB, BLOCK, n_layer=1, n_head=2, n_embd=width)


def token_data(n_train=12, seed=0):
    """Random token blocks; block i ignores its last i % BLOCK targets."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        x = torch.randint(0, VOCAB, (n, BLOCK), generator=g)
        y = torch.randint(0, VOCAB, (n, BLOCK), generator=g)
        for i in range(n):
            if i % BLOCK:
                y[i, BLOCK - i % BLOCK :] = IGNORE_INDEX
        return Split(x, y)

    return DataSplits(train=split(n_train), val=split(6), test=split(6), num_classes=VOCAB, name="toy-tokens")


def one_step_config(**changes):
    """One plain SGD step on every train block at once (so the step's loss is the whole split's)."""
    base = dict(
        epochs=1,
        batch_size=12,
        optimizer="sgd",
        lr=0.1,
        momentum=0.0,
        temperature=1.0,
        w_ce=0.3,
        w_kd=0.7,
        log_every=1,
        sample_tokens=0,
        device="cpu",
    )
    return wb.DistillConfig(**{**base, **changes})


def run(teacher, student, data, cfg, **kwargs):
    rec = Recorder()
    res = wb.Distiller(teacher, student, data, cfg, callbacks=[rec], **kwargs).fit()
    assert res.status == "completed", res.message
    return res, rec


def reference_topk_kl(s, t, mask, k, T, mode):
    """``T^2 * mean over target tokens of KL(P || Q)`` on buckets built here from the FULL teacher
    logits: P, Q are softmax(t/T), softmax(s/T) restricted to the teacher's k largest classes and
    renormalised ("renorm"), or those k classes plus one bucket holding all the rest ("tail")."""
    s, t = s[mask].double(), t[mask].double()  # (N, V)
    p, q = F.softmax(t / T, -1), F.softmax(s / T, -1)
    total = 0.0
    for pr, qr, tr in zip(p, q, t):
        top = torch.argsort(tr, descending=True, stable=True)[:k]
        rest = torch.ones_like(pr, dtype=torch.bool)
        rest[top] = False
        if mode == "renorm":
            a, b = pr[top] / pr[top].sum(), qr[top] / qr[top].sum()
        else:
            a, b = torch.cat([pr[top], pr[rest].sum()[None]]), torch.cat([qr[top], qr[rest].sum()[None]])
        keep = a > 0
        total = total + (a[keep] * (a[keep] / b[keep]).log()).sum()
    return T * T * total / mask.sum()


def sgd_reference(initial, teacher, data, kd_of, w_ce=0.3, w_kd=0.7, lr=0.1):
    """A plain PyTorch step: ``w_ce * CE + w_kd * kd_of(s, t, mask)`` over every target token, then SGD."""
    model = copy.deepcopy(initial)
    x, y = data.train.x, data.train.y
    mask = y != IGNORE_INDEX
    s = model(x)
    with torch.no_grad():
        t = teacher(x)
    kd = kd_of(s, t, mask)
    loss = w_ce * F.cross_entropy(s[mask], y[mask]) + w_kd * kd.float()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    return model, kd.item(), loss.item()


# ----------------------------------------------------------------------------- the KD term from the cache


@pytest.mark.parametrize(("divergence", "mode"), [("topk_kl", "renorm"), ("topk_kl_tail", "tail")])
@pytest.mark.parametrize("k", [1, 3])
def test_topk_kd_step_matches_a_reference_built_from_full_teacher_logits(divergence, mode, k):
    data, teacher, student = token_data(), tiny_gpt(1, width=32), tiny_gpt(2)
    initial = copy.deepcopy(student)
    res, rec = run(teacher, student, data, one_step_config(divergence=divergence, teacher_top_k=k))
    model, kd, loss = sgd_reference(initial, teacher, data, lambda s, t, m: reference_topk_kl(s, t, m, k, 1.0, mode))
    step = rec.of("step")[0]
    assert step.divergence == divergence
    # the engine works in float32, the reference in float64: KL sums p * (log p - log q) with log-probs near
    # log V ~ 2.4, so float32 rounding leaves ~1e-7 absolute on a small KL (0.0034 here: 1.1e-5 relative on
    # one CPU); a wrong bucket or normalisation moves it by orders of magnitude more
    assert step.terms["kd"] == pytest.approx(kd, rel=1e-5, abs=1e-6)
    assert step.loss == pytest.approx(loss, rel=1e-5)
    for a, b in zip(res.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("divergence", ["topk_kl", "topk_kl_tail"])
def test_topk_with_k_equal_to_the_vocabulary_is_full_forward_kl(divergence):
    data, teacher = token_data(), tiny_gpt(1, width=32)
    full, _ = run(teacher, tiny_gpt(2), data, one_step_config(teacher_top_k=None))
    top, rec = run(teacher, tiny_gpt(2), data, one_step_config(divergence=divergence, teacher_top_k=VOCAB))
    assert "top-11 of 11 classes" in rec.of("fit_start")[0].message
    assert top.steps.loss_kd.iloc[0] == pytest.approx(full.steps.loss_kd.iloc[0], rel=1e-5)
    for a, b in zip(top.model.parameters(), full.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_cached_and_live_teacher_agree_at_full_vocabulary():
    data, teacher = token_data(n_train=16), tiny_gpt(1, width=32)
    cfg = one_step_config(epochs=2, batch_size=5, teacher_top_k=None)  # several steps, a short last batch
    cached, rec = run(teacher, tiny_gpt(2), data, cfg)
    live, _ = run(teacher, tiny_gpt(2), data, cfg.replace(cache_teacher=False))
    assert "teacher outputs cached: all 11 classes for 128 positions" in rec.of("fit_start")[0].message
    torch.testing.assert_close(
        torch.tensor(cached.steps.loss_kd.to_numpy()), torch.tensor(live.steps.loss_kd.to_numpy())
    )
    for a, b in zip(cached.model.parameters(), live.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_full_teacher_divergence_on_a_topk_run_queries_the_teacher_live():
    data, teacher = token_data(), tiny_gpt(1, width=32)
    cfg = one_step_config(teacher_top_k=3)  # divergence "kl" needs every class: asked of the teacher live
    topk, _ = run(teacher, tiny_gpt(2), data, cfg)
    full, _ = run(teacher, tiny_gpt(2), data, cfg.replace(teacher_top_k=None))
    assert topk.steps.loss_kd.iloc[0] == pytest.approx(full.steps.loss_kd.iloc[0], rel=1e-6)


def test_two_streams_read_the_record_of_their_own_blocks():
    data, teacher, student = token_data(n_train=16), tiny_gpt(1, width=32), tiny_gpt(2)
    initial = copy.deepcopy(student)
    cfg = one_step_config(batch_size=16, labeled_fraction=0.5, w_ce=0.0, w_kd=1.0)
    _, rec = run(teacher, student, data, cfg.replace(divergence="topk_kl_tail", teacher_top_k=2))
    x, y = data.train.x, data.train.y
    with torch.no_grad():
        want = reference_topk_kl(initial(x), teacher(x), y != IGNORE_INDEX, 2, 1.0, "tail")
    assert rec.of("step")[0].terms["kd"] == pytest.approx(want.item(), rel=1e-5)


# ----------------------------------------------------------------------------- live controls and refusals


def test_live_controls_refuse_what_the_run_cannot_compute_and_change_nothing():
    data, teacher = token_data(), tiny_gpt(1, width=32)
    errors = {}

    class Try:
        def on_step_end(self, p):
            if p.step != 1:
                return
            d = self.distiller
            for name, change in (
                ("tail_T", {"temperature": 2.0}),
                ("tail_T_and_kl", {"divergence": "topk_kl", "temperature": 2.0}),
            ):
                try:
                    d.set_controls(**change)
                    errors[name] = None
                except ValueError as e:
                    errors[name] = str(e)

    cb = Try()
    d = wb.Distiller(teacher, tiny_gpt(2), data, one_step_config(epochs=3, divergence="topk_kl_tail"), callbacks=[cb])
    cb.distiller = d
    res = d.fit()
    assert res.status == "completed", res.message
    assert "temperature: 2.0 cannot be used with divergence 'topk_kl_tail'" in errors["tail_T"]
    assert "keep T=1, or use 'topk_kl'" in errors["tail_T"]
    assert errors["tail_T_and_kl"] is None  # renormalised top-k works at any T
    steps = res.steps.set_index("step")
    assert steps.loc[1, "divergence"] == "topk_kl_tail"
    assert steps.loc[[2, 3], "divergence"].tolist() == ["topk_kl", "topk_kl"]
    assert steps.loc[[2, 3], "temperature"].tolist() == [2.0, 2.0]
    assert d.controls.check is None  # the run's check is gone with the run


def test_a_topk_divergence_is_refused_live_on_a_full_vocabulary_run():
    data, teacher = token_data(), tiny_gpt(1, width=32)
    seen = {}

    class Try:
        def on_step_end(self, p):
            if p.step == 1:
                with pytest.raises(ValueError) as e:
                    self.distiller.set_controls(divergence="topk_kl")
                seen["error"] = str(e.value)
                seen["current"] = self.distiller.controls.current.divergence

    cb = Try()
    d = wb.Distiller(teacher, tiny_gpt(2), data, one_step_config(epochs=2, teacher_top_k=None), callbacks=[cb])
    cb.distiller = d
    assert d.fit().status == "completed"
    assert seen["error"].startswith("divergence: 'topk_kl' needs the teacher's cached top-k outputs, but this run")
    assert "teacher_top_k=None" in seen["error"]
    assert seen["current"] == "kl"


def test_topk_settings_that_cannot_hold_are_refused_before_training():
    data, teacher = token_data(), tiny_gpt(1, width=32)
    with pytest.raises(ValueError, match="teacher_top_k: 12 is more than the 11 classes; use at most 11"):
        wb.Distiller(teacher, tiny_gpt(2), data, one_step_config(teacher_top_k=12))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2), torch.zeros(8).long()))
    tables = DataSplits(train=loader, val=None, test=None, num_classes=2, name="loader")
    mlp = [torch.nn.Sequential(torch.nn.Linear(2, n), torch.nn.ReLU(), torch.nn.Linear(n, 2)) for n in (8, 4)]
    with pytest.raises(ValueError, match="divergence: 'topk_kl' needs the teacher's outputs cached .* a DataLoader"):
        wb.Distiller(*mlp, tables, wb.DistillConfig(divergence="topk_kl", device="cpu"))


# ----------------------------------------------------------------------------- the cache and 'auto'


def test_topk_outputs_are_cached_on_disk_and_in_memory_with_their_size(tmp_path):
    data, teacher = token_data(), tiny_gpt(1, width=32)
    cache = OutputCache(tmp_path)
    cfg = one_step_config(divergence="topk_kl_tail", teacher_top_k=3)
    first, rec = run(teacher, tiny_gpt(2), data, cfg, teacher_key="t1", output_cache=cache)
    info = cache.info()
    (entry,) = info["entries"]
    positions = 12 * BLOCK
    assert (entry["kind"], entry["k"], entry["classes"], entry["positions"]) == ("top-k", 3, VOCAB, positions)
    assert entry["bytes"] == positions * (3 * 4 + 3 * 1 + 4)  # float32 values, uint8 ids, float32 log-sum-exp
    assert info["memory_bytes"] == entry["bytes"] and info["disk_files"] == 1 and info["disk_bytes"] > 0
    message = rec.of("fit_start")[0].message
    assert f"top-3 of 11 classes at T=1 for {positions} positions, 0.0 MB (every class: 0.0 MB)" in message

    OutputCache.clear_memory()  # a new session: read from disk, the teacher is not asked
    record = cache.get(cache.key("t1", data.train.x, None, top_k=3, temperature=1.0))[0]
    assert isinstance(record, TopKRecord) and record.indices.dtype == torch.uint8 and record.k == 3

    class NoTeacher(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the teacher was asked although its outputs are cached")

    OutputCache.clear_memory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stand-in teacher has fewer parameters than the student
        d = wb.Distiller(teacher, tiny_gpt(2), data, cfg, teacher_key="t1", output_cache=cache)
    d.teacher = NoTeacher()  # after the checks before training: the loop must read the cache only
    d.config = d.config.replace(eval_every=None)
    state = d._begin()
    d._setup(state)
    batch = next(iter(state.source.batches(state.device)))
    assert isinstance(batch.t_kd, TopKRecord)
    keys = {cache.key("t1", data.train.x, None, top_k=k, temperature=T) for k, T in ((3, 1.0), (3, 2.0), (4, 1.0))}
    assert len(keys | {cache.key("t1", data.train.x, None)}) == 4  # k and T are part of a top-k entry's key
    assert first.status == "completed"


def test_auto_caches_every_class_within_the_budget_else_the_top_k(monkeypatch):
    data, teacher = token_data(), tiny_gpt(1, width=32)
    full = wb.Distiller(teacher, tiny_gpt(2), data, one_step_config())
    assert full.config.teacher_top_k == "auto" and full.top_k is None
    topk = wb.Distiller(teacher, tiny_gpt(2), data, one_step_config(divergence="topk_kl"))
    assert topk.top_k == VOCAB  # a top-k divergence: min(DEFAULT_TOP_K, V)
    monkeypatch.setattr(teacher_outputs_module, "FULL_OUTPUTS_BUDGET", 100)
    monkeypatch.setattr(teacher_outputs_module, "DEFAULT_TOP_K", 4)
    with pytest.warns(UserWarning, match="divergence 'kl' needs the teacher's full outputs.*queried live"):
        over = wb.Distiller(teacher, tiny_gpt(2), data, one_step_config())
    assert over.top_k == 4
    res, rec = run(teacher, tiny_gpt(2), data, one_step_config(divergence="topk_kl_tail"))
    assert "top-4 of 11 classes" in rec.of("fit_start")[0].message
    text = wb.DistillConfig.for_text()
    assert (text.divergence, text.teacher_top_k, text.temperature) == ("topk_kl", "auto", 1.0)


def test_text_defaults_distill_a_tiny_gpt_with_a_topk_teacher():
    text = wb.from_text("to be or not to be, that is the question. " * 40, block_size=16)
    teacher = GPT(text.num_classes, 16, n_layer=1, n_head=2, n_embd=32)
    torch.manual_seed(0)
    wb.train(teacher, text, wb.DistillConfig.for_text(epochs=2, sample_tokens=0, device="cpu"))
    student = GPT(text.num_classes, 16, n_layer=1, n_head=2, n_embd=16)
    cfg = wb.DistillConfig.for_text(epochs=2, sample_tokens=0, device="cpu", teacher_top_k=4)
    res, rec = run(teacher, student, text, cfg)
    assert res.steps.divergence.unique().tolist() == ["topk_kl"]
    assert np.isfinite(res.summary["val_bpc"]) and "top-4 of" in rec.of("fit_start")[0].message


def test_record_rows_match_a_selection_whether_or_not_the_mask_marks_every_position():
    values = torch.randn(2, 3, 4).sort(dim=-1, descending=True).values
    record = TopKRecord(values, torch.randint(0, 9, (2, 3, 4)), torch.randn(2, 3), 2.0, 9)
    for mask in (torch.ones(2, 3, dtype=torch.bool), torch.tensor([[True, False, True], [False, True, True]])):
        got, expected = record.rows(mask), record.select(mask)
        for name in ("values", "indices", "logsumexp"):
            torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=0, atol=0)
        assert (got.temperature, got.vocab_size) == (2.0, 9)
        assert got.values.shape == (int(mask.sum()), 4)
