"""LiveHistory (issue 17, item 2): an incremental history whose frames draw what plots.as_frame(all
events) draws for short runs, and at most a point budget per trace for long ones, at O(new) work."""

import math
import random
import threading

import numpy as np
import pandas as pd
import pytest
from helpers import mlp, toy_data

from workbench import DistillConfig, plots
from workbench.engine.distiller import Controls, Distiller
from workbench.engine.events import EpochEnd, EvalEnd, FitEnd, FitStart, StepEnd, frozen_map
from workbench.engine.live import EventBuffer
from workbench.engine.losses import LossWeights
from workbench.ui.live_history import LIVE_BUDGET, LiveHistory, MinMaxDecimator

TERMS = ("ce", "kd", "mse", "hint")


# -- event lists -----------------------------------------------------------------------------------
def fit_start(role: str, run_id: str, steps: int) -> FitStart:
    return FitStart(
        run_id=run_id,
        role=role,
        config={},
        device="cpu",
        dataset="synthetic",
        num_classes=3,
        train_size=96,
        student_params=100,
        teacher_params=None if role != "student" else 1000,
        epochs=max(1, steps // 100),
        steps_per_epoch=100,
        steps_planned=steps,
        started_at=0.0,
    )


def synthetic_run(
    role="student",
    run_id="s1",
    steps=300,
    spike_at=None,
    dip_at=None,
    changes=(),
    eval_every=100,
    text=False,
    status="completed",
    seed=0,
) -> list:
    """A fit's payloads: a logged step each step (loss ~ 2 exp(-step/3000) + noise; a spike of 1e3
    at ``spike_at``, a dip of 1e-4 at ``dip_at``; new live controls at ``changes``), an eval and an
    epoch_end every ``eval_every`` steps (text: bpc, entropy and a sample), seeded."""
    rng = random.Random(seed)
    out = [fit_start(role, run_id, steps)]
    temperature = 4.0
    for step in range(1, steps + 1):
        loss = 2.0 * math.exp(-step / 3000) + 0.05 * rng.random()
        loss = 1e3 if step == spike_at else 1e-4 if step == dip_at else loss
        changed = step in changes
        temperature = temperature + 1.0 if changed else temperature
        terms = {"ce": loss * rng.random(), "kd": loss * rng.random(), "mse": 0.0, "hint": 0.0}
        out.append(
            StepEnd(
                run_id=run_id,
                role=role,
                step=step,
                epoch=(step - 1) // 100 + 1,
                seconds=step * 1e-2,  # a small model: 100 steps a second
                lr=1e-3,
                loss=loss,
                terms=frozen_map(terms),
                batch_acc=min(1.0, 0.5 + step / 60_000),
                temperature=temperature,
                w_ce=0.1,
                w_kd=0.9,
                w_mse=0.0,
                w_hint=0.0,
                samples=step * 64,
                controls_changed=changed,
                divergence="jsd" if changed and step % 2 else "kl",
            )
        )
        if step % eval_every == 0:
            acc = min(1.0, 0.6 + step / 50_000 + 0.05 * rng.random())
            extra = {}
            if text:
                extra = dict(
                    bpc=loss / math.log(2),
                    entropy=1.5,
                    teacher_bpc=1.1,
                    teacher_entropy=1.4,
                    sample=f"{role} at {step}",
                    sample_prompt="To be",
                )
            out.append(
                EvalEnd(
                    run_id=run_id,
                    role=role,
                    step=step,
                    epoch=step // 100,
                    split="val",
                    acc=acc,
                    loss=loss,
                    n=32,
                    seconds=step * 1e-2,  # a small model: 100 steps a second
                    teacher_acc=0.9 if role == "student" else None,
                    agreement=min(1.0, acc + 0.02) if role == "student" else None,
                    kl=loss / 4 if role == "student" else None,
                    **extra,
                )
            )
            out.append(
                EpochEnd(
                    run_id=run_id,
                    role=role,
                    epoch=step // 100,
                    step=step,
                    loss=loss,
                    terms=frozen_map(terms),
                    train_acc=None,
                    seconds=step * 1e-2,  # a small model: 100 steps a second
                    epoch_seconds=0.1,
                )
            )
    end = FitEnd(
        run_id=run_id,
        role=role,
        status=status,
        message="the loss became nan" if status == "diverged" else "",
        step=steps,
        epoch=steps // 100,
        seconds=steps * 1e-2,
        best={},
        final={"test_acc": 0.8},
    )
    return [*out, end]


def job_events(student_steps=300, **student) -> list:
    """A job: a teacher fit, the student's (with ``student`` options) and a scratch baseline."""
    return [
        *synthetic_run("teacher", "t1", steps=200, seed=1, text=student.get("text", False)),
        *synthetic_run("student", "s1", steps=student_steps, **student),
        *synthetic_run("baseline", "b1", steps=150, seed=2, text=student.get("text", False)),
    ]


class ChangeControls:
    """Moves the live temperature (and the divergence) at given steps, from the training thread."""

    def __init__(self, controls: Controls, at: dict):
        self.controls, self.at = controls, at

    def on_step_end(self, p):
        if p.step in self.at:
            self.controls.update(**self.at[p.step])


def engine_events() -> list:
    """A real job's payloads (seeded): a teacher fit, a student fit whose controls move twice, a baseline."""
    buffer, data = EventBuffer(), toy_data()
    teacher = mlp(hidden=32, seed=1)
    Distiller(None, teacher, data, DistillConfig(epochs=3, log_every=1), callbacks=[buffer]).fit()
    config = DistillConfig(epochs=8, log_every=1, temperature=4.0)  # 2 steps an epoch
    controls = Controls(LossWeights(temperature=4.0, ce=0.5, kd=0.5))
    mover = ChangeControls(controls, {5: dict(temperature=8.0), 9: dict(divergence="jsd", beta=0.3)})
    student = Distiller(teacher, mlp(seed=2), data, config, callbacks=[buffer, mover])
    student.use_controls(controls)
    student.fit()
    Distiller(None, mlp(seed=2), data, config, callbacks=[buffer], role="baseline").fit()
    return buffer.all()


# -- what the plots draw -----------------------------------------------------------------------------
def drawn(history) -> dict:
    """Everything the live views draw from a history, by builder."""
    from workbench.ui.app import teacher_figure

    out = {
        "accuracy": plots.accuracy_traces(history),
        "agreement": plots.agreement_traces(history),
        "bpc": plots.bpc_traces(history),
        "entropy": plots.entropy_traces(history),
        "markers": plots.controls_markers(history),
        "samples": plots.latest_samples(history),
        "live_role": plots.live_role(history),
        "teacher_acc": plots.teacher_accuracy(history),
        "teacher_bpc": plots.teacher_bpc(history),
        "teacher_figure": [(t.name, list(t.x), list(t.y)) for t in teacher_figure(plots.as_frame(history)).data],
    }
    for role in ("teacher", "student", "baseline"):
        out[f"loss {role}"] = plots.loss_traces(history, role)
    return out


def live(events, budget=LIVE_BUDGET) -> LiveHistory:
    h = LiveHistory(budget)
    h.extend(events)
    return h


# -- short runs: the same curves as from every event ---------------------------------------------------
def test_a_real_jobs_frame_draws_exactly_what_every_event_draws():
    events = engine_events()
    assert sum(isinstance(p, StepEnd) and p.controls_changed for p in events) == 2
    want = drawn(plots.as_frame(events))
    assert len(want["loss student"]["total"][0]) > 10 and len(want["markers"][0]) == 6
    assert drawn(live(events).frame()) == want


@pytest.mark.parametrize("text", [False, True])
def test_a_synthetic_jobs_frame_draws_exactly_what_every_event_draws(text):
    events = job_events(student_steps=900, spike_at=300, dip_at=700, changes=(10, 400, 900), text=text)
    want = drawn(plots.as_frame(events))
    assert want["samples"] if text else want["accuracy"]["student"][0]
    assert drawn(live(events).frame()) == want


def test_a_diverged_run_keeps_its_infinite_loss_and_drops_nan_like_the_plots():
    events = synthetic_run(steps=50)
    events[20] = StepEnd(**{**events[20].__dict__, "loss": float("inf")})
    events[30] = StepEnd(**{**events[30].__dict__, "loss": float("nan")})
    total = drawn(live(events).frame())["loss student"]["total"]
    assert total == drawn(plots.as_frame(events))["loss student"]["total"]
    assert math.inf in total[1] and len(total[0]) == 49


def test_fed_in_chunks_of_random_sizes_the_frame_is_the_same_as_fed_at_once():
    events = job_events(student_steps=3000, spike_at=1234, changes=(7, 2500))
    whole = live(events, budget=64)
    rng = random.Random(0)
    for _ in range(3):
        h, i = LiveHistory(64), 0
        while i < len(events):
            n = rng.randint(0, 200)
            h.extend(events[i : i + n])
            if rng.random() < 0.3:
                h.frame()  # frames read in between change nothing
            i += n
        pd.testing.assert_frame_equal(h.frame(), whole.frame())
        assert drawn(h.frame()) == drawn(whole.frame())


# -- long runs: the budget, and what is always kept ---------------------------------------------------------
ALL = 10**9  # max_points for the reference curves: every point, not plotly's downsampling


def reference(history) -> dict:
    """Every curve the live views draw, with every point (no downsampling), by builder and trace."""
    out = {
        "accuracy": plots.accuracy_traces(history, max_points=ALL),
        "agreement": plots.agreement_traces(history, max_points=ALL),
        "bpc": plots.bpc_traces(history, max_points=ALL),
        "entropy": plots.entropy_traces(history, max_points=ALL),
    }
    for role in ("teacher", "student", "baseline"):
        out[f"loss {role}"] = plots.loss_traces(history, role, max_points=ALL)
    return out


def assert_decimated(got: tuple, want: tuple, budget: int, what: str) -> None:
    """``got`` is ``want`` when it fits the budget; else at most the budget of its points, in order,
    with its first, its last, its min and its max."""
    (x, y), (wx, wy) = got, want
    if len(wx) <= budget:
        assert (x, y) == (wx, wy), what
        return
    assert len(x) <= budget, what
    assert x == sorted(x) and set(zip(x, y)) <= set(zip(wx, wy)), what
    assert (x[0], y[0], x[-1], y[-1]) == (wx[0], wy[0], wx[-1], wy[-1]), what
    assert wx[wy.index(max(wy))] in x and wx[wy.index(min(wy))] in x, what


@pytest.mark.parametrize("budget", [64, LIVE_BUDGET])
def test_a_long_run_holds_the_budget_per_trace_and_keeps_ends_extremes_and_control_changes(budget):
    steps, changes = 30_000, (1, 777, 12_345, 20_000, 29_999)
    events = job_events(student_steps=steps, spike_at=17_777, dip_at=23_456, changes=changes)
    every = plots.as_frame(events)
    frame = live(events, budget).frame()
    got, want = reference(frame), reference(every)
    for chart, traces in want.items():
        for name, xy in traces.items():
            if name != "controls changed":
                assert_decimated(got[chart][name], xy, budget, f"{chart}: {name}")
    total = got["loss student"]["total"]
    assert len(total[0]) > budget // 2 and total[1][total[0].index(17_777)] == 1e3 and 23_456 in total[0]
    assert got["accuracy"]["controls changed"] == want["accuracy"]["controls changed"]  # every change
    assert plots.controls_markers(frame) == plots.controls_markers(every)
    assert plots.controls_markers(frame)[0][::3] == list(changes)
    for builder in (plots.live_role, plots.teacher_accuracy, plots.latest_samples):
        assert builder(frame) == builder(every)
    step_rows = 3 * (5 * budget + 2) + len(changes)  # per fit: 5 decimated columns, its first and last row
    eval_rows = 3 * (5 * budget + 2) + 3 * (budget + 2)  # evals: 5 columns; epochs: the loss
    assert len(frame) <= step_rows + eval_rows  # O(budget), not O(events)
    assert budget > 100 or len(frame) < len(every) / 10


def test_many_evaluations_are_decimated_and_the_latest_sample_is_kept():
    # an eval every step (a text run evaluated often): bpc, entropy and samples of 5,000 evals
    events = job_events(student_steps=5000, eval_every=1, text=True, spike_at=4321)
    events = [p for p in events if not (isinstance(p, EvalEnd) and p.step == 5000)] + [events[-1]]  # last: no sample
    every, frame = plots.as_frame(events), live(events, 100).frame()
    got, want = reference(frame), reference(every)
    for chart in ("bpc", "entropy", "loss student"):
        for name, xy in want[chart].items():
            if name != "controls changed":
                assert_decimated(got[chart][name], xy, 100, f"{chart}: {name}")
    assert got["bpc"]["controls changed"] == want["bpc"]["controls changed"]  # scaled to the same top
    for builder in (plots.latest_samples, plots.teacher_bpc, plots.live_role):
        assert builder(frame) == builder(every)
    assert plots.latest_samples(frame)["student"]["step"] == 4999


def test_the_decimator_keeps_each_buckets_min_and_max():
    rng = np.random.default_rng(0)
    for n, budget in ((10, 16), (16, 16), (17, 16), (1000, 16), (5000, 100), (100_003, 1000)):
        values = rng.normal(size=n).tolist()
        dec = MinMaxDecimator(budget)
        for i, v in enumerate(values):
            dec.add(i, v, {})
        points = dec.points()
        seqs = [p[0] for p in points]
        assert len(points) <= budget and seqs == sorted(set(seqs))
        assert all(values[s] == v for s, v, _ in points)
        if n <= budget:
            assert seqs == list(range(n))  # all of them, as they came
            continue
        assert seqs[0] == 0 and seqs[-1] == n - 1 and dec.closed
        assert int(np.argmin(values)) in seqs and int(np.argmax(values)) in seqs
        w = dec.width
        for i, (low, high) in enumerate(dec.closed):  # bucket i holds values i*w .. (i+1)*w - 1
            chunk = values[i * w : (i + 1) * w]
            assert (low[1], high[1]) == (min(chunk), max(chunk))
            assert low[0] == i * w + chunk.index(min(chunk)) and high[0] == i * w + chunk.index(max(chunk))
        assert len(dec) <= dec.cap and dec.cap <= (budget - 2) // 2


# -- O(new events) -------------------------------------------------------------------------------------------
def test_new_events_cost_o_of_the_new_ones_not_of_the_run():
    events = synthetic_run(steps=30_000, eval_every=1000)
    h = live(events[:-1], budget=100)
    decs = {k: d for k, d in h.decimators().items() if k[0] == "step"}
    assert set(decs) == {
        ("step", "student", "s1", None, c) for c in ("loss", "loss_ce", "loss_kd", "loss_mse", "loss_hint")
    }
    adds = {k: d.adds for k, d in decs.items()}
    assert all(a == 30_000 for a in adds.values())
    assert all(len(d) <= d.cap for d in decs.values())  # the state stays bounded
    assert all(d.merges < d.adds for d in decs.values())  # merging is amortized O(1) a value
    first = h.frame()
    assert h.frame() is first  # cached until new events arrive
    built = h.rows_built
    more = synthetic_run(steps=30_020, eval_every=1000)[-21:-1]  # 20 new logged steps
    assert h.extend(more) == 20
    assert all(h.decimators()[k].adds == a + 20 for k, a in adds.items())  # only the new events
    frame = h.frame()
    assert frame is not first and len(frame) <= 5 * 100 + 2 + 2 * 30  # O(budget)
    assert 0 < h.rows_built - built <= 20  # only new events became rows: the rest was made before


# -- accessors ------------------------------------------------------------------------------------------------
def test_the_accessors_answer_what_the_pages_scanned_every_event_for():
    events = job_events(student_steps=120, text=True)
    events[-1] = FitEnd(**{**events[-1].__dict__, "status": "diverged", "message": "nan loss"})
    h = LiveHistory()
    assert (h.latest_start, h.last_step, h.fit_ends, h.failures, h.has_bpc, len(h)) == (None, None, [], [], False, 0)
    h.extend(events[:1])  # the teacher's fit_start: no step yet
    assert h.latest_start is events[0] and h.last_step is None
    h.extend(events[1:])
    starts = [p for p in events if isinstance(p, FitStart)]
    assert h.latest_start is starts[-1] and h.starts == {p.role: p for p in starts}
    assert h.start_of("teacher") is starts[0] and h.start_of("nobody") is None
    assert h.last_step is [p for p in events if isinstance(p, StepEnd)][-1]
    assert h.fit_ends == [p for p in events if isinstance(p, FitEnd)]
    assert [p.role for p in h.failures] == ["baseline"] and h.has_bpc and len(h) == len(events)


def test_pull_reads_a_buffer_once_even_from_many_threads():
    events = job_events(student_steps=2000, changes=(5, 1500))
    buffer, errors = EventBuffer(), []
    h = LiveHistory(64)
    done = threading.Event()

    def reader():
        try:
            while not done.is_set():
                h.pull(buffer)
                h.frame()
            h.pull(buffer)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    for p in events:
        buffer.append(p)
    done.set()
    for t in readers:
        t.join(60)
    assert not any(t.is_alive() for t in readers) and not errors
    assert len(h) == len(events)
    pd.testing.assert_frame_equal(h.frame(), live(events, 64).frame())


@pytest.mark.parametrize("budget", [7, 100.0, True, "1000"])
def test_a_bad_budget_is_refused_by_name(budget):
    with pytest.raises(ValueError, match=r"budget: .* is invalid; expected a whole number of points >= 8"):
        LiveHistory(budget)
