"""The Jupyter Dashboard: pick a teacher and a student, tune temperature, divergence and loss
weights (also while a run goes on), and watch the distilled student race a scratch baseline to the
teacher. Text (the built-in corpus or a .txt file) distills GPTs: the charts show bits per character
and entropy, and a samples panel each model's latest continuation.

Training runs on a :class:`~workbench.engine.live.LiveRun` thread, with the torch threads the app's
jobs get (:func:`~workbench.ui.jobs.job_threads`). A small drawing thread reads its event buffer
into a :class:`~workbench.ui.live_history.LiveHistory` (O(new events) a redraw, a point budget per
trace) and updates the progress bar, status line and plotly FigureWidgets under ``batch_update``
(tqdm would land in whatever cell runs at the time), pausing longer when a redraw costs more.
The figures are LiveFigures: the drawing thread's updates and the browser's replies,
which the kernel's own thread applies, never interleave (see there why that matters).
"""

from __future__ import annotations

import hashlib
import html
import os
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as w
import pandas as pd
import plotly.graph_objects as go

from .. import plots
from ..data.datasets import list_datasets, load_dataset
from ..data.text import from_text
from ..engine.config import KD_DIVERGENCES
from ..engine.divergences import DIVERGENCES
from ..engine.events import FitEnd
from ..engine.hints import find_module
from ..engine.live import LiveRun
from ..engine.process_run import ExperimentJob
from ..models.zoo import FAMILIES, TEXT_FAMILIES, is_text, models_for
from ..verdict import README_ANCHOR, kd_verdict, text_verdict
from . import live_figure
from .dashboard_pickers import FROM_FILE, FROM_RUN, GIVEN, SOURCES, STYLE, TRUST, ZOO, ModelPicker, zoo_spec_for
from .jobs import job_run, job_threads, warm_up_jobs
from .live_figure import DEAF_SECONDS, MAX_REVIVALS, SETTLING_SECONDS, LiveFigure  # (patch them in live_figure)
from .live_history import LiveHistory
from .settings import TEXT_SETTINGS, Settings, suggested_model, text_datasets, uploads_folder

__all__ = [
    "FROM_FILE",
    "FROM_RUN",
    "GIVEN",
    "SOURCES",
    "TEXT_FILE",
    "TRUST",
    "ZOO",
    "DEAF_SECONDS",
    "Dashboard",
    "LiveFigure",
    "MAX_REVIVALS",
    "ModelPicker",
    "SETTLING_SECONDS",
    "zoo_spec_for",
]

REDRAW_SECONDS = 0.5  # at most two redraws a second: drawing shares the GIL with training
# Redrawing takes at most DRAW_SHARE of a core (CPU seconds of the drawing thread): after a redraw
# that cost c, the drawer pauses c * (1 - share) / share, at least REDRAW_SECONDS, at most MAX_REDRAW_SECONDS.
DRAW_SHARE = 0.1
MAX_REDRAW_SECONDS = 5.0
# The first screen: few labels, where the teacher's soft labels clearly beat scratch (docs/results.md:
# digits MLP-16 with 10% labels); about a minute on a laptop CPU, the teacher trained once and cached.
DEFAULT_SETTINGS = Settings.for_dataset(
    "digits-images", labeled_fraction=0.1, temperature=4.0, alpha=0.1, epochs=40, teacher_epochs=15
)
TEXT_FILE = "a .txt file"  # the dataset choice that reads the path box or the upload
# The values a switch between tables and text brings (text: Settings.for_dataset's text values).
KIND_FIELDS = ("temperature", "divergence", "epochs", "teacher_epochs", "batch_size", "lr", "optimizer")
KIND_FIELDS += ("weight_decay", "labeled_fraction")
# Round temperatures only: what the slider shows is what runs and what "copy as code" writes.
TEMPERATURES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0)


# Round learning rates, for the same reason: a log slider's 0.1 steps turned lr=3e-3 into 10**-2.5 in the browser.
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def temperature_options(current: float) -> list[tuple[str, float]]:
    """(label, value) pairs for the temperature slider: the round values and ``current``."""
    return [(f"{t:g}", t) for t in sorted({*TEMPERATURES, float(current)})]


def lr_options(current: float) -> list[tuple[str, float]]:
    """(label, value) pairs for the learning-rate slider: the round values and ``current``."""
    return [(f"{v:g}", v) for v in sorted({*LEARNING_RATES, float(current)})]


def redraw_pause(cost: float) -> float:
    """Seconds the drawer waits after a redraw that cost ``cost`` CPU seconds (see DRAW_SHARE)."""
    return min(MAX_REDRAW_SECONDS, max(REDRAW_SECONDS, cost * (1 - DRAW_SHARE) / DRAW_SHARE))


class _Drawn:
    """What the drawer has read and drawn of one job (a new job never shares it)."""

    def __init__(self, job: LiveRun, cacheable: bool, split: str, text: bool = False):
        self.job, self.cacheable, self.split = job, cacheable, split
        self.history = LiveHistory()  # the job's events, taken as they come; each curve decimated to the budget
        self.ends_seen = 0  # fit_ends already looked at (for the teacher's note)
        self.teacher_note = ""  # "teacher loaded from the cache" / "teacher trained and cached"
        self.text = text  # the job's data is text: bits per character, entropy and samples are drawn
        self.samples: dict = {}  # the samples panel's content, as last drawn
        self.traces: dict[int, tuple[LiveFigure, dict]] = {}  # per chart: the figure and the traces last sent


class Dashboard(w.VBox):
    """An ipywidgets panel over the workbench API (``Dashboard()``; ``display`` it in Jupyter).

    ``data``, ``teacher`` and ``student`` may be given from Python (a DataSplits and modules);
    otherwise the dataset dropdown and the model pickers (families that fit the data) are used.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        data: Any = None,
        teacher: Any = None,
        student: Any = None,
        runs: Any = None,
    ):
        s = self._base = settings or DEFAULT_SETTINGS  # fields without a control (log_every, ...) come from here
        self._data, self._teacher_module, self._student_module, self.runs = data, teacher, student, runs
        self.job: LiveRun | None = None
        self.experiment = None
        self._teacher = teacher  # the teacher known so far (given, or the latest run's), for the explorer
        self._loaded: dict[str, Any] = {}  # built-in datasets loaded for their shape and the explorer
        self._drawer: threading.Thread | None = None
        warm_up_jobs()  # so the first Distill does not wait for torch to load in the jobs' fork server
        self._drawn: _Drawn | None = None
        self._draw_lock = threading.RLock()  # one redraw at a time (the drawer's or a caller's)
        self._root = runs if isinstance(runs, (str, os.PathLike)) else None  # where runs and uploads are kept
        self._text_shown: str | None = None  # the name an uploaded text file was uploaded with
        self._quiet_text = False  # set while the Dashboard itself writes the text path (an upload's)
        self._data_problem: str | None = None  # why the picked data cannot be used (a bad text file)
        self._refused: str | None = None  # the last live control the run refused (kept in the status line)
        self._next_job = threading.Event()  # set while a new job waits for the last job's drawer
        style = STYLE

        def lay() -> w.Layout:  # one Layout per widget: hiding one must not hide the others
            return w.Layout(width="330px")

        names = ["(your data)"] if data is not None else [*list_datasets(), *text_datasets(), TEXT_FILE]
        self.dataset = w.Dropdown(
            options=names,
            value=names[0] if data is not None else TEXT_FILE if s.text_file else s.dataset,
            description="dataset",
            style=style,
            layout=lay(),
        )
        self.dataset.add_class("kd-dataset")
        self.text_path = w.Text(
            value=s.text_file or "",
            description="text file",
            placeholder="path of a UTF-8 .txt file",
            continuous_update=False,
            style=style,
            layout=lay(),
        )
        self.text_upload = w.FileUpload(accept=".txt", multiple=False, description="upload .txt")
        self._text_box = w.VBox([self.text_path, self.text_upload])
        self._was_text = self._text_choice()
        self._check_data()
        fits = self._fits()
        pick = dict(data=self._shown_data, root=self._root, trusted=s.trusted, on_change=self._picks_changed)
        self.teacher = ModelPicker("teacher", s.teacher, fits, teacher, **pick)
        self.student = ModelPicker("student", s.student, fits, student, **pick)
        self._pick_problem = False  # the status line shows a pick's problem
        self.fits = w.HTML()
        self.temperature = w.SelectionSlider(
            options=temperature_options(s.temperature),
            value=float(s.temperature),
            description="temperature",
            style=style,
            layout=lay(),
        )
        self.divergence = w.Dropdown(
            options=list(KD_DIVERGENCES),
            value=s.divergence,
            description="divergence",
            style=style,
            layout=lay(),
            tooltip="the KD term, changeable during a run: "
            + "; ".join(f"{name}: {DIVERGENCES[name].formula}" for name in KD_DIVERGENCES),
        )
        self.divergence_formula = w.HTML(layout=lay())
        self.beta = w.FloatSlider(
            value=s.beta,
            min=0,
            max=1,
            step=0.05,
            description="beta (JSD)",
            style=style,
            layout=lay(),
            tooltip="M = beta*p + (1-beta)*q: 0 is forward KL, 1 reverse KL; changeable during a run",
        )
        self.mode = w.ToggleButtons(
            options=["alpha", "weights"],
            value="alpha" if s.alpha is not None else "weights",
            description="loss",
            style=style,
        )
        self.alpha = w.FloatSlider(
            value=s.alpha if s.alpha is not None else 0.5,
            min=0,
            max=1,
            step=0.05,
            description="alpha (CE)",
            style=style,
            layout=lay(),
        )
        self.w = {
            k: w.FloatSlider(value=getattr(s, k), min=0, max=2, step=0.05, description=k, style=style, layout=lay())
            for k in ("w_ce", "w_kd", "w_mse", "w_hint")
        }
        self.hint_student = w.Text(
            value=s.hint_student or "",
            description="hint: student",
            style=style,
            layout=lay(),
            placeholder="layer, e.g. hidden.0 (empty: none)",
        )
        self.hint_teacher = w.Text(
            value=s.hint_teacher or "",
            description="hint: teacher",
            style=style,
            layout=lay(),
            placeholder="layer, e.g. hidden.1 (empty: none)",
        )
        self.labeled_fraction = w.FloatSlider(
            value=s.labeled_fraction, min=0.01, max=1, step=0.01, description="labeled frac.", style=style, layout=lay()
        )
        self.extra_unlabeled = w.BoundedIntText(
            value=s.extra_unlabeled,
            min=0,
            max=100_000,
            step=1000,
            description="extra inputs",
            style=style,
            layout=lay(),
        )
        self.mixup = w.Checkbox(value=s.mixup, description="mixup transfer inputs", indent=False)
        self.epochs = w.BoundedIntText(
            value=s.epochs, min=1, max=10_000, description="epochs", style=style, layout=lay()
        )
        self.teacher_epochs = w.BoundedIntText(
            value=s.teacher_config().epochs,
            min=1,
            max=10_000,
            description="teacher epochs",
            style=style,
            layout=lay(),
            tooltip="the teacher's own epochs: trained once, then cached",
        )
        self.batch_size = w.Dropdown(
            options=[16, 32, 64, 128, 256, 512], value=s.batch_size, description="batch", style=style, layout=lay()
        )
        self.lr = w.SelectionSlider(
            options=lr_options(s.lr), value=float(s.lr), description="lr", style=style, layout=lay()
        )
        self.optimizer = w.Dropdown(
            options=["adam", "adamw", "sgd"], value=s.optimizer, description="optimizer", style=style, layout=lay()
        )
        self.weight_decay = w.BoundedFloatText(
            value=s.weight_decay, min=0, max=1, step=1e-4, description="weight decay", style=style, layout=lay()
        )
        self.seed = w.BoundedIntText(value=s.seed, min=0, max=2**31 - 1, description="seed", style=style, layout=lay())
        self.train_button = w.Button(description="Train teacher", icon="graduation-cap")
        self.distill_button = w.Button(description="Distill", button_style="primary", icon="play")
        self.pause_button = w.Button(description="Pause", icon="pause", disabled=True)
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.code_button = w.Button(description="Copy as code", icon="code")
        self.status = w.HTML(value="<b>ready</b>")
        self.verdict = w.HTML()  # after a distill run: did the student beat scratch, and if not why
        self.progress = w.IntProgress(value=0, min=0, max=1, description="", layout=w.Layout(width="330px"))
        self.code = w.Textarea(layout=w.Layout(width="100%", height="170px", display="none"))
        self.sample = w.IntSlider(value=0, min=0, max=9, description="test input", style=style, layout=lay())
        # Each figure is complete before it becomes a widget: the browser's model starts from it.
        size = dict(height=300, margin=dict(l=40, r=10, t=40, b=30))
        deaf = self._chart_went_deaf
        self.accuracy_fig = LiveFigure(plots.accuracy_figure(None).update_layout(**size), deaf)
        self.loss_fig = LiveFigure(plots.loss_figure(None).update_layout(**size), deaf)
        self.agreement_fig = LiveFigure(
            plots.agreement_figure(None).update_layout(**{**size, "height": 380}), deaf
        )  # 2 panels
        self.explorer_fig = LiveFigure(plots.softmax_figure([0.0, 0.0], s.temperature).update_layout(**size), deaf)
        self.bpc_fig: LiveFigure | None = None  # text charts: built when the data is text (see _swap_charts)
        self.entropy_fig: LiveFigure | None = None
        self.samples = w.HTML(layout=w.Layout(width="600px"))  # text: prompt and latest samples
        self.samples.add_class("kd-samples")

        self.train_button.on_click(lambda _: self.train_teacher())
        self.distill_button.on_click(lambda _: self.distill())
        self.pause_button.on_click(lambda _: self.toggle_pause())
        self.stop_button.on_click(lambda _: self.stop())
        self.code_button.on_click(lambda _: self.show_code())
        self.dataset.observe(lambda _: self._dataset_changed(), "value")
        self.text_path.observe(lambda _: self._text_path_typed(), "value")
        self.text_upload.observe(lambda _: self._text_uploaded(), "value")
        self.divergence.observe(lambda _: self._show_divergence(), "value")
        self.mode.observe(lambda _: self._show_weights(), "value")
        for widget in (self.temperature, self.divergence, self.beta, self.alpha, *self.w.values()):
            widget.observe(self._live_control, "value")
        self.temperature.observe(lambda _: self._draw_explorer(), "value")
        self.sample.observe(lambda _: self._draw_explorer(), "value")
        self._weights_box = w.VBox([self.alpha, *self.w.values(), self.hint_student, self.hint_teacher])
        self._show_weights()
        self._show_divergence()
        self._update_fits()
        self._picks_changed()
        self._draw_explorer()
        controls = w.VBox(
            [
                w.HTML("<b>Data and models</b>"),
                self.dataset,
                self._text_box,
                self.teacher,
                self.student,
                self.fits,
                w.HTML("<b>Loss</b>"),
                self.temperature,
                self.divergence,
                self.divergence_formula,
                self.beta,
                self.mode,
                self._weights_box,
                w.HTML("<b>Transfer set</b>"),
                self.labeled_fraction,
                self.extra_unlabeled,
                self.mixup,
                w.HTML("<b>Optimization</b>"),
                self.epochs,
                self.teacher_epochs,
                self.batch_size,
                self.lr,
                self.optimizer,
                self.weight_decay,
                self.seed,
            ],
            layout=w.Layout(width="350px"),
        )
        buttons = w.HBox(
            [self.train_button, self.distill_button, self.pause_button, self.stop_button, self.code_button]
        )
        self._explorer_box = w.VBox([w.HTML("<b>Temperature explorer</b>"), self.sample, self.explorer_fig])
        self._charts = charts = w.VBox(
            [self.accuracy_fig, self.loss_fig, self.agreement_fig, self.samples, self._explorer_box],
            layout=w.Layout(width="600px"),
        )
        self._swap_charts(self._text_choice())
        super().__init__(
            [buttons, w.HBox([self.status, self.progress]), self.verdict, w.HBox([controls, charts]), self.code]
        )

    # -- settings ------------------------------------------------------------------------------
    def settings(self) -> Settings:
        """The current widget values over the given Settings (raises ValueError on a bad value)."""
        weights: dict[str, Any] = {"alpha": self.alpha.value}
        if self.mode.value == "weights":  # the hint layers sit with the weights (hidden under alpha)
            weights = {
                "alpha": None,
                **{k: s.value for k, s in self.w.items()},
                "hint_student": self.hint_student.value.strip() or None,
                "hint_teacher": self.hint_teacher.value.strip() or None,
            }
        dataset, text_file = (self.dataset.value if self._data is None else "digits"), None
        if self._data is None and self.dataset.value == TEXT_FILE:
            if self._data_problem is not None:
                raise ValueError(self._data_problem)
            text_file = self.text_path.value.strip()
            dataset = Path(self._text_shown or text_file).stem or "text"
        text = self._text_choice()
        return self._base.replace(
            dataset=dataset,
            text_file=text_file,
            divergence=self.divergence.value,
            beta=float(self.beta.value),
            teacher=self.teacher.spec,
            student=self.student.spec,
            trusted=self.teacher.trusted or self.student.trusted,
            temperature=float(self.temperature.value),
            labeled_fraction=round(self.labeled_fraction.value, 4),  # a browser's slider sends 0.09999999999999999
            extra_unlabeled=0 if text else self.extra_unlabeled.value,  # (no generated inputs for text)
            mixup=False if text else self.mixup.value,
            epochs=self.epochs.value,
            teacher_epochs=self.teacher_epochs.value,
            batch_size=self.batch_size.value,
            lr=self.lr.value,
            optimizer=self.optimizer.value,
            weight_decay=self.weight_decay.value,
            seed=self.seed.value,
            **weights,
        )

    def show_code(self) -> str:
        """Show (and return) the Python call that reproduces the current settings."""
        try:
            code = self.settings().to_code()
        except ValueError as e:
            self._say(f"cannot build code: {e}", "error")
            return ""
        self.code.value = code
        self.code.layout.display = None
        return code

    def _show_weights(self) -> None:
        alpha = self.mode.value == "alpha"
        self.alpha.layout.display = None if alpha else "none"
        for s in (*self.w.values(), self.hint_student, self.hint_teacher):
            s.layout.display = "none" if alpha else None

    def _show_divergence(self) -> None:
        """The divergence's formula, and the beta slider for 'jsd' only."""
        name = self.divergence.value
        self.divergence_formula.value = f"<small>{html.escape(DIVERGENCES[name].formula)}</small>"
        self.beta.layout.display = None if name == "jsd" else "none"

    def _text_choice(self) -> bool:
        """Whether the dataset picker's choice is text (a built-in corpus or a .txt file)."""
        if self._data is not None:
            return is_text(self._data)
        return self.dataset.value == TEXT_FILE or self.dataset.value in text_datasets()

    def _shown_data(self) -> Any:
        """The data of the dataset picker (or the data given from Python); ValueError for a bad text file."""
        if self._data is not None:
            return self._data
        name = self.dataset.value
        if name == TEXT_FILE:
            return self._text_file_data()
        if name not in self._loaded:
            self._loaded[name] = load_dataset(name)
        return self._loaded[name]

    def _text_file_data(self) -> Any:
        """The path box's text file as next-character blocks (read once per path and content)."""
        path = self.text_path.value.strip()
        shown = self._text_shown or path
        if not path:
            raise ValueError("text file: none given; type the path of a UTF-8 .txt file or upload one")
        file = Path(path).expanduser()
        try:
            stat = file.stat()
            key: Any = ("text file", str(file), stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = None  # (from_text says what is wrong)
        if key is None or key not in self._loaded:
            try:
                data = from_text(file, name=Path(shown).stem or "text")
            except ValueError as e:  # named as the person named it, not where an upload is kept
                raise ValueError(f"text file {shown!r}: " + str(e).replace(f"path: {str(file)!r} ", "")) from None
            if key is None:
                return data
            self._loaded[key] = data
        return self._loaded[key]

    def _text_path_typed(self) -> None:
        if not self._quiet_text:
            self._text_shown = None  # a typed path replaces an upload
            self._dataset_changed()

    def _text_uploaded(self) -> None:
        """Keep an uploaded .txt under the runs root (named by its content) and read it from there."""
        if not self.text_upload.value:
            return
        file = self.text_upload.value[0]
        name, content = str(file["name"]), bytes(file["content"])
        folder = uploads_folder(self._root)
        kept = folder / f"text-{hashlib.sha256(content).hexdigest()[:24]}.txt"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not kept.exists():
                kept.write_bytes(content)
        except OSError as e:
            self._data_problem = f"text file {name!r}: cannot be kept in {str(folder)!r} ({e.strerror or e})"
            self._picks_changed()
            return
        self._quiet_text = True
        try:
            self.text_path.value = str(kept)  # what Copy as code writes
        finally:
            self._quiet_text = False
        self._text_shown = name
        self._dataset_changed()

    def _dataset_changed(self) -> None:
        """A new dataset: offer the families that fit it, list its runs, check picked files against it;
        a switch between tables and text also swaps the charts and brings that kind's training values."""
        text = self._text_choice()
        self._check_data()
        if text != self._was_text:
            self._was_text = text
            self._kind_values(text)
            self._swap_charts(text)
        self._update_fits()
        with self.hold_sync():
            for picker in (self.teacher, self.student):
                picker.refresh(notify=False)
        self._picks_changed()

    def _check_data(self) -> None:
        """Show the text file's controls for that choice, and read the file: its error is a data problem."""
        chosen = self._data is None and self.dataset.value == TEXT_FILE
        self._text_box.layout.display = None if chosen else "none"
        self._data_problem = None
        if chosen:
            try:
                self._shown_data()
            except ValueError as e:
                self._data_problem = str(e)

    def _kind_values(self, text: bool) -> None:
        """The training values of the new kind of data (text: Settings.for_dataset's text values)."""
        base = self._base if self._base.is_text == text else DEFAULT_SETTINGS
        values = {**{k: getattr(base, k) for k in KIND_FIELDS}, **(TEXT_SETTINGS if text and not base.is_text else {})}
        values["teacher_epochs"] = values["teacher_epochs"] or values["epochs"]
        with self.hold_sync():
            self.temperature.options = temperature_options(values["temperature"])
            self.temperature.value = float(values["temperature"])
            self.lr.options = lr_options(values["lr"])
            for k in KIND_FIELDS[1:]:
                getattr(self, k).value = values[k]
        for widget in (self.extra_unlabeled, self.mixup):
            widget.disabled = text  # generated inputs and mixup exist for tables only

    def _swap_charts(self, text: bool) -> None:
        """Text: bits per character and entropy charts (and the samples panel) in place of accuracy and
        agreement, and no temperature explorer; tables: the other way round. Each new chart is a new
        LiveFigure built complete, put where the old one was in the charts box (as revive_charts does)."""
        size = dict(height=300, margin=dict(l=40, r=10, t=40, b=30))
        if text:
            pairs = [
                ("accuracy_fig", "bpc_fig", plots.bpc_figure(None)),
                ("agreement_fig", "entropy_fig", plots.entropy_figure(None)),
            ]
        else:
            pairs = [
                ("bpc_fig", "accuracy_fig", plots.accuracy_figure(None)),
                ("entropy_fig", "agreement_fig", plots.agreement_figure(None).update_layout(height=380)),
            ]
        with self._draw_lock:
            for old_name, new_name, figure in pairs:
                old = getattr(self, old_name)
                if old is None or not any(c is old for c in self._charts.children):
                    continue
                new = LiveFigure(
                    figure.update_layout(**{**size, "height": figure.layout.height or 300}), self._chart_went_deaf
                )
                setattr(self, new_name, new)
                self._charts.children = tuple(new if c is old else c for c in self._charts.children)
                old.close()
            self.samples.value = ""
            self.samples.layout.display = None if text else "none"
            self._explorer_box.layout.display = "none" if text else None

    def _picks_changed(self) -> None:
        """A model pick (or the text file) changed: Distill (and Train teacher) are enabled only for
        usable picks, and the status line says why not."""
        problem = self._data_problem or self.teacher.problem or self.student.problem
        self.distill_button.disabled = problem is not None
        self.train_button.disabled = (
            not (self.teacher.zoo or self.teacher.given) or (self._data_problem or self.teacher.problem) is not None
        )
        self.teacher_epochs.disabled = not (self.teacher.zoo or self.teacher.given)
        self.train_button.tooltip = "" if self.teacher.zoo else "a loaded teacher is used as is, not trained here"
        if self.job is not None and not self.job.done:
            return  # the running job's status stays; the pickers' notes say what is wrong
        if problem is not None:
            self._say(problem, "error")
            self._pick_problem = True
        elif self._pick_problem:
            self._pick_problem = False
            self.status.value = "<b>ready</b>"

    def _fits(self) -> list[str]:
        """The model families that fit the current data (text: GPT only, even before a file is read)."""
        if self._text_choice() and self._data is None:
            return list(TEXT_FAMILIES)
        return models_for(self._shown_data())

    def _update_fits(self) -> None:
        """Offer only the model families that fit the current data."""
        fits = self._fits()
        if self._text_choice():
            name = self.dataset.value
            self.teacher.set_fits(fits, suggested_model("teacher", name, text=True))
            self.student.set_fits(fits, suggested_model("student", name, text=True))
            if self._data_problem is None:
                data = self._shown_data()
                self.fits.value = (
                    f"<small>text: blocks of {data.input_shape[0]} characters, a vocabulary of "
                    f"{data.num_classes}: GPT sizes (layers,width[,heads]) only</small>"
                )
            else:
                self.fits.value = "<small>text: GPT sizes (layers,width[,heads]) only</small>"
            return
        name = self.dataset.value if self._data is None else ""
        for picker in (self.teacher, self.student):  # back from text: the dataset's models, as for_dataset's
            back = picker.family.value in TEXT_FAMILIES
            picker.set_fits(fits, suggested_model(picker.role, name, text=False) if back else None)
        shape = tuple(self._shown_data().input_shape)
        self.fits.value = f"<small>input {shape}: families {', '.join(fits)} fit (of {', '.join(FAMILIES)})</small>"

    # -- actions -------------------------------------------------------------------------------
    def _say(self, text: str, kind: str = "info") -> None:
        color = {"info": "#333", "error": "#b00020", "ok": "#1b5e20"}[kind]
        self.status.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def _build(self, train_teacher: bool | None):
        settings = self.settings()
        data = self._data if self._data is not None else settings.data() if not settings.text_file else None
        if data is None:
            data = self._shown_data()  # the text file as read when picked (the same from_text call)
        try:
            exp = settings.experiment(
                data=data,
                teacher=self._teacher_module,
                student=self._student_module,
                runs=self.runs,
                train_teacher=train_teacher,
            )
        except (ValueError, ImportError) as e:  # a file named as the person named it, not where it is kept
            raise ValueError(self.student.named(self.teacher.named(str(e)))) from None
        if exp.config.hint_student is not None:  # a bad layer name fails here, not after the teacher trained
            find_module(exp.student, exp.config.hint_student, "hint_student")
            find_module(exp.teacher, exp.config.hint_teacher, "hint_teacher")
        return exp

    def _start(self, method: str, label: str, train_teacher: bool | None = None) -> bool:
        """Start ``experiment.<method>(live)`` as the Dashboard's job (in a child process where it can
        be sent there, see :func:`~workbench.ui.jobs.job_run`)."""
        if self.job is not None and not self.job.done:
            self._say("a run is in progress: stop it (or wait) before starting another", "error")
            return False
        try:
            threads = job_threads()  # the same rule as the app's jobs; a bad value is refused here
            self.experiment = self._build(train_teacher)
        except (ValueError, RuntimeError, ImportError) as e:
            self._say(str(e), "error")
            return False
        exp = self.experiment
        job = job_run(ExperimentJob(exp, method), label, threads)
        split = "val" if exp.data.val is not None else "test"  # the split the engine evaluates during a fit
        loaded = exp.loaded.get("teacher")
        note = ""
        if loaded is not None and not exp.train_teacher:
            note = f"teacher loaded: {self.teacher.named(loaded.description)}, not trained"
        self._watch(job, split, is_text(exp.data), exp.cache and exp.teacher_key is not None, note)
        self._say(f"{label}: starting" + (f" ({note})" if note else ""))
        job.start()
        self._follow(job)
        return True

    def watch(self, run: LiveRun, split: str = "val", follow: bool = True) -> None:
        """Draw ``run`` (any LiveRun, started or not) in this Dashboard: progress, status and the charts
        shown follow its events, evaluated on ``split``; Pause and Stop act on it. ``follow``: redraw on
        a drawing thread until it ends (False: only when :meth:`redraw` is called)."""
        if not isinstance(run, LiveRun):
            raise ValueError(f"run: expected a LiveRun, got {type(run).__name__}")
        if not isinstance(split, str) or not split:
            raise ValueError(f"split: {split!r} is invalid; expected the name of the split the run evaluates")
        if self.job is not None and self.job is not run and not self.job.done:
            raise RuntimeError("a run is in progress: stop it (or wait) before watching another")
        self._watch(run, split, self._chart_names()[0] == "bpc_fig", False, "")
        self._say(f"{run.name or 'run'}: {run.status}")
        if follow:
            self._follow(run)

    def _watch(self, job: LiveRun, split: str, text: bool, cacheable: bool, note: str) -> None:
        """Make ``job`` the Dashboard's job: the last job's drawer ends, the charts start empty."""
        if self._drawer is not None:  # the last job's drawer ends with its final redraw
            self._next_job.set()  # (and stops waiting for the browser to draw it)
            self._drawer.join()
            self._drawer = None
            self._next_job.clear()
        self.job = job
        with self._draw_lock:
            self._drawn = _Drawn(job, cacheable, split, text)
            self._drawn.teacher_note = note
            self._draw_charts(self._drawn, None)
        self.verdict.value = ""
        self._refused = None
        self.pause_button.disabled = self.stop_button.disabled = job.done
        self.pause_button.description = "Pause"
        self._pick_problem = False

    def _follow(self, job: LiveRun) -> None:
        self._drawer = threading.Thread(target=self._draw_loop, args=(job,), daemon=True)
        self._drawer.start()

    def train_teacher(self) -> bool:
        """Train (or load from the cache) the teacher only; a teacher picked from a run or a file is not trained."""
        if not (self.teacher.zoo or self.teacher.given):
            self._say(
                f"teacher: {self.teacher.source.value!r} is used as is, not trained here; "
                "pick 'zoo' to train a teacher, or press Distill",
                "error",
            )
            return False
        return self._start("prepare_teacher", "teacher", train_teacher=True)

    def distill(self) -> bool:
        """Train or load the teacher, then the distilled student and the scratch baseline."""
        return self._start("run", "distill")

    def toggle_pause(self) -> None:
        if self.job is None or self.job.done:
            return
        if self.job.status == "paused":
            self.job.resume()
            self.pause_button.description = "Pause"
        else:
            self.job.pause()
            self.pause_button.description = "Resume"
        self._say(f"{self.job.name}: {self.job.status}")

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current job and its last redraw are done (for scripts and tests)."""
        if self.job is None:
            return True
        done = self.job.join(timeout)
        if self._drawer is not None:
            self._drawer.join(timeout)
        return done

    def close(self) -> None:
        """Stop the job, wait for it and its drawer, and close every widget of the Dashboard."""
        if hasattr(self, "loss_fig"):  # (also called by __del__, on a Dashboard whose __init__ failed)
            self.stop()
            self.wait(60)
            with self._draw_lock:  # a chart's deaf-check timer may be replacing a chart right now
                self._closed = True
                for fig in self._figures():
                    fig.close()
        super().close()

    def _live_control(self, change: dict) -> None:
        """A slider moved: during a run the next step uses it."""
        if self.job is None or self.job.done:
            return
        try:
            if change["owner"] is self.temperature:
                self.job.set_controls(temperature=float(self.temperature.value))
            elif change["owner"] is self.divergence:
                self.job.set_controls(divergence=self.divergence.value, beta=float(self.beta.value))
            elif change["owner"] is self.beta:
                if self.divergence.value == "jsd":
                    self.job.set_controls(beta=float(self.beta.value))
            elif change["owner"] is self.alpha and self.mode.value == "alpha":
                self.job.set_controls(alpha=self.alpha.value)
            elif self.mode.value == "weights":
                self.job.set_controls(**{k: s.value for k, s in self.w.items()})
        except (ValueError, TimeoutError) as e:  # the run goes on with the values it had
            self._refused = str(e)
            self._say(f"refused (the run goes on): {e}", "error")
        else:
            self._refused = None

    # -- drawing (its own thread) -------------------------------------------------------------
    def _draw_loop(self, job: LiveRun) -> None:
        while True:
            finished = job.done
            cpu = time.thread_time()
            self.redraw(job)
            if finished:
                break
            pause = redraw_pause(time.thread_time() - cpu)
            if job.status == "created":  # watched before it started
                time.sleep(pause)
            else:
                job.join(pause)  # wakes at once when the run ends: its end is drawn without waiting
        self._settle()

    def _settle(self) -> None:
        """After the last redraw, give each chart's view DEAF_SECONDS to apply it, else replace the
        chart (one at a time): the new widget opens with the final state, so the end of a run is drawn."""
        deadline = time.monotonic() + live_figure.SETTLING_SECONDS + 2 * live_figure.DEAF_SECONDS
        while not self._next_job.is_set() and time.monotonic() < deadline:
            figs = self._figures()
            if not any(f.pending for f in figs) and not any(f.settling for f in figs if f._revival):
                return
            self.revive_charts()
            self._next_job.wait(0.2)

    def _chart_went_deaf(self, fig: LiveFigure) -> None:
        """A chart's view ignored the probe sent once it was drawn: replace it now (before a run), or as
        soon as the chart replaced last has loaded."""
        if not any(f is fig for f in self._figures()):
            return  # replaced already
        if not self.revive_charts() and any(f is fig for f in self._figures()) and fig._revival < MAX_REVIVALS:
            fig._later(1.0, fig._check_deaf)

    def _chart_names(self) -> tuple[str, ...]:
        """The attributes of the curve charts now in the charts box (text or tables), and the explorer."""
        if self.bpc_fig is not None and any(c is self.bpc_fig for c in self._charts.children):
            return ("bpc_fig", "loss_fig", "entropy_fig", "explorer_fig")
        return ("accuracy_fig", "loss_fig", "agreement_fig", "explorer_fig")

    def _figures(self) -> list[LiveFigure]:
        return [getattr(self, name) for name in self._chart_names()]

    def redraw(self, job: LiveRun | None = None) -> None:
        """Bring progress, status and charts up to date with the job's events."""
        with self._draw_lock:
            job = job or self.job
            if job is None or self._drawn is None or self._drawn.job is not job:
                return  # no job, or one that a newer job replaced
            d = self._drawn
            finished = job.done  # read before the buffer: a finished job has appended everything
            if not d.history.pull(job.buffer) and not finished:  # only what arrived since the last redraw
                return
            ends = d.history.fit_ends
            for p in ends[d.ends_seen :]:
                if p.role == "teacher":
                    d.teacher_note = (
                        "teacher loaded from the cache"
                        if "teacher cache" in p.message
                        else "teacher trained and cached"
                        if d.cacheable and p.status == "completed"
                        else ""
                    )
            d.ends_seen = len(ends)
            start, last = d.history.latest_start, d.history.last_step
            if start is not None:
                self.progress.max = max(start.steps_planned, 1)
                self.progress.value = last.step if last else 0
                if not finished and self._refused:
                    self._say(f"{self._running_status(d)}; refused: {self._refused}", "error")
                elif not finished:
                    self._say(self._running_status(d))
            self._draw_charts(d, d.history.frame())
            if finished:
                self._finish(d)
            self.revive_charts()

    def revive_charts(self) -> list[str]:
        """Replace a chart whose browser model stopped applying updates (see LiveFigure.deaf) by a new
        widget with the same figure; returns the names of the charts replaced (one at most: the next
        waits until the last new chart has loaded, see LiveFigure.settling)."""
        with self._draw_lock:
            if getattr(self, "_closed", False):
                return []  # closed: its boxes can no longer take a new chart
            if any(f.settling for f in self._figures() if f._revival):
                return []
            for name in self._chart_names():
                old = getattr(self, name)
                if not old.deaf or old._revival >= MAX_REVIVALS:
                    continue
                with old._edit_lock:
                    new = LiveFigure(go.Figure(old), self._chart_went_deaf)
                new._revival = old._revival + 1
                setattr(self, name, new)
                box = self._explorer_box if name == "explorer_fig" else self._charts
                box.children = tuple(new if c is old else c for c in box.children)
                old.close()
                return [name]
        return []

    def _running_status(self, d: _Drawn) -> str:
        """The status line during a fit: which fit, its step and loss, and where the teacher came from."""
        cur, last = d.history.latest_start, d.history.last_step
        paused = " (paused)" if d.job.status == "paused" else ""
        if cur.role == "teacher":
            head = "teacher: training it once (then cached for later runs)" if d.cacheable else "teacher: training it"
            return head + (f": step {last.step}/{cur.steps_planned}, loss {last.loss:.4f}" if last else "") + paused
        text = (
            f"{cur.role}: step {last.step}/{cur.steps_planned}, loss {last.loss:.4f}, T={last.temperature:g}"
            if last
            else f"{cur.role}: starting"
        )
        return text + (f" ({d.teacher_note})" if d.teacher_note else "") + paused

    def _draw_charts(self, d: _Drawn, history: pd.DataFrame | None) -> None:
        """Every curve chart from the job's history (None: empty charts, titled for this job); only
        the traces that changed since the last redraw are sent."""
        role = plots.live_role(history)
        if d.text and self.bpc_fig is not None and self.entropy_fig is not None:
            charts = [
                (self.bpc_fig, plots.bpc_traces(history, d.split), f"{d.split} bits per character"),
                (self.loss_fig, plots.loss_traces(history, role), f"{role} training loss"),
                (self.entropy_fig, plots.entropy_traces(history, d.split), f"{d.split} entropy of the next character"),
            ]
            self._draw_samples(d, history)
        else:
            charts = [
                (self.accuracy_fig, plots.accuracy_traces(history, d.split), f"{d.split} accuracy"),
                (self.loss_fig, plots.loss_traces(history, role), f"{role} training loss"),
                (
                    self.agreement_fig,
                    plots.agreement_traces(history, d.split),
                    f"teacher-student agreement ({d.split})",
                ),
            ]
        for i, (fig, traces, title) in enumerate(charts):
            last_fig, last = d.traces.get(i, (None, {}))  # a new widget (swapped, revived) gets every trace
            changed = traces if last_fig is not fig else {k: v for k, v in traces.items() if last.get(k) != v}
            if not changed and fig.layout.title.text == title:
                continue
            with fig.edit():
                plots.apply_traces(fig, changed)
                fig.layout.title.text = title
            d.traces[i] = (fig, traces)

    def _draw_samples(self, d: _Drawn, history: pd.DataFrame | None) -> None:
        """The samples panel: the prompt and each model's latest continuation (redrawn when an eval brings one)."""
        samples = plots.latest_samples(history) if history is not None and not history.empty else {}
        if samples == d.samples and self.samples.value:
            return
        d.samples = samples
        head = "<b>Samples</b> <small>(the same prompt and seed for every model, redrawn at each evaluation)</small>"
        if not samples:
            self.samples.value = f"{head}<br><small>the first evaluation brings the first samples</small>"
            return
        pre = "<pre style='white-space:pre-wrap;margin:2px 0 6px 0'>{}</pre>"
        parts = [head, "<small>prompt</small>", pre.format(html.escape(next(iter(samples.values()))["prompt"]))]
        for role, sample in samples.items():
            when = "once" if sample["step"] < 0 else f"step {sample['step']}"
            parts += [f"<small>{role} ({when})</small>", pre.format(html.escape(sample["sample"]))]
        self.samples.value = "".join(parts)

    def _finish(self, d: _Drawn) -> None:
        """The job ended: say how (and, for a distill run, the verdict); enable the next run."""
        job = d.job
        self.pause_button.disabled = self.stop_button.disabled = True
        ends = d.history.fit_ends
        note = f" ({d.teacher_note})" if d.teacher_note else ""
        if job.status == "error":
            self._say(f"{job.name} failed: {job.error}", "error")
        elif job.status in ("diverged", "stopped"):
            why = next((p.message for p in reversed(ends) if p.status == job.status), "")
            self._say(f"{job.name} {job.status}: {why}", "error" if job.status == "diverged" else "info")
        elif d.text:
            parts = [f"{p.role} {p.final.get('test_bpc', float('nan')):.3f}" for p in ends if p.final]
            self._say(f"{job.name} done; test bits per character: {', '.join(parts)}{note}", "ok")
            self._show_text_verdict(ends)
        else:
            parts = [f"{p.role} {p.final.get('test_acc', float('nan')):.3f}" for p in ends if p.final]
            self._say(f"{job.name} done; test accuracy: {', '.join(parts)}{note}", "ok")
            self._show_verdict(ends)
        if self.experiment is not None:  # its teacher: given, loaded, trained (or partly, if stopped)
            self._teacher = self.experiment.teacher
            self._draw_explorer()

    def _show_verdict(self, ends: list[FitEnd]) -> None:
        """One line under the status: did the distilled student beat scratch, and if not, why."""
        test = {p.role: p.final.get("test_acc") for p in ends if p.status == "completed"}
        exp = self.experiment
        unlabeled = exp.data.unlabeled
        line = kd_verdict(
            test.get("student"),
            test.get("baseline"),
            labeled_fraction=exp.config.labeled_fraction,
            teacher_acc=test.get("teacher"),
            mixup=exp.config.mixup_alpha > 0,
            extra_unlabeled=0 if unlabeled is None else len(unlabeled),
        )
        if line is None:
            return
        won = line.startswith("Distillation beat")
        link = f"<a href='{README_ANCHOR}' target='_blank'>{README_ANCHOR}</a>"
        self.verdict.value = (
            f"<span style='color:{'#1b5e20' if won else '#8a4b00'}'>"
            f"{html.escape(line).replace(README_ANCHOR, link)}</span>"
        )

    def _show_text_verdict(self, ends: list[FitEnd]) -> None:
        """One line under the status for text: the student's test bits per character vs scratch's."""
        bpc = {p.role: p.final.get("test_bpc") for p in ends if p.status == "completed"}
        exp = self.experiment
        text = text_verdict(
            bpc.get("student"),
            bpc.get("baseline"),
            labeled_fraction=exp.config.labeled_fraction if exp is not None else 1.0,
            teacher_bpc=bpc.get("teacher"),
        )
        if text is None:
            return
        won = text.startswith("Distillation beat")
        self.verdict.value = f"<span style='color:{'#1b5e20' if won else '#8a4b00'}'>{html.escape(text)}</span>"

    def _draw_explorer(self) -> None:
        """Redraw the teacher's softened distribution for the chosen test input (no training)."""
        exp, teacher = self.experiment, self._teacher
        if self._text_choice() or (exp is not None and is_text(exp.data)):
            return  # (hidden for text)
        running = self.job is not None and not self.job.done
        if teacher is None or (running and (teacher.training or (exp is not None and exp.train_teacher))):
            return  # no teacher yet, or one that the run is training (or about to use) right now
        from ..engine.evaluation import predict_logits

        data = exp.data if exp is not None else self._shown_data()
        split = data.test if data.test is not None else data.train
        self.sample.max = len(split) - 1
        x = split.x[self.sample.value : self.sample.value + 1]
        logits = predict_logits(teacher, x)[0]  # eval, no grad, the teacher's device; its mode restored
        t = float(self.temperature.value)
        fig = plots.softmax_figure(logits, [t], data.class_names)
        label = data.class_names[int(split.y[self.sample.value])]
        with self._draw_lock, self.explorer_fig.edit():
            self.explorer_fig.data = []
            self.explorer_fig.add_traces(fig.data)
            self.explorer_fig.layout.title = f"teacher's softmax at T={t:g} (label {label})"
