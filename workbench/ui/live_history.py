"""The history of one live job's events, kept so that a redraw costs O(new events), not O(all events).

A live chart used to rebuild a DataFrame of every event at each redraw: the longer the run, the
slower each redraw. A :class:`LiveHistory` takes only the events that arrived since its last read
(:meth:`LiveHistory.pull`) and keeps the rows of each kind (step, eval, epoch) of each fit (role,
run_id; evals also per split) decimated per plotted column (:func:`is_curve`: a step's loss and its
terms, an eval's accuracy, agreement, KL, bits per character, ...) into at most ``budget`` points:
the min and the max of each bucket of consecutive rows (a spike stays visible), buckets twice as
wide and pairs of them merged each time their number reaches the cap, always the first and the
last point. It also keeps every step row that first used new live controls (``controls_changed``),
each group's first and last row, and the latest eval row that carries a generated sample.

Evals are decimated too, though there is one per epoch: the app's default run (digits, ~19 steps an
epoch, a step logged in 5) has an eval and an epoch row for every 4 logged steps, so at 10,000
logged steps whole eval rows would make a redraw O(events) again.

:meth:`LiveHistory.frame` (O(budget), cached until new events arrive) is a history frame that every
``plots`` builder accepts: a decimated column holds values on the rows kept for it and NaN
elsewhere (the builders drop NaN), and for a run shorter than the budget the builders draw exactly
what they draw from ``plots.as_frame(all events)``. The accessors (:attr:`latest_start`,
:attr:`last_step`, :attr:`failures`, :attr:`has_bpc`, ...) answer in O(1) what a page would
otherwise scan every event for. No UI package is imported here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ..engine.events import EvalEnd, FitEnd, FitStart, StepEnd

# Points per trace of a live chart. A live chart is about 600 px wide (~530 px of plot area);
# between two merges a decimated trace holds budget/2 to budget points, i.e. 250 to 500 min/max
# pairs at 1,000: a pair per 1-2 px, which draws every spike and the envelope of the noise. More
# points would not show, and each redraw sends every point again (a loss chart of five traces at
# ~20 bytes a point: ~100 kB a redraw at 1,000).
LIVE_BUDGET = 1000
MIN_BUDGET = 8
EVENTS = ("step", "eval", "epoch")  # the events that are rows of a history frame
EVAL_CURVES = ("acc", "loss", "teacher_acc", "agreement", "kl", "bpc", "entropy", "teacher_bpc", "teacher_entropy")
FAILED = ("diverged", "error")

Point = tuple[int, float, dict]  # (position in the event stream, value, the row without decimated columns)


def is_curve(event: str, column: str) -> bool:
    """Whether a column of ``event`` rows is plotted as a curve, and so decimated: a step's loss and
    each term, an eval's numbers (EVAL_CURVES), an epoch's loss and train accuracy (no live chart
    draws epoch rows: their other columns come along on the rows kept)."""
    if event == "eval":
        return column in EVAL_CURVES
    if event == "epoch":
        return column in ("loss", "train_acc")
    return column == "loss" or column.startswith("loss_")


CURVES = {event: partial(is_curve, event) for event in EVENTS}  # column -> decimated?, per event


def flat(p: Any) -> dict[str, Any]:
    """One event as a flat dict (``terms`` become ``loss_<name>`` columns), as ``plots.as_frame`` makes it."""
    row = p.to_dict() if hasattr(p, "to_dict") else dict(p)
    for name, v in (row.pop("terms", None) or {}).items():
        row[f"loss_{name}"] = v
    return row


def _plotted(v: Any) -> bool:
    """A value a curve draws: a number, not NaN (None and NaN are dropped by the plots)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


class MinMaxDecimator:
    """One column of one run in at most ``budget`` points: the first, the last, and the min and max
    of each bucket of ``width`` consecutive values. Up to ``budget`` values are kept as they came;
    past that, buckets of 2, whose pairs merge (and ``width`` doubles) each time ``cap`` buckets are
    closed: adding a value costs amortized O(1), reading the points O(budget) (list copies)."""

    __slots__ = ("budget", "cap", "raw", "width", "closed", "kept", "open", "first", "last", "adds", "merges")

    def __init__(self, budget: int = LIVE_BUDGET):
        self.budget = _budget(budget)
        # first + last + two points for each closed bucket (at most cap - 1) and the open one
        self.cap = (self.budget - 2) // 2 // 2 * 2  # even: pairs merge exactly
        self.raw: list[Point] | None = []  # every point, until there are more than the budget
        self.width = 1
        self.closed: list[list] = []  # [low point, high point] of each full bucket, in order
        self.kept: list[Point] = []  # the closed buckets' points, in order (what points() copies)
        self.open: list | None = None  # [low point, high point, count] of the bucket being filled
        self.first: Point | None = None
        self.last: Point | None = None
        self.adds = 0  # values added, and bucket pairs merged: the work done, for tests
        self.merges = 0

    def add(self, seq: int, value: float, row: dict) -> None:
        """Add one value (``seq``: its position in the event stream, increasing)."""
        self.adds += 1
        point = (seq, value, row)
        if self.raw is not None:
            self.raw.append(point)
            if len(self.raw) > self.budget:  # too many to keep as they came: into buckets of 2
                raw, self.raw, self.width = self.raw, None, 2
                self.first = raw[0]
                for p in raw:
                    self._bucket(p)
            return
        self._bucket(point)

    def _bucket(self, point: Point) -> None:
        self.last = point
        b = self.open
        if b is None:
            self.open = b = [point, point, 0]
        elif point[1] < b[0][1]:  # strict: of equal values the earliest stays
            b[0] = point
        elif point[1] > b[1][1]:
            b[1] = point
        b[2] += 1
        if b[2] < self.width:
            return
        b.pop()  # (its count)
        self.closed.append(b)
        self.kept += _in_order(b)
        self.open = None
        if len(self.closed) >= self.cap:  # pairs merge: half as many buckets, twice as wide
            c = self.closed
            self.closed = [
                [
                    c[i][0] if c[i][0][1] <= c[i + 1][0][1] else c[i + 1][0],
                    c[i][1] if c[i][1][1] >= c[i + 1][1][1] else c[i + 1][1],
                ]
                for i in range(0, len(c), 2)
            ]
            self.kept = [p for bucket in self.closed for p in _in_order(bucket)]
            self.width *= 2
            self.merges += len(c) // 2

    def __len__(self) -> int:
        """The number of buckets held (closed and open), or of values while they are kept as they came."""
        if self.raw is not None:
            return len(self.raw)
        return len(self.closed) + (self.open is not None)

    def points(self) -> list[Point]:
        """The points kept, in order: at most ``budget``, with the first, the last, and each bucket's
        min and max."""
        if self.raw is not None:
            return list(self.raw)
        body = self.kept + (_in_order(self.open) if self.open is not None else [])
        head = [self.first] if body[0][0] != self.first[0] else []  # (the first bucket may hold it)
        tail = [self.last] if body[-1][0] != self.last[0] else []  # (the last bucket may hold it)
        return head + body + tail


def _in_order(bucket: list) -> list[Point]:
    """A bucket's low and high points in the order they came (one point when they are the same)."""
    low, high = bucket[0], bucket[1]
    return [low] if low is high else [low, high] if low[0] < high[0] else [high, low]


class _Group:
    """The rows of one kind of one fit (event, role, run_id, split): a decimator per plotted column,
    the first and last row, the rows that first used new live controls, the latest with a sample."""

    __slots__ = ("columns", "first", "last", "marks", "sampled")

    def __init__(self) -> None:
        self.columns: dict[str, MinMaxDecimator] = {}
        self.first: tuple[int, dict] | None = None
        self.last: tuple[int, dict] | None = None
        self.marks: list[tuple[int, dict]] = []
        self.sampled: tuple[int, dict] | None = None

    def kept(self) -> list[tuple[int, dict]]:
        """The rows kept whatever their values: first, last, control changes, the latest sample."""
        return [r for r in (self.first, self.last, self.sampled) if r is not None] + self.marks


class LiveHistory:
    """A thread-safe, incremental history of one job's events: ``pull(job.buffer)`` (or ``extend``)
    takes the new ones in amortized O(1) each, ``frame()`` gives a history frame of O(budget) rows.

    One LiveHistory reads one buffer; every reader (browser sessions, a drawing thread) may share it.
    The frame is shared too: treat it as read-only.
    """

    def __init__(self, budget: int = LIVE_BUDGET):
        self.budget = _budget(budget)
        self._lock = threading.RLock()
        self._cursor = 0  # how far into the buffer pull() has read
        self._count = 0  # events taken so far (the next one's position)
        self._groups: dict[tuple[Any, ...], _Group] = {}  # rows per (event, role, run_id, split)
        self._columns: dict[str, None] = {}  # every column seen, in order of appearance
        self._frame: pd.DataFrame | None = None  # cached until new events arrive
        self._table: pd.DataFrame | None = None  # the rows of the last frame, without curves, by position
        self._tabled: set[int] = set()  # (their positions)
        self._starts: dict[str, FitStart] = {}  # the latest fit_start of each role
        self._latest_start: FitStart | None = None
        self._last_steps: dict[str, StepEnd] = {}  # the latest step of each run_id
        self._ends: list[FitEnd] = []
        self._bpc = False
        self.rows_built = 0  # rows made into table rows so far (once each, when first kept), for tests

    # -- taking events ----------------------------------------------------------------------------
    def pull(self, buffer: Any) -> int:
        """Take the events ``buffer`` (an EventBuffer: ``since(cursor)``) got since the last pull;
        returns how many."""
        with self._lock:
            new, self._cursor = buffer.since(self._cursor)
            self.extend(new)
            return len(new)

    def extend(self, payloads: Iterable[Any]) -> int:
        """Take these events (payloads, or flat dicts with an ``event`` key); returns how many."""
        n = 0
        with self._lock:
            for p in payloads:
                n += 1
                seq, self._count = self._count, self._count + 1
                if isinstance(p, StepEnd):
                    self._last_steps[p.run_id] = p
                elif isinstance(p, FitStart):
                    self._starts[p.role] = self._latest_start = p
                elif isinstance(p, FitEnd):
                    self._ends.append(p)
                elif isinstance(p, EvalEnd) and p.bpc is not None:
                    self._bpc = True
                event = p.get("event") if isinstance(p, Mapping) else getattr(p, "event", None)
                if event not in EVENTS:  # fit_start / fit_end (or any other record) are not rows
                    continue
                row = flat(p)
                for column in row:
                    if column not in self._columns:
                        self._columns[column] = None
                self._add(seq, event, row)
            if n:
                self._frame = None
        return n

    def _add(self, seq: int, event: str, row: dict) -> None:
        key = (event, row.get("role"), row.get("run_id"), row.get("split"))
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group()
        curve = CURVES[event]
        base = {k: v for k, v in row.items() if not curve(k)}  # what the row carries wherever it is kept
        for column, value in row.items():
            if _plotted(value) and curve(column):
                dec = group.columns.get(column)
                if dec is None:
                    dec = group.columns[column] = MinMaxDecimator(self.budget)
                dec.add(seq, value, base)
        kept = (seq, base)
        if group.first is None:
            group.first = kept
        group.last = kept
        if row.get("controls_changed") is True:
            group.marks.append(kept)
        if isinstance(row.get("sample"), str):
            group.sampled = kept

    # -- reading ------------------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """The history frame: each group's rows decimated per plotted column (see the module), in the
        order the events came."""
        with self._lock:
            if self._frame is not None:
                return self._frame
            bases: dict[int, dict] = {}  # position in the event stream -> the row kept there
            curves: dict[str, list[tuple]] = {}  # decimated column -> (positions, values) of each group
            for group in self._groups.values():
                for seq, base in group.kept():
                    bases[seq] = base
                for column, dec in group.columns.items():
                    seqs, values, rows = zip(*dec.points())
                    bases.update(zip(seqs, rows))
                    curves.setdefault(column, []).append((seqs, values))
            order = sorted(bases)  # a few sorted runs (one per group): fast
            new = [seq for seq in order if seq not in self._tabled]  # rows kept since the last frame
            self.rows_built += len(new)
            if new:  # each row becomes a table row once; a row dropped by a merge is never kept again
                chunk = pd.DataFrame([bases[seq] for seq in new], index=new)
                self._table = chunk if self._table is None else pd.concat([self._table, chunk])
            self._table = self._table.loc[order] if self._table is not None else None
            self._tabled = set(order)
            columns = list(self._columns)
            frame = pd.DataFrame(columns=columns) if self._table is None else self._table.reindex(columns=columns)
            frame = frame.reset_index(drop=True)
            where = np.asarray(order)
            for column, parts in curves.items():  # each curve only on the rows kept for it: NaN elsewhere
                column_values = np.full(len(order), np.nan)
                for seqs, values in parts:
                    column_values[np.searchsorted(where, seqs)] = values
                frame[column] = column_values
            self._frame = frame
            return frame

    def __len__(self) -> int:
        """The number of events taken."""
        return self._count

    @property
    def latest_start(self) -> FitStart | None:
        """The latest fit_start (the fit going on, or the last one)."""
        return self._latest_start

    def start_of(self, role: str) -> FitStart | None:
        """The latest fit_start of ``role`` (teacher, student, baseline)."""
        with self._lock:
            return self._starts.get(role)

    @property
    def starts(self) -> dict[str, FitStart]:
        """The latest fit_start of each role, by role."""
        with self._lock:
            return dict(self._starts)

    @property
    def last_step(self) -> StepEnd | None:
        """The latest step of the latest fit (None before that fit's first logged step)."""
        with self._lock:
            start = self._latest_start
            return None if start is None else self._last_steps.get(start.run_id)

    @property
    def fit_ends(self) -> list[FitEnd]:
        """Every fit_end so far, in order (one per fit: few)."""
        with self._lock:
            return list(self._ends)

    @property
    def failures(self) -> list[FitEnd]:
        """The fit_ends whose fit diverged or failed, in order."""
        with self._lock:
            return [p for p in self._ends if p.status in FAILED]

    @property
    def has_bpc(self) -> bool:
        """Whether an evaluation carried bits per character (the job distills a language model)."""
        return self._bpc

    def decimators(self) -> dict[tuple[Any, ...], MinMaxDecimator]:
        """The decimator of each (event, role, run_id, split, column), for tests and diagnostics."""
        with self._lock:
            return {(*key, c): dec for key, group in self._groups.items() for c, dec in group.columns.items()}


def _budget(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_BUDGET:
        raise ValueError(f"budget: {value!r} is invalid; expected a whole number of points >= {MIN_BUDGET}")
    return value
