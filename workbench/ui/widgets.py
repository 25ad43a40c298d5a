"""The Jupyter Dashboard: pick a teacher and a student, tune temperature and loss weights (also
while a run goes on), and watch the distilled student race a scratch baseline to the teacher.

Training runs on a :class:`~workbench.live.LiveRun` thread. A small drawing thread reads its
event buffer a few times a second and updates the progress bar, status line and plotly
FigureWidgets under ``batch_update`` (tqdm would land in whatever cell runs at the time).
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any

import ipywidgets as w
import plotly.graph_objects as go

import pandas as pd

from .. import plots
from ..callbacks import flat_row
from ..datasets import list_datasets, load_dataset
from ..events import FitEnd, FitStart, StepEnd
from ..hints import find_module
from ..live import LiveRun
from ..models import DEFAULTS, FAMILIES, models_for
from ..settings import Settings

REDRAW_SECONDS = 0.5  # at most two redraws a second: drawing shares the GIL with training
GIVEN = "(from Python)"  # the family shown for a model given as a module
STYLE = {"description_width": "110px"}


class ModelPicker(w.HBox):
    """One model as a zoo spec: a family dropdown (only families that fit the data) and its sizes.

    ``spec`` is ``"mlp:64,32"``, or ``"mlp"`` when the sizes are empty (the family's default).
    A model given from Python as a module shows as such and cannot be changed here.
    """

    def __init__(self, role: str, spec: str, fits: list[str], module: Any = None):
        family, _, sizes = spec.partition(":")
        self.given, self._spec = module is not None, spec
        self._sizes_by_family = {family.strip(): sizes.strip()}  # typed sizes, kept across switches
        self._family = ""
        self.family = w.Dropdown(options=[GIVEN] if self.given else fits, description=role, style=STYLE,
                                 disabled=self.given, layout=w.Layout(width="210px"))
        self.sizes = w.Text(disabled=self.given, layout=w.Layout(width="115px"),
                            tooltip="widths (mlp) or channels (cnn), e.g. 64,32; empty: the family's default")
        self.family.observe(lambda _: self._family_changed(), "value")
        if not self.given:
            self.family.value = family.strip() if family.strip() in fits else fits[0]
        self._family_changed()
        super().__init__([self.family, self.sizes], layout=w.Layout(width="330px"))

    @property
    def spec(self) -> str:
        """The zoo spec of the current choice (the Settings' spec for a module given from Python)."""
        if self.given:
            return self._spec
        sizes = self.sizes.value.strip()
        return f"{self.family.value}:{sizes}" if sizes else self.family.value

    def set_fits(self, fits: list[str]) -> None:
        """Offer only ``fits``; keep the current family when it still fits."""
        if self.given:
            return
        keep = self.family.value
        self.family.options = fits  # resets the value to the first option
        self.family.value = keep if keep in fits else fits[0]

    def _family_changed(self) -> None:
        """Remember the sizes typed for the old family and show those of the new one."""
        if self.given:
            self.sizes.placeholder = "a module"
            return
        if self._family:
            self._sizes_by_family[self._family] = self.sizes.value
        self._family = family = self.family.value
        self.sizes.value = self._sizes_by_family.get(family, "")
        default = DEFAULTS[family]["hidden" if family == "mlp" else "channels"]
        self.sizes.placeholder = "default " + ",".join(map(str, default))


class Dashboard(w.VBox):
    """An ipywidgets panel over the workbench API (``Dashboard()``; ``display`` it in Jupyter).

    ``data``, ``teacher`` and ``student`` may be given from Python (a DataSplits and modules);
    otherwise the dataset dropdown and the model pickers (families that fit the data) are used.
    """

    def __init__(self, settings: Settings | None = None, data: Any = None, teacher: Any = None,
                 student: Any = None, runs: Any = None):
        s = self._base = settings or Settings()  # fields without a control (log_every, ...) come from here
        self._data, self._teacher_module, self._student_module, self.runs = data, teacher, student, runs
        self.job: LiveRun | None = None
        self.experiment = None
        self._teacher = teacher  # the teacher known so far (given, or the latest run's), for the explorer
        self._loaded: dict[str, Any] = {}  # built-in datasets loaded for their shape and the explorer
        self._drawer: threading.Thread | None = None
        self._rows: list[dict] = []  # flat event rows drawn so far (appended, never rebuilt)
        self._cursor = 0
        self._start_p: FitStart | None = None  # the latest fit_start drawn, and its latest step
        self._last_step: StepEnd | None = None
        style = STYLE

        def lay() -> w.Layout:  # one Layout per widget: hiding one must not hide the others
            return w.Layout(width="330px")

        names = ["(your data)"] if data is not None else list_datasets()
        self.dataset = w.Dropdown(options=names, value=names[0] if data is not None else s.dataset,
                                  description="dataset", style=style, layout=lay())
        fits = models_for(self._input_shape())
        self.teacher = ModelPicker("teacher", s.teacher, fits, teacher)
        self.student = ModelPicker("student", s.student, fits, student)
        self.fits = w.HTML()
        self.temperature = w.FloatLogSlider(value=s.temperature, base=10, min=0, max=1.30103, step=0.01,
                                            description="temperature", style=style, layout=lay())
        self.mode = w.ToggleButtons(options=["alpha", "weights"], value="alpha" if s.alpha is not None else "weights",
                                    description="loss", style=style)
        self.alpha = w.FloatSlider(value=s.alpha if s.alpha is not None else 0.5, min=0, max=1, step=0.05,
                                   description="alpha (CE)", style=style, layout=lay())
        self.w = {k: w.FloatSlider(value=getattr(s, k), min=0, max=2, step=0.05, description=k, style=style,
                                   layout=lay()) for k in ("w_ce", "w_kd", "w_mse", "w_hint")}
        self.hint_student = w.Text(value=s.hint_student or "", description="hint: student", style=style,
                                   layout=lay(), placeholder="layer, e.g. hidden.0 (empty: none)")
        self.hint_teacher = w.Text(value=s.hint_teacher or "", description="hint: teacher", style=style,
                                   layout=lay(), placeholder="layer, e.g. hidden.1 (empty: none)")
        self.labeled_fraction = w.FloatSlider(value=s.labeled_fraction, min=0.01, max=1, step=0.01,
                                              description="labeled frac.", style=style, layout=lay())
        self.extra_unlabeled = w.BoundedIntText(value=s.extra_unlabeled, min=0, max=100_000, step=1000,
                                                description="extra inputs", style=style, layout=lay())
        self.mixup = w.Checkbox(value=s.mixup, description="mixup transfer inputs", indent=False)
        self.epochs = w.BoundedIntText(value=s.epochs, min=1, max=10_000, description="epochs", style=style, layout=lay())
        self.batch_size = w.Dropdown(options=[16, 32, 64, 128, 256, 512], value=s.batch_size, description="batch",
                                     style=style, layout=lay())
        self.lr = w.FloatLogSlider(value=s.lr, base=10, min=-5, max=-0.5, step=0.1, description="lr", style=style,
                                   layout=lay())
        self.optimizer = w.Dropdown(options=["adam", "adamw", "sgd"], value=s.optimizer, description="optimizer",
                                    style=style, layout=lay())
        self.weight_decay = w.BoundedFloatText(value=s.weight_decay, min=0, max=1, step=1e-4,
                                               description="weight decay", style=style, layout=lay())
        self.seed = w.BoundedIntText(value=s.seed, min=0, max=2**31 - 1, description="seed", style=style, layout=lay())
        self.train_button = w.Button(description="Train teacher", icon="graduation-cap")
        self.distill_button = w.Button(description="Distill", button_style="primary", icon="play")
        self.pause_button = w.Button(description="Pause", icon="pause", disabled=True)
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.code_button = w.Button(description="Copy as code", icon="code")
        self.status = w.HTML(value="<b>ready</b>")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="", layout=w.Layout(width="330px"))
        self.code = w.Textarea(layout=w.Layout(width="100%", height="170px", display="none"))
        self.sample = w.IntSlider(value=0, min=0, max=9, description="test input", style=style, layout=lay())
        self.accuracy_fig = go.FigureWidget(plots.accuracy_figure(None))
        self.loss_fig = go.FigureWidget(plots.loss_figure(None))
        self.agreement_fig = go.FigureWidget(plots.agreement_figure(None))
        self.explorer_fig = go.FigureWidget(plots.softmax_figure([0.0, 0.0], s.temperature))
        for fig in (self.accuracy_fig, self.loss_fig, self.agreement_fig, self.explorer_fig):
            fig.update_layout(height=300, margin=dict(l=40, r=10, t=40, b=30))
        self.agreement_fig.update_layout(height=380)  # two stacked panels

        self.train_button.on_click(lambda _: self.train_teacher())
        self.distill_button.on_click(lambda _: self.distill())
        self.pause_button.on_click(lambda _: self.toggle_pause())
        self.stop_button.on_click(lambda _: self.stop())
        self.code_button.on_click(lambda _: self.show_code())
        self.dataset.observe(lambda _: self._update_fits(), "value")
        self.mode.observe(lambda _: self._show_weights(), "value")
        for widget in (self.temperature, self.alpha, *self.w.values()):
            widget.observe(self._live_control, "value")
        self.temperature.observe(lambda _: self._draw_explorer(), "value")
        self.sample.observe(lambda _: self._draw_explorer(), "value")
        self._weights_box = w.VBox([self.alpha, *self.w.values(), self.hint_student, self.hint_teacher])
        self._show_weights()
        self._update_fits()
        self._draw_explorer()
        controls = w.VBox([
            w.HTML("<b>Data and models</b>"), self.dataset, self.teacher, self.student, self.fits,
            w.HTML("<b>Loss</b>"), self.temperature, self.mode, self._weights_box,
            w.HTML("<b>Transfer set</b>"), self.labeled_fraction, self.extra_unlabeled, self.mixup,
            w.HTML("<b>Optimization</b>"), self.epochs, self.batch_size, self.lr, self.optimizer,
            self.weight_decay, self.seed,
        ], layout=w.Layout(width="350px"))
        buttons = w.HBox([self.train_button, self.distill_button, self.pause_button, self.stop_button,
                          self.code_button])
        charts = w.VBox([self.accuracy_fig, self.loss_fig, self.agreement_fig, w.HTML("<b>Temperature explorer</b>"), self.sample,
                         self.explorer_fig], layout=w.Layout(width="600px"))
        super().__init__([buttons, w.HBox([self.status, self.progress]), w.HBox([controls, charts]), self.code])

    # -- settings ------------------------------------------------------------------------------
    def settings(self) -> Settings:
        """The current widget values over the given Settings (raises ValueError on a bad value)."""
        weights: dict[str, Any] = {"alpha": self.alpha.value}
        if self.mode.value == "weights":  # the hint layers sit with the weights (hidden under alpha)
            weights = {"alpha": None, **{k: s.value for k, s in self.w.items()},
                       "hint_student": self.hint_student.value.strip() or None,
                       "hint_teacher": self.hint_teacher.value.strip() or None}
        dataset = self.dataset.value if self._data is None else "digits"
        return self._base.replace(dataset=dataset, teacher=self.teacher.spec, student=self.student.spec,
                        temperature=round(self.temperature.value, 4), labeled_fraction=self.labeled_fraction.value,
                        extra_unlabeled=self.extra_unlabeled.value, mixup=self.mixup.value, epochs=self.epochs.value,
                        batch_size=self.batch_size.value, lr=self.lr.value, optimizer=self.optimizer.value,
                        weight_decay=self.weight_decay.value, seed=self.seed.value, **weights)

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

    def _shown_data(self) -> Any:
        """The data of the dataset picker (or the data given from Python)."""
        if self._data is not None:
            return self._data
        name = self.dataset.value
        if name not in self._loaded:
            self._loaded[name] = load_dataset(name)
        return self._loaded[name]

    def _input_shape(self) -> tuple[int, ...]:
        return tuple(self._shown_data().input_shape)

    def _update_fits(self) -> None:
        """Offer only the model families that fit the current dataset's input shape."""
        shape = self._input_shape()
        fits = models_for(shape)
        self.teacher.set_fits(fits)
        self.student.set_fits(fits)
        self.fits.value = (f"<small>input {shape}: families {', '.join(fits)} fit "
                           f"(of {', '.join(FAMILIES)})</small>")

    # -- actions -------------------------------------------------------------------------------
    def _say(self, text: str, kind: str = "info") -> None:
        color = {"info": "#333", "error": "#b00020", "ok": "#1b5e20"}[kind]
        self.status.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def _build(self, train_teacher: bool | None):
        settings = self.settings()
        data = self._data if self._data is not None else settings.data()
        exp = settings.experiment(data=data, teacher=self._teacher_module, student=self._student_module,
                                  runs=self.runs, train_teacher=train_teacher)
        if exp.config.hint_student is not None:  # a bad layer name fails here, not after the teacher trained
            find_module(exp.student, exp.config.hint_student, "hint_student")
            find_module(exp.teacher, exp.config.hint_teacher, "hint_teacher")
        return exp

    def _start(self, work, label: str, train_teacher: bool | None = None) -> bool:
        if self.job is not None and not self.job.done:
            self._say("a run is in progress: stop it (or wait) before starting another", "error")
            return False
        try:
            self.experiment = self._build(train_teacher)
        except (ValueError, RuntimeError) as e:
            self._say(str(e), "error")
            return False
        for fig, builder in self._curves():
            plots.apply_traces(fig, builder(None))
        exp = self.experiment
        self.job = LiveRun(lambda live: work(exp, live), name=label)
        self.pause_button.disabled = self.stop_button.disabled = False
        self.pause_button.description = "Pause"
        self._say(f"{label}: starting")
        self.job.start()
        self._drawer = threading.Thread(target=self._draw_loop, args=(self.job,), daemon=True)
        self._drawer.start()
        return True

    def train_teacher(self) -> bool:
        """Train (or load from the cache) the teacher only."""
        return self._start(lambda exp, live: exp.prepare_teacher(live), "teacher", train_teacher=True)

    def distill(self) -> bool:
        """Train or load the teacher, then the distilled student and the scratch baseline."""
        return self._start(lambda exp, live: exp.run(live), "distill")

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

    def _live_control(self, change: dict) -> None:
        """A slider moved: during a run the next step uses it."""
        if self.job is None or self.job.done:
            return
        try:
            if change["owner"] is self.temperature:
                self.job.set_controls(temperature=round(self.temperature.value, 4))
            elif change["owner"] is self.alpha and self.mode.value == "alpha":
                self.job.set_controls(alpha=self.alpha.value)
            elif self.mode.value == "weights":
                self.job.set_controls(**{k: s.value for k, s in self.w.items()})
        except ValueError as e:
            self._say(str(e), "error")

    # -- drawing (its own thread) -------------------------------------------------------------
    def _curves(self) -> list[tuple[go.FigureWidget, Any]]:
        """Each curve chart with the plots function that gives its traces from the history."""
        return [(self.accuracy_fig, plots.accuracy_traces), (self.loss_fig, plots.loss_traces),
                (self.agreement_fig, plots.agreement_traces)]

    def _draw_loop(self, job: LiveRun) -> None:
        self._rows, self._cursor, self._start_p, self._last_step = [], 0, None, None
        while True:
            finished = job.done
            self.redraw(job)
            if finished:
                break
            time.sleep(REDRAW_SECONDS)

    def redraw(self, job: LiveRun | None = None) -> None:
        """Bring progress, status and charts up to date with the job's events."""
        job = job or self.job
        if job is None:
            return
        new, self._cursor = job.buffer.since(self._cursor)  # only what arrived since the last redraw
        if not new and not job.done:
            return
        for p in new:
            if isinstance(p, FitStart):
                self._start_p, self._last_step = p, None
            elif isinstance(p, StepEnd) and self._start_p is not None and p.run_id == self._start_p.run_id:
                self._last_step = p
        self._rows.extend(flat_row(p) for p in new if p.event in ("step", "eval", "epoch"))
        cur, last = self._start_p, self._last_step
        if cur is not None:
            self.progress.max = max(cur.steps_planned, 1)
            self.progress.value = last.step if last else 0
            if not job.done and last is not None:
                self._say(f"{cur.role}: step {last.step}/{cur.steps_planned}, loss {last.loss:.4f}, "
                          f"T={last.temperature:g}" + (" (paused)" if job.status == "paused" else ""))
        history = pd.DataFrame(self._rows)
        for fig, builder in self._curves():
            with fig.batch_update():
                plots.apply_traces(fig, builder(history))
        if job.done:
            self._finish(job, job.buffer.all())

    def _finish(self, job: LiveRun, events: list) -> None:
        self.pause_button.disabled = self.stop_button.disabled = True
        ends = [p for p in events if isinstance(p, FitEnd)]
        if job.status == "error":
            self._say(f"{job.name} failed: {job.error}", "error")
        elif job.status in ("diverged", "stopped"):
            why = next((p.message for p in reversed(ends) if p.status == job.status), "")
            self._say(f"{job.name} {job.status}: {why}", "error" if job.status == "diverged" else "info")
        else:
            parts = [f"{p.role} {p.final.get('test_acc', float('nan')):.3f}" for p in ends if p.final]
            self._say(f"{job.name} done; test accuracy: {', '.join(parts)}", "ok")
        if self.experiment is not None:  # its teacher: given, loaded, trained (or partly, if stopped)
            self._teacher = self.experiment.teacher
            self._draw_explorer()

    def _draw_explorer(self) -> None:
        """Redraw the teacher's softened distribution for the chosen test input (no training)."""
        exp, teacher = self.experiment, self._teacher
        running = self.job is not None and not self.job.done
        if teacher is None or (running and (teacher.training or (exp is not None and exp.train_teacher))):
            return  # no teacher yet, or one that the run is training (or about to use) right now
        import torch

        from ..evaluation import logits_of

        data = exp.data if exp is not None else self._shown_data()
        split = data.test if data.test is not None else data.train
        self.sample.max = len(split) - 1
        x = split.x[self.sample.value:self.sample.value + 1]
        device = next(teacher.parameters()).device
        was_training = teacher.training
        try:
            with torch.no_grad():
                logits = logits_of(teacher.eval()(x.to(device)))[0].cpu()
        finally:
            teacher.train(was_training)
        fig = plots.softmax_figure(logits, [round(self.temperature.value, 2)], data.class_names)
        with self.explorer_fig.batch_update():
            self.explorer_fig.data = []
            self.explorer_fig.add_traces(fig.data)
            self.explorer_fig.layout.title = f"teacher's softmax at T={self.temperature.value:.2f} (label {data.class_names[int(split.y[self.sample.value])]})"
