"""The model pickers: a role's model from the zoo, from a previous run in the store, or from an
uploaded model file, each checked against the data before any training.

A picker keeps its values in ``st.session_state`` under ``<role>_...`` keys (see
:mod:`workbench.ui.sidebar`, which seeds and restores them); problems come back in
:attr:`ModelPick.error`, never raised, so the rest of the sidebar is still drawn. The Explore
page draws them in the sidebar; the Compare page draws :func:`run_ui` and :func:`file_ui` in its
main area (``container``) under keys of its own (``key_prefix``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
import torch

from ..data.datasets import load_dataset
from ..data.splits import DataSplits
from ..engine.sequence import is_sequence
from ..experiment import load_source
from ..models.zoo import ALL_FAMILIES, TEXT_FAMILIES, build_model, parse_model
from ..store.runs import runs_root
from .settings import (
    MODEL_FILE_TYPES,
    SPEC_FILE_TYPES,
    file_runs_code,
    model_runs,
    save_model_upload,
    suggested_model,
)

ZOO, FROM_RUN, FROM_FILE = "zoo", "from a previous run", "upload a model file"
SOURCES = (ZOO, FROM_RUN, FROM_FILE)
TRUST = "trust this file (it runs code)"
MAX_WIDTH, MAX_LAYERS = 4096, 16  # a typo like 'mlp:100000000' must not take the server's memory
# A GPT's cost grows with layers x width^2 x block: smaller caps keep one job from taking the server.
MAX_GPT_WIDTH, MAX_GPT_LAYERS = 1024, 12
DEFAULT_MAX_UPLOAD_MB = 50
UPLOAD_TEXT = "upload a .txt file..."  # the data picker's choice for a person's own text


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


def md(text: str) -> str:
    """Text a person typed or named, safe inside Streamlit markdown (no links, math or markup)."""
    return "".join("\\" + c if c in "\\`*_[]<>#|~$" else c for c in str(text))


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


# -- the zoo ---------------------------------------------------------------------------------------
def default_model(role: str, dataset: str) -> str:
    """The zoo spec a role starts from on ``dataset`` (a sidebar choice: a built-in name or an upload)."""
    return suggested_model(role, dataset, text=True if dataset == UPLOAD_TEXT else None)


def set_model(role: str, spec: str) -> None:
    """Put a zoo spec into the role's family and sizes widgets."""
    family, _, sizes = spec.partition(":")
    st.session_state[f"{role}_family"] = family.strip()
    st.session_state[f"{role}_sizes"] = sizes.strip()


def _family_changed(role: str) -> None:
    """A new family starts from its default sizes (the dataset's, when it is the dataset's family)."""
    default = default_model(role, st.session_state["dataset"])
    family, _, sizes = default.partition(":")
    st.session_state[f"{role}_sizes"] = sizes if st.session_state[f"{role}_family"] == family else ""


def zoo_ui(role: str, dataset: str, fits: list[str], data: DataSplits | None = None) -> str:
    """Family + sizes of one model; returns a zoo spec like 'mlp:64,32' (ValueError when too big
    or, with ``data``, when it cannot be built for it)."""
    if st.session_state[f"{role}_family"] not in fits:  # e.g. a CNN kept from image data, now a CSV
        default = default_model(role, dataset)
        set_model(role, default if default.partition(":")[0] in fits else fits[0])
    family = st.sidebar.selectbox(
        f"{role} family",
        fits,
        key=f"{role}_family",
        on_change=_family_changed,
        args=(role,),
        help=f"families that fit this data (of {', '.join(ALL_FAMILIES)})",
    )
    text = family in TEXT_FAMILIES
    sizes = st.sidebar.text_input(
        f"{role} sizes",
        key=f"{role}_sizes",
        help="LAYERS,WIDTH[,HEADS], e.g. 2,64 (empty: default)"
        if text
        else "widths or channels, e.g. 64,32 (empty: default)",
    )
    spec = zoo_spec(role, family, sizes)
    if data is not None and family in TEXT_FAMILIES:  # heads must divide the width: ask the builder
        _, size = parse_model(spec)
        try:
            with torch.device("meta"):  # only the check is wanted: no memory for the weights
                build_model(family, data, **size)
        except ValueError as e:
            raise ValueError(f"{role} sizes: {sizes!r} is invalid: {e}") from None
    return spec


def zoo_spec(role: str, family: str, sizes: str) -> str:
    """``family:sizes`` checked: widths of at least 1, and not too big for a shared server."""
    spec = f"{family}:{sizes.strip()}" if sizes.strip() else family
    _, size = parse_model(spec) if sizes.strip() else (family, {})
    problem = _size_problem(family, size)
    if problem is not None:
        raise ValueError(f"{role} sizes: {sizes!r} {problem}")
    return spec


def _size_problem(family: str, size: dict[str, Any]) -> str | None:
    """What is wrong with a zoo model's parsed sizes on a shared server (below 1, too big), or None."""
    if family in TEXT_FAMILIES:
        values = [int(v) for v in size.values()]
        layers, width = size.get("n_layer", 1), size.get("n_embd", 1)
        if any(v < 1 for v in values):
            return "is invalid; expected LAYERS,WIDTH[,HEADS] of at least 1, e.g. 2,64"
        if layers > MAX_GPT_LAYERS or width > MAX_GPT_WIDTH:
            return f"is too big for this app; expected at most {MAX_GPT_LAYERS} layers of width at most {MAX_GPT_WIDTH}"
        return None
    widths = next(iter(size.values()), ())
    if any(w < 1 for w in widths):
        return "is invalid; expected widths of at least 1, e.g. 64,32"
    if len(widths) > MAX_LAYERS or any(w > MAX_WIDTH for w in widths):
        return f"is too big for this app; expected at most {MAX_LAYERS} layers of at most {MAX_WIDTH} each"
    return None


def check_zoo_spec(field: str, spec: str, data: DataSplits) -> str:
    """A typed zoo spec (e.g. 'gpt:2,64') checked for ``data``: it parses, its family fits the data
    (gpt for text, the others for tables and images), it is not too big for a shared server, and it
    builds (a GPT's heads divide its width). Returns it without spaces; errors name ``field`` and the spec."""
    compact = "".join(str(spec).split())
    try:
        family, size = parse_model(compact)
    except ValueError as e:
        raise ValueError(f"{field}: {str(e).removeprefix('model: ')}") from None
    problem = _size_problem(family, size)
    if problem is not None:
        raise ValueError(f"{field}: {compact!r} {problem}")
    try:
        with torch.device("meta"):  # only the check is wanted: no memory for the weights
            build_model(family, data, **size)
    except ValueError as e:
        raise ValueError(f"{field}: {compact!r} is invalid: {e}") from None
    return compact


# -- a role's model: the zoo, a previous run, a file ------------------------------------------------
def model_ui(role: str, dataset: str, data: DataSplits | None, fits: list[str]) -> ModelPick:
    """Where a role's model comes from (the zoo, a previous run, an uploaded file) and which one;
    ``dataset``: the sidebar's data choice, ``data``: its splits (None: a built-in, loaded here when
    needed). A problem is returned in ``error`` (never raised), so the rest of the sidebar is still drawn."""
    source = st.sidebar.radio(f"{role} model", SOURCES, key=f"{role}_source", horizontal=True)
    try:
        if source == ZOO:
            return ModelPick(zoo_ui(role, dataset, fits, data))
        data = data if data is not None else builtin_data(dataset)
        pick = run_ui(role, data) if source == FROM_RUN else file_ui(role, data)
    except ValueError as e:
        return ModelPick("", source, error=str(e))
    if pick.error is None:
        pick = dataclasses.replace(pick, error=check_pick(role, pick, data))
    return pick


def run_ui(role: str, data: DataSplits, *, container: Any = None, key_prefix: str | None = None) -> ModelPick:
    """A selectbox of the store's finished runs of this role for this data, newest first; drawn in
    ``container`` (default: the sidebar) under the key ``<key_prefix or role>_run``."""
    where = st.sidebar if container is None else container
    runs = model_runs(data.name, role, data.input_shape, data.num_classes)
    what = "teacher" if role == "teacher" else "student or baseline"
    if not runs:
        note = (
            f"no finished {what} runs for data {data.name!r} in {str(runs_root())!r} yet; run one with a "
            "zoo model first (every run is kept), or upload a model file"
        )
        where.info(md(note))
        return ModelPick("", FROM_RUN, error=f"{role}: {note}")
    labels = {r.run_id: r.label for r in runs}
    key = f"{key_prefix or role}_run"
    if st.session_state.get(key) not in labels:
        st.session_state[key] = runs[0].run_id
    run_id = where.selectbox(
        f"{role} run",
        list(labels),
        key=key,
        format_func=labels.get,
        help=f"finished {what} runs on this data in the runs folder, newest first: model · test accuracy "
        "· date · run id",
    )
    return ModelPick(f"run:{run_id}", FROM_RUN)


def file_ui(role: str, data: DataSplits, *, container: Any = None, key_prefix: str | None = None) -> ModelPick:
    """An uploaded model file, kept under the runs root (a generated name); weights files also
    need the zoo spec of their model, and files that run code need the trust checkbox. Drawn in
    ``container`` (default: the sidebar) under keys ``<key_prefix or role>_file``, ``..._trusted``..."""
    sb, state = (st.sidebar if container is None else container), st.session_state
    prefix = key_prefix or role
    limit, _ = upload_limit_mb()
    file = sb.file_uploader(
        f"{role} model file",
        type=[t.lstrip(".") for t in MODEL_FILE_TYPES],
        key=f"{prefix}_file",
        max_upload_size=limit,
        help="a state_dict (.pt/.pth) or .safetensors file with the zoo spec of its model, or a "
        f".pt2 / TorchScript program (runs code: needs the trust box); at most {limit} MB",
    )
    trusted = sb.checkbox(
        TRUST,
        key=f"{prefix}_trusted",
        help=".pt2 (torch.export) and TorchScript files run code stored in them when loaded: tick "
        "this only for a file you made or whose author you trust",
    )
    if file is None:
        kept = state.get(f"{prefix}_kept")  # the file of a job whose settings the sidebar shows
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
    state[f"{prefix}_kept"] = None  # a new upload replaces the job's file
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
            key=f"{prefix}_file_spec",
            placeholder="e.g. gpt:2,64" if is_sequence(data) else "e.g. mlp:64,64",
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
    from ..models.zoo import models_for

    field = f"{role} file's zoo spec"
    compact = "".join(text.split())
    if not compact:
        raise ValueError(
            f"{field}: empty; expected the zoo spec of the model that saved the weights, e.g. mlp:64,64 "
            f"(families for this data: {', '.join(models_for(data))})"
        )
    try:
        family, size = parse_model(compact)
        zoo_spec(role, family, compact.partition(":")[2])  # not too big for this server
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
