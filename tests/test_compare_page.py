"""The app's Compare page through streamlit.testing.v1.AppTest, and the figures it draws.

Nothing here depends on timing: a sweep is either joined, or held at a known cell by a gate
that the test opens; every job a test starts is stopped and joined before it ends.
"""

import functools
import json
import pathlib
import threading

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from workbench import plots
from workbench.data.datasets import load_dataset
from workbench.engine.config import DistillConfig
from workbench.experiment import Experiment
from workbench.store.runs import list_runs, read_metrics, runs_root
from workbench.sweeps import plots as sweep_plots
from workbench.sweeps import sweep as compare
from workbench.sweeps.sweep import paired_gain, summarize

APP = str(pathlib.Path(__file__).parent.parent / "app.py")
COMPARE = "workbench/ui/compare_entry.py"


def compare_app(query: dict | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    app.run()
    app.query_params.update(query or {})
    app.switch_page(COMPARE).run()
    assert not app.exception and app.title[0].value == "Compare student sizes"
    return app


def start_tiny_sweep(app: AppTest, seeds: int):
    """Fill the form (moons, students mlp:2 and mlp:4, scratch and kd, 2 epochs) and press Run sweep."""
    app.selectbox(key="sw_dataset").set_value("moons")
    app.multiselect(key="sw_students").set_value(["mlp:2", "mlp:4"])
    app.number_input(key="sw_seeds").set_value(seeds)
    app.number_input(key="sw_epochs").set_value(2)
    app.button[0].click().run()  # the form's "Run sweep"
    from workbench.ui.app import registry

    job = registry().get(app.query_params.get("sweep"))
    assert job is not None and job.label == "sweep"
    return job


def chart_specs(app: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in app.get("plotly_chart")]


def table_with(app: AppTest, column: str):
    """The table that has ``column`` (read-only tables carry no key)."""
    return next(d for d in app.dataframe if column in d.value)


def runs_caption(app: AppTest) -> str:
    return next(c.value for c in app.caption if " runs in " in c.value)


@pytest.mark.slow
def test_compare_page_runs_a_tiny_sweep():
    app = compare_app()
    job = start_tiny_sweep(app, seeds=2)
    try:
        assert job.run.join(300) and job.run.status == "completed", job.run.error
    finally:
        job.run.stop()
        job.run.join(120)
    app.run()
    assert not app.exception
    rows = job.run.result
    assert len(rows) == 2 * 2 * 2 and set(rows["method"]) == {"scratch", "kd"}
    assert len(job.context["progress"]) == 8 and job.context["progress"].all()[-1]["done"] == 8
    specs = chart_specs(app)
    titles = [(s["layout"]["xaxis"]["title"]["text"], s["layout"]["yaxis"]["title"]["text"]) for s in specs]
    assert titles == [("parameters", "test accuracy"), ("student", "KD gain (test accuracy, points)")]
    assert any(c.value.startswith("Pareto front (parameters vs test accuracy): ") for c in app.caption)
    # the summary: fills the page, accuracies in percent (the numbers of summarize x 100)
    table = table_with(app, "test_acc_mean")
    want = summarize(rows)
    pd.testing.assert_series_equal(table.value["test_acc_mean"], want["test_acc_mean"] * 100, check_names=False)
    assert '"test accuracy (mean)"' in table.proto.columns and "%.1f%%" in table.proto.columns
    # the runs on disk were drawn again after the sweep: the teacher and 8 fits, none running
    assert runs_caption(app).endswith(": 9 completed")


@pytest.mark.slow
def test_compare_page_stop_keeps_the_finished_fits(monkeypatch):
    """Stop pressed while the 2nd fit is held at a gate: the sweep ends after it, both fits kept."""
    from workbench.ui import compare_page
    from workbench.ui.app import registry

    monkeypatch.setattr(compare_page, "Sweep", functools.partial(compare.Sweep, workers=1))  # cells in order
    second, release = threading.Event(), threading.Event()
    fit_cell, started = compare._fit_cell, []

    def gated(ctx, cell):
        started.append(cell)
        if len(started) == 2:  # the first fit is in: hold the second until Stop was pressed
            second.set()
            assert release.wait(120)
        return fit_cell(ctx, cell)

    monkeypatch.setattr(compare, "_fit_cell", gated)
    app = compare_app()
    job = start_tiny_sweep(app, seeds=2)
    try:
        assert second.wait(120), job.run.error
        app.run()
        assert app.get("progress")[0].proto.text.startswith("running — 1/8 fits")
        assert not app.button(key="sw_stop").disabled
        app.button(key="sw_stop").click().run()
        assert job.run.stopped
    finally:
        release.set()
        job.run.stop()
        assert job.run.join(120)
    assert job.run.status == "stopped" and len(started) == 2
    last = job.context["progress"].all()[-1]
    assert (last["done"], last["total"]) == (2, 8)
    app.run()
    assert not app.exception and app.button(key="sw_stop").disabled
    assert app.get("progress")[0].proto.text.startswith("stopped — 2/8 fits")
    # the finished fits are kept on disk and listed: mlp:4 scratch (baseline) seeds 0 and 1, the teacher
    runs = list_runs()
    assert sorted(runs["role"]) == ["baseline", "baseline", "teacher"] and set(runs["status"]) == {"completed"}
    assert {c["run_id"] for c in started} <= set(runs["run_id"])
    assert runs_caption(app).endswith(": 3 completed")
    assert registry().get(app.query_params["sweep"]) is job


@pytest.fixture
def store():
    """A runs folder with one experiment: a teacher, a distilled student and a scratch baseline."""
    cfg = DistillConfig(epochs=2, eval_every=5)
    Experiment(load_dataset("moons"), "mlp:16", "mlp:4", cfg, runs=True).run()
    return list_runs()


@pytest.mark.slow
def test_compare_page_runs_table_filter_download_and_overlay(store):
    assert sorted(store["role"]) == ["baseline", "student", "teacher"]
    app = compare_app()
    assert runs_caption(app) == f"3 runs in {str(runs_root())!r}: 3 completed"
    roles = app.multiselect(key="runs_role")
    assert roles.options == ["baseline", "student", "teacher"]
    roles.set_value(["student"]).run()
    table = table_with(app, "run_id")
    student = store[store["role"] == "student"]
    assert table.value["run_id"].tolist() == student["run_id"].tolist()
    assert table.value["test_acc"].tolist() == pytest.approx((student["test_acc"] * 100).tolist())
    assert app.get("download_button")[0].proto.label == "Download the table as CSV"
    # overlay: the picked runs' validation curves, as plots.overlay_figure draws them
    roles.set_value([]).run()
    pick = app.multiselect(key="runs_pick")
    picked = store["run_id"].tolist()[:2]
    pick.set_value(picked).run()
    assert not app.exception and app.slider(key="runs_smooth").value == 0.6
    spec = next(s for s in chart_specs(app) if s["layout"]["xaxis"]["title"]["text"] == "step")
    roles_of = dict(zip(store["run_id"], store["role"]))
    want = plots.overlay_figure({f"{r} ({roles_of[r]})": read_metrics(runs_root() / r) for r in picked})
    assert [t["name"] for t in spec["data"]] == [t.name for t in want.data]
    for got, ref in zip(spec["data"], want.data):
        assert got["y"] == pytest.approx(list(ref.y))


@pytest.mark.slow
def test_compare_page_keeps_working_with_a_broken_run_on_disk(store):
    """A run folder damaged on disk (its metrics file cannot be read): a warning names it; the page and
    the other runs stay."""
    broken = runs_root() / "broken-run"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"run_id": "broken-run", "role": "student"}))
    (broken / "metrics.jsonl").mkdir()  # reading it raises IsADirectoryError
    app = compare_app()
    pick = app.multiselect(key="runs_pick")
    good = store["run_id"].iloc[0]
    pick.set_value(["broken-run", good]).run()
    assert not app.exception
    assert any("'broken-run'" in w.value and "could not be read" in w.value for w in app.warning)
    spec = next(s for s in chart_specs(app) if s["layout"]["xaxis"]["title"]["text"] == "step")
    assert [t["name"] for t in spec["data"] if t.get("showlegend") is not False] == [
        f"{good} ({store['role'].iloc[0]})"
    ]


def test_compare_page_with_an_unreadable_runs_folder(monkeypatch):
    """A runs folder that cannot be listed (permissions, a network share gone): an error names it."""
    from workbench.ui import compare_page

    def unreadable(root=None):
        raise PermissionError(13, "Permission denied", str(runs_root()))

    monkeypatch.setattr(compare_page, "list_runs", unreadable)
    app = compare_app()
    assert not app.exception
    assert app.error[0].value.startswith(f"runs folder {str(runs_root())!r} could not be read (PermissionError")


def test_compare_page_with_an_unknown_or_foreign_job_in_the_url():
    """?sweep= naming no job, or the Explore page's job (not a sweep), gets a note, not an exception."""
    from workbench.ui.app import registry

    job = registry().start(lambda run: None, label="run")
    assert job.run.join(60)
    for job_id in ("no-such-job", job.job_id):
        app = compare_app({"sweep": job_id})
        assert not app.exception
        assert any(f"sweep {job_id!r} is not running" in i.value for i in app.info)


def sweep_rows() -> pd.DataFrame:
    """A hand-made sweep result: two students, kd (T 2 and 4) and scratch, two seeds each."""
    rows = []
    for student, params, acc in (("mlp:2", 20, 0.70), ("mlp:4", 40, 0.80)):
        for seed in (0, 1):
            rows.append(
                dict(
                    student=student,
                    method="scratch",
                    seed=seed,
                    temperature=None,
                    params=params,
                    macs=params,
                    latency_ms=0.01,
                    val_acc=acc,
                    test_acc=acc + 0.01 * seed,
                    status="completed",
                )
            )
            for t in (2.0, 4.0):
                rows.append(
                    dict(
                        student=student,
                        method="kd",
                        seed=seed,
                        temperature=t,
                        params=params,
                        macs=params,
                        latency_ms=0.01,
                        val_acc=acc + t / 100,
                        test_acc=acc + 0.02 * seed,
                        status="completed",
                    )
                )
    return pd.DataFrame(rows)


def test_sweep_figures_name_their_axes_in_words():
    df = sweep_rows()
    titles = {}
    for x in ("params", "macs", "latency_ms"):
        fig = sweep_plots.accuracy_vs_size(summarize(df), x=x)
        titles[x] = (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text)
        assert fig.layout.yaxis.tickformat == ".0%"
    assert titles == {
        "params": ("parameters", "test accuracy"),
        "macs": ("multiply-accumulates per sample", "test accuracy"),
        "latency_ms": ("latency (ms, batch 1)", "test accuracy"),
    }
    val = sweep_plots.accuracy_vs_size(summarize(df), y="val_acc")
    assert val.layout.yaxis.title.text == "validation accuracy"
    assert val.layout.title.text.startswith("validation accuracy vs student size")
    gain = sweep_plots.gain_figure(paired_gain(df))
    assert gain.layout.xaxis.title.text == "student"
    assert gain.layout.yaxis.title.text == "KD gain (test accuracy, points)"
    assert gain.layout.yaxis.tickformat == "+.1%"
    seconds = sweep_plots.gain_figure(paired_gain(df.assign(seconds=1.0), metric="seconds"))
    assert seconds.layout.yaxis.title.text == "KD gain (training time (s))"
    assert seconds.layout.yaxis.tickformat is None
    heat = sweep_plots.temperature_heatmap(df)
    assert (heat.layout.xaxis.title.text, heat.layout.yaxis.title.text) == ("student", "temperature")
    assert heat.data[0].colorbar.title.text == "validation accuracy"
    for fig in (*[sweep_plots.accuracy_vs_size(df, x=x) for x in titles], gain, heat):
        assert "_" not in fig.layout.xaxis.title.text + fig.layout.yaxis.title.text + fig.layout.title.text
