"""The Explore page's sidebar: what to run (data, models, loss, transfer set, optimization).

Every widget keeps its value in ``st.session_state`` under its key, seeded with the defaults
below, so a job's own settings can be put back into the sidebar before the widgets are drawn
(a reload, or a second viewer of ``?job=``). The widgets that steer a running job (temperature
and weights) flag a move through ``on_change``: the page sends live controls only then, never
because a fresh session drew its defaults.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from ..data.datasets import from_dataframe, list_datasets, load_dataset, read_csv
from ..data.splits import DataSplits
from ..engine.losses import LossWeights
from ..models.zoo import FAMILIES, models_for, parse_model
from .settings import DEFAULT_STUDENTS, DEFAULT_TEACHERS, Settings

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
MAX_WIDTH, MAX_LAYERS = 4096, 16  # a typo like 'mlp:100000000' must not take the server's memory
DEFAULT_MAX_UPLOAD_MB = 50


@dataclass(frozen=True)
class DataChoice:
    """The data picked in the sidebar: a built-in name, or an uploaded CSV and its label column."""

    name: str
    data: DataSplits | None = None  # the uploaded CSV's splits
    csv: str | None = None  # the uploaded file's name
    target: str | None = None
    error: str | None = None


# -- session state: defaults, a job's settings, callbacks ----------------------------------------
def default_model(role: str, dataset: str) -> str:
    return (DEFAULT_TEACHERS if role == "teacher" else DEFAULT_STUDENTS).get(
        dataset, "mlp:256,256" if role == "teacher" else "mlp:16"
    )


def seed_state() -> None:
    """Give every sidebar widget its default value, unless this session already has one."""
    state = st.session_state
    for key, value in DEFAULTS.items():
        state.setdefault(key, value)
    state.setdefault("last_dataset", state["dataset"])
    for role in ("teacher", "student"):
        if f"{role}_family" not in state:
            _set_model(role, default_model(role, state["dataset"]))


def restore(settings: Settings, dataset: str, weights: LossWeights | None) -> None:
    """Put a job's settings (and its live temperature and weights) into the sidebar's state."""
    state = st.session_state
    state["dataset"] = state["last_dataset"] = dataset
    if settings.target is not None:
        state["target"] = settings.target
    _set_model("teacher", settings.teacher)
    _set_model("student", settings.student)
    w = weights or settings.config().weights
    state["temperature"] = float(w.temperature)
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


def _set_model(role: str, spec: str) -> None:
    family, _, sizes = spec.partition(":")
    st.session_state[f"{role}_family"] = family.strip()
    st.session_state[f"{role}_sizes"] = sizes.strip()


def _model_of(role: str) -> str:
    """The role's model as the sidebar holds it, spaces removed ('mlp:64,32' or 'mlp')."""
    family, sizes = st.session_state[f"{role}_family"], st.session_state[f"{role}_sizes"]
    sizes = "".join(str(sizes).split())
    return f"{family}:{sizes}" if sizes else family


def _dataset_changed() -> None:
    """A new dataset brings its own teacher and student, unless the person typed other models."""
    state = st.session_state
    old, new = state.get("last_dataset"), state["dataset"]
    for role in ("teacher", "student"):
        if old is None or _model_of(role) == "".join(default_model(role, old).split()):
            _set_model(role, default_model(role, new))
    state["last_dataset"] = new


def _family_changed(role: str) -> None:
    """A new family starts from its default sizes (the dataset's, when it is the dataset's family)."""
    default = default_model(role, st.session_state["dataset"])
    family, _, sizes = default.partition(":")
    st.session_state[f"{role}_sizes"] = sizes if st.session_state[f"{role}_family"] == family else ""


def _controls_moved() -> None:
    st.session_state[MOVED] = True


def live_weights() -> dict[str, float]:
    """The temperature and weights the live widgets hold, as ``LiveRun.set_controls`` takes them."""
    state = st.session_state
    if state["mode"] == "alpha preset":
        alpha = float(state["alpha"])
        return {"temperature": float(state["temperature"]), "w_ce": alpha, "w_kd": 1.0 - alpha, "w_mse": 0.0}
    return {
        "temperature": float(state["temperature"]),
        "w_ce": float(state["w_ce"]),
        "w_kd": float(state["w_kd"]),
        "w_mse": float(state["w_mse"]),
    }


def _options(key: str, base: list) -> list:
    """``base`` plus the state's value when a job was started with another one (e.g. from Python)."""
    value = st.session_state.get(key)
    return base if value is None or value in base else sorted({*base, value})


def md(text: str) -> str:
    """Text a person typed or named, safe inside Streamlit markdown (no links, math or markup)."""
    return "".join("\\" + c if c in "\\`*_[]<>#|~$" else c for c in str(text))


# -- data ----------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False)
def input_shape(dataset: str) -> tuple[int, ...]:
    return load_dataset(dataset).input_shape


def upload_limit_mb() -> tuple[int, str | None]:
    """The upload size cap in MB ($WORKBENCH_MAX_UPLOAD_MB, else 50) and an error for a bad value."""
    raw = os.environ.get("WORKBENCH_MAX_UPLOAD_MB", "").strip()
    if not raw:
        return DEFAULT_MAX_UPLOAD_MB, None
    try:
        mb = int(raw)
        if mb < 1:
            raise ValueError
    except ValueError:
        return DEFAULT_MAX_UPLOAD_MB, (
            f"WORKBENCH_MAX_UPLOAD_MB: {raw!r} is invalid; expected a whole number "
            f"of megabytes >= 1 (using {DEFAULT_MAX_UPLOAD_MB})"
        )
    return mb, None


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


def data_ui() -> DataChoice:
    """Dataset picker; an uploaded CSV is parsed once (cached by its bytes) and capped in size."""
    sb = st.sidebar
    name = sb.selectbox("dataset", [*list_datasets(), UPLOAD], key="dataset", on_change=_dataset_changed)
    if name != UPLOAD:
        return DataChoice(name)
    limit, limit_error = upload_limit_mb()
    if limit_error:
        sb.error(limit_error)
    file = sb.file_uploader(
        "CSV file (one row per sample)",
        type=["csv"],
        key="csv",
        max_upload_size=limit,
        help=f"at most {limit} MB (WORKBENCH_MAX_UPLOAD_MB)",
    )
    if file is None:
        return DataChoice(name, error="upload a CSV file to use your own data")
    shown = md(file.name)
    if file.size > limit * 2**20:
        return DataChoice(
            name,
            error=f"{shown}: {file.size / 2**20:.1f} MB is over the upload limit of {limit} MB; "
            "use a smaller file, or raise WORKBENCH_MAX_UPLOAD_MB",
        )
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


# -- models and training settings ----------------------------------------------------------------
def model_ui(role: str, dataset: str, fits: list[str]) -> str:
    """Family + sizes of one model; returns a zoo spec like 'mlp:64,32' (ValueError when too big)."""
    if st.session_state[f"{role}_family"] not in fits:  # e.g. a CNN kept from image data, now a CSV
        default = default_model(role, dataset)
        _set_model(role, default if default.partition(":")[0] in fits else fits[0])
    family = st.sidebar.selectbox(
        f"{role} family",
        fits,
        key=f"{role}_family",
        on_change=_family_changed,
        args=(role,),
        help=f"families that fit this data (of {', '.join(FAMILIES)})",
    )
    sizes = st.sidebar.text_input(
        f"{role} sizes", key=f"{role}_sizes", help="widths or channels, e.g. 64,32 (empty: default)"
    )
    spec = f"{family}:{sizes.strip()}" if sizes.strip() else family
    _, size = parse_model(spec) if sizes.strip() else (family, {})
    widths = next(iter(size.values()), ())
    if any(w < 1 for w in widths):
        raise ValueError(f"{role} sizes: {sizes!r} is invalid; expected widths of at least 1, e.g. 64,32")
    if len(widths) > MAX_LAYERS or any(w > MAX_WIDTH for w in widths):
        raise ValueError(
            f"{role} sizes: {sizes!r} is too big for this app; expected at most {MAX_LAYERS} "
            f"layers of at most {MAX_WIDTH} each"
        )
    return spec


def settings_ui(choice: DataChoice) -> Settings:
    """The sidebar controls; returns Settings (raises ValueError on a bad combination)."""
    shape = choice.data.input_shape if choice.data is not None else input_shape(choice.name)
    fits = models_for(shape)
    teacher = model_ui("teacher", choice.name, fits)
    student = model_ui("student", choice.name, fits)
    sb, live = st.sidebar, dict(on_change=_controls_moved)
    sb.subheader("Loss")
    temperature = sb.select_slider(
        "temperature T",
        _options("temperature", TEMPERATURES),
        key="temperature",
        help="softens both outputs; changeable during a run",
        **live,
    )
    mode = sb.radio("weights", ["alpha preset", "each term"], horizontal=True, key="mode", **live)
    weights: dict[str, Any]
    if mode == "alpha preset":
        weights = {
            "alpha": sb.slider(
                "alpha (CE share)", 0.0, 1.0, step=0.05, key="alpha", help="alpha*CE + (1-alpha)*T^2*KL", **live
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
        help="share of train labels the student may use; the teacher labels every input",
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
    mixup = sb.checkbox("mixup the transfer inputs", key="mixup")
    sb.subheader("Optimization")
    epochs = sb.number_input("epochs", 1, 10_000, key="epochs", help="student and baseline")
    teacher_epochs = sb.number_input(
        "teacher epochs", 1, 10_000, key="teacher_epochs", help="a teacher trained once is cached and reused"
    )
    batch = sb.selectbox("batch size", _options("batch", BATCH_SIZES), key="batch")
    lr = sb.select_slider("learning rate", _options("lr", LEARNING_RATES), key="lr")
    seed = sb.number_input("seed", 0, 2**31 - 1, key="seed")
    data = (
        dict(dataset=choice.name)
        if choice.csv is None
        else dict(dataset=choice.data.name, csv=choice.csv, target=choice.target)
    )
    return Settings(
        **data,
        teacher=teacher,
        student=student,
        temperature=float(temperature),
        labeled_fraction=float(labeled),
        extra_unlabeled=int(extra) if generated else 0,
        mixup=bool(mixup),
        epochs=int(epochs),
        teacher_epochs=int(teacher_epochs),
        batch_size=int(batch),
        lr=float(lr),
        seed=int(seed),
        **weights,
    )
