"""The Compare page in a real Chromium: what only a live server shows (fragment reruns)."""

import re

import pytest
from browser import launch_chromium, screenshot, serve_streamlit

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]


def fill(page, label, value):
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Tab")


def test_runs_on_disk_are_redrawn_when_the_sweep_ends(tmp_path):
    """The sweep's live part redraws itself every second; when fits finish it redraws the whole page,
    so "Runs on disk" lists every fit as completed (it used to show the teacher as running). The
    sweep's teacher is then offered as a previous run's teacher."""
    from playwright.sync_api import sync_playwright

    env = {"WORKBENCH_CACHE": str(tmp_path / "cache"), "WORKBENCH_RUNS": str(tmp_path / "runs")}
    with serve_streamlit("app.py", env=env, timeout=90) as url, sync_playwright() as pw:
        context = launch_chromium(pw)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("link", name="Compare").click()
            page.get_by_role("heading", name="Compare student sizes").wait_for()
            page.get_by_text("no runs yet").wait_for()
            fill(page, "seeds", 1)
            fill(page, "epochs per fit", 2)
            main = page.get_by_test_id("stMainBlockContainer")
            main.get_by_role("button", name="Run sweep").click()
            # digits, 3 students x (scratch, kd) x 1 seed: 6 fits, then the teacher and 6 runs on disk
            page.get_by_text(re.compile(r"completed — 6/6 fits")).wait_for(timeout=180_000)
            page.get_by_text(re.compile(r"^7 runs in .*: 7 completed$")).wait_for(timeout=30_000)
            assert page.get_by_text(re.compile(r"\brunning\b")).count() == 0
            assert page.locator('[data-testid="stException"]').count() == 0
            page.get_by_text("teacher: mlp:256,256 (zoo: trained once, then cached)").wait_for()
            screenshot(page, "compare_sweep_finished")
            # the sweep's teacher is now a previous run the page offers as a (frozen) teacher
            main.get_by_text("from a previous run", exact=True).click()
            run_list = main.get_by_role("combobox", name="teacher run")
            run_list.wait_for()
            shown = run_list.input_value()
            assert re.match(r"mlp:256,256 · test acc \d+\.\d% · .* · teacher-", shown), shown
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            context.close()
