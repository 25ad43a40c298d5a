"""One loader for teachers and students: a run in the store, a weights file with its spec, a
``torch.export`` program, TorchScript, or a local Hugging Face folder.

``load_model(source)`` picks the format (``kind``) from the source:

- ``"run:ID"`` (run): a run in the store, through its gate (``load_run``): spec.json + model.pt,
  or for a model loaded from a Hugging Face folder, model.pt alone (it carries the HF config);
- ``*.pt`` / ``*.pth`` (state_dict): ``load_checkpoint`` (weights_only) + a zoo spec;
- ``*.safetensors`` (safetensors): ``safetensors.torch.load_file`` + a zoo spec;
- a folder with config.json (hf): ``AutoModelForSequenceClassification`` / ``AutoModelForCausalLM``;
- ``*.pt2`` (export, trusted only): ``torch.export.load(path).module()``;
- ``*.ts`` / ``*.torchscript``, or a ``.pt`` that is a TorchScript archive (torchscript, trusted
  only): ``torch.jit.load``.

The spec of a weights file is ``<stem>.spec.json`` next to it (what ``workbench export --format
state_dict`` writes: ``student.pt`` -> ``student.spec.json``), else ``spec.json`` in the same
folder (a run folder's layout). Nothing in a file runs unless ``trusted=True``: weights load
with ``weights_only=True`` or from safetensors, Hugging Face folders load with
``trust_remote_code=False`` and no network. TorchScript and ``.pt2`` programs are code: torch's
docs say never to ``torch.export.load`` an untrusted file (it falls back to a full unpickle when
the weights-only one fails), so both need ``trusted=True``.

The Hugging Face wrapper, its offline loading and its checks against a dataset are in ``hf.py``.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.splits import DataSplits, Split
from ..store.runs import load_checkpoint, load_run
from . import hf
from .hf import HF_EXTRA, HFLogits, hf_task_of  # noqa: F401  (HFLogits, hf_task_of: public here too)
from .zoo import build_model_from_spec

KINDS = ("run", "export", "state_dict", "safetensors", "hf", "torchscript")
ROLES = ("teacher", "student")
STATE_DICT_SUFFIXES = (".pt", ".pth")
TORCHSCRIPT_SUFFIXES = (".ts", ".torchscript")
_SOURCES = (
    "expected 'run:ID', a .pt/.pth state_dict or .safetensors file with a spec, a Hugging Face "
    "folder (config.json), or with trusted=True a .pt2 torch.export program or TorchScript (.ts)"
)


@dataclass(frozen=True)
class LoadedModel:
    """A model read from a source, ready to use as a teacher or a student.

    ``description`` is one line for UIs; ``spec`` rebuilds zoo models (None otherwise);
    ``hf_task`` is "sequence-classification" or "causal-lm" for Hugging Face models, else None.
    """

    module: nn.Module
    description: str
    kind: str
    source: str
    spec: dict[str, Any] | None = None
    hf_task: str | None = None
    tokenizer: dict[str, Any] | None = None  # a run's: the text data it was trained on (token ids mean these)


def load_model(
    source: str | os.PathLike,
    *,
    trusted: bool = False,
    data: DataSplits | None = None,
    role: str = "teacher",
    root: str | os.PathLike | None = None,
) -> LoadedModel:
    """Load a teacher or student from ``source`` (see the module docstring for the formats).

    ``trusted`` allows formats that run code (TorchScript, ``.pt2``); ``data`` checks the model
    against a dataset (:func:`check_compatible`, with ``role`` in its messages); ``root`` is the
    runs folder for ``run:ID`` (else ``$WORKBENCH_RUNS``, else ``./runs``).
    """
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is invalid; valid: {', '.join(ROLES)}")
    if not isinstance(trusted, bool):
        raise ValueError(f"trusted: {trusted!r} is invalid; expected True or False")
    if isinstance(source, str) and source.startswith("run:"):
        loaded = _load_run(source, source[len("run:") :], root)
    elif isinstance(source, (str, os.PathLike)) and os.fspath(source):
        loaded = _load_path(Path(source), trusted)
    else:
        raise ValueError(f"source: {source!r} is invalid; {_SOURCES}")
    if data is not None:
        check_compatible(loaded, data, role)
    return loaded


def _load_path(path: Path, trusted: bool) -> LoadedModel:
    """Dispatch a file or folder on what it is: folder, suffix, or a TorchScript archive named .pt."""
    if not path.exists():
        raise ValueError(f"source: {str(path)!r} does not exist; {_SOURCES}")
    if path.is_dir():
        return _load_hf(path)
    suffix = path.suffix.lower()
    if suffix in TORCHSCRIPT_SUFFIXES or (suffix in STATE_DICT_SUFFIXES and _is_torchscript(path)):
        return _load_torchscript(path, trusted)
    if suffix in STATE_DICT_SUFFIXES:
        return _with_spec(path, "state_dict", _state_dict(path))
    if suffix == ".safetensors":
        return _with_spec(path, "safetensors", _safetensors(path))
    if suffix == ".pt2":
        return _load_export(path, trusted)
    raise ValueError(f"source: {str(path)!r} has an unknown extension {suffix or '(none)'!r}; {_SOURCES}")


def _spec_label(spec: dict[str, Any]) -> str:
    """``mlp:64,32`` / ``cnn2d:32,64`` for zoo specs (the CLI's model syntax), else the family."""
    sizes = spec.get("hidden", spec.get("channels"))
    family = str(spec.get("family", "model"))
    return f"{family}:{','.join(map(str, sizes))}" if isinstance(sizes, list) and sizes else family


# --- runs and weights files with a spec -------------------------------------------------------


def _load_run(source: str, run_id: str, root: str | os.PathLike | None) -> LoadedModel:
    """A run's model through the store's gate: a valid id in the root, weights_only weights; a zoo
    model from its spec.json, a Hugging Face model from the config its weights carry."""
    rec = load_run(run_id, root)
    if rec.model is None and hf.is_hf_state(rec.state_dict):  # a model loaded from a HF folder, then trained
        module = hf.hf_from_state(rec.state_dict, f"source: {source!r}")
        return LoadedModel(module, hf.describe(module, f"run {run_id}"), "run", source, None, module.hf_task)
    if rec.model is None:
        why = (
            f"it has no weights (model.pt): it is {rec.status}"
            if rec.state_dict is None
            else "it has weights but no spec.json to rebuild the model from"
        )
        raise ValueError(f"source: {source!r} cannot be loaded: {why}; expected a finished run of a zoo model")
    spec = dict(rec.model.spec)
    tokenizer = (rec.config.get("data_spec") or {}).get("tokenizer")
    return LoadedModel(
        rec.model.eval(),
        f"{_spec_label(spec)} from run {run_id}, {hf.params_text(rec.model)}",
        "run",
        source,
        spec,
        tokenizer=tokenizer if isinstance(tokenizer, dict) else None,
    )


def _checked_state(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"source: {str(path)!r} holds a {type(state).__name__} that is not a state_dict; "
            "expected a dict of parameter names to tensors (torch.save(model.state_dict(), path))"
        )
    return state


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ``.pt`` state_dict, loaded weights_only (a crafted pickle is refused, nothing runs)."""
    return _checked_state(load_checkpoint(path), path)


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file: a header of names, dtypes and shapes plus raw bytes (no code to run)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ImportError(
            f"source: {str(path)!r} is a safetensors file; reading it needs the safetensors "
            f"package: {HF_EXTRA}, or pip install safetensors"
        ) from None
    try:
        return _checked_state(load_file(str(path), device="cpu"), path)
    except Exception as e:  # safetensors raises its own SafetensorError on a bad header
        raise ValueError(f"source: {str(path)!r} is not a readable safetensors file ({hf.first_line(e)})") from None


def _spec_file(path: Path) -> Path:
    """``<stem>.spec.json`` next to the weights, else ``spec.json`` in their folder."""
    for candidate in (path.with_suffix(".spec.json"), path.parent / "spec.json"):
        if candidate.is_file():
            return candidate
    raise ValueError(
        f"source: {str(path)!r} has no spec next to it; expected "
        f"{str(path.with_suffix('.spec.json'))!r} or {str(path.parent / 'spec.json')!r} holding "
        "the model.spec dict of the zoo model that wrote these weights"
    )


def _read_object(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"source: {str(path)!r} is not readable JSON ({hf.first_line(e)})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"source: {str(path)!r} holds {type(obj).__name__}; expected a JSON object")
    return obj


def _with_spec(path: Path, kind: str, state: dict[str, torch.Tensor]) -> LoadedModel:
    """The zoo model of the spec next to ``path``, holding the weights of ``state``."""
    spec_path = _spec_file(path)
    spec = _read_object(spec_path)
    try:
        model = build_model_from_spec(spec)
    except ValueError as e:
        raise ValueError(
            f"source: {str(spec_path)!r} does not describe a zoo model ({e}); "
            "expected the model.spec dict of the model that wrote the weights"
        ) from None
    _fit_weights(model, state, path, spec_path)
    return LoadedModel(
        model.eval(),
        f"{_spec_label(spec)} from {path.name}, {hf.params_text(model)}",
        kind,
        str(path),
        dict(model.spec),
    )


def _fit_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path, spec_path: Path) -> None:
    """Load ``state`` into ``model`` or say which names and shapes differ from the spec's model."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
        for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong size", resized))
        if names
    ]
    if problems:
        raise ValueError(
            f"source: {str(path)!r} does not fit the model of {str(spec_path)!r} "
            f"({_spec_label(model.spec)}): {'; '.join(problems)}; expected the state_dict of that "
            "model (the same names and shapes)"
        )
    model.load_state_dict(state)


# --- programs that run code: TorchScript and torch.export -------------------------------------


def _is_torchscript(path: Path) -> bool:
    """Whether a ``.pt`` file is a TorchScript archive (a zip with a ``code/`` folder), not a state_dict."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in name for name in z.namelist())
    except zipfile.BadZipFile:  # a state_dict in torch's legacy format, or a corrupt file (named later)
        return False


def _untrusted(path: Path, what: str) -> ValueError:
    return ValueError(
        f"source: {str(path)!r} is {what}: loading it runs code stored in the file; refused "
        "because trusted=False. Pass trusted=True (CLI: --trusted) only for a file you made or "
        "whose author you trust, or load a state_dict/safetensors file with its spec instead"
    )


def _load_torchscript(path: Path, trusted: bool) -> LoadedModel:
    if not trusted:
        raise _untrusted(path, "a TorchScript program")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise ValueError(
            f"source: {str(path)!r} is not a loadable TorchScript program ({hf.first_line(e)}); "
            "expected a file written by torch.jit.save"
        ) from None
    return LoadedModel(
        module.eval(), f"TorchScript program {path.name}, {hf.params_text(module)}", "torchscript", str(path)
    )


class ExportedModule(nn.Module):
    """A ``torch.export`` program's module that accepts ``.train()`` / ``.eval()`` (the engine calls
    them; the program's own module raises NotImplementedError). Its behaviour was fixed when it was
    exported (``workbench export`` traces in eval mode), so the mode changes only the flag."""

    def __init__(self, program_module: nn.Module):
        super().__init__()
        self.program = program_module

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self

    def forward(self, *args: Any) -> Any:
        return self.program(*args)


def _load_export(path: Path, trusted: bool) -> LoadedModel:
    if not trusted:
        raise _untrusted(path, "a torch.export program (torch.export.load may unpickle without weights_only)")
    try:
        module = ExportedModule(torch.export.load(str(path)).module()).eval()
    except Exception as e:
        raise ValueError(
            f"source: {str(path)!r} is not a loadable torch.export program ({hf.first_line(e)}); "
            "expected a .pt2 file written by torch.export.save (workbench export)"
        ) from None
    return LoadedModel(module, f"torch.export program {path.name}, {hf.params_text(module)}", "export", str(path))


# --- Hugging Face folders (the model code is in hf.py) -----------------------------------------


def _hf_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json, checked: a model config, a known task, no remote code."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(
            f"source: {str(folder)!r} is a folder without config.json: not a Hugging Face model folder; {_SOURCES}"
        )
    config = _read_object(config_path)
    if "architectures" not in config and "model_type" not in config:
        raise ValueError(
            f"source: {str(config_path)!r} names no 'architectures' or 'model_type': not a Hugging "
            "Face model config; expected a folder written by save_pretrained"
        )
    if "auto_map" in config:
        raise ValueError(
            f"source: {str(config_path)!r} has an 'auto_map': the model needs code from the folder "
            "or the Hub (trust_remote_code); refused: only models built into transformers load here"
        )
    archs = config.get("architectures")
    if not isinstance(archs, list) or hf.hf_task_of([str(a) for a in archs]) is None:
        raise ValueError(
            f"source: {str(config_path)!r} has architectures {archs!r}; expected one ending in "
            "ForSequenceClassification, ForCausalLM or LMHeadModel (e.g. BertForSequenceClassification, "
            "GPT2LMHeadModel)"
        )
    return config


def _load_hf(folder: Path) -> LoadedModel:
    """A local save_pretrained folder: local files only, no remote code, no network."""
    config = _hf_config(folder)
    task = hf.hf_task_of([str(a) for a in config["architectures"]])
    module = hf.load_folder(folder, task)
    return LoadedModel(module, hf.describe(module, folder.name), "hf", str(folder), None, task)


# --- compatibility with a dataset -------------------------------------------------------------


def check_compatible(loaded: LoadedModel, data: DataSplits, role: str = "teacher") -> None:
    """Check that ``loaded`` fits ``data`` by one forward pass on 2 rows of the train split.

    The logits must have shape (2, K) when the data has one label per sample, and (2, L, K) when
    it has one target per position (text), where K = ``data.num_classes`` (the classes, or the
    vocabulary size). A mismatch is a ``ValueError`` naming the model's source; for a student it
    also says how to build a fresh one that fits.
    """
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is invalid; valid: {', '.join(ROLES)}")
    if not isinstance(loaded, LoadedModel):
        raise ValueError(f"loaded: {type(loaded).__name__} is invalid; expected the LoadedModel of load_model()")
    if not isinstance(data, DataSplits):
        raise ValueError(f"data: {type(data).__name__} is invalid; expected a DataSplits (workbench.as_splits)")
    x, y = _two_rows(data)
    k = data.num_classes
    fix = _student_fix(loaded, k) if role == "student" else "; expected a teacher trained on this data"
    here = f"{role}: {loaded.source!r}"
    built_for = tuple((loaded.spec or {}).get("input_shape", ()))
    if built_for and built_for != tuple(data.input_shape):
        raise ValueError(
            f"{here} was built for inputs of shape {built_for}, but data {data.name!r} has inputs "
            f"of shape {tuple(data.input_shape)}{fix}"
        )
    ours = data.spec.get("tokenizer")
    if loaded.tokenizer is not None and isinstance(ours, dict) and loaded.tokenizer != ours:

        def chars(tokenizer: dict) -> str:
            c = str(tokenizer.get("chars", ""))
            return f"{len(c)} characters {c[:20]!r}" + ("..." if len(c) > 20 else "")

        raise ValueError(
            f"{here} was trained on text with another vocabulary ({chars(loaded.tokenizer)}) than data "
            f"{data.name!r} ({chars(ours)}): its token ids would mean other characters{fix}"
        )
    if isinstance(loaded.module, hf.HFLogits):  # its config says what fits: clearer than a failed forward
        hf_here = f"{role}: HF folder {loaded.source!r}" if loaded.kind == "hf" else here
        hf.check_fits(
            loaded.module, data, x, y, hf_here, hf.student_fix(loaded.module, data) if role == "student" else fix
        )
    out = _forward(loaded.module, x, here, data, fix)
    want = (len(x), k) if y.ndim == 1 else (len(x), y.shape[1], k)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != want:
        needs = (
            f"{k} classes, one prediction per sample"
            if y.ndim == 1
            else f"one prediction per position over a vocabulary of {k} tokens"
        )
        raise ValueError(
            f"{here} outputs logits of shape {got} for a batch of {len(x)}, but data {data.name!r} "
            f"needs {want} ({needs}){fix}"
        )


def _two_rows(data: DataSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of the first 2 rows of the train split (a Split or a DataLoader)."""
    train = data.train
    if isinstance(train, Split):
        return train.x[:2], train.y[:2]
    x, y = next(iter(train))[:2]
    return x[:2], y[:2]


def _student_fix(loaded: LoadedModel, k: int) -> str:
    zoo = _spec_label(loaded.spec) if loaded.spec and loaded.spec.get("family") else "mlp:16"
    return (
        f"; build a fresh student with num_classes={k} for this data instead, e.g. --student {zoo} "
        f"(or workbench.build_model(family, data, ...))"
    )


def _forward(module: nn.Module, x: torch.Tensor, here: str, data: DataSplits, fix: str) -> Any:
    """``module(x)`` in eval mode without gradients (its mode restored after); errors named."""
    first = next(module.parameters(), None)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(x.to(first.device) if first is not None else x)
    except Exception as e:
        raise ValueError(
            f"{here} does not accept the inputs of data {data.name!r} (a batch of shape "
            f"{tuple(x.shape)}, {x.dtype}): {hf.first_line(e)}{fix}"
        ) from None
    finally:
        module.train(was_training)
