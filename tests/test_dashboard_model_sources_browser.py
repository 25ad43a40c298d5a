"""The Dashboard in JupyterLab in a real Chromium: a teacher from a previous run (made through the
API first) distills a student at once, without being trained again, and the student's curve draws;
then, in a second notebook of the same JupyterLab (each server costs ~40 s), a small language model
is distilled from a .txt file: the bits-per-character chart draws points and the samples panel shows text."""

import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from browser import (
    _ALL_EXECUTED_JS,
    assert_no_widget_errors,
    browser_page,  # noqa: F401  (fixture)
    output_text,
    run_notebook_in_lab,
    screenshot,
    serve_jupyterlab,
    wait_kernel_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

CELL = """\
import workbench as wb
dash = wb.Dashboard(wb.Settings.for_dataset("moons", epochs=5, log_every=2), runs=True)
dash
"""
OUT = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output"
# drawn points (markers) of the accuracy chart, the panel's first plot (for text: bits per character)
ACCURACY_POINTS_JS = f"""() => {{
  const plot = document.querySelector({(OUT + " .js-plotly-plot")!r});
  return plot ? plot.querySelectorAll('.scatterlayer .trace path.point').length : 0;
}}"""
# A small text and tiny GPTs: one epoch of a few steps each, an evaluation (and samples) every step.
TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, and runs away.\n" for i in range(45))
TEXT_CELL = """\
import workbench as wb
dash = wb.Dashboard(wb.Settings.for_dataset(
    "tiny", text_file={path!r}, teacher="gpt:1,16", student="gpt:1,8", eval_every=1, log_every=1))
dash
"""
SAMPLES_JS = f"""() => {{
  const panel = document.querySelector({(OUT + " .kd-samples")!r});
  return panel ? panel.innerText : '';
}}"""


def teacher_runs(runs: Path) -> list[str]:
    return sorted(p.name for p in runs.glob("teacher-*") if (p / "config.json").is_file())


def test_a_teacher_from_a_previous_run_distills_in_the_dashboard_without_retraining(browser_page, tmp_path):  # noqa: F811
    import workbench as wb

    runs, cache = Path(os.environ["WORKBENCH_RUNS"]), Path(os.environ["WORKBENCH_CACHE"])  # the kernel's too
    trained = wb.Experiment(  # a trained teacher in the runs root, through the API (tiny: moons, a few epochs)
        wb.load_dataset("moons"),
        "mlp:16",
        "mlp:4",
        wb.DistillConfig(epochs=1),
        teacher_config=wb.DistillConfig(epochs=3),
        runs=True,
        baseline=False,
        cache=False,
    ).run()
    teacher_id = trained.teacher.run_id
    assert teacher_runs(runs) == [teacher_id]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, tmp_path / "sources.ipynb")
    page = browser_page
    t0 = time.monotonic()
    with serve_jupyterlab(tmp_path, timeout=120) as url:
        run_notebook_in_lab(page, url, "sources", timeout=240)
        print(f"dashboard shown {time.monotonic() - t0:.1f} s after starting JupyterLab")
        source = page.locator(f"{OUT} .kd-teacher-source select")
        source.wait_for(timeout=120_000)
        assert_no_widget_errors(page)
        source.select_option(label="from a previous run")
        run_list = page.locator(f"{OUT} .kd-teacher-run select")
        run_list.wait_for()
        # the newest (here the only) teacher run of moons, picked, shown with its spec (the option's
        # value is its label; its text has non-breaking spaces)
        page.wait_for_function(
            "(id) => { const s = document.querySelector('.kd-teacher-run select');"
            " return !!s && s.value.endsWith(' · ' + id); }",
            arg=teacher_id,
            timeout=30_000,
        )
        shown = run_list.input_value()
        assert shown.startswith("mlp:16 · test acc "), shown
        page.locator(OUT, has_text="used as is, not trained here").first.wait_for(timeout=30_000)
        page.locator(f"{OUT} button", has_text="Copy as code").click()
        code = page.locator(f"{OUT} textarea")
        page.wait_for_function(
            "(want) => [...document.querySelectorAll('textarea')].some(t => t.value.includes(want))",
            arg=f"teacher='run:{teacher_id}'",
            timeout=30_000,
        )
        assert "trusted" not in code.input_value()
        assert page.evaluate(ACCURACY_POINTS_JS) == 0
        page.locator(f"{OUT} button", has_text="Distill").click()
        t1 = time.monotonic()
        page.locator(OUT, has_text="distill done").first.wait_for(timeout=240_000)
        print(f"distill done {time.monotonic() - t1:.1f} s after the click")
        page.wait_for_function(f"() => ({ACCURACY_POINTS_JS})() > 1", timeout=60_000)
        text = output_text(page)
        assert f"teacher loaded: mlp:16 from run {teacher_id}" in text, text[-2000:]
        assert "teacher: training" not in text
        assert_no_widget_errors(page)
        screenshot(page, "dashboard_teacher_from_a_previous_run")
        # no teacher was trained: the only teacher run is the API's, and the new student names it
        assert teacher_runs(runs) == [teacher_id]
        students = [p for p in runs.glob("student-*") if p.name != trained.student.run_id]
        assert len(students) == 1
        config = json.loads((students[0] / "config.json").read_text())
        assert config["teacher_run_id"] == teacher_id and config["dataset"] == "moons"
        rows = [json.loads(line) for line in (students[0] / "metrics.jsonl").read_text().splitlines()]
        assert [r for r in rows if r["event"] == "step"]  # the student trained
        assert not list(cache.glob("teachers/*"))  # a loaded teacher is never put in the teacher cache
        distill_text_in_the_same_lab(page, url, tmp_path)


def run_in_a_fresh_workspace(page, url: str, nb: str, timeout: float) -> None:
    """Open ``nb`` alone in a new JupyterLab workspace (the default one would restore the first notebook,
    whose kernel reads idle before this one's is connected) and run all its cells."""
    page.goto(f"{url.rstrip('/')}/lab/workspaces/kd-text/tree/{nb}?reset", timeout=timeout * 1000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout * 1000)
    wait_kernel_idle(page, timeout)
    page.wait_for_function(
        "() => !!(window.jupyterapp && window.jupyterapp.commands.hasCommand('runmenu:run-all'))",
        timeout=timeout * 1000,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('runmenu:run-all')")
    page.wait_for_function(_ALL_EXECUTED_JS, timeout=timeout * 1000)
    wait_kernel_idle(page, timeout)


def distill_text_in_the_same_lab(page, url: str, folder: Path) -> None:
    """A second notebook: distill tiny GPTs on a .txt file; bpc points and samples appear."""
    (folder / "tiny.txt").write_text(TEXT, encoding="utf-8")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(TEXT_CELL.format(path=str(folder / "tiny.txt")))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, folder / "text.ipynb")
    t0 = time.monotonic()
    try:
        run_in_a_fresh_workspace(page, url, "text.ipynb", timeout=240)
        distill = page.locator(f"{OUT} button", has_text="Distill")
        distill.wait_for(timeout=120_000)
    except Exception:
        screenshot(page, "dashboard_text_distill_failed")
        raise
    assert_no_widget_errors(page)
    assert page.evaluate(ACCURACY_POINTS_JS) == 0
    assert "bits per character" in page.locator(f"{OUT} .js-plotly-plot").first.inner_text()
    print(f"text dashboard shown {time.monotonic() - t0:.1f} s after opening its notebook")
    distill.click()
    t1 = time.monotonic()
    page.locator(OUT, has_text="test bits per character").first.wait_for(timeout=240_000)
    print(f"text distill done {time.monotonic() - t1:.1f} s after the click")
    page.wait_for_function(f"() => ({ACCURACY_POINTS_JS})() > 1", timeout=60_000)
    page.wait_for_function(
        f"() => ['prompt', 'teacher (step', 'student (step', 'baseline (step'].every(w => ({SAMPLES_JS})().includes(w))",
        timeout=60_000,
    )
    samples = page.evaluate(SAMPLES_JS)
    assert len(samples.split("baseline (step")[1].strip()) > 10, samples  # a continuation, not an empty line
    assert_no_widget_errors(page)
    screenshot(page, "dashboard_text_distill")
