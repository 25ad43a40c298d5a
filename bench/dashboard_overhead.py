"""Fit time with the Jupyter Dashboard attached vs without, measured inside a real kernel.

A notebook is executed with nbclient. In it, the same distillation (digits with 10% of the
labels, cached teacher, MLP 64-16-10 student, 150 epochs: ~1.5 s) runs alternately through the plain API and
through a displayed Dashboard (its drawing thread redrawing the FigureWidgets up to four
times a second while training). The student's fit seconds (FitEnd.seconds) are compared;
paired rounds, median ratio. Target: <= 1.05.

    python bench/dashboard_overhead.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json

import nbformat
from nbclient import NotebookClient

SETUP = """
import statistics, time, torch, warnings
warnings.simplefilter("ignore")
torch.set_num_threads(1)
import workbench as wb
from workbench.engine.events import FitEnd
settings = wb.Settings.for_dataset("digits", labeled_fraction=0.1, epochs=150, log_every=5)
settings.experiment().prepare_teacher()  # the teacher is cached: both sides only distill

def student_seconds(events):
    return [p.seconds for p in events if isinstance(p, FitEnd) and p.role == "student"][-1]

def plain():
    exp = settings.experiment(baseline=False)
    return exp.run().student.summary["seconds"]

def with_dashboard():
    dash = wb.Dashboard(settings)
    display(dash)
    assert dash._start(lambda exp, live: exp.run(live), "bench")
    dash.wait()
    return student_seconds(dash.job.buffer.all())
"""

MEASURE = """
ROUNDS = {rounds}
plain(); with_dashboard()  # warm-up
pairs = []
for i in range(ROUNDS):
    if i % 2:
        d = with_dashboard(); p = plain()
    else:
        p = plain(); d = with_dashboard()
    pairs.append((p, d))
ratios = [d / p for p, d in pairs]
print("RESULT " + json.dumps({{"plain": statistics.median(p for p, _ in pairs),
                               "dashboard": statistics.median(d for _, d in pairs),
                               "ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import json\n" + SETUP),
        nbformat.v4.new_code_cell(MEASURE.format(rounds=args.rounds)),
    ]
    NotebookClient(nb, timeout=1800, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.output_type == "stream")
    res = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
    print(
        f"student fit, median of {args.rounds} paired rounds inside a kernel: plain API {res['plain']:.3f} s, "
        f"with the Dashboard {res['dashboard']:.3f} s"
    )
    print(
        f"dashboard / plain median ratio {res['ratio']:.3f} (min {res['min']:.3f}, max {res['max']:.3f}; "
        "target <= 1.05)"
    )


if __name__ == "__main__":
    main()
