"""Stock callbacks: History (-> pandas), ProgressBar (tqdm.auto), JsonlWriter, EarlyStopping."""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any

from .events import EvalEnd, FitEnd, FitStart, Payload, StepEnd

if TYPE_CHECKING:  # pandas is imported only when a frame is asked for
    import pandas as pd


def flat_row(p: Payload) -> dict[str, Any]:
    """One flat dict per event: ``terms`` become ``loss_<name>`` columns."""
    d = p.to_dict()
    for name, v in (d.pop("terms", None) or {}).items():
        d[f"loss_{name}"] = v
    return d


class History:
    """Records every event; ``frame()`` gives a pandas DataFrame.

    ``frame()`` has one row per step / eval / epoch event (column ``event``; loss terms as
    ``loss_<name>`` columns); ``steps()``, ``evals()`` and ``epochs()`` are the rows of one
    kind. ``start``/``end`` keep the fit_start and fit_end payloads. Payloads are kept as they
    come (cheap) and flattened only when a frame is asked for.
    """

    def __init__(self) -> None:
        self.payloads: list[Payload] = []
        self.start: FitStart | None = None
        self.end: FitEnd | None = None

    def on_fit_start(self, p: FitStart) -> None:
        self.start = p

    def on_step_end(self, p: StepEnd) -> None:
        self.payloads.append(p)

    on_eval_end = on_epoch_end = on_step_end

    def on_fit_end(self, p: FitEnd) -> None:
        self.end = p

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [flat_row(p) for p in list(self.payloads)]

    def frame(self, event: str | None = None) -> pd.DataFrame:
        import pandas as pd

        rows = [flat_row(p) for p in list(self.payloads) if event is None or p.event == event]
        df = pd.DataFrame(rows)
        return df.dropna(axis=1, how="all") if event is not None else df

    def steps(self) -> pd.DataFrame:
        return self.frame("step")

    def evals(self) -> pd.DataFrame:
        return self.frame("eval")

    def epochs(self) -> pd.DataFrame:
        return self.frame("epoch")


class ProgressBar:
    """A tqdm.auto bar over the planned steps with loss and accuracy in its postfix.

    In Jupyter, a bar drawn from a background thread lands in whatever cell runs then: UIs
    draw their own progress from events instead.
    """

    def __init__(self, desc: str | None = None, leave: bool = True, **tqdm_kwargs: Any):
        self.desc, self.leave, self.kwargs = desc, leave, tqdm_kwargs
        self.bar = None
        self._last = 0

    def on_fit_start(self, p: FitStart) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=p.steps_planned, desc=self.desc or p.role, leave=self.leave, unit="step", **self.kwargs)
        self._last = 0

    def on_step_end(self, p: StepEnd) -> None:
        if self.bar is not None:
            self.bar.update(p.step - self._last)
            self._last = p.step
            self.bar.set_postfix(loss=f"{p.loss:.4f}", acc=f"{p.batch_acc:.3f}", refresh=False)

    def on_eval_end(self, p: EvalEnd) -> None:
        if self.bar is not None:
            self.bar.set_postfix({f"{p.split}_acc": f"{p.acc:.3f}"}, refresh=False)

    def on_fit_end(self, p: FitEnd) -> None:
        if self.bar is not None:
            self.bar.update(p.step - self._last)
            if p.status != "completed":
                self.bar.set_description(f"{self.bar.desc} [{p.status}]")
            self.bar.close()
            self.bar = None


class JsonlWriter:
    """Appends every event as one JSON line to ``path`` and flushes it (readable mid-run)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._f = None

    def _write(self, p: Payload) -> None:
        if self._f is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
        self._f.write(json.dumps(p.to_dict(), allow_nan=True) + "\n")
        self._f.flush()

    on_fit_start = on_step_end = on_eval_end = on_epoch_end = _write

    def on_fit_end(self, p: FitEnd) -> None:
        self._write(p)
        self._f.close()
        self._f = None


class EarlyStopping:
    """Asks the engine to stop when ``monitor`` has not improved for ``patience`` evals.

    ``monitor`` is ``"<split>_<metric>"`` with a metric of EvalEnd, e.g. ``val_acc`` (higher is
    better) or ``val_loss`` (lower is better; ``mode`` is inferred from the name).
    """

    def __init__(self, monitor: str = "val_acc", patience: int = 5, min_delta: float = 0.0, mode: str | None = None):
        split, _, metric = monitor.partition("_")
        if metric not in ("acc", "loss", "agreement", "kl"):
            raise ValueError(
                f"monitor: {monitor!r} is invalid; expected '<split>_<metric>' with metric in "
                "acc, loss, agreement, kl (e.g. 'val_acc')"
            )
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience: {patience!r} is invalid; expected an integer >= 1")
        mode = mode or ("min" if metric in ("loss", "kl") else "max")
        if mode not in ("min", "max"):
            raise ValueError(f"mode: {mode!r} is invalid; valid: 'min', 'max'")
        self.split, self.metric, self.monitor = split, metric, monitor
        self.patience, self.min_delta, self.mode = patience, float(min_delta), mode
        self.best: float | None = None
        self.best_step: int | None = None
        self.wait = 0
        self.should_stop = False
        self.stop_reason = ""

    def on_fit_start(self, p: FitStart) -> None:
        self.best, self.best_step, self.wait, self.should_stop, self.stop_reason = None, None, 0, False, ""

    def on_eval_end(self, p: EvalEnd) -> None:
        if p.split != self.split:
            return
        value = getattr(p, self.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        better = self.best is None or (
            value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
        )
        if better:
            self.best, self.best_step, self.wait = value, p.step, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.should_stop = True
                self.stop_reason = (
                    f"early stopping: {self.monitor} did not improve for "
                    f"{self.patience} evaluations (best {self.best:.4f} at step "
                    f"{self.best_step})"
                )
