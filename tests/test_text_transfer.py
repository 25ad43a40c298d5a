"""Transfer sets for text: teacher-generated blocks (sequence-level KD) and on-policy KD (GKD's lambda).

Each check runs a tiny seeded GPT on a tiny text and compares with a plain reference: the sampling
loop written out, per-position ``F.kl_div`` sums, a plain PyTorch training loop.
"""

import copy
import math
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import Recorder, toy_data

import workbench as wb
from workbench.data.text import IGNORE_INDEX, shakespeare_text
from workbench.engine import batches as B
from workbench.engine import teacher_outputs as TO
from workbench.engine.distiller import Distiller
from workbench.engine.divergences import top_k_record
from workbench.models.gpt import GPT
from workbench.store.cache import OutputCache

BLOCK, PROMPT = 16, 8  # PROMPT: the generation prompt (GENERATED_PROMPT_TOKENS) and the on-policy one (L // 2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny transformers run many small ops: on a shared 2-core machine one thread is far faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def text():
    """About 700 characters of Shakespeare: 39 train blocks of 16, one val and one test block."""
    return wb.from_text(shakespeare_text()[:700], block_size=BLOCK)


def gpt(vocab, seed, width=16):
    torch.manual_seed(seed)
    return GPT(vocab, BLOCK, n_layer=1, n_head=2, n_embd=width)


class RecordingLM(nn.Module):
    """A language model that keeps a copy of every input it is called on."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.inputs = inner, []

    def forward(self, idx):
        self.inputs.append(idx.detach().clone())
        return self.inner(idx)


def config(**changes):
    base = dict(
        epochs=1,
        batch_size=64,
        optimizer="sgd",
        lr=0.1,
        momentum=0.0,
        temperature=2.0,
        w_ce=0.3,
        w_kd=0.7,
        divergence="kl",
        teacher_top_k=None,
        log_every=1,
        sample_tokens=0,
        eval_batch_size=64,
        device="cpu",
    )
    return wb.DistillConfig(**{**base, **changes})


def record_loss_batches(monkeypatch):
    """Record every Batch that Distiller._loss (the CE and KD terms) receives."""
    seen, original = [], Distiller._loss

    def recording(self, batch, w):
        seen.append(batch)
        return original(self, batch, w)

    monkeypatch.setattr(Distiller, "_loss", recording)
    return seen


def kl_sum(s, t, T):
    """``sum_c p_c (log p_c - log q_c)`` for one position, p = softmax(t/T), q = softmax(s/T)."""
    return F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="sum")


def hand_kd(student, teacher, blocks, masks, T):
    """``T^2 * mean`` over the masked positions of ``blocks`` of the per-position KL, one position at a time."""
    with torch.no_grad():
        s, t = student(blocks), teacher(blocks)
    total, n = 0.0, 0
    for b in range(len(blocks)):
        for pos in range(blocks.shape[1]):
            if masks[b, pos]:
                total, n = total + kl_sum(s[b, pos], t[b, pos], T), n + 1
    return T * T * total / n


def rows_in(rows, table):
    """Whether each row of ``rows`` is a row of ``table``."""
    return [(table == r).all(1).any().item() for r in rows]


# ----------------------------------------------------------------------------- teacher-generated blocks


def reference_generation(teacher, train_x, blocks, temperature, seed):
    """The documented procedure written out: one generator draws the prompts' blocks and offsets, then
    each next token from softmax(logits / T) at the last position."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(train_x), (blocks,), generator=g)
    starts = torch.randint(0, BLOCK - PROMPT + 1, (blocks,), generator=g)
    out = torch.stack([train_x[r, s : s + PROMPT] for r, s in zip(rows.tolist(), starts.tolist())])
    teacher.eval()
    with torch.no_grad():
        while out.shape[1] < BLOCK:
            probs = F.softmax(teacher(out)[:, -1, :] / temperature, dim=-1)
            out = torch.cat([out, torch.multinomial(probs, 1, generator=g)], dim=1)
    return out


def test_teacher_text_is_the_seeded_sampling_loop_and_differs_across_seeds(text):
    teacher = gpt(text.num_classes, 1, width=32)
    a = wb.teacher_text(text, teacher, blocks=6, temperature=0.8, seed=3)
    again = wb.teacher_text(text, teacher, blocks=6, temperature=0.8, seed=3)
    other = wb.teacher_text(text, teacher, blocks=6, temperature=0.8, seed=4)
    want = reference_generation(teacher, text.train.x, 6, 0.8, seed=3)
    assert a.unlabeled.dtype == torch.int64 and a.unlabeled.shape == (6, BLOCK)
    assert torch.equal(a.unlabeled, want) and torch.equal(again.unlabeled, want)
    assert not torch.equal(other.unlabeled, want)
    assert not torch.equal(wb.teacher_text(text, teacher, blocks=6, temperature=1.5, seed=3).unlabeled, want)
    # the splits are the data's own; the spec says how the blocks were made
    assert a.train is text.train and a.val is text.val and a.test is text.test
    assert a.spec["teacher_text"] == {"blocks": 6, "temperature": 0.8, "seed": 3, "prompt_tokens": PROMPT}
    # a second call adds to the blocks already there
    both = wb.teacher_text(a, teacher, blocks=2, seed=5)
    assert torch.equal(both.unlabeled[:6], want) and both.unlabeled.shape == (8, BLOCK)


def test_generated_blocks_enter_the_kd_stream_only_never_ce_val_or_test(text, monkeypatch):
    teacher, student = gpt(text.num_classes, 1, width=32), gpt(text.num_classes, 2)
    generated = wb.teacher_text(text, teacher, blocks=20, temperature=1.0, seed=7).unlabeled
    seen = record_loss_batches(monkeypatch)
    rec = Recorder()
    cfg = config(batch_size=8, generated_blocks=20, seed=7, labeled_fraction=0.5)
    res = wb.distill(teacher, student, text, cfg, callbacks=[rec])
    assert res.status == "completed", res.message
    train = text.train
    steps = math.ceil(len(train) / 8)
    assert len(seen) == steps
    kd_rows, kd_masks = [], []
    for batch in seen:
        assert not any(rows_in(batch.x_ce, generated)), "a generated block reached the CE term"
        for x, y in zip(batch.x_ce, batch.y_ce):  # every CE row is a train block with its own targets
            i = (train.x == x).all(1).nonzero().flatten()
            assert len(i) == 1 and torch.equal(train.y[i[0]], y)
        kd_rows.append(batch.x_kd)
        kd_masks.append(batch.kd_mask)
    x_kd, m_kd = torch.cat(kd_rows), torch.cat(kd_masks)
    assert len(x_kd) == steps * 8 < len(train) + 20  # part of one pass over the KD pool: no block twice
    assert len(torch.unique(x_kd, dim=0)) == len(x_kd)
    from_generated = torch.tensor(rows_in(x_kd, generated))
    assert all(rows_in(x_kd[~from_generated], train.x))  # the KD pool: the train blocks and the generated ones
    assert 0 < from_generated.sum() < len(x_kd)
    assert m_kd[from_generated].all()  # every position of a generated block is a KD target
    for x, m in zip(x_kd[~from_generated], m_kd[~from_generated]):
        i = (train.x == x).all(1).nonzero().flatten()[0]
        assert torch.equal(m, train.y[i] != IGNORE_INDEX)  # a train block: its target positions
    start = rec.of("fit_start")[0]
    assert (start.labeled_size, start.transfer_size) == (round(0.5 * len(train)), len(train) + 20)
    assert "20 teacher-generated blocks" in start.message
    # evaluations count the held-out splits' own target tokens: no generated block there
    evals = {p.split: p.n for p in rec.of("eval")}
    for name in ("val", "test", "train"):
        split = getattr(text, name)
        assert evals[name] == int((split.y != IGNORE_INDEX).sum())


@pytest.mark.parametrize("divergence", ["kl", "topk_kl"])
def test_kd_term_on_generated_blocks_is_a_per_position_kl(text, divergence):
    """One step on the whole pool: KD averages the per-position KL over the train blocks' targets and
    every position of the generated blocks; CE sees the train blocks only."""
    teacher, student = gpt(text.num_classes, 1, width=32), gpt(text.num_classes, 2)
    initial = copy.deepcopy(student)
    top_k = 5 if divergence == "topk_kl" else None
    cfg = config(divergence=divergence, teacher_top_k=top_k, generated_blocks=10, seed=1, max_steps=1)
    rec = Recorder()
    res = wb.distill(teacher, student, text, cfg, callbacks=[rec])
    assert res.status == "completed", res.message
    step = rec.of("step")[0]
    generated = wb.teacher_text(text, teacher, blocks=10, seed=1).unlabeled
    x = torch.cat([text.train.x, generated])
    mask = torch.cat([text.train.y != IGNORE_INDEX, torch.ones_like(generated, dtype=torch.bool)])
    T = 2.0
    with torch.no_grad():
        s, t = initial(x), teacher(x)
    total, n = 0.0, 0
    for b in range(len(x)):
        for pos in range(BLOCK):
            if not mask[b, pos]:
                continue
            if top_k is None:
                total += kl_sum(s[b, pos], t[b, pos], T)
            else:  # renormalised over the teacher's top k ids: p = softmax(t_S/T), q = softmax(s_S/T)
                ids = torch.topk(t[b, pos], top_k).indices
                total += kl_sum(s[b, pos, ids], t[b, pos, ids], T)
            n += 1
    want = T * T * total / n
    assert n == int((text.train.y != IGNORE_INDEX).sum()) + 10 * BLOCK
    assert step.terms["kd"] == pytest.approx(want.item(), rel=1e-5)
    without_last = hand_kd(initial, teacher, generated, torch.arange(BLOCK).expand(10, -1) < BLOCK - 1, T)
    assert abs(step.terms["kd"] - without_last.item()) > 1e-4  # the test tells "every position" apart
    ce = F.cross_entropy(s[: len(text.train)][text.train.y != IGNORE_INDEX], text.train.y[text.train.y != IGNORE_INDEX])
    assert step.terms["ce"] == pytest.approx(ce.item(), rel=1e-5)
    positions = (len(text.train) + 10) * BLOCK
    assert f"for {positions:,} positions" in rec.of("fit_start")[0].message  # cached with the train blocks


def test_generated_blocks_in_the_config_are_teacher_text_in_the_data(text):
    """``generated_blocks`` (seeded by the run's seed) trains exactly like ``teacher_text`` data."""
    teacher = gpt(text.num_classes, 1, width=32)
    cfg = config(batch_size=8, labeled_fraction=0.5, seed=2, divergence="topk_kl", teacher_top_k=4)
    a = wb.distill(teacher, gpt(text.num_classes, 2), text, cfg.replace(generated_blocks=12, generate_temperature=0.9))
    data = wb.teacher_text(text, teacher, blocks=12, temperature=0.9, seed=2)
    b = wb.distill(teacher, gpt(text.num_classes, 2), data, cfg)
    c = wb.distill(teacher, gpt(text.num_classes, 2), data, cfg.replace(use_unlabeled=False))
    assert a.status == b.status == c.status == "completed"
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(a.model.parameters(), c.model.parameters()))


def test_generated_blocks_are_made_once_per_teacher_and_cached(text, tmp_path, monkeypatch):
    teacher = gpt(text.num_classes, 1, width=32)
    calls = []
    sample = TO.continue_blocks

    def counting(*args, **kwargs):
        calls.append(1)
        return sample(*args, **kwargs)

    monkeypatch.setattr(TO, "continue_blocks", counting)
    cfg = config(max_steps=2, generated_blocks=6, seed=4)

    def run():
        rec = Recorder()
        cache = OutputCache(tmp_path / "outputs")
        d = wb.Distiller(teacher, gpt(text.num_classes, 2), text, cfg, [rec], teacher_key="t1", output_cache=cache)
        assert d.fit().status == "completed"
        return d, rec

    first, _ = run()
    OutputCache.clear_memory()  # the second run reads the disk
    second, _ = run()
    assert len(calls) == 1
    for p, q in zip(first.student.parameters(), second.student.parameters()):
        assert torch.equal(p, q)
    OutputCache.clear_memory()


# ----------------------------------------------------------------------------- on-policy KD


def plain_loop(teacher, student, data, cfg, steps):
    """Today's one-stream token step written out: CE and ``T^2 KL`` on the target rows, SGD, the
    batch order of a generator seeded with ``cfg.seed``, the teacher queried on each batch."""
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=0.0)
    x_all, y_all = data.train.x, data.train.y
    order, pos, T = None, len(x_all), cfg.temperature
    for _ in range(steps):
        if pos >= len(x_all):
            order, pos = torch.randperm(len(x_all), generator=g), 0
        idx = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        x, y = x_all[idx], y_all[idx]
        with torch.no_grad():
            t = teacher(x).float()
        s = student(x)
        mask = y != IGNORE_INDEX
        ce = F.cross_entropy(s[mask], y[mask])
        kl = F.kl_div(
            F.log_softmax(s[mask] / T, -1), F.log_softmax(t[mask] / T, -1), reduction="batchmean", log_target=True
        )
        loss = cfg.w_ce * ce + (cfg.w_kd * T * T) * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return student


def test_on_policy_zero_trains_exactly_like_the_plain_loop(text):
    teacher, student = gpt(text.num_classes, 1, width=32), gpt(text.num_classes, 2)
    reference = plain_loop(teacher, copy.deepcopy(student), text, config(batch_size=16), steps=5)
    cfg = config(batch_size=16, on_policy=0.0, cache_teacher=False, max_steps=5, epochs=3)
    res = wb.distill(teacher, student, text, cfg)
    assert res.status == "completed" and res.summary["steps"] == 5
    for p, q in zip(res.model.parameters(), reference.parameters()):
        assert torch.equal(p, q)


def reference_policy_samples(student, x, seed):
    """The student's continuation of each block's first half, written out with the documented generator."""
    g = torch.Generator().manual_seed(seed + B.ON_POLICY_SEED_OFFSET)
    out = x[:, : BLOCK // 2]
    student.eval()
    with torch.no_grad():
        while out.shape[1] < BLOCK:
            probs = F.softmax(student(out)[:, -1, :], dim=-1)
            out = torch.cat([out, torch.multinomial(probs, 1, generator=g)], dim=1)
    return out


def test_on_policy_one_makes_the_kd_batch_the_students_samples_scored_by_the_teacher(text, monkeypatch):
    teacher, student = RecordingLM(gpt(text.num_classes, 1, width=32)), gpt(text.num_classes, 2)
    initial = copy.deepcopy(student)
    n = len(text.train)
    seen = record_loss_batches(monkeypatch)
    rec = Recorder()
    cfg = config(batch_size=n, on_policy=1.0, seed=5, max_steps=1)
    res = wb.distill(teacher, student, text, cfg, callbacks=[rec])
    assert res.status == "completed", res.message
    order = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    x, y = text.train.x[order], text.train.y[order]  # the step's batch of real blocks
    sampled = reference_policy_samples(copy.deepcopy(initial), x, seed=5)
    batch = seen[0]
    assert torch.equal(batch.x_ce, x) and torch.equal(batch.y_ce, y)  # CE: the real text
    assert torch.equal(batch.x_kd, sampled)  # KD: the student's own continuations
    assert torch.equal(batch.x_kd[:, :PROMPT], x[:, :PROMPT]) and not torch.equal(batch.x_kd, x)
    want_mask = torch.zeros(n, BLOCK, dtype=torch.bool)
    want_mask[:, PROMPT - 1 : BLOCK - 1] = True  # the positions whose next token the student drew
    assert torch.equal(batch.kd_mask, want_mask)
    assert any(torch.equal(inp, sampled) for inp in teacher.inputs)  # the teacher scored the samples
    step = rec.of("step")[0]
    kd = hand_kd(initial, teacher.inner, sampled, want_mask, 2.0)
    assert step.terms["kd"] == pytest.approx(kd.item(), rel=1e-5)
    with torch.no_grad():
        s = initial(x)
    ce = F.cross_entropy(s[y != IGNORE_INDEX], y[y != IGNORE_INDEX])
    assert step.terms["ce"] == pytest.approx(ce.item(), rel=1e-5)


def test_on_policy_share_continues_the_first_blocks_and_keeps_the_cached_rest(text, monkeypatch):
    teacher, student = gpt(text.num_classes, 1, width=32), gpt(text.num_classes, 2)
    seen = record_loss_batches(monkeypatch)
    cfg = config(batch_size=10, on_policy=0.25, divergence="topk_kl", teacher_top_k=4, max_steps=3)
    res = wb.distill(teacher, student, text, cfg)
    assert res.status == "completed", res.message
    k = math.floor(0.25 * 10 + 0.5)  # 3 of each batch's 10 blocks
    for batch in seen:
        assert batch.x_kd.shape == batch.x_ce.shape == (10, BLOCK)
        assert torch.equal(batch.x_kd[k:], batch.x_ce[k:])  # the rest: the real blocks...
        assert torch.equal(batch.kd_mask[k:], batch.y_ce[k:] != IGNORE_INDEX)  # ...and their targets
        assert torch.equal(batch.x_kd[:k, :PROMPT], batch.x_ce[:k, :PROMPT])
        assert not torch.equal(batch.x_kd[:k], batch.x_ce[:k])
        with torch.no_grad():
            t = teacher(batch.x_kd)
        want = top_k_record(t, 4, 2.0)
        assert torch.equal(batch.t_kd.indices.long(), want.indices)  # the teacher's top-4 on every row
        torch.testing.assert_close(batch.t_kd.values, want.values)


def test_on_policy_runs_are_seeded_and_differ_from_off_policy(text):
    teacher = gpt(text.num_classes, 1, width=32)

    def run(on_policy, seed=0):
        cfg = config(batch_size=8, labeled_fraction=0.5, on_policy=on_policy, seed=seed, max_steps=4)
        res = wb.distill(teacher, gpt(text.num_classes, 2), text, cfg)
        assert res.status == "completed", res.message
        return [p.detach().clone() for p in res.model.parameters()]

    a, b, off, other_seed = run(0.5), run(0.5), run(0.0), run(0.5, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert any(not torch.equal(p, q) for p, q in zip(a, off))
    assert any(not torch.equal(p, q) for p, q in zip(a, other_seed))


# ----------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "field,value,valid",
    [
        ("generated_blocks", -1, r"\[0, 20,000\]"),
        ("generated_blocks", 2.5, r"\[0, 20,000\]"),
        ("generated_blocks", True, r"\[0, 20,000\]"),
        ("generate_temperature", 0, r"\[0.01, 100\]"),
        ("generate_temperature", float("nan"), "finite"),
        ("on_policy", -0.1, r"\[0, 1\]"),
        ("on_policy", 1.5, r"\[0, 1\]"),
        ("on_policy", "half", "number"),
    ],
)
def test_config_refuses_bad_values_naming_the_field(field, value, valid):
    with pytest.raises(ValueError, match=rf"^{field}: {re.escape(repr(value))}.*{valid}"):
        wb.DistillConfig(**{field: value})


def test_classifier_data_and_one_token_blocks_refuse_text_transfer(text):
    data = toy_data()
    for name, value in (("generated_blocks", 5), ("on_policy", 0.5)):
        with pytest.raises(ValueError, match=rf"^{name}: {value!r} needs token data"):
            wb.Distiller(nn.Linear(8, 3), nn.Linear(8, 3), data, config(**{name: value}))
    ones = wb.from_text(shakespeare_text()[:300], block_size=1)
    with pytest.raises(ValueError, match=r"^on_policy: 0.5 needs blocks of at least 2 tokens"):
        wb.Distiller(GPT(ones.num_classes, 1, 1, 2, 16), GPT(ones.num_classes, 1, 1, 2, 8), ones, config(on_policy=0.5))


def test_teacher_text_and_unlabeled_blocks_refuse_bad_input(text):
    teacher = gpt(text.num_classes, 1, width=32)
    with pytest.raises(ValueError, match=r"^blocks: 0 is invalid; expected an integer >= 1"):
        wb.teacher_text(text, teacher, blocks=0)
    with pytest.raises(ValueError, match=r"^temperature: 0 is invalid; expected a number in \[0.01, 100\]"):
        wb.teacher_text(text, teacher, blocks=2, temperature=0)
    with pytest.raises(ValueError, match=r"^temperature: 1e-300 is invalid"):  # softmax(logits / T) would be NaN
        wb.teacher_text(text, teacher, blocks=2, temperature=1e-300)
    with pytest.raises(ValueError, match=r"^blocks: 1000000 is invalid; expected at most 20,000"):
        wb.teacher_text(text, teacher, blocks=10**6)
    with pytest.raises(ValueError, match=r"^batch_size: -1 is invalid; expected an integer >= 1"):
        wb.teacher_text(text, teacher, blocks=2, batch_size=-1)
    with pytest.raises(ValueError, match=r"^data: .* expected token data"):
        wb.teacher_text(wb.as_splits(toy_data()), teacher, blocks=2)
    with pytest.raises(ValueError, match=r"^teacher: expected a torch.nn.Module"):
        wb.teacher_text(text, "gpt", blocks=2)
    bad = text.with_(unlabeled=torch.full((2, BLOCK), text.num_classes))
    with pytest.raises(ValueError, match=rf"^unlabeled: expected whole token ids 0..{text.num_classes - 1}"):
        wb.Distiller(teacher, gpt(text.num_classes, 2), bad, config())
