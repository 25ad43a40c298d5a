"""The Streamlit app: ``streamlit run app.py``. Pages are small ``*_ui()`` functions that draw
widgets and return values; training runs on LiveRun threads held by a server-wide job registry
(``st.cache_resource``), and the page keeps only the job id, in its URL."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from .. import plots
from ..datasets import from_dataframe, list_datasets
from ..events import FitEnd, FitStart, StepEnd
from ..jobs import Job, JobRegistry, TooManyJobs
from ..models import FAMILIES, models_for
from ..settings import DEFAULT_STUDENTS, DEFAULT_TEACHERS, Settings

UPLOAD = "upload a CSV..."
TEMPERATURES = [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0]
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
GENERATED = ("mnist1d", "moons", "spirals")  # datasets that can generate extra unlabeled inputs
TWO_D = ("moons", "spirals")


@st.cache_resource
def registry() -> JobRegistry:
    """One job registry per server: jobs outlive page refreshes and are shared by no one else."""
    return JobRegistry()


@st.cache_data(show_spinner=False)
def _input_shape(dataset: str) -> tuple[int, ...]:
    from ..datasets import load_dataset

    return load_dataset(dataset).input_shape


def main() -> None:
    st.set_page_config(page_title="KD Workbench", page_icon=":material/school:", layout="wide")
    here = Path(__file__).resolve().parent
    pages = [st.Page(str(here / "explore_entry.py"), title="Explore", icon=":material/science:", default=True),
             st.Page(str(here / "compare_entry.py"), title="Compare", icon=":material/leaderboard:")]
    st.navigation(pages).run()


# -- sidebar: what to run ------------------------------------------------------------------------
def data_ui() -> tuple[str, Any, str | None]:
    """Dataset picker; returns (name, uploaded DataSplits or None, error message or None)."""
    name = st.sidebar.selectbox("dataset", [*list_datasets(), UPLOAD], key="dataset")
    if name != UPLOAD:
        return name, None, None
    file = st.sidebar.file_uploader("CSV file (one row per sample)", type=["csv"], key="csv")
    if file is None:
        return name, None, "upload a CSV file to use your own data"
    try:
        df = pd.read_csv(io.BytesIO(file.getvalue()))
    except Exception as e:  # pandas raises many kinds: all mean "not a CSV we can read"
        return name, None, f"{file.name}: not a readable CSV ({type(e).__name__}: {e})"
    if df.shape[1] < 2:
        return name, None, f"{file.name}: needs at least one feature column and a target column"
    target = st.sidebar.selectbox("target column", list(df.columns), index=len(df.columns) - 1, key="target")
    try:
        data = from_dataframe(df, target=target, name=file.name.rsplit(".", 1)[0])
    except ValueError as e:
        return name, None, f"{file.name}: {e}"
    return name, data, None


def model_ui(role: str, default: str, fits: list[str]) -> str:
    """Family + sizes of one model; returns a zoo spec like 'mlp:64,32'."""
    family0, _, sizes0 = default.partition(":")
    family = st.sidebar.selectbox(f"{role} family", fits, index=fits.index(family0) if family0 in fits else 0,
                                  key=f"{role}_family", help=f"families that fit this data (of {', '.join(FAMILIES)})")
    sizes = st.sidebar.text_input(f"{role} sizes", value=sizes0 if family == family0 else "",
                                  key=f"{role}_sizes_{family}", help="widths or channels, e.g. 64,32 (empty: default)")
    return f"{family}:{sizes}" if sizes.strip() else family


def settings_ui(dataset: str, shape: tuple[int, ...]) -> Settings:
    """The sidebar controls; returns Settings (raises ValueError on a bad combination)."""
    fits = models_for(shape)
    teacher = model_ui("teacher", DEFAULT_TEACHERS.get(dataset, "mlp:256,256"), fits)
    student = model_ui("student", DEFAULT_STUDENTS.get(dataset, "mlp:16"), fits)
    sb = st.sidebar
    sb.subheader("Loss")
    temperature = sb.select_slider("temperature T", TEMPERATURES, value=4.0, key="temperature",
                                   help="softens both outputs; changeable during a run")
    mode = sb.radio("weights", ["alpha preset", "each term"], horizontal=True, key="mode")
    weights: dict[str, Any]
    if mode == "alpha preset":
        weights = {"alpha": sb.slider("alpha (CE share)", 0.0, 1.0, 0.5, 0.05, key="alpha",
                                      help="alpha*CE + (1-alpha)*T^2*KL")}
    else:
        weights = {"alpha": None, **{k: sb.slider(k, 0.0, 2.0, v, 0.05, key=k)
                                     for k, v in (("w_ce", 0.5), ("w_kd", 0.5), ("w_mse", 0.0))}}
    sb.subheader("Transfer set")
    labeled = sb.slider("labeled fraction", 0.01, 1.0, 1.0, 0.01, key="labeled_fraction",
                        help="share of train labels the student may use; the teacher labels every input")
    extra = sb.number_input("extra generated inputs", 0, 50_000, 0, 1000, key="extra",
                            disabled=dataset not in GENERATED, help="mnist1d, moons and spirals only")
    mixup = sb.checkbox("mixup the transfer inputs", key="mixup")
    sb.subheader("Optimization")
    epochs = sb.number_input("epochs", 1, 10_000, 20, key="epochs", help="student and baseline")
    teacher_epochs = sb.number_input("teacher epochs", 1, 10_000, 20, key="teacher_epochs",
                                     help="a teacher trained once is cached and reused")
    batch = sb.selectbox("batch size", [16, 32, 64, 128, 256], index=2, key="batch")
    lr = sb.select_slider("learning rate", LEARNING_RATES, value=3e-3, key="lr")
    seed = sb.number_input("seed", 0, 2**31 - 1, 0, key="seed")
    return Settings(dataset=dataset, teacher=teacher, student=student, temperature=float(temperature),
                    labeled_fraction=float(labeled), extra_unlabeled=int(extra) if dataset in GENERATED else 0,
                    mixup=bool(mixup), epochs=int(epochs), teacher_epochs=int(teacher_epochs), batch_size=int(batch), lr=float(lr), seed=int(seed),
                    **weights)


# -- the page ------------------------------------------------------------------------------------
def explore_page() -> None:
    st.title("Knowledge distillation, live")
    st.caption("A teacher's softened outputs teach a small student; a scratch baseline with the same "
               "labels, steps and initial weights shows what distillation adds.")
    reg = registry()
    job = reg.get(st.query_params.get("job"))
    dataset, uploaded, data_error = data_ui()
    settings, error = None, data_error
    if error is None:
        try:
            shape = uploaded.input_shape if uploaded is not None else _input_shape(dataset)
            settings = settings_ui(dataset if uploaded is None else "digits", shape)
        except ValueError as e:
            error = str(e)
    if error:
        st.error(error)
    run, pause, stop = controls_ui(job, can_run=settings is not None)
    if run and settings is not None:
        job = start_job(reg, settings, uploaded)
        if job is not None:
            st.rerun()  # a full rerun carries the new job id into the page URL
    if job is not None:
        if pause:
            job.run.resume() if job.run.status == "paused" else job.run.pause()
        if stop:
            job.run.stop()
        if settings is not None and not job.run.done:
            apply_live_controls(job, settings)
        live_ui(job.job_id)
        if job.run.done:
            results_ui(job)
    if settings is not None:
        with st.expander("Copy as code"):
            st.code(code_for(settings, uploaded), language="python")


def controls_ui(job: Job | None, can_run: bool) -> tuple[bool, bool, bool]:
    """Run / Pause / Stop buttons; returns which was pressed."""
    busy = job is not None and not job.run.done
    a, b, c, _ = st.columns([1, 1, 1, 5])
    run = a.button("Run", type="primary", key="run", disabled=busy or not can_run, icon=":material/play_arrow:")
    label = "Resume" if busy and job.run.status == "paused" else "Pause"
    pause = b.button(label, key="pause", disabled=not busy, icon=":material/pause:")
    stop = c.button("Stop", key="stop", disabled=not busy, icon=":material/stop:")
    return run, pause, stop


def start_job(reg: JobRegistry, settings: Settings, uploaded: Any) -> Job | None:
    """Build the experiment and start it on the registry; the job id goes into the URL."""
    try:
        experiment = settings.experiment(data=uploaded, runs=True)
        job = reg.start(experiment.run, label="distill", settings=settings, experiment=experiment)
    except TooManyJobs as e:
        st.warning(str(e))
        return None
    except (ValueError, RuntimeError) as e:
        st.error(str(e))
        return None
    st.query_params.from_dict({"job": job.job_id})
    return job


def apply_live_controls(job: Job, settings: Settings) -> None:
    """Temperature and weights moved in the sidebar reach the running job's next step."""
    current = job.run.controls.current if job.run.controls is not None else None
    wanted = settings.config().weights
    if current is None or current != wanted:
        try:
            job.run.set_controls(temperature=wanted.temperature, w_ce=wanted.ce, w_kd=wanted.kd,
                                 w_mse=wanted.mse, w_hint=wanted.hint)
        except ValueError as e:
            st.error(str(e))


@st.fragment(run_every=1.0)
def live_ui(job_id: str) -> None:
    """Status, progress and curves of a job, redrawn every second from its event buffer."""
    job = registry().get(job_id)
    if job is None:
        st.info("this job is gone (finished long ago or cleaned up); press Run for a new one")
        return
    events = job.run.buffer.all()
    starts = [p for p in events if isinstance(p, FitStart)]
    steps = [p for p in events if isinstance(p, StepEnd)]
    status = job.run.status
    if starts:
        cur = starts[-1]
        last = next((p for p in reversed(steps) if p.run_id == cur.run_id), None)
        done = last.step if last else 0
        text = f"{cur.role}: step {done}/{cur.steps_planned}" if cur.steps_planned else f"{cur.role}: loaded"
        st.progress(min(done / max(cur.steps_planned, 1), 1.0), text=f"{status} — {text} · job {job_id}")
    else:
        st.progress(0.0, text=f"{status} — preparing data and models · job {job_id}")
    if status == "error":
        st.error(f"the run failed: {job.run.error}")
    for p in events:
        if isinstance(p, FitEnd) and p.status in ("diverged", "error"):
            st.error(f"{p.role} {p.status}: {p.message}")
    history = plots.as_frame(events)
    left, right = st.columns(2)
    left.plotly_chart(plots.accuracy_figure(history), key="accuracy", width="stretch")
    right.plotly_chart(plots.loss_figure(history), key="loss", width="stretch")
    if job.run.done and not st.session_state.get(f"shown-{job_id}"):
        st.session_state[f"shown-{job_id}"] = True
        st.rerun()  # once: draw the results below the live charts


def results_ui(job: Job) -> None:
    """Final numbers, the temperature explorer and (2-D data) decision boundaries."""
    result = job.run.result
    experiment = job.context.get("experiment")
    if result is None or experiment is None or result.student is None:
        return
    cols = st.columns(3)
    for col, (role, fit) in zip(cols, result.fits.items()):
        acc = fit.summary.get("test_acc")
        col.metric(f"{role} test accuracy", f"{acc:.3f}" if acc is not None else "n/a",
                   help=f"{fit.summary.get('student_params')} parameters")
    explorer_ui(experiment)
    if experiment.data.input_shape == (2,):
        boundary_ui(experiment, result)


def explorer_ui(experiment: Any) -> None:
    """The teacher's softened distribution for one test input at the sidebar's temperature."""
    import torch

    st.subheader("Temperature explorer")
    data = experiment.data
    split = data.test if data.test is not None else data.train
    i = st.slider("test input", 0, len(split) - 1, 0, key="explore_input")
    with torch.no_grad():
        from ..evaluation import logits_of
        logits = logits_of(experiment.teacher.eval()(split.x[i:i + 1]))[0]
    T = st.session_state.get("temperature", 4.0)
    fig = plots.softmax_figure(logits, [1.0, float(T)], data.class_names)
    fig.update_layout(title=f"teacher's softmax at T=1 and T={T} (true class {data.class_names[int(split.y[i])]})")
    st.plotly_chart(fig, key="explorer", width="stretch")


def boundary_ui(experiment: Any, result: Any) -> None:
    st.subheader("Decision boundaries")
    data = experiment.data
    x, y = data.test.x.numpy(), data.test.y.numpy()
    figs = [plots.decision_boundary_figure(plots.predictor(fit.model), x, y, grid=80)
            for fit in (result.teacher, result.student) if fit is not None]
    st.plotly_chart(plots.side_by_side(figs, ["teacher", "student"][:len(figs)]), key="boundaries",
                    width="stretch")


def code_for(settings: Settings, uploaded: Any) -> str:
    code = settings.to_code()
    if uploaded is not None:
        target = st.session_state.get("target", "target")
        code = code.replace(f"data = wb.load_dataset('{settings.dataset}', seed={settings.seed})",
                            f"data = wb.from_csv('{uploaded.name}.csv', target={target!r})")
    return code
