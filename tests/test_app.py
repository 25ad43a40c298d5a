"""The Streamlit app through streamlit.testing.v1.AppTest (the browser test is test_app_browser.py)."""

import pathlib
import time

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

APP = str(pathlib.Path(__file__).parent.parent / "app.py")


@pytest.fixture
def at():
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception
    yield app
    from workbench.ui.app import registry
    for job in registry().running():
        job.run.stop()


def job_of(at):
    from workbench.ui.app import registry
    return registry().get(at.query_params.get("job")[0] if isinstance(at.query_params.get("job"), list)
                          else at.query_params.get("job"))


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


def code(at):
    return at.expander[0].code[0].value


def test_defaults_are_sane(at):
    assert at.sidebar.selectbox(key="dataset").value == "digits"
    assert at.sidebar.selectbox(key="teacher_family").value == "mlp"
    assert at.sidebar.select_slider(key="temperature").value == 4.0
    assert at.sidebar.slider(key="alpha").value == 0.5
    assert at.sidebar.number_input(key="epochs").value == 20
    assert at.button(key="run").disabled is False and at.button(key="stop").disabled is True
    assert "wb.DistillConfig(epochs=20, temperature=4.0, alpha=0.5" in code(at)


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
    assert [m.label for m in at.metric] == ["teacher test accuracy", "student test accuracy",
                                            "baseline test accuracy"]
    charts = at.get("plotly_chart")
    assert len(charts) >= 4  # accuracy, loss, explorer, boundaries
    import json
    acc = json.loads(charts[0].proto.spec)
    student = [t for t in acc["data"] if t.get("name") == "student"][0]
    assert len(student["x"]) == 3  # one eval per epoch
    assert not at.exception


def test_stop_works(at):
    at.sidebar.selectbox(key="dataset").set_value("moons").run()
    at.sidebar.number_input(key="epochs").set_value(2000).run()
    at.button(key="run").click().run()
    job = job_of(at)
    t0 = time.monotonic()
    while not any(p.event == "step" for p in job.run.buffer.all()):
        assert time.monotonic() - t0 < 60
        time.sleep(0.05)
    at.run()
    assert at.button(key="stop").disabled is False and at.button(key="run").disabled is True
    at.button(key="stop").click().run()
    assert job.run.join(10) and job.run.status == "stopped"
    at.run()
    assert at.button(key="run").disabled is False


def test_live_temperature_change_reaches_the_job(at):
    at.sidebar.selectbox(key="dataset").set_value("moons").run()
    at.sidebar.number_input(key="epochs").set_value(2000).run()
    at.button(key="run").click().run()
    job = job_of(at)
    t0 = time.monotonic()
    while job.run.controls is None:
        assert time.monotonic() - t0 < 60
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


@pytest.mark.parametrize("content,message", [
    (b"a,b\n1,2\n3,4\n", "at least 10 rows"),
    (b"x,label\n" + b"".join(b"%d,same\n" % i for i in range(30)), "only one class"),
    (b"name,label\n" + b"".join(b"n%d,%d\n" % (i, i % 2) for i in range(30)), "numeric"),
    (b"\x00\x01garbage", ""),
])
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
    assert "wb.from_csv('mine.csv', target='kind')" in code(at)
    at.button(key="run").click().run()
    job = wait_done(at)
    assert job.run.status == "completed" and not at.exception
