"""Page drivers for ``bench/live_views.py``: the Streamlit app's Explore page and the Jupyter
Dashboard in JupyterLab, driven in Debian's Chromium as a person would (press Run or Distill,
press arrow keys on the temperature slider), with the servers and browser helpers of
``tests/browser.py``.

What a run did is read from the run store each UI writes as it goes (``metrics.jsonl``,
flushed per event, and ``summary.json`` at the end), never by polling the page: a fit's time
is the engine's own ``FitEnd.seconds``, and a live control has reached the engine when a step
payload carries the new value.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser import assert_no_widget_errors, output_text, run_notebook_in_lab  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

PAGE_TIMEOUT_MS = 120_000
STOP_WAIT_S = 300  # seconds a stopped job (and its last redraw) may take to end
POLL_S = 0.005  # how often a run's metrics.jsonl is read while a slider move is on its way
APP_HEADING = "Knowledge distillation, live"
# the largest step of any trace named 'student' on the page's plotly charts (plotly keeps `data` on its div)
STUDENT_LAST_X = """(scope) => {
  let last = -1;
  for (const gd of document.querySelectorAll(scope)) {
    for (const t of (gd._fullData || gd.data || [])) {
      if (t.name === 'student' && t.x && t.x.length) last = Math.max(last, Number(t.x[t.x.length - 1]));
    }
  }
  return last;
}"""
# true once a 'student' trace shows a point at a step below `below` (a new run's first points)
STUDENT_POINT_BELOW = """([scope, below]) => [...document.querySelectorAll(scope)].some(gd => (gd._fullData || gd.data || []).some(
  t => t.name === 'student' && t.x && t.x.length > 0 && Number(t.x[t.x.length - 1]) < below))"""
APP_PLOTS = ".js-plotly-plot"
LAB_PLOTS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output .js-plotly-plot"
# runs code in the open notebook's kernel (JupyterLab is served with expose_app_in_browser); returns its output
KERNEL_EXEC = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  let out = '';
  future.onIOPub = (msg) => {
    const c = msg.content;
    if (msg.header.msg_type === 'stream') out += c.text;
    if (msg.header.msg_type === 'error') out += c.ename + ': ' + c.evalue;
  };
  const reply = await future.done;
  return {status: reply.content.status, out};
}"""


@dataclass
class Fit:
    """One student fit as the engine reported it, and, for a UI, the click -> first point time."""

    seconds: float  # FitEnd.seconds: the engine's wall time of the fit (a lower bound when stopped)
    steps: int
    config: dict[str, Any]
    steps_per_epoch: int = 0
    first_point: float | None = None  # Run/Distill click -> the first student point drawn (s)
    stopped: bool = False  # stopped at the benchmark's cap on a fit's time


class RunsFolder:
    """The run store one UI writes to: ``<root>/<role>-<stamp>-<id>/`` per fit."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def names(self, role: str) -> set[str]:
        return {p.name for p in self.root.glob(f"{role}-*") if p.is_dir()}

    def new_run(self, role: str, before: set[str], timeout: float) -> Path:
        """The one ``role`` run folder not in ``before``, once it appears."""
        deadline = time.monotonic() + timeout
        while True:
            new = sorted(self.names(role) - before)
            if len(new) > 1:
                raise RuntimeError(f"{self.root}: expected one new {role} run, found {new}")
            if new:
                return self.root / new[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.root}: no new {role} run within {timeout:.0f} s")
            time.sleep(0.05)

    def summary(self, run: Path, timeout: float) -> dict[str, Any]:
        """The run's summary.json (written atomically when its fit ends), once it is there."""
        path = run / "summary.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{run}: the fit did not end within {timeout:.0f} s (no summary.json)")
            time.sleep(0.05)
        return json.loads(path.read_text())

    def fit(self, run: Path, timeout: float, stopped_ok: bool = False) -> Fit:
        """The fit of ``run`` once it has ended (completed; or stopped, with ``stopped_ok``)."""
        summary = self.summary(run, timeout)
        config = json.loads((run / "config.json").read_text())["config"]
        status = summary.get("status")
        if status != "completed" and not (stopped_ok and status == "stopped"):
            raise RuntimeError(f"{run}: the fit ended {status!r}: {summary.get('message')}")
        with open(run / "metrics.jsonl", encoding="utf-8") as f:
            start = json.loads(f.readline())  # the fit_start payload
        per_epoch = int(start.get("steps_per_epoch") or 0)
        steps = int(start.get("steps_planned") or summary["step"])
        return Fit(float(summary["seconds"]), steps, config, per_epoch, stopped=status == "stopped")

    def student_fit(self, students: set[str], started: float, cap: float, stop: Any) -> Fit:
        """The new student run's fit, then ``stop()`` (the job's baseline fit is not measured).
        Past ``cap`` seconds from ``started`` (perf_counter) the job is stopped at once, and the
        fit's seconds are a lower bound."""
        run = self.new_run("student", students, max(1.0, cap - (time.perf_counter() - started)))
        try:
            fit = self.fit(run, max(1.0, cap - (time.perf_counter() - started)))
        except TimeoutError:
            stop()
            return self.fit(run, 300, stopped_ok=True)
        stop()
        return fit


class MetricsTail:
    """The rows a run appends to its metrics.jsonl, read from where the last read stopped."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, b""

    def rows(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def wait_for_steps(self, timeout: float) -> None:
        """Return once the run has reported a step (it trains now)."""
        deadline = time.monotonic() + timeout
        while not any(r.get("event") == "step" for r in self.rows()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: no step reported within {timeout:.0f} s")
            time.sleep(0.05)

    def seconds_until(self, temperature: float, since: float, timeout: float) -> float | None:
        """Seconds from ``since`` (perf_counter) until the first step using new live controls reports
        ``temperature``; None past ``timeout``. (A plain step at that temperature does not count:
        after a move that never arrived, the next move back would otherwise read as instant.)"""
        while time.perf_counter() - since < timeout:
            for r in self.rows():
                if r.get("event") == "step" and r.get("controls_changed") and r.get("temperature") == temperature:
                    return time.perf_counter() - since
            time.sleep(POLL_S)
        return None


def _p(page, timeout_ms: int = PAGE_TIMEOUT_MS):
    page.set_default_timeout(timeout_ms)
    page.set_default_navigation_timeout(timeout_ms)
    return page


class AppPage:
    """The Explore page of ``streamlit run app.py``: a fresh session per fit (a page left open on
    a finished job keeps redrawing it every second, which would load the other measurements)."""

    def __init__(self, context, url: str, runs: RunsFolder, default_epochs: int):
        self.page = _p(context.pages[0] if context.pages else context.new_page())
        self.url, self.runs, self.default_epochs = url, runs, default_epochs

    def open(self, epochs: int) -> None:
        page = self.page
        page.goto(self.url)
        page.get_by_role("heading", name=APP_HEADING).wait_for()
        if epochs != self.default_epochs:
            box = page.get_by_test_id("stSidebar").get_by_label("epochs", exact=True)
            box.fill(str(epochs))
            box.press("Enter")
            page.wait_for_function(
                "(n) => [...document.querySelectorAll('[data-testid=stSidebar] input')]"
                ".some(e => e.getAttribute('aria-label') === 'epochs' && e.value === String(n))",
                arg=epochs,
            )
            page.wait_for_timeout(800)  # the rerun that takes the new value

    def close(self) -> None:
        self.page.goto("about:blank")

    def _press_run(self) -> tuple[float, set[str]]:
        before = self.runs.names("student")
        run = self.page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Run")
        run.wait_for()
        t0 = time.perf_counter()
        run.click()
        return t0, before

    def _stop(self) -> None:
        """Press Stop while the job runs (the button is disabled once it has ended); return once the
        page says the job ended. Not a measured action: a click that did not land is tried again."""
        stop = self.page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Stop")
        ended = self.page.get_by_text(re.compile(r"^(stopped|completed) — ")).first
        for _ in range(5):
            if not stop.is_enabled():
                break
            with contextlib.suppress(PlaywrightTimeout):  # the job may end between the check and the click
                stop.click(timeout=10_000)
            with contextlib.suppress(PlaywrightTimeout):
                ended.wait_for(timeout=30_000)
                return
        ended.wait_for()

    def fit(self, epochs: int, cap: float) -> Fit:
        """Run the Explore page's settings (with ``epochs``) in a fresh session, the page open and
        drawing until the student's fit has ended; then Stop (the baseline fit is not measured)."""
        self.open(epochs)
        t0, students = self._press_run()
        # a fresh session has no chart before its job: any student point is this job's
        first = None
        with contextlib.suppress(PlaywrightTimeout):
            self.page.wait_for_function(
                STUDENT_POINT_BELOW, arg=[APP_PLOTS, float("inf")], polling=50, timeout=cap * 1000
            )
            first = time.perf_counter() - t0
        fit = self.runs.student_fit(students, t0, cap, self._stop)
        self.close()
        fit.first_point = first
        return fit

    def slider_latencies(self, epochs: int, moves: int, values: tuple[float, float], timeout: float) -> list:
        """Start a long run, move the temperature slider ``moves`` times (right, left, ...) and time
        each move until a step payload carries the new value; then press Stop."""
        self.open(epochs)
        _, students = self._press_run()
        tail = MetricsTail(self.runs.new_run("student", students, 120) / "metrics.jsonl")
        tail.wait_for_steps(120)
        thumb = self.page.get_by_test_id("stSidebar").get_by_test_id("stSlider").filter(has_text="temperature")
        thumb = thumb.get_by_role("slider")
        out = []
        for i in range(moves):
            key, value = ("ArrowRight", values[1]) if i % 2 == 0 else ("ArrowLeft", values[0])
            thumb.focus()
            tail.rows()  # skip what the run reported before this move
            t0 = time.perf_counter()
            thumb.press(key)
            out.append(tail.seconds_until(value, t0, timeout))
            self.page.wait_for_timeout(300)  # the page settles before the next move
        self._stop()
        self.close()
        return out


class LabDashboard:
    """``wb.Dashboard(settings, runs=...)`` displayed in a notebook opened in JupyterLab; one kernel
    and one page for every fit, as a person keeps a notebook open."""

    def __init__(self, context, url: str, runs: RunsFolder, notebook: str, default_epochs: int):
        self.page = _p(context.pages[0] if context.pages else context.new_page())
        self.url, self.runs, self.notebook = url, runs, notebook
        self.epochs = default_epochs

    def open(self) -> None:
        run_notebook_in_lab(self.page, self.url, self.notebook, timeout=300)
        try:
            self.page.locator(LAB_PLOTS).nth(3).wait_for(timeout=300_000)  # three curve charts and the explorer
        except Exception as e:
            raise RuntimeError(
                f"the Dashboard's charts did not show; the notebook's output:\n{output_text(self.page)[-3000:]}"
            ) from e
        assert_no_widget_errors(self.page)

    def kernel(self, code: str) -> str:
        """Run ``code`` in the notebook's kernel (set-up only, never a measured action); its output."""
        res = self.page.evaluate(KERNEL_EXEC, code)
        if res["status"] != "ok":
            raise RuntimeError(f"kernel: {code!r} failed: {res['out']}")
        return res["out"]

    def _set_epochs(self, epochs: int) -> None:
        if epochs != self.epochs:
            self.kernel(f"dash.epochs.value = {int(epochs)}")
            self.epochs = epochs

    def _button(self, name: str):
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output button", has_text=name)

    def _stop(self) -> None:
        """Stop the job (through the kernel: not a measured action, and a click on the page's Stop
        can miss) and wait for it and the drawer's last redraw."""
        status = self.kernel(f"dash.stop(); print(dash.wait({STOP_WAIT_S}) and dash.job.status)").strip()
        if status not in ("stopped", "completed"):
            raise RuntimeError(f"the Dashboard's job did not end within {STOP_WAIT_S} s of Stop (status {status!r})")

    def fit(self, epochs: int, cap: float) -> Fit:
        """Press Distill with the Dashboard's settings (and ``epochs``), the page open and drawing
        until the student's fit has ended; then Stop (the baseline fit is not measured)."""
        self._set_epochs(epochs)
        last = self.page.evaluate(STUDENT_LAST_X, LAB_PLOTS)  # the last run's points stay until the new ones
        students = self.runs.names("student")
        t0 = time.perf_counter()
        self._button("Distill").click()
        below = last if last > 0 else float("inf")
        first = None
        with contextlib.suppress(PlaywrightTimeout):
            self.page.wait_for_function(STUDENT_POINT_BELOW, arg=[LAB_PLOTS, below], polling=50, timeout=cap * 1000)
            first = time.perf_counter() - t0
        fit = self.runs.student_fit(students, t0, cap, self._stop)
        fit.first_point = first
        return fit

    def slider_latencies(self, epochs: int, moves: int, values: tuple[float, float], timeout: float) -> list:
        """As :meth:`AppPage.slider_latencies`, on the Dashboard's temperature slider."""
        self._set_epochs(epochs)
        students = self.runs.names("student")
        self._button("Distill").click()
        tail = MetricsTail(self.runs.new_run("student", students, 120) / "metrics.jsonl")
        tail.wait_for_steps(120)
        slider = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .widget-hslider", has_text="temperature")
        handle = slider.locator(".noUi-handle")
        out = []
        for i in range(moves):
            key, value = ("ArrowRight", values[1]) if i % 2 == 0 else ("ArrowLeft", values[0])
            handle.focus()
            tail.rows()
            t0 = time.perf_counter()
            handle.press(key)
            out.append(tail.seconds_until(value, t0, timeout))
            self.page.wait_for_timeout(300)
        self._stop()
        return out
