"""Hugging Face models as teachers and students: :class:`HFLogits` (a model that returns only its
logits), its state_dict round trip (the HF config travels in the weights file as bytes, never as
a pickle), loading a local ``save_pretrained`` folder with no network and no remote code, and the
checks of a HF model against a dataset (task, vocabulary or labels, positions, token ids).

``transformers`` is an optional extra (``[hf]``): it is imported only when a HF model is loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.splits import DataSplits, Split

HF_TASKS = ("sequence-classification", "causal-lm")
HF_EXTRA = 'install kd-workbench[hf] (pip install "kd-workbench[hf]")'
HF_STATE_KEY = "_extra_state"  # an HFLogits state_dict's entry with its task and HF config (JSON bytes)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes some libraries put in their messages
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def params_text(module: nn.Module) -> str:
    """``12,345 params``."""
    return f"{sum(p.numel() for p in module.parameters()):,} params"


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
            f"({first_line(e)}); expected a state_dict written from a model loaded from a Hugging Face folder"
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
    with offline():
        transformers = import_transformers(where)
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
                f"({first_line(e)}); expected a model type that ships with transformers"
            ) from None
    module = HFLogits(hf_model, info["hf_task"])
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise ValueError(f"{where}: its weights do not fit the model of its own config: {detail}") from None
    return module.eval()


@contextlib.contextmanager
def offline() -> Iterator[None]:
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


def load_folder(folder: Path, task: str) -> HFLogits:
    """A local save_pretrained folder (config checked by the caller): local files only, no remote
    code, no network; returned in eval mode."""
    with offline():  # set before the first import: huggingface_hub reads it at import time
        transformers = import_transformers(f"source: {str(folder)!r}")
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
                f"({first_line(e)}); expected a folder written by save_pretrained "
                "(config.json and model.safetensors)"
            ) from None
    return HFLogits(hf_model, task).eval()  # the wrapper too: a later train(was_training) must not undo it


def import_transformers(where: str) -> Any:
    """``transformers`` (call inside :func:`offline`), or an ImportError naming ``where`` and the extra."""
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"{where} is a Hugging Face model; loading it needs the transformers package: {HF_EXTRA}"
        ) from None
    return transformers


def describe(module: HFLogits, origin: str) -> str:
    """``gpt2 causal LM (vocab 65) from <origin>, 12,345 params``."""
    config = module.hf_model.config
    if module.hf_task == "sequence-classification":
        what, size = "sequence classifier", f"{config.num_labels} classes"
    else:
        what, size = "causal LM", f"vocab {config.vocab_size}"
    return f"{getattr(config, 'model_type', 'hf')} {what} ({size}) from {origin}, {params_text(module)}"


def first_line(e: BaseException) -> str:
    """The exception's type and first line of text, without terminal colour codes."""
    text = _ANSI.sub("", str(e))
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {first[:200]}" if first else type(e).__name__


def units(data: DataSplits) -> str:
    """What the data's vocabulary counts: characters for a character tokenizer, else tokens."""
    tokenizer = data.spec.get("tokenizer") if isinstance(data.spec, dict) else None
    return "characters" if isinstance(tokenizer, dict) and tokenizer.get("kind") == "char" else "tokens"


def max_positions(config: Any) -> int | None:
    """The longest sequence a HF config's position embeddings cover (GPT-2: n_positions; BERT: max_position_embeddings)."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits(module: HFLogits, data: DataSplits, x: torch.Tensor, y: torch.Tensor, here: str, fix: str) -> None:
    """A HF model's task, vocabulary or labels, positions and token ids against ``data``, from its config."""
    config = module.hf_model.config
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
        raise ValueError(f"{here} has vocab_size {vocab} but the data's vocabulary has {k} {units(data)}{fix}")
    if y.ndim == 1 and int(config.num_labels) != k:
        raise ValueError(f"{here} has num_labels {config.num_labels} but data {name!r} has {k} classes{fix}")
    positions = max_positions(config)
    if positions is not None and x.shape[1] > positions:
        raise ValueError(
            f"{here} has position embeddings for {positions} tokens, but data {name!r} has rows of "
            f"{x.shape[1]} tokens; expected a model built for at least {x.shape[1]} positions, or "
            f"shorter rows (from_text(..., block_size={positions})){fix}"
        )
    if y.ndim == 1:
        check_token_ids(data, vocab, here, fix)


def check_token_ids(data: DataSplits, vocab: int, here: str, fix: str) -> None:
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


def student_fix(module: HFLogits, data: DataSplits) -> str:
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
