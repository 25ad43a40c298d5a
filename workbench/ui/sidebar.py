"""The Explore page's sidebar: what to run (data, models, loss, transfer set, optimization).

Every widget keeps its value in ``st.session_state`` under its key, seeded with the defaults
below, so a job's own settings can be put back into the sidebar before the widgets are drawn
(a reload, or a second viewer of ``?job=``). The widgets that steer a running job (temperature
and weights) flag a move through ``on_change``: the page sends live controls only then, never
because a fresh session drew its defaults.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
import torch

from ..data.datasets import from_dataframe, list_datasets, load_dataset, read_csv
from ..data.splits import DataSplits
from ..engine.losses import LossWeights
from ..experiment import load_source
from ..models.zoo import FAMILIES, build_model, models_for, parse_model
from ..store.runs import runs_root
from .settings import (
    DEFAULT_STUDENTS,
    DEFAULT_TEACHERS,
    MODEL_FILE_TYPES,
    SPEC_FILE_TYPES,
    Settings,
    file_runs_code,
    is_model_source,
    model_runs,
    save_model_upload,
)

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
KEPT = ("source", "family", "sizes", "run", "trusted", "file_spec")  # a role's widgets whose values are kept
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
        state.setdefault(f"{role}_source", ZOO)
        if f"{role}_family" not in state:
            _set_model(role, default_model(role, state["dataset"]))
    # Streamlit drops the value of a widget that a run does not draw (the settings while a CSV is
    # missing, the family while a run is picked); set again from here, each value outlives that.
    for key in [*DEFAULTS, *(f"{role}_{k}" for role in ("teacher", "student") for k in KEPT)]:
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
        _set_model(role, model)


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
ZOO, FROM_RUN, FROM_FILE = "zoo", "from a previous run", "upload a model file"
SOURCES = (ZOO, FROM_RUN, FROM_FILE)
TRUST = "trust this file (it runs code)"


@dataclass(frozen=True)
class ModelPick:
    """A role's model as the sidebar picked it: a zoo spec, ``run:ID`` or an uploaded file's saved path."""

    model: str
    source: str = "zoo"  # one of SOURCES
    trusted: bool = False  # a .pt2 / TorchScript file the person said they trust
    shown: str | None = None  # the uploaded file's own name (messages name it, not the saved path)
    error: str | None = None

    @property
    def zoo(self) -> bool:
        """Whether the model is built from the zoo (and so trained here, for a teacher)."""
        return self.source == ZOO


def zoo_ui(role: str, dataset: str, fits: list[str]) -> str:
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
    return _zoo_spec(role, family, sizes)


def _zoo_spec(role: str, family: str, sizes: str) -> str:
    """``family:sizes`` checked: widths of at least 1, and not too big for a shared server."""
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


def model_ui(role: str, choice: DataChoice, fits: list[str]) -> ModelPick:
    """Where a role's model comes from (the zoo, a previous run, an uploaded file) and which one;
    a problem is returned in ``error`` (never raised), so the rest of the sidebar is still drawn."""
    source = st.sidebar.radio(f"{role} model", SOURCES, key=f"{role}_source", horizontal=True)
    try:
        if source == ZOO:
            return ModelPick(zoo_ui(role, choice.name, fits))
        data = choice.data if choice.data is not None else builtin_data(choice.name)
        pick = run_ui(role, data) if source == FROM_RUN else file_ui(role, data)
    except ValueError as e:
        return ModelPick("", source, error=str(e))
    if pick.error is None:
        pick = dataclasses.replace(pick, error=check_pick(role, pick, data))
    return pick


def run_ui(role: str, data: DataSplits) -> ModelPick:
    """A selectbox of the store's finished runs of this role for this data, newest first."""
    runs = model_runs(data.name, role, data.input_shape, data.num_classes)
    what = "teacher" if role == "teacher" else "student or baseline"
    if not runs:
        note = (
            f"no finished {what} runs for data {data.name!r} in {str(runs_root())!r} yet; run one with a "
            "zoo model first (every run is kept), or upload a model file"
        )
        st.sidebar.info(md(note))
        return ModelPick("", FROM_RUN, error=f"{role}: {note}")
    labels = {r.run_id: r.label for r in runs}
    key = f"{role}_run"
    if st.session_state.get(key) not in labels:
        st.session_state[key] = runs[0].run_id
    run_id = st.sidebar.selectbox(
        f"{role} run",
        list(labels),
        key=key,
        format_func=labels.get,
        help=f"finished {what} runs on this data in the runs folder, newest first: model · test accuracy "
        "· date · run id",
    )
    return ModelPick(f"run:{run_id}", FROM_RUN)


def file_ui(role: str, data: DataSplits) -> ModelPick:
    """An uploaded model file, kept under the runs root (a generated name); weights files also
    need the zoo spec of their model, and files that run code need the trust checkbox."""
    sb, state = st.sidebar, st.session_state
    limit, _ = upload_limit_mb()
    file = sb.file_uploader(
        f"{role} model file",
        type=[t.lstrip(".") for t in MODEL_FILE_TYPES],
        key=f"{role}_file",
        max_upload_size=limit,
        help="a state_dict (.pt/.pth) or .safetensors file with the zoo spec of its model, or a "
        f".pt2 / TorchScript program (runs code: needs the trust box); at most {limit} MB",
    )
    trusted = sb.checkbox(
        TRUST,
        key=f"{role}_trusted",
        help=".pt2 (torch.export) and TorchScript files run code stored in them when loaded: tick "
        "this only for a file you made or whose author you trust",
    )
    if file is None:
        kept = state.get(f"{role}_kept")  # the file of a job whose settings the sidebar shows
        if kept:
            sb.caption(f"{role}: {md(kept[1])} (the job's file)")
            runs_code = Path(kept[0]).is_file() and file_runs_code(Path(kept[0]), kept[0]) is not None
            return ModelPick(kept[0], FROM_FILE, bool(trusted) and runs_code, kept[1])
        return ModelPick(
            "",
            FROM_FILE,
            error=f"{role}: upload a model file: a .pt/.pth/.safetensors state_dict with its zoo spec, "
            f"or a .pt2 / TorchScript program with '{TRUST}' ticked",
        )
    state[f"{role}_kept"] = None  # a new upload replaces the job's file
    shown = file.name
    if file.size > limit * 2**20:
        raise ValueError(
            f"{role} file: {shown!r} is {file.size / 2**20:.1f} MB, over the upload limit of {limit} MB; "
            "use a smaller file, or raise WORKBENCH_MAX_UPLOAD_MB"
        )
    content = file.getvalue()
    program = file_runs_code(content, shown)
    spec = None
    if program is None and Path(shown).suffix.lower() in SPEC_FILE_TYPES:
        text = sb.text_input(
            f"{role} file's zoo spec",
            key=f"{role}_file_spec",
            placeholder="e.g. mlp:64,64",
            help="the zoo model the weights were saved from (family:sizes), built for this data",
        )
        spec = _file_spec(role, text, data)
    if program is not None and not trusted:
        raise ValueError(
            f"{role} file: {shown!r} is {program}: loading it runs code stored in the file; refused. "
            f"Tick '{TRUST}' only for a file you made or whose author you trust, or upload a "
            "state_dict (.pt/.pth) or .safetensors file with its zoo spec instead"
        )
    path = save_model_upload(content, shown, role, spec)
    return ModelPick(str(path), FROM_FILE, bool(trusted) and program is not None, shown)


def _file_spec(role: str, text: str, data: DataSplits) -> dict[str, Any]:
    """The ``model.spec`` dict of a zoo spec typed for an uploaded weights file, for this data."""
    field = f"{role} file's zoo spec"
    compact = "".join(text.split())
    if not compact:
        raise ValueError(
            f"{field}: empty; expected the zoo spec of the model that saved the weights, e.g. mlp:64,64 "
            f"(families for this data: {', '.join(models_for(data.input_shape))})"
        )
    try:
        family, size = parse_model(compact)
        _zoo_spec(role, family, compact.partition(":")[2])  # not too big for this server
        with torch.device("meta"):  # only the spec is wanted: no memory for the weights
            return dict(build_model(family, data, **size).spec)
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from None


@st.cache_resource(show_spinner=False, max_entries=4)
def builtin_data(name: str) -> DataSplits:
    """A built-in dataset, loaded once per server, to check picked models against."""
    return load_dataset(name)


def check_pick(role: str, pick: ModelPick, data: DataSplits) -> str | None:
    """Load a picked run or file and check it against the data; the problem (naming the file the
    person uploaded, and what this data needs) or None."""
    try:
        load_source(pick.model, data, role, trusted=pick.trusted)
    except (ValueError, ImportError) as e:
        message = str(e)
        if pick.shown is not None:
            message = message.replace(repr(pick.model), f"{pick.shown!r} (uploaded)").replace(pick.model, pick.shown)
        return f"{message} (data {data.name!r}: inputs of shape {tuple(data.input_shape)}, {data.num_classes} classes)"
    return None


def settings_ui(choice: DataChoice) -> Settings:
    """The sidebar controls; returns Settings (raises ValueError on a bad combination)."""
    shape = choice.data.input_shape if choice.data is not None else input_shape(choice.name)
    fits = models_for(shape)
    teacher = model_ui("teacher", choice, fits)
    student = model_ui("student", choice, fits)
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
    data = (
        dict(dataset=choice.name)
        if choice.csv is None
        else dict(dataset=choice.data.name, csv=choice.csv, target=choice.target)
    )
    problem = teacher.error or student.error  # raised once every widget is drawn: nothing is lost
    if problem:
        raise ValueError(problem)
    return Settings(
        **data,
        teacher=teacher.model,
        student=student.model,
        trusted=teacher.trusted or student.trusted,
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
