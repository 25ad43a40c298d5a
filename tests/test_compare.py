"""Sweeps: cells and seeds, resume, stop, serial == parallel, statistics against hand-computed values."""

import math
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from workbench import DistillConfig, build_model, load_dataset
from workbench.sweeps import stats
from workbench.sweeps import sweep as compare
from workbench.sweeps.sweep import Method, Sweep, best_temperature, paired_gain, pareto_front, summarize, t_quantile

TEACHER = "mlp:32,32"
FAST = DistillConfig(epochs=2, device="cpu")
KEY = ["student", "method", "seed", "temperature"]
NUMBERS = ["val_acc", "test_acc", "test_agreement"]


def _sweep(**kw):
    args = dict(
        data="moons",
        teacher=TEACHER,
        students=["mlp:2", "mlp:4"],
        methods=["scratch", "kd"],
        seeds=2,
        config=FAST,
        teacher_config=DistillConfig(epochs=3, device="cpu"),
        workers=1,
        record=False,
    )
    args.update(kw)
    return Sweep(**args)


class CountFits:
    """Counts the cells fitted in this process."""

    def __init__(self, monkeypatch):
        self.n, real = 0, compare._fit_cell

        def counted(ctx, cell):
            self.n += 1
            return real(ctx, cell)

        monkeypatch.setattr(compare, "_fit_cell", counted)


# -- cells, seeds, methods (no training) ---------------------------------------------------------
def test_cells_cover_students_methods_seeds_and_temperatures():
    s = _sweep(methods=["scratch", "kd", "mse"], seeds=3, temperatures=[2, 8])
    cells = s.cells
    keys = [compare._key(c) for c in cells]
    assert len(keys) == len(set(keys))
    # T only matters for the KD term: scratch and mse run once per (student, seed).
    assert len(cells) == 2 * 3 * (2 + 1 + 1)
    kd = [c for c in cells if c["method"] == "kd"]
    assert sorted({c["temperature"] for c in kd}) == [2.0, 8.0]
    assert all(c["temperature"] is None for c in cells if c["method"] != "kd")
    assert {c["seed"] for c in cells} == {0, 1, 2}
    assert all(c["config"]["seed"] == c["seed"] for c in cells)
    assert all(c["config"]["temperature"] == c["temperature"] for c in kd)
    assert _sweep(seeds=[5, 9]).seeds == [5, 9]
    own = _sweep(methods=[{"name": "kd-T8", "temperature": 8.0}]).cells  # no sweep over T: the method's own
    assert {c["temperature"] for c in own} == {8.0} and {c["config"]["temperature"] for c in own} == {8.0}
    assert len({c["run_id"] for c in cells}) == len(cells)


def test_builtin_methods_and_user_dicts():
    base = DistillConfig(alpha=0.3, temperature=6)
    scratch = Method.parse("scratch", base)
    cfg = scratch.config(base, 1, None)
    assert not scratch.teacher and (cfg.w_ce, cfg.w_kd, cfg.w_mse, cfg.seed) == (1.0, 0.0, 0.0, 1)
    kd = Method.parse("kd", base).config(base, 0, 2.0)
    assert (kd.w_ce, kd.w_kd, kd.temperature) == pytest.approx((0.3, 0.7, 2.0))  # alpha preset of the base
    mse = Method.parse("mse", base)
    assert (mse.config(base, 0, None).w_kd, mse.config(base, 0, None).w_mse) == (0.0, 1.0)
    assert not mse.uses_temperature(base) and Method.parse("kd", base).uses_temperature(base)
    mine = Method.parse({"name": "kd", "alpha": 0.1}, base).config(base, 0, None)
    assert (mine.w_ce, mine.w_kd) == pytest.approx((0.1, 0.9))
    pure = Method.parse({"name": "soft-only", "w_kd": 1.0, "w_ce": 0.0}, base)
    assert pure.teacher and (pure.config(base, 0, None).w_ce, pure.config(base, 0, None).w_kd) == (0.0, 1.0)
    hints = Method.parse({"name": "hints", "hint_student": "hidden.0", "hint_teacher": "hidden.1"}, base)
    assert hints.config(base, 0, None).w_hint == 1.0


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(seeds=0), "seeds"),
        (dict(seeds=[1, 1]), "seeds"),
        (dict(students=[]), "students"),
        (dict(temperatures=[0]), "temperatures"),
        (dict(methods=["kd", "kd"]), "methods"),
        (dict(methods=["hints"]), "hints"),
        (dict(methods=[{"name": "x", "w_kdd": 1}]), "w_kdd"),
        (dict(methods=[{"name": "x", "lr": -1}]), "lr"),
        (dict(students=["mlp:4", "rnn:4"]), "students"),
        (dict(methods=[{"name": "hints", "hint_student": "hidden.5", "hint_teacher": "hidden.1"}]), "hint_student"),
        (dict(methods=[{"name": "hints", "hint_student": "hidden.0", "hint_teacher": "features"}]), "hint_teacher"),
    ],
)
def test_bad_input_fails_before_training(kw, field):
    with pytest.raises(ValueError, match=field):
        _sweep(**kw)


# -- statistics against hand-computed values ----------------------------------------------------
def _frame():
    rows = []
    for seed, (s, k) in enumerate([(0.80, 0.85), (0.82, 0.86), (0.78, 0.80)]):
        rows.append(
            dict(
                student="mlp:4",
                method="scratch",
                seed=seed,
                temperature=np.nan,
                params=22,
                test_acc=s,
                val_acc=s,
                status="completed",
            )
        )
        rows.append(
            dict(
                student="mlp:4",
                method="kd",
                seed=seed,
                temperature=4.0,
                params=22,
                test_acc=k,
                val_acc=k,
                status="completed",
            )
        )
    rows.append(
        dict(
            student="mlp:4",
            method="kd",
            seed=3,
            temperature=4.0,
            params=22,
            test_acc=0.99,
            val_acc=0.99,
            status="completed",
        )
    )  # no scratch partner: not in the pairs
    rows.append(
        dict(
            student="mlp:4",
            method="scratch",
            seed=4,
            temperature=np.nan,
            params=22,
            test_acc=0.1,
            val_acc=0.1,
            status="error",
        )
    )  # failed: ignored everywhere
    return pd.DataFrame(rows)


def test_paired_gain_matches_a_hand_computed_t_interval():
    g = paired_gain(_frame())
    assert len(g) == 1
    r = g.iloc[0]
    # gains 0.05, 0.04, 0.02: mean 0.11/3; deviations 0.01333, 0.00333, -0.01667;
    # squares sum 0.00046667, / 2 -> var 0.00023333, std 0.0152753; half = 4.3027 * 0.0152753 / sqrt(3).
    assert r.n == 3 and r.temperature == 4.0 and r.params == 22
    assert r.gain == pytest.approx(0.0366667, abs=1e-6)
    assert r["std"] == pytest.approx(0.0152753, rel=1e-5)
    assert r.ci_low == pytest.approx(0.0366667 - 0.0379462, abs=2e-6)
    assert r.ci_high == pytest.approx(0.0366667 + 0.0379462, abs=2e-6)
    assert (r.method_mean, r.baseline_mean) == pytest.approx((0.8366667, 0.80))
    with pytest.raises(ValueError, match="mse"):
        paired_gain(_frame(), method="mse")


def test_summarize_mean_std_n_per_cell_group():
    s = summarize(_frame()).set_index("method")
    assert s.loc["scratch", "n"] == 3 and s.loc["kd", "n"] == 4
    assert s.loc["scratch", "test_acc_mean"] == pytest.approx(0.80)
    assert s.loc["scratch", "test_acc_std"] == pytest.approx(0.02)  # deviations 0, .02, -.02: sqrt(.0008/2)
    assert s.loc["kd", "test_acc_mean"] == pytest.approx((0.85 + 0.86 + 0.80 + 0.99) / 4)
    assert math.isnan(s.loc["scratch", "temperature"]) and s.loc["kd", "temperature"] == 4.0


def test_t_quantiles():
    assert t_quantile(1) == 12.7062 and t_quantile(4) == 2.7764 and t_quantile(30) == 2.0423
    assert t_quantile(1000) == pytest.approx(1.9623, abs=1e-4)
    stats = pytest.importorskip("scipy.stats")
    for dof in range(1, 80):
        assert t_quantile(dof) == pytest.approx(stats.t.ppf(0.975, dof), abs=2e-4)


def test_pareto_front_on_a_hand_made_frame():
    pts = {  # (student, method): (params, latency_ms, mean test_acc)
        ("a", "scratch"): (10, 0.5, 0.70),
        ("a", "kd"): (10, 0.5, 0.75),
        ("b", "scratch"): (20, 0.2, 0.74),
        ("b", "kd"): (20, 0.2, 0.80),
        ("c", "scratch"): (40, 0.9, 0.79),
        ("c", "kd"): (40, 0.9, 0.80),
    }
    rows = [
        dict(
            student=s,
            method=m,
            seed=seed,
            temperature=np.nan,
            params=p,
            latency_ms=lat,
            test_acc=acc + d,
            status="completed",
        )
        for (s, m), (p, lat, acc) in pts.items()
        for seed, d in enumerate((-0.01, 0.01))
    ]
    front = pareto_front(pd.DataFrame(rows))
    # c/kd ties b/kd on accuracy with more parameters: dominated.
    assert list(zip(front.student, front.method)) == [("a", "kd"), ("b", "kd")]
    assert front.test_acc_mean.tolist() == pytest.approx([0.75, 0.80])
    by_latency = pareto_front(pd.DataFrame(rows), x="latency_ms")
    assert list(zip(by_latency.student, by_latency.method)) == [("b", "kd")]
    assert pareto_front(summarize(pd.DataFrame(rows))).equals(front)


def _cells(points, metric):
    """Rows of a hand-made sweep: ``points`` maps (student, method) to (params, mean of ``metric``);
    two seeds per cell at mean -/+ 0.01."""
    return pd.DataFrame(
        [
            dict(student=s, method=m, seed=seed, temperature=np.nan, params=p, **{metric: v + d}, status="completed")
            for (s, m), (p, v) in points.items()
            for seed, d in enumerate((-0.01, 0.01))
        ]
    )


def test_pareto_front_of_bits_per_character_keeps_the_lowest():
    """bpc is lower-better: a cell is dropped when one no larger has bpc as low or lower (one strictly)."""
    pts = {
        ("a", "scratch"): (10, 3.10),
        ("a", "kd"): (10, 3.00),  # front: the smallest cell's best
        ("b", "scratch"): (20, 3.05),  # dominated by a/kd (smaller and lower)
        ("b", "kd"): (20, 2.80),  # front
        ("c", "scratch"): (40, 2.80),  # ties b/kd with more parameters: dominated
        ("c", "kd"): (40, 2.50),  # front
    }
    df = _cells(pts, "test_bpc")
    front = pareto_front(df, y="test_bpc")
    assert list(zip(front.student, front.method)) == [("a", "kd"), ("b", "kd"), ("c", "kd")]
    assert front.test_bpc_mean.tolist() == pytest.approx([3.00, 2.80, 2.50])
    # read as higher-better (the old behaviour) the front would be the opposite end: the override shows it
    high = pareto_front(df, y="test_bpc", higher_is_better=True)
    assert list(zip(high.student, high.method)) == [("a", "scratch")]
    assert pareto_front(summarize(df), y="test_bpc").equals(front)
    assert compare.nondominated([1, 2, 3], [3.0, 2.0, 2.5], higher_is_better=False) == [True, True, False]


def test_pareto_front_ties_and_missing_values():
    """Equal cells beat neither: both stay; a cell without a value (NaN) is never on the front."""
    pts = {("a", "kd"): (10, 0.80), ("a", "mse"): (10, 0.80), ("b", "kd"): (20, 0.80), ("c", "kd"): (30, 0.90)}
    front = pareto_front(_cells(pts, "test_acc"))
    assert list(zip(front.student, front.method)) == [("a", "kd"), ("a", "mse"), ("c", "kd")]
    assert compare.nondominated([1, 2, 3], [0.5, math.nan, 0.4]) == [True, False, False]
    assert compare.nondominated([math.nan, 2], [0.9, 0.4]) == [False, True]


@pytest.mark.parametrize(
    "metric, higher",
    [
        ("test_acc", True),
        ("val_acc", True),
        ("test_agreement", True),
        ("test_bpc", False),
        ("val_bpc", False),
        ("val_loss", False),
        ("train_loss", False),
        ("seconds", False),
    ],
)
def test_each_metric_has_its_direction(metric, higher):
    assert stats.larger_is_better(metric) is higher
    assert stats.larger_is_better(metric, not higher) is (not higher)  # an explicit argument wins


def test_pareto_front_refuses_a_metric_of_unknown_direction():
    df = _cells({("a", "kd"): (10, 0.8), ("b", "kd"): (20, 0.9)}, "test_acc")
    summary = summarize(df).assign(my_score_mean=[1.0, 2.0])  # a column of the user's own, averaged by them
    with pytest.raises(ValueError, match=r"y: 'my_score' has no known direction; expected one of .*test_bpc") as e:
        pareto_front(summary, y="my_score")
    assert "higher_is_better=True or False" in str(e.value)
    low = pareto_front(summary, y="my_score", higher_is_better=False)  # named: any column works
    assert low.student.tolist() == ["a"] and low.my_score_mean.tolist() == [1.0]
    assert pareto_front(summary, y="my_score", higher_is_better=True).student.tolist() == ["a", "b"]
    with pytest.raises(ValueError, match=r"higher_is_better: 'yes' is invalid; expected True, False or None"):
        pareto_front(df, higher_is_better="yes")
    with pytest.raises(ValueError, match=r"y: 'test_bpc' has no values in these rows; metrics with values: .*test_acc"):
        pareto_front(df, y="test_bpc")


def test_best_temperature_on_bits_per_character_picks_the_lowest():
    rows = [
        dict(
            student="s",
            method="kd",
            seed=seed,
            temperature=t,
            params=5,
            val_bpc=v,
            test_bpc=v + 0.1,
            status="completed",
        )
        for t, v in ((1.0, 2.4), (2.0, 2.2), (4.0, 2.3))
        for seed in (0, 1)
    ]
    best = best_temperature(pd.DataFrame(rows), metric="val_bpc")
    assert best.temperature.tolist() == [2.0] and best.val_bpc.tolist() == pytest.approx([2.2])
    assert best.test_bpc.tolist() == pytest.approx([2.3])
    with pytest.raises(ValueError, match=r"metric: 'test_bpc' is invalid; expected a validation metric"):
        best_temperature(pd.DataFrame(rows), metric="test_bpc")


def test_sweep_figures_of_a_text_sweep_draw_bits_per_character_lower_better():
    from workbench.sweeps import plots as sweep_plots

    pts = {("a", "scratch"): (10, 3.1), ("a", "kd"): (10, 3.0), ("b", "scratch"): (20, 3.05), ("b", "kd"): (20, 2.8)}
    df = _cells(pts, "test_bpc")
    df["val_bpc"] = df["test_bpc"] + 0.05
    assert stats.main_metric(df) == "test_bpc" and stats.main_metric(df.drop(columns=["test_bpc"])) == "test_acc"
    fig = sweep_plots.accuracy_vs_size(summarize(df))  # a text sweep's main metric: test bits per character
    front = fig.data[-1]
    assert front.name == "Pareto front" and list(front.x) == [10, 20] and list(front.y) == pytest.approx([3.0, 2.8])
    assert fig.layout.yaxis.title.text == "test bits per character (lower is better)"
    assert fig.layout.yaxis.tickformat is None  # not a fraction: no percent ticks
    gain = sweep_plots.gain_figure(paired_gain(df, metric="test_bpc"))
    assert list(gain.data[0].y) == pytest.approx([-0.1, -0.25])  # kd - scratch: below 0, KD better
    assert gain.layout.yaxis.title.text == "KD - scratch (test bits per character)"
    assert "below 0: KD better" in gain.layout.title.text
    temps = pd.concat(
        [df[df.method == "kd"].assign(temperature=t, val_bpc=df.val_bpc + d) for t, d in ((1, 0.2), (2, 0))]
    )
    heat = sweep_plots.temperature_heatmap(temps)  # text: val bits per character
    assert heat.data[0].colorbar.title.text == "validation bits per character"
    assert heat.data[1].name == "best T (val)" and list(heat.data[1].y) == ["2", "2"]  # the lowest val bpc
    with pytest.raises(ValueError, match=r"y: 'test_bpc' has no values in these rows; expected a metric"):
        sweep_plots.accuracy_vs_size(_cells(pts, "test_acc"), y="test_bpc")


def test_best_temperature_is_chosen_on_val_not_test():
    rows = []
    for seed in range(2):
        for t, val, test in ((2.0, 0.90, 0.70), (8.0, 0.80, 0.95)):
            rows.append(
                dict(
                    student="mlp:8",
                    method="kd",
                    seed=seed,
                    temperature=t,
                    params=100,
                    val_acc=val,
                    test_acc=test,
                    status="completed",
                )
            )
        rows.append(
            dict(
                student="mlp:8",
                method="scratch",
                seed=seed,
                temperature=np.nan,
                params=100,
                val_acc=0.99,
                test_acc=0.99,
                status="completed",
            )
        )
    best = best_temperature(pd.DataFrame(rows))
    assert best.temperature.tolist() == [2.0] and best.method.tolist() == ["kd"]
    assert best.val_acc.tolist() == [0.90] and best.test_acc.tolist() == [0.70] and best.n.tolist() == [2]


# -- running sweeps -----------------------------------------------------------------------------
def test_run_saves_rows_and_resume_runs_only_missing_cells(monkeypatch):
    fits = CountFits(monkeypatch)
    events = []
    s = _sweep()
    df = s.run(on_progress=events.append)
    assert fits.n == len(df) == 8 and [e["done"] for e in events] == list(range(1, 9))
    assert all(e["total"] == 8 and e["skipped"] == 0 for e in events)
    assert set(df.status) == {"completed"} and df[NUMBERS].notna().all().all()
    assert (df.groupby("student").params.nunique() == 1).all() and df.latency_ms.gt(0).all()
    assert df.loc[df.method == "scratch", "temperature"].isna().all()
    assert df.loc[df.method == "kd", "temperature"].eq(FAST.temperature).all()
    saved = pd.read_csv(s.path)
    assert len(saved) == 8 and str(s.path).endswith(f"sweeps/{s.name}.csv")

    kept = saved.drop(index=[0, 3, 5])
    kept.loc[kept.index[0], "status"] = "error"  # failed cells run again too
    kept.drop(columns=["val_bpc", "test_bpc"]).to_csv(s.path, index=False)  # as written before those columns
    fits.n, events = 0, []
    again = _sweep()  # same settings: same name, same file; the teacher comes from the cache
    df2 = again.run(on_progress=events.append)
    assert fits.n == 4 and len(events) == 4 and events[0]["skipped"] == 4
    assert again.teacher_summary.get("cached") is True
    assert len(df2) == 8 and len(pd.read_csv(s.path)) == 8
    pd.testing.assert_frame_equal(
        df2.sort_values(KEY)[KEY + NUMBERS].reset_index(drop=True),
        df.sort_values(KEY)[KEY + NUMBERS].reset_index(drop=True),
    )
    fits.n = 0
    assert len(_sweep().run()) == 8 and fits.n == 0  # everything saved: nothing to run
    fewer = _sweep(seeds=1).run()  # the same sweep with fewer seeds: its cells only, nothing run
    assert fits.n == 0 and len(fewer) == 4 and set(fewer.seed) == {0}
    with pytest.raises(ValueError, match="config"):
        _sweep(name=s.name, config=FAST.replace(epochs=3)).run()  # another config under the same name


def test_stop_ends_the_sweep_early_and_resume_finishes_it(monkeypatch):
    fits = CountFits(monkeypatch)
    s = _sweep()
    df = s.run(on_progress=lambda e: s.stop() if e["done"] == 2 else None)
    assert fits.n == 2 and len(df) == 2 and s.stopped and len(pd.read_csv(s.path)) == 2
    df = _sweep().run()
    assert fits.n == 8 and len(df) == 8


def test_stop_during_teacher_training():
    s = _sweep(teacher_config=DistillConfig(epochs=5000, device="cpu", log_every=1))

    class StopAtStep3:  # stop from inside the teacher's fit, once it is under way (no timer)
        def on_step_end(self, p):
            if p.step == 3:
                s.stop()

    s.experiment.callbacks.append(StopAtStep3())
    df = s.run()
    assert s.stopped and len(df) == 0
    teacher = s.experiment.teacher_result
    assert teacher.status == "stopped" and teacher.summary["epochs"] <= 2  # at the end of that epoch


def test_one_sweep_file_has_one_writer():
    s = _sweep()
    clash = []

    def nested(event):  # a second session starts the same sweep while this one runs
        if not clash:
            with pytest.raises(ValueError, match="already running") as e:
                _sweep().run()
            clash.append(e)

    s.run(on_progress=nested)
    assert clash and len(_sweep().run()) == 8  # released after the run


@pytest.mark.parametrize("kind", ["module", "state"])
def test_worker_path_in_process_gives_the_serial_numbers(monkeypatch, kind):
    """The worker initializer and cell function, run here, with a teacher that is not in the cache:
    a plain module (sent pickled) or a zoo model given trained (sent as spec + weights)."""
    torch.manual_seed(0)
    data = load_dataset("moons")
    if kind == "module":
        data = data.with_(spec={})  # user data: no cache key
        teacher = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
    else:
        teacher = build_model("mlp", data, hidden=(32,))
    s = _sweep(data=data, teacher=teacher, seeds=1, save=False)
    serial = s.run()
    assert kind in s._teacher_payload()
    monkeypatch.setattr(compare, "_CONTEXT", None)
    threads = torch.get_num_threads()
    try:
        payloads = pickle.loads(pickle.dumps((data, s._teacher_payload())))
        compare._init_worker(*payloads, 1, dict(os.environ))
        rows = [compare.run_cell(c) for c in s.cells]
    finally:
        torch.set_num_threads(threads)
    worker = compare._frame([{**r, **s.sizes[r["student"]]} for r in rows])
    pd.testing.assert_frame_equal(worker[KEY + NUMBERS], serial[KEY + NUMBERS])


@pytest.mark.slow
def test_parallel_sweeps_follow_the_callers_environment(tmp_path, monkeypatch):
    """Workers forked from a long-lived fork server read the caller's current environment:
    here each sweep's cached teacher lives in another cache folder."""
    for i in range(2):
        monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / f"cache{i}"))
        df = _sweep(
            name=f"env{i}",
            workers=2,
            seeds=1,  # another teacher each time: only in its folder
            teacher_config=DistillConfig(epochs=3 + i, device="cpu"),
        ).run()
        assert (df.status == "completed").all() and len(df) == 4
        assert (tmp_path / f"cache{i}" / "teachers").is_dir()


class _Unpicklable(nn.Module):
    """A teacher with no zoo spec that cannot be pickled (like a loaded torch.export program)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.hook = inner, lambda x: x  # a lambda: pickle refuses it

    def forward(self, x):
        return self.hook(self.inner(x))


def test_a_teacher_that_cannot_be_pickled_runs_its_cells_in_process(monkeypatch):
    data = load_dataset("moons")
    teacher = _Unpicklable(build_model("mlp", data, hidden=(8,)))
    with pytest.raises(Exception):
        pickle.dumps(teacher)
    counted = CountFits(monkeypatch)  # cells fitted in this process, not in workers
    with pytest.warns(UserWarning, match=r"in-process; teacher: it cannot be sent to worker processes"):
        df = _sweep(data=data, teacher=teacher, students=["mlp:2"], methods=["scratch"], seeds=2, workers=2).run()
    assert (df.status == "completed").all() and len(df) == 2
    assert counted.n == 2


@pytest.mark.slow
def test_parallel_with_stop_and_resume_equals_serial():
    serial = _sweep(name="serial").run()
    s = _sweep(name="parallel", workers=2)
    part = s.run(on_progress=lambda e: s.stop())
    assert s.stopped and 1 <= len(part) <= 2  # only the cells in flight finish
    full = _sweep(name="parallel", workers=2).run()
    assert len(full) == 8
    pd.testing.assert_frame_equal(full[KEY + NUMBERS], serial[KEY + NUMBERS])


def test_recorded_runs_and_figures():
    from workbench import plots
    from workbench.sweeps import plots as sweep_plots
    from workbench.sweeps.sweep import run_histories

    s = _sweep(students=["mlp:2", "mlp:4"], methods=["scratch", "kd", "mse"], temperatures=[2, 4], record=True)
    df = s.run()
    hist = run_histories(df[df.student == "mlp:2"].head(3))
    assert len(hist) == 3 and all(len(h) for h in hist.values())
    assert len(plots.overlay_figure(hist).data) == 6

    summary = summarize(df)
    fig = sweep_plots.accuracy_vs_size(summary)
    names = [t.name for t in fig.data]
    assert names == ["kd T=2", "kd T=4", "mse", "scratch", "Pareto front"]
    kd2 = summary[(summary.method == "kd") & (summary.temperature == 2)].sort_values("params")
    assert list(fig.data[0].y) == kd2.test_acc_mean.tolist()
    assert list(fig.data[0].error_y.array) == kd2.test_acc_std.tolist()
    front = pareto_front(df)
    assert list(fig.data[-1].x) == front.params.tolist() and list(fig.data[-1].y) == front.test_acc_mean.tolist()
    assert sweep_plots.accuracy_vs_size(df, x="latency_ms").data[-1].name == "Pareto front"

    gain = paired_gain(df)
    gfig = sweep_plots.gain_figure(gain)
    assert [t.name for t in gfig.data] == ["kd - scratch T=2", "kd - scratch T=4"]
    g2 = gain[gain.temperature == 2]
    assert list(gfig.data[0].y) == g2.gain.tolist()
    assert list(gfig.data[0].error_y.array) == pytest.approx((g2.ci_high - g2.gain).tolist())

    hfig = sweep_plots.temperature_heatmap(df)
    z = np.array(hfig.data[0].z)
    want = df[df.method == "kd"].pivot_table(index="temperature", columns="student", values="val_acc")
    assert list(hfig.data[0].x) == ["mlp:2", "mlp:4"] and list(hfig.data[0].y) == ["2", "4"]
    np.testing.assert_allclose(z, want[["mlp:2", "mlp:4"]].to_numpy())
    best = best_temperature(df, "kd")
    assert list(hfig.data[1].y) == [f"{t:g}" for t in best.temperature]


def test_sweep_names_stay_inside_the_runs_folder(tmp_path):
    for bad in ("../../x", "/abs", "a b", ".hidden", "-rf", ""):
        with pytest.raises(ValueError, match="name: .* is not a valid sweep name"):
            _sweep(name=bad)
    import numpy as np

    from workbench.data.datasets import from_arrays

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 2)).astype("float32"), rng.integers(0, 2, 120)
    s = _sweep(
        data=from_arrays(x, y, name="My Data/../x"), students=["mlp:2"], methods=["scratch"], seeds=1, record=True
    )
    assert s.name.startswith("My_Data_.._x-") and s.path.parent == tmp_path / "runs" / "sweeps"
    df = s.run()
    assert list(df["status"]) == ["completed"]  # the recorder accepts the run id made from that name
