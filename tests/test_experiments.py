"""The results page's pipeline end to end, in its quick mode (the full page is docs/results.md)."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).parent.parent / "docs"


@pytest.mark.slow
def test_quick_reproduction_writes_a_page_and_figures():
    before = {p: p.stat().st_mtime for p in DOCS.glob("results*")} if DOCS.exists() else {}
    # no --out: the quick mode's own default (a temporary folder), run from the repository root
    out = subprocess.run(
        [sys.executable, "-m", "workbench.reports.results", "--quick", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=DOCS.parent,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    folder = pathlib.Path(re.search(r"wrote (\S+)/results\.md", out.stdout).group(1))
    assert folder.resolve() != DOCS.resolve()
    page = (folder / "results.md").read_text()
    for section in (
        "## MNIST-1D",
        "## digits with 10% of the labels",
        "fair control",
        "## Hinton's temperature finding",
        "## The honest negative result",
        "## A language model",
    ):
        assert section in page
    figures = json.loads((folder / "results.json").read_text())["figures"]
    for name in (
        "mnist1d.teacher.test_acc",
        "mnist1d.scratch.test_acc",
        "mnist1d.kd-extra.test_acc",
        "digits.teacher.test_acc",
        "digits.full_labels.kd_minus_scratch.mean_over_sizes",
        "lm.teacher.val_loss_nats",
        "lm.labelled0.1.bpc_saved_by_kd",
    ):
        f = figures[name]
        assert set(f) == {"mean", "std", "n"} and f["n"] >= 1
    charts = (folder / "results-figures.html").read_text()
    assert charts.count('class="plotly-graph-div"') == page.count("](results-figures.html#figure-") == 6
    after = {p: p.stat().st_mtime for p in DOCS.glob("results*")} if DOCS.exists() else {}
    assert before == after  # the quick mode never overwrites the committed page

    # one section rerun: the page keeps the others (and their figures) as they were
    (folder / "results.md").write_text(page.replace("## A language model", "## (an older) A language model"))
    html_before = (folder / "results-figures.html").read_text()
    again = rerun("--sections", "lm", "--out", str(folder))
    assert again.returncode == 0, again.stderr[-3000:]
    new = (folder / "results.md").read_text()
    lm = page.index("<!-- section: lm -->")
    assert new[:lm] == page[:lm] and new.count("<!-- section: lm -->") == 1 and "(an older)" not in new
    assert "`python -m workbench.reports.results --quick --sections lm`" in new
    assert json.loads((folder / "results.json").read_text())["figures"].keys() == figures.keys()
    assert (folder / "results-figures.html").read_text() == html_before
    refused = rerun("--sections", "digits", "--out", str(folder))
    assert (
        refused.returncode == 2 and "--sections: digits draw figures numbered across the whole page" in refused.stderr
    )


def rerun(*args):
    return subprocess.run(
        [sys.executable, "-m", "workbench.reports.results", "--quick", "--workers", "1", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=DOCS.parent,
    )
