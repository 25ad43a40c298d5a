"""The results page's pipeline end to end, in its quick mode (the full page is docs/results.md)."""

import json
import pathlib
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).parent.parent / "docs"


@pytest.mark.slow
def test_quick_reproduction_writes_a_page_and_figures(tmp_path):
    before = {p: p.stat().st_mtime for p in DOCS.glob("results.*")} if DOCS.exists() else {}
    out = subprocess.run([sys.executable, "-m", "workbench.experiments", "--quick", "--workers", "1",
                          "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    page = (tmp_path / "r" / "results.md").read_text()
    for section in ("## MNIST-1D", "## digits with 10% of the labels", "fair control",
                    "## Hinton's temperature finding", "## The honest negative result"):
        assert section in page
    figures = json.loads((tmp_path / "r" / "results.json").read_text())["figures"]
    for name in ("mnist1d.teacher.test_acc", "mnist1d.scratch.test_acc", "mnist1d.kd-extra.test_acc",
                 "digits.teacher.test_acc", "digits.full_labels.kd_minus_scratch.mean_over_sizes"):
        f = figures[name]
        assert set(f) == {"mean", "std", "n"} and f["n"] >= 1
    after = {p: p.stat().st_mtime for p in DOCS.glob("results.*")} if DOCS.exists() else {}
    assert before == after  # the quick mode never overwrites the committed page
