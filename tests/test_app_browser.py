"""The Streamlit app in a real Chromium: run, live curves, reload, stop, two sessions at once."""

import re
import time

import pytest

from browser import launch_chromium, screenshot, serve_streamlit

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

# Points per named trace of every plotly chart on the page (plotly keeps `data` on its div).
TRACE_POINTS = """(name) => [...document.querySelectorAll('.js-plotly-plot')]
  .map(gd => (gd.data || []).filter(t => t.name === name).map(t => (t.x || []).length))
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


def set_epochs(page, n):
    box = page.get_by_label("epochs", exact=True)
    box.fill(str(n))
    box.press("Enter")
    page.wait_for_timeout(800)


def button(page, name):
    """A button of the app itself: Streamlit's own status widget shows a "Stop"
    button in the header while a script reruns, so scope to the main block."""
    return page.get_by_test_id("stMainBlockContainer").get_by_role("button", name=name)


def no_exception(page):
    assert page.locator('[data-testid="stException"]').count() == 0


def test_run_reload_stop_and_two_sessions(tmp_path):
    from playwright.sync_api import sync_playwright

    env = {"WORKBENCH_CACHE": str(tmp_path / "cache"), "WORKBENCH_RUNS": str(tmp_path / "runs")}
    with serve_streamlit("app.py", env=env, timeout=90) as url, sync_playwright() as pw:
        one, two = launch_chromium(pw), launch_chromium(pw)
        try:
            page = one.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("heading", name="Knowledge distillation, live").wait_for()
            # 1. defaults: Run, the accuracy chart gains student points, the run finishes
            button(page, "Run").click()
            wait_until(lambda: student_points(page) > 0, 90, "student points")
            page.get_by_text("student test accuracy").wait_for(timeout=90_000)
            no_exception(page)
            screenshot(page, "app_finished_run")
            # 2. a long run: reload the page mid-run and find the job again, then stop it
            set_epochs(page, 1000)  # the teacher (20 epochs) comes from the cache
            first_url = url_of(page)
            button(page, "Run").click()
            wait_until(lambda: "job=" in url_of(page) and url_of(page) != first_url, 30, "a new job id in the URL")
            job_url = url_of(page)
            wait_until(lambda: student_points(page) > 1, 90, "student points of the long run")
            page.reload()
            page.get_by_role("heading", name="Knowledge distillation, live").wait_for()
            assert url_of(page) == job_url
            page.get_by_text(re.compile(r"running — (student|baseline): step")).wait_for(timeout=30_000)
            wait_until(lambda: student_points(page) > 1, 30, "the job's curves after reload")
            # 3. a second browser session sees none of it, and runs its own job
            other = two.new_page()
            other.set_default_timeout(60_000)
            other.goto(url)
            other.get_by_role("heading", name="Knowledge distillation, live").wait_for()
            other.wait_for_timeout(1500)
            assert student_points(other) == 0 and "job=" not in url_of(other)
            button(other, "Run").click()
            wait_until(lambda: "job=" in url_of(other), 30, "the second job id")
            assert url_of(other).split("job=")[1] != job_url.split("job=")[1]
            other.get_by_text("student test accuracy").wait_for(timeout=90_000)
            screenshot(other, "app_second_session")
            # the first session still shows its own long run; Stop ends it
            button(page, "Stop").click()
            page.get_by_text(re.compile(r"^stopped — ")).wait_for(timeout=30_000)
            no_exception(page)
            no_exception(other)
            screenshot(page, "app_stopped")
        finally:
            one.close()
            two.close()


def test_compare_page_runs_a_tiny_sweep(tmp_path):
    from playwright.sync_api import sync_playwright

    env = {"WORKBENCH_CACHE": str(tmp_path / "cache"), "WORKBENCH_RUNS": str(tmp_path / "runs")}
    with serve_streamlit("app.py", env=env, timeout=90) as url, sync_playwright() as pw:
        ctx = launch_chromium(pw)
        try:
            page = ctx.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("link", name="Compare").click()
            page.get_by_role("heading", name="Compare student sizes").wait_for()
            page.get_by_label("seeds").fill("2")
            page.get_by_label("epochs per fit").fill("2")
            button(page, "Run sweep").click()
            page.get_by_text(re.compile(r"^completed — 12/12 fits")).wait_for(timeout=180_000)
            page.locator(".js-plotly-plot").first.wait_for()
            assert page.get_by_text(re.compile("Pareto front")).count() >= 1
            no_exception(page)
            screenshot(page, "app_compare_sweep")
        finally:
            ctx.close()
