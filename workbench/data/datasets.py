"""Built-in offline datasets and user data (arrays, DataFrame, CSV) made into seeded ``DataSplits``.

Everything is local: digits ship with scikit-learn, MNIST-1D is generated with the ``mnist1d``
package's ``make_dataset`` (never its downloader), moons and spirals are generated here.
Splits are seeded and stratified; standardization is fitted on the train split only and then
applied to val, test and the unlabeled transfer inputs.
The built-in text (``shakespeare-char``) is ``text.load_text_dataset``'s; ``load_dataset`` routes it
there, and ``list_datasets()`` lists it only with ``kind="text"`` or ``"all"``.

MNIST-1D: ``data_seed`` (42: the published set) fixes the data, ``test_fraction`` sets
make_dataset's ``train_split`` (0.2: its 4000/1000 split, all 4000 kept for training as in the
paper), ``val_fraction * num_samples`` validation rows are generated from a seed derived from
(``data_seed``, ``seed``), and unlabeled inputs come from ``unlabeled_seed`` (default
``data_seed + 1``). make_dataset standardizes each generated set with its own mean and std
(for sets of hundreds of rows or more these agree with the published set's to about 1%), so no
further scaling is applied.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .splits import DataSplits, _as_tensor, as_split
from .text import DEFAULT_FRACTIONS as TEXT_FRACTIONS
from .text import TEXT_DATASETS, load_text_dataset

if TYPE_CHECKING:
    import pandas as pd

MIN_ROWS = 10
DIGITS_CLASSES = tuple(str(i) for i in range(10))
# mnist1d.make_dataset arguments a user may override ("seed" is ours: data_seed).
MNIST1D_ARGS = (
    "template_len",
    "padding",
    "scale_coeff",
    "max_translation",
    "corr_noise_scale",
    "iid_noise_scale",
    "shear_scale",
    "final_seq_length",
)
_MNIST1D_LOCK = threading.Lock()  # make_dataset reseeds global RNGs: one generation at a time


def _bad(name: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"{name}: {value!r} is invalid; {valid}")


def _int_at_least(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise _bad(name, value, f"expected an integer >= {low}")
    return int(value)


def _number_at_least(name: str, value: Any, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise _bad(name, value, f"expected a finite number >= {low}")
    return float(value)


def _check_common(seed: Any, val_fraction: Any, test_fraction: Any) -> None:
    _int_at_least("seed", seed, 0)
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise _bad(name, f, "expected a number in [0, 1) (0 means no such split)")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction: {val_fraction} + {test_fraction} is invalid; "
            "expected a sum < 1 so the train split keeps some rows"
        )


def _derived_seed(seed: int, stream: int) -> int:
    """An independent seed for a second stream of data (e.g. unlabeled inputs)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


# ----------------------------------------------------------------------------- splits and scaling


def _take(idx: np.ndarray, y: np.ndarray, n_take: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, taken) with ``n_take`` taken: stratified where every class allows it."""
    from sklearn.model_selection import train_test_split

    if n_take == 0:
        return idx, idx[:0]
    counts = np.unique(y[idx], return_counts=True)[1]
    ok = counts.min() >= 2 and n_take >= len(counts) and len(idx) - n_take >= len(counts)
    rest, taken = train_test_split(idx, test_size=n_take, random_state=seed, stratify=y[idx] if ok else None)
    return rest, taken


def _split_indices(y: np.ndarray, seed: int, val_fraction: float, test_fraction: float):
    """Seeded, stratified (train, val, test) index arrays; fractions are of all rows (rounded up)."""
    n = len(y)
    n_test, n_val = math.ceil(round(test_fraction * n, 9)), math.ceil(round(val_fraction * n, 9))
    if n - n_val - n_test < 1:
        raise ValueError(
            f"X: {n} rows is too few for val_fraction={val_fraction} and "
            f"test_fraction={test_fraction}: the train split would be empty"
        )
    rest, test = _take(np.arange(n), y, n_test, seed)
    train, val = _take(rest, y, n_val, _derived_seed(seed, 2))
    return train, val, test


def _standardizer(train_x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Per-feature ``(x - mean) / std`` with mean and std (ddof=0) of the train split; std 0 -> 1."""
    mean = train_x.astype(np.float64).mean(axis=0)
    std = train_x.astype(np.float64).std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return lambda x: ((x.astype(np.float64) - mean) / std).astype(np.float32)


def _assemble(
    x: np.ndarray,
    y: np.ndarray,
    idx: tuple,
    *,
    scale: bool,
    unlabeled: np.ndarray | None,
    num_classes: int,
    name: str,
    class_names: tuple[str, ...],
    spec: dict,
) -> DataSplits:
    """Index ``x, y`` into splits, scale with train statistics, and wrap in a ``DataSplits``."""
    train_idx, val_idx, test_idx = idx
    fit = _standardizer(x[train_idx]) if scale else (lambda a: np.array(a, dtype=np.float32))
    splits = {
        split: (
            as_split((torch.from_numpy(fit(x[i])), torch.from_numpy(y[i].astype(np.int64))), split) if len(i) else None
        )
        for split, i in (("train", train_idx), ("val", val_idx), ("test", test_idx))
    }
    extra = torch.from_numpy(fit(unlabeled)).contiguous() if unlabeled is not None else None
    return DataSplits(
        **splits,
        num_classes=num_classes,
        name=name,
        class_names=class_names,
        input_shape=tuple(x.shape[1:]),
        unlabeled=extra,
        spec=spec,
    )


# ----------------------------------------------------------------------------- built-in datasets


def _digits(flat: bool, seed: int, vf: float, tf: float, n_unlabeled: int, spec: dict, **_: Any) -> DataSplits:
    from sklearn.datasets import load_digits

    if n_unlabeled:
        raise _bad(
            "n_unlabeled",
            n_unlabeled,
            f"generating unlabeled inputs is not available for dataset {spec['name']!r}; use 0, "
            "or pass your own inputs with from_arrays(X, y, unlabeled=...)",
        )
    d = load_digits()
    x = d.data.astype(np.float32) if flat else (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y = d.target.astype(np.int64)
    return _assemble(
        x,
        y,
        _split_indices(y, seed, vf, tf),
        scale=flat,
        unlabeled=None,
        num_classes=10,
        name=spec["name"],
        class_names=DIGITS_CLASSES,
        spec=spec,
    )


@functools.lru_cache(maxsize=8)
def _mnist1d_cached(items: tuple) -> tuple[np.ndarray, ...]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
        from mnist1d.utils import ObjectView
    except ImportError as e:
        raise ImportError("dataset 'mnist1d' needs the mnist1d package: pip install mnist1d") from e
    args = get_dataset_args(as_dict=True)
    args.update({k: list(v) if isinstance(v, tuple) else v for k, v in items})
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(ObjectView(args))  # reseeds the global RNGs; never get_dataset (downloads)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    out = (
        d["x"].astype(np.float32),
        d["y"].astype(np.int64),
        d["x_test"].astype(np.float32),
        d["y_test"].astype(np.int64),
    )
    for a in out:
        a.setflags(write=False)  # cached: nobody may change them
    return out


def _mnist1d_arrays(**args: Any) -> tuple[np.ndarray, ...]:
    """(x, y, x_test, y_test) from ``mnist1d.data.make_dataset``, cached in-process."""
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in args.items()))
    with _MNIST1D_LOCK:
        return _mnist1d_cached(items)


def _mnist1d(
    seed: int,
    vf: float,
    tf: float,
    n_unlabeled: int,
    spec: dict,
    *,
    num_samples: int = 5000,
    data_seed: int = 42,
    unlabeled_seed: int | None = None,
    **overrides: Any,
) -> DataSplits:
    num_samples = _int_at_least("num_samples", num_samples, 100)
    data_seed = _int_at_least("data_seed", data_seed, 0)
    unlabeled_seed = data_seed + 1 if unlabeled_seed is None else _int_at_least("unlabeled_seed", unlabeled_seed, 0)
    if n_unlabeled and unlabeled_seed == data_seed:
        raise _bad("unlabeled_seed", unlabeled_seed, f"expected a seed other than data_seed={data_seed}")
    # The published split (4000 train / 1000 test) is test_fraction=0.2, and all of its train rows
    # stay train rows (the published MLP/CNN figures were trained on 4000): the validation rows
    # are generated, from a seed of their own, by the same generator.
    x, y, x_test, y_test = _mnist1d_arrays(num_samples=num_samples, seed=data_seed, train_split=1.0 - tf, **overrides)
    n_val = math.ceil(round(vf * num_samples, 9))
    xs, ys = [x], [y]
    if n_val:
        val_seed = _mnist1d_val_seed(data_seed, seed)
        if val_seed in (data_seed, unlabeled_seed):  # astronomically unlikely; never reuse a stream
            raise _bad(
                "seed",
                seed,
                f"expected another seed: (data_seed={data_seed}, seed={seed}) gives validation "
                f"seed {val_seed}, which data_seed or unlabeled_seed already uses",
            )
        vx, vy = _mnist1d_arrays(num_samples=math.ceil(n_val / 10) * 10, seed=val_seed, train_split=1.0, **overrides)[
            :2
        ]
        xs.append(vx[:n_val])
        ys.append(vy[:n_val])
    xs, ys = np.concatenate(xs + [x_test]), np.concatenate(ys + [y_test])
    train = np.arange(len(y))
    val = np.arange(len(y), len(y) + n_val)
    test = np.arange(len(y) + n_val, len(ys))
    extra = None
    if n_unlabeled:
        per_class = math.ceil(n_unlabeled / 10) * 10  # make_dataset makes num_samples // 10 per class
        extra = _mnist1d_arrays(num_samples=per_class, seed=unlabeled_seed, train_split=1.0, **overrides)[0][
            :n_unlabeled
        ]
    spec.update(num_samples=num_samples, data_seed=data_seed, unlabeled_seed=unlabeled_seed)
    # make_dataset already centers the data and sets its std to 1: no further scaling.
    return _assemble(
        xs,
        ys,
        (train, val, test),
        scale=False,
        unlabeled=extra,
        num_classes=10,
        name="mnist1d",
        class_names=DIGITS_CLASSES,
        spec=spec,
    )


def _mnist1d_val_seed(data_seed: int, seed: int) -> int:
    """make_dataset's seed for the generated validation rows of (data_seed, split seed)."""
    return int(np.random.SeedSequence([data_seed, seed, 2]).generate_state(1)[0])


def _spiral_points(n: int, classes: int, noise: float, rng: np.random.Generator):
    """``classes`` spiral arms: radius t in [0, 1), angle 2*pi*k/K + 4t + noise * N(0, 1)."""
    y = rng.permutation(np.arange(n) % classes)
    t = rng.uniform(0.0, 1.0, n)
    angle = 2 * np.pi * y / classes + 4.0 * t + noise * rng.standard_normal(n)
    return np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1).astype(np.float32), y.astype(np.int64)


def _points(
    kind: str,
    seed: int,
    vf: float,
    tf: float,
    n_unlabeled: int,
    spec: dict,
    *,
    n_samples: int = 1000,
    noise: float = 0.2,
    classes: int = 3,
) -> DataSplits:
    from sklearn.datasets import make_moons

    n_samples = _int_at_least("n_samples", n_samples, MIN_ROWS)
    noise = _number_at_least("noise", noise, 0.0)
    if kind == "moons":
        classes = 2
        make = lambda n, s: make_moons(n, noise=noise, random_state=s)  # noqa: E731
    else:
        classes = _int_at_least("classes", classes, 2)
        make = lambda n, s: _spiral_points(n, classes, noise, np.random.default_rng(s))  # noqa: E731
        spec["classes"] = classes
    spec.update(n_samples=n_samples, noise=noise)
    x, y = make(n_samples, seed)
    extra = make(n_unlabeled, _derived_seed(seed, 1))[0] if n_unlabeled else None
    return _assemble(
        x.astype(np.float32),
        y.astype(np.int64),
        _split_indices(y, seed, vf, tf),
        scale=True,
        unlabeled=extra,
        num_classes=classes,
        name=kind,
        class_names=tuple(str(i) for i in range(classes)),
        spec=spec,
    )


_BUILDERS: dict[str, tuple[Callable[..., DataSplits], tuple[str, ...]]] = {
    "digits": (functools.partial(_digits, True), ()),
    "digits-images": (functools.partial(_digits, False), ()),
    "mnist1d": (_mnist1d, ("num_samples", "data_seed", "unlabeled_seed") + MNIST1D_ARGS),
    "moons": (functools.partial(_points, "moons"), ("n_samples", "noise")),
    "spirals": (functools.partial(_points, "spirals"), ("n_samples", "noise", "classes")),
}


TABLE_DATASETS = tuple(_BUILDERS)
DATASET_KINDS = ("table", "text", "all")
TABLE_FRACTIONS = (0.15, 0.2)  # val, test: stratified random rows
TEXT_OPTIONS = ("block_size",)


def list_datasets(kind: str = "table") -> list[str]:
    """Names of the built-in datasets ``load_dataset`` accepts: ``"table"`` (the default: tables
    and images, one label per sample, what the engine trains and the UIs offer), ``"text"``
    (character sequences, one next-character target per position) or ``"all"``."""
    if kind not in DATASET_KINDS:
        raise _bad("kind", kind, f"valid: {', '.join(DATASET_KINDS)}")
    return [*(TABLE_DATASETS if kind in ("table", "all") else ()), *(TEXT_DATASETS if kind in ("text", "all") else ())]


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    n_unlabeled: int = 0,
    **kwargs: Any,
) -> DataSplits:
    """A built-in dataset as seeded splits; ``spec`` holds the arguments that rebuild it.

    Tables are split into stratified random rows (fractions default to 0.15 val / 0.2 test); text
    (``"shakespeare-char"``, option ``block_size``) into contiguous ranges by
    ``text.load_text_dataset`` (fractions default to 0.05 / 0.05)."""
    if name in TEXT_DATASETS:
        return _text_dataset(name, seed, val_fraction, test_fraction, n_unlabeled, kwargs)
    if name not in _BUILDERS:
        raise _bad("name", name, f"valid datasets: {', '.join(list_datasets('all'))}")
    val_fraction = TABLE_FRACTIONS[0] if val_fraction is None else val_fraction
    test_fraction = TABLE_FRACTIONS[1] if test_fraction is None else test_fraction
    build, knobs = _BUILDERS[name]
    unknown = sorted(set(kwargs) - set(knobs))
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)}: not an option of dataset {name!r}; valid: {', '.join(knobs) if knobs else 'none'}"
        )
    _check_common(seed, val_fraction, test_fraction)
    n_unlabeled = _int_at_least("n_unlabeled", n_unlabeled, 0)
    spec = {
        "name": name,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "n_unlabeled": n_unlabeled,
        **kwargs,
    }
    return build(seed, val_fraction, test_fraction, n_unlabeled, spec, **kwargs)


def _text_dataset(
    name: str, seed: Any, val_fraction: Any, test_fraction: Any, n_unlabeled: Any, kwargs: dict[str, Any]
) -> DataSplits:
    """``load_text_dataset`` with the text defaults; a ``tokenizer`` (from ``data.spec``) must match the corpus'."""
    options = dict(kwargs)
    tokenizer = options.pop("tokenizer", None)  # present when rebuilding from data.spec
    unknown = sorted(map(str, set(options) - set(TEXT_OPTIONS)))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not an option of dataset {name!r}; valid: {', '.join(TEXT_OPTIONS)}")
    data = load_text_dataset(
        name,
        seed=seed,
        n_unlabeled=n_unlabeled,
        val_fraction=TEXT_FRACTIONS[0] if val_fraction is None else val_fraction,
        test_fraction=TEXT_FRACTIONS[1] if test_fraction is None else test_fraction,
        **options,
    )
    if tokenizer is not None and tokenizer != data.spec["tokenizer"]:
        raise _bad(
            "tokenizer",
            tokenizer,
            f"does not match the vocabulary of dataset {name!r} "
            f"({data.num_classes} characters); expected {data.spec['tokenizer']!r} "
            "or no tokenizer",
        )
    return data


# ----------------------------------------------------------------------------- user data


def _encode_labels(y: Any, map_numbers: bool = False) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Class indices from labels; strings (or any labels if ``map_numbers``) map to sorted unique values."""
    arr = np.asarray(y)
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        raise _bad("y", "fractional or missing values", "expected class labels: whole numbers or strings")
    if arr.dtype.kind in "biuf" and not map_numbers:
        return arr.astype(np.int64), None
    try:
        values = sorted(set(arr.tolist()))
    except TypeError:  # mixed types: order by their text
        values = sorted(set(arr.tolist()), key=str)
    index = {v: i for i, v in enumerate(values)}
    return np.array([index[v] for v in arr.tolist()], dtype=np.int64), tuple(str(v) for v in values)


def _check_labels_repeat(n_classes: int, n_rows: int, field: str, value: Any = None) -> None:
    """Most classes with a single row (an ID, a continuous number) is nothing a classifier can learn."""
    if n_classes <= n_rows / 2:
        return
    if value is None:  # labels given as an array
        raise _bad(
            field,
            f"{n_classes} distinct labels in {n_rows} rows",
            f"expected class labels that repeat (is {field} an ID or a continuous number?)",
        )
    raise _bad(
        field,
        value,
        f"column has {n_classes} distinct values in {n_rows} rows; expected class "
        "labels that repeat (is it an ID or a continuous number?)",
    )


def _features(a: Any, name: str) -> np.ndarray:
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        a = a.copy()  # torch warns on read-only arrays
    x = _as_tensor(a, name, torch.float32).numpy()
    if x.ndim < 2:
        raise _bad(name, f"array of shape {x.shape}", "expected shape (N, features...)")
    bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=0))
    if len(bad):
        raise _bad(name, f"NaN or inf in column(s) {bad.tolist()}", "fill or drop them first")
    return x


def from_arrays(
    X: Any,
    y: Any,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    scale: bool = True,
    unlabeled: Any = None,
    class_names: Any = None,
    name: str = "custom",
) -> DataSplits:
    """Your own features ``X`` (N, ...) and labels ``y`` (N,) as seeded, stratified, scaled splits."""
    _check_common(seed, val_fraction, test_fraction)
    x = _features(X, "X")
    codes, names = _encode_labels(y)
    if codes.ndim != 1 or len(codes) != len(x):
        raise _bad("y", f"array of shape {codes.shape}", f"expected shape ({len(x)},) to match X")
    if len(x) < MIN_ROWS:
        raise _bad("X", f"{len(x)} rows", f"expected at least {MIN_ROWS} rows")
    if codes.min() < 0:
        raise _bad("y", int(codes.min()), "expected class indices 0..K-1 (or string labels)")
    label_k = len(names) if names else int(codes.max()) + 1  # classes the labels need
    names = names if class_names is None else tuple(str(c) for c in class_names)
    classes = np.unique(codes)
    _check_labels_repeat(len(classes), len(x), "y")
    if len(classes) < 2:
        only = names[classes[0]] if names and classes[0] < len(names) else int(classes[0])
        raise ValueError(f"y: only one class ({only!r}) found; expected at least 2 classes")
    if class_names is not None and len(names) < label_k:
        raise _bad("class_names", list(names), f"expected at least {label_k} names, one per class")
    num_classes = len(names) if names else label_k
    extra = None if unlabeled is None else _features(unlabeled, "unlabeled")
    if extra is not None and extra.shape[1:] != x.shape[1:]:
        raise _bad("unlabeled", f"array of shape {extra.shape}", f"expected per-sample shape {x.shape[1:]} like X")
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes() + codes.tobytes())
    digest.update(b"" if extra is None else np.ascontiguousarray(extra).tobytes())
    spec = {
        "name": name,
        "source": "arrays",
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "scale": bool(scale),
        "rows": len(x),
        "n_unlabeled": 0 if extra is None else len(extra),
        "data_hash": digest.hexdigest()[:16],
    }
    idx = _split_indices(codes, seed, val_fraction, test_fraction)
    return _assemble(
        x,
        codes,
        idx,
        scale=scale,
        unlabeled=extra,
        num_classes=num_classes,
        name=name,
        class_names=names or tuple(str(i) for i in range(num_classes)),
        spec=spec,
    )


def from_dataframe(df: Any, target: str, *, features: list[str] | None = None, **kwargs: Any) -> DataSplits:
    """Splits from a pandas DataFrame: numeric ``features`` columns (default: all but ``target``)."""
    import pandas as pd

    columns = [str(c) for c in df.columns]
    if target not in df.columns:
        raise _bad("target", target, f"not a column; available columns: {columns}")
    features = [c for c in df.columns if c != target] if features is None else list(features)
    missing = [c for c in features if c not in df.columns]
    if missing or target in features or not features:
        raise _bad(
            "features",
            features,
            f"expected a non-empty list of columns other than the target {target!r}; available columns: {columns}",
        )
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric:
        raise _bad("features", non_numeric, "these columns are not numeric; encode or drop them")
    with_nan = [c for c in features + [target] if df[c].isna().any()]
    if with_nan:
        raise ValueError(f"columns {with_nan}: missing values; fill or drop those rows first")
    labels = df[target].to_numpy()
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):  # NaN is refused above
        example = next(float(v) for v in labels if v != round(v))
        raise _bad(
            "target",
            target,
            f"column {target!r} holds fractional numbers (e.g. {example:g}), not class labels; "
            f"pick the label column (whole numbers or strings); columns: {columns}",
        )
    codes, names = _encode_labels(labels, map_numbers=True)
    if len(df) >= MIN_ROWS:  # fewer rows: from_arrays says so first
        _check_labels_repeat(len(names), len(df), "target", target)
    unlabeled = kwargs.pop("unlabeled", None)
    if isinstance(unlabeled, pd.DataFrame):
        unlabeled = unlabeled[features].to_numpy(np.float32)
    kwargs.setdefault("class_names", names)
    out = from_arrays(df[features].to_numpy(np.float32, copy=True), codes, unlabeled=unlabeled, **kwargs)
    spec = {**out.spec, "source": "dataframe", "target": str(target), "features": [str(c) for c in features]}
    return out.with_(spec=spec)


def from_csv(path: str | Path, target: str, **kwargs: Any) -> DataSplits:
    """Splits from a CSV file (see ``read_csv`` for how it is read, ``from_dataframe`` for the options)."""
    path = Path(path)
    kwargs.setdefault("name", path.stem)
    out = from_dataframe(read_csv(path), target, **kwargs)
    return out.with_(spec={**out.spec, "source": "csv", "path": str(path)})


# Encodings tried in order: UTF-8 (with or without a BOM), then what spreadsheets on Windows
# export (cp1252), then Latin-1, which decodes any bytes.
CSV_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
_BINARY_KINDS = {
    b"PK\x03\x04": "a zip archive (an Excel .xlsx workbook?)",
    b"\xd0\xcf\x11\xe0": "an Excel .xls workbook",
    b"PAR1": "a Parquet file",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "a gzip archive",
}


def read_csv(path: str | Path) -> pd.DataFrame:
    """A CSV file as a DataFrame, read as UTF-8, else cp1252, else Latin-1 (with a warning that
    names the encoding used); an empty, binary or header-only file is refused naming the file."""
    import io

    import pandas as pd

    path = Path(path)
    text = _csv_text(path)
    try:
        df = pd.read_csv(io.StringIO(text))
        if df.shape[1] == 1 and ";" in str(df.columns[0]):  # a spreadsheet's ';'-separated export
            df = pd.read_csv(io.StringIO(text), sep=";")
    except pd.errors.EmptyDataError:
        raise _bad_file(
            path, "has no text but blank lines; expected a CSV with a header row and one row per sample"
        ) from None
    except pd.errors.ParserError as e:
        raise _bad_file(path, f"is not a readable CSV: {str(e).strip().splitlines()[0]}") from None
    if not len(df):
        raise _bad_file(
            path, f"has a header ({', '.join(map(str, df.columns))}) but no data rows; expected one row per sample"
        )
    return df


def _csv_text(path: Path) -> str:
    """The text of a CSV file, decoded with the first of ``CSV_ENCODINGS`` that fits."""
    if path.is_dir():
        raise _bad_file(path, "is a folder; expected a CSV file")
    if not path.is_file():
        raise _bad_file(path, "does not exist (no such file); expected a CSV file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise _bad_file(path, f"cannot be read ({e.strerror or e})") from None
    if not raw.strip():
        raise _bad_file(path, "is empty; expected a CSV with a header row and data rows")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) and _decodes(raw, "utf-16"):  # Excel's "Unicode text"
        return raw.decode("utf-16")
    head = raw[:65536]
    kind = next((k for magic, k in _BINARY_KINDS.items() if head.startswith(magic)), None)
    controls = sum(head.count(bytes([c])) for c in range(32) if c not in b"\t\n\r\x0c\x0b")
    # text has no NUL byte (UTF-16 with a BOM was read above) and no control bytes but a stray few
    if kind or b"\x00" in head or controls > max(2, len(head) // 100):
        raise _bad_file(
            path, f"is a binary file ({kind or 'not text'}), not a CSV; export it as CSV (comma-separated text) first"
        )
    encoding = next(e for e in CSV_ENCODINGS if _decodes(raw, e))  # the last one decodes any bytes
    if encoding != CSV_ENCODINGS[0]:
        warnings.warn(
            f"{path}: not UTF-8; read as {encoding}. Check its non-ASCII text (accents, symbols), "
            "or save the file as UTF-8",
            stacklevel=4,
        )
    return raw.decode(encoding)


def _bad_file(path: Path, problem: str) -> ValueError:
    return ValueError(f"path: {str(path)!r} {problem}")


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True
