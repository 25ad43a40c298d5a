"""Data containers the engine trains on, user data normalization, and the fast batcher.

The engine accepts a :class:`DataSplits`, an ``(X, y)`` pair, a dict of splits, or a
``torch.utils.data.DataLoader``; :func:`as_splits` turns any of them into a ``DataSplits``.
In-memory tensors are batched by a seeded random permutation per pass (``transfer.Stream``;
kd-facts.md: about 1.6x faster per epoch than ``DataLoader(TensorDataset)`` on small data).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split held in memory: inputs ``x`` (N, *input_shape) float32, labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class DataSplits:
    """A dataset ready to train on: train split, optional val/test splits and metadata.

    ``train``/``val``/``test`` are :class:`Split` (tensors) or, for data that does not fit in
    memory, a ``DataLoader`` yielding ``(x, y)`` batches. ``unlabeled`` holds extra transfer
    inputs with no labels (the teacher labels them). ``spec`` says how the data was made (for
    run records and cache keys).
    """

    train: Split | DataLoader
    val: Split | DataLoader | None = None
    test: Split | DataLoader | None = None
    num_classes: int = 0
    name: str = "custom"
    class_names: tuple[str, ...] = ()
    input_shape: tuple[int, ...] = ()
    unlabeled: torch.Tensor | None = None
    spec: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_classes <= 0 and isinstance(self.train, Split):
            object.__setattr__(self, "num_classes", int(self.train.y.max().item()) + 1)
        if not self.input_shape and isinstance(self.train, Split):
            object.__setattr__(self, "input_shape", tuple(self.train.x.shape[1:]))
        if not self.class_names and self.num_classes > 0:
            object.__setattr__(self, "class_names", tuple(str(i) for i in range(self.num_classes)))

    @property
    def in_memory(self) -> bool:
        """True when every split is a tensor :class:`Split` (fast slicing, cached teacher outputs)."""
        return all(s is None or isinstance(s, Split) for s in (self.train, self.val, self.test))

    def splits(self) -> dict[str, Split | DataLoader]:
        """The splits that are present, by name, in train/val/test order."""
        return {n: s for n in SPLITS if (s := getattr(self, n)) is not None}

    def with_(self, **changes: Any) -> "DataSplits":
        """A copy with some fields replaced."""
        return replace(self, **changes)


def _as_tensor(a: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(a))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: cannot convert {type(a).__name__} to a tensor ({e})") from e
    if dtype.is_floating_point:
        if not (t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)):
            raise ValueError(f"{name}: dtype {t.dtype} is not numeric; features must be numbers")
        return t.to(dtype)
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise ValueError(f"{name}: labels must be whole class indices 0..K-1, got fractional values")
    return t.to(dtype)


def as_split(pair: Any, name: str = "train") -> Split | DataLoader:
    """A ``Split`` from an ``(X, y)`` pair of tensors/arrays, or a DataLoader passed through."""
    if isinstance(pair, (Split, DataLoader)):
        return pair
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ValueError(
            f"data[{name!r}]: expected an (X, y) pair, a Split or a DataLoader, got {type(pair).__name__}"
        )
    x = _as_tensor(pair[0], f"data[{name!r}] X", torch.float32)
    y = _as_tensor(pair[1], f"data[{name!r}] y", torch.int64)
    if x.ndim < 2:
        raise ValueError(f"data[{name!r}] X: expected shape (N, features...), got {tuple(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"data[{name!r}] y: expected shape ({x.shape[0]},) to match X, got {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"data[{name!r}]: has 0 samples; at least 1 is needed")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).reshape(len(x), -1).any(1).nonzero().flatten()
        raise ValueError(f"data[{name!r}] X: {len(bad)} sample(s) hold NaN or inf (first at row {bad[0].item()}); "
                         "drop or impute them")
    if y.min().item() < 0:
        raise ValueError(f"data[{name!r}] y: labels must be class indices >= 0, got {y.min().item()}")
    return Split(x.contiguous(), y.contiguous())


def as_splits(data: Any) -> DataSplits:
    """Normalize what a user passes as ``data`` into a :class:`DataSplits`."""
    if isinstance(data, DataSplits):
        return data
    if isinstance(data, DataLoader):
        return DataSplits(train=data)
    if isinstance(data, Mapping):
        unknown = set(data) - set(SPLITS)
        if unknown:
            raise ValueError(f"data: unknown split name(s) {sorted(unknown)}; valid: {list(SPLITS)}")
        if "train" not in data:
            raise ValueError("data: a 'train' split is required")
        splits = {k: as_split(v, k) for k, v in data.items()}
        return DataSplits(**splits, num_classes=_num_classes(splits))
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return DataSplits(train=as_split(data, "train"))
    raise ValueError(
        "data: expected DataSplits, an (X, y) pair, a dict of splits {'train': (X, y), ...} "
        f"or a DataLoader, got {type(data).__name__}"
    )


def _num_classes(splits: Mapping[str, Any]) -> int:
    ys = [s.y for s in splits.values() if isinstance(s, Split)]
    return int(max(y.max().item() for y in ys)) + 1 if ys else 0
