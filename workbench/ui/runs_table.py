"""The run store as tables: every run on disk (filter, overlay curves, download), and the table
view the Compare page's results share (columns in words, fractions in percent)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from .. import plots
from ..store.runs import list_runs, read_metrics, runs_root

# Table columns in words; fractions (accuracies, gains) are shown in percent with one decimal.
LABELS = {
    "run_id": "run",
    "val_acc": "val accuracy",
    "test_acc": "test accuracy",
    "test_agreement": "agreement with teacher",
    "val_bpc": "val bits per character",
    "test_bpc": "test bits per character",
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
BITS = ("val_bpc", "test_bpc")  # bits per character: three decimals


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
        elif base in BITS:
            config[col] = st.column_config.NumberColumn(column_label(col), format="%.3f")
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
    shown = ("run_id", "role", "status", "dataset", "val_bpc", "test_bpc", "val_acc", "test_acc", "params", "seconds")
    cols = [c for c in shown if c in df and (c not in BITS or df[c].notna().any())]
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
