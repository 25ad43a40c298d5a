"""The fit loop: event order, a plain-PyTorch reference, determinism, statuses, the teacher."""

import io
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import Recorder, mlp, toy_data
from torch.utils.data import DataLoader, TensorDataset

from workbench import DistillConfig, Distiller, distill, train
from workbench.engine.callbacks import EarlyStopping, JsonlWriter, ProgressBar


def test_exact_event_order():
    data = toy_data(n_train=20)
    rec = Recorder()
    res = distill(
        mlp(hidden=32, seed=1), mlp(seed=2), data, DistillConfig(epochs=2, batch_size=8, log_every=2), callbacks=[rec]
    )
    got = [(k, getattr(p, "step", None), getattr(p, "split", None)) for k, p in rec.calls]
    assert got == [
        ("fit_start", None, None),
        ("step", 2, None),
        ("epoch", 3, None),
        ("eval", 3, "val"),
        ("eval", 3, "test"),
        ("step", 4, None),
        ("step", 6, None),
        ("epoch", 6, None),
        ("eval", 6, "val"),
        ("eval", 6, "test"),
        ("eval", 6, "train"),
        ("fit_end", 6, None),
    ]
    start, end = rec.of("fit_start")[0], rec.of("fit_end")[0]
    assert (start.steps_per_epoch, start.steps_planned, start.train_size) == (3, 6, 20)
    assert end.status == "completed" and res.status == "completed"
    assert end.final["test_acc"] == rec.of("eval")[-2].acc


def test_payloads_are_plain_and_immutable():
    rec = Recorder()
    distill(mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), DistillConfig(epochs=1, log_every=1), callbacks=[rec])
    step = rec.of("step")[0]
    with pytest.raises(Exception):
        step.loss = 0.0
    with pytest.raises(TypeError):
        step.terms["kd"] = 0.0
    for _kind, p in rec.calls:
        d = p.to_dict()
        json.dumps(d)  # plain numbers and strings only
        for v in d.values():
            assert not isinstance(v, torch.Tensor)
    assert set(step.terms) == {"ce", "kd"}
    assert step.loss == pytest.approx(0.5 * step.terms["ce"] + 0.5 * step.terms["kd"], rel=1e-5)


def _reference_loop(teacher, student, data, epochs, bs, lr, T, w_ce, w_kd, seed, switch=None):
    """A plain PyTorch loop doing the engine's math (optionally switching T after ``switch`` steps)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = data["train"]
    teacher.eval()
    with torch.no_grad():
        t_all = teacher(x)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            if switch and step == switch[0]:
                T = switch[1]
            s = student(x[idx])
            kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t_all[idx] / T, 1), reduction="batchmean")
            loss = w_ce * F.cross_entropy(s, y[idx]) + w_kd * T * T * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return student


def test_matches_plain_pytorch_loop():
    data = toy_data()
    cfg = DistillConfig(epochs=3, batch_size=16, lr=1e-2, temperature=3.0, w_ce=0.3, w_kd=0.7, seed=5)
    res = distill(mlp(hidden=32, seed=1), mlp(seed=2), data, cfg)
    ref = _reference_loop(mlp(hidden=32, seed=1), mlp(seed=2), data, 3, 16, 1e-2, 3.0, 0.3, 0.7, seed=5)
    for a, b in zip(res.model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)


def test_live_temperature_change_reaches_the_math_at_the_next_step():
    class SetT:
        def __init__(self):
            self.d = None

        def on_step_end(self, p):
            if p.step == 4:
                self.d.set_controls(temperature=9.0)

    data = toy_data()
    cfg = DistillConfig(epochs=2, batch_size=16, lr=1e-2, temperature=2.0, w_ce=0.5, w_kd=0.5, seed=3, log_every=4)
    cb = SetT()
    d = Distiller(mlp(hidden=32, seed=1), mlp(seed=2), data, cfg, callbacks=[cb])
    cb.d = d
    res = d.fit()
    ref = _reference_loop(
        mlp(hidden=32, seed=1), mlp(seed=2), data, 2, 16, 1e-2, 2.0, 0.5, 0.5, seed=3, switch=(4, 9.0)
    )
    for a, b in zip(res.model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)
    steps = res.steps
    # The first step with the new value is reported even though log_every=4 would skip it.
    changed = steps[steps.controls_changed]
    assert changed.step.tolist() == [5] and changed.temperature.tolist() == [9.0]
    assert steps[steps.step <= 4].temperature.eq(2.0).all()
    assert steps[steps.step >= 5].temperature.eq(9.0).all()


def test_deterministic_history():
    def run():
        return distill(
            mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), DistillConfig(epochs=3, log_every=1, seed=7)
        ).history

    a, b = run(), run()
    timing = ["run_id", "seconds", "epoch_seconds"]
    assert a.drop(columns=timing).equals(b.drop(columns=timing))
    c = distill(mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), DistillConfig(epochs=3, log_every=1, seed=8))
    assert not a.drop(columns=timing).equals(c.history.drop(columns=timing))


def test_teacher_is_frozen_and_unchanged():
    teacher = mlp(hidden=32, seed=1)
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    modes = []

    class Watch:
        def on_step_end(self, p):
            modes.append(teacher.training)

    distill(teacher, mlp(seed=2), toy_data(), DistillConfig(epochs=2, log_every=1), callbacks=[Watch()])
    assert modes and not any(modes)  # eval mode throughout
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.requires_grad for p in teacher.parameters())  # the user's flags are restored
    assert all(p.grad is None for p in teacher.parameters())


def test_uncached_teacher_and_dataloader_give_same_math():
    data = toy_data()
    cfg = DistillConfig(epochs=2, batch_size=16, seed=4)
    a = distill(mlp(hidden=32, seed=1), mlp(seed=2), data, cfg)
    b = distill(mlp(hidden=32, seed=1), mlp(seed=2), data, cfg.replace(cache_teacher=False))
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q)
    loader = DataLoader(
        TensorDataset(*data["train"]), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    c = distill(mlp(hidden=32, seed=1), mlp(seed=2), {"train": loader, "val": data["val"]}, cfg)
    assert c.status == "completed" and c.summary["val_acc"] > 0
    assert set(c.evals.split) == {"val", "train"}


class TupleOut(nn.Module):
    def __init__(self, m, kind):
        super().__init__()
        self.m, self.kind = m, kind

    def forward(self, x):
        z = self.m(x)
        if self.kind == "tuple":
            return z, x
        if self.kind == "dict":
            return {"logits": z, "hidden": x}

        class Out:
            logits = z

        return Out()


@pytest.mark.parametrize("kind", ["tuple", "dict", "object"])
def test_models_returning_tuples_dicts_objects(kind):
    data = toy_data()
    cfg = DistillConfig(epochs=2, seed=1)
    plain = distill(mlp(hidden=32, seed=1), mlp(seed=2), data, cfg)
    wrapped = distill(TupleOut(mlp(hidden=32, seed=1), kind), TupleOut(mlp(seed=2), kind), data, cfg)
    for p, q in zip(plain.model.parameters(), wrapped.model.parameters()):
        torch.testing.assert_close(p, q)


class Bomb(nn.Module):
    """An MLP that returns NaN (or raises) on its n-th training forward."""

    def __init__(self, n, mode):
        super().__init__()
        self.m, self.n, self.mode, self.calls = mlp(seed=2), n, mode, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls >= self.n:
                if self.mode == "raise":
                    raise RuntimeError(f"boom at call {self.calls}")
                return self.m(x) * float("nan")
        return self.m(x)


def test_divergence_ends_with_status_and_keeps_history():
    res = distill(mlp(hidden=32, seed=1), Bomb(8, "nan"), toy_data(), DistillConfig(epochs=5, log_every=2))
    assert res.status == "diverged"
    assert "nan" in res.message and "step 8" in res.message
    assert res.steps.step.tolist() == [2, 4, 6]  # what was logged before is kept
    assert res.history.event.tolist().count("epoch") == 3  # 2 steps per epoch


def test_error_ends_with_status_message_and_traceback():
    rec = Recorder()
    res = distill(
        mlp(hidden=32, seed=1), Bomb(5, "raise"), toy_data(), DistillConfig(epochs=5, log_every=1), callbacks=[rec]
    )
    assert res.status == "error" and res.message == "RuntimeError: boom at call 5"
    assert "Traceback" in res.traceback
    assert [p.step for p in rec.of("step")] == [1, 2, 3, 4]
    assert rec.of("fit_end")[0].status == "error"


def test_failing_callback_is_an_error_not_a_crash():
    class Bad:
        def on_eval_end(self, p):
            raise KeyError("oops")

    res = distill(mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), DistillConfig(epochs=2), callbacks=[Bad()])
    assert res.status == "error" and "KeyError" in res.message


def test_stop_from_a_callback_is_honored_within_one_step():
    class StopAt:
        d = None

        def on_step_end(self, p):
            if p.step == 5:
                self.d.stop()

    cb = StopAt()
    d = Distiller(
        mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), DistillConfig(epochs=50, log_every=1), callbacks=[cb]
    )
    cb.d = d
    res = d.fit()
    assert res.status == "stopped" and res.summary["steps"] == 5
    assert "test_acc" in res.summary  # a stopped run still reports its final numbers


def test_early_stopping():
    es = EarlyStopping(monitor="val_loss", patience=2, min_delta=1e9)
    res = distill(mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), DistillConfig(epochs=20), callbacks=[es])
    assert res.status == "stopped" and res.message.startswith("early stopping: val_loss")
    assert res.summary["epochs"] == 3
    with pytest.raises(ValueError, match="monitor: 'val_f1'"):
        EarlyStopping(monitor="val_f1")


def test_jsonl_writer_and_progress_bar(tmp_path):
    path = tmp_path / "m" / "metrics.jsonl"
    out = io.StringIO()
    distill(
        mlp(hidden=32, seed=1),
        mlp(seed=2),
        toy_data(),
        DistillConfig(epochs=2, log_every=1),
        callbacks=[JsonlWriter(path), ProgressBar(file=out)],
    )
    lines = [json.loads(s) for s in path.read_text().splitlines()]
    assert lines[0]["event"] == "fit_start" and lines[-1]["event"] == "fit_end"
    assert [r["step"] for r in lines if r["event"] == "step"] == list(range(1, 5))
    assert "4/4" in out.getvalue()


def test_teacher_training_is_the_same_loop():
    rec = Recorder()
    res = train(mlp(hidden=32, seed=1), toy_data(), DistillConfig(epochs=30, lr=1e-2), callbacks=[rec])
    assert res.role == "teacher" and res.status == "completed"
    step = rec.of("step")[0]
    assert set(step.terms) == {"ce"} and step.w_ce == 1.0 and step.w_kd == 0.0
    assert rec.of("eval")[0].teacher_acc is None
    assert res.summary["train_acc"] > 0.5


def test_eval_metrics_against_hand_computation():
    data = toy_data()
    teacher, student = mlp(hidden=32, seed=1), mlp(seed=2)
    res = distill(teacher, student, data, DistillConfig(epochs=1))
    x, y = data["test"]
    with torch.no_grad():
        s, t = student.eval()(x), teacher(x)
    assert res.summary["test_acc"] == pytest.approx((s.argmax(1) == y).float().mean().item())
    assert res.summary["test_teacher_acc"] == pytest.approx((t.argmax(1) == y).float().mean().item())
    assert res.summary["test_agreement"] == pytest.approx((s.argmax(1) == t.argmax(1)).float().mean().item())
    kl = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean").item()
    assert res.summary["test_kl"] == pytest.approx(kl, rel=1e-5)
    assert res.summary["test_loss"] == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-5)


def test_input_errors_before_training():
    data = toy_data()
    with pytest.raises(ValueError, match="teacher, student: teacher outputs 3 classes, student 5"):
        Distiller(mlp(classes=3), mlp(classes=5), data)
    with pytest.raises(ValueError, match="student: outputs 2 classes but the data has 3"):
        Distiller(None, mlp(classes=2), data)
    with pytest.raises(ValueError, match="student: outputs 5 classes but the data has 3"):
        Distiller(mlp(classes=5), mlp(classes=5), data)  # too many outputs is a mistake too
    with pytest.raises(ValueError, match="teacher, student: the same module"):
        m = mlp()
        Distiller(m, m, data)
    with pytest.raises(ValueError, match=r"student: forward pass on inputs of shape \(2, 8\) failed"):
        Distiller(None, mlp(features=5), data)
    with pytest.raises(ValueError, match="data: expected DataSplits"):
        Distiller(None, mlp(), "digits.csv")
    with pytest.raises(ValueError, match=r"data\['train'\] y: expected shape \(96,\)"):
        Distiller(None, mlp(), {"train": (data["train"][0], data["train"][1][:5])})
    with pytest.raises(ValueError, match="epochs: 0 is invalid"):
        Distiller(None, mlp(), data, epochs=0)
    with pytest.warns(UserWarning, match="teacher and student swapped"):
        Distiller(mlp(hidden=4), mlp(hidden=64), data)


def test_cosine_schedule_and_max_steps():
    res = train(mlp(), toy_data(), DistillConfig(epochs=10, scheduler="cosine", max_steps=7, log_every=1, lr=0.1))
    lrs = res.steps.lr.tolist()
    assert len(lrs) == 7 and res.summary["steps"] == 7
    assert lrs[0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 1 / 7)))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_wait_paused_means_the_loop_is_blocked():
    import threading

    class PauseAt:
        d = None

        def on_step_end(self, p):
            if p.step == 3:
                self.d.pause()  # from the training thread: the next step must not start

    rec, cb = Recorder(), PauseAt()
    d = Distiller(
        mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), DistillConfig(epochs=4, log_every=1), callbacks=[cb, rec]
    )
    cb.d = d
    assert not d.wait_paused(0)
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("res", d.fit()), daemon=True)
    thread.start()
    assert d.wait_paused(60)
    assert [p.step for p in rec.of("step")] == [1, 2, 3]
    thread.join(0.3)
    assert thread.is_alive() and [p.step for p in rec.of("step")] == [1, 2, 3]  # blocked, not slow
    d.resume()
    assert not d.wait_paused(0)  # resume() ends the pause at once, whether or not the thread woke yet
    thread.join(60)
    assert out["res"].status == "completed" and [p.step for p in rec.of("step")] == list(range(1, 9))


def test_callbacks_and_controls_are_wired_through_public_methods():
    from workbench import Controls
    from workbench.engine.losses import LossWeights

    rec = Recorder()
    d = Distiller(mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), DistillConfig(epochs=1, log_every=1))
    d.add_callback(rec)
    with pytest.raises(ValueError, match="has none of the hooks"):
        d.add_callback(object())
    shared = Controls(LossWeights(temperature=7.0))
    d.use_controls(shared)
    with pytest.raises(ValueError, match="controls: expected a workbench Controls, got dict"):
        d.use_controls({"temperature": 2.0})
    res = d.fit()
    assert {p.temperature for p in rec.of("step")} == {7.0} and rec.of("fit_end")[0].status == "completed"
    assert res.steps.temperature.eq(7.0).all()
    with pytest.raises(RuntimeError, match="add_callback: run .* has already started"):
        d.add_callback(Recorder())


def test_batch_source_gets_the_teacher_outputs_it_needs_explicitly():
    from workbench.data.splits import Split
    from workbench.engine.batches import BatchSource

    x, y = toy_data()["train"]
    cfg = DistillConfig(batch_size=32)
    calls = []

    def teacher_outputs(inputs):
        calls.append(inputs)
        return inputs[:, :3] * 10, None  # (N, K) stand-in logits that identify their row

    source = BatchSource(
        Split(x, y), cfg, torch.device("cpu"), torch.Generator().manual_seed(0), teacher_outputs=teacher_outputs
    )
    assert len(calls) == 1 and torch.equal(calls[0], x)  # once, on the transfer inputs
    assert (source.steps_per_epoch, source.labeled, source.transfer) == (3, 96, 96)
    for xb, _, x_kd, t_kd, tf_kd in source.epoch(torch.device("cpu")):
        assert x_kd is None and tf_kd is None  # one stream: the CE batch is the KD batch
        assert torch.equal(t_kd, xb[:, :3] * 10)  # the cached outputs stay aligned with their rows
    BatchSource(
        Split(x, y),
        cfg.replace(cache_teacher=False),
        torch.device("cpu"),
        torch.Generator(),
        teacher_outputs=teacher_outputs,
    )
    assert len(calls) == 1  # not cached: the loop queries the teacher live
    plain = BatchSource(Split(x, y), cfg, torch.device("cpu"), torch.Generator())
    assert plain.transfer == 0 and all(b[3] is None for b in plain.epoch(torch.device("cpu")))


# ----------------------------------------------------------------------------- BatchNorm students


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))


def test_a_batchnorm_student_drops_a_last_batch_of_one_sample_like_a_plain_loop():
    """650 moons train samples in batches of 649: the 1-sample batch is dropped (BatchNorm cannot
    train on it), said once in FitStart's message; the weights equal a plain loop's that drops it."""
    from workbench import load_dataset

    data = load_dataset("moons")
    x, y = data.train.x, data.train.y
    assert len(x) == 650
    net, reference = _bn_net(), _bn_net()
    rec = Recorder()
    res = train(net, data, epochs=2, batch_size=649, log_every=1, device="cpu", callbacks=[rec])
    assert res.status == "completed", res.message
    (start,) = rec.of("fit_start")
    assert start.steps_per_epoch == 1 and start.steps_planned == 2
    assert "a last batch of 1 sample is dropped from each pass (batch_size=649)" in start.message
    assert "BatchNorm" in start.message
    assert [p.samples for p in rec.of("step")] == [649, 1298]

    gen = torch.Generator().manual_seed(0)  # the engine's batch order: a seeded permutation per pass
    opt = torch.optim.Adam(reference.parameters(), lr=3e-3)
    reference.train()
    for _ in range(2):
        order = torch.randperm(650, generator=gen)[:649]
        opt.zero_grad()
        F.cross_entropy(reference(x[order]), y[order]).backward()
        opt.step()
    for a, b in zip(res.model.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_batch_size_one_is_refused_for_a_batchnorm_student_and_other_students_keep_every_batch():
    from workbench import load_dataset

    data = load_dataset("moons")
    with pytest.raises(ValueError, match="batch_size: 1 cannot train a student with BatchNorm layers.*>= 2"):
        Distiller(None, _bn_net(), data, DistillConfig(batch_size=1, device="cpu"))
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    rec = Recorder()
    res = train(plain, data, epochs=2, batch_size=649, log_every=1, device="cpu", callbacks=[rec])
    assert res.status == "completed" and rec.of("fit_start")[0].steps_per_epoch == 2
    assert rec.of("fit_start")[0].message == "" and rec.of("step")[-1].samples == 1300
