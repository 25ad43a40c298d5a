"""The Streamlit app in a real Chromium: run, live curves, reload, a second viewer, stop."""

import json
import re
import time

import pytest
from browser import launch_chromium, screenshot, serve_streamlit

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

# Points per named trace of every plotly chart on the page: plotly.js keeps the traces it drew in `_fullData` on
# its div (`data` holds numeric arrays as sent, typed-array specs {dtype, bdata}).
TRACE_POINTS = """(name) => [...document.querySelectorAll('.js-plotly-plot')]
  .map(gd => (gd._fullData || gd.data || []).filter(t => t.name === name).map(t => (t.x || []).length))
  .flat().reduce((a, b) => Math.max(a, b), 0)"""


def student_points(page) -> int:
    return page.evaluate(TRACE_POINTS, "student")


def wait_until(cond, timeout, what):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - t0


def url_of(page) -> str:
    """The page's URL as the page sees it (Playwright's page.url lags history.replaceState)."""
    return page.evaluate("() => window.location.href")


def set_epochs(page, n, label="epochs"):
    box = page.get_by_label(label, exact=True)
    box.fill(str(n))
    box.press("Enter")
    page.wait_for_timeout(800)


def button(page, name):
    """A button of the app itself: Streamlit's own status widget shows a "Stop"
    button in the header while a script reruns, so scope to the main block."""
    return page.get_by_test_id("stMainBlockContainer").get_by_role("button", name=name)


def no_exception(page):
    assert page.locator('[data-testid="stException"]').count() == 0


def sidebar(page):
    return page.get_by_test_id("stSidebar")


def pick_dataset(page, name):
    sidebar(page).get_by_test_id("stSelectbox").filter(has_text="dataset").first.click()
    page.get_by_role("option", name=name, exact=True).click()
    wait_until(
        lambda: sidebar(page).get_by_role("textbox", name="teacher sizes").input_value() != "32,64",
        30,
        f"the {name} models in the sidebar",
    )


def slider_thumb(page, label):
    return sidebar(page).get_by_test_id("stSlider").filter(has_text=label).get_by_role("slider")


def slider_text(page, label) -> str:
    return slider_thumb(page, label).get_attribute("aria-valuetext")


def move_slider(page, label, presses, expected):
    thumb = slider_thumb(page, label)
    thumb.focus()
    for _ in range(presses):
        thumb.press("ArrowRight")
    wait_until(lambda: slider_text(page, label) == expected, 30, f"{label} at {expected}")
    page.wait_for_timeout(800)  # the rerun that takes the new value


def student_steps(runs):
    """The step rows the run store holds for the student run(s) so far (metrics.jsonl, flushed as it goes)."""
    rows = []
    for metrics in runs.glob("student-*/metrics.jsonl"):
        rows += [r for r in map(json.loads, metrics.read_text().splitlines()) if r.get("event") == "step"]
    return rows


def test_run_reload_and_a_second_viewer_leave_the_job_alone(tmp_path):
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    env = {"WORKBENCH_CACHE": str(tmp_path / "cache"), "WORKBENCH_RUNS": str(runs)}
    with serve_streamlit("app.py", env=env, timeout=90) as url, sync_playwright() as pw:
        one, two = launch_chromium(pw), launch_chromium(pw)
        try:
            page = one.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("heading", name="Knowledge distillation, live").wait_for()
            # 1. T=12 and alpha 0.2 (from the first screen's 8 and 0.1), a long run
            pick_dataset(page, "moons")
            move_slider(page, "temperature T", 1, "12.0")
            move_slider(page, "alpha (CE share)", 2, "0.20")
            set_epochs(page, 3000)
            set_epochs(page, 2, "teacher epochs")  # the student's fit is the long one
            first_url = url_of(page)
            button(page, "Run").click()
            wait_until(lambda: "job=" in url_of(page) and url_of(page) != first_url, 30, "a job id in the URL")
            job_url = url_of(page)
            wait_until(lambda: student_points(page) > 1, 240, "student points")
            # 2. reload mid-run: the sidebar shows the job's T and alpha, the job keeps them
            page.reload()
            page.get_by_role("heading", name="Knowledge distillation, live").wait_for()
            assert url_of(page) == job_url
            page.get_by_text(re.compile(r"running — (student|baseline): step")).wait_for(timeout=30_000)
            wait_until(lambda: slider_text(page, "temperature T") == "12.0", 30, "T restored after reload")
            assert slider_text(page, "alpha (CE share)") == "0.20"
            wait_until(lambda: student_points(page) > 1, 30, "the job's curves after reload")
            # 3. a fresh session sees none of it; one that opens the job's URL sees its settings
            other = two.new_page()
            other.set_default_timeout(60_000)
            other.goto(url)
            other.get_by_role("heading", name="Knowledge distillation, live").wait_for()
            other.wait_for_timeout(1500)
            assert student_points(other) == 0 and "job=" not in url_of(other)
            other.goto(job_url)
            other.get_by_text(re.compile(r"running — (student|baseline): step")).wait_for(timeout=30_000)
            wait_until(lambda: slider_text(other, "temperature T") == "12.0", 30, "T in the second viewer")
            assert slider_text(other, "alpha (CE share)") == "0.20"
            seen = len(student_steps(runs))
            wait_until(lambda: len(student_steps(runs)) > seen + 5, 60, "more student steps after both")
            steps = student_steps(runs)
            assert {(r["temperature"], r["w_ce"], r["w_kd"]) for r in steps} == {(12.0, 0.2, 0.8)}
            assert not any(r.get("controls_changed") for r in steps)  # no "controls changed" mark
            # the first session stops it
            button(page, "Stop").click()
            page.get_by_text(re.compile(r"^stopped — ")).wait_for(timeout=60_000)
            no_exception(page)
            no_exception(other)
            screenshot(page, "app_stopped")
        finally:
            one.close()
            two.close()
