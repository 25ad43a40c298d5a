"""The Jupyter Dashboard, driven headlessly: set values, click buttons, wait for the thread."""

import time

import pytest
import torch
import torch.nn as nn

from helpers import mlp, toy_data
from workbench import Settings, as_splits, plots
from workbench.events import FitEnd, StepEnd
from workbench.ui.widgets import Dashboard


def _wait_for(cond, timeout=60.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.01)


def steps(dash, role=None):
    return [p for p in dash.job.buffer.all() if isinstance(p, StepEnd) and (role is None or p.role == role)]


def test_widget_values_become_settings():
    d = Dashboard()
    assert d.settings() == Settings()
    d.dataset.value = "moons"
    d.student.value = "mlp:4"
    d.temperature.value = 8.0
    d.mode.value = "weights"
    d.w["w_mse"].value = 0.3
    d.labeled_fraction.value = 0.2
    d.mixup.value = True
    d.epochs.value = 7
    s = d.settings()
    assert (s.dataset, s.student, s.temperature, s.alpha, s.w_mse, s.labeled_fraction, s.mixup, s.epochs) == \
        ("moons", "mlp:4", 8.0, None, 0.3, 0.2, True, 7)
    assert s.config().w_mse == 0.3 and s.config().mixup_alpha == 1.0
    assert "families mlp fit" in d.fits.value  # moons are 2-D points: only mlp fits


def test_distill_click_runs_teacher_student_baseline_and_draws():
    d = Dashboard(Settings(dataset="moons", teacher="mlp:32,32", student="mlp:4", epochs=4, log_every=2))
    d.distill_button.click()
    assert d.wait(120)
    ends = [p for p in d.job.buffer.all() if isinstance(p, FitEnd)]
    assert [p.role for p in ends] == ["teacher", "student", "baseline"]
    assert all(p.status == "completed" for p in ends)
    assert "distill done" in d.status.value and d.progress.value == d.progress.max
    history = plots.as_frame(d.job.buffer.all())
    ev = history[(history.event == "eval") & (history.split == "val") & (history.role == "student")]
    traces = {t.name: t for t in d.accuracy_fig.data}
    assert list(traces["student"].x) == ev.step.tolist()
    assert list(traces["student"].y) == pytest.approx(ev.acc.tolist())
    assert traces["teacher"].y[0] == pytest.approx(ev.teacher_acc.iloc[-1])
    assert len(traces["baseline"].x) > 0
    assert len(d.loss_fig.data[0].x) > 0
    # the temperature explorer shows the teacher's softened distribution, and follows the slider
    x = d.experiment.data.test.x[:1]
    with torch.no_grad():
        logits = d.experiment.teacher(x)[0]
    assert list(d.explorer_fig.data[0].y) == pytest.approx(torch.softmax(logits / 4.0, 0).tolist(), abs=1e-6)
    d.temperature.value = 1.0
    assert list(d.explorer_fig.data[0].y) == pytest.approx(torch.softmax(logits, 0).tolist(), abs=1e-6)


def test_pause_resume_stop_and_refusing_a_second_run():
    d = Dashboard(Settings(dataset="moons", teacher="mlp:16", student="mlp:4", epochs=3000, log_every=1))
    assert d.distill()
    _wait_for(lambda: len(steps(d)) > 5)
    assert not d.distill()  # refused while running
    assert "a run is in progress" in d.status.value
    d.pause_button.click()
    assert d.pause_button.description == "Resume"
    time.sleep(0.3)
    n = len(steps(d))
    time.sleep(0.4)
    assert len(steps(d)) == n
    d.pause_button.click()
    _wait_for(lambda: len(steps(d)) > n)
    t0 = time.monotonic()
    d.stop_button.click()
    assert d.wait(10) and time.monotonic() - t0 < 2
    assert d.job.status == "stopped" and "stopped" in d.status.value
    assert d.stop_button.disabled


def test_live_temperature_change_reaches_the_engine():
    d = Dashboard(Settings(dataset="moons", teacher="mlp:16", student="mlp:4", epochs=3000, log_every=1))
    d.distill()
    _wait_for(lambda: len(steps(d, "student")) > 5)
    d.temperature.value = 8.0
    _wait_for(lambda: steps(d, "student")[-1].temperature == 8.0)
    d.stop()
    d.wait(10)
    changed = [p for p in steps(d, "student") if p.controls_changed]
    assert len(changed) == 1 and changed[0].temperature == 8.0
    marks = [t for t in d.accuracy_fig.data if t.name == "controls changed"][0]
    assert changed[0].step in [x for x in marks.x if x is not None]


def test_errors_show_in_the_status_line():
    d = Dashboard(Settings(epochs=2))
    d.student.value = "resnet:9"
    assert not d.distill()
    assert "student" in d.status.value and "mlp" in d.status.value

    class NaNStudent(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = mlp()

        def forward(self, x):
            out = self.m(x)
            return out * float("nan") if self.training else out

    data = as_splits(toy_data())
    d = Dashboard(Settings(epochs=3, log_every=1), data=data, teacher=mlp(hidden=32, seed=1), student=NaNStudent())
    d.distill()
    d.wait(60)
    assert "diverged" in d.status.value and "nan" in d.status.value


def test_copy_as_code_reproduces_the_settings():
    d = Dashboard(Settings(dataset="moons", teacher="mlp:16", student="mlp:4", epochs=2))
    d.labeled_fraction.value = 0.5
    d.code_button.click()
    assert d.code.value == d.settings().to_code()
    ns = {}
    exec(d.code.value, ns)
    assert ns["config"] == d.settings().config()
    assert ns["result"].student.status == "completed"


def test_models_and_data_from_python():
    data = as_splits(toy_data())
    teacher = mlp(hidden=32, seed=1)
    d = Dashboard(Settings(epochs=3), data=data, teacher=teacher, student=mlp(seed=2))
    assert d.dataset.options == ("(your data)",)
    d.train_button.click()
    d.wait(60)
    assert d.job.status == "completed"
    assert [p.role for p in d.job.buffer.all() if isinstance(p, FitEnd)] == ["teacher"]


def test_hiding_the_weight_sliders_hides_nothing_else():
    d = Dashboard()
    assert d.mode.value == "alpha"
    assert all(s.layout.display == "none" for s in d.w.values())
    for widget in (d.dataset, d.teacher, d.student, d.temperature, d.alpha, d.labeled_fraction, d.epochs, d.lr):
        assert widget.layout.display is None, widget.description
    layouts = [id(x.layout) for x in (d.dataset, d.teacher, d.alpha, *d.w.values())]
    assert len(set(layouts)) == len(layouts)
