"""The Dashboard's model pickers: a zoo spec, a run from the store, or a model file (a path or an
upload), checked against the data when picked."""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w
import torch

from ..experiment import load_source
from ..models.zoo import DEFAULTS, GPT_SIZE_ORDER, TEXT_FAMILIES, build_model, models_for, parse_model
from ..store.runs import runs_root
from .settings import MODEL_FILE_TYPES, SPEC_FILE_TYPES, file_runs_code, is_model_source, model_runs, save_model_upload

GIVEN = "(from Python)"  # the family shown for a model given as a module
ZOO, FROM_RUN, FROM_FILE = "zoo", "from a previous run", "a model file"  # where a picker's model comes from
SOURCES = (ZOO, FROM_RUN, FROM_FILE)
TRUST = "trust this file (it runs code)"
RUN_TOOLTIP = "finished runs on this data in the runs folder, newest first: model · test accuracy · date · run id"
STYLE = {"description_width": "110px"}


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
            tooltip="widths (mlp) or channels (cnn), e.g. 64,32; gpt: layers,width[,heads], e.g. 1,32; "
            "empty: the family's default",
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

    def set_fits(self, fits: list[str], suggested: str | None = None) -> None:
        """Offer only ``fits``; keep the current family when it still fits, else take the zoo spec
        ``suggested`` (e.g. 'gpt:1,32' when the data becomes text) unless sizes were typed for its family."""
        if self.given:
            return
        keep = self.family.value
        if keep not in fits and suggested:
            family, _, sizes = suggested.partition(":")
            if family.strip() in fits:
                self._sizes_by_family.setdefault(family.strip(), sizes.strip())
                keep = family.strip()
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
        try:
            data = self._data()
        except ValueError:
            data = None  # no usable data (a bad text file): no runs to offer; the Dashboard says why
        runs = (
            []
            if data is None
            else model_runs(data.name, self.role, data.input_shape, data.num_classes, root=self._root)
        )
        options = [(r.label, r.run_id) for r in runs]
        keep = selected or self.run.value
        if selected and data is not None and selected not in {r.run_id for r in runs}:  # given in the Settings
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
            needs = ""  # what the data needs, said when a model was loaded and does not fit
            try:
                data = self._data()
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
        if family in TEXT_FAMILIES:  # gpt:LAYERS,WIDTH[,HEADS]
            default = [DEFAULTS[family][k] for k in GPT_SIZE_ORDER[:2]]
        else:
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
