"""The app's Compare page: sweeps over student sizes x methods x seeds, their charts, and the
run store (filter, overlay curves, download)."""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
import streamlit as st

from .. import plots, sweep_plots
from ..compare import Sweep, best_temperature, paired_gain, pareto_front, run_histories, summarize
from ..config import DistillConfig
from ..datasets import list_datasets
from ..jobs import Job, TooManyJobs
from ..runs import list_runs
from ..settings import DEFAULT_TEACHERS

STUDENTS = ["mlp:2", "mlp:4", "mlp:8", "mlp:16", "mlp:32", "mlp:64", "mlp:128"]


def sweep_form_ui() -> dict[str, Any] | None:
    """The sweep's settings; returns them when Run sweep is pressed."""
    with st.form("sweep"):
        a, b, c = st.columns(3)
        dataset = a.selectbox("dataset", list_datasets(), key="sw_dataset")
        teacher = b.text_input("teacher", value="", key="sw_teacher",
                               help="zoo spec; empty: the dataset's default teacher")
        seeds = c.number_input("seeds", 1, 10, 3, key="sw_seeds")
        students = st.multiselect("student sizes", STUDENTS, default=["mlp:4", "mlp:16", "mlp:64"],
                                  key="sw_students", accept_new_options=True)
        d, e, f = st.columns(3)
        methods = d.multiselect("methods", ["scratch", "kd", "mse"], default=["scratch", "kd"], key="sw_methods")
        temps = e.multiselect("temperatures (KD)", [1.0, 2.0, 4.0, 8.0, 16.0], default=[], key="sw_temps",
                              help="empty: the config's T=4")
        labeled = f.slider("labeled fraction", 0.01, 1.0, 1.0, 0.01, key="sw_labeled")
        epochs = st.number_input("epochs per fit", 1, 1000, 20, key="sw_epochs")
        if not st.form_submit_button("Run sweep", type="primary"):
            return None
    return {"dataset": dataset, "teacher": teacher.strip() or DEFAULT_TEACHERS.get(dataset, "mlp:256,256"),
            "students": students, "methods": methods, "seeds": int(seeds), "temperatures": temps or None,
            "config": DistillConfig(epochs=int(epochs), labeled_fraction=float(labeled))}


def start_sweep(reg: Any, spec: dict[str, Any]) -> Job | None:
    """Build the sweep (errors shown in the page) and run it as a job on the registry."""
    try:
        sweep = Sweep(spec["dataset"], spec["teacher"], spec["students"], spec["methods"], spec["seeds"],
                      spec["temperatures"], spec["config"])
    except ValueError as e:
        st.error(str(e))
        return None
    progress: list[dict] = []
    lock = threading.Lock()

    def work(run):
        run.on_stop(sweep.stop)
        return sweep.run(on_progress=lambda p: (lock.acquire(), progress.append(p), lock.release()))

    try:
        return reg.start(work, label="sweep", sweep=sweep, progress=progress)
    except TooManyJobs as e:
        st.warning(str(e))
        return None


@st.fragment(run_every=1.0)
def sweep_live_ui(reg: Any, job_id: str) -> None:
    """Progress and partial results of a sweep, redrawn every second."""
    job = reg.get(job_id)
    if job is None:
        st.info("this sweep is gone; run a new one")
        return
    progress = list(job.context["progress"])
    sweep = job.context["sweep"]
    total = progress[-1]["total"] if progress else len(sweep.cells)
    done = progress[-1]["done"] if progress else 0
    status = job.run.status
    st.progress(done / max(total, 1), text=f"{status} — {done}/{total} fits · sweep {sweep.name}")
    if st.button("Stop sweep", key="sw_stop", disabled=job.run.done):
        job.run.stop()
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
    x = st.radio("size axis", ["params", "latency_ms"], horizontal=True, key="sw_x")
    st.plotly_chart(sweep_plots.accuracy_vs_size(summary, x=x), key="sw_acc", width="stretch")
    st.caption(f"Pareto front ({x} vs test accuracy): "
               + ", ".join(f"{r.student} {r.method}" for r in pareto_front(summary, x=x).itertuples()))
    methods = set(ok["method"])
    if {"kd", "scratch"} <= methods and ok["seed"].nunique() > 1:
        st.plotly_chart(sweep_plots.gain_figure(paired_gain(ok)), key="sw_gain", width="stretch")
    if ok["temperature"].notna().any() and ok["temperature"].nunique() > 1:
        st.plotly_chart(sweep_plots.temperature_heatmap(ok), key="sw_heat", width="stretch")
        st.dataframe(best_temperature(ok), hide_index=True)
    st.dataframe(summary, hide_index=True)


def runs_ui() -> None:
    """The run store: filter, overlay curves of selected runs, download the table."""
    st.subheader("Runs on disk")
    df = list_runs()
    if not len(df):
        st.info("no runs yet")
        return
    a, b = st.columns(2)
    roles = a.multiselect("role", sorted(df["role"].dropna().unique()), key="runs_role")
    datasets = b.multiselect("dataset", sorted(df["dataset"].dropna().unique()), key="runs_dataset")
    if roles:
        df = df[df["role"].isin(roles)]
    if datasets:
        df = df[df["dataset"].isin(datasets)]
    cols = [c for c in ("run_id", "role", "status", "dataset", "val_acc", "test_acc", "params", "seconds") if c in df]
    st.dataframe(df[cols], hide_index=True)
    st.download_button("Download the table as CSV", df.to_csv(index=False), "runs.csv", "text/csv", key="runs_csv")
    picked = st.multiselect("overlay the curves of", df["run_id"].tolist()[:200], key="runs_pick")
    if picked:
        smoothing = st.slider("smoothing", 0.0, 0.95, 0.6, 0.05, key="runs_smooth")
        rows = df[df["run_id"].isin(picked)].assign(student=df["run_id"], method=df["role"], seed=0,
                                                    temperature=None)
        histories = run_histories(rows)
        st.plotly_chart(plots.overlay_figure(histories, smoothing=smoothing), key="runs_overlay", width="stretch")


def compare_page(reg: Any) -> None:
    st.title("Compare student sizes")
    st.caption("A sweep over student sizes, methods and seeds sharing one teacher: mean ± std, the paired "
               "KD-vs-scratch gain with its 95% interval, and the Pareto front of accuracy vs size.")
    spec = sweep_form_ui()
    if spec is not None:
        job = start_sweep(reg, spec)
        if job is not None:
            st.query_params.from_dict({"sweep": job.job_id})
            st.rerun()
    job_id = st.query_params.get("sweep")
    if job_id:
        sweep_live_ui(reg, job_id)
    runs_ui()
