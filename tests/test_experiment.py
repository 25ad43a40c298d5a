"""The experiment unit: teacher, distilled student and scratch baseline as one unit."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from helpers import Recorder

from workbench import DistillConfig, build_model, from_dataframe, from_text, load_dataset
from workbench.engine.live import LiveRun
from workbench.experiment import Experiment


def test_three_roles_one_stream_and_a_table():
    data = load_dataset("digits")
    rec = Recorder()
    exp = Experiment(data, "mlp:64", "mlp:8", DistillConfig(epochs=3, labeled_fraction=0.2), callbacks=[rec])
    initial = {k: v.clone() for k, v in exp.student.state_dict().items()}
    res = exp.run()
    roles = [p.role for p in rec.of("fit_start")]
    assert roles == ["teacher", "student", "baseline"]
    assert {p.role for _, p in rec.calls} == {"teacher", "student", "baseline"}
    table = res.table()
    assert table.role.tolist() == ["teacher", "student", "baseline"]
    assert table.params.tolist()[1] == table.params.tolist()[2]  # same architecture
    assert res.teacher_val_acc == res.teacher.summary["val_acc"]
    for k, v in res.baseline.model.state_dict().items():
        assert not torch.equal(v, initial[k])  # trained
    start_b = rec.of("fit_start")[2]
    assert start_b.labeled_size == rec.of("fit_start")[1].labeled_size  # same labeled set and budget
    assert start_b.steps_planned == rec.of("fit_start")[1].steps_planned
    assert set(res.history.role) == {"teacher", "student", "baseline"}


def test_baseline_copies_the_initial_student():
    data = load_dataset("moons")
    exp = Experiment(data, "mlp:32,32", "mlp:4", DistillConfig(epochs=1))
    for a, b in zip(exp.student.parameters(), exp._initial_student.parameters()):
        assert torch.equal(a, b) and a is not b


class Constant(nn.Module):
    """A 'teacher' that predicts class 0 for everything."""

    def __init__(self, k):
        super().__init__()
        self.k = k
        self.lin = nn.Linear(1, 200)

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.k)
        out[:, 0] = 1.0
        return out + 0 * self.lin.weight.sum()


def test_sanity_gate_warns_about_a_chance_teacher_and_refuses_one_model_twice():
    data = load_dataset("digits")
    exp = Experiment(data, Constant(10), "mlp:8", DistillConfig(epochs=1), baseline=False)
    with pytest.warns(UserWarning, match=r"teacher: val accuracy 0.1\d+ is no better than chance \(0.1\d+"):
        res = exp.run()
    assert res.baseline is None and res.teacher is None and res.warnings
    m = nn.Linear(64, 10)
    with pytest.raises(ValueError, match="teacher, student: the same object"):
        Experiment(data, m, m)


def test_user_modules_on_dataframe_data():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(300, 5)), columns=list("abcde"))
    df["species"] = np.where(df.a + df.b > 0.3, "oak", np.where(df.c > 0, "elm", "ash"))
    data = from_dataframe(df, target="species", seed=0)
    assert data.class_names == ("ash", "elm", "oak")

    class Teacher(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(5, 64), nn.ReLU())
            self.out = nn.Linear(64, 3)

        def forward(self, x):
            return {"logits": self.out(self.body(x))}  # Hugging Face style

    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    cfg = DistillConfig(epochs=40, lr=1e-2, w_hint=0.5, hint_student="1", hint_teacher="body.1")
    res = Experiment(data, Teacher(), student, cfg, train_teacher=True).run()
    assert res.teacher.summary["test_acc"] > 0.8
    assert res.student.status == "completed" and res.student.summary["test_acc"] > 0.7
    assert "hint" in res.student.steps.columns.str.replace("loss_", "").tolist()


def test_experiment_on_a_live_run_can_be_stopped():
    data = load_dataset("digits")
    exp = Experiment(data, "mlp:64", "mlp:8", DistillConfig(epochs=500))
    run = LiveRun(exp.run).start()
    import time

    t0 = time.monotonic()
    while not any(p.role == "teacher" and p.event == "step" for p in run.buffer.all()):
        assert time.monotonic() - t0 < 300
        time.sleep(0.01)
    run.stop()
    assert run.join(120)
    assert run.status == "stopped"  # a stopped teacher ends the experiment, no error
    assert run.result.student is None and run.result.teacher.status == "stopped"


def test_teacher_config_keeps_training_and_drops_the_loss_mix():
    from workbench.experiment import teacher_config_for

    student = DistillConfig(
        epochs=7,
        lr=0.01,
        batch_size=32,
        seed=3,
        alpha=0.1,
        temperature=8.0,
        labeled_fraction=0.1,
        label_seed=5,
        mixup_alpha=1.0,
        optimizer="sgd",
        precision="bf16",
        device="cpu",
    )
    assert teacher_config_for(student) == DistillConfig(
        epochs=7, lr=0.01, batch_size=32, seed=3, w_ce=1.0, w_kd=0.0, optimizer="sgd", precision="bf16", device="cpu"
    )
    own = teacher_config_for(student, epochs=30, lr=0.02)
    assert (own.epochs, own.lr) == (30, 0.02)
    few = teacher_config_for(student, labeled_fraction=0.1)  # a teacher on the student's labeled subset
    assert (few.labeled_fraction, few.label_seed) == (0.1, 5)


def test_one_teacher_key_for_any_loss_mix_and_another_for_other_training():
    data = load_dataset("moons")

    def key(cfg, tcfg=None):
        return Experiment(data, "mlp:16", "mlp:4", cfg, tcfg).teacher_key

    base = key(DistillConfig(epochs=2))
    assert base is not None
    for cfg in (
        DistillConfig(epochs=2, alpha=0.1),
        DistillConfig(epochs=2, temperature=9.0, log_every=3),
        DistillConfig(epochs=2, labeled_fraction=0.2, label_seed=4, mixup_alpha=0.5, w_mse=1.0),
    ):
        assert key(cfg) == base, cfg
    # A teacher config given as the notebooks and the app write it (plain CE, all labels) is the same teacher.
    assert key(DistillConfig(epochs=2, alpha=0.7), DistillConfig(epochs=2, w_ce=1.0, w_kd=0.0, log_every=5)) == base
    for cfg in (
        DistillConfig(epochs=3),
        DistillConfig(epochs=2, lr=0.01),
        DistillConfig(epochs=2, seed=1),
        DistillConfig(epochs=2, batch_size=32),
        DistillConfig(epochs=2, optimizer="sgd"),
    ):
        assert key(cfg) != base, cfg
    assert key(DistillConfig(epochs=2), DistillConfig(epochs=2, labeled_fraction=0.5)) != base


def test_text_transfer_settings_keep_the_teachers_key():
    """Teacher-generated blocks and on-policy KD are the student's transfer set: the same teacher is
    reused, and a cache written before these settings existed keeps its keys."""
    from workbench.experiment import teacher_config_for
    from workbench.store.cache import teacher_key

    data = from_text("to be or not to be, that is the question. " * 40, block_size=16)
    student = DistillConfig.for_text(epochs=1, generated_blocks=8, generate_temperature=0.7, on_policy=0.5)
    plain = DistillConfig.for_text(epochs=1)
    assert teacher_config_for(student) == teacher_config_for(plain)
    model = build_model("gpt", data, n_layer=1, n_embd=16, n_head=2)
    before = {
        k: v for k, v in plain.to_dict().items() if k not in ("generated_blocks", "generate_temperature", "on_policy")
    }
    assert teacher_key(model, student.to_dict(), data) == teacher_key(model, before, data) is not None


def test_estimate_params_counts_without_building():
    from workbench.experiment import estimate_params
    from workbench.models.zoo import build_model

    data = load_dataset("digits")
    # 64*W + W + W*W + W + W*10 + 10 for W = 100000: far too large to allocate (40 GB), counted at once.
    assert estimate_params("mlp:100000,100000", data) == 10_007_600_010
    for spec, size in (("mlp:16", {"hidden": (16,)}), ("cnn2d:8,16", {"channels": (8, 16)})):
        family = spec.split(":")[0]
        assert estimate_params(spec, data) == sum(p.numel() for p in build_model(family, data, **size).parameters())
    before = torch.random.get_rng_state()
    estimate_params("mlp:8", data)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random stream is untouched
    with pytest.raises(ValueError, match="--student: family: 'cnn1d' is invalid"):
        estimate_params("cnn1d", load_dataset("moons"), "--student")


def test_a_cache_or_runs_path_that_is_a_file_fails_before_training(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    data = load_dataset("moons")
    with pytest.raises(ValueError, match=r"cache_dir: '.*file' is not a folder"):
        Experiment(data, "mlp:8", "mlp:4", cache_dir=tmp_path / "file")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "file" / "sub"))
    with pytest.raises(ValueError, match=r"WORKBENCH_CACHE: '.*sub' is not a folder \(its part '.*file' is a file\)"):
        Experiment(data, "mlp:8", "mlp:4")
    Experiment(data, "mlp:8", "mlp:4", cache=False)  # no cache: nothing to check
    with pytest.raises(ValueError, match=r"runs: '.*file' is not a folder"):
        Experiment(data, "mlp:8", "mlp:4", cache=False, runs=tmp_path / "file")


def test_a_cache_that_cannot_be_written_warns_and_keeps_the_teacher(tmp_path):
    from workbench.store.cache import TeacherCache

    (tmp_path / "file").write_text("x")
    model = nn.Linear(2, 2)
    with pytest.warns(UserWarning, match="teacher cache: cannot write in .*the teacher is not cached"):
        assert TeacherCache(tmp_path / "file").save("key", model, {}) is None
