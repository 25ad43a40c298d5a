"""Export a trained student for deployment: a ``torch.export`` program (``.pt2``) or a
state_dict + spec; its size, cost and measured CPU latency go into the run summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .runs import RECORD_FILES, RunRecord, atomic_write_json, load_run, read_object, runs_root

FORMATS = ("export", "state_dict")


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


def export_run(
    run_id: str, fmt: str = "export", root: str | os.PathLike | None = None, out: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Export a finished run's model and add params, MACs and CPU latency to its summary."""
    from ..models.zoo import count_macs, count_params, measure_latency

    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is invalid; valid: {', '.join(FORMATS)}")
    rec = load_run(run_id, root)
    if rec.model is None:
        raise ValueError(f"run: {run_id!r} has no rebuildable model (it is {rec.status}, or not a zoo model)")
    shape = tuple(rec.model.spec["input_shape"])
    suffix = ".pt2" if fmt == "export" else ".pt"
    target = _export_path(out, rec, suffix, root)
    try:
        path = export_model(rec.model, shape, target, fmt)
    except OSError as e:  # e.g. a parent that is a file, or no permission
        raise ValueError(
            f"out: cannot write {str(target)!r} ({e.strerror or e}); expected a writable file path"
        ) from None
    facts = {
        "params": count_params(rec.model),
        "macs": count_macs(rec.model, shape),
        "latency_ms_batch1": measure_latency(rec.model, shape, batch_size=1)["median_ms"],
        "latency_ms_batch256": measure_latency(rec.model, shape, batch_size=256)["median_ms"],
        f"exported_{fmt}": str(path),
    }
    summary = read_object(rec.path / "summary.json")
    summary.update(facts)
    atomic_write_json(rec.path / "summary.json", summary)
    return facts
