"""The app's Compare page: sweeps over student sizes x methods x seeds, their charts, and the
run store (filter, overlay curves, download)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from .. import plots
from ..data.datasets import list_datasets
from ..engine.config import DistillConfig
from ..engine.live import EventBuffer
from ..store.runs import list_runs, read_metrics, runs_root
from ..sweeps import plots as sweep_plots
from ..sweeps.sweep import Sweep, best_temperature, paired_gain, pareto_front, summarize
from .jobs import Job, TooManyJobs
from .settings import DEFAULT_TEACHERS

STUDENTS = ["mlp:2", "mlp:4", "mlp:8", "mlp:16", "mlp:32", "mlp:64", "mlp:128"]
# Table columns in words; fractions (accuracies, gains) are shown in percent with one decimal.
LABELS = {
    "run_id": "run",
    "val_acc": "val accuracy",
    "test_acc": "test accuracy",
    "test_agreement": "agreement with teacher",
    "params": "parameters",
    "macs": "multiply-accumulates",
    "latency_ms": "latency (ms)",
    "seconds": "seconds",
    "n": "seeds",
    "temperature": "T",
    "gain": "gain (points)",
    "ci_low": "95% CI low",
    "ci_high": "95% CI high",
}
FRACTIONS = ("val_acc", "test_acc", "test_agreement", "gain", "ci_low", "ci_high", "method_mean", "baseline_mean")
COUNTS = ("params", "macs", "n")


def sweep_form_ui() -> dict[str, Any] | None:
    """The sweep's settings; returns them when Run sweep is pressed."""
    with st.form("sweep"):
        a, b, c = st.columns(3)
        dataset = a.selectbox("dataset", list_datasets(), key="sw_dataset")
        teacher = b.text_input(
            "teacher", value="", key="sw_teacher", help="zoo spec; empty: the dataset's default teacher"
        )
        seeds = c.number_input("seeds", 1, 10, 3, key="sw_seeds")
        students = st.multiselect(
            "student sizes", STUDENTS, default=["mlp:4", "mlp:16", "mlp:64"], key="sw_students", accept_new_options=True
        )
        d, e, f = st.columns(3)
        methods = d.multiselect("methods", ["scratch", "kd", "mse"], default=["scratch", "kd"], key="sw_methods")
        temps = e.multiselect(
            "temperatures (KD)", [1.0, 2.0, 4.0, 8.0, 16.0], default=[], key="sw_temps", help="empty: the config's T=4"
        )
        labeled = f.slider("labeled fraction", 0.01, 1.0, 1.0, 0.01, key="sw_labeled")
        epochs = st.number_input("epochs per fit", 1, 1000, 20, key="sw_epochs")
        if not st.form_submit_button("Run sweep", type="primary"):
            return None
    return {
        "dataset": dataset,
        "teacher": teacher.strip() or DEFAULT_TEACHERS.get(dataset, "mlp:256,256"),
        "students": students,
        "methods": methods,
        "seeds": int(seeds),
        "temperatures": temps or None,
        "config": DistillConfig(epochs=int(epochs), labeled_fraction=float(labeled)),
    }


def start_sweep(reg: Any, spec: dict[str, Any]) -> Job | None:
    """Build the sweep (errors shown in the page) and run it as a job on the registry."""
    try:
        sweep = Sweep(
            spec["dataset"],
            spec["teacher"],
            spec["students"],
            spec["methods"],
            spec["seeds"],
            spec["temperatures"],
            spec["config"],
        )
    except ValueError as e:
        st.error(str(e))
        return None
    progress = EventBuffer()  # progress dicts {done, total, skipped, row}, appended by the sweep's thread

    def work(run):
        run.on_stop(sweep.stop)
        return sweep.run(on_progress=progress.append)

    try:
        return reg.start(work, label="sweep", sweep=sweep, progress=progress)
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
    """Mean ± std per cell, accuracy vs size with the Pareto front, KD gain, temperature heatmap."""
    ok = df[df["status"] == "completed"] if "status" in df else df
    if ok.empty:
        return
    summary = summarize(ok)
    x = st.radio(
        "size axis", ["params", "latency_ms"], horizontal=True, key="sw_x", format_func=sweep_plots.X_TITLES.get
    )
    st.plotly_chart(sweep_plots.accuracy_vs_size(summary, x=x), key="sw_acc", width="stretch")
    st.caption(
        f"Pareto front ({sweep_plots.X_TITLES[x]} vs test accuracy): "
        + ", ".join(f"{r.student} {r.method}" for r in pareto_front(summary, x=x).itertuples())
    )
    methods = set(ok["method"])
    if {"kd", "scratch"} <= methods and ok["seed"].nunique() > 1:
        st.plotly_chart(sweep_plots.gain_figure(paired_gain(ok)), key="sw_gain", width="stretch")
    if ok["temperature"].notna().any() and ok["temperature"].nunique() > 1:
        st.plotly_chart(sweep_plots.temperature_heatmap(ok), key="sw_heat", width="stretch")
        table_ui(best_temperature(ok), key="sw_best_t")
    table_ui(summary, key="sw_summary")


def column_label(column: str) -> str:
    """A table column in words: ``test_acc_mean`` -> "test accuracy (mean)"."""
    base, stat = column, ""
    for suffix in ("_mean", "_std"):
        if column.endswith(suffix) and column not in LABELS:
            base, stat = column[: -len(suffix)], f" ({suffix[1:]})"
    return LABELS.get(base, base.replace("_", " ")) + stat


def table_ui(df: pd.DataFrame, key: str) -> None:
    """A table that fills the page's width: columns named in words, fractions in percent with one
    decimal, counts with thousands separators. The numbers given are not changed (only their view)."""
    shown, config = df.copy(), {}
    for col in df.columns:
        base = col.rsplit("_", 1)[0] if col.endswith(("_mean", "_std")) and col not in LABELS else col
        if base in FRACTIONS:  # a store may hold junk: what is not a number shows as empty
            shown[col] = pd.to_numeric(df[col], errors="coerce") * 100
            config[col] = st.column_config.NumberColumn(column_label(col), format="%.1f%%")
        elif base in COUNTS:
            config[col] = st.column_config.NumberColumn(column_label(col), format="%,d")
        elif base in ("latency_ms", "seconds"):
            config[col] = st.column_config.NumberColumn(column_label(col), format="%.2f")
        else:
            config[col] = st.column_config.Column(column_label(col))
    st.dataframe(shown, hide_index=True, width="stretch", column_config=config, key=key)


def runs_ui() -> None:
    """The run store: filter, overlay curves of selected runs, download the table."""
    st.subheader("Runs on disk")
    root = runs_root()
    try:
        df = list_runs()
    except Exception as e:  # a runs folder written by hand or by another version: say so, keep the page
        st.error(f"runs folder {str(root)!r} could not be read ({type(e).__name__}: {e})")
        return
    if not len(df):
        st.info(f"no runs yet in {str(root)!r}")
        return
    counts = df["status"].value_counts()
    st.caption(f"{len(df)} runs in {str(root)!r}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    a, b = st.columns(2)
    roles = a.multiselect("role", sorted(df["role"].dropna().astype(str).unique()), key="runs_role")
    datasets = b.multiselect("dataset", sorted(df["dataset"].dropna().astype(str).unique()), key="runs_dataset")
    if roles:
        df = df[df["role"].isin(roles)]
    if datasets:
        df = df[df["dataset"].isin(datasets)]
    cols = [c for c in ("run_id", "role", "status", "dataset", "val_acc", "test_acc", "params", "seconds") if c in df]
    table_ui(df[cols], key="runs_table")
    st.download_button("Download the table as CSV", df.to_csv(index=False), "runs.csv", "text/csv", key="runs_csv")
    picked = st.multiselect("overlay the curves of", df["run_id"].tolist()[:200], key="runs_pick")
    if picked:
        smoothing = st.slider("smoothing", 0.0, 0.95, 0.6, 0.05, key="runs_smooth")
        roles_of = dict(zip(df["run_id"], df["role"]))
        histories = {
            f"{run_id} ({roles_of.get(run_id)})": h for run_id in picked if (h := run_history(run_id)) is not None
        }
        if histories:
            st.plotly_chart(plots.overlay_figure(histories, smoothing=smoothing), key="runs_overlay", width="stretch")


def run_history(run_id: str) -> pd.DataFrame | None:
    """One run's history for the overlay; a run that cannot be read gets a warning, not a dead page."""
    try:
        return read_metrics(runs_root() / run_id)
    except Exception as e:  # files on disk are outside the app's control (cut off, hand-edited)
        st.warning(f"run {run_id!r}: its curves could not be read ({type(e).__name__}: {e})")
        return None


def compare_page(reg: Any) -> None:
    st.title("Compare student sizes")
    st.caption(
        "A sweep over student sizes, methods and seeds sharing one teacher: mean ± std, the paired "
        "KD-vs-scratch gain with its 95% interval, and the Pareto front of accuracy vs size."
    )
    spec = sweep_form_ui()
    if spec is not None:
        job = start_sweep(reg, spec)
        if job is not None:
            st.query_params.from_dict({"sweep": job.job_id})
            st.rerun()
    job_id = st.query_params.get("sweep")
    if job_id:
        job = reg.get(job_id)
        sweep_live_ui(reg, job_id, sweep_state(job) if job is not None and job.label == "sweep" else None)
    runs_ui()
