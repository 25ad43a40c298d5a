"""KD Workbench: knowledge distillation you can watch and steer.

``import workbench`` is cheap: names are imported on first use (module ``__getattr__``), and
nothing here imports a UI package.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DistillConfig": "engine.config",
    "LossWeights": "engine.losses",
    "Distiller": "engine.distiller",
    "FitResult": "engine.distiller",
    "Controls": "engine.distiller",
    "distill": "engine.distiller",
    "train": "engine.distiller",
    "logits_of": "engine.distiller",
    "History": "engine.callbacks",
    "ProgressBar": "engine.callbacks",
    "JsonlWriter": "engine.callbacks",
    "EarlyStopping": "engine.callbacks",
    "LiveRun": "engine.live",
    "EventBuffer": "engine.live",
    "DataSplits": "data.splits",
    "Split": "data.splits",
    "as_splits": "data.splits",
    "load_dataset": "data.datasets",
    "list_datasets": "data.datasets",
    "from_arrays": "data.datasets",
    "from_dataframe": "data.datasets",
    "from_csv": "data.datasets",
    "from_text": "data.text",
    "load_text_dataset": "data.text",
    "teacher_text": "engine.teacher_outputs",
    "build_model": "models.zoo",
    "build_model_from_spec": "models.zoo",
    "models_for": "models.zoo",
    "count_params": "models.zoo",
    "count_macs": "models.zoo",
    "measure_latency": "models.zoo",
    "describe": "models.zoo",
    "parse_model": "models.zoo",
    "Experiment": "experiment",
    "ExperimentResult": "experiment",
    "Settings": "ui.settings",
    "list_runs": "store.runs",
    "load_run": "store.runs",
    "remove_run": "store.runs",
    "RunRecorder": "store.runs",
    "load_checkpoint": "store.runs",
    "export_run": "store.export",
    "export_model": "store.export",
    "load_model": "models.load",
    "LoadedModel": "models.load",
    "check_compatible": "models.load",
    "Dashboard": "ui.widgets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
