"""Statistics of a sweep's results frame: pure functions of the rows (completed cells only).

Means and spreads per cell, the seed-paired gain of a method over its baseline with a 95%
t-interval, Pareto fronts (each metric in its own direction: accuracy up, bits per character
down), and the temperature chosen on a validation metric.
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


# Which way each metric improves: the part after a split prefix (train_, val_, test_) decides.
HIGHER_IS_BETTER = {"acc": True, "agreement": True, "bpc": False, "loss": False, "kl": False, "seconds": False}
_SPLITS = ("train_", "val_", "test_")


def larger_is_better(metric: str, override: bool | None = None, field: str = "y") -> bool:
    """Whether larger values of ``metric`` are better (accuracy, agreement) or smaller (bits per
    character, loss, KL, seconds); ``override`` (True/False) decides for any other column. Errors
    name ``field``, the argument that gave the metric."""
    if override is not None:
        if not isinstance(override, bool):
            raise ValueError(f"higher_is_better: {override!r} is invalid; expected True, False or None")
        return override
    base = metric
    for prefix in _SPLITS:
        if isinstance(metric, str) and metric.startswith(prefix):
            base = metric[len(prefix) :]
    if base not in HIGHER_IS_BETTER:
        known = [f"{p}{b}" for b in HIGHER_IS_BETTER for p in (("",) if b == "seconds" else ("val_", "test_"))]
        raise ValueError(
            f"{field}: {metric!r} has no known direction; expected one of {', '.join(known)} "
            "(any split prefix train_/val_/test_), or pass higher_is_better=True or False"
        )
    return HIGHER_IS_BETTER[base]


def nondominated(xs: Sequence[float], ys: Sequence[float], higher_is_better: bool = True) -> list[bool]:
    """True for each point no other beats: x as small or smaller and y as good or better, one strictly.

    "Better" y is larger when ``higher_is_better`` (accuracy), smaller otherwise (bits per character).
    Equal points do not beat each other (both stay); a point with a NaN coordinate is never on the front.
    """
    sign = 1.0 if higher_is_better else -1.0
    pts = [(float(x), sign * float(y)) for x, y in zip(xs, ys)]
    ok = [not (math.isnan(x) or math.isnan(y)) for x, y in pts]
    valid = [p for p, good in zip(pts, ok) if good]
    return [
        good and not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for x2, y2 in valid)
        for (x, y), good in zip(pts, ok)
    ]


def pareto_front(
    df: pd.DataFrame, x: str = "params", y: str = "test_acc", higher_is_better: bool | None = None
) -> pd.DataFrame:
    """The per-cell means (from rows or a ``summarize`` frame) that none beats on lower ``x`` and a
    better ``y``: higher for accuracy and agreement, lower for bits per character, loss and seconds
    (``higher_is_better`` overrides the direction, and is needed for other columns)."""
    higher = larger_is_better(y, higher_is_better)
    summary = df if f"{y}_mean" in df else summarize(df)
    if x not in summary:
        raise ValueError(f"x: {x!r} is not a column; expected 'params', 'macs' or 'latency_ms'")
    if f"{y}_mean" not in summary:
        have = [c[: -len("_mean")] for c in summary.columns if c.endswith("_mean")]
        raise ValueError(f"y: {y!r} has no values in these rows; metrics with values: {', '.join(have) or 'none'}")
    keep = nondominated(summary[x].tolist(), summary[f"{y}_mean"].tolist(), higher)
    return summary[keep].sort_values(x, kind="stable").reset_index(drop=True)


def main_metric(df: pd.DataFrame) -> str:
    """The metric a sweep is judged by: test bits per character for text, else test accuracy."""
    for col in ("test_bpc", "test_bpc_mean"):
        if col in df and df[col].notna().any():
            return "test_bpc"
    return "test_acc"


def best_temperature(df: pd.DataFrame, method: str | None = None, metric: str = "val_acc") -> pd.DataFrame:
    """Per student (and method) the temperature with the best mean ``metric`` (highest val_acc, or
    lowest val_bpc for text): chosen on a validation metric, never on test."""
    if not (isinstance(metric, str) and metric.startswith("val_")):
        raise ValueError(f"metric: {metric!r} is invalid; expected a validation metric such as 'val_acc' or 'val_bpc'")
    higher = larger_is_better(metric, field="metric")
    df = _completed(df)
    df = df[df["temperature"].notna() & ((df["method"] == method) if method else True)]
    if df.empty:
        raise ValueError(
            "temperature: no completed rows with a temperature" + (f" for method {method!r}" if method else "")
        )
    if metric not in df or df[metric].isna().all():
        raise ValueError(f"metric: {metric!r} has no values in these rows")
    test = "test" + metric[len("val") :]
    values = {metric: (metric, "mean")}
    if test in df and test != metric:
        values[test] = (test, "mean")
    m = (
        df.groupby(["student", "method", "temperature"])
        .agg(params=("params", "first"), n=("seed", "size"), **values)
        .reset_index()
    )
    pick = m.groupby(["student", "method"])[metric]
    best = m.loc[pick.idxmax() if higher else pick.idxmin()]
    return best.sort_values(["params", "method"], kind="stable").reset_index(drop=True)
