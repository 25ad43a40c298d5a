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
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.splits import DataSplits, Split
from ..store.runs import load_checkpoint, load_run
from .zoo import build_model_from_spec

KINDS = ("run", "export", "state_dict", "safetensors", "hf", "torchscript")
HF_TASKS = ("sequence-classification", "causal-lm")
ROLES = ("teacher", "student")
STATE_DICT_SUFFIXES = (".pt", ".pth")
TORCHSCRIPT_SUFFIXES = (".ts", ".torchscript")
HF_EXTRA = 'install kd-workbench[hf] (pip install "kd-workbench[hf]")'
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes some libraries put in their messages
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
HF_STATE_KEY = "_extra_state"  # an HFLogits state_dict's entry with its task and HF config (JSON bytes)
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


class HFLogits(nn.Module):
    """A Hugging Face model whose ``forward(input_ids, attention_mask=None)`` returns only its
    logits: (B, K) for a sequence classifier, (B, L, V) for a causal LM. ``hf_model`` stays
    reachable (``module.hf_model.save_pretrained(folder)``).

    Token ids may come as floats holding whole numbers (a table's columns are float32): they are
    rounded to int64. Its state_dict carries the task and the HF config (:data:`HF_STATE_KEY`), so a
    run's ``model.pt`` rebuilds the model without the folder it came from.
    """

    def __init__(self, hf_model: nn.Module, hf_task: str):
        super().__init__()
        self.hf_model, self.hf_task = hf_model, hf_task

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.is_floating_point():  # a table of token ids (checked whole numbers by check_compatible)
            input_ids = input_ids.round().long()
        if self.hf_task == "causal-lm":  # no key/value cache: one full forward per call
            return self.hf_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return self.hf_model(input_ids=input_ids, attention_mask=attention_mask).logits

    def get_extra_state(self) -> torch.Tensor:
        """The task and the HF config as UTF-8 JSON bytes (uint8): weights files stay tensors only."""
        text = json.dumps({"hf_task": self.hf_task, "config": json.loads(self.hf_model.config.to_json_string())})
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()

    def set_extra_state(self, state: Any) -> None:
        """Accept the extra state of a model of the same task (the config itself was fixed when built)."""
        info = hf_state_info(state, "state_dict")
        if info["hf_task"] != self.hf_task:
            raise ValueError(
                f"state_dict: holds a Hugging Face {info['hf_task']} model; expected a {self.hf_task} model"
            )


def hf_state_info(state: Any, where: str) -> dict[str, Any]:
    """The ``{"hf_task", "config"}`` dict of an :class:`HFLogits` state_dict's extra state, checked."""
    try:
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.ndim != 1:
            raise TypeError("not a 1-D uint8 tensor")
        info = json.loads(bytes(state.tolist()).decode("utf-8"))
        if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
            raise TypeError("no 'config' object")
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{where}: its {HF_STATE_KEY!r} entry is not the task and config of a Hugging Face model "
            f"({_first_line(e)}); expected a state_dict written from a model loaded from a Hugging Face folder"
        ) from None
    if info.get("hf_task") not in HF_TASKS:
        raise ValueError(f"{where}: hf_task {info.get('hf_task')!r} is invalid; valid: {', '.join(HF_TASKS)}")
    if "auto_map" in info["config"] or not isinstance(info["config"].get("model_type"), str):
        raise ValueError(
            f"{where}: its Hugging Face config has an 'auto_map' or no 'model_type'; refused: only models "
            "built into transformers load here"
        )
    return info


def is_hf_state(state: Any) -> bool:
    """Whether a state_dict was written by an :class:`HFLogits` (a model loaded from a HF folder)."""
    return isinstance(state, dict) and HF_STATE_KEY in state


def hf_from_state(state: dict[str, torch.Tensor], where: str) -> HFLogits:
    """Rebuild an :class:`HFLogits` from its state_dict: the HF config in it, then its weights.

    Nothing is read from the network or run from files: ``from_config`` builds a model class that
    ships with transformers (``trust_remote_code=False``) and the weights are plain tensors.
    """
    info = hf_state_info(state.get(HF_STATE_KEY), where)
    config = dict(info["config"])
    model_type = config.pop("model_type")
    with _offline():
        transformers = _import_transformers(where)
        try:
            hf_config = transformers.AutoConfig.for_model(model_type, **config)
            auto = (
                transformers.AutoModelForSequenceClassification
                if info["hf_task"] == "sequence-classification"
                else transformers.AutoModelForCausalLM
            )
            hf_model = auto.from_config(hf_config, trust_remote_code=False)
        except Exception as e:
            raise ValueError(
                f"{where}: its Hugging Face config (model_type {model_type!r}) could not be built "
                f"({_first_line(e)}); expected a model type that ships with transformers"
            ) from None
    module = HFLogits(hf_model, info["hf_task"])
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise ValueError(f"{where}: its weights do not fit the model of its own config: {detail}") from None
    return module.eval()


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


def _params(module: nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()):,} params"


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
    if rec.model is None and is_hf_state(rec.state_dict):  # a model loaded from a HF folder, then trained
        module = hf_from_state(rec.state_dict, f"source: {source!r}")
        return LoadedModel(module, _hf_description(module, f"run {run_id}"), "run", source, None, module.hf_task)
    if rec.model is None:
        why = (
            f"it has no weights (model.pt): it is {rec.status}"
            if rec.state_dict is None
            else "it has weights but no spec.json to rebuild the model from"
        )
        raise ValueError(f"source: {source!r} cannot be loaded: {why}; expected a finished run of a zoo model")
    spec = dict(rec.model.spec)
    return LoadedModel(
        rec.model.eval(), f"{_spec_label(spec)} from run {run_id}, {_params(rec.model)}", "run", source, spec
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
        raise ValueError(f"source: {str(path)!r} is not a readable safetensors file ({_first_line(e)})") from None


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
        raise ValueError(f"source: {str(path)!r} is not readable JSON ({_first_line(e)})") from None
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
        model.eval(), f"{_spec_label(spec)} from {path.name}, {_params(model)}", kind, str(path), dict(model.spec)
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
            f"source: {str(path)!r} is not a loadable TorchScript program ({_first_line(e)}); "
            "expected a file written by torch.jit.save"
        ) from None
    return LoadedModel(module.eval(), f"TorchScript program {path.name}, {_params(module)}", "torchscript", str(path))


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
            f"source: {str(path)!r} is not a loadable torch.export program ({_first_line(e)}); "
            "expected a .pt2 file written by torch.export.save (workbench export)"
        ) from None
    return LoadedModel(module, f"torch.export program {path.name}, {_params(module)}", "export", str(path))


# --- Hugging Face folders ---------------------------------------------------------------------


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 while loading; the environment restored after."""
    saved = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def hf_quiet() -> Iterator[None]:
    """transformers' progress bars ("Loading weights", "Writing model shards") off while loading or
    saving, so a CLI's output and a UI's log stay clean; the setting restored after."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def hf_task_of(architectures: list[str]) -> str | None:
    """ "sequence-classification" for ``*ForSequenceClassification``, "causal-lm" for ``*ForCausalLM``
    and ``*LMHeadModel`` (GPT-2's name), else None."""
    for arch in architectures:
        if arch.endswith("ForSequenceClassification"):
            return "sequence-classification"
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal-lm"
    return None


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
    if not isinstance(archs, list) or hf_task_of([str(a) for a in archs]) is None:
        raise ValueError(
            f"source: {str(config_path)!r} has architectures {archs!r}; expected one ending in "
            "ForSequenceClassification, ForCausalLM or LMHeadModel (e.g. BertForSequenceClassification, "
            "GPT2LMHeadModel)"
        )
    return config


def _load_hf(folder: Path) -> LoadedModel:
    """A local save_pretrained folder: local files only, no remote code, no network."""
    config = _hf_config(folder)
    task = hf_task_of([str(a) for a in config["architectures"]])
    with _offline():  # set before the first import: huggingface_hub reads it at import time
        transformers = _import_transformers(f"source: {str(folder)!r}")
        auto = (
            transformers.AutoModelForSequenceClassification
            if task == "sequence-classification"
            else transformers.AutoModelForCausalLM
        )
        try:
            with hf_quiet():
                hf_model = auto.from_pretrained(str(folder.resolve()), local_files_only=True, trust_remote_code=False)
        except pickle.UnpicklingError:  # transformers loads .bin weights with weights_only=True
            raise ValueError(
                f"source: {str(folder)!r} holds pickled weights with objects other than tensors; "
                "refused to load them (weights_only=True: loading them could run code)"
            ) from None
        except Exception as e:  # OSError (missing weights), ValueError...
            raise ValueError(
                f"source: {str(folder)!r} could not be loaded as a Hugging Face {task} model "
                f"({_first_line(e)}); expected a folder written by save_pretrained "
                "(config.json and model.safetensors)"
            ) from None
    module = HFLogits(hf_model, task).eval()  # the wrapper too: a later train(was_training) must not undo it
    return LoadedModel(module, _hf_description(module, folder.name), "hf", str(folder), None, task)


def _import_transformers(where: str) -> Any:
    """``transformers`` (call inside :func:`_offline`), or an ImportError naming ``where`` and the extra."""
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"{where} is a Hugging Face model; loading it needs the transformers package: {HF_EXTRA}"
        ) from None
    return transformers


def _hf_description(module: HFLogits, origin: str) -> str:
    """``gpt2 causal LM (vocab 65) from <origin>, 12,345 params``."""
    config = module.hf_model.config
    if module.hf_task == "sequence-classification":
        what, size = "sequence classifier", f"{config.num_labels} classes"
    else:
        what, size = "causal LM", f"vocab {config.vocab_size}"
    return f"{getattr(config, 'model_type', 'hf')} {what} ({size}) from {origin}, {_params(module)}"


def _first_line(e: BaseException) -> str:
    """The exception's type and first line of text, without terminal colour codes."""
    text = _ANSI.sub("", str(e))
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {first[:200]}" if first else type(e).__name__


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
    if isinstance(loaded.module, HFLogits):  # its config says what fits: clearer than a failed forward
        hf_here = f"{role}: HF folder {loaded.source!r}" if loaded.kind == "hf" else here
        _check_hf(loaded.module, data, hf_here, _hf_fix(loaded.module, data) if role == "student" else fix)
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


def _units(data: DataSplits) -> str:
    """What the data's vocabulary counts: characters for a character tokenizer, else tokens."""
    tokenizer = data.spec.get("tokenizer") if isinstance(data.spec, dict) else None
    return "characters" if isinstance(tokenizer, dict) and tokenizer.get("kind") == "char" else "tokens"


def _max_positions(config: Any) -> int | None:
    """The longest sequence a HF config's position embeddings cover (GPT-2: n_positions; BERT: max_position_embeddings)."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_hf(module: HFLogits, data: DataSplits, here: str, fix: str) -> None:
    """A HF model's task, vocabulary or labels, positions and token ids against ``data``, from its config."""
    config = module.hf_model.config
    x, y = _two_rows(data)
    k, name = data.num_classes, data.name
    if y.ndim == 2 and module.hf_task != "causal-lm":
        raise ValueError(
            f"{here} is a sequence classifier (one label per sequence), but data {name!r} has a "
            f"target per position (text); expected a causal LM folder (e.g. GPT2LMHeadModel){fix}"
        )
    if y.ndim == 1 and module.hf_task != "sequence-classification":
        raise ValueError(
            f"{here} is a causal LM (a prediction per position), but data {name!r} has one label per "
            f"sample; expected a sequence classifier folder (e.g. BertForSequenceClassification){fix}"
        )
    if x.ndim != 2:
        raise ValueError(
            f"{here} reads rows of token ids (batch, length), but data {name!r} has inputs of shape "
            f"{tuple(data.input_shape)} per sample; expected one row of token ids per sample{fix}"
        )
    vocab = int(config.vocab_size)
    if y.ndim == 2 and vocab != k:
        raise ValueError(f"{here} has vocab_size {vocab} but the data's vocabulary has {k} {_units(data)}{fix}")
    if y.ndim == 1 and int(config.num_labels) != k:
        raise ValueError(f"{here} has num_labels {config.num_labels} but data {name!r} has {k} classes{fix}")
    positions = _max_positions(config)
    if positions is not None and x.shape[1] > positions:
        raise ValueError(
            f"{here} has position embeddings for {positions} tokens, but data {name!r} has rows of "
            f"{x.shape[1]} tokens; expected a model built for at least {x.shape[1]} positions, or "
            f"shorter rows (from_text(..., block_size={positions})){fix}"
        )
    if y.ndim == 1:
        _check_token_ids(data, vocab, here, fix)


def _check_token_ids(data: DataSplits, vocab: int, here: str, fix: str) -> None:
    """Every split's inputs are whole numbers in ``0..vocab-1`` (a table of token ids, stored as floats)."""
    for split_name, split in data.splits().items():
        if not isinstance(split, Split) or split.x.numel() == 0:
            continue
        x = split.x
        if x.is_floating_point() and not torch.equal(x, x.round()):
            value = x[x != x.round()][0].item()
            raise ValueError(
                f"{here} reads token ids, but data[{split_name!r}] of {data.name!r} holds {value:g}, not a "
                "whole number; expected a table of token ids (from_arrays(ids, y, scale=False)){fix}"
            )
        low, high = x.min().item(), x.max().item()
        if low < 0 or high >= vocab:
            raise ValueError(
                f"{here} has vocab_size {vocab}, but data[{split_name!r}] of {data.name!r} holds token id "
                f"{low if low < 0 else high:g}; expected ids 0..{vocab - 1}{fix}"
            )


def _hf_fix(module: HFLogits, data: DataSplits) -> str:
    """How to build a HF student that fits ``data``."""
    length = data.input_shape[0] if data.input_shape else "L"
    if module.hf_task == "causal-lm":
        example = f"GPT2Config(vocab_size={data.num_classes}, n_positions={length})"
    else:
        example = f"BertConfig(num_labels={data.num_classes}, max_position_embeddings={length})"
    return (
        f"; build a student that fits this data from a config, e.g. {example}, and save_pretrained it, "
        "or pick a zoo student"
    )


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
            f"{tuple(x.shape)}, {x.dtype}): {_first_line(e)}{fix}"
        ) from None
    finally:
        module.train(was_training)
