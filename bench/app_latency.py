"""Streamlit app latency in a real browser (Chromium via Playwright).

Starts ``streamlit run app.py`` with empty run and cache folders, presses Run on the defaults
and times (1) the finished default run, the teacher's first training included, then presses
Run again and times (2) the first student points on the accuracy chart with the teacher now
cached, and (3) that run to its end. Targets: (2) <= 2 s, (1) <= 30 s.

    python bench/app_latency.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser import launch_chromium, serve_streamlit  # noqa: E402

POINTS = """() => [...document.querySelectorAll('.js-plotly-plot')]
  .map(gd => (gd._fullData || gd.data || []).filter(t => t.name === 'student').map(t => (t.x || []).length))
  .flat().reduce((a, b) => Math.max(a, b), 0)"""


def timed_run(page, first_points: bool) -> tuple[float | None, float]:
    """Press Run; seconds to the first student points (optional) and to the end of the run.

    The live panel names its job ("· job <id>"): only a panel showing the new job id counts,
    so charts left from the previous run are never mistaken for the new one."""
    before = page.evaluate("() => window.location.href")
    t0 = time.perf_counter()
    page.get_by_role("button", name="Run").click()
    while page.evaluate("() => window.location.href") == before:
        time.sleep(0.01)
    job = page.evaluate("() => new URLSearchParams(window.location.search).get('job')")
    status = page.get_by_text(f"job {job}")
    status.wait_for()
    t_points = None
    if first_points:
        while not (page.evaluate(POINTS) > 0 and status.count()):
            time.sleep(0.01)
        t_points = time.perf_counter() - t0
    page.get_by_text(re.compile(rf"^completed — .* · job {re.escape(job)}$")).wait_for(timeout=120_000)
    return t_points, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    firsts, cold, warm = [], [], []
    for _ in range(args.rounds):
        tmp = Path(tempfile.mkdtemp(prefix="kd-app-bench-"))
        env = {"WORKBENCH_CACHE": str(tmp / "cache"), "WORKBENCH_RUNS": str(tmp / "runs")}
        with serve_streamlit("app.py", env=env, timeout=90) as url, sync_playwright() as pw:
            ctx = launch_chromium(pw)
            page = ctx.new_page()
            page.set_default_timeout(120_000)
            page.goto(url)
            page.get_by_role("heading", name="Knowledge distillation, live").wait_for()
            _, t_cold = timed_run(page, first_points=False)
            page.wait_for_timeout(1000)
            t_first, t_warm = timed_run(page, first_points=True)
            ctx.close()
        cold.append(t_cold)
        firsts.append(t_first)
        warm.append(t_warm)
    med = statistics.median
    print(f"default settings (digits, teacher MLP 256x2, student MLP 16, 20 epochs), {args.rounds} fresh servers:")
    print(f"  Run -> finished run, teacher trained first:  median {med(cold):5.2f} s  (target <= 30 s) {cold}")
    print(f"  Run -> first student points, cached teacher: median {med(firsts):5.2f} s  (target <= 2 s) {firsts}")
    print(f"  Run -> finished run, cached teacher:         median {med(warm):5.2f} s")


if __name__ == "__main__":
    main()
