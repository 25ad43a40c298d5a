"""Statistics of a sweep's results frame: pure functions of the rows (completed cells only).

Means and spreads per cell, the seed-paired gain of a method over its baseline with a 95%
t-interval, Pareto fronts, and the temperature chosen on validation accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where used: sweep workers never load it
    import pandas as pd

METRICS = ("val_acc", "test_acc", "test_agreement", "val_bpc", "test_bpc", "seconds")
# Two-sided 95% t quantiles t_{0.975, dof} for dof = 1..30.
_T975 = (
    12.7062,
    4.3027,
    3.1824,
    2.7764,
    2.5706,
    2.4469,
    2.3646,
    2.3060,
    2.2622,
    2.2281,
    2.2010,
    2.1788,
    2.1604,
    2.1448,
    2.1314,
    2.1199,
    2.1098,
    2.1009,
    2.0930,
    2.0860,
    2.0796,
    2.0739,
    2.0687,
    2.0639,
    2.0595,
    2.0555,
    2.0518,
    2.0484,
    2.0452,
    2.0423,
)
GAIN_COLUMNS = (
    "student",
    "temperature",
    "params",
    "method",
    "baseline",
    "metric",
    "n",
    "gain",
    "std",
    "ci_low",
    "ci_high",
    "method_mean",
    "baseline_mean",
)


def t_quantile(dof: int) -> float:
    """``t_{0.975}`` with ``dof`` degrees of freedom: the table to 30, then a Cornish-Fisher expansion."""
    if dof < 1:
        raise ValueError(f"dof: {dof!r} is invalid; expected an integer >= 1")
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = 1.959963984540054
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def _completed(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "completed"] if "status" in df else df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (n - 1) and n of each metric per (student, method[, temperature])."""
    df = _completed(df)
    has_t = "temperature" in df and df["temperature"].notna().any()
    keys = ["student", "method"] + (["temperature"] if has_t else [])
    g = df.groupby(keys, dropna=False, sort=False)
    out = g[[c for c in ("params", "macs", "latency_ms") if c in df]].first()
    out["n"] = g.size()
    for m in (m for m in METRICS if m in df and df[m].notna().any()):
        out[f"{m}_mean"], out[f"{m}_std"] = g[m].mean(), g[m].std()
    out = out.reset_index()
    return out.sort_values([c for c in ("params", "method", "temperature") if c in out], kind="stable").reset_index(
        drop=True
    )


def paired_gain(
    df: pd.DataFrame, method: str = "kd", baseline: str = "scratch", metric: str = "test_acc"
) -> pd.DataFrame:
    """Per student (and temperature): mean ``method - baseline`` over the seeds both ran, 95% t-interval."""
    import pandas as pd

    df = _completed(df)
    a, b = df[df["method"] == method], df[df["method"] == baseline]
    for field_name, name, part in (("method", method, a), ("baseline", baseline, b)):
        if part.empty:
            raise ValueError(
                f"{field_name}: no completed rows of {name!r}; methods present: {sorted(df['method'].unique())}"
            )
    both_t = a["temperature"].notna().any() and b["temperature"].notna().any()
    on = ["student", "seed"] + (["temperature"] if both_t else [])
    pairs = a.merge(b[on + [metric]], on=on, suffixes=("", "_base"))  # same seed: same initial weights
    pairs["gain"] = pairs[metric] - pairs[f"{metric}_base"]
    rows = []
    for (student, temp), p in pairs.groupby(["student", "temperature"], dropna=False, sort=False):
        n, mean = len(p), p["gain"].mean()
        std = p["gain"].std() if n > 1 else math.nan
        half = t_quantile(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
        rows.append(
            dict(
                student=student,
                temperature=temp,
                params=p["params"].iloc[0] if "params" in p else None,
                method=method,
                baseline=baseline,
                metric=metric,
                n=n,
                gain=mean,
                std=std,
                ci_low=mean - half,
                ci_high=mean + half,
                method_mean=p[metric].mean(),
                baseline_mean=p[f"{metric}_base"].mean(),
            )
        )
    out = pd.DataFrame(rows, columns=list(GAIN_COLUMNS))
    return out.sort_values(["params", "temperature"], kind="stable").reset_index(drop=True)


def nondominated(xs: Sequence[float], ys: Sequence[float]) -> list[bool]:
    """True for each point no other beats: x as small or smaller and y as large or larger, one strictly."""
    pts = list(zip(xs, ys))
    return [not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for x2, y2 in pts) for x, y in pts]


def pareto_front(df: pd.DataFrame, x: str = "params", y: str = "test_acc") -> pd.DataFrame:
    """The per-cell means (from rows or a ``summarize`` frame) that none beats on lower ``x`` and higher ``y``."""
    summary = df if f"{y}_mean" in df else summarize(df)
    if x not in summary:
        raise ValueError(f"x: {x!r} is not a column; expected 'params', 'macs' or 'latency_ms'")
    keep = nondominated(summary[x].tolist(), summary[f"{y}_mean"].tolist())
    return summary[keep].sort_values(x, kind="stable").reset_index(drop=True)


def best_temperature(df: pd.DataFrame, method: str | None = None) -> pd.DataFrame:
    """Per student (and method) the temperature with the best mean val_acc: chosen on val, never test."""
    df = _completed(df)
    df = df[df["temperature"].notna() & ((df["method"] == method) if method else True)]
    if df.empty:
        raise ValueError(
            "temperature: no completed rows with a temperature" + (f" for method {method!r}" if method else "")
        )
    m = (
        df.groupby(["student", "method", "temperature"])
        .agg(params=("params", "first"), n=("seed", "size"), val_acc=("val_acc", "mean"), test_acc=("test_acc", "mean"))
        .reset_index()
    )
    best = m.loc[m.groupby(["student", "method"])["val_acc"].idxmax()]
    return best.sort_values(["params", "method"], kind="stable").reset_index(drop=True)
