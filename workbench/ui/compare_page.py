"""The app's Compare page: sweeps over student sizes x methods x seeds sharing one teacher, their
charts, and the run store (filter, overlay curves, download).

Tables and images get MLP students and accuracy; the text corpus gets GPT students and bits per
character (lower is better), Pareto front included. The teacher comes from the zoo (trained once,
then cached), from a previous run or from an uploaded model file (both frozen: never retrained),
through the Explore page's pickers (:mod:`workbench.ui.model_pickers`) drawn in the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from ..data.datasets import list_datasets, load_dataset
from ..data.splits import DataSplits
from ..engine.config import DistillConfig
from ..engine.live import EventBuffer
from ..experiment import load_source
from ..sweeps import plots as sweep_plots
from ..sweeps.stats import larger_is_better, main_metric
from ..sweeps.sweep import Sweep, best_temperature, paired_gain, pareto_front, summarize
from .jobs import Job, TooManyJobs
from .model_pickers import (
    FROM_RUN,
    SOURCES,
    ZOO,
    ModelPick,
    builtin_data,
    check_pick,
    check_zoo_spec,
    file_ui,
    md,
    run_ui,
)
from .runs_table import BITS, runs_ui, table_ui
from .settings import DEFAULT_TEACHERS, TEXT_TEACHER, text_datasets

STUDENTS = ["mlp:2", "mlp:4", "mlp:8", "mlp:16", "mlp:32", "mlp:64", "mlp:128"]
# GPT students for text: LAYERS,WIDTH (4 heads). Measured on 2 busy cores, one epoch of the corpus:
# gpt:1,16 9-13 s a fit, gpt:2,32 23-37 s (scratch-kd); the default teacher gpt:2,64 55 s, once.
TEXT_STUDENTS = ["gpt:1,16", "gpt:1,32", "gpt:2,32", "gpt:2,64", "gpt:4,64"]
TEXT_DEFAULT_STUDENTS = ["gpt:1,16", "gpt:1,32", "gpt:2,32"]
TEXT_EPOCHS = 1  # DistillConfig.for_text's: one pass over the corpus per fit
SWEEP_SHOWN = "sw_shown"  # session state: the sweep this page shows (a page switch drops its URL)
TEACHER_KEY = "sw_teacher"  # the prefix of the teacher pickers' widget keys on this page


@dataclass(frozen=True)
class TeacherChoice:
    """The page's dataset and teacher: a zoo spec (empty: the dataset's default), ``run:ID`` or an
    uploaded file's saved path, with the problem found, if any (shown in the page, never raised)."""

    dataset: str
    text: bool
    pick: ModelPick

    @property
    def label(self) -> str:
        """The teacher in words, for the page: 'gpt:2,64 (zoo: trained once, then cached)'."""
        if self.pick.zoo:
            return f"{self.pick.model} (zoo: trained once, then cached)"
        what = self.pick.shown or self.pick.model
        return f"{what} ({'a previous run' if self.pick.source == FROM_RUN else 'an uploaded file'}: frozen, not retrained)"


def default_teacher(dataset: str) -> str:
    """The zoo teacher a dataset starts from (its default, else an MLP; text: a small GPT)."""
    return DEFAULT_TEACHERS.get(dataset, TEXT_TEACHER if dataset in text_datasets() else "mlp:256,256")


def teacher_ui() -> TeacherChoice:
    """Dataset and teacher, outside the form: the teacher's widgets follow its source and the data.
    A previous run or an uploaded file is loaded and checked against the data here."""
    a, b = st.columns(2)
    dataset = a.selectbox(
        "dataset",
        [*list_datasets(), *text_datasets()],
        key="sw_dataset",
        help="tables and images (MLP students, accuracy) or a text corpus (GPT students, bits per character)",
    )
    text = dataset in text_datasets()
    source = b.radio(
        "teacher",
        SOURCES,
        key=f"{TEACHER_KEY}_source",
        horizontal=True,
        help="a zoo model is trained once and cached; a previous run's or a file's model is used as it "
        "is (frozen, never retrained)",
    )
    if source == ZOO:
        spec = b.text_input(
            "teacher spec",
            value="",
            key=TEACHER_KEY,
            placeholder=default_teacher(dataset),
            help="zoo spec, e.g. gpt:2,64 for text, mlp:256,256 or cnn2d:32,64 for tables and images; "
            "empty: the dataset's default teacher",
        )
        return TeacherChoice(dataset, text, ModelPick(spec.strip() or default_teacher(dataset)))
    box = st.container()
    try:
        data = builtin_data(dataset)
        picker = run_ui if source == FROM_RUN else file_ui
        pick = picker("teacher", data, container=box, key_prefix=TEACHER_KEY)
    except ValueError as e:
        return TeacherChoice(dataset, text, ModelPick("", source, error=str(e)))
    if pick.error is None:
        pick = ModelPick(pick.model, pick.source, pick.trusted, pick.shown, check_pick("teacher", pick, data))
    return TeacherChoice(dataset, text, pick)


def sweep_form_ui(choice: TeacherChoice) -> dict[str, Any] | None:
    """The sweep's settings; returns them when Run sweep is pressed."""
    text = choice.text
    with st.form("sweep"):
        a, b = st.columns([1, 3])
        seeds = a.number_input("seeds", 1, 10, 3, key="sw_seeds")
        if text:  # separate widgets: their options and defaults differ
            students = b.multiselect(
                "student sizes",
                TEXT_STUDENTS,
                default=TEXT_DEFAULT_STUDENTS,
                key="sw_text_students",
                accept_new_options=True,
                help="GPT students gpt:LAYERS,WIDTH[,HEADS] (heads default to 4 and must divide the width)",
            )
        else:
            students = b.multiselect(
                "student sizes",
                STUDENTS,
                default=["mlp:4", "mlp:16", "mlp:64"],
                key="sw_students",
                accept_new_options=True,
                help="zoo specs, e.g. mlp:16 or mlp:64,32",
            )
        d, e, f = st.columns(3)
        methods = d.multiselect("methods", ["scratch", "kd", "mse"], default=["scratch", "kd"], key="sw_methods")
        temps = e.multiselect(
            "temperatures (KD)",
            [1.0, 2.0, 4.0, 8.0, 16.0],
            default=[],
            key="sw_temps",
            help=f"empty: the config's T={1 if text else 4}",
        )
        labeled = f.slider(
            "labeled fraction",
            0.01,
            1.0,
            1.0,
            0.01,
            key="sw_labeled",
            help="share of training blocks whose next characters the students' CE sees; KD sees every block"
            if text
            else "share of train labels the students may use; the teacher labels every input",
        )
        if text:
            epochs = st.number_input("epochs per fit", 1, 100, TEXT_EPOCHS, key="sw_text_epochs")
        else:
            epochs = st.number_input("epochs per fit", 1, 1000, 20, key="sw_epochs")
        if not st.form_submit_button("Run sweep", type="primary"):
            return None
    settings = dict(epochs=int(epochs), labeled_fraction=float(labeled))
    return {
        "dataset": choice.dataset,
        "teacher": choice.pick,
        "students": [str(s) for s in students],
        "methods": methods,
        "seeds": int(seeds),
        "temperatures": temps or None,
        "config": DistillConfig.for_text(**settings) if text else DistillConfig(**settings),
    }


def sweep_teacher(pick: ModelPick, data: DataSplits) -> Any:
    """What ``Sweep(teacher=...)`` gets: a checked zoo spec, or the loaded (frozen) module of a run or file."""
    if pick.zoo:
        return check_zoo_spec("teacher", pick.model, data)
    try:
        return load_source(pick.model, data, "teacher", trusted=pick.trusted).module
    except (ValueError, ImportError) as e:
        shown = pick.shown or pick.model
        raise ValueError(str(e).replace(repr(pick.model), repr(shown)).replace(pick.model, shown)) from None


def build_sweep(spec: dict[str, Any]) -> Sweep:
    """The sweep of the form's settings; every problem is a ValueError naming the field and value."""
    pick: ModelPick = spec["teacher"]
    if pick.error:
        raise ValueError(pick.error)
    if not spec["students"]:
        raise ValueError("student sizes: none picked; pick at least one")
    data = load_dataset(spec["dataset"])
    students = [check_zoo_spec("student sizes", s, data) for s in spec["students"]]
    teacher = sweep_teacher(pick, data)
    # A loaded program (.pt2, TorchScript) may not pickle into worker processes: its cells run in-process.
    in_process = {"workers": 1} if not pick.zoo and getattr(teacher, "spec", None) is None else {}
    return Sweep(
        data, teacher, students, spec["methods"], spec["seeds"], spec["temperatures"], spec["config"], **in_process
    )


def start_sweep(reg: Any, spec: dict[str, Any]) -> Job | None:
    """Build the sweep (errors shown in the page) and run it as a job on the registry."""
    try:
        sweep = build_sweep(spec)
    except ValueError as e:
        st.error(md(str(e)))
        return None
    progress = EventBuffer()  # progress dicts {done, total, skipped, row}, appended by the sweep's thread

    def work(run):
        run.on_stop(sweep.stop)
        return sweep.run(on_progress=progress.append)

    try:
        return reg.start(work, label="sweep", sweep=sweep, progress=progress, teacher=spec.get("teacher_label"))
    except TooManyJobs as e:
        st.warning(str(e))
        return None


def sweep_state(job: Job) -> tuple[str, int, bool]:
    """What the page shows of a sweep: its id, fits finished, and whether it has ended."""
    done = job.run.done  # read first: once the job is done, every progress dict is in
    return job.job_id, len(job.context["progress"]), done


def sweep_job(reg: Any, job_id: str) -> Job | None:
    """The sweep job of the page's URL; None (and a note) when it is gone or is not a sweep."""
    job = reg.get(job_id)
    if job is None or job.label != "sweep":
        st.info(
            f"sweep {job_id!r} is not running on this server (finished long ago, or the server restarted); "
            "run a new one"
        )
        return None
    return job


@st.fragment(run_every=1.0)
def sweep_live_ui(reg: Any, job_id: str, drawn: tuple | None) -> None:
    """Progress and partial results of a sweep, redrawn every second. ``drawn``: the sweep's state
    when the whole page was last drawn (a fragment's reruns get the arguments of that drawing);
    once a fit has finished or the sweep has ended since, the whole page is drawn again, so the
    runs on disk below show the new runs and their final status."""
    job = sweep_job(reg, job_id)
    if job is None:
        return
    state = sweep_state(job)
    progress = job.context["progress"].all()
    sweep = job.context["sweep"]
    total = progress[-1]["total"] if progress else len(sweep.cells)
    done = progress[-1]["done"] if progress else 0
    status = job.run.status
    st.progress(done / max(total, 1), text=f"{status} — {done}/{total} fits · sweep {sweep.name}")
    if job.context.get("teacher"):
        st.caption(f"teacher: {md(job.context['teacher'])}")
    if st.button("Stop sweep", key="sw_stop", disabled=job.run.done):
        job.run.stop()
    if state != drawn:  # after the button: a click is handled before the page is drawn again
        st.rerun(scope="app")
    if status == "error":
        st.error(f"the sweep failed: {job.run.error}")
    rows = pd.DataFrame([p["row"] for p in progress])
    if len(rows):
        sweep_results_ui(rows)


def sweep_results_ui(df: pd.DataFrame) -> None:
    """Mean ± std per cell, the main metric (test accuracy; text: bits per character) vs size with
    its Pareto front, the paired KD gain, the temperature heatmap."""
    ok = df[df["status"] == "completed"] if "status" in df else df
    if ok.empty:
        return
    summary = summarize(ok)
    metric = main_metric(ok)
    higher = larger_is_better(metric)
    x = st.radio(
        "size axis", ["params", "latency_ms"], horizontal=True, key="sw_x", format_func=sweep_plots.X_TITLES.get
    )
    st.plotly_chart(sweep_plots.accuracy_vs_size(summary, x=x, y=metric), key="sw_acc", width="stretch")
    direction = "" if higher else ", lower is better"
    st.caption(
        f"Pareto front ({sweep_plots.X_TITLES[x]} vs {sweep_plots.metric_title(metric)}{direction}): "
        + ", ".join(f"{r.student} {r.method}" for r in pareto_front(summary, x=x, y=metric).itertuples())
    )
    methods = set(ok["method"])
    if {"kd", "scratch"} <= methods and ok["seed"].nunique() > 1:
        st.plotly_chart(sweep_plots.gain_figure(paired_gain(ok, metric=metric)), key="sw_gain", width="stretch")
    if ok["temperature"].notna().any() and ok["temperature"].nunique() > 1:
        val = "val" + metric[len("test") :]  # the temperature is chosen on validation, never test
        st.plotly_chart(sweep_plots.temperature_heatmap(ok, metric=val), key="sw_heat", width="stretch")
        table_ui(best_temperature(ok, metric=val), key="sw_best_t")
    if not higher:  # text: bits per character first, token accuracy after
        first = [c for c in summary.columns if not c.endswith(("_mean", "_std"))]
        bits = [c for c in summary.columns if c.startswith(BITS)]
        summary = summary[first + bits + [c for c in summary.columns if c not in first + bits]]
    table_ui(summary, key="sw_summary")


def compare_page(reg: Any) -> None:
    st.title("Compare student sizes")
    st.caption(
        "A sweep over student sizes, methods and seeds sharing one teacher: mean ± std, the paired "
        "KD-vs-scratch gain with its 95% interval, and the Pareto front of accuracy vs size (text: "
        "bits per character, lower is better)."
    )
    choice = teacher_ui()
    if choice.pick.error:
        st.error(md(choice.pick.error))
    spec = sweep_form_ui(choice)
    if spec is not None and not choice.pick.error:  # a teacher's problem is shown above already
        job = start_sweep(reg, {**spec, "teacher_label": choice.label})
        if job is not None:
            st.query_params.from_dict({"sweep": job.job_id})
            st.session_state[SWEEP_SHOWN] = job.job_id
            st.rerun()
    job_id = st.query_params.get("sweep")
    if job_id is None and reg.get(st.session_state.get(SWEEP_SHOWN)) is not None:
        job_id = st.query_params["sweep"] = st.session_state[SWEEP_SHOWN]  # back from another page: its sweep
    if job_id:
        st.session_state[SWEEP_SHOWN] = job_id
        job = reg.get(job_id)
        sweep_live_ui(reg, job_id, sweep_state(job) if job is not None and job.label == "sweep" else None)
    runs_ui()
