"""Plotly figures of a sweep (:mod:`workbench.sweeps.sweep`): pure functions of its DataFrames.

Each metric is drawn in its own direction: the Pareto front of accuracy keeps the highest, that of
bits per character (text sweeps) the lowest; ``main_metric(df)`` says which a sweep is judged by.
Run curves of chosen cells: ``plots.overlay_figure(compare.run_histories(rows))``.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from ..plots import PALETTE, _layout
from .stats import best_temperature, larger_is_better, main_metric, nondominated, summarize

X_TITLES = {"params": "parameters", "macs": "multiply-accumulates per sample", "latency_ms": "latency (ms, batch 1)"}
# Axis titles in words for the metric columns; fractions (accuracies) get percent ticks.
METRIC_TITLES = {
    "test_acc": "test accuracy",
    "val_acc": "validation accuracy",
    "test_agreement": "agreement with the teacher (test)",
    "test_bpc": "test bits per character",
    "val_bpc": "validation bits per character",
    "seconds": "training time (s)",
}
FRACTIONS = ("test_acc", "val_acc", "test_agreement")


def metric_title(metric: str) -> str:
    """A metric column's name in words (an unknown column keeps its name, underscores as spaces)."""
    return METRIC_TITLES.get(metric, metric.replace("_", " "))


def _label(method: str, temperature: float | None) -> str:
    return method if temperature is None else f"{method} T={temperature:g}"


def _by_temperature(rows: pd.DataFrame) -> list[tuple[float | None, pd.DataFrame]]:
    """(temperature or None, rows) in order of appearance; NaN temperatures form one group."""
    temps = rows["temperature"] if "temperature" in rows else pd.Series(math.nan, index=rows.index)
    keys = [None if t != t else float(t) for t in temps.tolist()]
    return [(k, rows[[x == k for x in keys]]) for k in dict.fromkeys(keys)]


def _series(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per method, and per temperature where the method has several."""
    return [
        (_label(method, t), rows)
        for method in dict.fromkeys(summary["method"])
        for t, rows in _by_temperature(summary[summary["method"] == method])
    ]


def accuracy_vs_size(
    summary_df: pd.DataFrame,
    x: str = "params",
    y: str | None = None,
    log_x: bool = True,
    higher_is_better: bool | None = None,
) -> go.Figure:
    """Mean ``y`` vs student size per method, std error bars, and the Pareto front as a dashed line
    (the best ``y`` for the size: highest accuracy, lowest bits per character; see ``pareto_front``).
    ``y=None``: the sweep's main metric (test accuracy; text: test bits per character)."""
    y = main_metric(summary_df) if y is None else y
    higher = larger_is_better(y, higher_is_better)
    s = summary_df if f"{y}_mean" in summary_df else summarize(summary_df)
    if x not in s:
        raise ValueError(f"x: {x!r} is not a column; expected one of {', '.join(X_TITLES)}")
    if f"{y}_mean" not in s:
        raise ValueError(
            f"y: {y!r} has no values in these rows; expected a metric of the sweep, e.g. {main_metric(s)!r}"
        )
    fig = go.Figure()
    for i, (label, rows) in enumerate(_series(s)):
        rows = rows.sort_values(x)
        fig.add_trace(
            go.Scatter(
                x=rows[x].tolist(),
                y=rows[f"{y}_mean"].tolist(),
                name=label,
                mode="lines+markers",
                error_y=dict(type="data", array=rows[f"{y}_std"].fillna(0).tolist(), visible=True),
                line=dict(color=PALETTE[i % len(PALETTE)]),
                text=rows["student"].tolist(),
                hovertemplate="%{text}<br>%{x}<br>%{y:"
                + (".1%" if y in FRACTIONS else ".4g")
                + "}<extra>"
                + label
                + "</extra>",
            )
        )
    front = s[nondominated(s[x].tolist(), s[f"{y}_mean"].tolist(), higher)].sort_values(x)
    fig.add_trace(
        go.Scatter(
            x=front[x].tolist(),
            y=front[f"{y}_mean"].tolist(),
            name="Pareto front",
            mode="lines",
            line=dict(color="black", dash="dash", width=1),
            hoverinfo="skip",
        )
    )
    direction = "" if higher else " (lower is better)"
    _layout(
        fig,
        f"{metric_title(y)} vs student size (mean ± std over seeds)",
        X_TITLES.get(x, x),
        metric_title(y) + direction,
        f"sweep-size-{x}-{y}",
    )
    if y in FRACTIONS:
        fig.update_yaxes(tickformat=".0%")
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def _has_direction(metric: str) -> bool:
    """Whether ``stats.larger_is_better`` knows which way ``metric`` improves."""
    try:
        larger_is_better(metric)
    except ValueError:
        return False
    return True


def _lower_is_better(metric: str) -> bool:
    """True for quality metrics that improve downwards (bits per character, loss, KL); a time or a
    column of the user's own is drawn as a gain."""
    return metric != "seconds" and _has_direction(metric) and not larger_is_better(metric)


def gain_figure(gain_df: pd.DataFrame) -> go.Figure:
    """Bars of the mean paired gain per student with 95% confidence intervals (``sweep_stats.paired_gain``)."""
    first = gain_df.iloc[0] if len(gain_df) else {}
    metric, method = first.get("metric", "test_acc"), first.get("method", "kd")
    fraction = metric in FRACTIONS
    fig = go.Figure()
    for i, (t, rows) in enumerate(_by_temperature(gain_df)):
        label = _label(f"{rows['method'].iloc[0]} - {rows['baseline'].iloc[0]}", t)
        fig.add_trace(
            go.Bar(
                x=rows["student"].tolist(),
                y=rows["gain"].tolist(),
                name=label,
                marker_color=PALETTE[i % len(PALETTE)],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    visible=True,
                    array=(rows["ci_high"] - rows["gain"]).fillna(0).tolist(),
                    arrayminus=(rows["gain"] - rows["ci_low"]).fillna(0).tolist(),
                ),
                customdata=rows["n"].tolist(),
                hovertemplate="%{x}: %{y:"
                + ("+.1%" if fraction else "+.4g")
                + "} (n=%{customdata})<extra>"
                + label
                + "</extra>",
            )
        )
    fig.add_hline(y=0, line=dict(color="gray", width=1))
    baseline = first.get("baseline", "scratch")
    unit = ", points" if fraction else ""  # a difference of two fractions: percentage points
    if _lower_is_better(metric):  # bits per character: a gain is a drop, so the bars show the difference
        name = "KD" if method == "kd" else str(method)
        title = f"{name} - {baseline} in {metric_title(metric)} (mean, 95% CI over seeds; below 0: {name} better)"
        y_title = f"{name} - {baseline} ({metric_title(metric)})"
    else:
        gain = "KD gain" if method == "kd" else f"{method} gain"
        title = f"{gain} over {baseline} in {metric_title(metric)} (mean, 95% CI over seeds)"
        y_title = f"{gain} ({metric_title(metric)}{unit})"
    _layout(fig, title, "student", y_title, "sweep-gain")
    fig.update_layout(barmode="group")
    if fraction:
        fig.update_yaxes(tickformat="+.1%")
    return fig


def temperature_heatmap(df: pd.DataFrame, method: str | None = None, metric: str | None = None) -> go.Figure:
    """Mean ``metric`` per temperature x student (None: val_acc; text: val_bpc); with a validation
    metric the best T per student is marked (highest accuracy, lowest bits per character)."""
    metric = metric or ("val_bpc" if main_metric(df) == "test_bpc" else "val_acc")
    d = df[df["temperature"].notna()]
    d = d[d["status"] == "completed"] if "status" in d else d
    methods = list(dict.fromkeys(d["method"]))
    if not methods:
        raise ValueError("df: no rows with a temperature; run a sweep with temperatures=[...]")
    method = method or ("kd" if "kd" in methods else methods[0])
    d = d[d["method"] == method]
    students = d.groupby("student")["params"].first().sort_values().index.tolist()
    grid = d.pivot_table(index="temperature", columns="student", values=metric, aggfunc="mean")[students]
    ticks, hover = (".0%", ".1%") if metric in FRACTIONS else (None, ".4g")
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy().tolist(),
            x=students,
            y=[f"{t:g}" for t in grid.index],
            colorscale="Viridis",
            colorbar=dict(title=metric_title(metric), tickformat=ticks),
            hovertemplate="%{x}, T=%{y}: %{z:" + hover + "}<extra></extra>",
        )
    )
    if metric.startswith("val_") and _has_direction(metric):
        best = best_temperature(d, method, metric)
        star = dict(symbol="star", size=14, color="white", line=dict(color="black", width=1))
        fig.add_trace(
            go.Scatter(
                x=best["student"].tolist(),
                y=[f"{t:g}" for t in best["temperature"]],
                mode="markers",
                name="best T (val)",
                marker=star,
            )
        )
    _layout(
        fig,
        f"{method}: mean {metric_title(metric)} by temperature and student",
        "student",
        "temperature",
        f"sweep-temperature-{method}-{metric}",
    )
    fig.update_yaxes(type="category")
    return fig


def error_bars(stds: list[float]) -> dict:
    """Plotly error bars from standard deviations (none drawn where one seed gives no std)."""
    return dict(type="data", array=[0.0 if math.isnan(s) else s for s in stds])


def mean_curve(x: list, means: list[float], stds: list[float], x_title: str, y_title: str) -> go.Figure:
    """Means with error bars along ``x`` (e.g. accuracy vs transfer-set size)."""
    fig = go.Figure(go.Scatter(x=x, y=means, mode="lines+markers", error_y=error_bars(stds)))
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title, template="plotly_white")
    return fig


def bars_with_lines(
    bars: list[tuple[str, float, float]], y_title: str, lines: list[tuple[str, float]] = ()
) -> go.Figure:
    """Bars (name, mean, std) with error bars, and labeled horizontal reference lines."""
    fig = go.Figure(go.Bar(x=[b[0] for b in bars], y=[b[1] for b in bars], error_y=error_bars([b[2] for b in bars])))
    for name, y in lines:
        fig.add_hline(y=y, line=dict(dash="dot", color="gray"), annotation_text=name)
    fig.update_layout(yaxis_title=y_title, template="plotly_white")
    return fig
