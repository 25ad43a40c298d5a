"""A plotly FigureWidget for live charts that a drawing thread updates while the kernel's thread
applies the browser's messages (see :class:`LiveFigure` for why both sides hold one lock), and that
finds out when its browser model stopped applying updates ("deaf"), so its owner can replace it."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator

import plotly.graph_objects as go

DEAF_SECONDS = 5.0  # a chart whose browser model applied nothing sent this long ago is replaced
MAX_REVIVALS = 4  # replacements per chart: a browser that never answers is not a reason to loop
_PROBES = itertools.count(1)  # a new value per probe (a replacement chart copies the last one)
SETTLING_SECONDS = 3 * DEAF_SECONDS  # how long a new chart may take to load before the next one is replaced


class LiveFigure(go.FigureWidget):
    """A FigureWidget for live charts: the browser gets the whole figure when the widget is
    created, and a drawing thread may update it while the kernel's thread applies the browser's
    messages to it (use :meth:`edit`).

    Why, for the first: FigureWidget opens its comm with no traces and sends them in a second
    message. The browser's model (anywidget) drops every message that arrives before it has
    loaded plotly's 5 MB bundle, which each figure loads on its own; with a few figures created
    at once (the Dashboard has four) some views drew an empty figure and never got a trace.
    Opening the comm once the figure is built puts every trace in the first message.

    Why, for the second: ipywidgets applies a browser message under ``hold_trait_notifications``,
    which swaps ``notify_change`` for a cache until it is done. plotly sends an update by setting
    ``_py2js_update = msg`` and then ``= None``; done from another thread in that window, the
    cache sends the final value, None, and the update is lost. Both sides hold one lock.

    A model that took over 2 s to load that bundle drops every later message, for good: anywidget
    gives each model 2 s to evaluate its copy of the 5 MB bundle, then rejects the promise every
    message waits on. Its view still draws the first state, and answers once, but applies no
    update. Four figures loading at once on a busy 2-core machine miss that deadline often. So
    once a view has answered, a probe (a trace edit it must answer) is sent; :attr:`deaf` tells
    when an update went unanswered for DEAF_SECONDS, and ``on_deaf`` is called then, so the
    Dashboard replaces the widget with a new one (which opens with the current state), one at a
    time: a new model loading alone makes the deadline far more often than four at once.
    """

    _defer_open = True  # Widget.__init__ would open the comm before plotly has built the figure

    def __init__(self, figure: go.Figure, on_deaf: Callable[[LiveFigure], None] | None = None):
        self._edit_lock = threading.RLock()
        super().__init__(figure)
        self._defer_open = False
        self.open()  # the comm's first message carries _widget_data and _widget_layout
        self._view_seen = False  # a view has answered (it does once drawn, and after each update)
        self._applied = 0  # the latest edit id a view has applied
        self._unapplied_since: float | None = None  # when the oldest update not yet applied was sent
        self._on_deaf = on_deaf  # called from a timer thread when the probe went unanswered
        self._timers: list[threading.Timer] = []
        self._born = time.monotonic()
        self._revival = 0  # how many widgets this chart had before this one (set by the Dashboard)
        self.observe(self._view_answered, "_js2py_traceDeltas")

    def _view_answered(self, change: dict) -> None:
        if change["new"]:
            first = not self._view_seen
            self._view_seen = True
            self._applied = max(self._applied, change["new"].get("trace_edit_id", 0))
            if self._applied >= self._last_trace_edit_id:
                self._unapplied_since = None
            if first:
                # Not from here: this runs while the browser's message is applied, when an update
                # would be lost (see above); the timer's thread waits for the edit lock.
                self._later(0.0, self._probe)

    def _later(self, seconds: float, fn: Callable[[], None]) -> None:
        timer = threading.Timer(seconds, fn)
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _probe(self) -> None:
        """Send a trace edit the view must answer, and check DEAF_SECONDS later that it did."""
        if self.comm is None or not self.data:
            return  # closed
        with self.edit():
            self.data[0].meta = f"probe {next(_PROBES)}"  # meta: free data, not drawn; new each time
        self._later(DEAF_SECONDS + 0.5, self._check_deaf)

    def _check_deaf(self) -> None:
        if self.comm is not None and self.deaf and self._on_deaf is not None:
            self._on_deaf(self)

    @property
    def settling(self) -> bool:
        """True while it is not known yet whether a view applies this chart's updates: no view has
        applied the probe, none has been found deaf, and the widget is younger than SETTLING_SECONDS."""
        return self._applied < 1 and not self.deaf and time.monotonic() - self._born < SETTLING_SECONDS

    @property
    def pending(self) -> bool:
        """True when a view has answered and an update sent since is not applied yet."""
        return self._view_seen and self._unapplied_since is not None

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        super().close()

    @property
    def deaf(self) -> bool:
        """True when a view was drawn but has applied none of the updates sent for DEAF_SECONDS."""
        return (
            self._view_seen
            and self._unapplied_since is not None
            and time.monotonic() - self._unapplied_since > DEAF_SECONDS
        )

    def open(self) -> None:
        if not self._defer_open:
            super().open()

    def set_state(self, sync_data: dict) -> None:
        with self._edit_lock:
            super().set_state(sync_data)

    @contextlib.contextmanager
    def edit(self) -> Iterator[LiveFigure]:
        """Update the figure in one message, never while a browser message is being applied."""
        with self._edit_lock:
            with self.batch_update():
                yield self
            if self._last_trace_edit_id > self._applied and self._unapplied_since is None:
                self._unapplied_since = time.monotonic()
