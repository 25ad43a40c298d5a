"""The Explore page's sidebar: what to run (data, models, loss, transfer set, optimization).

Every widget keeps its value in ``st.session_state`` under its key, seeded with the defaults
below, so a job's own settings can be put back into the sidebar before the widgets are drawn
(a reload, or a second viewer of ``?job=``). The widgets that steer a running job (temperature,
weights, divergence and beta) flag a move through ``on_change``: the page sends live controls
only then, never because a fresh session drew its defaults. The model pickers are in
:mod:`workbench.ui.model_pickers`.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from ..data.datasets import from_dataframe, list_datasets, load_dataset, read_csv
from ..data.splits import DataSplits
from ..data.text import from_text
from ..engine.config import KD_DIVERGENCES, TEXT_DEFAULTS
from ..engine.divergences import DIVERGENCES
from ..engine.losses import LossWeights
from ..models.zoo import models_for
from .model_pickers import (
    FROM_FILE,
    FROM_RUN,
    UPLOAD_TEXT,
    ZOO,
    builtin_data,
    default_model,
    md,
    model_ui,
    set_model,
    upload_limit_mb,
)
from .settings import TEXT_SETTINGS, Settings, file_runs_code, is_model_source, text_datasets

UPLOAD = "upload a CSV..."
TEMPERATURES = [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0]
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
BATCH_SIZES = [16, 32, 64, 128, 256]
GENERATED = ("mnist1d", "moons", "spirals")  # datasets that can generate extra unlabeled inputs
MOVED = "live_controls_moved"  # set by the live widgets' on_change, read (and cleared) by the page
# The first screen shows where KD wins (docs/results.md: digits, MLP-16 student, 10% of the
# labels, T=8, alpha=0.1: KD 95.4% vs scratch 88.1%) in well under a minute on a laptop CPU, and
# in seconds once its teacher is cached.
DEFAULTS: dict[str, Any] = {
    "dataset": "digits-images",
    "temperature": 8.0,
    "divergence": "kl",
    "beta": 0.5,
    "mode": "alpha preset",
    "alpha": 0.1,
    "w_ce": 0.5,
    "w_kd": 0.5,
    "w_mse": 0.0,
    "labeled_fraction": 0.1,
    "extra": 0,
    "mixup": False,
    "epochs": 50,
    "teacher_epochs": 20,
    "batch": 64,
    "lr": 3e-3,
    "seed": 0,
}
# Text (a corpus or a .txt) starts from Settings.for_dataset's text values (DistillConfig.for_text's):
# T=1, the top-k KL with its tail bucket, every label, one epoch each, AdamW at 2e-3, 32 blocks a batch.
TEXT_WIDGETS: dict[str, Any] = {
    "temperature": TEXT_SETTINGS["temperature"],
    "divergence": TEXT_SETTINGS["divergence"],
    "alpha": 0.5,
    "labeled_fraction": TEXT_SETTINGS["labeled_fraction"],
    "epochs": TEXT_SETTINGS["epochs"],
    "teacher_epochs": TEXT_SETTINGS["teacher_epochs"],
    "batch": TEXT_SETTINGS["batch_size"],
    "lr": TEXT_SETTINGS["lr"],
}
TEXT_EVAL_EVERY = TEXT_DEFAULTS["eval_every"]  # the most steps between two evaluations of text
KEPT = ("source", "family", "sizes", "run", "trusted", "file_spec")  # a role's widgets whose values are kept


def is_text_choice(name: str | None) -> bool:
    """Whether a data picker choice is text: a built-in corpus or the .txt upload."""
    return name == UPLOAD_TEXT or name in text_datasets()


@dataclass(frozen=True)
class DataChoice:
    """The data picked in the sidebar: a built-in name, an uploaded CSV and its label column, or an
    uploaded text file."""

    name: str
    data: DataSplits | None = None  # the uploaded file's splits
    csv: str | None = None  # the uploaded CSV's name
    target: str | None = None
    error: str | None = None
    text_file: str | None = None  # the uploaded text file's name

    @property
    def text(self) -> bool:
        """Whether the data is text (GPT models, bits per character)."""
        return is_text_choice(self.name)


# -- session state: defaults, a job's settings, callbacks ----------------------------------------
def seed_state() -> None:
    """Give every sidebar widget its default value, unless this session already has one."""
    state = st.session_state
    for key, value in DEFAULTS.items():
        state.setdefault(key, value)
    state.setdefault("last_dataset", state["dataset"])
    for role in ("teacher", "student"):
        state.setdefault(f"{role}_source", ZOO)
        if f"{role}_family" not in state:
            set_model(role, default_model(role, state["dataset"]))
    keep_state()


def keep_state() -> None:
    """Streamlit drops the value of a widget that a run does not draw (the settings while a CSV is
    missing, the family while a run is picked, every one of them while the Compare page is shown);
    set again from here on every run of every page, each value outlives that. (The widgets take no
    default argument: their values come from :func:`seed_state`.)"""
    state = st.session_state
    for key in ["target", *DEFAULTS, *(f"{role}_{k}" for role in ("teacher", "student") for k in KEPT)]:
        if key in state:
            state[key] = state[key]


def restore(settings: Settings, dataset: str, weights: LossWeights | None, files: dict[str, str] | None = None) -> None:
    """Put a job's settings (and its live temperature and weights) into the sidebar's state;
    ``files``: the names its uploaded model files had, by role."""
    state = st.session_state
    state["dataset"] = state["last_dataset"] = dataset
    if settings.target is not None:
        state["target"] = settings.target
    for role in ("teacher", "student"):
        _restore_model(role, getattr(settings, role), settings.trusted, (files or {}).get(role))
    w = weights or settings.config().weights
    state["temperature"] = float(w.temperature)
    state["divergence"], state["beta"] = w.divergence, float(w.beta)
    if settings.alpha is not None and w.mse == 0.0 and abs(w.ce + w.kd - 1.0) < 1e-9:
        state["mode"], state["alpha"] = "alpha preset", float(w.ce)
    else:
        state.update(mode="each term", w_ce=float(w.ce), w_kd=float(w.kd), w_mse=float(w.mse))
    state.update(
        labeled_fraction=float(settings.labeled_fraction),
        extra=int(settings.extra_unlabeled),
        mixup=bool(settings.mixup),
        epochs=int(settings.epochs),
        batch=int(settings.batch_size),
        teacher_epochs=int(settings.teacher_epochs or settings.epochs),
        lr=float(settings.lr),
        seed=int(settings.seed),
    )


def _restore_model(role: str, model: str, trusted: bool, shown: str | None) -> None:
    """A zoo spec into the family and sizes; ``run:ID`` into the run list; a file as the job's file."""
    state = st.session_state
    if model.startswith("run:"):
        state[f"{role}_source"], state[f"{role}_run"] = FROM_RUN, model[len("run:") :]
    elif is_model_source(model):
        runs_code = Path(model).is_file() and file_runs_code(Path(model), model) is not None
        state[f"{role}_source"], state[f"{role}_trusted"] = FROM_FILE, trusted and runs_code
        state[f"{role}_kept"] = (model, shown or Path(model).name)
    else:
        state[f"{role}_source"] = ZOO
        set_model(role, model)


def _model_of(role: str) -> str:
    """The role's model as the sidebar holds it, spaces removed ('mlp:64,32' or 'mlp')."""
    family, sizes = st.session_state[f"{role}_family"], st.session_state[f"{role}_sizes"]
    sizes = "".join(str(sizes).split())
    return f"{family}:{sizes}" if sizes else family


def _dataset_changed() -> None:
    """A new dataset brings its own teacher and student, unless the person typed other models; a
    switch between tables and text also brings that kind's training values, where the person left
    the other kind's."""
    state = st.session_state
    old, new = state.get("last_dataset"), state["dataset"]
    for role in ("teacher", "student"):
        if old is None or _model_of(role) == "".join(default_model(role, old).split()):
            set_model(role, default_model(role, new))
    if old is not None and is_text_choice(old) != is_text_choice(new):
        for key, text_value in TEXT_WIDGETS.items():
            before, after = (text_value, DEFAULTS[key]) if is_text_choice(old) else (DEFAULTS[key], text_value)
            if state.get(key) == before:
                state[key] = after
    state["last_dataset"] = new


_on_moved: list[Callable[[], Any]] = []  # the app's: steer the running job from the widget's callback


def on_controls_moved(fn: Callable[[], Any]) -> None:
    """Call ``fn`` when a live control moves, in the widget's callback: before the page's script runs
    again (which takes a while on a busy machine), so the job gets the value at once."""
    _on_moved[:] = [fn]


def _controls_moved() -> None:
    st.session_state[MOVED] = True
    for fn in _on_moved:
        fn()


def live_weights() -> dict[str, Any]:
    """The temperature, weights, divergence and beta the live widgets hold, as
    ``LiveRun.set_controls`` takes them."""
    state = st.session_state
    if state["mode"] == "alpha preset":
        alpha = float(state["alpha"])
        weights = {"temperature": float(state["temperature"]), "w_ce": alpha, "w_kd": 1.0 - alpha, "w_mse": 0.0}
    else:
        weights = {
            "temperature": float(state["temperature"]),
            "w_ce": float(state["w_ce"]),
            "w_kd": float(state["w_kd"]),
            "w_mse": float(state["w_mse"]),
        }
    return {**weights, "divergence": str(state["divergence"]), "beta": float(state["beta"])}


def _options(key: str, base: list) -> list:
    """``base`` plus the state's value when a job was started with another one (e.g. from Python)."""
    value = st.session_state.get(key)
    return base if value is None or value in base else sorted({*base, value})


# -- data ----------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False)
def input_shape(dataset: str) -> tuple[int, ...]:
    return load_dataset(dataset).input_shape


@st.cache_data(show_spinner="reading the CSV...", max_entries=8)
def read_upload(content: bytes) -> tuple[Any, str | None, str | None]:
    """(DataFrame or None, a note, an error) for an uploaded CSV's bytes; parsed once per content."""
    with tempfile.TemporaryDirectory(prefix="kd-upload-") as folder:
        path = Path(folder) / "upload.csv"
        path.write_bytes(content)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                frame = read_csv(path)
        except ValueError as e:  # the reader names its temporary path: the page names the file
            return None, None, str(e).replace(f"path: {str(path)!r} ", "").replace(str(path), "the file")
        except Exception as e:  # pandas raises many kinds: all mean "not a CSV we can read"
            return None, None, f"not a readable CSV ({type(e).__name__}: {e})"
    note = next((str(w.message).replace(f"{path}: ", "") for w in caught), None)
    return frame, note, None


@st.cache_resource(show_spinner=False, max_entries=4)
def upload_splits(content: bytes, target: str, name: str, seed: int) -> tuple[DataSplits | None, str | None]:
    """The splits of an uploaded CSV (or an error), built once per content, target and seed."""
    frame, _, error = read_upload(content)
    if error is not None:
        return None, error
    try:
        return from_dataframe(frame, target=target, name=name, seed=seed), None
    except ValueError as e:
        return None, str(e)
    except Exception as e:  # a frame no rule foresaw: a message, never a traceback
        return None, f"cannot use this table ({type(e).__name__}: {e})"


@st.cache_resource(show_spinner="reading the text...", max_entries=4)
def text_upload_splits(content: bytes, name: str) -> tuple[DataSplits | None, str | None]:
    """The next-character blocks of an uploaded text file (or an error), built once per content."""
    with tempfile.TemporaryDirectory(prefix="kd-upload-") as folder:
        path = Path(folder) / "upload.txt"
        path.write_bytes(content)
        try:
            return from_text(path, name=name), None
        except ValueError as e:  # the reader names its temporary path: the page names the file
            return None, str(e).replace(f"path: {str(path)!r} ", "").replace(str(path), "the file")


def data_ui() -> DataChoice:
    """Dataset picker: built-in tables, images and text, or an uploaded CSV or .txt file (each
    parsed once, cached by its bytes, and capped in size)."""
    sb = st.sidebar
    options = [*list_datasets(), UPLOAD, *text_datasets(), UPLOAD_TEXT]
    name = sb.selectbox("dataset", options, key="dataset", on_change=_dataset_changed)
    if name == UPLOAD_TEXT:
        return text_ui(name)
    if name != UPLOAD:
        return DataChoice(name)
    file, refused = _uploaded(
        name, "CSV file (one row per sample)", "csv", "", "upload a CSV file to use your own data"
    )
    if refused is not None:
        return refused
    shown = md(file.name)
    content = file.getvalue()
    frame, note, error = read_upload(content)
    if error is not None:
        return DataChoice(name, error=f"{shown}: {md(error)}")
    if frame.shape[1] < 2:
        return DataChoice(name, error=f"{shown}: needs at least one feature column and a target column")
    if note:
        sb.info(f"{shown}: {md(note)}")
    columns = list(frame.columns)
    if st.session_state.get("target") not in columns:
        st.session_state["target"] = columns[-1]
    target = sb.selectbox("target column", columns, key="target")
    stem = file.name.rsplit(".", 1)[0] or file.name
    data, error = upload_splits(content, target, stem, int(st.session_state["seed"]))
    if error is not None:
        return DataChoice(name, error=f"{shown}: {md(error)}")
    return DataChoice(name, data, file.name, str(target))


def _uploaded(name: str, label: str, suffix: str, what: str, missing: str) -> tuple[Any, DataChoice | None]:
    """A sidebar uploader of ``.suffix`` files (its key is the suffix) capped at the upload limit:
    ``(file, None)``, or ``(None, the DataChoice saying what is missing or too big)``."""
    sb = st.sidebar
    limit, limit_error = upload_limit_mb()
    if limit_error:
        sb.error(limit_error)
    file = sb.file_uploader(
        label,
        type=[suffix],
        key=suffix,
        max_upload_size=limit,
        help=f"{what}at most {limit} MB (WORKBENCH_MAX_UPLOAD_MB)",
    )
    if file is None:
        return None, DataChoice(name, error=missing)
    if file.size > limit * 2**20:
        return None, DataChoice(
            name,
            error=f"{md(file.name)}: {file.size / 2**20:.1f} MB is over the upload limit of {limit} MB; "
            "use a smaller file, or raise WORKBENCH_MAX_UPLOAD_MB",
        )
    return file, None


def text_ui(name: str) -> DataChoice:
    """An uploaded UTF-8 text file as next-character blocks; empty, too short or binary files get
    the reader's message, naming the file."""
    sb = st.sidebar
    file, refused = _uploaded(
        name,
        "text file (UTF-8)",
        "txt",
        "plain text to learn to continue, character by character; ",
        "upload a .txt file to distill a language model on your own text",
    )
    if refused is not None:
        return refused
    shown = md(file.name)
    stem = file.name.rsplit(".", 1)[0] or file.name
    data, error = text_upload_splits(file.getvalue(), stem)
    if error is not None:
        return DataChoice(name, error=f"{shown}: {md(error)}")
    sb.caption(
        f"{shown}: {data.spec['chars']:,} characters, a vocabulary of {data.num_classes}, "
        f"{len(data.train)} training blocks of {data.input_shape[0]}"
    )
    return DataChoice(name, data, text_file=file.name)


# -- models and training settings ----------------------------------------------------------------
def settings_ui(choice: DataChoice) -> Settings:
    """The sidebar controls; returns Settings (raises ValueError on a bad combination)."""
    text = choice.text
    data = choice.data if choice.data is not None else builtin_data(choice.name) if text else None
    fits = models_for(data if data is not None else input_shape(choice.name))  # text data: GPT sizes only
    teacher = model_ui("teacher", choice.name, data, fits)
    student = model_ui("student", choice.name, data, fits)
    sb, live = st.sidebar, dict(on_change=_controls_moved)
    sb.subheader("Loss")
    temperature = sb.select_slider(
        "temperature T",
        _options("temperature", TEMPERATURES),
        key="temperature",
        help="softens both outputs; changeable during a run",
        **live,
    )
    divergence = sb.selectbox(
        "divergence",
        _options("divergence", list(KD_DIVERGENCES)),
        key="divergence",
        help="the KD term, changeable during a run: "
        + "; ".join(f"{name}: {DIVERGENCES[name].formula}" for name in KD_DIVERGENCES),
        **live,
    )
    if divergence in DIVERGENCES:
        sb.caption(md(DIVERGENCES[divergence].formula))
    beta = float(DEFAULTS["beta"])  # used by jsd only: the others run (and copy as code) with the default
    if divergence == "jsd":
        beta = sb.slider(
            "beta (JSD)",
            0.0,
            1.0,
            step=0.05,
            key="beta",
            help="M = beta*p + (1-beta)*q: 0 is forward KL, 1 reverse KL; changeable during a run",
            **live,
        )
    mode = sb.radio("weights", ["alpha preset", "each term"], horizontal=True, key="mode", **live)
    weights: dict[str, Any]
    if mode == "alpha preset":
        weights = {
            "alpha": sb.slider(
                "alpha (CE share)", 0.0, 1.0, step=0.05, key="alpha", help="alpha*CE + (1-alpha)*KD", **live
            )
        }
    else:
        weights = {
            "alpha": None,
            **{k: sb.slider(k, 0.0, 2.0, step=0.05, key=k, **live) for k in ("w_ce", "w_kd", "w_mse")},
        }
    sb.subheader("Transfer set")
    labeled = sb.slider(
        "labeled fraction",
        0.01,
        1.0,
        step=0.01,
        key="labeled_fraction",
        help="share of train blocks whose next characters the student's CE sees; KD sees every block"
        if text
        else "share of train labels the student may use; the teacher labels every input",
    )
    generated = choice.data is None and choice.name in GENERATED
    extra = sb.number_input(
        "extra generated inputs",
        0,
        50_000,
        step=1000,
        key="extra",
        disabled=not generated,
        help="mnist1d, moons and spirals only",
    )
    mixup = sb.checkbox(
        "mixup the transfer inputs",
        key="mixup",
        disabled=text,
        help="tables and images only (token ids cannot be mixed)",
    )
    sb.subheader("Optimization")
    epochs = sb.number_input("epochs", 1, 10_000, key="epochs", help="student and baseline")
    teacher_epochs = sb.number_input(
        "teacher epochs",
        1,
        10_000,
        key="teacher_epochs",
        disabled=not teacher.zoo,
        help="a teacher trained once is cached and reused; a loaded teacher is not trained",
    )
    batch = sb.selectbox("batch size", _options("batch", BATCH_SIZES), key="batch")
    lr = sb.select_slider("learning rate", _options("lr", LEARNING_RATES), key="lr")
    seed = sb.number_input("seed", 0, 2**31 - 1, key="seed")
    if choice.csv is not None:
        source = dict(dataset=choice.data.name, csv=choice.csv, target=choice.target)
    elif choice.text_file is not None:
        source = dict(dataset=choice.data.name, text_file=choice.text_file)
    else:
        source = dict(dataset=choice.name)
    text_values = {k: TEXT_SETTINGS[k] for k in ("optimizer", "weight_decay")} if text else {}
    if text:  # about ten evaluations (bits per character, a sample) per run, at most every 100 steps
        steps = -(-len(data.train) // int(batch)) * int(epochs)
        text_values["eval_every"] = max(1, min(TEXT_EVAL_EVERY, steps // 10))
    problem = teacher.error or student.error  # raised once every widget is drawn: nothing is lost
    if problem:
        raise ValueError(problem)
    return Settings(
        **source,
        **text_values,
        teacher=teacher.model,
        student=student.model,
        trusted=teacher.trusted or student.trusted,
        temperature=float(temperature),
        labeled_fraction=float(labeled),
        extra_unlabeled=int(extra) if generated else 0,
        mixup=bool(mixup) and not text,
        divergence=str(divergence),
        beta=float(beta),
        epochs=int(epochs),
        teacher_epochs=int(teacher_epochs),
        batch_size=int(batch),
        lr=float(lr),
        seed=int(seed),
        **weights,
    )


def model_files() -> dict[str, str]:
    """The uploaded files' own names by role (the job keeps them, so a reload can name them)."""
    state = st.session_state
    files = {}
    for role in ("teacher", "student"):
        file = state.get(f"{role}_file") if state.get(f"{role}_source") == FROM_FILE else None
        if file is not None:
            files[role] = file.name
        elif state.get(f"{role}_source") == FROM_FILE and state.get(f"{role}_kept"):
            files[role] = state[f"{role}_kept"][1]
    return files
