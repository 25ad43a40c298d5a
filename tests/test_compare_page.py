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
import torch
from helpers import plotly_spec
from streamlit.testing.v1 import AppTest

from workbench import plots
from workbench.data.datasets import load_dataset
from workbench.engine.config import DistillConfig
from workbench.experiment import Experiment
from workbench.store.runs import list_runs, read_metrics, runs_root
from workbench.sweeps import plots as sweep_plots
from workbench.sweeps import sweep as compare
from workbench.sweeps.sweep import paired_gain, summarize
from workbench.ui import compare_page

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
    return [plotly_spec(c.proto.spec) for c in app.get("plotly_chart")]


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

    # a visit to the Explore page (whose link drops ?sweep= from the address) and back: the sweep is shown again
    app.switch_page("workbench/ui/explore_entry.py").run()
    for key in list(app.query_params):
        del app.query_params[key]
    app.switch_page(COMPARE).run()
    assert not app.exception and app.query_params.get("sweep") in (job.job_id, [job.job_id])
    assert len(chart_specs(app)) == 2


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
    from workbench.ui import runs_table

    def unreadable(root=None):
        raise PermissionError(13, "Permission denied", str(runs_root()))

    monkeypatch.setattr(runs_table, "list_runs", unreadable)
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


# -- text: GPT students and bits per character; teachers from runs and files ----------------------
TEXT_DATASET = "shakespeare-char"


@pytest.fixture
def small_text(monkeypatch):
    """The page's sweeps run on 4,000 characters of the corpus in blocks of 16 (seconds, not minutes),
    in-process (cells in order)."""
    from workbench.data.text import from_text, shakespeare_text

    data = from_text(shakespeare_text()[:4000], block_size=16, name="play")
    monkeypatch.setattr(compare_page, "load_dataset", lambda name, **kw: data)
    monkeypatch.setattr(compare_page, "Sweep", functools.partial(compare.Sweep, workers=1))
    return data


@pytest.fixture
def fitted_roles(monkeypatch):
    """The role of every fit that trains (a loaded teacher trains nothing), in call order."""
    from workbench.engine.distiller import Distiller

    roles, real_fit = [], Distiller.fit

    def fit(self):
        roles.append(self.role)
        return real_fit(self)

    monkeypatch.setattr(Distiller, "fit", fit)
    return roles


def run_sweep(app: AppTest):
    """Press Run sweep, wait for the sweep to end, draw the page again; the job."""
    from workbench.ui.app import registry

    app.button[0].click().run()
    job = registry().get(app.query_params.get("sweep"))
    assert job is not None and job.label == "sweep", [e.value for e in app.error]
    try:
        assert job.run.join(300) and job.run.status == "completed", job.run.error
    finally:
        job.run.stop()
        job.run.join(120)
    app.run()
    assert not app.exception
    return job


def test_the_text_corpus_offers_gpt_students_and_refuses_ones_that_do_not_fit(small_text):
    app = compare_app()
    assert TEXT_DATASET in app.selectbox(key="sw_dataset").options
    app.selectbox(key="sw_dataset").set_value(TEXT_DATASET).run()
    students = app.multiselect(key="sw_text_students")
    assert students.options == compare_page.TEXT_STUDENTS
    assert students.value == ["gpt:1,16", "gpt:1,32", "gpt:2,32"] and all(
        s.startswith("gpt:") for s in students.options
    )
    assert not [w for w in app.multiselect if w.key == "sw_students"]  # no MLP sizes for text
    assert app.text_input(key="sw_teacher").proto.placeholder == "gpt:2,64"
    assert app.number_input(key="sw_text_epochs").value == 1
    for bad, expected in (
        ("mlp:4", "student sizes: 'mlp:4' is invalid: family: 'mlp' is invalid; does not fit text data 'play'"),
        (
            "gpt:1,10",
            "student sizes: 'gpt:1,10' is invalid: n\\_embd: 10 is invalid; expected a multiple of n\\_head=4",
        ),
        ("gpt:64,64", "student sizes: 'gpt:64,64' is too big for this app; expected at most 12 layers"),
    ):
        app.multiselect(key="sw_text_students").set_value(["gpt:1,8", bad])
        app.button[0].click().run()
        assert not app.exception and app.query_params.get("sweep") is None  # nothing started
        assert any(e.value.startswith(expected) for e in app.error), [e.value for e in app.error]
    app.multiselect(key="sw_text_students").set_value(["gpt:1,8"])
    app.text_input(key="sw_teacher").set_value("mlp:64")
    app.button[0].click().run()
    assert app.query_params.get("sweep") is None
    assert any(
        e.value.startswith("teacher: 'mlp:64' is invalid: family: 'mlp' is invalid; does not fit text")
        for e in app.error
    )


def test_a_text_sweep_shows_bits_per_character_and_its_pareto_front(small_text):
    app = compare_app()
    app.selectbox(key="sw_dataset").set_value(TEXT_DATASET).run()
    app.text_input(key="sw_teacher").set_value("gpt:1,16")
    app.multiselect(key="sw_text_students").set_value(["gpt:1,8", "gpt:1,16"])
    app.number_input(key="sw_seeds").set_value(2)
    job = run_sweep(app)
    rows = job.run.result
    assert len(rows) == 8 and rows["test_bpc"].between(0, 10).all()
    specs = chart_specs(app)
    titles = [(s["layout"]["xaxis"]["title"]["text"], s["layout"]["yaxis"]["title"]["text"]) for s in specs]
    assert titles == [
        ("parameters", "test bits per character (lower is better)"),
        ("student", "KD - scratch (test bits per character)"),
    ]
    # the front drawn and named is the lower-better one, checked against the definition by hand
    summary = summarize(rows)
    cells = list(zip(summary.student, summary.method, summary.params, summary.test_bpc_mean))
    front = [
        (s, m) for s, m, p, b in cells if not any(p2 <= p and b2 <= b and (p2 < p or b2 < b) for _, _, p2, b2 in cells)
    ]
    caption = next(c.value for c in app.caption if c.value.startswith("Pareto front"))
    assert caption == (
        "Pareto front (parameters vs test bits per character, lower is better): "
        + ", ".join(
            f"{s} {m}" for s, m in sorted(front, key=lambda c: dict(zip(summary.student, summary.params))[c[0]])
        )
    )
    drawn = specs[0]["data"][-1]
    assert drawn["name"] == "Pareto front" and len(drawn["x"]) == len(front)
    # the summary: bits per character first, as numbers (not percent), three decimals
    table = table_with(app, "test_bpc_mean")
    pd.testing.assert_series_equal(table.value["test_bpc_mean"], summary["test_bpc_mean"], check_names=False)
    columns = list(table.value.columns)
    assert columns.index("val_bpc_mean") < columns.index("val_acc_mean")
    assert '"test bits per character (mean)"' in table.proto.columns and "%.3f" in table.proto.columns
    assert any(c.value == "teacher: gpt:1,16 (zoo: trained once, then cached)" for c in app.caption)


def test_a_previous_runs_teacher_is_offered_and_used_without_retraining(store, fitted_roles, monkeypatch):
    from workbench.store.runs import load_run

    monkeypatch.setattr(compare_page, "Sweep", functools.partial(compare.Sweep, workers=1))
    teacher_id = store.loc[store["role"] == "teacher", "run_id"].item()
    app = compare_app()
    app.selectbox(key="sw_dataset").set_value("moons").run()
    app.radio(key="sw_teacher_source").set_value("from a previous run").run()
    assert not app.error, [e.value for e in app.error]
    pick = app.selectbox(key="sw_teacher_run")
    assert pick.value == teacher_id and len(pick.options) == 1  # the store's only moons teacher
    app.multiselect(key="sw_students").set_value(["mlp:2"])
    app.number_input(key="sw_seeds").set_value(1)
    app.number_input(key="sw_epochs").set_value(2)
    fitted_roles.clear()  # only the sweep's fits count
    job = run_sweep(app)
    assert sorted(fitted_roles) == ["baseline", "student"]  # the cells; no teacher fit
    sweep = job.context["sweep"]
    assert sweep.experiment.train_teacher is False and sweep.teacher_summary == {}
    want = load_run(teacher_id).model.state_dict()
    got = sweep.experiment.teacher.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    runs = list_runs()
    assert (runs["role"] == "teacher").sum() == 1  # still only the stored teacher: none trained on disk
    assert any(c.value == f"teacher: run:{teacher_id} (a previous run: frozen, not retrained)" for c in app.caption)


def test_from_a_previous_run_with_no_teacher_in_the_store_says_so():
    app = compare_app()
    app.selectbox(key="sw_dataset").set_value("moons").run()
    app.radio(key="sw_teacher_source").set_value("from a previous run").run()
    assert not app.exception
    assert any("no finished teacher runs for data 'moons'" in i.value for i in app.info)
    assert app.error[0].value.startswith("teacher: no finished teacher runs for data 'moons'")
    app.button[0].click().run()
    assert app.query_params.get("sweep") is None


@pytest.mark.slow  # torch.export traces the model: several seconds on a busy CPU
@pytest.mark.filterwarnings("ignore:teacher. val accuracy")  # the uploaded teacher is a fresh model
def test_an_uploaded_teacher_file_is_checked_against_the_data_and_used_frozen(tmp_path, fitted_roles, monkeypatch):
    from workbench.models.zoo import build_model
    from workbench.store.export import export_model

    monkeypatch.setattr(compare_page, "Sweep", functools.partial(compare.Sweep, workers=2))
    torch.manual_seed(0)
    program = export_model(build_model("mlp", load_dataset("moons"), hidden=[8]).eval(), (2,), tmp_path / "t.pt2")
    app = compare_app()
    app.radio(key="sw_teacher_source").set_value("upload a model file").run()
    app.file_uploader(key="sw_teacher_file").set_value(("moons.pt2", program.read_bytes(), "application/octet-stream"))
    app.run()
    assert app.error[0].value.startswith("teacher file: 'moons.pt2' is a torch.export program (.pt2)")  # not trusted
    app.checkbox(key="sw_teacher_trusted").check().run()
    error = app.error[0].value  # digits: 64 inputs, 10 classes; the program takes 2 inputs
    assert error.startswith("teacher: 'moons.pt2' (uploaded)") and "(data 'digits'" in error, error
    app.button[0].click().run()
    assert app.query_params.get("sweep") is None  # refused before any training
    app.selectbox(key="sw_dataset").set_value("moons").run()
    assert not app.error, [e.value for e in app.error]
    app.multiselect(key="sw_students").set_value(["mlp:2"])
    app.number_input(key="sw_seeds").set_value(1)
    app.number_input(key="sw_epochs").set_value(2)
    job = run_sweep(app)  # workers=2 asked for: a program teacher runs its cells in-process all the same
    assert sorted(fitted_roles) == ["baseline", "student"]  # fits in this process; no teacher fit
    assert job.context["sweep"].experiment.train_teacher is False
    assert not (list_runs()["role"] == "teacher").any()
    assert any(c.value == "teacher: moons.pt2 (an uploaded file: frozen, not retrained)" for c in app.caption)


def test_check_zoo_spec_names_the_field_and_the_spec():
    from workbench.ui.model_pickers import check_zoo_spec

    moons = load_dataset("moons")
    assert check_zoo_spec("teacher", " mlp: 8, 4 ", moons) == "mlp:8,4"
    for spec, expected in (
        ("resnet:9", "teacher: 'resnet:9' is invalid; expected FAMILY"),
        ("mlp:0", "teacher: 'mlp:0' is invalid; expected widths of at least 1"),
        ("mlp:5000", "teacher: 'mlp:5000' is too big for this app; expected at most 16 layers of at most 4096 each"),
        ("gpt:1,16", "teacher: 'gpt:1,16' is invalid: family: 'gpt' is invalid"),
    ):
        with pytest.raises(ValueError) as e:
            check_zoo_spec("teacher", spec, moons)
        assert str(e.value).startswith(expected), str(e.value)
