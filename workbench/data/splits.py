"""Data containers the engine trains on, user data normalization, and the fast batcher.

The engine accepts a :class:`DataSplits`, an ``(X, y)`` pair, a dict of splits, or a
``torch.utils.data.DataLoader``; :func:`as_splits` turns any of them into a ``DataSplits``.
In-memory tensors are batched by a seeded random permutation per pass (``transfer.Stream``;
kd-facts.md: about 1.6x faster per epoch than ``DataLoader(TensorDataset)`` on small data).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .values import plain_scalar

SPLITS = ("train", "val", "test")
MAX_CLASSES = 1_000_000  # a larger label is almost surely not a class index (an ID, a year...)
_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)


@dataclass(frozen=True)
class Split:
    """One split held in memory: inputs ``x`` (N, *input_shape) float32, labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> Split:
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
        k = plain_scalar(self.num_classes)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(
                f"num_classes: {k!r} is invalid; expected an integer >= 1, or 0 to infer it from the labels"
            )
        object.__setattr__(self, "num_classes", k)
        if self.num_classes <= 0 and isinstance(self.train, Split) and self.train.y.numel():
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

    def with_(self, **changes: Any) -> DataSplits:
        """A copy with some fields replaced."""
        return replace(self, **changes)


def _as_tensor(a: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
    """``a`` (tensor, array, list, DataFrame...) as a tensor of ``dtype``; non-numbers are refused."""
    labels = not dtype.is_floating_point
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        try:
            arr = np.asarray(a)
        except (TypeError, ValueError) as e:  # e.g. rows of different lengths
            raise ValueError(f"{name}: cannot convert {type(a).__name__} to a tensor ({e})") from e
        if arr.dtype.kind not in "biuf":
            sample = arr.reshape(-1)[:3].tolist()
            if labels and arr.dtype.kind in "USO":
                raise ValueError(
                    f"{name}: labels are {arr.dtype} values such as {sample}; expected class "
                    "indices 0..K-1 (workbench.from_arrays maps any labels to indices)"
                )
            raise ValueError(f"{name}: dtype {arr.dtype} (values such as {sample}) is not numeric; expected numbers")
        if arr.dtype.kind == "u" and arr.dtype.itemsize > 1:  # torch lacks most unsigned types
            arr = arr.astype(np.int64)
        t = torch.as_tensor(arr)
    if t.is_complex() or not (t.is_floating_point() or t.dtype in _INTEGER_DTYPES):
        kind = "class indices" if labels else "numbers"
        raise ValueError(f"{name}: dtype {t.dtype} is not numeric; expected {kind}")
    if labels and t.is_floating_point():
        if not torch.isfinite(t).all():
            raise ValueError(f"{name}: labels hold NaN or inf; expected whole class indices 0..K-1")
        if not torch.equal(t, t.round()):
            raise ValueError(f"{name}: labels must be whole class indices 0..K-1, got fractional values")
    return t.to(dtype)


def _check_tensors(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    """Shapes, sample count, finite inputs and label range of one split."""
    if x.ndim < 2:
        hint = "; for one feature per sample use X.reshape(-1, 1)" if x.ndim == 1 else ""
        raise ValueError(f"data[{name!r}] X: expected shape (N, features...), got {tuple(x.shape)}{hint}")
    if 0 in x.shape[1:]:
        raise ValueError(
            f"data[{name!r}] X: shape {tuple(x.shape)} has no features per sample; "
            "expected (N, features...) with every dimension >= 1"
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        hint = ""
        if y.ndim == 2 and y.shape[0] == x.shape[0]:
            hint = (
                "; flatten it: y.reshape(-1)"
                if y.shape[1] == 1
                else "; it looks one-hot or per-class scores: pass class indices, y.argmax(1)"
            )
        raise ValueError(
            f"data[{name!r}] y: expected shape ({x.shape[0]},) to match X "
            f"({x.shape[0]} rows), got {tuple(y.shape)}{hint}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"data[{name!r}]: has 0 samples; at least 1 is needed")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).reshape(len(x), -1).any(1).nonzero().flatten()
        raise ValueError(
            f"data[{name!r}] X: {len(bad)} sample(s) hold NaN or inf (first at row {bad[0].item()}); "
            "drop or impute them"
        )
    if y.min().item() < 0:
        raise ValueError(f"data[{name!r}] y: labels must be class indices >= 0, got {y.min().item()}")
    if y.max().item() >= MAX_CLASSES:
        raise ValueError(
            f"data[{name!r}] y: label {y.max().item()} is too large; expected class indices "
            f"0..K-1 with K <= {MAX_CLASSES} (workbench.from_arrays maps any labels to indices)"
        )


def _check_loader(loader: DataLoader, name: str) -> DataLoader:
    """A DataLoader must know its length (steps per epoch) and yield at least one batch."""
    try:
        n_batches, n_samples = len(loader), len(loader.dataset)
    except TypeError:
        raise ValueError(
            f"data[{name!r}]: the DataLoader's dataset has no length (an IterableDataset?); "
            "expected a map-style dataset such as TensorDataset(X, y), or tensors"
        ) from None
    if n_batches == 0:
        raise ValueError(
            f"data[{name!r}]: the DataLoader yields no batches ({n_samples} samples, batch_size="
            f"{loader.batch_size}, drop_last={loader.drop_last}); expected at least one batch"
        )
    return loader


def first_batch(loader: DataLoader, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``(x, y)`` batch of a DataLoader, checked, so a loader yielding the wrong
    structure (a single tensor, dicts, 3-tuples, float labels) fails before training."""
    want = "expected (x, y) batches: a dataset of (input, label) items such as TensorDataset(X, y)"
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise ValueError(f"data[{name!r}]: the DataLoader yields no batches; {want}") from None
    except Exception as e:
        raise ValueError(
            f"data[{name!r}]: reading the first batch of the DataLoader failed: {type(e).__name__}: {e}"
        ) from e
    if isinstance(batch, Mapping):
        raise ValueError(f"data[{name!r}]: the DataLoader yields dicts with keys {sorted(map(str, batch))}; {want}")
    if isinstance(batch, torch.Tensor):
        raise ValueError(
            f"data[{name!r}]: the DataLoader yields single tensors of shape {tuple(batch.shape)} (no labels); {want}"
        )
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        size = f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else ""
        raise ValueError(f"data[{name!r}]: the DataLoader yields {type(batch).__name__}s{size}; {want}")
    x, y = batch
    for part, v in (("x", x), ("y", y)):
        if not isinstance(v, torch.Tensor):
            raise ValueError(
                f"data[{name!r}] {part}: the DataLoader yields {type(v).__name__} values; expected tensors ({want})"
            )
    if y.dtype != torch.int64:
        raise ValueError(
            f"data[{name!r}] y: the DataLoader yields labels of dtype {y.dtype}; expected "
            "torch.int64 class indices 0..K-1 (convert them in the dataset: y.long())"
        )
    _check_tensors(x, y, name)
    return x, y


def as_split(pair: Any, name: str = "train") -> Split | DataLoader:
    """A checked ``Split`` from an ``(X, y)`` pair of tensors/arrays or a ``Split`` (converted to
    float32 inputs and int64 labels), or a DataLoader passed through after a length check."""
    if isinstance(pair, DataLoader):
        return _check_loader(pair, name)
    if isinstance(pair, Split):
        x, y = pair.x, pair.y
        if _token_blocks(pair):
            if len(pair) == 0:
                raise ValueError(f"data[{name!r}]: has 0 samples; at least 1 is needed")
            return pair
        if (
            isinstance(x, torch.Tensor)
            and isinstance(y, torch.Tensor)
            and x.dtype == torch.float32
            and y.dtype == torch.int64
            and not x.requires_grad
        ):
            _check_tensors(x, y, name)
            return pair
        pair = (pair.x, pair.y)
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        size = f" of {len(pair)} items" if isinstance(pair, (tuple, list)) else ""
        raise ValueError(
            f"data[{name!r}]: expected an (X, y) pair, a Split or a DataLoader, got {type(pair).__name__}{size}"
        )
    x = _as_tensor(pair[0], f"data[{name!r}] X", torch.float32)
    y = _as_tensor(pair[1], f"data[{name!r}] y", torch.int64)
    _check_tensors(x, y, name)
    return Split(x.contiguous(), y.contiguous())


def _token_blocks(split: Split) -> bool:
    """True for a split of text blocks (``text.make_blocks``): integer token inputs (N, L) with a
    target per position, the same shape; they are not classifier inputs and keep their dtype."""
    x, y = split.x, split.y
    return (
        isinstance(x, torch.Tensor)
        and isinstance(y, torch.Tensor)
        and x.ndim == 2
        and x.shape == y.shape
        and not x.is_floating_point()
        and not y.is_floating_point()
    )


def as_splits(data: Any) -> DataSplits:
    """Normalize and check what a user passes as ``data``: a :class:`DataSplits`, an ``(X, y)``
    pair, a dict of splits (None for an absent split) or a DataLoader."""
    if isinstance(data, DataSplits):
        return _checked(data)
    if isinstance(data, DataLoader):
        return DataSplits(train=as_split(data))
    if isinstance(data, Mapping):
        unknown = sorted((k for k in data if k not in SPLITS), key=str)
        if unknown:
            raise ValueError(f"data: unknown split name(s) {unknown}; valid: {list(SPLITS)}")
        if data.get("train") is None:
            raise ValueError("data: a 'train' split is required")
        splits = {k: as_split(v, k) for k, v in data.items() if v is not None}
        return _consistent(DataSplits(**splits, num_classes=_num_classes(splits)))
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return DataSplits(train=as_split(data, "train"))
    hint = ""
    if type(data).__name__ == "DataFrame":
        hint = "; for a DataFrame use workbench.from_dataframe(df, target=...)"
    elif isinstance(data, str):
        hint = "; for a CSV file use workbench.from_csv(path, target=...)"
    elif isinstance(data, (tuple, list)):
        hint = f" of {len(data)} items"
    raise ValueError(
        "data: expected DataSplits, an (X, y) pair, a dict of splits {'train': (X, y), ...} "
        f"or a DataLoader, got {type(data).__name__}{hint}"
    )


def _checked(data: DataSplits) -> DataSplits:
    """``data`` with every split and the unlabeled inputs checked (and converted where needed)."""
    if data.train is None:
        raise ValueError("data: a 'train' split is required")
    changes: dict[str, Any] = {}
    for name in SPLITS:
        split = getattr(data, name)
        if split is not None and (checked := as_split(split, name)) is not split:
            changes[name] = checked
    if data.unlabeled is not None and not (
        isinstance(data.unlabeled, torch.Tensor) and data.unlabeled.dtype == torch.float32
    ):
        changes["unlabeled"] = _as_tensor(data.unlabeled, "unlabeled", torch.float32)
    if data.num_classes == 0:  # not given, nor inferred from a train Split: infer from any Split's labels
        k = _num_classes({n: changes.get(n, getattr(data, n)) for n in SPLITS})
        if k:
            changes["num_classes"] = k
    return _consistent(data.with_(**changes) if changes else data)


def _consistent(data: DataSplits) -> DataSplits:
    """Splits, unlabeled inputs and ``num_classes`` must agree: same per-sample shape, labels
    below ``num_classes``, one name per class."""
    k = data.num_classes
    if data.class_names and len(data.class_names) < k:
        raise ValueError(f"class_names: {len(data.class_names)} names for {k} classes; expected one per class")
    shape = tuple(data.train.x.shape[1:]) if isinstance(data.train, Split) else None
    for name, split in data.splits().items():
        if not isinstance(split, Split):
            continue
        if shape is not None and tuple(split.x.shape[1:]) != shape:
            raise ValueError(
                f"data[{name!r}] X: per-sample shape {tuple(split.x.shape[1:])} differs from "
                f"train's {shape}; every split needs the same features"
            )
        if k and split.y.max().item() >= k:
            raise ValueError(
                f"data[{name!r}] y: label {split.y.max().item()} is out of range for "
                f"num_classes={k}; expected labels 0..{k - 1}"
            )
    extra = data.unlabeled
    if extra is not None:
        if shape is not None and (extra.ndim < 2 or tuple(extra.shape[1:]) != shape):
            raise ValueError(
                f"unlabeled: shape {tuple(extra.shape)} does not fit; expected (M, "
                f"{', '.join(map(str, shape))}) like the train inputs"
            )
        if not torch.isfinite(extra).all():
            raise ValueError("unlabeled: holds NaN or inf; drop or impute those inputs")
    return data


def _num_classes(splits: Mapping[str, Any]) -> int:
    ys = [s.y for s in splits.values() if isinstance(s, Split)]
    return int(max(y.max().item() for y in ys)) + 1 if ys else 0
