"""Model zoo with size knobs, rebuildable from a spec; size, cost and latency.

Tables and images (one label per sample): mlp, cnn1d, cnn2d. Each is an ``nn.Sequential`` of
named parts so feature hints can name layers by module path: ``hidden.0`` (output of the first
hidden block of an MLP), ``features.1`` (second conv block of a CNN), ``head`` (the logits layer).

Text (one next-token target per position): gpt, the causal transformer of ``gpt.py``, with
``vocab_size = data.num_classes`` and ``block_size = data.input_shape[0]``. Its spec text is
``gpt:LAYERS,WIDTH[,HEADS]`` (``n_layer``, ``n_embd``, ``n_head``; heads default to 4, so WIDTH
must be a multiple of 4 unless HEADS is given), e.g. ``gpt:2,64`` or ``gpt:4,128,8``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..data.splits import DataSplits
from ..data.values import plain_scalar
from ..engine.evaluation import inference
from . import gpt

FAMILIES = ("mlp", "cnn1d", "cnn2d")  # tables and images: what the app's and dashboard's pickers offer
TEXT_FAMILIES = (gpt.FAMILY,)  # text data: one next-token prediction per position
ALL_FAMILIES = FAMILIES + TEXT_FAMILIES
DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": (64, 32), "dropout": 0.0},
    "cnn1d": {"channels": (32, 32, 32), "pool": "flatten", "dropout": 0.0},
    "cnn2d": {"channels": (32, 64), "dropout": 0.0},
    gpt.FAMILY: dict(gpt.DEFAULTS),  # n_layer, n_head, n_embd, dropout
}
GPT_SIZE_ORDER = ("n_layer", "n_embd", "n_head")  # the numbers of "gpt:LAYERS,WIDTH[,HEADS]"
POOLS = ("flatten", "avg")
MIN_CNN1D_LENGTH = 8


def _bad(name: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"{name}: {value!r} is invalid; {valid}")


def is_text(data: Any) -> bool:
    """True for text data: a ``DataSplits`` from ``load_text_dataset`` / ``from_text`` (its spec holds a tokenizer)."""
    return isinstance(data, DataSplits) and "tokenizer" in data.spec


def models_for(data: DataSplits | Sequence[int]) -> list[str]:
    """Families that fit the data: ``["gpt"]`` for text data, else those that fit the per-sample
    input shape (a bare shape is taken to be a table's or an image's, so it never gets gpt)."""
    if is_text(data):
        return list(TEXT_FAMILIES)
    shape = _input_shape(data)
    fits = ["mlp"]
    if (len(shape) == 1 and shape[0] >= MIN_CNN1D_LENGTH) or len(shape) == 2:
        fits.append("cnn1d")  # (L,) as one channel, or (C, L)
    if len(shape) in (2, 3) or _square_side(shape):
        fits.append("cnn2d")  # (H, W) as one channel, (C, H, W), or a flat square image like digits' 64
    return fits


def _square_side(shape: tuple[int, ...]) -> int | None:
    """The side of a flat input that is a square image of at least 4x4 (64 -> 8), else None."""
    if len(shape) != 1:
        return None
    side = math.isqrt(shape[0])
    return side if side >= 4 and side * side == shape[0] else None


def _ints(value: Any) -> Any:
    """A sequence of numpy integers as plain ints (other values unchanged, checked by the caller)."""
    if isinstance(value, (tuple, list, torch.Size)):
        return tuple(plain_scalar(v) for v in value)
    return plain_scalar(value)


def _input_shape(data: DataSplits | Sequence[int]) -> tuple[int, ...]:
    shape = _ints(data.input_shape if isinstance(data, DataSplits) else data)
    if (
        isinstance(shape, int)
        or not isinstance(shape, (tuple, list, torch.Size))
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
    ):
        raise _bad("input_shape", shape, "expected per-sample dimensions like (64,), (1, 40) or (1, 8, 8)")
    return tuple(shape)


def _widths(name: str, value: Any, allow_empty: bool) -> tuple[int, ...]:
    value = _ints(value)
    widths = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(widths, (tuple, list))
        or (not widths and not allow_empty)
        or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
    ):
        kind = "a tuple of layer widths >= 1 (or one int)" + (", () for none" if allow_empty else "")
        raise _bad(name, value, f"expected {kind}")
    return tuple(widths)


def _dropout(value: Any) -> float:
    value = plain_scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise _bad("dropout", value, "expected a number in [0, 1)")
    return float(value)


def _mlp(shape: tuple[int, ...], num_classes: int, hidden: Any, dropout: Any) -> tuple[nn.Module, dict]:
    hidden, dropout = _widths("hidden", hidden, allow_empty=True), _dropout(dropout)
    blocks, width = [], math.prod(shape)
    for h in hidden:
        layers = [("linear", nn.Linear(width, h)), ("act", nn.ReLU())]
        if dropout:
            layers.append(("dropout", nn.Dropout(dropout)))
        blocks.append(nn.Sequential(OrderedDict(layers)))
        width = h
    model = nn.Sequential(
        OrderedDict(
            [
                ("flatten", nn.Flatten()),  # (B, *shape) -> (B, prod(shape))
                ("hidden", nn.Sequential(*blocks)),
                ("head", nn.Linear(width, num_classes)),
            ]
        )
    )
    return model, {"hidden": list(hidden), "dropout": dropout}


def _cnn(
    dims: int, shape: tuple[int, ...], num_classes: int, channels: Any, dropout: Any, pool: str = "flatten"
) -> tuple[nn.Module, dict]:
    """Conv blocks: 1-D kernels 5/3/3.. with stride 2; 2-D 3x3 convs with 2x2 max-pooling."""
    channels, dropout = _widths("channels", channels, allow_empty=False), _dropout(dropout)
    if pool not in POOLS:
        raise _bad("pool", pool, f"valid: {', '.join(POOLS)}")
    parts: list[tuple[str, nn.Module]] = []
    if dims == 2 and (side := _square_side(shape)):  # a flat square image: (B, S*S) -> (B, 1, S, S)
        parts.append(("unflatten", nn.Unflatten(1, (1, side, side))))
        shape = (1, side, side)
    elif len(shape) == dims:  # no channel axis: add one
        parts.append(("unflatten", nn.Unflatten(1, (1, shape[0]))))  # (B, *shape) -> (B, 1, *shape)
        shape = (1, *shape)
    blocks, c_in, size = [], shape[0], list(shape[1:])
    for i, c in enumerate(channels):
        if dims == 1:
            k = 5 if i == 0 else 3
            layers = [("conv", nn.Conv1d(c_in, c, k, stride=2, padding=k // 2)), ("act", nn.ReLU())]
            size = [(size[0] + 2 * (k // 2) - k) // 2 + 1]
        else:
            layers = [("conv", nn.Conv2d(c_in, c, 3, padding=1)), ("act", nn.ReLU())]
            if min(size) >= 2:  # pool only while the map is at least 2x2
                layers.append(("pool", nn.MaxPool2d(2)))
                size = [s // 2 for s in size]
        blocks.append(nn.Sequential(OrderedDict(layers)))
        c_in = c
    parts.append(("features", nn.Sequential(*blocks)))
    if pool == "avg":
        parts.append(("pool", nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)))
        size = [1] * dims
    parts.append(("flatten", nn.Flatten()))  # (B, C, *size) -> (B, C * prod(size))
    if dropout:
        parts.append(("dropout", nn.Dropout(dropout)))
    parts.append(("head", nn.Linear(c_in * math.prod(size), num_classes)))
    size_spec = {"channels": list(channels), "dropout": dropout}
    if dims == 1:
        size_spec["pool"] = pool
    return nn.Sequential(OrderedDict(parts)), size_spec


def _gpt(shape: tuple[int, ...], vocab_size: int, **size: Any) -> tuple[nn.Module, dict]:
    """``gpt.build_gpt`` with ``vocab_size`` = the classes and ``block_size`` = the sequence length."""
    if len(shape) != 1:
        raise _bad(
            "input_shape",
            shape,
            f"expected (block_size,) for family {gpt.FAMILY!r}: one sequence of token ids per sample",
        )
    model = gpt.build_gpt({"family": gpt.FAMILY, "vocab_size": vocab_size, "block_size": shape[0], **size})
    return model, {k: model.spec[k] for k in DEFAULTS[gpt.FAMILY]}


_BUILDERS: dict[str, Callable[..., tuple[nn.Module, dict]]] = {
    "mlp": _mlp,
    "cnn1d": lambda shape, k, **size: _cnn(1, shape, k, **size),
    "cnn2d": lambda shape, k, **size: _cnn(2, shape, k, **size),
    gpt.FAMILY: _gpt,
}


def _check_fits(family: str, data: DataSplits | Sequence[int], shape: tuple[int, ...]) -> None:
    """Refuse a family the data cannot train: gpt on a table, a table model on text."""
    if family not in ALL_FAMILIES:
        fits = ", ".join(models_for(data))
        raise _bad("family", family, f"valid: {', '.join(ALL_FAMILIES)} (for this data: {fits})")
    if family in TEXT_FAMILIES and not isinstance(data, DataSplits):
        return  # a bare shape (from a saved spec): _gpt checks it is (block_size,)
    fits = models_for(data)
    if family in fits:
        return
    if is_text(data):
        what = f"text data {data.name!r} (one next-token target per position)"
    elif family in TEXT_FAMILIES:
        what = (
            f"input shape {shape}: it needs text data (load_dataset('shakespeare-char') or "
            "workbench.data.text.from_text)"
        )
    else:
        what = f"input shape {shape}"
    raise _bad("family", family, f"does not fit {what}; valid for this data: {', '.join(fits)}")


def build_model(
    family: str, data: DataSplits | Sequence[int], num_classes: int | None = None, **size: Any
) -> nn.Module:
    """A fresh model of ``family`` for the data (or an input shape); ``model.spec`` rebuilds it.

    For gpt, ``num_classes`` is the vocabulary size and the shape is ``(block_size,)``."""
    if isinstance(family, str) and ":" in family and family.partition(":")[0].strip() in ALL_FAMILIES:
        try:
            name, sizes = parse_model(family)
        except ValueError:
            name, sizes = family.partition(":")[0].strip(), {}
        call = ", ".join([repr(name), "data", *(f"{k}={v!r}" for k, v in sizes.items())])
        raise _bad(
            "family",
            family,
            f"build_model takes a family name ({', '.join(ALL_FAMILIES)}) with sizes as keywords, e.g. "
            f"build_model({call}); spec strings like {family!r} go to Experiment / make_model",
        )
    shape = _input_shape(data)
    _check_fits(family, data, shape)
    if num_classes is None and isinstance(data, DataSplits):
        num_classes = data.num_classes
    num_classes = plain_scalar(num_classes)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise _bad("num_classes", num_classes, "expected an integer >= 2 (pass it with an input shape)")
    if is_text(data) and num_classes != data.num_classes:
        raise _bad(
            "num_classes",
            num_classes,
            f"expected the vocabulary size of text data {data.name!r}: {data.num_classes} (or leave it out)",
        )
    unknown = sorted(map(str, set(size) - set(DEFAULTS[family])))
    if unknown:
        hint = (
            " (vocab_size and block_size come from the data: num_classes and input_shape)"
            if family in TEXT_FAMILIES
            else ""
        )
        raise ValueError(
            f"{', '.join(unknown)}: not a size option of family {family!r}; valid: {', '.join(DEFAULTS[family])}{hint}"
        )
    model, size_spec = _BUILDERS[family](shape, num_classes, **{**DEFAULTS[family], **size})
    model.spec = {"family": family, "input_shape": list(shape), "num_classes": num_classes, **size_spec}
    return model


def build_model_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model (fresh weights) from its ``model.spec`` dict. A gpt spec may also be the
    ``gpt.build_gpt`` form, with ``vocab_size`` and ``block_size`` for num_classes and input_shape."""
    if not isinstance(spec, Mapping):
        raise _bad("spec", type(spec).__name__, "expected a dict from model.spec")
    spec = dict(spec)
    if spec.get("family") in TEXT_FAMILIES:
        spec = _zoo_gpt_spec(spec)
    missing = [k for k in ("family", "input_shape", "num_classes") if k not in spec]
    if missing:
        raise ValueError(f"spec: missing key(s) {missing}; expected a dict from model.spec")
    family, shape, k = spec.pop("family"), spec.pop("input_shape"), spec.pop("num_classes")
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
        raise _bad("input_shape", shape, "expected a list of per-sample dimensions like [64] or [1, 8, 8]")
    return build_model(family, list(shape), k, **spec)


def _zoo_gpt_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A gpt spec with ``vocab_size``/``block_size`` moved to ``num_classes``/``input_shape`` (they must agree)."""
    for native, zoo, as_zoo in (
        ("vocab_size", "num_classes", lambda v: v),
        ("block_size", "input_shape", lambda v: [v]),
    ):
        if native not in spec:
            continue
        raw = spec.pop(native)
        if zoo in spec and _ints(spec[zoo]) != _ints(as_zoo(raw)):
            raise ValueError(
                f"spec: {native}={raw!r} disagrees with {zoo}={spec[zoo]!r}; "
                f"expected {zoo} = {'[block_size]' if zoo == 'input_shape' else 'vocab_size'}"
            )
        spec[zoo] = as_zoo(raw)
    return spec


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _example(model: nn.Module, input_shape: Sequence[int], batch_size: int) -> torch.Tensor:
    """A random batch: (B, *input_shape) floats, or (B, L) token ids below the vocabulary size for a GPT."""
    p = next(model.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    shape = _input_shape(input_shape)
    if isinstance(model, gpt.GPT):
        seq_len = _gpt_seq_len(model, shape)
        return torch.randint(model.vocab_size, (batch_size, seq_len), device=device)  # (B, L) int64
    return torch.randn(batch_size, *shape, device=device, dtype=dtype)


def _gpt_seq_len(model: gpt.GPT, shape: tuple[int, ...]) -> int:
    if len(shape) != 1 or shape[0] > model.block_size:
        raise _bad(
            "input_shape",
            shape,
            f"expected (L,) with L <= block_size={model.block_size} for a GPT (one sequence of token ids)",
        )
    return shape[0]


def _gpt_size(model: gpt.GPT) -> dict[str, Any]:
    """The ``gpt.build_gpt`` spec of a built GPT, read from its modules (whatever ``model.spec`` holds)."""
    return {
        "family": gpt.FAMILY,
        "vocab_size": model.vocab_size,
        "block_size": model.block_size,
        "n_layer": len(model.blocks),
        "n_head": model.blocks[0].attn.n_head,
        "n_embd": model.tok_emb.embedding_dim,
    }


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates for one sample (matmuls and convs; FLOPs / 2 from FlopCounterMode).

    A GPT's come from ``gpt.gpt_macs`` (attention scores included, which FlopCounterMode misses
    for scaled_dot_product_attention on CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(model, gpt.GPT):
        return gpt.gpt_macs(_gpt_size(model), seq_len=_gpt_seq_len(model, _input_shape(input_shape)))
    x = _example(model, input_shape, 1)
    counter = FlopCounterMode(display=False)
    with inference(model), counter:
        model(x)
    return counter.get_total_flops() // 2


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    repeats: int = 50,
    warmup: int = 5,
    max_seconds: float = 1.0,
) -> dict[str, float]:
    """Median and p90 milliseconds per forward pass of a batch (eval, no_grad, model's device)."""
    batch_size, repeats = plain_scalar(batch_size), plain_scalar(repeats)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise _bad("batch_size", batch_size, "expected an integer >= 1")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise _bad("repeats", repeats, "expected an integer >= 1")
    x = _example(model, input_shape, batch_size)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times: list[float] = []
    with inference(model):
        for _ in range(max(warmup, 0)):
            model(x)
        sync()
        deadline = time.perf_counter() + max_seconds
        while len(times) < repeats and (len(times) < 3 or time.perf_counter() < deadline):
            start = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    p90 = times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]
    return {"median_ms": statistics.median(times), "p90_ms": p90, "batch_size": batch_size, "repeats": len(times)}


def describe(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """Size and cost of a model: parameters, MACs per sample, median latency (ms, batch of 1)."""
    return {
        "params": count_params(model),
        "macs": count_macs(model, input_shape),
        "latency_ms": measure_latency(model, input_shape)["median_ms"],
    }


def parse_model(text: str) -> tuple[str, dict[str, Any]]:
    """``"mlp:64,32"`` -> ``("mlp", {"hidden": (64, 32)})``; ``"cnn2d:32,64"`` -> channels;
    ``"gpt:2,64"`` -> ``("gpt", {"n_layer": 2, "n_embd": 64})`` and ``"gpt:4,128,8"`` adds
    ``n_head=8``; a bare family name keeps its default sizes."""
    family, _, sizes = str(text).partition(":")
    family = family.strip()
    if family not in ALL_FAMILIES:
        raise _bad(
            "model",
            text,
            f"expected FAMILY[:W1,W2,...] with FAMILY in {', '.join(ALL_FAMILIES)}, "
            "e.g. 'mlp:16' (or 'gpt:LAYERS,WIDTH[,HEADS]' for text, e.g. 'gpt:2,64')",
        )
    if not sizes.strip():
        return family, {}
    try:
        widths = tuple(int(w) for w in sizes.split(","))
    except ValueError:
        example = "'gpt:2,64' or 'gpt:4,128,8'" if family in TEXT_FAMILIES else "'mlp:64,32' or 'cnn2d:32,64'"
        raise _bad("model", text, f"sizes must be integers, e.g. {example}") from None
    if family in TEXT_FAMILIES:
        if len(widths) > len(GPT_SIZE_ORDER):
            raise _bad("model", text, "expected 'gpt:LAYERS,WIDTH[,HEADS]' (at most 3 numbers), e.g. 'gpt:2,64'")
        return family, dict(zip(GPT_SIZE_ORDER, widths, strict=False))
    return family, {("hidden" if family == "mlp" else "channels"): widths}
