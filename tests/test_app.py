"""The Streamlit app through streamlit.testing.v1.AppTest (the browser test is test_app_browser.py)."""

import ast
import json
import pathlib
import sys
import time
import types

import numpy as np
import pandas as pd
import pytest
from helpers import plotly_spec
from streamlit.testing.v1 import AppTest

APP = str(pathlib.Path(__file__).parent.parent / "app.py")


def test_the_app_turns_off_streamlits_full_collection_after_each_run():
    # Streamlit runs gc.collect(2) after every script run; the live fragment reruns every second or so, and a
    # full collection of the server (~400,000 objects) held the GIL ~450 ms each time while the training waited
    import gc

    from streamlit import config

    config.set_option("runner.postScriptGC", True)
    try:
        app = AppTest.from_file(APP, default_timeout=60)
        app.run()
        assert not app.exception
        assert config.get_option("runner.postScriptGC") is False
    finally:
        gc.unfreeze()


@pytest.fixture
def at():
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception
    yield app
    stop_all_jobs()


def stop_all_jobs():
    from workbench.ui.app import registry

    running = registry().running()
    for job in running:
        job.run.stop()
    assert all(job.run.join(60) for job in running), "a job did not stop"


def job_of(at):
    from workbench.ui.app import registry

    return registry().get(
        at.query_params.get("job")[0] if isinstance(at.query_params.get("job"), list) else at.query_params.get("job")
    )


def wait_done(at, timeout=90):
    t0 = time.monotonic()
    while True:
        at.run()
        job = job_of(at)
        if job is not None and job.run.done:
            at.run()
            return job
        assert time.monotonic() - t0 < timeout, "job did not finish"
        time.sleep(0.3)


def wait_for(cond, what, timeout=120):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def steps_of(job, role="student"):
    return [p for p in job.run.buffer.all() if p.event == "step" and p.role == role]


def code(at):
    return next(e for e in at.expander if e.label == "Copy as code").code[0].value


def long_moons_run(at, **widgets):
    """Start a moons job long enough to act on mid-run (widgets: slider/select_slider key -> value)."""
    at.sidebar.selectbox(key="dataset").set_value("moons").run()
    for key, value in widgets.items():
        getattr(at.sidebar, "select_slider" if key == "temperature" else "slider")(key=key).set_value(value).run()
    at.sidebar.number_input(key="epochs").set_value(2000).run()
    at.button(key="run").click().run()
    return job_of(at)


def test_defaults_are_sane(at):
    # the first screen: digits, an MLP-16 student, 10% of the labels, T=8, alpha=0.1 (docs/results.md)
    assert at.sidebar.selectbox(key="dataset").value == "digits-images"
    assert at.sidebar.selectbox(key="teacher_family").value == "cnn2d"
    assert at.sidebar.text_input(key="teacher_sizes").value == "32,64"
    assert at.sidebar.selectbox(key="student_family").value == "mlp"
    assert at.sidebar.text_input(key="student_sizes").value == "16"
    assert at.sidebar.select_slider(key="temperature").value == 8.0
    assert at.sidebar.slider(key="alpha").value == 0.1
    assert at.sidebar.slider(key="labeled_fraction").value == 0.1
    assert at.sidebar.number_input(key="epochs").value == 50
    assert at.sidebar.number_input(key="teacher_epochs").value == 20
    assert at.button(key="run").disabled is False and at.button(key="stop").disabled is True
    src = code(at)
    assert "wb.load_dataset('digits-images', seed=0)" in src
    assert "wb.DistillConfig(epochs=50, temperature=8.0, alpha=0.1" in src and "labeled_fraction=0.1" in src
    assert "teacher='cnn2d:32,64', student='mlp:16'" in src


def test_widgets_change_the_config_that_would_run(at):
    at.sidebar.selectbox(key="dataset").set_value("mnist1d").run()
    assert at.sidebar.selectbox(key="teacher_family").options == ["mlp", "cnn1d"]
    at.sidebar.select_slider(key="temperature").set_value(8.0).run()
    at.sidebar.slider(key="labeled_fraction").set_value(0.2).run()
    at.sidebar.radio(key="mode").set_value("each term").run()
    at.sidebar.slider(key="w_mse").set_value(0.5).run()
    src = code(at)
    assert "load_dataset('mnist1d'" in src and "temperature=8.0" in src and "labeled_fraction=0.2" in src
    assert "w_mse=0.5" in src and "alpha" not in src.split("config =")[1].split("\n")[0]
    ns = {}
    exec(src.split("experiment =")[0], ns)  # the settings part of the code is valid Python
    assert ns["config"].w_mse == 0.5 and ns["config"].temperature == 8.0


def test_a_short_run_produces_history_and_results(at):
    at.sidebar.selectbox(key="dataset").set_value("moons").run()
    at.sidebar.number_input(key="epochs").set_value(3).run()
    at.button(key="run").click().run()
    assert at.query_params.get("job")
    job = wait_done(at)
    assert job.run.status == "completed"
    roles = [p.role for p in job.run.buffer.all() if p.event == "fit_end"]
    assert roles == ["teacher", "student", "baseline"]
    assert [m.label for m in at.metric] == ["teacher test accuracy", "student test accuracy", "baseline test accuracy"]
    charts = at.get("plotly_chart")
    assert len(charts) >= 4  # accuracy, loss, explorer, boundaries

    acc = plotly_spec(charts[0].proto.spec)
    student = [t for t in acc["data"] if t.get("name") == "student"][0]
    assert len(student["x"]) == 3  # one eval per epoch
    assert not at.exception
    assert not [i for i in at.info if i.value.startswith("Below: the last run")]
    at.sidebar.selectbox(key="dataset").set_value("spirals").run()  # the results shown are moons' now
    (note,) = [i.value for i in at.info if i.value.startswith("Below: the last run")]
    assert note == "Below: the last run, on moons. Press Run to run spirals with the settings in the sidebar."


def test_stop_works(at):
    at.sidebar.selectbox(key="dataset").set_value("moons").run()
    at.sidebar.number_input(key="epochs").set_value(2000).run()
    at.button(key="run").click().run()
    job = job_of(at)
    t0 = time.monotonic()
    while not any(p.event == "step" and p.role == "student" for p in job.run.buffer.all()):  # the teacher is done
        assert time.monotonic() - t0 < 300
        time.sleep(0.05)
    at.run()
    assert at.button(key="stop").disabled is False and at.button(key="run").disabled is True
    at.button(key="stop").click().run()
    assert job.run.join(120) and job.run.status == "stopped"
    at.run()
    assert at.button(key="run").disabled is False
    (warning,) = [w.value for w in at.warning if w.value.startswith("Stopped before the end")]
    assert "the student trained only part of the way" in warning and "no verdict" in warning


def test_live_temperature_change_reaches_the_job(at):
    at.sidebar.selectbox(key="dataset").set_value("moons").run()
    at.sidebar.number_input(key="epochs").set_value(2000).run()
    at.button(key="run").click().run()
    job = job_of(at)
    t0 = time.monotonic()
    while job.run.controls is None:
        assert time.monotonic() - t0 < 300
        time.sleep(0.05)
    at.sidebar.select_slider(key="temperature").set_value(12.0).run()
    assert job.run.controls.current.temperature == 12.0
    job.run.stop()


def test_a_diverged_run_shows_why_and_the_page_can_run_again(at):
    from helpers import mlp, toy_data

    from workbench import DistillConfig
    from workbench.ui.app import registry

    cfg = DistillConfig(epochs=50, lr=1e12, optimizer="sgd")  # blows up within a few steps
    job = registry().start(lambda live: live.distiller(None, mlp(), toy_data(), cfg, role="baseline").fit(), "distill")
    assert job.run.join(60) and job.run.status == "diverged"
    at.query_params["job"] = job.job_id
    at.run()
    assert not at.exception
    assert any("baseline diverged" in e.value for e in at.error), [e.value for e in at.error]
    assert at.button(key="run").disabled is False


@pytest.mark.parametrize(
    "content,message",
    [
        (b"a,b\n1,2\n3,4\n", "at least 10 rows"),
        (b"x,label\n" + b"".join(b"%d,same\n" % i for i in range(30)), "only one class"),
        (b"name,label\n" + b"".join(b"n%d,%d\n" % (i, i % 2) for i in range(30)), "numeric"),
        (b"\x00\x01garbage", "binary"),
        (b"f1,f2,label\n", "no data rows"),
        (b"", "is empty"),
        (b"PK\x03\x04" + bytes(range(256)), "binary"),
    ],
)
def test_bad_csv_shows_a_message_not_a_traceback(at, content, message):
    at.sidebar.selectbox(key="dataset").set_value("upload a CSV...").run()
    at.sidebar.file_uploader(key="csv").set_value(("mine.csv", content, "text/csv")).run()
    assert not at.exception
    assert at.error and "mine.csv" in at.error[0].value and message in at.error[0].value.lower()
    assert at.button(key="run").disabled


def test_good_csv_runs(at):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(200, 3)), columns=["f1", "f2", "f3"])
    df["kind"] = np.where(df.f1 > 0, "up", "down")
    at.sidebar.selectbox(key="dataset").set_value("upload a CSV...").run()
    at.sidebar.file_uploader(key="csv").set_value(("mine.csv", df.to_csv(index=False).encode(), "text/csv")).run()
    assert at.sidebar.selectbox(key="target").value == "kind"
    at.sidebar.number_input(key="epochs").set_value(3).run()
    assert "wb.from_csv('mine.csv', target='kind', seed=0)" in code(at)
    at.button(key="run").click().run()
    job = wait_done(at)
    assert job.run.status == "completed" and not at.exception


# -- a reload or a second viewer never changes a running job -----------------------------------
def test_a_second_session_on_the_job_url_shows_its_settings_and_changes_nothing(at):
    job = long_moons_run(at, temperature=12.0, alpha=0.2)
    wait_for(lambda: len(steps_of(job)) >= 2, "student steps")
    other = AppTest.from_file(APP, default_timeout=60)  # a reload is a new session with the same URL
    other.query_params["job"] = job.job_id
    other.run()
    assert not other.exception
    sb = other.sidebar
    assert sb.selectbox(key="dataset").value == "moons" and sb.number_input(key="epochs").value == 2000
    assert sb.select_slider(key="temperature").value == 12.0 and sb.slider(key="alpha").value == 0.2
    other.run()
    seen = len(steps_of(job))
    wait_for(lambda: len(steps_of(job)) > seen + 2, "more student steps after the second session")
    steps = steps_of(job)
    assert {(p.temperature, p.w_ce, p.w_kd) for p in steps} == {(12.0, 0.2, 0.8)}
    assert not any(p.controls_changed for p in steps)  # no "controls changed" mark
    # moving a control in that session does steer the job
    sb.select_slider(key="temperature").set_value(4.0).run()
    assert job.run.controls.current.temperature == 4.0
    wait_for(lambda: any(p.controls_changed and p.temperature == 4.0 for p in steps_of(job)), "the moved T")
    # and the first session, rerun, keeps what it shows and sends nothing
    at.run()
    assert at.sidebar.select_slider(key="temperature").value == 12.0
    assert job.run.controls.current.temperature == 4.0


def test_a_visit_to_the_compare_page_keeps_the_settings_and_the_running_job(at):
    """Streamlit drops the state of widgets a page does not draw, and the sidebar's page links drop the URL's
    ?job=: coming back showed the defaults and no job (Run enabled beside the job still running)."""
    job = long_moons_run(at, temperature=12.0)
    assert job is not None and not job.run.done
    at.switch_page("workbench/ui/compare_entry.py").run()
    assert not at.exception and at.title[0].value == "Compare student sizes"
    for key in list(at.query_params):  # what a click on the page link does to the address
        del at.query_params[key]
    at.switch_page("workbench/ui/explore_entry.py").run()
    assert not at.exception
    assert at.sidebar.selectbox(key="dataset").value == "moons"
    assert at.sidebar.select_slider(key="temperature").value == 12.0
    assert at.sidebar.number_input(key="epochs").value == 2000
    assert job_of(at) is job and at.button(key="run").disabled  # the same job, and no second one


def test_pause_button_says_resume_while_paused(at):
    job = long_moons_run(at)
    wait_for(lambda: any(p.event == "step" for p in job.run.buffer.all()), "a step")
    at.run()
    assert at.button(key="pause").label == "Pause"
    at.button(key="pause").click().run()
    assert job.run.status == "paused" and at.button(key="pause").label == "Resume"
    at.button(key="pause").click().run()
    assert job.run.status == "running" and at.button(key="pause").label == "Pause"
    at.button(key="stop").click().run()
    assert job.run.join(60) and job.run.status == "stopped"
    assert at.button(key="pause").disabled and at.button(key="stop").disabled


def test_switching_the_dataset_brings_its_models_unless_sizes_were_typed(at):
    sb = at.sidebar
    sb.selectbox(key="dataset").set_value("moons").run()
    assert (sb.selectbox(key="teacher_family").value, sb.text_input(key="teacher_sizes").value) == ("mlp", "64,64")
    assert sb.text_input(key="student_sizes").value == "4"
    assert "teacher='mlp:64,64', student='mlp:4'" in code(at)
    sb.text_input(key="student_sizes").set_value("8").run()  # typed: kept across the next switch
    sb.selectbox(key="dataset").set_value("spirals").run()
    assert sb.text_input(key="teacher_sizes").value == "128,128" and sb.text_input(key="student_sizes").value == "8"
    sb.selectbox(key="dataset").set_value("digits-images").run()
    assert (sb.selectbox(key="teacher_family").value, sb.text_input(key="teacher_sizes").value) == ("cnn2d", "32,64")
    assert "teacher='cnn2d:32,64', student='mlp:8'" in code(at)
    sb.selectbox(key="teacher_family").set_value("mlp").run()  # a new family starts from its defaults
    assert sb.text_input(key="teacher_sizes").value == ""
    assert not at.exception


def test_an_unknown_job_in_the_url_says_so(at):
    at.query_params["job"] = "no-such-job"
    at.run()
    assert not at.exception and "not on this server" in at.info[0].value
    assert at.button(key="run").disabled is False


def test_a_model_too_big_or_empty_is_refused_by_name(at):
    at.sidebar.text_input(key="teacher_sizes").set_value("100000000").run()
    assert "teacher sizes: '100000000' is too big" in at.error[0].value
    assert at.button(key="run").disabled
    at.sidebar.text_input(key="teacher_sizes").set_value("32,64").run()
    at.sidebar.text_input(key="student_sizes").set_value("16,0").run()
    assert "student sizes: '16,0' is invalid; expected widths of at least 1" in at.error[0].value


# -- where KD wins, why it does not, and the teacher ---------------------------------------------
@pytest.mark.slow
def test_the_default_run_shows_distillation_beating_scratch(at):
    at.button(key="run").click().run()
    job = wait_done(at, timeout=600)
    assert job.run.status == "completed" and not at.exception
    acc = {m.label.split()[0]: float(m.value) for m in at.metric}
    assert acc["student"] > acc["baseline"] + 0.03  # docs/results.md: 95.4 vs 88.1 over 5 seeds
    assert "Distillation beat scratch" in at.success[0].value


def test_a_student_at_or_below_scratch_gets_a_reason_and_the_readme_section(at):
    from workbench import Settings
    from workbench.ui.app import registry

    settings = Settings(dataset="moons", teacher="mlp:16", student="mlp:4", epochs=1, teacher_epochs=1)
    experiment = settings.experiment()

    def run_and_lose(live):  # the numbers the page reads, set so the student loses
        result = experiment.run(live)
        result.student.summary["test_acc"], result.baseline.summary["test_acc"] = 0.70, 0.80
        result.teacher.summary["test_acc"] = 0.95
        return result

    job = registry().start(run_and_lose, "distill", settings=settings, experiment=experiment)
    assert job.run.join(120) and job.run.status == "completed"
    at.query_params["job"] = job.job_id
    at.run()
    assert not at.exception and not at.success
    line = at.warning[0].value
    assert "did not beat scratch (70.0% vs 80.0%, -10.0 points)" in line and "every label was given" in line
    assert "README.md#when-distillation-does-not-beat-scratch" in line
    why = next(e for e in at.expander if "when-distillation-does-not-beat-scratch" in e.label)
    assert "labeled_fraction=0.1" in why.markdown[0].value  # the README section itself


def test_the_teacher_curves_are_drawn_while_it_trains(at):
    at.sidebar.selectbox(key="dataset").set_value("moons").run()
    at.sidebar.number_input(key="teacher_epochs").set_value(5000).run()
    at.button(key="run").click().run()
    job = job_of(at)
    wait_for(
        lambda: sum(p.event == "eval" and p.role == "teacher" and p.split == "val" for p in job.run.buffer.all()) >= 2,
        "two teacher evaluations",
    )
    at.run()
    spec = plotly_spec(at.get("plotly_chart")[0].proto.spec)
    teacher = [t for t in spec["data"] if t.get("name") == "teacher val"]
    assert teacher and len(teacher[0]["x"]) >= 2
    assert "teacher training loss" in json.dumps(plotly_spec(at.get("plotly_chart")[1].proto.spec)["layout"])
    assert any("trained once" in c.value and "cached" in c.value for c in at.caption)


def test_the_second_run_says_its_teacher_came_from_the_cache(at):
    at.sidebar.selectbox(key="dataset").set_value("moons").run()
    at.sidebar.number_input(key="teacher_epochs").set_value(2).run()
    at.sidebar.number_input(key="epochs").set_value(1).run()
    at.button(key="run").click().run()
    first = wait_done(at)
    assert any("trained once" in c.value for c in at.caption)
    at.button(key="run").click().run()
    second = wait_done(at)
    assert second is not first and second.run.status == "completed"
    assert any("loaded from the cache" in c.value for c in at.caption)
    assert not any(p.event == "step" and p.role == "teacher" for p in second.run.buffer.all())


# -- uploads: parsed once, capped, and never code ------------------------------------------------
def frame_csv(rows=200, column="f1"):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(rows, 3)), columns=[column, "f2", "f3"])
    df["kind"] = np.where(df[column] > 0, "up", "down")
    return df.to_csv(index=False).encode()


def upload(at, name, content):
    at.sidebar.selectbox(key="dataset").set_value("upload a CSV...").run()
    at.sidebar.file_uploader(key="csv").set_value((name, content, "text/csv")).run()


def test_an_upload_is_parsed_once(at, monkeypatch):
    from workbench.ui import sidebar

    calls = []
    monkeypatch.setattr(sidebar, "read_csv", lambda path: calls.append(path) or pd.read_csv(path))
    upload(at, "once.csv", frame_csv(column="parsed_once"))
    at.sidebar.number_input(key="epochs").set_value(3).run()
    at.sidebar.selectbox(key="target").set_value("f3").run()
    at.sidebar.selectbox(key="target").set_value("kind").run()
    assert not at.exception and not at.error and len(calls) == 1


def test_an_upload_over_the_size_cap_gets_a_clear_message(at, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_UPLOAD_MB", "1")
    content = frame_csv(rows=20_000)
    assert len(content) > 2**20
    upload(at, "big.csv", content)
    assert not at.exception
    message = at.error[0].value
    assert "big.csv" in message and "over the upload limit of 1 MB" in message and "WORKBENCH_MAX_UPLOAD_MB" in message
    assert at.button(key="run").disabled


def test_a_bad_upload_limit_is_named(at, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_UPLOAD_MB", "lots")
    upload(at, "mine.csv", frame_csv())
    assert any("WORKBENCH_MAX_UPLOAD_MB: 'lots' is invalid" in e.value for e in at.sidebar.error)
    assert at.sidebar.selectbox(key="target").value == "kind"  # the default cap still lets it through


def test_a_latin1_csv_is_read_and_says_so(at):
    drinks = ["caf\xe9", "th\xe9"]  # cafe and the, with accents
    rows = "".join(f"{i * 0.1},{(i * 7) % 5},{drinks[i % 2]}\n" for i in range(60))
    upload(at, "latin.csv", ("x,y,drink\n" + rows).encode("cp1252"))
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="target").value == "drink"
    assert any("not UTF-8" in i.value for i in at.sidebar.info)


def test_a_hostile_file_name_stays_a_string_in_the_code(at, monkeypatch):
    name = "x'); import os; os.system('echo pwned') #.csv"
    upload(at, name, frame_csv())
    assert not at.exception and not at.error
    src = code(at)
    ast.parse(src)
    calls, ran = [], []
    fake = types.ModuleType("workbench")
    fake.from_csv = lambda *a, **k: calls.append((a, k))
    fake.DistillConfig = fake.Experiment = lambda *a, **k: types.SimpleNamespace(run=lambda: fake)
    fake.table = lambda: "table"
    monkeypatch.setitem(sys.modules, "workbench", fake)
    import os

    monkeypatch.setattr(os, "system", lambda *a: ran.append(a))
    exec(compile(src, "<copy as code>", "exec"), {})
    assert not ran and calls == [((name,), {"target": "kind", "seed": 0})]


# -- Settings: what the app builds -----------------------------------------------------------------
def test_settings_name_the_bad_field():
    from workbench import Settings

    assert Settings.for_dataset("moons", teacher="mlp:8").teacher == "mlp:8"  # changes beat the defaults
    for kwargs, message in [
        ({"dataset": "nope"}, "dataset: 'nope' is not a built-in dataset; valid: digits"),
        ({"teacher": "mlp:x"}, "teacher: model: 'mlp:x' is invalid"),
        ({"student": None}, "student: None is invalid"),
        ({"csv": "a.csv"}, "csv, target: 'a.csv', None; give both"),
        ({"csv": "a.csv", "target": "y", "extra_unlabeled": 5}, "extra_unlabeled: 5"),
        ({"teacher_epochs": True}, "teacher_epochs: True is invalid"),
        ({"mixup": "yes"}, "mixup: 'yes' is invalid"),
    ]:
        with pytest.raises(ValueError) as e:
            Settings(**kwargs)
        assert message in str(e.value), (kwargs, str(e.value))
    code = Settings(csv="my data.csv", target="label", seed=3).to_code()
    assert "data = wb.from_csv('my data.csv', target='label', seed=3)" in code


# -- live views whose redraw costs O(new events) (issue 17) ---------------------------------------------------------
def _live_view(job_id):
    """An AppTest script: the app's live view of one job (as on the Explore page)."""
    from workbench.ui.app import live_ui

    live_ui(job_id)


def idle_job(label="long"):
    """A job of the app's registry that trains nothing and runs until stopped: its buffer is filled by the test."""
    import threading

    from workbench.ui.app import registry

    gate = threading.Event()

    def target(live):
        live.on_stop(gate.set)
        gate.wait()

    return registry().start(target, label=label)


def live_charts(at):
    return {
        plotly_spec(c.proto.spec)["layout"]["title"]["text"]: {t["name"]: t for t in plotly_spec(c.proto.spec)["data"]}
        for c in at.get("plotly_chart")
    }


def test_a_long_runs_figure_holds_at_most_the_point_budget_per_trace_in_the_app():
    from test_live_history import job_events

    from workbench.ui.live_history import LIVE_BUDGET

    events = job_events(student_steps=30_000, spike_at=17_777, changes=(777, 20_000))
    student_end = next(i for i, p in enumerate(events) if p.event == "fit_end" and p.role == "student")
    job = idle_job()
    try:
        for p in events[: student_end - 3]:
            job.run.buffer.append(p)
        at = AppTest.from_function(_live_view, args=(job.job_id,), default_timeout=60)
        at.run()
        assert not at.exception
        charts = live_charts(at)
        loss = charts["student training loss"]
        assert all(0 < len(t["x"]) <= LIVE_BUDGET for t in loss.values())  # the budget, per trace
        assert loss["total"]["x"][-1] == 29_999 and 17_777 in loss["total"]["x"]  # the newest step, the spike
        acc = charts["val accuracy"]
        marks = [x for x in acc["controls changed"]["x"] if x is not None]
        assert len(acc["student"]["x"]) == 299 and marks == [777, 777, 20_000, 20_000]
        assert "student: step 29999/30000" in at.get("progress")[0].proto.text
        # a second viewer reads the same history: the events are taken once, not once per session
        second = AppTest.from_function(_live_view, args=(job.job_id,), default_timeout=60)
        for p in events[student_end - 3 : student_end + 1]:
            job.run.buffer.append(p)
        second.run()
        assert len(job.history) == student_end + 1
        loss = live_charts(second)["student training loss"]
        assert loss["total"]["x"][-1] == 30_000 and all(len(t["x"]) <= LIVE_BUDGET for t in loss.values())
        at.run()
        assert live_charts(at)["student training loss"] == loss
    finally:
        job.run.stop()
        assert job.run.join(10)


def test_the_live_interval_grows_with_what_a_redraw_costs():
    from workbench.ui.app import LIVE_SECONDS, live_interval

    assert LIVE_SECONDS == (1.0, 2.0, 4.0)
    assert live_interval(0.05) == 1.0  # 5% of a core at one redraw a second
    assert live_interval(0.15) == 2.0 and live_interval(0.3) == 4.0 and live_interval(3.0) == 4.0
    assert live_interval(0.09, current=2.0) == 2.0  # not back to 1 s at a cost near the boundary
    assert live_interval(0.05, current=2.0) == 1.0 and live_interval(0.05, current=4.0) == 1.0


def test_an_expensive_redraw_makes_the_live_fragment_redraw_less_often(monkeypatch):
    import itertools

    from test_live_history import job_events

    from workbench.ui import app

    clock = itertools.count(step=0.5)  # every redraw costs 0.5 CPU seconds
    monkeypatch.setattr(app, "_cpu_seconds", lambda: next(clock))
    job = idle_job()
    try:
        for p in job_events(student_steps=300)[:250]:  # the teacher's fit and part of the student's
            job.run.buffer.append(p)
        at = AppTest.from_function(_live_view, args=(job.job_id,), default_timeout=60)
        at.run()
        assert not at.exception
        assert at.session_state[app.LIVE_EVERY] == 4.0 and at.session_state[app.LIVE_COST] == 0.5
        assert "student training loss" in live_charts(at)  # still drawn (after one full run with the new interval)
    finally:
        job.run.stop()
        assert job.run.join(10)
