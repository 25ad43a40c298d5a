"""The Streamlit app in a real Chromium: a teacher from a previous run distills a student at once,
without being trained again."""

import json
import re

import pytest
from browser import launch_chromium, screenshot, serve_streamlit
from test_app_browser import button, no_exception, pick_dataset, set_epochs, sidebar, student_points, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]


def teacher_runs(runs):
    return sorted(p.name for p in runs.glob("teacher-*") if (p / "config.json").is_file())


def test_a_teacher_from_a_previous_run_distills_without_retraining(tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    import workbench as wb

    runs, cache = tmp_path / "runs", tmp_path / "cache"
    monkeypatch.setenv("WORKBENCH_RUNS", str(runs))
    # a trained teacher in the runs root, through the API (tiny: a few epochs on moons)
    trained = wb.Experiment(
        wb.load_dataset("moons"),
        "mlp:16",
        "mlp:4",
        wb.DistillConfig(epochs=1),
        teacher_config=wb.DistillConfig(epochs=5),
        runs=runs,
        baseline=False,
        cache=False,
    ).run()
    teacher_id = trained.teacher.run_id
    assert teacher_runs(runs) == [teacher_id]
    env = {"WORKBENCH_CACHE": str(cache), "WORKBENCH_RUNS": str(runs)}
    with serve_streamlit("app.py", env=env, timeout=90) as url, sync_playwright() as pw:
        context = launch_chromium(pw)
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("heading", name="Knowledge distillation, live").wait_for()
            pick_dataset(page, "moons")
            set_epochs(page, 10)
            # the teacher picker: "from a previous run" lists the run, newest first, with its spec
            sidebar(page).get_by_test_id("stRadio").filter(has_text="teacher model").get_by_text(
                "from a previous run"
            ).click()
            run_list = sidebar(page).get_by_role("combobox", name="teacher run")
            run_list.wait_for()
            shown = run_list.input_value()  # the newest (here the only) teacher run of moons, picked
            assert shown.startswith("mlp:16 · test acc ") and shown.endswith(f" · {teacher_id}"), shown
            code = page.get_by_test_id("stExpander").filter(has_text="Copy as code")
            code.get_by_text("Copy as code").click()
            wait_until(lambda: f"teacher='run:{teacher_id}'" in code.inner_text(), 30, "run:ID in the code")
            button(page, "Run").click()
            wait_until(lambda: student_points(page) > 1, 240, "student points")
            page.get_by_text(re.compile(r"loaded and used as is, not trained here")).wait_for(timeout=30_000)
            page.get_by_text(re.compile(r"^completed — ")).wait_for(timeout=240_000)
            no_exception(page)
            screenshot(page, "app_teacher_from_a_previous_run")
        finally:
            context.close()
    # no teacher was trained: the only teacher run is the API's, and the student names it
    assert teacher_runs(runs) == [teacher_id]
    students = [p for p in runs.glob("student-*") if p.name != trained.student.run_id]
    assert len(students) == 1
    config = json.loads((students[0] / "config.json").read_text())
    assert config["teacher_run_id"] == teacher_id and config["dataset"] == "moons"
    steps = [
        r for r in map(json.loads, (students[0] / "metrics.jsonl").read_text().splitlines()) if r["event"] == "step"
    ]
    assert steps and not list(cache.glob("teachers/*"))  # a loaded teacher is never put in the teacher cache
