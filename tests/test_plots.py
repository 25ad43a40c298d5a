"""Figure builders: traces against the history frame they come from, payloads == frames, references."""

import subprocess
import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
import torch.nn as nn
from helpers import as_list

from workbench import DistillConfig, Distiller, plots, train


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return {"train": (x[:96], y[:96]), "val": (x[96:128], y[96:128]), "test": (x[128:], y[128:])}


def _mlp(hidden, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 2))


class SetTemperature:
    """Moves the temperature slider after step 3: step 4 is the first to use T=8."""

    def __init__(self):
        self.distiller = None

    def on_step_end(self, p):
        if p.step == 3:
            self.distiller.set_controls(temperature=8.0)


@pytest.fixture(scope="module")
def runs():
    data = _data()
    cfg = DistillConfig(epochs=4, batch_size=32, log_every=1, seed=1)
    teacher = train(_mlp(32, 1), data, cfg.replace(epochs=5))
    cb = SetTemperature()
    d = Distiller(teacher.model, _mlp(4, 2), data, cfg, callbacks=[cb])
    cb.distiller = d
    student = d.fit()
    baseline = train(_mlp(4, 2), data, cfg, role="baseline")
    history = pd.concat([teacher.history, student.history, baseline.history], ignore_index=True)
    return {"teacher": teacher, "student": student, "baseline": baseline, "history": history}


def _evals(history, role, split="val"):
    return history[(history.event == "eval") & (history.role == role) & (history.split == split)]


def _trace(fig, name):
    (trace,) = [t for t in fig.data if t.name == name]
    return trace


def test_accuracy_figure_matches_history(runs):
    h = runs["history"]
    fig = plots.accuracy_figure(h)
    assert [t.name for t in fig.data] == ["student", "baseline", "teacher", "teacher training", "controls changed"]
    assert not as_list(_trace(fig, "teacher training").x)  # the student's steps are not the teacher's
    for role in ("student", "baseline"):
        ref = _evals(h, role)
        assert list(_trace(fig, role).x) == ref.step.tolist() and len(ref) == 4
        assert list(_trace(fig, role).y) == ref.acc.tolist()
    teacher_acc = _evals(h, "student").teacher_acc.unique()
    assert len(teacher_acc) == 1  # the teacher is frozen
    assert list(_trace(fig, "teacher").y) == [teacher_acc[0]] * 2
    # The teacher's own final val accuracy is the same number.
    assert _evals(h, "teacher").acc.iloc[-1] == teacher_acc[0]
    assert list(_trace(fig, "teacher").x) == [0, _evals(h, "student").step.max()]
    assert _trace(fig, "teacher").line.dash == "dash"
    steps = runs["student"].steps
    changed = steps[steps.controls_changed.eq(True)]
    assert changed.step.tolist() == [4]
    markers = _trace(fig, "controls changed")
    assert sorted({x for x in markers.x if x is not None}) == changed.step.tolist()
    assert "T=8" in markers.hovertext[0]
    assert tuple(fig.layout.yaxis.range) == (0, 1) and fig.layout.uirevision
    assert fig.layout.xaxis.title.text == "step" and fig.layout.yaxis.title.text == "accuracy"


def test_accuracy_split_and_teacher_fallback(runs):
    h = runs["history"]
    fig = plots.accuracy_figure(h, split="test")
    assert list(_trace(fig, "student").y) == _evals(h, "student", "test").acc.tolist()
    # Without a student, the reference line is the teacher run's final eval on that split.
    no_student = h[h.role != "student"]
    tr = plots.accuracy_traces(no_student, split="test")
    assert tr["teacher"][1] == [_evals(h, "teacher", "test").acc.iloc[-1]] * 2
    assert tr["student"] == ([], []) and tr["controls changed"] == ([], [])


def test_a_teacher_in_training_draws_its_own_curve_and_loss(runs):
    h = runs["history"]
    teacher_only = h[h.role == "teacher"]  # what a live chart has while the teacher trains
    ref = _evals(h, "teacher")
    tr = plots.accuracy_traces(teacher_only)
    assert tr["teacher training"] == (ref.step.tolist(), ref.acc.tolist()) and len(ref) > 1
    assert tr["teacher"] == ([0, ref.step.max()], [ref.acc.iloc[-1]] * 2)
    assert plots.live_role(teacher_only) == "teacher"
    steps = teacher_only[teacher_only.event == "step"]
    assert plots.loss_traces(teacher_only, plots.live_role(teacher_only))["total"] == (
        steps.step.tolist(),
        steps.loss.tolist(),
    )
    # once the student steps, the charts follow it (and the baseline after it does not take over)
    assert plots.live_role(h) == "student" and plots.live_role(h[h.role != "teacher"]) == "student"
    assert plots.live_role(None) == "student"


def test_payload_lists_give_the_same_traces(runs):
    payloads = [p for r in ("teacher", "student", "baseline") for p in runs[r].recorder.payloads]
    h = runs["history"]
    assert plots.accuracy_traces(payloads) == plots.accuracy_traces(h)
    assert plots.loss_traces(payloads) == plots.loss_traces(h)
    assert plots.agreement_traces(payloads, "test") == plots.agreement_traces(h, "test")
    dicts = [p.to_dict() for p in runs["student"].recorder.payloads]  # e.g. read back from metrics.jsonl
    assert plots.loss_traces(dicts) == plots.loss_traces(runs["student"].history)


def test_apply_traces_updates_a_figure_in_place(runs):
    payloads = runs["student"].recorder.payloads
    fig = plots.accuracy_figure([])  # a live figure starts empty and is filled as events arrive
    for n in (5, len(payloads)):
        plots.apply_traces(
            fig, plots.accuracy_traces(payloads[:n]), text={"controls changed": plots.controls_markers(payloads[:n])[2]}
        )
    full = plots.accuracy_figure(payloads)
    for a, b in zip(fig.data, full.data):
        assert (a.name, as_list(a.x), as_list(a.y), a.showlegend, a.hovertext) == (
            b.name,
            as_list(b.x),
            as_list(b.y),
            b.showlegend,
            b.hovertext,
        )


def test_loss_figure(runs):
    h = runs["history"]
    fig = plots.loss_figure(h)
    assert [t.name for t in fig.data] == ["total", "ce", "kd", "mse", "hint"]
    steps = h[(h.event == "step") & (h.role == "student")]
    assert list(_trace(fig, "total").x) == steps.step.tolist()
    assert list(_trace(fig, "total").y) == steps.loss.tolist()
    assert list(_trace(fig, "kd").y) == steps.loss_kd.tolist()
    assert list(_trace(fig, "mse").x) == [] and not _trace(fig, "mse").showlegend  # term not in use
    assert plots.loss_figure(h, log_y=True).layout.yaxis.type == "log"
    baseline = plots.loss_traces(h, role="baseline")
    assert baseline["kd"] == ([], [])
    assert baseline["ce"][1] == h[(h.event == "step") & (h.role == "baseline")].loss_ce.tolist()


def test_agreement_figure(runs):
    h = runs["history"]
    fig = plots.agreement_figure(h)
    ref = _evals(h, "student")
    assert [t.name for t in fig.data] == ["agreement", "kl"]
    assert list(fig.data[0].y) == ref.agreement.tolist() and list(fig.data[1].y) == ref.kl.tolist()
    assert list(fig.data[1].x) == ref.step.tolist() and fig.data[1].yaxis == "y2"
    assert tuple(fig.layout.yaxis.range) == (0, 1)


def test_downsample_keeps_endpoints_and_spikes():
    x = list(range(10_000))
    y = np.sin(np.arange(10_000) / 50.0).tolist()
    y[5_003] = 100.0  # a spike between two evenly spaced points
    dx, dy = plots.downsample(x, y, max_points=500)
    assert len(dx) <= 500 and len(dx) == len(dy)
    assert (dx[0], dx[-1], dy[0], dy[-1]) == (0, 9_999, y[0], y[-1])
    assert dx == sorted(set(dx)) and all(y[i] == v for i, v in zip(dx, dy))
    assert 100.0 in dy
    assert plots.downsample([1, 2, 3], [4, 5, 6]) == ([1, 2, 3], [4, 5, 6])
    with pytest.raises(ValueError, match="max_points"):
        plots.downsample(x, y, max_points=1)
    fig = plots.loss_figure(
        [{"event": "step", "role": "student", "run_id": "r", "step": i, "loss": 1.0 / i} for i in range(1, 5001)],
        max_points=300,
    )
    assert len(fig.data[0].x) <= 300 and fig.data[0].x[-1] == 5000


@pytest.mark.parametrize("make", [list, np.array, torch.tensor])
def test_softened_matches_torch_softmax(make):
    logits = [2.0, -1.0, 0.5, 3.0]
    for T in (0.5, 1, 4, 20):
        got = plots.softened(make(logits), T)
        assert all(type(v) is float for v in got)
        ref = torch.softmax(torch.tensor(logits, dtype=torch.float64) / T, 0).tolist()
        assert got == pytest.approx(ref, abs=1e-12)
    big = plots.softened([1000.0, 0.0, -1000.0], 1.0)  # naive exp overflows
    assert big == pytest.approx([1.0, 0.0, 0.0]) and not any(np.isnan(big))
    assert plots.softened(torch.tensor([1.0, 2.0], requires_grad=True), 2) == pytest.approx(
        torch.softmax(torch.tensor([0.5, 1.0]), 0).tolist()
    )
    with pytest.raises(ValueError, match="temperature"):
        plots.softened(logits, 0)
    with pytest.raises(ValueError, match="logits"):
        plots.softened([[1.0, 2.0]], 1)
    assert plots.softened(np.array([1.0, 2.0]), np.float32(2)) == plots.softened([1.0, 2.0], 2.0)


def test_softmax_figure():
    logits = torch.tensor([2.0, -1.0, 0.5])
    fig = plots.softmax_figure(logits, class_names=["cat", "dog", "fox"])
    assert [t.name for t in fig.data] == ["T=1", "T=4", "T=20"] and fig.layout.barmode == "group"
    assert list(fig.data[1].x) == ["cat", "dog", "fox"]
    assert list(fig.data[1].y) == pytest.approx(torch.softmax(logits / 4, 0).tolist())
    assert tuple(fig.layout.yaxis.range) == (0, 1)
    one = plots.softmax_figure(logits.numpy(), temperatures=2.5)
    assert [t.name for t in one.data] == ["T=2.5"] and list(one.data[0].x) == ["0", "1", "2"]


def test_smooth_against_hand_computation():
    # w=0.5: m1=0.5 -> 0.5/0.5=1; m2=0.25+1=1.25 -> 1.25/0.75; m3=0.625+1.5=2.125 -> 2.125/0.875
    assert plots.smooth([1, 2, 3], 0.5) == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert plots.smooth([3, 1, 4], 0.0) == [3.0, 1.0, 4.0]
    assert plots.smooth([5, 5, 5], 0.9) == pytest.approx([5, 5, 5])  # debiasing: no pull toward 0
    with pytest.raises(ValueError, match="weight"):
        plots.smooth([1], 1.0)


def test_overlay_figure(runs):
    fig = plots.overlay_figure(
        {"distilled": runs["student"].history, "scratch": runs["baseline"].history}, smoothing=0.6
    )
    assert [t.name for t in fig.data] == ["distilled (raw)", "distilled", "scratch (raw)", "scratch"]
    ref = _evals(runs["history"], "student").acc.tolist()
    assert list(fig.data[0].y) == ref and list(fig.data[1].y) == pytest.approx(plots.smooth(ref, 0.6))
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[3].line.color
    # A training metric reads step rows; role picks a run from a concatenated frame.
    kd = plots.overlay_figure({"s": runs["history"]}, metric="loss_kd", role="student", smoothing=0)
    steps = runs["student"].steps
    assert list(kd.data[0].x) == steps.step.tolist() and list(kd.data[1].y) == steps.loss_kd.tolist()


def test_decision_boundary_figure():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    seen = []

    def predict(points):
        seen.append(points)
        return (points[:, 0] + points[:, 1] > 0).astype(int)

    fig = plots.decision_boundary_figure(predict, X, y, grid=40, title="teacher")
    heat = fig.data[0]
    z = np.asarray(heat.z)
    assert isinstance(heat, go.Heatmap) and z.shape == (40, 40)
    assert len(seen) == 1 and seen[0].dtype == np.float32 and seen[0].shape == (1600, 2)
    xs, ys = np.asarray(heat.x), np.asarray(heat.y)
    assert xs.min() < X[:, 0].min() and xs.max() > X[:, 0].max()
    for i, j in [(0, 0), (5, 30), (39, 39), (20, 19)]:
        assert z[i, j] == predict(np.array([[xs[j], ys[i]]], dtype=np.float32))[0]
    assert [t.name for t in fig.data[1:]] == ["class 0", "class 1"]
    assert len(fig.data[1].x) == (y == 0).sum()

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3)).train()
    from workbench.engine.evaluation import predict_logits

    def predict_net(points):
        return predict_logits(net, points).argmax(-1).numpy()

    assert predict_net(X).tolist() == net(torch.from_numpy(X)).argmax(1).tolist() and net.training
    boundary = plots.decision_boundary_figure(predict_net, torch.from_numpy(X), torch.from_numpy(y), grid=10)
    assert np.asarray(boundary.data[0].z).shape == (10, 10) and len(boundary.data) == 1 + 3
    both = plots.side_by_side([fig, boundary], ["teacher", "student"])
    assert [a.text for a in both.layout.annotations] == ["teacher", "student"]
    assert {t.xaxis for t in both.data} == {"x", "x2"}
    assert not any(t.showlegend for t in both.data if t.xaxis == "x2")  # one legend entry per class
    with pytest.raises(ValueError, match="X, y"):
        plots.decision_boundary_figure(predict, np.zeros((5, 3)), np.zeros(5), grid=5)
    with pytest.raises(ValueError, match="predict"):
        plots.decision_boundary_figure(lambda p: np.zeros(3), X, y, grid=5)


@pytest.mark.parametrize("empty", [pd.DataFrame(), [], None])
def test_empty_inputs_give_empty_figures(empty):
    figs = [
        plots.accuracy_figure(empty),
        plots.loss_figure(empty, log_y=True),
        plots.agreement_figure(empty),
        plots.overlay_figure({"a": empty}),
        plots.overlay_figure({}),
    ]
    for fig in figs:
        assert all(len(as_list(t.x)) == 0 for t in fig.data)
        assert fig.layout.xaxis.title.text == "step" or fig.layout.xaxis2.title.text == "step"
    assert plots.accuracy_traces(empty)["teacher"] == ([], [])
    assert plots.teacher_accuracy(empty) is None
    assert plots.as_frame(empty).empty


def test_importing_plots_pulls_in_no_torch():
    code = "import sys, workbench.plots; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- text: bits per character, entropies, samples ------------------------------------------------
def _text_eval(role, step, bpc, run_id=None, split="val", **extra):
    from workbench.engine.events import EvalEnd

    loss = bpc * np.log(2)
    return EvalEnd(
        run_id=run_id or f"{role}-1", role=role, step=step, epoch=1, split=split, acc=0.3, loss=loss,
        n=640, seconds=0.1, bpc=bpc, **extra,
    )  # fmt: skip


@pytest.fixture
def text_history():
    """A text job's payloads: the teacher trains (2 evals), then the student (3) and the baseline (2)."""
    return [
        _text_eval("teacher", 10, 4.0, sample="tt1", sample_prompt="To be"),
        _text_eval("teacher", 20, 3.0, sample="tt2", sample_prompt="To be"),
        _text_eval("teacher", 20, 3.1, split="test"),
        *(
            _text_eval(
                "student", s, b, teacher_bpc=3.0, entropy=e, teacher_entropy=1.5, sample=f"st{s}", sample_prompt="To be"
            )
            for s, b, e in ((5, 5.5, 3.0), (10, 4.5, 2.5), (15, 3.5, 2.0))
        ),
        _text_eval("student", 15, 3.6, split="test", teacher_bpc=3.1),  # another split: not on the val curve
        *(
            _text_eval("baseline", s, b, entropy=e, sample=f"bl{s}", sample_prompt="To be")
            for s, b, e in ((5, 5.6, 3.1), (10, 4.9, 2.9))
        ),
    ]


def test_bpc_traces_against_the_payloads(text_history):
    t = plots.bpc_traces(text_history)
    assert t["student"] == ([5, 10, 15], [5.5, 4.5, 3.5])
    assert t["baseline"] == ([5, 10], [5.6, 4.9])
    assert t["teacher"] == ([0, 15], [3.0, 3.0])  # the student's teacher_bpc, across the steps drawn
    assert t["teacher training"] == ([], [])  # students have evals: the teacher's own curve gives way
    assert plots.teacher_bpc(text_history, "test") == 3.1
    fig = plots.bpc_figure(text_history)
    assert [tr.name for tr in fig.data] == list(plots.BPC_TRACES)
    assert list(_trace(fig, "student").y) == [5.5, 4.5, 3.5] and fig.layout.yaxis.title.text == "bits per character"


def test_bpc_while_the_teacher_trains_is_its_own_curve(text_history):
    teacher_only = text_history[:3]
    t = plots.bpc_traces(teacher_only)
    assert t["teacher training"] == ([10, 20], [4.0, 3.0])
    assert t["teacher"] == ([0, 20], [3.0, 3.0])  # its last val bpc
    assert t["student"] == ([], [])


def test_bpc_marks_live_control_changes(text_history):
    from workbench.engine.events import StepEnd

    def step(n, changed, divergence):
        return StepEnd(
            run_id="student-1", role="student", step=n, epoch=1, seconds=0.1, lr=1e-3, loss=1.0, terms={"ce": 1.0},
            batch_acc=0.1, temperature=1.0, w_ce=0.5, w_kd=0.5, w_mse=0.0, w_hint=0.0, samples=64,
            controls_changed=changed, divergence=divergence, beta=0.3,
        )  # fmt: skip

    history = [*text_history, step(7, False, "kl"), step(8, True, "jsd")]
    x, y = plots.bpc_traces(history)["controls changed"]
    assert x == [8, 8, None] and y == [0.0, 5.6, None]  # from 0 to the highest bpc drawn
    assert "divergence=jsd (beta=0.3)" in plots.controls_markers(history)[2][0]


def test_a_burst_of_control_changes_is_one_mark_with_its_last_values():
    """Four arrow-key presses on the T slider (10 steps a second: 0.5-0.8 s apart) drew four lines over the
    chart; a change 37 s later keeps its own."""
    from workbench.engine.events import StepEnd

    changes = {310: 2.0, 315: 3.0, 322: 3.5, 330: 4.0, 700: 6.0}
    history, T = [], 1.0
    for n in range(1, 1001):
        T = changes.get(n, T)
        history.append(
            StepEnd(
                run_id="student-1", role="student", step=n, epoch=1, seconds=n / 10, lr=1e-3, loss=1.0,
                terms={"ce": 1.0}, batch_acc=0.1, temperature=T, w_ce=0.5, w_kd=0.5, w_mse=0.0, w_hint=0.0,
                samples=64, controls_changed=n in changes,
            )
        )  # fmt: skip
    x, y, text = plots.controls_markers(history)
    assert x == [330, 330, None, 700, 700, None] and y == [0.0, 1.0, None] * 2
    assert text[0] == "step 330: T=4, w_ce=0.5, w_kd=0.5, w_mse=0, w_hint=0, divergence=kl (4 changes from step 310)"
    assert text[3] == "step 700: T=6, w_ce=0.5, w_kd=0.5, w_mse=0, w_hint=0, divergence=kl"


def test_entropy_traces(text_history):
    t = plots.entropy_traces(text_history)
    assert t == {
        "student": ([5, 10, 15], [3.0, 2.5, 2.0]),
        "baseline": ([5, 10], [3.1, 2.9]),
        "teacher": ([5, 10, 15], [1.5, 1.5, 1.5]),
    }
    assert [tr.name for tr in plots.entropy_figure(text_history).data] == list(plots.ENTROPY_TRACES)


def test_latest_samples_take_each_roles_last(text_history):
    assert plots.latest_samples(text_history) == {
        "teacher": {"step": 20, "prompt": "To be", "sample": "tt2"},
        "student": {"step": 15, "prompt": "To be", "sample": "st15"},
        "baseline": {"step": 10, "prompt": "To be", "sample": "bl10"},
    }
    assert plots.latest_samples(text_history[3:]).keys() == {"student", "baseline"}  # no teacher sample
    assert plots.latest_samples([]) == {}
    assert plots.latest_samples(plots.as_frame(text_history)) == plots.latest_samples(text_history)


def test_text_figures_of_a_real_run():
    import workbench as wb

    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(60))
    data = wb.from_text(text, block_size=16)
    cfg = DistillConfig.for_text(max_steps=4, eval_every=2, batch_size=8, sample_tokens=8, log_every=1)
    torch.manual_seed(0)
    model = wb.build_model("gpt", data, n_layer=1, n_embd=8, n_head=2)
    frame = train(model, data, cfg, role="baseline").history
    evals = frame[(frame.event == "eval") & (frame.split == "val")]
    x, y = plots.bpc_traces(frame)["baseline"]
    assert x == evals.step.tolist() and len(x) >= 2
    assert y == pytest.approx((evals.loss / np.log(2)).tolist())  # bits = nats / ln 2
    sample = plots.latest_samples(frame)["baseline"]
    assert sample["step"] == x[-1] and len(sample["sample"]) == 8
    assert len(sample["prompt"]) == 16 and sample["prompt"] in text  # the first val block
