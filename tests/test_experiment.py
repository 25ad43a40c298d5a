"""The experiment unit: teacher, distilled student and scratch baseline as one unit."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from helpers import Recorder
from workbench import DistillConfig, from_dataframe, load_dataset
from workbench.experiment import Experiment
from workbench.live import LiveRun


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
        assert time.monotonic() - t0 < 30
        time.sleep(0.01)
    run.stop()
    assert run.join(10)
    assert run.status == "stopped"  # a stopped teacher ends the experiment, no error
    assert run.result.student is None and run.result.teacher.status == "stopped"
