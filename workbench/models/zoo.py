"""Model zoo (mlp, cnn1d, cnn2d) with size knobs, rebuildable from a spec; size, cost and latency.

Every model is an ``nn.Sequential`` of named parts so feature hints can name layers by module
path: ``hidden.0`` (output of the first hidden block of an MLP), ``features.1`` (second conv
block of a CNN), ``head`` (the logits layer).
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

FAMILIES = ("mlp", "cnn1d", "cnn2d")
DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": (64, 32), "dropout": 0.0},
    "cnn1d": {"channels": (32, 32, 32), "pool": "flatten", "dropout": 0.0},
    "cnn2d": {"channels": (32, 64), "dropout": 0.0},
}
POOLS = ("flatten", "avg")
MIN_CNN1D_LENGTH = 8


def _bad(name: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"{name}: {value!r} is invalid; {valid}")


def models_for(data: DataSplits | Sequence[int]) -> list[str]:
    """Families that fit the data's per-sample input shape."""
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
    if isinstance(shape, int) or not isinstance(shape, (tuple, list, torch.Size)) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise _bad("input_shape", shape, "expected per-sample dimensions like (64,), (1, 40) or (1, 8, 8)")
    return tuple(shape)


def _widths(name: str, value: Any, allow_empty: bool) -> tuple[int, ...]:
    value = _ints(value)
    widths = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(widths, (tuple, list)) or (not widths and not allow_empty) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
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
    model = nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),          # (B, *shape) -> (B, prod(shape))
        ("hidden", nn.Sequential(*blocks)),
        ("head", nn.Linear(width, num_classes)),
    ]))
    return model, {"hidden": list(hidden), "dropout": dropout}


def _cnn(dims: int, shape: tuple[int, ...], num_classes: int, channels: Any, dropout: Any,
         pool: str = "flatten") -> tuple[nn.Module, dict]:
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


_BUILDERS: dict[str, Callable[..., tuple[nn.Module, dict]]] = {
    "mlp": _mlp,
    "cnn1d": lambda shape, k, **size: _cnn(1, shape, k, **size),
    "cnn2d": lambda shape, k, **size: _cnn(2, shape, k, **size),
}


def build_model(family: str, data: DataSplits | Sequence[int], num_classes: int | None = None,
                **size: Any) -> nn.Module:
    """A fresh model of ``family`` for the data (or an input shape); ``model.spec`` rebuilds it."""
    shape = _input_shape(data)
    fits = models_for(shape)
    if family not in FAMILIES:
        raise _bad("family", family, f"valid: {', '.join(FAMILIES)} (for input shape {shape}: {', '.join(fits)})")
    if family not in fits:
        raise _bad("family", family, f"does not fit input shape {shape}; valid for this data: {', '.join(fits)}")
    if num_classes is None and isinstance(data, DataSplits):
        num_classes = data.num_classes
    num_classes = plain_scalar(num_classes)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise _bad("num_classes", num_classes, "expected an integer >= 2 (pass it with an input shape)")
    unknown = sorted(set(size) - set(DEFAULTS[family]))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a size option of family {family!r}; "
                         f"valid: {', '.join(DEFAULTS[family])}")
    model, size_spec = _BUILDERS[family](shape, num_classes, **{**DEFAULTS[family], **size})
    model.spec = {"family": family, "input_shape": list(shape), "num_classes": num_classes, **size_spec}
    return model


def build_model_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model (fresh weights) from its ``model.spec`` dict."""
    spec = dict(spec)
    missing = [k for k in ("family", "input_shape", "num_classes") if k not in spec]
    if missing:
        raise ValueError(f"spec: missing key(s) {missing}; expected a dict from model.spec")
    family, shape, k = spec.pop("family"), spec.pop("input_shape"), spec.pop("num_classes")
    return build_model(family, list(shape), k, **spec)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _example(model: nn.Module, input_shape: Sequence[int], batch_size: int) -> torch.Tensor:
    p = next(model.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    return torch.randn(batch_size, *_input_shape(input_shape), device=device, dtype=dtype)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates for one sample (matmuls and convs; FLOPs / 2 from FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = _example(model, input_shape, 1)
    counter = FlopCounterMode(display=False)
    with inference(model), counter:
        model(x)
    return counter.get_total_flops() // 2


def measure_latency(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1, repeats: int = 50,
                    warmup: int = 5, max_seconds: float = 1.0) -> dict[str, float]:
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
    return {"median_ms": statistics.median(times), "p90_ms": p90, "batch_size": batch_size,
            "repeats": len(times)}


def describe(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """Size and cost of a model: parameters, MACs per sample, median latency (ms, batch of 1)."""
    return {"params": count_params(model), "macs": count_macs(model, input_shape),
            "latency_ms": measure_latency(model, input_shape)["median_ms"]}


def parse_model(text: str) -> tuple[str, dict[str, Any]]:
    """``"mlp:64,32"`` -> ``("mlp", {"hidden": (64, 32)})``; ``"cnn2d:32,64"`` -> channels;
    a bare family name keeps its default sizes."""
    family, _, sizes = str(text).partition(":")
    family = family.strip()
    if family not in FAMILIES:
        raise _bad("model", text, f"expected FAMILY[:W1,W2,...] with FAMILY in {', '.join(FAMILIES)}, e.g. 'mlp:16'")
    if not sizes.strip():
        return family, {}
    try:
        widths = tuple(int(w) for w in sizes.split(","))
    except ValueError:
        raise _bad("model", text, "sizes must be integers, e.g. 'mlp:64,32' or 'cnn2d:32,64'") from None
    return family, {("hidden" if family == "mlp" else "channels"): widths}
