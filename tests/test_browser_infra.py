"""Smoke tests of the browser-test machinery: Chromium + Streamlit, Chromium + JupyterLab widgets."""

import textwrap
import time

import nbformat
import pytest

from browser import browser_page  # noqa: F401  (fixture)
from browser import (
    assert_no_widget_errors,
    run_notebook_in_lab,
    screenshot,
    serve_jupyterlab,
    serve_streamlit,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def test_streamlit_button_click(browser_page, tmp_path):
    script = tmp_path / "smoke_app.py"
    script.write_text(
        textwrap.dedent(
            """
            import streamlit as st

            st.title("Browser smoke")
            if st.button("Press me"):
                st.write("clicked")
            """
        )
    )
    page = browser_page
    with serve_streamlit(script, timeout=60) as url:
        page.goto(url)
        page.get_by_role("heading", name="Browser smoke").wait_for()
        page.get_by_role("button", name="Press me").click()
        page.locator('[data-testid="stMarkdownContainer"]', has_text="clicked").wait_for()
        screenshot(page, "infra_streamlit")


N0, ADDED = 3, 5

CELL_WIDGETS = f"""\
import ipywidgets as w
import plotly.graph_objects as go

slider = w.IntSlider(value=3, min=0, max=10, description="n")
fig = go.FigureWidget(data=[go.Scatter(x=list(range({N0})), y=list(range({N0})), mode="markers")])
fig.update_layout(width=500, height=300)
w.VBox([slider, fig])
"""

CELL_THREAD = f"""\
import threading, time

def grow():
    # after 1 s, then every second, one more point (several steps: the browser
    # may render the figure only after the first append)
    for n in range({N0 + 1}, {N0 + ADDED + 1}):
        time.sleep(1)
        with fig.batch_update():
            fig.data[0].x = list(range(n))
            fig.data[0].y = [i * i for i in range(n)]

threading.Thread(target=grow, daemon=True).start()
"""

POINTS = ".js-plotly-plot .scatterlayer .trace path.point"


def test_jupyterlab_widgets_and_threaded_plotly(browser_page, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL_WIDGETS), nbformat.v4.new_code_cell(CELL_THREAD)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, tmp_path / "smoke.ipynb")

    page = browser_page
    # record every distinct point count the page shows, from its first frame on
    page.add_init_script(
        "window.__kdPoints = [];"
        "setInterval(() => { const n = document.querySelectorAll(%r).length;"
        " const h = window.__kdPoints; if (n && h[h.length - 1] !== n) h.push(n); }, 50);" % POINTS
    )
    with serve_jupyterlab(tmp_path, timeout=90) as url:
        t0 = time.monotonic()
        run_notebook_in_lab(page, url, "smoke", timeout=90)
        t_run = time.monotonic() - t0
        page.locator(".jp-OutputArea-output .widget-slider, .jp-OutputArea-output .jupyter-widgets").first.wait_for()
        page.locator(".jp-OutputArea-output " + POINTS).first.wait_for()
        # wait on the recorded history itself (not the DOM): it lags the DOM by up to 50 ms
        page.wait_for_function(
            f"() => window.__kdPoints.slice(-1)[0] === {N0 + ADDED}", timeout=30_000
        )
        history = page.evaluate("() => window.__kdPoints")
        assert_no_widget_errors(page)
        assert page.locator(".jp-OutputArea-output .widget-slider").count() >= 1
        # the thread's updates reached the browser: the count grew while we watched
        assert history[-1] == N0 + ADDED and len(history) >= 2, history
        assert history == sorted(history) and history[0] >= N0, history
        screenshot(page, "infra_jupyterlab")
        print(f"lab: run-all {t_run:.1f} s, total {time.monotonic() - t0:.1f} s, point counts seen {history}")
