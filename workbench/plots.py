"""Plotly figure builders: pure functions of run histories (DataFrames or payload lists).

Builders draw the last run of each role in a history. ``*_traces`` give the same x/y by trace
name, so a live widget assigns them into the existing traces of a figure built at step 0
(:func:`apply_traces`, one ``batch_update``): figures always hold all their named traces.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative
from plotly.subplots import make_subplots

HistoryLike = Any  # a DataFrame, a History, an iterable of payloads / flat dicts, or None
Traces = dict[str, tuple[list, list]]
ACCURACY_TRACES = ("student", "baseline", "teacher", "teacher training", "controls changed")
LOSS_TERMS = ("ce", "kd", "mse", "hint")
EVAL_METRICS = ("acc", "loss", "teacher_acc", "agreement", "kl")
PALETTE = qualitative.Plotly
EVENTS = ("step", "eval", "epoch")


# -- inputs ------------------------------------------------------------------------------------
def as_frame(history: HistoryLike) -> pd.DataFrame:
    """A history frame from a DataFrame, a History (anything with ``frame()``), or payloads / flat
    dicts (step, eval, epoch rows). Duck-typed: figure builders never import the engine."""
    if history is None:
        return pd.DataFrame()
    if isinstance(history, pd.DataFrame):
        return history
    if callable(getattr(history, "frame", None)):
        return history.frame()
    rows = []
    for p in history:  # fit_start / fit_end (e.g. from a LiveRun buffer) are not curve points
        row = p.to_dict() if hasattr(p, "to_dict") else dict(p)
        for name, v in (row.pop("terms", None) or {}).items():
            row[f"loss_{name}"] = v
        if row.get("event") in EVENTS:
            rows.append(row)
    return pd.DataFrame(rows)


def _last_run(df: pd.DataFrame, role: str) -> pd.DataFrame:
    """Rows of the last run (by order of appearance) with this role."""
    if "role" not in df:
        return df.iloc[0:0]
    rows = df[df["role"] == role]
    if rows.empty or "run_id" not in rows:
        return rows
    return rows[rows["run_id"] == rows["run_id"].iloc[-1]]


def _rows(df: pd.DataFrame, event: str, split: str | None = None) -> pd.DataFrame:
    if "event" not in df:
        return df.iloc[0:0]
    out = df[df["event"] == event]
    if split is not None:
        out = out[out["split"] == split] if "split" in out else out.iloc[0:0]
    return out


def _xy(rows: pd.DataFrame, column: str, max_points: int) -> tuple[list, list]:
    """Steps and values of one column (missing values dropped), downsampled."""
    if column not in rows or "step" not in rows:
        return [], []
    r = rows[["step", column]].dropna()
    return downsample(r["step"].astype(int).tolist(), r[column].astype(float).tolist(), max_points)


def downsample(x: Sequence, y: Sequence, max_points: int = 2000) -> tuple[list, list]:
    """At most ``max_points`` points: first, last, and the min and max of each bucket between."""
    if max_points < 4:
        raise ValueError(f"max_points: {max_points!r} is too small; expected an integer >= 4")
    x, y = list(x), list(y)
    n = len(y)
    if n <= max_points:
        return x, y
    values = np.asarray(y, dtype=float)
    low, high = np.where(np.isnan(values), np.inf, values), np.where(np.isnan(values), -np.inf, values)
    edges = np.linspace(1, n - 1, (max_points - 2) // 2 + 1).astype(int)  # buckets of the interior
    keep = {0, n - 1}
    for a, b in zip(edges[:-1], edges[1:]):
        if b > a:  # the min and max keep spikes (a diverging loss) visible
            keep.update((a + int(np.argmin(low[a:b])), a + int(np.argmax(high[a:b]))))
    idx = sorted(keep)
    return [x[i] for i in idx], [y[i] for i in idx]


def apply_traces(fig: go.Figure, traces: Traces, text: Mapping[str, list] | None = None) -> None:
    """Assign x/y (and hover text) into the traces of ``fig`` with those names, in one batch."""
    with fig.batch_update():
        for trace in fig.data:
            if trace.name in traces:
                x, y = traces[trace.name]
                trace.x, trace.y, trace.showlegend = numeric(x), numeric(y), bool(len(x))  # reads see old values here
            if text and trace.name in text:
                trace.hovertext = text[trace.name]


@functools.cache
def _white() -> go.layout.Template:
    """plotly_white's layout with its line and bar defaults: the whole template (defaults for every trace
    type) took ~15 ms to validate per figure, most of a live redraw; these figures draw lines and bars."""
    white = pio.templates["plotly_white"]
    return go.layout.Template(layout=white.layout, data={"scatter": white.data.scatter, "bar": white.data.bar})


def _layout(fig: go.Figure, title: str, x: str, y: str, name: str, y_range: list | None = None) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        uirevision=name,
        showlegend=True,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
        margin=dict(l=50, r=20, t=60, b=40),
        template=_white(),
    )
    if y_range is not None:
        fig.update_yaxes(range=y_range)
    return fig


def numeric(values: Any) -> Any:
    """``values`` as a 1-D numpy array when they are all numbers, else as given (e.g. ``None`` gaps).

    Plotly validates an array at once and sends it as a typed array (base64): a 6-trace chart of 1,000
    points each was ~3x cheaper to build and serialise than from lists (live views redraw it every second).
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        return values
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):
        return values
    return array if array.ndim == 1 and array.dtype.kind in "iuf" else values


def _line(name: str, xy: tuple[list, list], mode: str = "lines+markers", **style: Any) -> go.Scatter:
    x, y = numeric(xy[0]), numeric(xy[1])
    return go.Scatter(x=x, y=y, name=name, mode=mode, showlegend=bool(len(xy[0])), **style)


# -- accuracy ----------------------------------------------------------------------------------
def teacher_accuracy(history: HistoryLike, split: str = "val") -> float | None:
    """The teacher's ``split`` accuracy: the student's ``teacher_acc``, else the teacher run's last eval."""
    df = as_frame(history)
    student = _rows(_last_run(df, "student"), "eval", split)
    if "teacher_acc" in student and student["teacher_acc"].notna().any():
        return float(student["teacher_acc"].dropna().iloc[-1])
    teacher = _rows(_last_run(df, "teacher"), "eval", split)
    if "acc" in teacher and teacher["acc"].notna().any():
        return float(teacher["acc"].dropna().iloc[-1])
    return None


# Live-control changes this close in time and in steps (a share of the run's logged steps) draw one mark:
# a burst, such as a slider moved key by key; changes a script makes a few steps apart keep a mark each.
MARK_SECONDS, MARK_SHARE = 2.0, 0.05


def controls_markers(history: HistoryLike, role: str = "student") -> tuple[list, list, list[str]]:
    """Vertical segments (x, y in [0, 1], hover text) at the steps that first used new live controls.

    A burst of changes (each within MARK_SECONDS and MARK_SHARE of the run's logged steps of the one
    before, e.g. a slider moved by several arrow-key presses) is one mark, at its last change, with its
    values."""
    steps = _rows(_last_run(as_frame(history), role), "step")
    if "controls_changed" not in steps:
        return [], [], []
    rows = steps[steps["controls_changed"].eq(True)].to_dict("records")
    window = MARK_SHARE * float(steps["step"].max()) if rows else 0.0
    bursts: list[list[dict]] = []
    for r in rows:
        last = bursts[-1][-1] if bursts else None
        if (
            last is not None
            and r["step"] - last["step"] <= window
            and abs(float(r.get("seconds", 0.0)) - float(last.get("seconds", 0.0))) <= MARK_SECONDS
        ):
            bursts[-1].append(r)
        else:
            bursts.append([r])
    x, y, text = [], [], []
    for burst in bursts:
        r = burst[-1]
        label = (
            f"step {int(r['step'])}: T={r['temperature']:g}, w_ce={r['w_ce']:g}, w_kd={r['w_kd']:g}, "
            f"w_mse={r['w_mse']:g}, w_hint={r['w_hint']:g}"
        )
        if isinstance(r.get("divergence"), str):  # the KD divergence is a live control too
            label += f", divergence={r['divergence']}" + (f" (beta={r['beta']:g})" if r["divergence"] == "jsd" else "")
        if len(burst) > 1:
            label += f" ({len(burst)} changes from step {int(burst[0]['step'])})"
        x += [int(r["step"]), int(r["step"]), None]
        y += [0.0, 1.0, None]
        text += [label, label, ""]
    return x, y, text


def accuracy_traces(history: HistoryLike, split: str = "val", max_points: int = 2000) -> Traces:
    """x/y by trace name for :func:`accuracy_figure` (see :data:`ACCURACY_TRACES`).

    Until the student or the baseline has an eval, "teacher training" is the teacher run's own
    curve (a teacher training live is worth watching); after that the dashed "teacher" line
    alone stands for it, since the runs' steps do not share an axis.
    """
    df = as_frame(history)
    out = {role: _xy(_rows(_last_run(df, role), "eval", split), "acc", max_points) for role in ("student", "baseline")}
    steps = out["student"][0] + out["baseline"][0]
    teacher_run = _xy(_rows(_last_run(df, "teacher"), "eval", split), "acc", max_points)
    out["teacher training"] = ([], []) if steps else teacher_run
    steps = steps or teacher_run[0]
    t = teacher_accuracy(df, split)
    out["teacher"] = ([0, max(steps)], [t, t]) if t is not None and steps else ([], [])
    out["controls changed"] = controls_markers(df)[:2]
    return out


def accuracy_figure(history: HistoryLike, split: str = "val", max_points: int = 2000) -> go.Figure:
    """Student and baseline accuracy vs step, the teacher as a dashed line, live control changes dotted."""
    traces = accuracy_traces(history, split, max_points)
    fig = go.Figure(
        [
            _line("student", traces["student"], line=dict(color=PALETTE[0])),
            _line("baseline", traces["baseline"], line=dict(color=PALETTE[2])),
            _line("teacher", traces["teacher"], "lines", line=dict(color="black", dash="dash")),
            _line("teacher training", traces["teacher training"], line=dict(color="gray", width=1.5)),
            _line(
                "controls changed",
                traces["controls changed"],
                "lines",
                hoverinfo="text",
                line=dict(color="gray", dash="dot", width=1),
                hovertext=controls_markers(history)[2],
            ),
        ]
    )
    return _layout(fig, f"{split} accuracy", "step", "accuracy", f"accuracy-{split}", [0, 1])


# -- loss --------------------------------------------------------------------------------------
def loss_traces(history: HistoryLike, role: str = "student", max_points: int = 2000) -> Traces:
    """x/y of the total training loss ("total") and each unweighted term ("ce", "kd", ...) vs step."""
    steps = _rows(_last_run(as_frame(history), role), "step")
    extra = sorted(c[5:] for c in steps.columns if c.startswith("loss_") and c[5:] not in LOSS_TERMS)
    out = {"total": _xy(steps, "loss", max_points)}
    out.update({term: _xy(steps, f"loss_{term}", max_points) for term in (*LOSS_TERMS, *extra)})
    return out


def live_role(history: HistoryLike) -> str:
    """The role a live loss chart follows: the student once it has stepped, else the teacher
    while it trains (the baseline after the student does not take the chart over)."""
    df = as_frame(history)
    for role in ("student", "teacher"):
        if not _rows(_last_run(df, role), "step").empty:
            return role
    return "student"


def loss_figure(history: HistoryLike, role: str = "student", log_y: bool = False, max_points: int = 2000) -> go.Figure:
    """Total loss and each loss term vs step for the last run of ``role`` (kd is already times T^2)."""
    traces = loss_traces(history, role, max_points)
    fig = go.Figure(
        [
            _line(
                name,
                xy,
                line=dict(color="black" if name == "total" else PALETTE[i % 10], width=2.5 if name == "total" else 1.5),
            )
            for i, (name, xy) in enumerate(traces.items())
        ]
    )
    _layout(fig, f"{role} training loss", "step", "loss", f"loss-{role}")
    fig.update_yaxes(type="log" if log_y else "linear")
    return fig


# -- teacher / student agreement ---------------------------------------------------------------
def agreement_traces(history: HistoryLike, split: str = "val", max_points: int = 2000) -> Traces:
    """x/y of the student's top-1 agreement with the teacher and KL(teacher || student) vs step."""
    evals = _rows(_last_run(as_frame(history), "student"), "eval", split)
    return {"agreement": _xy(evals, "agreement", max_points), "kl": _xy(evals, "kl", max_points)}


def agreement_figure(history: HistoryLike, split: str = "val", max_points: int = 2000) -> go.Figure:
    """Teacher-student agreement (top) and KL to the teacher (bottom) vs step."""
    traces = agreement_traces(history, split, max_points)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    fig.add_trace(_line("agreement", traces["agreement"], line=dict(color=PALETTE[0])), row=1, col=1)
    fig.add_trace(_line("kl", traces["kl"], line=dict(color=PALETTE[1])), row=2, col=1)
    _layout(fig, f"teacher-student agreement ({split})", "", "top-1 agreement", f"agreement-{split}")
    fig.update_yaxes(range=[0, 1], row=1, col=1)
    return fig.update_layout(xaxis2_title="step", yaxis2_title="KL(teacher || student)")


# -- comparing runs ----------------------------------------------------------------------------
def smooth(y: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's debiased EMA: ``m = w*m + (1-w)*y_i``, shown as ``m / (1 - w^k)``; NaNs pass through."""
    if not 0 <= weight < 1:
        raise ValueError(f"weight: {weight!r} is invalid; expected 0 <= weight < 1")
    out, last, k = [], 0.0, 0
    for v in y:
        v = float(v)
        if not math.isfinite(v):
            out.append(v)
            continue
        last, k = last * weight + (1 - weight) * v, k + 1
        out.append(last / (1 - weight**k))
    return out


def overlay_figure(
    histories: Mapping[str, HistoryLike],
    metric: str = "acc",
    split: str | None = "val",
    smoothing: float = 0.6,
    role: str | None = None,
    max_points: int = 2000,
) -> go.Figure:
    """Each run's ``metric`` vs step: raw faint, smoothed on top. Eval rows of ``split`` for eval
    metrics; step rows for training metrics ("loss_kd", "batch_acc", ...) or ``split=None``."""
    fig = go.Figure()
    for i, (name, history) in enumerate(histories.items()):
        df = as_frame(history)
        run = (
            _last_run(df, role)
            if role
            else (df[df["run_id"] == df["run_id"].iloc[-1]] if "run_id" in df and len(df) else df)
        )
        rows = _rows(run, "eval", split) if split and metric in EVAL_METRICS else _rows(run, "step")
        x, y = _xy(rows, metric, max_points=max(len(rows), 4))
        color = PALETTE[i % len(PALETTE)]
        raw, smoothed = downsample(x, y, max_points), downsample(x, smooth(y, smoothing), max_points)
        fig.add_trace(
            go.Scatter(
                x=numeric(raw[0]),
                y=numeric(raw[1]),
                name=f"{name} (raw)",
                mode="lines",
                opacity=0.25,
                line=dict(color=color),
                legendgroup=name,
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=numeric(smoothed[0]),
                y=numeric(smoothed[1]),
                name=name,
                mode="lines",
                line=dict(color=color, width=2),
                legendgroup=name,
            )
        )
    bounded = metric in ("acc", "teacher_acc", "agreement", "batch_acc", "train_acc")
    title = f"{split} {metric}" if split and metric in EVAL_METRICS else metric
    return _layout(fig, title, "step", metric, f"overlay-{metric}-{split}", [0, 1] if bounded else None)


# -- temperature explorer ----------------------------------------------------------------------
def softened(logits: Any, temperature: float) -> list[float]:
    """softmax(logits / T) of one sample as plain floats (max subtracted: stable for large logits)."""
    t = float(temperature) if np.ndim(temperature) == 0 and not isinstance(temperature, str) else math.nan
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature: {temperature!r} is invalid; expected a finite number > 0")
    if hasattr(logits, "detach"):  # a torch tensor, without importing torch
        logits = logits.detach().cpu().double().numpy()
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 1 or z.size == 0:
        raise ValueError(f"logits: expected one sample's logits of shape (classes,), got shape {z.shape}")
    e = np.exp((z - z.max()) / t)  # (K,); the largest exponent is 0
    return (e / e.sum()).tolist()


def softmax_figure(
    logits: Any, temperatures: float | Iterable[float] = (1, 4, 20), class_names: Sequence[str] | None = None
) -> go.Figure:
    """Grouped bars of softmax(logits / T) per temperature: how T softens the teacher's targets."""
    temps = [temperatures] if np.ndim(temperatures) == 0 else list(temperatures)
    probs = {t: softened(logits, t) for t in temps}
    k = len(softened(logits, 1.0))
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names: {len(names)} names given for {k} classes")
    fig = go.Figure(
        [
            go.Bar(
                x=names,
                y=p,
                name=f"T={float(t):g}",
                marker_color=PALETTE[i % len(PALETTE)],
                hovertemplate="class %{x}: %{y:.3f}",
            )
            for i, (t, p) in enumerate(probs.items())
        ]
    )
    fig.update_layout(barmode="group")
    return _layout(fig, "softmax(logits / T)", "class", "probability", "softmax", [0, 1])


# -- decision boundaries (2-D data) ------------------------------------------------------------
def _numpy(a: Any) -> np.ndarray:
    return np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)


def decision_boundary_figure(
    predict: Callable[[np.ndarray], Any],
    X: Any,
    y: Any,
    grid: int = 150,
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> go.Figure:
    """The classes ``predict`` gives over the data's bounding box (heatmap), the points on top."""
    X, y = _numpy(X).astype(np.float32), _numpy(y).astype(int).reshape(-1)
    if X.ndim != 2 or X.shape[1] != 2 or len(X) != len(y):
        raise ValueError(f"X, y: expected X of shape (N, 2) and y of shape (N,), got {X.shape} and {y.shape}")
    (x0, y0), (x1, y1) = X.min(0), X.max(0)
    pad_x, pad_y = 0.05 * (x1 - x0 or 1.0), 0.05 * (y1 - y0 or 1.0)
    xs = np.linspace(x0 - pad_x, x1 + pad_x, grid, dtype=np.float32)
    ys = np.linspace(y0 - pad_y, y1 + pad_y, grid, dtype=np.float32)
    gx, gy = np.meshgrid(xs, ys)  # (grid, grid): row i is ys[i], column j is xs[j]
    z = _numpy(predict(np.stack([gx.ravel(), gy.ravel()], axis=1))).astype(int)
    if z.shape != (grid * grid,):
        raise ValueError(f"predict: returned shape {z.shape} for {grid * grid} points; expected one class each")
    z = z.reshape(grid, grid)
    k = int(max(z.max(), y.max() if len(y) else 0)) + 1
    colors = [PALETTE[c % len(PALETTE)] for c in range(k)]
    scale = [[edge, colors[c]] for c in range(k) for edge in (c / k, (c + 1) / k)]  # one flat band per class
    fig = go.Figure(
        go.Heatmap(
            x=xs,
            y=ys,
            z=z,
            name="boundary",
            colorscale=scale,
            zmin=-0.5,
            zmax=k - 0.5,
            showscale=False,
            opacity=0.35,
            hoverinfo="skip",
        )
    )
    for c in range(k):
        pts = X[y == c]
        label = str(class_names[c]) if class_names is not None and c < len(class_names) else f"class {c}"
        fig.add_trace(
            go.Scatter(
                x=pts[:, 0],
                y=pts[:, 1],
                mode="markers",
                name=label,
                legendgroup=label,
                marker=dict(color=colors[c], size=6, line=dict(color="white", width=0.5)),
            )
        )
    return _layout(fig, title, "x1", "x2", f"boundary-{title}")


def side_by_side(figs: Sequence[go.Figure], titles: Sequence[str] | None = None) -> go.Figure:
    """Figures next to each other as columns of one figure (e.g. teacher and student boundaries)."""
    titles = list(titles) if titles is not None else [f.layout.title.text or "" for f in figs]
    if len(titles) != len(figs):
        raise ValueError(f"titles: {len(titles)} titles given for {len(figs)} figures")
    out = make_subplots(rows=1, cols=max(len(figs), 1), subplot_titles=titles or None, horizontal_spacing=0.06)
    for col, fig in enumerate(figs, start=1):
        for trace in fig.data:
            out.add_trace(trace, row=1, col=col)
            if col > 1:  # one legend entry per name
                out.data[-1].showlegend = False
    return _layout(out, "", "x1", "x2", "side-by-side")


# -- text: bits per character, entropies, samples ----------------------------------------------
BPC_TRACES = ("student", "baseline", "teacher", "teacher training", "controls changed")
ENTROPY_TRACES = ("student", "baseline", "teacher")
SAMPLE_ROLES = ("teacher", "student", "baseline")


def teacher_bpc(history: HistoryLike, split: str = "val") -> float | None:
    """The teacher's ``split`` bits per character: the student's ``teacher_bpc``, else the teacher run's last eval."""
    df = as_frame(history)
    student = _rows(_last_run(df, "student"), "eval", split)
    if "teacher_bpc" in student and student["teacher_bpc"].notna().any():
        return float(student["teacher_bpc"].dropna().iloc[-1])
    teacher = _rows(_last_run(df, "teacher"), "eval", split)
    if "bpc" in teacher and teacher["bpc"].notna().any():
        return float(teacher["bpc"].dropna().iloc[-1])
    return None


def bpc_traces(history: HistoryLike, split: str = "val", max_points: int = 2000) -> Traces:
    """x/y by trace name for :func:`bpc_figure` (see :data:`BPC_TRACES`): the student's and the
    baseline's ``split`` bits per character vs step, the teacher's as a flat reference line (its
    own curve, "teacher training", until a student or baseline has an eval), live control changes."""
    df = as_frame(history)
    out = {role: _xy(_rows(_last_run(df, role), "eval", split), "bpc", max_points) for role in ("student", "baseline")}
    steps = out["student"][0] + out["baseline"][0]
    teacher_run = _xy(_rows(_last_run(df, "teacher"), "eval", split), "bpc", max_points)
    out["teacher training"] = ([], []) if steps else teacher_run
    steps = steps or teacher_run[0]
    t = teacher_bpc(df, split)
    out["teacher"] = ([0, max(steps)], [t, t]) if t is not None and steps else ([], [])
    x, y, _ = controls_markers(df)  # y in [0, 1]: scaled to the highest bpc drawn
    top = max([v for _, ys in out.values() for v in ys if v is not None] or [1.0])
    out["controls changed"] = (x, [None if v is None else v * top for v in y])
    return out


def bpc_figure(history: HistoryLike, split: str = "val", max_points: int = 2000) -> go.Figure:
    """Bits per character vs step: student and baseline, the teacher as a dashed line (lower is better)."""
    traces = bpc_traces(history, split, max_points)
    fig = go.Figure(
        [
            _line("student", traces["student"], line=dict(color=PALETTE[0])),
            _line("baseline", traces["baseline"], line=dict(color=PALETTE[2])),
            _line("teacher", traces["teacher"], "lines", line=dict(color="black", dash="dash")),
            _line("teacher training", traces["teacher training"], line=dict(color="gray", width=1.5)),
            _line(
                "controls changed",
                traces["controls changed"],
                "lines",
                hoverinfo="text",
                line=dict(color="gray", dash="dot", width=1),
                hovertext=controls_markers(history)[2],
            ),
        ]
    )
    fig = _layout(fig, f"{split} bits per character", "step", "bits per character", f"bpc-{split}")
    return fig.update_yaxes(rangemode="tozero")


def entropy_traces(history: HistoryLike, split: str = "val", max_points: int = 2000) -> Traces:
    """x/y of the mean next-character entropy (nats) vs step: the student's and the baseline's
    ``entropy`` and the teacher's (``teacher_entropy`` of the student's evals)."""
    df = as_frame(history)
    student = _rows(_last_run(df, "student"), "eval", split)
    return {
        "student": _xy(student, "entropy", max_points),
        "baseline": _xy(_rows(_last_run(df, "baseline"), "eval", split), "entropy", max_points),
        "teacher": _xy(student, "teacher_entropy", max_points),
    }


def entropy_figure(history: HistoryLike, split: str = "val", max_points: int = 2000) -> go.Figure:
    """Entropy of the next-character distribution vs step for student, baseline and teacher: a
    student under reverse KL (mode seeking) drops below the teacher, under forward KL it covers it."""
    traces = entropy_traces(history, split, max_points)
    fig = go.Figure(
        [
            _line("student", traces["student"], line=dict(color=PALETTE[0])),
            _line("baseline", traces["baseline"], line=dict(color=PALETTE[2])),
            _line("teacher", traces["teacher"], line=dict(color="black", dash="dash")),
        ]
    )
    fig = _layout(fig, f"{split} entropy of the next character", "step", "entropy (nats)", f"entropy-{split}")
    return fig.update_yaxes(rangemode="tozero")


def latest_samples(history: HistoryLike, roles: Sequence[str] = SAMPLE_ROLES) -> dict[str, dict[str, Any]]:
    """The last generated sample of each role's last run: ``{role: {"step", "prompt", "sample"}}``
    (roles without a sample are left out), for a samples panel redrawn at each evaluation."""
    df = as_frame(history)
    out = {}
    for role in roles:
        evals = _rows(_last_run(df, role), "eval")
        if "sample" not in evals:
            continue
        rows = evals[evals["sample"].notna()]
        if rows.empty:
            continue
        last = rows.iloc[-1]
        prompt = last.get("sample_prompt")
        out[role] = {
            "step": int(last["step"]),
            "prompt": "" if prompt is None or (isinstance(prompt, float) and math.isnan(prompt)) else str(prompt),
            "sample": str(last["sample"]),
        }
    return out
