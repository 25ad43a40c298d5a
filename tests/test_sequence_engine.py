"""Token data in the one engine: per-token losses against a hand loop, each divergence through the
loop against its pure function, live divergence controls, evaluation payloads with bits per
character and a generated sample, a tiny GPT distillation end to end, classifiers unchanged."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import Recorder, mlp, toy_data

import workbench as wb
from workbench.data.splits import DataSplits, Split
from workbench.data.text import IGNORE_INDEX, shakespeare_text
from workbench.engine import divergences as D
from workbench.engine.batches import labeled_subset
from workbench.engine.distiller import Controls
from workbench.engine.events import EvalEnd
from workbench.engine.losses import LossWeights, distill_loss
from workbench.engine.sequence import generate_tokens, target_rows
from workbench.models.gpt import GPT

VOCAB, BLOCK = 11, 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny transformers run many small ops: on a shared 2-core machine one thread is far faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_gpt(seed, width=16, layers=1, vocab=VOCAB, block=BLOCK):
    torch.manual_seed(seed)
    return GPT(vocab, block, n_layer=layers, n_head=2, n_embd=width)


def token_data(n_train=12, seed=0):
    """Random token blocks whose targets have a different number of ignored positions per block."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        x = torch.randint(0, VOCAB, (n, BLOCK), generator=g)
        y = torch.randint(0, VOCAB, (n, BLOCK), generator=g)
        for i in range(n):  # block i ignores its last i % BLOCK positions (block 0: none)
            if i % BLOCK:
                y[i, BLOCK - i % BLOCK :] = IGNORE_INDEX
        return Split(x, y)

    return DataSplits(train=split(n_train), val=split(6), test=split(6), num_classes=VOCAB, name="toy-tokens")


def one_step_config(**changes):
    """One SGD step on the whole train split (a batch of every block, in a permuted order)."""
    base = dict(
        epochs=1,
        batch_size=12,
        optimizer="sgd",
        lr=0.1,
        momentum=0.0,
        temperature=2.0,
        w_ce=0.3,
        w_kd=0.7,
        log_every=1,
        sample_tokens=0,
        device="cpu",
    )
    return wb.DistillConfig(**{**base, **changes})


def first_step(teacher, student, data, cfg):
    """The run and its first StepEnd payload."""
    rec = Recorder()
    res = wb.distill(teacher, student, data, cfg, callbacks=[rec])
    assert res.status == "completed", res.message
    return res, rec


# ----------------------------------------------------------------------------- per-token losses


def hand_loss(s, t, y, T, w_ce, w_kd):
    """``w_ce * CE + w_kd * T^2 * KL(p_t || p_s)``, each summed position by position and divided by
    the number of target tokens; also the per-sequence normalisation, to show they differ."""
    ce_sum, kd_sum, n = 0.0, 0.0, 0
    per_sequence = 0.0
    for b in range(y.shape[0]):
        seq_ce, seq_n = 0.0, 0
        for pos in range(y.shape[1]):
            if y[b, pos] == IGNORE_INDEX:
                continue
            ce = F.cross_entropy(s[b, pos][None], y[b, pos][None])
            kd = F.kl_div(F.log_softmax(s[b, pos] / T, -1), F.softmax(t[b, pos] / T, -1), reduction="sum")
            ce_sum, kd_sum, n = ce_sum + ce, kd_sum + kd, n + 1
            seq_ce, seq_n = seq_ce + ce, seq_n + 1
        per_sequence = per_sequence + seq_ce / seq_n
    ce, kd = ce_sum / n, T * T * kd_sum / n
    return w_ce * ce + w_kd * kd, ce, kd, per_sequence / y.shape[0]


def test_token_losses_and_their_gradient_match_a_hand_loop():
    data = token_data()
    teacher, student = tiny_gpt(1, width=32), tiny_gpt(2)
    reference = copy.deepcopy(student)
    cfg = one_step_config()
    res, rec = first_step(teacher, student, data, cfg)
    step = rec.of("step")[0]

    x, y = data.train.x, data.train.y
    with torch.no_grad():
        t = teacher(x)
    loss, ce, kd, ce_per_sequence = hand_loss(reference(x), t, y, 2.0, 0.3, 0.7)
    assert step.terms["ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert step.terms["kd"] == pytest.approx(kd.item(), rel=1e-5)
    assert step.loss == pytest.approx(loss.item(), rel=1e-5)
    assert abs(ce_per_sequence.item() - ce.item()) > 1e-3  # the test tells the two normalisations apart
    assert step.samples == int((y != IGNORE_INDEX).sum())  # target tokens seen

    loss.backward()  # one plain SGD step on the hand loss gives the engine's weights
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.1 * p.grad
    for a, b in zip(res.model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_target_rows_drop_ignored_positions_in_order():
    logits = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    y = torch.tensor([[1, IGNORE_INDEX, 0], [IGNORE_INDEX, IGNORE_INDEX, 1]])
    rows, labels = target_rows(logits, y)
    torch.testing.assert_close(rows, torch.stack([logits[0, 0], logits[0, 2], logits[1, 2]]))
    assert labels.tolist() == [1, 0, 1]


def test_rows_of_fully_labelled_blocks_are_a_view_in_the_order_of_a_gather():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    y = torch.tensor([[1, 2, 0], [3, 0, 1]])
    flat, labels = target_rows(logits, y)
    assert flat.data_ptr() == logits.data_ptr()  # a view: no copy, no boolean gather
    torch.testing.assert_close(flat, logits[y != IGNORE_INDEX])
    assert labels.tolist() == [1, 2, 0, 3, 0, 1]
    flat.sum().backward()
    torch.testing.assert_close(logits.grad, torch.ones_like(logits))


@pytest.mark.parametrize(
    ("divergence", "beta", "reference"),
    [
        ("kl", 0.5, lambda s, t, m: D.forward_kl(s, t, 2.0, m)),
        ("reverse_kl", 0.5, lambda s, t, m: D.reverse_kl(s, t, 2.0, m)),
        ("jsd", 0.3, lambda s, t, m: D.generalized_jsd(s, t, 2.0, m, beta=0.3)),
        ("jsd", 0.0, lambda s, t, m: D.forward_kl(s, t, 2.0, m)),
        ("jsd", 1.0, lambda s, t, m: D.reverse_kl(s, t, 2.0, m)),
        ("mse", 0.5, lambda s, t, m: D.centred_logit_mse(s, t, m)),
    ],
)
def test_each_divergence_through_the_engine_is_the_pure_function(divergence, beta, reference):
    data = token_data()
    teacher, student = tiny_gpt(1, width=32), tiny_gpt(2)
    initial = copy.deepcopy(student)
    _, rec = first_step(teacher, student, data, one_step_config(w_ce=0.0, w_kd=1.0, divergence=divergence, beta=beta))
    step = rec.of("step")[0]
    x, y = data.train.x, data.train.y
    with torch.no_grad():
        want = reference(initial(x), teacher(x), y != IGNORE_INDEX)
    assert step.divergence == divergence and step.beta == beta
    assert step.terms["kd"] == pytest.approx(want.item(), rel=1e-5, abs=1e-7)
    assert step.loss == pytest.approx(want.item(), rel=1e-5, abs=1e-7)


def test_two_streams_mask_the_kd_blocks_by_their_own_targets():
    """With a labeled fraction, CE sees the labeled blocks and KD every block, each masked by its targets."""
    data = token_data(n_train=16)
    cfg = one_step_config(batch_size=16, labeled_fraction=0.5, w_ce=0.0, w_kd=1.0)
    teacher, student = tiny_gpt(1, width=32), tiny_gpt(2)
    initial = copy.deepcopy(student)
    _, rec = first_step(teacher, student, data, cfg)
    step = rec.of("step")[0]
    x, y = data.train.x, data.train.y
    with torch.no_grad():
        want = D.forward_kl(initial(x), teacher(x), 2.0, y != IGNORE_INDEX)
        unmasked = D.forward_kl(initial(x), teacher(x), 2.0)
    assert step.terms["kd"] == pytest.approx(want.item(), rel=1e-5)
    assert abs(unmasked.item() - want.item()) > 1e-4
    start = rec.of("fit_start")[0]
    assert (start.labeled_size, start.transfer_size) == (8, 16)


def test_labeled_subset_of_blocks_is_seeded_and_refuses_an_empty_one():
    y = token_data(n_train=20).train.y
    a, b = labeled_subset(y, 0.25, seed=3), labeled_subset(y, 0.25, seed=3)
    assert torch.equal(a, b) and len(a) == 5 and a.tolist() == sorted(set(a.tolist()))
    assert not torch.equal(a, labeled_subset(y, 0.25, seed=4))
    with pytest.raises(ValueError, match=r"labeled_fraction: 0\.01 leaves no labeled block of the 20"):
        labeled_subset(y, 0.01, seed=0)


# ----------------------------------------------------------------------------- live controls


def test_set_controls_switches_divergence_and_beta_before_the_next_step():
    data = token_data()
    kept = {}

    class Switch:
        def on_step_end(self, p):
            if p.step == 2:
                kept["student"] = copy.deepcopy(distiller.student)  # the weights step 3 starts from
                distiller.set_controls(divergence="jsd", beta=0.2)

    teacher = tiny_gpt(1, width=32)
    cfg = one_step_config(epochs=4, w_ce=0.0, w_kd=1.0)
    distiller = wb.Distiller(teacher, tiny_gpt(2), data, cfg, callbacks=[Switch()])
    res = distiller.fit()
    steps = res.steps.set_index("step")
    assert steps.loc[[1, 2], "divergence"].tolist() == ["kl", "kl"]
    assert steps.loc[[3, 4], "divergence"].tolist() == ["jsd", "jsd"]
    assert steps.loc[[3, 4], "beta"].tolist() == [0.2, 0.2]
    assert steps.controls_changed.tolist() == [False, False, True, False]
    x, y = data.train.x, data.train.y
    with torch.no_grad():
        want = D.generalized_jsd(kept["student"](x), teacher(x), 2.0, y != IGNORE_INDEX, beta=0.2)
    assert steps.loc[3, "loss_kd"] == pytest.approx(want.item(), rel=1e-5)


def test_controls_validate_divergence_and_beta_and_change_nothing_on_error():
    c = Controls(LossWeights())
    with pytest.raises(ValueError, match=r"divergence: 'kll' is invalid; valid: kl, reverse_kl, jsd, mse"):
        c.update(divergence="kll")
    with pytest.raises(ValueError, match=r"beta: 1\.5 is invalid; expected a number in \[0, 1\]"):
        c.update(divergence="jsd", beta=1.5)
    assert (c.current.divergence, c.current.beta) == ("kl", 0.5)
    w = c.update(divergence="reverse_kl", temperature=3.0)
    assert (w.divergence, w.beta, w.temperature) == ("reverse_kl", 0.5, 3.0)
    d = wb.Distiller(None, tiny_gpt(2), token_data(), one_step_config())
    with pytest.raises(ValueError, match="controls: unknown name"):
        d.set_controls(diverge="jsd")
    assert d.set_controls(beta=0.0).beta == 0.0


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"divergence": "topk"},
            "divergence: 'topk' is invalid; valid: kl, reverse_kl, jsd, mse, topk_kl, topk_kl_tail",
        ),
        (
            {"divergence": "topk_kl", "teacher_top_k": None},
            "divergence: 'topk_kl' needs the teacher's cached top-k outputs, but teacher_top_k=None caches every",
        ),
        ({"divergence": "topk_kl_tail", "cache_teacher": False}, "but cache_teacher=False queries the teacher"),
        ({"divergence": "topk_kl", "mixup_alpha": 0.2}, "but mixup queries the teacher live"),
        ({"teacher_top_k": 0}, "teacher_top_k: 0 is invalid; expected an integer k >= 1 .* None .* 'auto'"),
        ({"teacher_top_k": "all"}, "teacher_top_k: 'all' is invalid"),
        ({"teacher_top_k": 2.0}, "teacher_top_k: 2.0 is invalid"),
        ({"divergence": None}, "divergence: None is invalid"),
        ({"beta": -0.1}, r"beta: -0.1 is invalid; expected a number in \[0, 1\]"),
        ({"beta": "half"}, "beta: 'half' is invalid"),
        ({"sample_tokens": -1}, r"sample_tokens: -1 is invalid; expected an integer in \[0, 2000\]"),
    ],
)
def test_config_errors_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        wb.DistillConfig(**changes)


def test_token_data_refuses_mixup_hints_and_a_wrong_vocabulary():
    data = token_data()
    with pytest.raises(ValueError, match="mixup_alpha: 0.4 cannot be used with token data"):
        wb.Distiller(tiny_gpt(1), tiny_gpt(2), data, one_step_config(mixup_alpha=0.4))
    with pytest.raises(ValueError, match="hint_student, hint_teacher: feature hints are not available for token"):
        wb.Distiller(
            tiny_gpt(1), tiny_gpt(2), data, one_step_config(hint_student="blocks.0", hint_teacher="blocks.0", w_hint=1)
        )
    with pytest.raises(ValueError, match="student: outputs 12 token scores but the data's vocabulary has 11"):
        wb.Distiller(None, tiny_gpt(2, vocab=12), data, one_step_config())


# ----------------------------------------------------------------------------- a tiny GPT distillation


@pytest.fixture(scope="module")
def text():
    return wb.from_text(shakespeare_text()[:3000], block_size=16)


def text_config(**changes):
    return wb.DistillConfig.for_text(**{"epochs": 3, "eval_every": 6, "sample_tokens": 40, "device": "cpu", **changes})


@pytest.fixture(scope="module")
def text_teacher(text):
    torch.manual_seed(0)
    teacher = GPT(text.num_classes, 16, n_layer=1, n_head=2, n_embd=32)
    res = wb.train(teacher, text, text_config())
    assert res.status == "completed", res.message
    return res.model


def test_tiny_gpt_distillation_is_deterministic_and_reports_token_metrics(text, text_teacher):
    def run():
        torch.manual_seed(1)
        student = GPT(text.num_classes, 16, n_layer=1, n_head=2, n_embd=16)
        return wb.distill(text_teacher, student, text, text_config(divergence="jsd", beta=0.5))

    a, b = run(), run()
    assert a.status == b.status == "completed"
    timing = ["run_id", "seconds", "epoch_seconds"]
    assert a.history.drop(columns=timing).equals(b.history.drop(columns=timing))
    assert a.steps.loss.tolist() == b.steps.loss.tolist()

    frame = a.evals
    val = frame[frame.split == "val"]
    assert len(val) >= 2
    last = val.iloc[-1]
    assert last["bpc"] == pytest.approx(last["loss"] / math.log(2))
    for k in ("acc", "agreement", "teacher_acc", "kl", "entropy", "teacher_entropy", "teacher_bpc"):
        assert math.isfinite(last[k]), k
    assert 0 <= last["acc"] <= 1 and 0 <= last["agreement"] <= 1 and last["kl"] >= 0
    assert 0 < last["entropy"] <= math.log(text.num_classes) + 1e-5
    tok = wb.data.text.tokenizer_of(text)
    assert isinstance(last["sample"], str) and len(last["sample"]) == 40
    assert last["sample_prompt"] == tok.decode(text.val.x[0])  # the first val block (16 < 32 tokens)
    assert set(last["sample"]) <= set(tok.chars)
    assert frame[frame.split != "val"]["sample"].isna().all()  # one sample per evaluation, on val
    for key in ("val_bpc", "test_bpc", "train_bpc", "val_agreement", "val_entropy", "val_teacher_entropy"):
        assert key in a.summary, key


def test_the_sample_is_the_models_own_seeded_continuation(text, text_teacher):
    """The payload's sample is what generate_tokens draws for the trained model (same prompt and seed)."""
    torch.manual_seed(1)
    res = wb.train(GPT(text.num_classes, 16, n_layer=1, n_head=2, n_embd=16), text, text_config(), role="baseline")
    last = res.evals[res.evals.split == "val"].iloc[-1]
    tok = wb.data.text.tokenizer_of(text)
    ids = generate_tokens(res.model, text.val.x[0], 40, block_size=16)
    assert last["sample"] == tok.decode(ids)
    teacher_ids = generate_tokens(text_teacher, text.val.x[0], 40, block_size=16)
    assert tok.decode(teacher_ids) != last["sample"]  # another model, another continuation


def test_token_eval_metrics_match_a_plain_reference(text, text_teacher):
    torch.manual_seed(1)
    student = GPT(text.num_classes, 16, n_layer=1, n_head=2, n_embd=16)
    res = wb.distill(text_teacher, student, text, text_config(epochs=1, eval_every=None))
    p = res.evals[res.evals.split == "test"].iloc[-1]
    x, y = text.test.x, text.test.y
    with torch.no_grad():
        s_logp = F.log_softmax(res.model(x), -1)
        t_logp = F.log_softmax(text_teacher(x), -1)
    m = y != IGNORE_INDEX
    nll = F.nll_loss(s_logp[m], y[m])
    assert p["n"] == int(m.sum())
    assert p["loss"] == pytest.approx(nll.item(), rel=1e-5)
    assert p["bpc"] == pytest.approx(nll.item() / math.log(2), rel=1e-5)
    assert p["acc"] == pytest.approx((s_logp[m].argmax(-1) == y[m]).float().mean().item())
    assert p["agreement"] == pytest.approx((s_logp[m].argmax(-1) == t_logp[m].argmax(-1)).float().mean().item())
    kl = (t_logp[m].exp() * (t_logp[m] - s_logp[m])).sum(-1).mean()
    assert p["kl"] == pytest.approx(kl.item(), rel=1e-4)
    assert p["entropy"] == pytest.approx(-(s_logp[m].exp() * s_logp[m]).sum(-1).mean().item(), rel=1e-5)
    assert p["teacher_entropy"] == pytest.approx(-(t_logp[m].exp() * t_logp[m]).sum(-1).mean().item(), rel=1e-5)


def test_experiment_on_text_with_gpt_specs(text):
    cfg = text_config(epochs=1, eval_every=None, sample_tokens=10)
    teacher_cfg = cfg.replace(epochs=15, lr=1e-2)
    exp = wb.Experiment(text, "gpt:1,32", "gpt:1,16", config=cfg, teacher_config=teacher_cfg, cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a teacher no better than chance would warn
        result = exp.run()
    assert result.teacher_val_acc > 0.25, result.teacher_val_acc
    assert [r.status for r in (result.teacher, result.student, result.baseline)] == ["completed"] * 3
    table = result.table()
    assert list(table.columns[:5]) == ["role", "status", "params", "val_bpc", "test_bpc"]
    assert table.test_bpc.notna().all() and table.role.tolist() == ["teacher", "student", "baseline"]
    assert result.student.summary["val_agreement"] is not None
    assert wb.Experiment(text, "gpt:1,32", "gpt:1,16", cache=False).config == wb.DistillConfig.for_text()


# ----------------------------------------------------------------------------- classifiers unchanged


def test_classifier_kd_term_is_todays_hinton_term_bit_for_bit():
    s, t, y = torch.randn(16, 5), torch.randn(16, 5), torch.randint(0, 5, (16,))
    w = LossWeights(temperature=3.0, ce=0.4, kd=0.6)
    total, terms = distill_loss(s, y, t, w)
    kl = F.kl_div(F.log_softmax(s / 3, -1), F.log_softmax(t / 3, -1), reduction="batchmean", log_target=True)
    assert torch.equal(terms["kd"], kl * 9.0)
    assert torch.equal(total, 0.4 * F.cross_entropy(s, y) + 0.6 * 9.0 * kl)


def test_classifier_run_and_eval_payload_are_unchanged():
    """Numbers pinned from the engine before token data joined it (same seeds, CPU)."""
    res = wb.distill(
        mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), wb.DistillConfig(epochs=2, batch_size=16, log_every=1)
    )
    assert res.steps.loss.tolist()[:3] == pytest.approx([0.5943109393119812, 0.5700828433036804, 0.5508400797843933])
    assert res.summary["val_acc"] == 0.28125
    assert res.summary["test_loss"] == pytest.approx(1.0445661544799805, rel=1e-6)
    assert res.summary["test_kl"] == pytest.approx(0.026650119572877884, rel=1e-6)
    assert not any(k.endswith(("bpc", "entropy")) for k in res.summary)
    eval_keys = set(res.evals.dropna(axis=1, how="all").columns)
    assert eval_keys == {
        "event", "run_id", "role", "step", "epoch", "split", "acc", "loss", "n", "seconds",
        "teacher_acc", "agreement", "kl",
    }  # fmt: skip
    payload = EvalEnd("r", "student", 1, 1, "val", 0.5, 1.0, 10, 0.1)
    assert "sample" not in payload.to_dict() and "bpc" not in payload.to_dict()
