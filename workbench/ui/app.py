"""The Streamlit app: ``streamlit run app.py``. Pages are small ``*_ui()`` functions that draw
widgets and return values; training runs on LiveRun threads held by a server-wide job registry
(``st.cache_resource``), and the page keeps only the job id, in its URL. The Explore page's
sidebar is in :mod:`workbench.ui.sidebar`."""

from __future__ import annotations

import gc
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from .. import plots
from ..engine.evaluation import predict_logits
from ..engine.events import FitStart, StepEnd
from ..engine.process_run import ExperimentJob
from ..models.zoo import is_text
from ..verdict import README_ANCHOR, kd_verdict, text_verdict
from . import sidebar
from .jobs import Job, JobRegistry, TooManyJobs, job_threads, warm_up_jobs
from .settings import Settings
from .sidebar import UPLOAD, UPLOAD_TEXT

TWO_D = ("moons", "spirals")
ADOPTED = "adopted_job"  # the job whose settings this session's sidebar shows
README = Path(__file__).resolve().parents[2] / "README.md"


@st.cache_resource
def registry() -> JobRegistry:
    """One job registry per server: jobs outlive page refreshes and are shared by no one else.
    Its jobs run with :func:`~workbench.ui.jobs.job_threads` torch threads."""
    torch.set_num_threads(job_threads())
    warm_up_jobs()  # the fork server imports torch: seconds, before the first Run rather than after it
    return JobRegistry()


def no_collection_after_each_run() -> None:
    """Turn off Streamlit's ``gc.collect(2)`` after every script run, and move what is loaded now out of
    the collector's way (``gc.freeze``, once per server).

    The live fragment reruns every second or so, and a full collection of this process (torch, pandas,
    plotly: ~400,000 objects) took ~450 ms here, holding the GIL while the training thread waited: it
    was most of what watching a run cost the run. Python's own generational collector still runs.
    """
    from streamlit import config

    if config.get_option("runner.postScriptGC"):
        config.set_option("runner.postScriptGC", False)
        gc.collect()
        gc.freeze()


def main() -> None:
    no_collection_after_each_run()
    st.set_page_config(page_title="KD Workbench", page_icon=":material/school:", layout="wide")
    sidebar.keep_state()  # the Explore page's settings outlive a visit to the Compare page
    here = Path(__file__).resolve().parent
    pages = [
        st.Page(str(here / "explore_entry.py"), title="Explore", icon=":material/science:", default=True),
        st.Page(str(here / "compare_entry.py"), title="Compare", icon=":material/leaderboard:"),
    ]
    st.navigation(pages).run()


# -- the page ------------------------------------------------------------------------------------
def explore_page() -> None:
    st.title("Knowledge distillation, live")
    st.caption(
        "A teacher's softened outputs teach a small student; a scratch baseline with the same "
        "labels, steps and initial weights shows what distillation adds."
    )
    reg = registry()
    job_id = st.query_params.get("job")
    if job_id is None and reg.get(st.session_state.get(ADOPTED)) is not None:
        job_id = st.query_params["job"] = st.session_state[ADOPTED]  # back from another page: its job again
    job = reg.get(job_id)
    sidebar.seed_state()
    if job is not None and st.session_state.get(ADOPTED) != job.job_id:
        adopt(job)  # a reload or a second viewer: the sidebar shows the job's settings, the job keeps them
    choice = sidebar.data_ui()
    settings, error = None, choice.error
    if error is None:
        try:
            settings = sidebar.settings_ui(choice)
        except ValueError as e:
            error = sidebar.md(str(e))
    if error:
        st.error(error)
    if job_id and job is None:
        st.info(
            "the job in this page's address is not on this server (finished long ago, or the server "
            "restarted); press Run for a new one"
        )
    if st.session_state.pop(sidebar.MOVED, False) and job is not None and not job.run.done:
        apply_live_controls(job)  # only a control moved in this session steers the job
    refused = st.session_state.get(REFUSED)
    if refused and job is not None and not job.run.done and refused[:2] == (job.job_id, sidebar.live_weights()):
        st.error(refused[2])  # until the controls move: a rerun (e.g. the live fragment's) keeps saying it
    if controls_ui(job, can_run=settings is not None) and settings is not None:
        job = start_job(reg, settings, choice.data)
        if job is not None:
            st.rerun()  # a full rerun carries the new job id into the page URL
    if job is not None:
        shown = job.context.get("dataset_choice")
        if job.run.done and shown is not None and shown != choice.name:
            st.info(
                f"Below: the last run, on {shown}. Press Run to run {choice.name} with the settings in the sidebar."
            )
        live_ui(job.job_id)
        if job.run.done:
            results_ui(job)
    if settings is not None:
        with st.expander("Copy as code"):
            st.code(settings.to_code(), language="python")


def adopt(job: Job) -> None:
    """Show a job's own settings, and its current temperature and weights, in this session's sidebar."""
    settings = job.context.get("settings")
    if isinstance(settings, Settings):
        weights = job.run.controls.current if job.run.controls is not None else None
        files = job.context.get("model_files")
        sidebar.restore(settings, job.context.get("dataset_choice", settings.dataset), weights, files)
    st.session_state[ADOPTED] = job.job_id


def controls_ui(job: Job | None, can_run: bool) -> bool:
    """Run / Pause / Stop buttons; returns whether Run was pressed. Pause and Stop act in their
    callbacks, before the page is drawn, so the Pause button's label is the state after the click."""
    busy = job is not None and not job.run.done
    steerable = busy and not job.run.stopped
    paused = steerable and job.run.status == "paused"
    job_id = job.job_id if job is not None else None
    a, b, c, _ = st.columns([1, 1, 1, 5])
    run = a.button("Run", type="primary", key="run", disabled=busy or not can_run, icon=":material/play_arrow:")
    b.button(
        "Resume" if paused else "Pause",
        key="pause",
        disabled=not steerable,
        on_click=_toggle_pause,
        args=(job_id,),
        icon=":material/play_arrow:" if paused else ":material/pause:",
    )
    c.button("Stop", key="stop", disabled=not steerable, on_click=_stop, args=(job_id,), icon=":material/stop:")
    return run


def _toggle_pause(job_id: str | None) -> None:
    job = registry().get(job_id)
    if job is not None and not job.run.done:
        job.run.resume() if job.run.status == "paused" else job.run.pause()


def _stop(job_id: str | None) -> None:
    job = registry().get(job_id)
    if job is not None:
        job.run.stop()


def start_job(reg: JobRegistry, settings: Settings, data: Any) -> Job | None:
    """Build the experiment and start it on the registry; the job id goes into the URL."""
    files = sidebar.model_files()
    try:
        experiment = settings.experiment(data=data, runs=True)
        job = reg.start(
            ExperimentJob(experiment),
            label="distill",
            process=True,
            settings=settings,
            experiment=experiment,
            dataset_choice=UPLOAD
            if settings.csv is not None
            else UPLOAD_TEXT
            if settings.text_file
            else settings.dataset,
            model_files=files,
        )
    except TooManyJobs as e:
        st.warning(str(e))
        return None
    except (ValueError, RuntimeError, ImportError) as e:
        message = str(e)
        for role, name in files.items():  # name the file the person uploaded, not where it was kept
            message = message.replace(getattr(settings, role), f"{name} (uploaded)")
        st.error(sidebar.md(message))
        return None
    st.query_params.from_dict({"job": job.job_id})
    st.session_state[ADOPTED] = job.job_id
    return job


REFUSED = "controls_refused"  # session state: (job id, the live widgets' values, why the job refused them)


def _steer_now() -> None:
    """A live control moved (its on_change, before the page's script runs again): steer this page's
    running job now; the page then has nothing left to apply."""
    job_id = st.query_params.get("job") or st.session_state.get(ADOPTED)
    job = registry().get(job_id)
    if job is not None and not job.run.done and st.session_state.get(ADOPTED) == job.job_id:
        st.session_state.pop(sidebar.MOVED, None)
        apply_live_controls(job)


sidebar.on_controls_moved(_steer_now)


def apply_live_controls(job: Job) -> None:
    """Send the live widgets' temperature, weights, divergence and beta to the running job's next step;
    a refusal is kept in the session (shown by the page while the widgets hold the refused values)."""
    wanted = sidebar.live_weights()
    st.session_state.pop(REFUSED, None)
    w = job.run.controls.current if job.run.controls is not None else None
    if w is not None and (w.temperature, w.ce, w.kd, w.mse, w.divergence, w.beta) == tuple(wanted.values()):
        return  # moved and moved back: nothing changes, and no "controls changed" mark
    try:
        job.run.set_controls(**wanted)
    except (ValueError, TimeoutError) as e:  # the job goes on with the values it had
        st.session_state[REFUSED] = (job.job_id, wanted, str(e))


# The live charts' redraw interval, in seconds: the shortest that keeps redrawing (measured in CPU
# seconds of the session's thread) under LIVE_SHARE of a core. Streamlit fixes a fragment's
# run_every when the fragment is declared, i.e. on a full run of the page (the browser swaps its
# timer when a declaration brings a new interval; a fragment's own reruns bring none): live_ui
# declares it anew on each full run, and asks for one full run when the interval should change.
LIVE_SECONDS = (1.0, 2.0, 4.0)
LIVE_SHARE = 0.1
LIVE_EVERY, LIVE_COST = "live_every", "live_cost"  # session state: the interval, a redraw's CPU seconds (EMA)
_cpu_seconds = time.thread_time  # (tests replace it)


def live_interval(cost: float, current: float = LIVE_SECONDS[0]) -> float:
    """The live fragment's interval for redraws costing ``cost`` CPU seconds: the shortest of
    LIVE_SECONDS with ``cost / interval <= LIVE_SHARE`` (else the longest); a shorter one than
    ``current`` only once the cost is well below it (a cost near a boundary does not flap)."""
    need = cost / LIVE_SHARE
    wanted = next((s for s in LIVE_SECONDS if s >= need), LIVE_SECONDS[-1])
    if wanted < current and need > 0.7 * wanted:
        return current
    return wanted


def live_ui(job_id: str) -> None:
    """Status, progress and curves of a job, redrawn from its event buffer every second, or less
    often when a redraw costs more than LIVE_SHARE of a core (see :func:`live_interval`)."""
    every = st.session_state.get(LIVE_EVERY, LIVE_SECONDS[0])
    st.fragment(run_every=every)(live_fragment)(job_id)


def live_fragment(job_id: str) -> None:
    """One redraw of the live view: the job's shared LiveHistory takes the new events, the charts are
    drawn from its frame (O(point budget), not O(events))."""
    job = registry().get(job_id)
    if job is None:
        st.info("this job is gone (finished long ago or cleaned up); press Run for a new one")
        return
    history = job.history
    history.pull(job.run.buffer)  # only the events since any session's last redraw
    cpu = _cpu_seconds()  # (after the pull: a reloaded page's first pull catches up once, then it is O(new))
    status, start = job.run.status, history.latest_start
    loaded = loaded_teacher(job)
    progress, text = progress_of(start, history.last_step, loaded)
    st.progress(progress, text=f"{status} — {text} · job {job_id}")
    note = teacher_note(history.start_of("teacher"), loaded)
    if note:
        st.caption(note)
    if status == "error":
        st.error(f"the run failed: {job.run.error}")
    for p in history.failures:
        st.error(f"{p.role} {p.status}: {p.message}")
    frame = history.frame()
    if is_text_job(job):
        text_charts_ui(job, frame)
    else:
        classifier_charts_ui(start, frame)
    adapt_interval(_cpu_seconds() - cpu, job.run.done)
    if job.run.done and not st.session_state.get(f"shown-{job_id}"):
        st.session_state[f"shown-{job_id}"] = True
        st.rerun()  # once: draw the results below the live charts


def adapt_interval(cost: float, done: bool) -> None:
    """Keep a running mean of a redraw's CPU seconds; when it calls for another interval, a full run
    declares the live fragment with it (once per change: at most a few times a run)."""
    state = st.session_state
    mean = cost if LIVE_COST not in state else 0.7 * state[LIVE_COST] + 0.3 * cost
    state[LIVE_COST] = mean
    current = state.get(LIVE_EVERY, LIVE_SECONDS[0])
    wanted = live_interval(mean, current)
    if wanted != current and not done:
        state[LIVE_EVERY] = wanted
        st.rerun()


def is_text_job(job: Job) -> bool:
    """Whether a job distills a language model (its settings say text, or its evals carry bpc)."""
    settings = job.context.get("settings")
    if isinstance(settings, Settings):
        return settings.is_text
    return job.history.has_bpc


def classifier_charts_ui(start: FitStart | None, history: pd.DataFrame) -> None:
    """Accuracy and loss curves of a classifier job (the teacher's own while it trains); ``start``:
    the latest fit_start."""
    left, right = st.columns(2)
    if start is not None and start.role == "teacher" and start.steps_planned:  # the teacher trains now
        left.plotly_chart(teacher_figure(history), key="accuracy", width="stretch")
        right.plotly_chart(plots.loss_figure(history, role="teacher"), key="loss", width="stretch")
    else:
        left.plotly_chart(plots.accuracy_figure(history), key="accuracy", width="stretch")
        right.plotly_chart(plots.loss_figure(history), key="loss", width="stretch")


def text_charts_ui(job: Job, history: pd.DataFrame) -> None:
    """A language-model job: bits per character and training loss, entropies, and the samples."""
    left, right = st.columns(2)
    left.plotly_chart(plots.bpc_figure(history), key="bpc", width="stretch")
    right.plotly_chart(plots.loss_figure(history, role=plots.live_role(history)), key="loss", width="stretch")
    left, right = st.columns(2)
    left.plotly_chart(plots.entropy_figure(history), key="entropy", width="stretch")
    with right:
        samples_ui(job, history)


def samples_ui(job: Job, history: pd.DataFrame) -> None:
    """The prompt and each model's latest continuation of it (same prompt and seed for all)."""
    samples = plots.latest_samples(history)
    if "teacher" not in samples and "student" in samples:  # a cached or loaded teacher made none here
        teacher = teacher_sample(job)
        if teacher is not None:
            samples = {"teacher": teacher, **samples}
    with st.container(key="samples"):
        st.markdown("**Samples** (the same prompt and seed for every model, redrawn at each evaluation)")
        if not samples:
            st.caption("the first evaluation brings the first samples")
            return
        st.caption("prompt")
        st.code(next(iter(samples.values()))["prompt"], language=None, wrap_lines=True)
        for role, sample in samples.items():
            when = "once" if sample["step"] < 0 else f"step {sample['step']}"
            st.caption(f"{role} ({when})")
            st.code(sample["sample"], language=None, wrap_lines=True)


def teacher_sample(job: Job) -> dict[str, Any] | None:
    """The job's teacher's continuation of the samples' prompt, generated once (its step -1) when
    it was not trained in this job (cached or loaded); None before the student has started."""
    if "teacher_sample" in job.context:
        return job.context["teacher_sample"]
    experiment = job.context.get("experiment")
    if experiment is None or getattr(experiment, "teacher", None) is None:
        return None
    from ..data.text import tokenizer_of
    from ..engine.sequence import generate_tokens, sample_prompt

    data = experiment.data
    prompt = sample_prompt(data)
    tokens = int(getattr(experiment.config, "sample_tokens", 0) or 0)
    result = None
    if prompt is not None and tokens:
        tokenizer = tokenizer_of(data)
        ids = generate_tokens(experiment.teacher, prompt, tokens, int(data.input_shape[0]))
        result = {"step": -1, "prompt": tokenizer.decode(prompt), "sample": tokenizer.decode(ids)}
    job.context["teacher_sample"] = result
    return result


def loaded_teacher(job: Job) -> str | None:
    """The description of the job's teacher when it was loaded (a previous run, a file), else None."""
    experiment = job.context.get("experiment")
    loaded = getattr(experiment, "loaded", {}).get("teacher")
    if loaded is None:
        return None
    shown = (job.context.get("model_files") or {}).get("teacher")  # the uploaded file's own name
    return loaded.description.replace(Path(loaded.source).name, shown) if shown else loaded.description


def progress_of(start: FitStart | None, last: StepEnd | None, loaded: str | None = None) -> tuple[float, str]:
    """The current fit's share done and a line saying which fit it is and where it stands; ``start``:
    the latest fit_start, ``last``: that fit's latest step; ``loaded``: the description of a teacher
    loaded, not trained."""
    if start is None:
        return 0.0, f"teacher loaded ({loaded}), preparing the student" if loaded else "preparing data and models"
    if not start.steps_planned:
        return 1.0, f"{start.role}: loaded"
    done = last.step if last is not None and last.run_id == start.run_id else 0
    text = f"{start.role}: step {done}/{start.steps_planned}"
    return min(done / start.steps_planned, 1.0), text


def teacher_note(teacher: FitStart | None, loaded: str | None = None) -> str | None:
    """Where this job's teacher comes from: loaded (a previous run, a file), trained now (once,
    then cached) or the cache; ``teacher``: the job's teacher fit_start."""
    if loaded:
        return f"teacher: {loaded}: loaded and used as is, not trained here, so the student starts at once"
    if teacher is None:
        return None
    if not teacher.steps_planned:
        return (
            "teacher: loaded from the cache (trained before on this data with these settings), "
            "so the student starts at once"
        )
    return (
        "teacher: trained once, here, then cached: the next run with this data and teacher "
        "loads it instead of training it again"
    )


def teacher_figure(history: pd.DataFrame) -> go.Figure:
    """The teacher's own accuracy per evaluation, drawn while it trains (before any student)."""
    fig = go.Figure()
    if {"role", "event", "split", "acc"} <= set(history.columns):
        evals = history[(history["role"] == "teacher") & (history["event"] == "eval")]
        for i, (split, rows) in enumerate(evals.groupby("split", sort=False)):
            rows = rows.dropna(subset=["acc"])  # (a live history's eval rows kept for another column)
            fig.add_trace(
                go.Scatter(
                    x=rows["step"].to_numpy(),
                    y=rows["acc"].to_numpy(dtype=float),
                    mode="lines+markers",
                    name=f"teacher {split}",
                    line=dict(color=plots.PALETTE[(i + 3) % 10]),
                )
            )
    fig.update_layout(
        title="teacher accuracy (training it once; it is cached after)",
        xaxis_title="step",
        yaxis_title="accuracy",
        yaxis_range=[0, 1],
        template="plotly_white",
        showlegend=True,
        uirevision="teacher-accuracy",
        margin=dict(l=50, r=20, t=60, b=40),
    )
    return fig


def results_ui(job: Job) -> None:
    """Final numbers, whether KD beat scratch (and why not), the temperature explorer and (2-D
    data) decision boundaries."""
    result = job.run.result
    experiment = job.context.get("experiment")
    if result is None or experiment is None or result.student is None:
        return
    note = stopped_note(result)
    if note:
        st.warning(note)
    if is_text_job(job):
        text_results_ui(result, experiment.config.labeled_fraction)
        explorer_ui(experiment)
        return
    cols = st.columns(3)
    for col, (role, fit) in zip(cols, result.fits.items()):
        acc = fit.summary.get("test_acc")
        col.metric(
            f"{role} test accuracy",
            f"{acc:.3f}" if acc is not None else "n/a",
            help=f"{fit.summary.get('student_params')} parameters",
        )
    verdict_ui(job.context.get("settings"), result)
    explorer_ui(experiment)
    if experiment.data.input_shape == (2,):
        boundary_ui(experiment, result)


def stopped_note(result: Any) -> str | None:
    """What a stopped job's numbers are: models trained part of the way, and no verdict without a baseline."""
    stopped = [role for role, fit in result.fits.items() if fit.status == "stopped"]
    if not stopped:
        return None
    note = f"Stopped before the end: the {' and '.join(stopped)} trained only part of the way, so the numbers below are not final"
    if "baseline" not in result.fits:
        note += "; the scratch baseline did not run, so there is no verdict"
    return note + ". Press Run for a full run."


def text_results_ui(result: Any, labeled_fraction: float = 1.0) -> None:
    """Test bits per character of each model, and whether the student beat its scratch baseline."""
    bpc = {role: fit.summary.get("test_bpc") for role, fit in result.fits.items()}
    for col, (role, value) in zip(st.columns(3), bpc.items()):
        col.metric(
            f"{role} test bits per character",
            f"{value:.3f}" if value is not None else "n/a",
            help=f"{result.fits[role].summary.get('student_params')} parameters; lower is better",
        )
    line = text_verdict(
        bpc.get("student"),
        bpc.get("baseline"),
        labeled_fraction=labeled_fraction,
        teacher_bpc=bpc.get("teacher"),
    )
    if line is not None:
        (st.success if line.startswith("Distillation beat") else st.warning)(line)


def verdict_ui(settings: Settings | None, result: Any) -> None:
    """One line: did the student beat its scratch baseline, and if not, the likely reason."""

    def acc(fit: Any) -> float | None:
        return fit.summary.get("test_acc") if fit is not None else None

    s = settings if isinstance(settings, Settings) else Settings()
    student, scratch = acc(result.student), acc(result.baseline)
    line = kd_verdict(
        student,
        scratch,
        labeled_fraction=s.labeled_fraction,
        teacher_acc=acc(result.teacher),
        extra_unlabeled=s.extra_unlabeled,
        mixup=s.mixup,
    )
    if line is None:
        return
    if student > scratch:
        st.success(line)
        return
    st.warning(line)
    section = readme_section()
    if section:
        with st.expander(f"When distillation does not beat scratch ({README_ANCHOR})"):
            st.markdown(section)


def readme_section(anchor: str = README_ANCHOR) -> str | None:
    """The README section the verdict links to (its text, shown in the page: it works offline)."""
    try:
        text = README.read_text(encoding="utf-8")
    except OSError:
        return None
    slug = anchor.split("#", 1)[1]
    headings = list(re.finditer(r"^(#+) (.+)$", text, flags=re.M))
    for i, h in enumerate(headings):
        if re.sub(r"[^a-z0-9 -]", "", h.group(2).lower()).replace(" ", "-") == slug:  # GitHub's anchors
            end = next((n.start() for n in headings[i + 1 :] if len(n.group(1)) <= len(h.group(1))), len(text))
            return text[h.end() : end].strip()
    return None


def explorer_ui(experiment: Any) -> None:
    """The teacher's softened distribution for one test input (text: the next character after a
    test block) at the sidebar's temperature."""
    st.subheader("Temperature explorer")
    data = experiment.data
    split = data.test if data.test is not None else data.train
    i = st.slider("test block" if is_text(data) else "test input", 0, len(split) - 1, 0, key="explore_input")
    logits = predict_logits(experiment.teacher, split.x[i : i + 1])[0]  # the teacher's device; its mode restored
    T = float(st.session_state.get("temperature", 4.0))
    if T == 1.0:  # (text's default) the same distribution twice: show a softer one beside it
        T = 4.0
    if is_text(data):  # (L, V): the distribution of the character after the block's last one
        names = [repr(c)[1:-1] if not c.isprintable() or c == " " else c for c in data.class_names]
        target = int(split.y[i, -1])
        fig = plots.softmax_figure(logits[-1], [1.0, float(T)], names)
        after = repr(data.class_names[target]) if target >= 0 else "the end of the text"
        fig.update_layout(title=f"teacher's next character at T=1 and T={T} (the text goes on with {after})")
        st.plotly_chart(fig, key="explorer", width="stretch")
        return
    fig = plots.softmax_figure(logits, [1.0, float(T)], data.class_names)
    fig.update_layout(title=f"teacher's softmax at T=1 and T={T} (true class {data.class_names[int(split.y[i])]})")
    st.plotly_chart(fig, key="explorer", width="stretch")


def _predict_classes(model: Any) -> Any:
    """A ``predict(points) -> classes`` for the decision-boundary figure."""
    return lambda points: predict_logits(model, points).argmax(-1).numpy()


def boundary_ui(experiment: Any, result: Any) -> None:
    st.subheader("Decision boundaries")
    data = experiment.data
    x, y = data.test.x.numpy(), data.test.y.numpy()
    figs = [
        plots.decision_boundary_figure(_predict_classes(fit.model), x, y, grid=80)
        for fit in (result.teacher, result.student)
        if fit is not None
    ]
    st.plotly_chart(plots.side_by_side(figs, ["teacher", "student"][: len(figs)]), key="boundaries", width="stretch")
