"""KD Workbench: knowledge distillation you can watch and steer.

``import workbench`` is cheap: names are imported on first use (module ``__getattr__``), and
nothing here imports a UI package.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DistillConfig": "config",
    "LossWeights": "losses",
    "Distiller": "engine",
    "FitResult": "engine",
    "Controls": "engine",
    "distill": "engine",
    "train": "engine",
    "logits_of": "engine",
    "History": "callbacks",
    "ProgressBar": "callbacks",
    "JsonlWriter": "callbacks",
    "EarlyStopping": "callbacks",
    "LiveRun": "live",
    "EventBuffer": "live",
    "DataSplits": "data",
    "Split": "data",
    "as_splits": "data",
    "load_dataset": "datasets",
    "list_datasets": "datasets",
    "from_arrays": "datasets",
    "from_dataframe": "datasets",
    "from_csv": "datasets",
    "build_model": "models",
    "build_model_from_spec": "models",
    "models_for": "models",
    "count_params": "models",
    "count_macs": "models",
    "measure_latency": "models",
    "describe": "models",
    "parse_model": "models",
    "Experiment": "experiment",
    "ExperimentResult": "experiment",
    "Settings": "settings",
    "list_runs": "runs",
    "load_run": "runs",
    "remove_run": "runs",
    "RunRecorder": "runs",
    "load_checkpoint": "runs",
    "export_run": "export",
    "export_model": "export",
    "load_model": "loading",
    "LoadedModel": "loading",
    "check_compatible": "loading",
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
