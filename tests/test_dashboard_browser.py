"""The Dashboard in JupyterLab in a real Chromium: it renders, Distill works, the chart grows."""

import time

import nbformat
import pytest

from browser import browser_page  # noqa: F401  (fixture)
from browser import assert_no_widget_errors, run_notebook_in_lab, screenshot, serve_jupyterlab

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CELL = """\
import workbench as wb
dash = wb.Dashboard(wb.Settings.for_dataset("moons", epochs=60, teacher_epochs=20, log_every=2))
dash
"""
POINTS = ".jp-OutputArea-output .js-plotly-plot .scatterlayer .trace path.point"


def test_dashboard_distill_in_jupyterlab(browser_page, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, tmp_path / "dash.ipynb")
    page = browser_page
    with serve_jupyterlab(tmp_path, timeout=120) as url:
        run_notebook_in_lab(page, url, "dash", timeout=120)
        page.locator(".jp-OutputArea-output .js-plotly-plot").first.wait_for()
        distill = page.locator(".jp-OutputArea-output button", has_text="Distill")
        distill.wait_for()
        assert_no_widget_errors(page)
        before = page.locator(POINTS).count()
        distill.click()
        t0 = time.monotonic()
        page.wait_for_function(f"() => document.querySelectorAll({POINTS!r}).length > {before}", timeout=120_000)
        grew_after = time.monotonic() - t0
        page.locator(".jp-OutputArea-output", has_text="distill done").wait_for(timeout=120_000)
        after = page.locator(POINTS).count()
        assert after > before
        assert_no_widget_errors(page)
        screenshot(page, "dashboard_jupyterlab")
        print(f"chart points {before} -> {after}; first new points {grew_after:.1f} s after Distill")
