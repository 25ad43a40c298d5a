"""Export a trained student for deployment: a ``torch.export`` program (``.pt2``), a state_dict +
spec, or -- for a model loaded from a Hugging Face folder -- a Hugging Face folder again
(``save_pretrained``); its size (and for zoo models cost and measured CPU latency) go into the run
summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .runs import RECORD_FILES, RunRecord, atomic_write_json, load_run, read_object, runs_root

FORMATS = ("export", "state_dict")  # what export_model writes
RUN_FORMATS = (*FORMATS, "hf")  # what export_run writes: also a Hugging Face folder
HF_FOLDER = "student_hf"  # the default folder of an "hf" export, inside the run's folder
NOT_HF = "format 'hf' needs a model loaded from a Hugging Face folder; use --format export or state_dict"


def export_model(model: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike, fmt: str = "export") -> Path:
    """Write ``model`` as a ``torch.export`` program (batch size dynamic) or as a state_dict."""
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is invalid; valid: {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    if fmt == "state_dict":
        torch.save(model.state_dict(), path)
        spec = getattr(model, "spec", None)
        if spec is not None:
            path.with_suffix(".spec.json").write_text(json.dumps(spec, indent=2))
        return path
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception:  # some models specialise the batch size; export a fixed-shape program
        program = torch.export.export(model, (example,))
    torch.export.save(program, path)
    return path


def load_exported(path: str | os.PathLike) -> Any:
    """Load a ``.pt2`` program; call ``.module()(x)`` on it."""
    return torch.export.load(str(path))


def _export_path(out: str | os.PathLike | None, rec: RunRecord, suffix: str, root: str | os.PathLike | None) -> Path:
    """Where ``export_run`` writes: ``out``, else ``student<suffix>`` in the run's folder.

    ``out`` may be any file outside the runs folder; inside it, only a new file in this run's own
    folder (never one of the files the run is made of, never another run): an export must not
    overwrite the run store.
    """
    if out is None:
        return rec.path / f"student{suffix}"
    if not os.fspath(out):
        default = str(rec.path / f"student{suffix}")
        raise ValueError(f"out: '' is empty; expected a file path, or none for {default!r}")
    if "\0" in os.fspath(out):
        raise ValueError(f"out: {os.fspath(out)!r} holds a NUL character; expected a file path")
    path = Path(out)
    if path.is_dir():
        example = str(path / f"student{suffix}")
        raise ValueError(f"out: {str(path)!r} is a folder; expected a file path, e.g. {example!r}")
    base = runs_root(root)
    for absolute in (lambda p: Path(os.path.abspath(p)), Path.resolve):  # as written, and behind any link
        where, own = absolute(path), absolute(rec.path)
        if where.is_relative_to(absolute(base)) and (where.parent != own or where.name in RECORD_FILES):
            raise ValueError(
                f"out: {str(path)!r} is inside the runs folder {str(base)!r} but not a "
                "new file in the run's own folder; expected a path outside the runs folder, or a "
                f"name other than {', '.join(RECORD_FILES)} in {str(rec.path)!r}"
            )
    return path


def _export_folder(out: str | os.PathLike | None, rec: RunRecord, root: str | os.PathLike | None) -> Path:
    """Where an "hf" export writes: ``out``, else ``student_hf/`` in the run's folder.

    ``out`` is a new folder, an empty one, or an earlier Hugging Face export (a folder with
    config.json) to replace; inside the runs folder, only a new entry in this run's own folder.
    """
    if out is None:
        return rec.path / HF_FOLDER
    if not os.fspath(out) or "\0" in os.fspath(out):
        raise ValueError(f"out: {os.fspath(out)!r} is not a folder path; expected a folder to write the model to")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out: {str(path)!r} is a file; format 'hf' writes a folder (config.json, model.safetensors)")
    if path.is_dir() and any(path.iterdir()) and not (path / "config.json").is_file():
        raise ValueError(
            f"out: {str(path)!r} is a folder with other files in it; expected a new or empty folder, or an "
            "earlier Hugging Face export (with config.json) to replace"
        )
    base = runs_root(root)
    for absolute in (lambda p: Path(os.path.abspath(p)), Path.resolve):  # as written, and behind any link
        where, own = absolute(path), absolute(rec.path)
        if where.is_relative_to(absolute(base)) and (where.parent != own or where.name in RECORD_FILES):
            raise ValueError(
                f"out: {str(path)!r} is inside the runs folder {str(base)!r} but not a new folder in the "
                f"run's own folder; expected a path outside the runs folder, or a name other than "
                f"{', '.join(RECORD_FILES)} in {str(rec.path)!r}"
            )
    return path


def _export_hf(
    rec: RunRecord, run_id: str, root: str | os.PathLike | None, out: str | os.PathLike | None
) -> dict[str, Any]:
    """Write the run's Hugging Face model with ``save_pretrained``; its facts for the summary."""
    from ..models.hf import hf_from_state, hf_quiet, is_hf_state

    if rec.state_dict is None:
        raise ValueError(f"run: {run_id!r} has no weights (model.pt) to export: it is {rec.status}")
    if not is_hf_state(rec.state_dict):
        what = "a zoo model" if rec.model is not None else "a model of its own class, not from a Hugging Face folder"
        raise ValueError(f"format: {NOT_HF} (run {run_id!r} holds {what})")
    module = hf_from_state(rec.state_dict, f"run: {run_id!r}")
    target = _export_folder(out, rec, root)
    try:
        with hf_quiet():
            module.hf_model.save_pretrained(str(target))
    except OSError as e:  # e.g. a parent that is a file, or no permission
        raise ValueError(
            f"out: cannot write {str(target)!r} ({e.strerror or e}); expected a writable folder path"
        ) from None
    return {
        "params": sum(p.numel() for p in module.parameters()),
        "hf_task": module.hf_task,
        "exported_hf": str(target),
    }


def export_run(
    run_id: str,
    format: str = "export",
    root: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export a finished run's model and add what was written (with params, MACs and CPU latency
    for a zoo model) to its summary.

    ``format``: "export" (a ``.pt2`` program), "state_dict" (``.pt`` + ``.spec.json``), or "hf" for a
    model loaded from a Hugging Face folder (a folder written by ``save_pretrained``, loadable with
    ``load_model``). ``out``: the file (folder for "hf"); default: inside the run's folder.
    """
    from ..models.hf import is_hf_state
    from ..models.zoo import count_macs, count_params, measure_latency

    if format not in RUN_FORMATS:
        raise ValueError(f"format: {format!r} is invalid; valid: {', '.join(RUN_FORMATS)}")
    rec = load_run(run_id, root)
    if format == "hf":
        facts = _export_hf(rec, run_id, root, out)
    else:
        if rec.model is None and is_hf_state(rec.state_dict):
            raise ValueError(
                f"format: {format!r} exports zoo models; run {run_id!r} holds a model loaded from a Hugging "
                "Face folder: use format 'hf' (--format hf) to save it as a Hugging Face folder"
            )
        if rec.model is None:
            raise ValueError(f"run: {run_id!r} has no rebuildable model (it is {rec.status}, or not a zoo model)")
        shape = tuple(rec.model.spec["input_shape"])
        suffix = ".pt2" if format == "export" else ".pt"
        target = _export_path(out, rec, suffix, root)
        try:
            path = export_model(rec.model, shape, target, format)
        except OSError as e:  # e.g. a parent that is a file, or no permission
            raise ValueError(
                f"out: cannot write {str(target)!r} ({e.strerror or e}); expected a writable file path"
            ) from None
        facts = {
            "params": count_params(rec.model),
            "macs": count_macs(rec.model, shape),
            "latency_ms_batch1": measure_latency(rec.model, shape, batch_size=1)["median_ms"],
            "latency_ms_batch256": measure_latency(rec.model, shape, batch_size=256)["median_ms"],
            f"exported_{format}": str(path),
        }
    summary = read_object(rec.path / "summary.json")
    summary.update(facts)
    atomic_write_json(rec.path / "summary.json", summary)
    return facts
