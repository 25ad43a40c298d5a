"""Live views as a user sees them: what watching a run in the app or the Dashboard costs the run.

One command measures, side by side on this machine (browser, servers and training share its cores):

1. the same student fit -- the Explore page's default run (cached teacher) and a ~2,000-step
   run of the same settings -- timed (a) from Python with no UI (``exp.run()``), (a') the same
   started as both UIs start their jobs (a child process, ``workbench.ui.jobs.job_run``), (b) in
   the Streamlit app with a Chromium page open and drawing, (c) in ``wb.Dashboard`` in JupyterLab
   with the page open and drawing. A fit's time
   is the engine's ``FitEnd.seconds`` read from the run store (the job's baseline fit that
   follows is stopped, not timed); rounds rotate the order, ratios are the median of each
   round's b/a, c/a, b/a' and c/a';
2. Run (app) / Distill (Dashboard) click -> the first student point drawn on the page;
3. the temperature slider moved (arrow keys) during a run -> the engine's step payload carries
   the new value (median, p95, max);
4. the time one redraw takes as the run grows: the redraw code path called directly on a
   synthetic event history of 100, 1,000 and 10,000 logged steps, each redraw adding the same
   number of new events (app: the live fragment ``live_ui`` in ``AppTest``; Dashboard:
   ``Dashboard.redraw``), with the bytes each redraw sends to the browser.

Targets (issue 17): fit <= 1.10x with a page open; first point <= 2 s; slider p95 <= 0.5 s; a redraw
at 10,000 logged steps <= 2x one at 100.

    .venv/bin/python bench/live_views.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")  # AppTest outside a server warns on every call
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _browser import AppPage, Fit, LabDashboard, RunsFolder  # noqa: E402  (also puts tests/ on sys.path)
from browser import launch_chromium, serve_jupyterlab, serve_streamlit  # noqa: E402

LONG_STEPS = 2000
SLIDER_EPOCHS = 10_000  # the sidebar's largest: the slider run is stopped once the moves are done
APP_TEMPERATURES = (8.0, 12.0)  # the app's first screen has T=8; its next option is 12
DASH_TEMPERATURES = (8.0, 10.0)  # the Dashboard's options around 8
HISTORY_SIZES = (100, 1_000, 10_000)  # logged steps in the synthetic histories
NEW_LOGGED = 20  # logged steps each timed redraw adds (100 optimizer steps at log_every=5)
TIMINGS = "_live_views_timings"  # a module in sys.modules where the AppTest script leaves its timings
NOTEBOOK = "live_views"
CELL = """\
import workbench as wb
settings = wb.Settings({settings})
dash = wb.Dashboard(settings, runs={runs!r})
dash
"""


def explore_defaults() -> Any:
    """The Settings of the Explore page's first screen (what Run starts without a change)."""
    from workbench.ui.settings import Settings
    from workbench.ui.sidebar import DEFAULTS, default_model

    renamed = {"extra": "extra_unlabeled", "batch": "batch_size"}
    names = {f.name for f in dataclasses.fields(Settings)}
    kwargs = {renamed.get(k, k): v for k, v in DEFAULTS.items() if renamed.get(k, k) in names}
    if DEFAULTS.get("mode", "alpha preset") != "alpha preset":
        kwargs["alpha"] = None
    dataset = DEFAULTS["dataset"]
    return Settings(**kwargs, teacher=default_model("teacher", dataset), student=default_model("student", dataset))


def plain_fit(settings: Any, runs: RunsFolder) -> Fit:
    """(a): the student fit from Python with no UI, as a script runs it (the baseline fit is left
    out: it comes after the student's), on as many torch threads as the UIs give their jobs
    (``jobs.job_threads``): the same fit, so the ratios measure the UI and nothing else."""
    import torch

    from workbench.ui.jobs import job_threads

    before, threads = runs.names("student"), torch.get_num_threads()
    torch.set_num_threads(job_threads())
    try:
        settings.experiment(runs=str(runs.root), baseline=False).run()
    finally:
        torch.set_num_threads(threads)
    return runs.fit(runs.new_run("student", before, 5), 5)


def thread_fit(settings: Any, runs: RunsFolder) -> Fit:
    """(a'): the same with no UI, started as both UIs start their jobs (``jobs.job_run``: a child
    process, with their torch threads). (Before (a) used the UIs' thread count, ``exp.run()`` on the
    main thread with torch's default of one thread per core took 7-26x as long as a job on a busy
    2-core machine: oversubscribed cores.)"""
    from workbench.engine.process_run import ExperimentJob
    from workbench.ui.jobs import job_run

    before = runs.names("student")
    exp = settings.experiment(runs=str(runs.root), baseline=False)
    run = job_run(ExperimentJob(exp), "bench-no-ui").start()  # as the UIs' jobs
    run.join()
    if run.status != "completed":
        raise RuntimeError(f"the no-UI LiveRun ended {run.status}: {run.error}")
    return runs.fit(runs.new_run("student", before, 5), 5)


# -- redraw cost on synthetic histories -----------------------------------------------------------
class SyntheticFit:
    """The payloads of an ever longer student fit, made from a real fit's payloads with
    ``dataclasses.replace`` (so every field the engine sends is there); seeded values."""

    def __init__(self, events: list, steps_per_epoch: int, log_every: int):
        from workbench.engine.events import EpochEnd, EvalEnd, FitEnd, FitStart, StepEnd

        def first(kind, **match):
            return next(p for p in events if isinstance(p, kind) and all(getattr(p, k) == v for k, v in match.items()))

        self.teacher = [first(FitStart, role="teacher"), first(FitEnd, role="teacher")]
        self.start = first(FitStart, role="student")
        self.step_t, self.eval_t = first(StepEnd, role="student"), first(EvalEnd, role="student", split="val")
        self.epoch_t = first(EpochEnd, role="student")
        self.steps_per_epoch, self.log_every = steps_per_epoch, log_every
        self.step, self.rng = 0, random.Random(0)

    def head(self) -> list:
        """The teacher's (loaded from the cache) and the student's fit_start."""
        planned = 10**7
        start = dataclasses.replace(self.start, steps_planned=planned, epochs=planned // self.steps_per_epoch)
        return [*self.teacher, start]

    def logged(self, n: int) -> list:
        """The next ``n`` logged steps, with an eval and an epoch_end at each epoch's end."""
        from workbench.engine.events import frozen_map

        out, r = [], self.rng
        for _ in range(n):
            before, self.step = self.step, self.step + self.log_every
            epoch = self.step // self.steps_per_epoch + 1
            loss = 2.0 * math.exp(-self.step / 3000) + 0.05 * r.random()
            terms = frozen_map({k: loss * (0.5 + r.random()) for k in self.step_t.terms})
            out.append(
                dataclasses.replace(
                    self.step_t,
                    step=self.step,
                    epoch=epoch,
                    seconds=self.step * 1e-3,
                    loss=loss,
                    terms=terms,
                    batch_acc=min(1.0, 0.5 + self.step / 20_000 + 0.1 * r.random()),
                    samples=self.step * 64,
                    controls_changed=False,
                )
            )
            if before // self.steps_per_epoch != self.step // self.steps_per_epoch:  # an epoch ended
                acc = min(1.0, 0.6 + self.step / 50_000 + 0.05 * r.random())
                done = epoch - 1
                out.append(
                    dataclasses.replace(
                        self.eval_t,
                        step=self.step,
                        epoch=done,
                        acc=acc,
                        loss=loss,
                        seconds=self.step * 1e-3,
                        agreement=min(1.0, acc + 0.02),
                        kl=loss / 4,
                    )
                )
                out.append(
                    dataclasses.replace(self.epoch_t, epoch=done, step=self.step, loss=loss, seconds=self.step * 1e-3)
                )
        return out


def real_events(settings: Any) -> list:
    """The payloads a UI's buffer gets from a one-epoch job of ``settings`` (teacher cached)."""
    from workbench.engine.live import LiveRun

    exp = settings.replace(epochs=1).experiment(baseline=False)
    run = LiveRun(lambda live: exp.run(live), name="templates").start()
    if not run.join(300) or run.status != "completed":
        raise RuntimeError(f"the template run ended {run.status}: {run.error}")
    return run.buffer.all()


def idle_job(start: Callable[[Callable], Any]) -> Any:
    """A job that trains nothing and stays 'running' until stopped: its buffer is filled by hand."""
    gate = threading.Event()

    def target(live):
        live.on_stop(gate.set)
        gate.wait()

    return start(target)


class EncodingComm:
    """Stands in for a kernel's comm: JSON-encodes each message a widget sends and counts its bytes."""

    kernel = comm_id = "bench"

    def __init__(self):
        self.bytes = 0

    def send(self, data=None, buffers=None, **kwargs):
        self.bytes += len(json.dumps(data, default=str)) + sum(len(b) for b in buffers or ())

    def on_msg(self, *args):
        pass

    def on_close(self, *args):
        pass

    def close(self, *args, **kwargs):
        pass


def _app_script(job_id: str) -> None:
    """The AppTest script: one run of the app's live fragment for ``job_id``, timed."""
    import sys
    import time

    from workbench.ui.app import live_ui

    t0 = time.perf_counter()
    live_ui(job_id)
    sys.modules["_live_views_timings"].seconds.append(time.perf_counter() - t0)


def quiet_streamlit() -> None:
    """AppTest outside a server logs a warning on every call: keep the output to the results."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("streamlit"):
            logging.getLogger(name).setLevel(logging.ERROR)


def app_redraws(synthetic: Callable[[], SyntheticFit], sizes, repeats: int) -> dict[int, tuple[float, float]]:
    """Per history size: median seconds of one ``live_ui`` run (the app's live fragment) and the
    bytes of the figures it sends, each run adding NEW_LOGGED logged steps."""
    from streamlit.testing.v1 import AppTest

    from workbench.ui.app import registry

    timings = sys.modules[TIMINGS] = types.ModuleType(TIMINGS)
    timings.seconds = []
    quiet_streamlit()
    reg, out = registry(), {}
    try:
        for n in sizes:
            fit = synthetic()
            job = idle_job(lambda target: reg.start(target, label="bench-redraw"))
            for p in fit.head() + fit.logged(n):
                job.run.buffer.append(p)
            at = AppTest.from_function(_app_script, args=(job.job_id,), default_timeout=120)
            at.run()  # the first draw of this session (catches up with the whole history)
            seconds, sizes_sent = [], []
            for _ in range(repeats):
                for p in fit.logged(NEW_LOGGED):
                    job.run.buffer.append(p)
                timings.seconds = []
                at.run()
                if at.exception:
                    raise RuntimeError(f"live_ui raised: {at.exception[0].message}")
                seconds += timings.seconds
                sizes_sent.append(sum(len(c.proto.spec) for c in at.get("plotly_chart")))
            job.run.stop()
            job.run.join(10)
            out[n] = (statistics.median(seconds), statistics.median(sizes_sent))
    finally:
        reg.close(10)
    return out


def dashboard_redraws(settings: Any, synthetic: Callable[[], SyntheticFit], sizes, repeats: int) -> dict:
    """Per history size: median seconds of one ``Dashboard.redraw`` and the bytes its charts send."""
    from workbench.engine.live import LiveRun
    from workbench.ui import widgets

    out = {}
    for n in sizes:
        dash = widgets.Dashboard(settings)
        comms = [EncodingComm() for _ in range(3)]
        for fig, comm in zip((dash.accuracy_fig, dash.loss_fig, dash.agreement_fig), comms):
            fig.comm = comm
        fit = synthetic()
        run = idle_job(lambda target: LiveRun(target, name="bench-redraw").start())
        try:
            dash.watch(run, split="val", follow=False)  # drawn only when redraw() is called (timed here)
            for p in fit.head() + fit.logged(n):
                run.buffer.append(p)
            dash.redraw(run)  # catches up with the whole history
            seconds, sent = [], []
            for _ in range(repeats):
                for p in fit.logged(NEW_LOGGED):
                    run.buffer.append(p)
                before = sum(c.bytes for c in comms)
                t0 = time.perf_counter()
                dash.redraw(run)
                seconds.append(time.perf_counter() - t0)
                sent.append(sum(c.bytes for c in comms) - before)
        finally:
            run.stop()
            run.join(10)
        out[n] = (statistics.median(seconds), statistics.median(sent))
        dash.close()
    return out


# -- the browser part -----------------------------------------------------------------------------
def write_notebook(folder: Path, settings: Any, runs: RunsFolder) -> None:
    """A one-cell notebook that shows ``wb.Dashboard(settings, runs=...)``, as a person would."""
    import nbformat

    changed = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if getattr(settings, f.name) != f.default  # the defaults need no spelling out
    }
    args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL.format(settings=args, runs=str(runs.root)))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, folder / f"{NOTEBOOK}.ipynb")


def measure_fits(plans, measure: dict[str, Callable[[int], Fit]], log: Callable[[str], None], results: dict) -> None:
    """Fill ``results`` ({fit name: {side: [Fit per round]}}); each round runs the sides in a rotated order."""
    for name, epochs, rounds in plans:
        results[name] = {side: [] for side in measure}
        for r in range(rounds):
            sides = list(measure)
            for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
                fit = measure[side](epochs)
                results[name][side].append(fit)
                first = f", first point {fit.first_point:.2f} s" if fit.first_point is not None else ""
                capped = " (stopped at the cap: a lower bound)" if fit.stopped else ""
                log(f"  {name} round {r + 1} ({side}): {fit.steps} steps in {fit.seconds:.2f} s{capped}{first}")


def stage(name: str, work: Callable[[], Any], errors: list[str], log: Callable[[str], None]) -> Any:
    """``work()``; a failure is logged and kept in ``errors`` (the other stages still run)."""
    try:
        return work()
    except Exception as e:  # noqa: BLE001 (reported with the results)
        first = (str(e).strip().splitlines() or [""])[0][:300]
        errors.append(f"{name}: {type(e).__name__}: {first}")
        log(f"FAILED {errors[-1]}")
        return None


# -- the table --------------------------------------------------------------------------------------
def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def load_text(load: tuple[float, float, float]) -> str:
    """The 1, 5 and 15 minute load averages, as 'x / y / z'."""
    return " / ".join(f"{x:.2f}" for x in load)


def paired_ratio(num: list[Fit], den: list[Fit]) -> float:
    """The median over rounds of num / den (round i of each side ran next to each other)."""
    return statistics.median(y.seconds / x.seconds for x, y in zip(den, num))


SIDES = {"a": "(a) no UI", "t": "(a') thread", "b": "(b) app", "c": "(c) dashboard"}


def fit_lines(results: dict) -> list[str]:
    """Median fit seconds per side, the median of each round's ratios to (a) and to (a'), and notes."""
    head = "".join(f"{label:>15}" for label in SIDES.values())
    lines = [f"{'student fit (FitEnd.seconds)':<28} steps{head}     b/a    c/a    b/a'   c/a'"]
    notes, slow_main = [], []
    complete = {name: sides for name, sides in results.items() if all(sides.get(k) for k in SIDES)}
    for name, sides in results.items():
        if name not in complete:  # a failed stage left this fit without every side
            counts = ", ".join(f"{k}: {len(v)}" for k, v in sides.items())
            lines.append(f"{name:<28} not measured on every side (rounds {counts})")
    for name, sides in complete.items():
        med = {k: statistics.median(f.seconds for f in v) for k, v in sides.items()}
        cells = "".join(f"{med[k]:13.2f} s" for k in SIDES)
        pairs = (("b", "a"), ("c", "a"), ("b", "t"), ("c", "t"))
        ratios = "".join(f"{paired_ratio(sides[n], sides[d]):6.2f}x" for n, d in pairs)
        lines.append(f"{name:<28}{sides['a'][0].steps:>6}{cells}  {ratios}  ({len(sides['a'])} rounds)")
        capped = sorted({side for side, v in sides.items() for f in v if f.stopped})
        if capped:
            notes.append(f"{name}: fits of {', '.join(capped)} hit the cap and were stopped (lower bounds)")
        if paired_ratio(sides["a"], sides["t"]) > 1.5:
            slow_main.append(f"{paired_ratio(sides['a'], sides['t']):.1f}x")
    for sides in complete.values():  # the same fit on every side, or a note saying how it was not
        fits = [f for v in sides.values() for f in v]
        for key in sorted({k for f in fits for k in f.config}):
            seen = {side: sorted({repr(f.config.get(key)) for f in v}) for side, v in sides.items()}
            if len({value for values in seen.values() for value in values}) > 1:
                shown = ", ".join(f"{side}: {' '.join(v)}" for side, v in seen.items())
                note = f"the sides ran different {key!r}: {shown}"
                notes += [note] if note not in notes else []
    if slow_main:
        notes.append(
            f"(a) on the main thread took {' / '.join(slow_main)} the time of (a') as a UI job: compare the "
            "UIs with (a') as well"
        )
    lines += [f"  NOTE: {n}" for n in notes]
    lines.append(
        "  (a) exp.run() from Python; (a') the same started as the UIs' jobs (a child process); both with the UIs' torch threads; "
        "target: b/a and c/a <= 1.10x"
    )
    return lines


def latency_line(label: str, values: list[float | None], target: str) -> str:
    """Median, p95 and max of the moves that arrived, and how many never did (None)."""
    got = [v for v in values if v is not None]
    missed = len(values) - len(got)
    if not values:
        return f"{label}: not measured"
    if not got:
        return f"{label}: none of {len(values)} arrived{target}"
    text = f"{label}: median {statistics.median(got):.2f} s, p95 {p95(got):.2f} s, max {max(got):.2f} s (n={len(got)}"
    return text + (f", {missed} never arrived)" if missed else ")") + target


def redraw_lines(app: dict | None, dash: dict | None) -> list[str]:
    """Per UI: one redraw's median milliseconds and chart bytes at each history size, and last/first."""
    head = "one redraw (+20 logged steps)  " + "".join(f"{n:>10,} steps" for n in HISTORY_SIZES)
    lines = [head + "   last/first (target <= 2x)"]
    for label, res in (("app (live_ui)", app), ("dashboard (Dashboard.redraw)", dash)):
        if res is None:
            lines.append(f"{label:<30}not measured")
            continue
        ms = "".join(f"{res[n][0] * 1000:>12.1f} ms" for n in HISTORY_SIZES)
        kb = "".join(f"{res[n][1] / 1000:>12.1f} kB" for n in HISTORY_SIZES)
        ratio = res[HISTORY_SIZES[-1]][0] / res[HISTORY_SIZES[0]][0]
        lines.append(f"{label:<30}{ms}   {ratio:.1f}x")
        lines.append(f"{'  chart bytes sent per redraw':<30}{kb}")
    return lines


@dataclasses.dataclass
class Plan:
    """How much to measure: rounds of each fit, slider moves, redraw repeats, caps (seconds)."""

    rounds: int
    long_rounds: int
    moves: int
    repeats: int
    move_timeout: float
    cap: float


def in_browsers(settings: Any, runs: dict[str, RunsFolder], lab: Path, plan: Plan, log: Callable) -> dict:
    """Fits (a, a', b, c) side by side, first points and slider moves, with both servers and pages up."""
    from playwright.sync_api import sync_playwright

    warm = thread_fit(settings, runs["t"])  # trains and caches the teacher (off the main thread: see thread_fit)
    spe = warm.steps_per_epoch or warm.steps // settings.epochs
    long_epochs = max(1, round(LONG_STEPS / spe))
    log(f"teacher cached; default fit {warm.steps} steps ({spe} per epoch); long fit: {long_epochs} epochs")
    write_notebook(lab, settings, runs["c"])
    out: dict[str, Any] = {"steps_per_epoch": spe, "cold": {}, "fits": {}, "moves": {}, "errors": []}
    with (
        serve_streamlit("app.py", env={"WORKBENCH_RUNS": str(runs["b"].root)}, timeout=120) as app_url,
        serve_jupyterlab(lab, timeout=180) as lab_url,
        sync_playwright() as pw,
    ):
        app_ctx, lab_ctx = launch_chromium(pw), launch_chromium(pw)
        try:
            app = AppPage(app_ctx, app_url, runs["b"], settings.epochs)
            dash = LabDashboard(lab_ctx, lab_url, runs["c"], NOTEBOOK, settings.epochs)
            dash.open()
            import torch

            threads = dash.kernel("import torch; print(torch.get_num_threads())").strip()
            dash_threads = dash.kernel("from workbench.ui import jobs; print(getattr(jobs, 'job_threads', str)())")
            log(
                f"servers up, Dashboard shown; torch threads: this process {torch.get_num_threads()}, "
                f"app jobs {app_threads()}, kernel {threads}, Dashboard jobs {dash_threads.strip() or 'as the kernel'}"
            )
            errors = out["errors"]
            cold = out["cold"]
            for side, page in (("b", app), ("c", dash)):  # the first click of a fresh server / kernel (warm-up)
                fit = stage(
                    f"warm-up {SIDES[side]}", lambda page=page: page.fit(settings.epochs, plan.cap), errors, log
                )
                cold[side] = fit.first_point if fit is not None else None
            log(f"warm-up: first click -> first point: app {secs(cold['b'])}, dashboard {secs(cold['c'])}")
            measure = {
                "a": lambda e: plain_fit(settings.replace(epochs=e), runs["a"]),
                "t": lambda e: thread_fit(settings.replace(epochs=e), runs["t"]),
                "b": lambda e: app.fit(e, plan.cap),
                "c": lambda e: dash.fit(e, plan.cap),
            }
            plans = [
                ("default Explore run", settings.epochs, plan.rounds),
                (f"~{LONG_STEPS:,} steps", long_epochs, plan.long_rounds),
            ]
            stage("fits", lambda: measure_fits(plans, measure, log, out["fits"]), errors, log)
            for side, page, values in (("b", app, APP_TEMPERATURES), ("c", dash, DASH_TEMPERATURES)):
                log(f"slider moves during a run ({SIDES[side]})")
                moves = stage(
                    f"slider {SIDES[side]}",
                    lambda page=page, values=values: page.slider_latencies(
                        SLIDER_EPOCHS, plan.moves, values, plan.move_timeout
                    ),
                    errors,
                    log,
                )
                if moves is not None:
                    log(f"  {[None if v is None else round(v, 3) for v in moves]}")
                    out["moves"][side] = moves
            log(f"text: {TEXT_DATASET} with the app's default GPTs")
            out["text"] = stage(
                "text first points", lambda: text_first_points(app, runs["b"], plan.rounds, plan.cap, log), errors, log
            )
        finally:
            app_ctx.close()
            lab_ctx.close()
    return out


TEXT_DATASET = "shakespeare-char"
TEXT_TEACHER = "2,64"  # the teacher sizes the app's pickers show for text (Settings.for_dataset)
TEXT_TEACHER_CAP = 3600.0  # seconds the first text run may take to train and cache its teacher
# Any point in the chart titled "student training loss" (Streamlit's theme wraps titles in <b>): a text run's first student points (its bits
# per character come at evaluations; the loss is logged from the first steps).
TEXT_STUDENT_POINT = """() => [...document.querySelectorAll('.js-plotly-plot')].some(gd =>
  (((gd.layout || {}).title || {}).text || '').includes('student training loss') && (gd._fullData || gd.data || []).some(t => t.x && t.x.length > 0))"""


def text_first_points(app: AppPage, runs: RunsFolder, rounds: int, cap: float, log: Callable) -> list[float | None]:
    """The app's corpus with its default GPTs: Run -> the student's first training-loss point, in a fresh
    session each time. The first run trains and caches the teacher (not counted); each run is stopped
    once the point is drawn."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    page, firsts = app.page, []
    sidebar = page.get_by_test_id("stSidebar")
    for i in range(rounds + 1):
        page.goto(app.url)
        page.get_by_role("heading", name="Knowledge distillation, live").wait_for()
        sidebar.get_by_test_id("stSelectbox").filter(has_text="dataset").first.click()
        page.get_by_role("option", name=TEXT_DATASET, exact=True).click()
        # the rerun that switches the pickers to GPT sizes (a click on Run during it was lost)
        expect(sidebar.get_by_role("textbox", name="teacher sizes")).to_have_value(TEXT_TEACHER, timeout=60_000)
        page.wait_for_timeout(500)
        t0, _ = app._press_run()
        first = None
        try:
            # the first run trains the teacher (one epoch of the corpus: minutes): it must not be cut short,
            # else nothing is cached and every later run trains it again
            page.wait_for_function(TEXT_STUDENT_POINT, polling=50, timeout=(cap if i else TEXT_TEACHER_CAP) * 1000)
            first = time.perf_counter() - t0
        except PlaywrightTimeout:
            pass
        app._stop()
        if i:  # the first run trained the teacher
            firsts.append(first)
        log(
            f"  text run {i} ({'teacher trained, not counted' if not i else 'cached teacher'}): first student point {secs(first)}"
        )
    return firsts


def app_threads() -> str:
    """The torch threads the app gives its jobs (``workbench.ui.jobs.job_threads``, where it exists)."""
    from workbench.ui import jobs

    return str(jobs.job_threads()) if hasattr(jobs, "job_threads") else "torch's default"


def secs(value: float | None) -> str:
    """Seconds with two decimals, or 'n/a'."""
    return "n/a" if value is None else f"{value:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and moves (about 3 minutes)")
    ap.add_argument(
        "--cap",
        type=float,
        default=None,
        help="seconds a UI fit may take before it is stopped (its time then a lower bound); default 120 (quick), 300",
    )
    args = ap.parse_args()
    plan = Plan(2, 1, 6, 5, 20.0, 120.0) if args.quick else Plan(5, 3, 10, 9, 30.0, 300.0)
    plan.cap = args.cap or plan.cap
    # a SIGTERM (e.g. from `timeout`) unwinds like an error: the servers and browsers are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start, load_start, cores = time.perf_counter(), os.getloadavg(), os.cpu_count()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {text}", flush=True)

    log(f"load (1/5/15 min) at start: {load_text(load_start)} on {cores} cores")
    tmp = Path(tempfile.mkdtemp(prefix="kd-live-views-"))
    os.environ["WORKBENCH_CACHE"] = str(tmp / "cache")  # the servers and the kernel inherit it
    os.environ["WORKBENCH_RUNS"] = str(tmp / "runs-other")
    runs = {side: RunsFolder(tmp / f"runs-{side}") for side in SIDES}
    (tmp / "lab").mkdir()
    try:
        settings = explore_defaults()
        log(f"the Explore page's default run: {settings.dataset}, {settings.teacher} -> {settings.student}")
        res = in_browsers(settings, runs, tmp / "lab", plan, log)
        log("browser and servers closed; timing redraws on synthetic histories")
        events, log_every = real_events(settings), settings.config().log_every

        def synthetic() -> SyntheticFit:
            return SyntheticFit(events, res["steps_per_epoch"], log_every)

        errors = res["errors"]
        app_redraw = stage("redraw app", lambda: app_redraws(synthetic, HISTORY_SIZES, plan.repeats), errors, log)
        dash_redraw = stage(
            "redraw dashboard", lambda: dashboard_redraws(settings, synthetic, HISTORY_SIZES, plan.repeats), errors, log
        )
        load_end = os.getloadavg()
        log(f"load (1/5/15 min) at end: {load_text(load_end)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"== live views, as a user sees them ({cores} cores; load 1/5/15 min: start {load_text(load_start)}, "
        f"end {load_text(load_end)}; {'--quick' if args.quick else 'full'}) =="
    )
    print("\n".join(fit_lines(res["fits"])))
    firsts = {}
    for side in ("b", "c"):
        got = [f.first_point for f in res["fits"].get("default Explore run", {}).get(side, []) if f.first_point]
        firsts[side] = statistics.median(got) if got else None
    cold = res["cold"]
    print(
        f"Run -> first student point (cached teacher): app median {secs(firsts['b'])}, dashboard median "
        f"{secs(firsts['c'])} (target <= 2 s); first click of a fresh server/kernel: app "
        f"{secs(cold.get('b'))}, dashboard {secs(cold.get('c'))}"
    )
    text = [v for v in res.get("text") or [] if v is not None]
    print(
        f"Run -> first student point, text ({TEXT_DATASET}, cached teacher): app "
        f"{'median ' + secs(statistics.median(text)) if text else 'n/a'} (n={len(text)}; target <= 2 s)"
    )
    target = " (target p95 <= 0.5 s)"
    for side, name in (("b", "app"), ("c", "dashboard")):
        print(latency_line(f"slider -> engine payload, {name} (temperature)", res["moves"].get(side, []), target))
    print("\n".join(redraw_lines(app_redraw, dash_redraw)))
    for error in res["errors"]:
        print(f"FAILED {error}")
    if res["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
