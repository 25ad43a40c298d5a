"""The Jupyter Dashboard: pick a teacher and a student, tune temperature and loss weights (also
while a run goes on), and watch the distilled student race a scratch baseline to the teacher.

Training runs on a :class:`~workbench.engine.live.LiveRun` thread. A small drawing thread reads its
event buffer a few times a second and updates the progress bar, status line and plotly
FigureWidgets under ``batch_update`` (tqdm would land in whatever cell runs at the time).
The figures are LiveFigures: the drawing thread's updates and the browser's replies,
which the kernel's own thread applies, never interleave (see there why that matters).
"""

from __future__ import annotations

import contextlib
import html
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipywidgets as w
import pandas as pd
import plotly.graph_objects as go
import torch

from .. import plots
from ..data.datasets import list_datasets, load_dataset
from ..engine.callbacks import flat_row
from ..engine.events import FitEnd, FitStart, StepEnd
from ..engine.hints import find_module
from ..engine.live import LiveRun
from ..experiment import load_source
from ..models.zoo import DEFAULTS, FAMILIES, build_model, models_for, parse_model
from ..store.runs import runs_root
from ..verdict import README_ANCHOR, kd_verdict
from .settings import (
    MODEL_FILE_TYPES,
    SPEC_FILE_TYPES,
    Settings,
    file_runs_code,
    is_model_source,
    model_runs,
    save_model_upload,
)

REDRAW_SECONDS = 0.5  # at most two redraws a second: drawing shares the GIL with training
DEAF_SECONDS = 5.0  # a chart whose browser model applied nothing sent this long ago is replaced
MAX_REVIVALS = 4  # replacements per chart: a browser that never answers is not a reason to loop
_PROBES = itertools.count(1)  # a new value per probe (a replacement chart copies the last one)
SETTLING_SECONDS = 3 * DEAF_SECONDS  # how long a new chart may take to load before the next one is replaced
GIVEN = "(from Python)"  # the family shown for a model given as a module
ZOO, FROM_RUN, FROM_FILE = "zoo", "from a previous run", "a model file"  # where a picker's model comes from
SOURCES = (ZOO, FROM_RUN, FROM_FILE)
TRUST = "trust this file (it runs code)"
RUN_TOOLTIP = "finished runs on this data in the runs folder, newest first: model · test accuracy · date · run id"
STYLE = {"description_width": "110px"}
# The first screen: few labels, where the teacher's soft labels clearly beat scratch (docs/results.md:
# digits MLP-16 with 10% labels); about a minute on a laptop CPU, the teacher trained once and cached.
DEFAULT_SETTINGS = Settings.for_dataset(
    "digits-images", labeled_fraction=0.1, temperature=4.0, alpha=0.1, epochs=40, teacher_epochs=15
)
# Round temperatures only: what the slider shows is what runs and what "copy as code" writes.
TEMPERATURES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0)


def temperature_options(current: float) -> list[tuple[str, float]]:
    """(label, value) pairs for the temperature slider: the round values and ``current``."""
    return [(f"{t:g}", t) for t in sorted({*TEMPERATURES, float(current)})]


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


class _Drawn:
    """What the drawer has read and drawn of one job (a new job never shares it)."""

    def __init__(self, job: LiveRun, cacheable: bool, split: str):
        self.job, self.cacheable, self.split = job, cacheable, split
        self.rows: list[dict] = []  # flat event rows (appended, never rebuilt)
        self.cursor = 0
        self.start: FitStart | None = None  # the latest fit_start, and its latest step
        self.last_step: StepEnd | None = None
        self.teacher_note = ""  # "teacher loaded from the cache" / "teacher trained and cached"


class ModelPicker(w.VBox):
    """One model: a zoo spec (a family dropdown, only families that fit the data, and its sizes), a
    run from the store (``run:ID``), or a model file (a path, or an upload kept under the runs root).

    ``spec`` is ``"mlp:64,32"``, ``"mlp"`` when the sizes are empty (the family's default),
    ``"run:ID"`` or a file's path; it raises ValueError with :attr:`problem` when the pick is not
    usable (no run to pick, no file, a file that runs code and is not trusted, a model that does not
    fit the data). Runs and files are loaded and checked against the data when picked.
    A model given from Python as a module shows as such and cannot be changed here.
    """

    def __init__(
        self,
        role: str,
        spec: str,
        fits: list[str],
        module: Any = None,
        data: Callable[[], Any] | None = None,
        root: str | os.PathLike | None = None,
        trusted: bool = False,
        on_change: Callable[[], None] | None = None,
    ):
        self.role, self._data, self._root = role, data, root
        self.given, self._spec = module is not None, spec
        self._on_change = on_change
        self.problem: str | None = None  # why the pick cannot be used now (None: it can)
        self.loaded = ""  # the description of a loaded run or file
        self._model = ""  # the run or file to load: 'run:ID' or a path (an upload's saved path)
        self._shown: str | None = None  # the name a person gave the file (messages use it, not the saved path)
        self._runs_code = False  # the file is a program (.pt2, TorchScript)
        self._upload: tuple[str, bytes] | None = None  # the latest upload: its name and bytes
        self._quiet = False  # set while the picker itself changes a value (no re-check)
        source = FROM_RUN if spec.startswith("run:") else FROM_FILE if is_model_source(spec) else ZOO
        if data is None and source != ZOO and not self.given:
            raise ValueError(f"{role}: {spec!r} is a model to load; give data= (the data to check it against)")
        zoo_spec = spec if source == ZOO else ""
        family, _, sizes = zoo_spec.partition(":")
        self._sizes_by_family = {family.strip(): sizes.strip()}  # typed sizes, kept across switches
        self._family = ""
        self.source = w.Dropdown(
            options=[GIVEN] if self.given else SOURCES if data is not None else [ZOO],  # (no data: nothing to check)
            value=GIVEN if self.given else source,
            description=role,
            style=STYLE,
            disabled=self.given,
            layout=w.Layout(width="330px"),
        )
        self.source.add_class(f"kd-{role}-source")  # browser tests find the pickers by these classes
        self.family = w.Dropdown(
            options=[GIVEN] if self.given else fits,
            description="family",
            style=STYLE,
            disabled=self.given,
            layout=w.Layout(width="210px"),
        )
        self.sizes = w.Text(
            disabled=self.given,
            layout=w.Layout(width="115px"),
            tooltip="widths (mlp) or channels (cnn), e.g. 64,32; empty: the family's default",
        )
        self.run = w.Dropdown(
            options=[], description="run", style=STYLE, layout=w.Layout(width="330px"), tooltip=RUN_TOOLTIP
        )
        self.run.add_class(f"kd-{role}-run")
        self.path = w.Text(
            value=spec if source == FROM_FILE else "",
            description="file",
            placeholder="path: .pt/.pth/.safetensors, .pt2, .ts",
            continuous_update=False,
            style=STYLE,
            layout=w.Layout(width="330px"),
        )
        self.upload = w.FileUpload(
            accept=",".join(MODEL_FILE_TYPES), multiple=False, description="upload", layout=w.Layout(width="110px")
        )
        self.trust = w.Checkbox(value=bool(trusted), description=TRUST, indent=False, layout=w.Layout(width="215px"))
        self.file_spec = w.Text(
            description="zoo spec",
            placeholder="of a weights file, e.g. mlp:64,64",
            continuous_update=False,
            style=STYLE,
            layout=w.Layout(width="330px"),
            tooltip="the zoo model the weights were saved from (family:sizes); empty: the spec.json beside the file",
        )
        self.note = w.HTML(layout=w.Layout(width="330px"))
        self._zoo_box = w.HBox([self.family, self.sizes], layout=w.Layout(width="330px"))
        self._file_box = w.VBox([self.path, w.HBox([self.upload, self.trust]), self.file_spec])
        self.family.observe(lambda _: self._family_changed(), "value")
        if not self.given:
            self.family.value = family.strip() if family.strip() in fits else fits[0]
        self._family_changed()
        self.source.observe(lambda _: self.refresh(), "value")
        self.run.observe(lambda _: self._changed(), "value")
        self.path.observe(lambda _: self._path_typed(), "value")
        self.upload.observe(lambda _: self._uploaded(), "value")
        for box in (self.trust, self.file_spec):
            box.observe(lambda _: self._changed(), "value")
        super().__init__(
            [self.source, self._zoo_box, self.run, self._file_box, self.note], layout=w.Layout(width="330px")
        )
        self.refresh(notify=False, selected=spec[len("run:") :] if source == FROM_RUN else None)

    @property
    def zoo(self) -> bool:
        """Whether the model is built from the zoo here (and so trained here, for a teacher)."""
        return not self.given and self.source.value == ZOO

    @property
    def spec(self) -> str:
        """The zoo spec, ``run:ID`` or file of the current choice (the Settings' spec for a module
        given from Python); ValueError with :attr:`problem` when the pick cannot be used."""
        if self.given:
            return self._spec
        if self.source.value == ZOO:
            sizes = self.sizes.value.strip()
            return f"{self.family.value}:{sizes}" if sizes else self.family.value
        if self.problem is not None:
            raise ValueError(self.problem)
        return self._model

    @property
    def trusted(self) -> bool:
        """Whether the pick is a program file (it runs code) that the person said they trust."""
        return self.source.value == FROM_FILE and self._runs_code and self.trust.value

    def named(self, message: str) -> str:
        """``message`` with an uploaded file's saved path replaced by the name it was uploaded with."""
        if self._shown is None or not self._model or self._shown == self._model:
            return message
        spec = str(Path(self._model).with_suffix(".spec.json"))  # written from the zoo spec box
        message = message.replace(repr(spec), "the zoo spec given").replace(spec, "the zoo spec given")
        message = message.replace(repr(self._model), repr(self._shown)).replace(self._model, self._shown)
        return message.replace(Path(self._model).name, self._shown)  # descriptions name the file alone

    def set_fits(self, fits: list[str]) -> None:
        """Offer only ``fits``; keep the current family when it still fits."""
        if self.given:
            return
        keep = self.family.value
        self.family.options = fits  # resets the value to the first option
        self.family.value = keep if keep in fits else fits[0]

    def refresh(self, notify: bool = True, selected: str | None = None) -> None:
        """Show the current source's controls, list the store's runs for the data, and check the pick."""
        source = self.source.value
        self._zoo_box.layout.display = None if source in (ZOO, GIVEN) else "none"
        self.run.layout.display = None if source == FROM_RUN else "none"
        self._file_box.layout.display = None if source == FROM_FILE else "none"
        if source == FROM_RUN:
            self._list_runs(selected)
        self._changed(notify)

    def _list_runs(self, selected: str | None = None) -> None:
        """The store's finished runs of this role that fit the data, newest first (keeps the pick)."""
        data = self._data()
        runs = model_runs(data.name, self.role, data.input_shape, data.num_classes, root=self._root)
        options = [(r.label, r.run_id) for r in runs]
        keep = selected or self.run.value
        if selected and selected not in {r.run_id for r in runs}:  # a run given in the Settings: loaded and checked
            options.insert(0, (f"{selected} (not a finished {self.role} run for data {data.name!r})", selected))
        self._quiet = True
        try:
            with self.run.hold_sync():
                self.run.options = options
                self.run.value = keep if keep in {v for _, v in options} else (options[0][1] if options else None)
        finally:
            self._quiet = False

    def _path_typed(self) -> None:
        if not self._quiet:
            self._upload = None  # a typed path replaces an upload
            self._changed()

    def _uploaded(self) -> None:
        if self._quiet or not self.upload.value:
            return
        file = self.upload.value[0]
        self._upload = (str(file["name"]), bytes(file["content"]))
        self._changed()

    def _changed(self, notify: bool = True) -> None:
        """Resolve and check the pick (the run or file is loaded against the data); tell the Dashboard."""
        if self._quiet:
            return
        self.problem, self.loaded, self._model, self._shown, self._runs_code = None, "", "", None, False
        source = self.source.value
        if source in (FROM_RUN, FROM_FILE):
            data = self._data()
            needs = ""  # what the data needs, said when a model was loaded and does not fit
            try:
                self._model = self._pick_run(data) if source == FROM_RUN else self._pick_file(data)
                needs = f" (data {data.name!r}: inputs of shape {tuple(data.input_shape)}, {data.num_classes} classes)"
                loaded = load_source(self._model, data, self.role, trusted=self.trusted, root=self._root)
                self.loaded = self.named(loaded.description)
            except (ValueError, ImportError, OSError) as e:
                text = self.named(str(e))
                self.problem = (text if text.startswith(self.role) else f"{self.role}: {text}") + needs
        self.file_spec.layout.display = "none" if self._runs_code else None
        if self.problem is not None:
            self.note.value = f"<small style='color:#b00020'>{html.escape(self.problem)}</small>"
        elif self.loaded:
            used = "used as is, not trained here" if self.role == "teacher" else "fine-tuned from these weights"
            self.note.value = f"<small>{html.escape(self.loaded)}: {used}</small>"
        else:
            self.note.value = ""
        if notify and self._on_change is not None:
            self._on_change()

    def _pick_run(self, data: Any) -> str:
        if self.run.value is None:
            what = "teacher" if self.role == "teacher" else "student or baseline"
            raise ValueError(
                f"no finished {what} runs for data {data.name!r} in {str(runs_root(self._root))!r} yet; "
                "run one with a zoo model first (Dashboard(runs=True), the app and the CLI keep every run), "
                "or pick a model file"
            )
        return f"run:{self.run.value}"

    def _pick_file(self, data: Any) -> str:
        """The path to load: the typed path, or (for a weights file with a zoo spec, and for an
        upload) a copy kept under the runs root with its spec beside it."""
        if self._upload is not None:
            name, content = self._upload
        elif self.path.value.strip():
            name = self.path.value.strip()
            path = Path(name).expanduser()
            content = path.read_bytes() if path.is_file() else b""
        else:
            raise ValueError(
                f"give a model file's path or upload one: a .pt/.pth/.safetensors state_dict with its zoo "
                f"spec, or a .pt2 / TorchScript program with '{TRUST}' ticked"
            )
        self._shown = name
        program = file_runs_code(content, name) if content else file_runs_code(b"", name)
        self._runs_code = program is not None
        if program is not None and not self.trust.value:
            raise ValueError(
                f"{name!r} is {program}: loading it runs code stored in the file; refused. Tick '{TRUST}' "
                "only for a file you made or whose author you trust, or give a state_dict (.pt/.pth) or "
                ".safetensors file with its zoo spec instead"
            )
        spec = None
        if program is None and Path(name).suffix.lower() in SPEC_FILE_TYPES:
            if self.file_spec.value.strip():
                spec = zoo_spec_for(self.role, self.file_spec.value, data)
            elif self._upload is not None:
                raise ValueError(
                    f"{self.role} file's zoo spec: empty; an uploaded weights file {name!r} needs the zoo spec of "
                    f"the model that saved it, e.g. mlp:64,64 (families for this data: "
                    f"{', '.join(models_for(data.input_shape))})"
                )
        if self._upload is None and (spec is None or not content):
            return name  # loaded where it is (its spec.json beside it, a program; or it does not exist)
        kept = str(save_model_upload(content, name, self.role, spec, root=self._root))
        if self._upload is not None:
            self._quiet = True
            try:
                self.path.value = kept  # where the upload is kept (what "copy as code" writes)
            finally:
                self._quiet = False
        return kept

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


def zoo_spec_for(role: str, text: str, data: Any) -> dict[str, Any]:
    """The ``model.spec`` dict of the zoo model ``text`` (e.g. 'mlp:64,64') built for ``data``:
    what a weights file needs beside it to be loaded (built on the meta device: no memory)."""
    field = f"{role} file's zoo spec"
    compact = "".join(text.split())
    try:
        family, size = parse_model(compact)
        with torch.device("meta"):
            return dict(build_model(family, data, **size).spec)
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from None


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
        self._drawn: _Drawn | None = None
        self._draw_lock = threading.RLock()  # one redraw at a time (the drawer's or a caller's)
        self._next_job = threading.Event()  # set while a new job waits for the last job's drawer
        style = STYLE

        def lay() -> w.Layout:  # one Layout per widget: hiding one must not hide the others
            return w.Layout(width="330px")

        names = ["(your data)"] if data is not None else list_datasets()
        self.dataset = w.Dropdown(
            options=names,
            value=names[0] if data is not None else s.dataset,
            description="dataset",
            style=style,
            layout=lay(),
        )
        fits = models_for(self._input_shape())
        root = runs if isinstance(runs, (str, os.PathLike)) else None  # where runs are listed and loaded
        pick = dict(data=self._shown_data, root=root, trusted=s.trusted, on_change=self._picks_changed)
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
        self.lr = w.FloatLogSlider(
            value=s.lr, base=10, min=-5, max=-0.5, step=0.1, description="lr", style=style, layout=lay()
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

        self.train_button.on_click(lambda _: self.train_teacher())
        self.distill_button.on_click(lambda _: self.distill())
        self.pause_button.on_click(lambda _: self.toggle_pause())
        self.stop_button.on_click(lambda _: self.stop())
        self.code_button.on_click(lambda _: self.show_code())
        self.dataset.observe(lambda _: self._dataset_changed(), "value")
        self.mode.observe(lambda _: self._show_weights(), "value")
        for widget in (self.temperature, self.alpha, *self.w.values()):
            widget.observe(self._live_control, "value")
        self.temperature.observe(lambda _: self._draw_explorer(), "value")
        self.sample.observe(lambda _: self._draw_explorer(), "value")
        self._weights_box = w.VBox([self.alpha, *self.w.values(), self.hint_student, self.hint_teacher])
        self._show_weights()
        self._update_fits()
        self._picks_changed()
        self._draw_explorer()
        controls = w.VBox(
            [
                w.HTML("<b>Data and models</b>"),
                self.dataset,
                self.teacher,
                self.student,
                self.fits,
                w.HTML("<b>Loss</b>"),
                self.temperature,
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
        self._charts = charts = w.VBox(
            [
                self.accuracy_fig,
                self.loss_fig,
                self.agreement_fig,
                w.HTML("<b>Temperature explorer</b>"),
                self.sample,
                self.explorer_fig,
            ],
            layout=w.Layout(width="600px"),
        )
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
        dataset = self.dataset.value if self._data is None else "digits"
        return self._base.replace(
            dataset=dataset,
            teacher=self.teacher.spec,
            student=self.student.spec,
            trusted=self.teacher.trusted or self.student.trusted,
            temperature=float(self.temperature.value),
            labeled_fraction=self.labeled_fraction.value,
            extra_unlabeled=self.extra_unlabeled.value,
            mixup=self.mixup.value,
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

    def _dataset_changed(self) -> None:
        """A new dataset: offer the families that fit it, list its runs, check picked files against it."""
        self._update_fits()
        with self.hold_sync():
            for picker in (self.teacher, self.student):
                picker.refresh(notify=False)
        self._picks_changed()

    def _picks_changed(self) -> None:
        """A model pick changed: Distill (and Train teacher) are enabled only for usable picks, and
        the status line says why not."""
        problem = self.teacher.problem or self.student.problem
        self.distill_button.disabled = problem is not None
        self.train_button.disabled = not (self.teacher.zoo or self.teacher.given) or self.teacher.problem is not None
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

    def _update_fits(self) -> None:
        """Offer only the model families that fit the current dataset's input shape."""
        shape = self._input_shape()
        fits = models_for(shape)
        self.teacher.set_fits(fits)
        self.student.set_fits(fits)
        self.fits.value = f"<small>input {shape}: families {', '.join(fits)} fit (of {', '.join(FAMILIES)})</small>"

    # -- actions -------------------------------------------------------------------------------
    def _say(self, text: str, kind: str = "info") -> None:
        color = {"info": "#333", "error": "#b00020", "ok": "#1b5e20"}[kind]
        self.status.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def _build(self, train_teacher: bool | None):
        settings = self.settings()
        data = self._data if self._data is not None else settings.data()
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

    def _start(self, work, label: str, train_teacher: bool | None = None) -> bool:
        if self.job is not None and not self.job.done:
            self._say("a run is in progress: stop it (or wait) before starting another", "error")
            return False
        try:
            self.experiment = self._build(train_teacher)
        except (ValueError, RuntimeError, ImportError) as e:
            self._say(str(e), "error")
            return False
        if self._drawer is not None:  # the last job's drawer ends with its final redraw
            self._next_job.set()  # (and stops waiting for the browser to draw it)
            self._drawer.join()
            self._next_job.clear()
        exp = self.experiment
        self.job = LiveRun(lambda live: work(exp, live), name=label)
        split = "val" if exp.data.val is not None else "test"  # the split the engine evaluates during a fit
        with self._draw_lock:
            self._drawn = _Drawn(self.job, exp.cache and exp.teacher_key is not None, split)
            loaded = exp.loaded.get("teacher")
            if loaded is not None and not exp.train_teacher:
                self._drawn.teacher_note = f"teacher loaded: {self.teacher.named(loaded.description)}, not trained"
            self._draw_charts(self._drawn, None)
        self.verdict.value = ""
        self.pause_button.disabled = self.stop_button.disabled = False
        self.pause_button.description = "Pause"
        self._pick_problem = False
        note = self._drawn.teacher_note
        self._say(f"{label}: starting" + (f" ({note})" if note else ""))
        self.job.start()
        self._drawer = threading.Thread(target=self._draw_loop, args=(self.job,), daemon=True)
        self._drawer.start()
        return True

    def train_teacher(self) -> bool:
        """Train (or load from the cache) the teacher only; a teacher picked from a run or a file is not trained."""
        if not (self.teacher.zoo or self.teacher.given):
            self._say(
                f"teacher: {self.teacher.source.value!r} is used as is, not trained here; "
                "pick 'zoo' to train a teacher, or press Distill",
                "error",
            )
            return False
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

    def close(self) -> None:
        """Stop the job, wait for it and its drawer, and close every widget of the Dashboard."""
        if hasattr(self, "loss_fig"):  # (also called by __del__, on a Dashboard whose __init__ failed)
            self.stop()
            self.wait(60)
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
            elif change["owner"] is self.alpha and self.mode.value == "alpha":
                self.job.set_controls(alpha=self.alpha.value)
            elif self.mode.value == "weights":
                self.job.set_controls(**{k: s.value for k, s in self.w.items()})
        except ValueError as e:
            self._say(str(e), "error")

    # -- drawing (its own thread) -------------------------------------------------------------
    def _draw_loop(self, job: LiveRun) -> None:
        while True:
            finished = job.done
            self.redraw(job)
            if finished:
                break
            time.sleep(REDRAW_SECONDS)
        self._settle()

    def _settle(self) -> None:
        """After the last redraw, give each chart's view DEAF_SECONDS to apply it, else replace the
        chart (one at a time): the new widget opens with the final state, so the end of a run is drawn."""
        deadline = time.monotonic() + SETTLING_SECONDS + 2 * DEAF_SECONDS
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

    def _figures(self) -> list[LiveFigure]:
        return [self.accuracy_fig, self.loss_fig, self.agreement_fig, self.explorer_fig]

    def redraw(self, job: LiveRun | None = None) -> None:
        """Bring progress, status and charts up to date with the job's events."""
        with self._draw_lock:
            job = job or self.job
            if job is None or self._drawn is None or self._drawn.job is not job:
                return  # no job, or one that a newer job replaced
            d = self._drawn
            finished = job.done  # read before the buffer: a finished job has appended everything
            new, d.cursor = job.buffer.since(d.cursor)  # only what arrived since the last redraw
            if not new and not finished:
                return
            for p in new:
                if isinstance(p, FitStart):
                    d.start, d.last_step = p, None
                elif isinstance(p, StepEnd) and d.start is not None and p.run_id == d.start.run_id:
                    d.last_step = p
                elif isinstance(p, FitEnd) and p.role == "teacher":
                    d.teacher_note = (
                        "teacher loaded from the cache"
                        if "teacher cache" in p.message
                        else "teacher trained and cached"
                        if d.cacheable and p.status == "completed"
                        else ""
                    )
            d.rows.extend(flat_row(p) for p in new if p.event in ("step", "eval", "epoch"))
            if d.start is not None:
                self.progress.max = max(d.start.steps_planned, 1)
                self.progress.value = d.last_step.step if d.last_step else 0
                if not finished:
                    self._say(self._running_status(d))
            self._draw_charts(d, pd.DataFrame(d.rows))
            if finished:
                self._finish(d)
            self.revive_charts()

    def revive_charts(self) -> list[str]:
        """Replace a chart whose browser model stopped applying updates (see LiveFigure.deaf) by a new
        widget with the same figure; returns the names of the charts replaced (one at most: the next
        waits until the last new chart has loaded, see LiveFigure.settling)."""
        with self._draw_lock:
            if any(f.settling for f in self._figures() if f._revival):
                return []
            for name in ("accuracy_fig", "loss_fig", "agreement_fig", "explorer_fig"):
                old = getattr(self, name)
                if not old.deaf or old._revival >= MAX_REVIVALS:
                    continue
                with old._edit_lock:
                    new = LiveFigure(go.Figure(old), self._chart_went_deaf)
                new._revival = old._revival + 1
                setattr(self, name, new)
                self._charts.children = tuple(new if c is old else c for c in self._charts.children)
                old.close()
                return [name]
        return []

    def _running_status(self, d: _Drawn) -> str:
        """The status line during a fit: which fit, its step and loss, and where the teacher came from."""
        cur, last = d.start, d.last_step
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
        """Every curve chart from the job's history (None: empty charts, titled for this job)."""
        role = plots.live_role(history)
        charts = [
            (self.accuracy_fig, plots.accuracy_traces(history, d.split), f"{d.split} accuracy"),
            (self.loss_fig, plots.loss_traces(history, role), f"{role} training loss"),
            (self.agreement_fig, plots.agreement_traces(history, d.split), f"teacher-student agreement ({d.split})"),
        ]
        for fig, traces, title in charts:
            with fig.edit():
                plots.apply_traces(fig, traces)
                fig.layout.title.text = title

    def _finish(self, d: _Drawn) -> None:
        """The job ended: say how (and, for a distill run, the verdict); enable the next run."""
        job = d.job
        self.pause_button.disabled = self.stop_button.disabled = True
        ends = [p for p in job.buffer.all() if isinstance(p, FitEnd)]
        note = f" ({d.teacher_note})" if d.teacher_note else ""
        if job.status == "error":
            self._say(f"{job.name} failed: {job.error}", "error")
        elif job.status in ("diverged", "stopped"):
            why = next((p.message for p in reversed(ends) if p.status == job.status), "")
            self._say(f"{job.name} {job.status}: {why}", "error" if job.status == "diverged" else "info")
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

    def _draw_explorer(self) -> None:
        """Redraw the teacher's softened distribution for the chosen test input (no training)."""
        exp, teacher = self.experiment, self._teacher
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
