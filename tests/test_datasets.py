"""Built-in datasets and user data: shapes, determinism, stratified splits, train-only scaling, errors."""

from __future__ import annotations

import json
import random
import socket
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data.datasets import from_arrays, from_csv, from_dataframe, list_datasets, load_dataset
from workbench.data.splits import DataSplits, Split

EXPECTED = {  # name -> (input_shape, num_classes, total rows)
    "digits": ((64,), 10, 1797),
    "digits-images": ((1, 8, 8), 10, 1797),
    "mnist1d": ((40,), 10, 5750),  # the published 4000 train / 1000 test, plus 750 generated val rows
    "moons": ((2,), 2, 1000),
    "spirals": ((2,), 3, 1000),
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails: everything must be offline."""

    def refuse(*args, **kwargs):
        raise RuntimeError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _splits(d: DataSplits) -> list[Split]:
    return [d.train, d.val, d.test]


def _same(a: DataSplits, b: DataSplits) -> bool:
    return all(torch.equal(s.x, t.x) and torch.equal(s.y, t.y) for s, t in zip(_splits(a), _splits(b)))


def test_list_datasets():
    assert list_datasets() == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shapes_dtypes_and_metadata(name):
    shape, k, rows = EXPECTED[name]
    d = load_dataset(name)
    assert d.name == name and d.num_classes == k and d.input_shape == shape
    assert d.class_names == tuple(str(i) for i in range(k))
    for s in _splits(d):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert tuple(s.x.shape[1:]) == shape and s.y.shape == (len(s),)
        assert set(s.y.unique().tolist()) == set(range(k))
    assert sum(len(s) for s in _splits(d)) == rows
    if name == "mnist1d":
        assert (len(d.train), len(d.val), len(d.test)) == (4000, 750, 1000)
    else:
        assert len(d.val) == pytest.approx(0.15 * rows, abs=1) and len(d.test) == pytest.approx(0.2 * rows, abs=1)
    assert d.unlabeled is None
    assert json.loads(json.dumps(d.spec)) == d.spec  # plain JSON


@pytest.mark.parametrize("name", ["digits", "moons", "spirals", "mnist1d"])
def test_same_seed_same_tensors_other_seed_other_split(name):
    a, b, c = load_dataset(name, seed=0), load_dataset(name, seed=0), load_dataset(name, seed=1)
    assert _same(a, b)
    assert not _same(a, c)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("digits", {}),
        ("moons", {"noise": 0.1}),
        ("spirals", {"classes": 4}),
        ("mnist1d", {"num_samples": 300, "n_unlabeled": 20}),
    ],
)
def test_spec_rebuilds_the_same_data(name, kwargs):
    d = load_dataset(name, seed=3, val_fraction=0.1, test_fraction=0.25, **kwargs)
    again = load_dataset(**json.loads(json.dumps(d.spec)))
    assert _same(d, again)
    assert (d.unlabeled is None and again.unlabeled is None) or torch.equal(d.unlabeled, again.unlabeled)


def test_splits_are_stratified():
    d = load_dataset("digits")
    overall = torch.cat([s.y for s in _splits(d)]).bincount().double() / 1797
    for s in _splits(d):
        expected = overall * len(s)
        assert (s.y.bincount(minlength=10).double() - expected).abs().max() <= 1.5


def test_digits_scaling_uses_train_statistics_only():
    flat, images = load_dataset("digits", seed=2), load_dataset("digits-images", seed=2)
    # Same seed and labels -> same split; images are pixel/16, so *16 recovers the raw features.
    raw = {n: getattr(images, n).x.reshape(-1, 64).double() * 16 for n in ("train", "val", "test")}
    assert torch.equal(flat.test.y, images.test.y)
    mean, std = raw["train"].mean(0), raw["train"].std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    for n in ("train", "val", "test"):
        expected = ((raw[n] - mean) / std).float()
        torch.testing.assert_close(getattr(flat, n).x, expected, atol=1e-5, rtol=1e-5)
    varying = raw["train"].std(0) > 0
    assert flat.train.x[:, varying].mean(0).abs().max() < 1e-5
    assert flat.train.x[:, varying].std(0, unbiased=False).sub(1).abs().max() < 1e-4
    assert images.train.x.min() >= 0 and images.train.x.max() <= 1


def test_mnist1d_matches_make_dataset_reference():
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        ref = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    d = load_dataset("mnist1d")
    assert torch.equal(d.test.x, torch.from_numpy(ref["x_test"].astype(np.float32)))
    assert torch.equal(d.test.y, torch.from_numpy(ref["y_test"].astype(np.int64)))
    # every one of make_dataset's 4000 train rows is a train row (the paper's setting) ...
    assert torch.equal(d.train.x, torch.from_numpy(ref["x"].astype(np.float32)))
    assert torch.equal(d.train.y, torch.from_numpy(ref["y"].astype(np.int64)))
    # ... and the 750 val rows are generated apart: balanced classes, none of them a train/test row
    assert len(d.val) == 750 and d.val.y.bincount(minlength=10).tolist() == [75] * 10
    seen = {tuple(r) for r in torch.cat([d.train.x, d.test.x]).tolist()}
    assert not any(tuple(r) in seen for r in d.val.x.tolist())
    other = load_dataset("mnist1d", seed=1)
    assert torch.equal(other.train.x, d.train.x) and not torch.equal(other.val.x, d.val.x)


def test_mnist1d_restores_global_rng_state():
    random.seed(123)
    np.random.seed(7)
    want_py, want_np = random.random(), np.random.rand()
    random.seed(123)
    np.random.seed(7)
    load_dataset("mnist1d", num_samples=300, data_seed=11)  # uncached arguments: really generates
    assert random.random() == want_py and np.random.rand() == want_np


def test_mnist1d_threads_generate_same_data_as_serial():
    results = {}

    def load(seed):
        results[seed] = load_dataset("mnist1d", num_samples=200, data_seed=seed)

    threads = [threading.Thread(target=load, args=(s,)) for s in (21, 22)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for s in (21, 22):
        assert _same(results[s], load_dataset("mnist1d", num_samples=200, data_seed=s))
    assert not torch.equal(results[21].test.x, results[22].test.x)


@pytest.mark.parametrize("name,kwargs", [("mnist1d", {"num_samples": 500}), ("moons", {}), ("spirals", {"classes": 4})])
def test_unlabeled_generation(name, kwargs):
    d = load_dataset(name, n_unlabeled=205, **kwargs)
    assert d.unlabeled.dtype == torch.float32
    assert tuple(d.unlabeled.shape) == (205, *d.input_shape)
    assert d.spec["n_unlabeled"] == 205
    # fresh samples: no unlabeled input repeats a labeled one
    labeled = torch.cat([s.x for s in _splits(d)]).flatten(1)
    assert torch.cdist(d.unlabeled.flatten(1), labeled).min() > 1e-6
    # same scale as the train split (standardized with its statistics)
    assert d.unlabeled.mean(0).abs().max() < 0.25 and (d.unlabeled.std(0) - d.train.x.std(0)).abs().max() < 0.25
    again = load_dataset(name, n_unlabeled=205, **kwargs)
    assert torch.equal(d.unlabeled, again.unlabeled) and _same(d, again)
    assert _same(d, load_dataset(name, **kwargs))  # asking for unlabeled inputs leaves the splits alone


@pytest.mark.parametrize("name", ["digits", "digits-images"])
def test_unlabeled_for_digits_is_a_clear_error(name):
    with pytest.raises(ValueError, match=r"n_unlabeled.*not available.*from_arrays"):
        load_dataset(name, n_unlabeled=100)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"name": "mnist"}, r"name: 'mnist'.*digits, digits-images, mnist1d, moons, spirals"),
        ({"name": "moons", "val_fraction": 1.2}, r"val_fraction: 1\.2.*\[0, 1\)"),
        ({"name": "moons", "test_fraction": -0.1}, r"test_fraction: -0\.1.*\[0, 1\)"),
        ({"name": "moons", "val_fraction": 0.5, "test_fraction": 0.5}, r"val_fraction \+ test_fraction.*< 1"),
        ({"name": "moons", "classes": 3}, r"classes: not an option of dataset 'moons'; valid: n_samples, noise"),
        ({"name": "digits", "noise": 0.1}, r"noise.*valid: none"),
        ({"name": "spirals", "classes": 1}, r"classes: 1 is invalid.*>= 2"),
        ({"name": "moons", "n_samples": 5}, r"n_samples: 5 is invalid.*>= 10"),
        ({"name": "moons", "noise": -1.0}, r"noise: -1\.0"),
        ({"name": "moons", "seed": -1}, r"seed: -1"),
        ({"name": "moons", "n_unlabeled": -5}, r"n_unlabeled: -5"),
    ],
)
def test_load_dataset_errors_name_field_and_value(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_dataset(**kwargs)


def test_zero_fractions_leave_out_splits():
    d = load_dataset("moons", val_fraction=0.0, test_fraction=0.0)
    assert d.val is None and d.test is None and len(d.train) == 1000
    m = load_dataset("mnist1d", num_samples=300, val_fraction=0.0, test_fraction=0.0)
    assert m.val is None and m.test is None and len(m.train) == 300


# ----------------------------------------------------------------------------- user data


def _blobs(n=200, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.normal(size=(n, 4)) * [1, 10, 0.1, 5] + y[:, None] * 3 + [0, 100, -5, 2]
    return x, y


def test_from_arrays_splits_and_scales_with_train_statistics():
    x, y = _blobs()
    u = np.random.default_rng(1).normal(size=(30, 4)) + [0, 100, -5, 2]
    scaled = from_arrays(x, y, seed=4, unlabeled=u)
    raw = from_arrays(x, y, seed=4, unlabeled=u, scale=False)
    assert scaled.num_classes == 3 and scaled.class_names == ("0", "1", "2") and scaled.input_shape == (4,)
    assert [len(s) for s in _splits(scaled)] == [130, 30, 40]
    mean, std = raw.train.x.double().mean(0), raw.train.x.double().std(0, unbiased=False)
    for n in ("train", "val", "test"):
        assert torch.equal(getattr(scaled, n).y, getattr(raw, n).y)
        torch.testing.assert_close(getattr(scaled, n).x, ((getattr(raw, n).x - mean) / std).float())
    torch.testing.assert_close(scaled.unlabeled, ((torch.from_numpy(u) - mean) / std).float())
    for s in _splits(scaled):  # stratified: 3 equal classes stay equal (+-1)
        counts = s.y.bincount()
        assert counts.max() - counts.min() <= 1
    assert _same(scaled, from_arrays(x, y, seed=4))
    assert from_arrays(x, y, class_names="abcd").num_classes == 4  # a class with no rows yet
    assert not torch.equal(scaled.train.y, from_arrays(x, y, seed=5).train.y)
    assert scaled.spec["source"] == "arrays" and len(scaled.spec["data_hash"]) == 16
    assert json.loads(json.dumps(scaled.spec)) == scaled.spec


def test_from_arrays_accepts_tensors_string_labels_and_images():
    x, y = _blobs(60)
    d = from_arrays(torch.from_numpy(x), np.array(["cat", "dog", "ant"])[y], scale=False)
    assert d.class_names == ("ant", "cat", "dog") and d.num_classes == 3
    row = torch.from_numpy(x).float()
    i = torch.nonzero((row == d.train.x[0]).all(1))[0, 0]
    assert d.class_names[d.train.y[0]] == ["cat", "dog", "ant"][y[i]]
    images = from_arrays(np.random.default_rng(0).random((40, 1, 4, 4)), np.arange(40) % 2)
    assert images.input_shape == (1, 4, 4) and images.train.x.shape[1:] == (1, 4, 4)


def test_from_arrays_rare_class_falls_back_to_plain_split():
    x, y = _blobs(30, 2)
    y[0] = 2  # a class with one member cannot be stratified
    d = from_arrays(x, y)
    assert d.num_classes == 3 and sum(len(s) for s in _splits(d)) == 30


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda x, y: from_arrays(x, np.zeros(len(y))), r"y: only one class \(0\) found.*at least 2 classes"),
        (lambda x, y: from_arrays(x[:5], y[:5]), r"X: '5 rows' is invalid; expected at least 10 rows"),
        (lambda x, y: from_arrays(x, y[:-1]), r"y: .*expected shape \(200,\)"),
        (lambda x, y: from_arrays(x[:, 0], y), r"X: .*expected shape \(N, features"),
        (lambda x, y: from_arrays(np.where(np.arange(4) == 2, np.nan, x), y), r"X: 'NaN or inf in column\(s\) \[2\]'"),
        (lambda x, y: from_arrays(x, y + 0.5), r"y: .*fractional"),
        (lambda x, y: from_arrays(x, y - 1), r"y: -1 is invalid"),
        (lambda x, y: from_arrays(x, y, class_names=["a", "b"]), r"class_names: \['a', 'b'\].*at least 3 names"),
        (lambda x, y: from_arrays(x, y, unlabeled=np.zeros((5, 3))), r"unlabeled: .*\(4,\)"),
        (lambda x, y: from_arrays(x[:10], y[:10], val_fraction=0.45, test_fraction=0.5), r"train split would be empty"),
        (lambda x, y: from_arrays(x, np.arange(len(y))), r"y: '200 distinct labels in 200 rows'.*labels that repeat"),
    ],
)
def test_from_arrays_errors(make, pattern):
    x, y = _blobs()
    with pytest.raises(ValueError, match=pattern):
        make(x, y)


def _frame(n=120):
    rng = np.random.default_rng(0)
    species = np.array(["setosa", "virginica", "versicolor"])[np.arange(n) % 3]
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(0, 5, n),
            "c": rng.random(n) * 100,
            "species": pd.Categorical(species),
        }
    )


def test_from_dataframe_with_string_target():
    df = _frame()
    d = from_dataframe(df, "species", seed=1)
    assert d.class_names == ("setosa", "versicolor", "virginica") and d.num_classes == 3
    assert d.input_shape == (3,) and d.spec["features"] == ["a", "b", "c"] and d.spec["target"] == "species"
    # labels follow the rows: a row's class name is its species
    raw = from_dataframe(df, "species", seed=1, scale=False)
    lookup = {tuple(np.float32(r)): s for r, s in zip(df[["a", "b", "c"]].to_numpy(), df["species"])}
    for row, label in zip(raw.test.x.numpy(), raw.test.y.tolist()):
        assert lookup[tuple(row)] == raw.class_names[label]
    sub = from_dataframe(df, "species", features=["c", "a"])
    assert sub.input_shape == (2,) and sub.spec["features"] == ["c", "a"]
    numeric = from_dataframe(df.assign(species=df["species"].cat.codes * 10 + 1), "species")
    assert numeric.class_names == ("1", "11", "21")


@pytest.mark.parametrize(
    "change,kwargs,pattern",
    [
        (lambda df: df, {"target": "label"}, r"target: 'label'.*available columns: \['a', 'b', 'c', 'species'\]"),
        (lambda df: df.assign(name=["x"] * len(df)), {}, r"features: \['name'\].*not numeric"),
        (lambda df: df.assign(b=df["b"].where(df.index != 3)), {}, r"columns \['b'\]: missing values"),
        (
            lambda df: df.assign(species="setosa"),
            {},
            r"y: only one class \('setosa'\) found; expected at least 2 classes",
        ),
        (lambda df: df.head(6), {}, r"X: '6 rows'.*at least 10"),
        (lambda df: df, {"features": ["a", "zzz"]}, r"features: \['a', 'zzz'\].*available columns"),
        (
            lambda df: df.assign(species=df["a"]),
            {},
            r"^target: 'species' is invalid; column 'species' holds fractional numbers \(e\.g\. .*pick the label column",
        ),
        (
            lambda df: df.assign(species=[f"id{i}" for i in range(len(df))]),
            {},
            r"target: 'species'.*120 distinct values in 120 rows.*an ID or a continuous number",
        ),
    ],
)
def test_from_dataframe_errors(change, kwargs, pattern):
    kwargs = {"target": "species", **kwargs}
    with pytest.raises(ValueError, match=pattern):
        from_dataframe(change(_frame()), **kwargs)


def test_from_csv(tmp_path):
    path = tmp_path / "flowers.csv"
    df = _frame()
    df.to_csv(path, index=False)
    d = from_csv(path, "species", seed=2)
    assert d.name == "flowers" and d.class_names == ("setosa", "versicolor", "virginica")
    assert d.spec["source"] == "csv" and d.spec["path"] == str(path)
    assert _same(d, from_dataframe(df, "species", seed=2))
    with pytest.raises(ValueError, match=r"path: .*missing\.csv.*no such file"):
        from_csv(tmp_path / "missing.csv", "species")


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-16"])
def test_from_csv_reads_spreadsheet_encodings(tmp_path, encoding):
    """Non-UTF-8 exports are read (a warning names the file and the encoding), not refused."""
    df = _frame().assign(
        species=lambda d: d["species"].map({"setosa": "sétosa", "versicolor": "vérsicolor", "virginica": "virginica ±"})
    )
    utf8, other = tmp_path / "utf8.csv", tmp_path / f"export-{encoding}.csv"
    df.to_csv(utf8, index=False)
    other.write_bytes(utf8.read_text(encoding="utf-8").encode(encoding))
    if encoding == "utf-16":  # with its byte-order mark: no guessing, no warning
        d = from_csv(other, "species", seed=2)
    else:
        with pytest.warns(UserWarning, match=rf"export-{encoding}\.csv: not UTF-8; read as cp1252"):
            d = from_csv(other, "species", seed=2)
    assert d.class_names == ("sétosa", "virginica ±", "vérsicolor")
    assert _same(d, from_csv(utf8, "species", seed=2))


def test_from_csv_reads_a_bom_and_semicolons(tmp_path):
    df = _frame()
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + df.to_csv(index=False, sep=";").encode())
    assert _same(from_csv(path, "species", seed=2), from_dataframe(df, "species", seed=2))


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"", r"'.*bad\.csv' is empty"),
        (b" \n\n", r"'.*bad\.csv' is empty"),
        (b"\xef\xbb\xbf\n", r"'.*bad\.csv' has no text but blank lines"),
        (b"a,b,species\n", r"'.*bad\.csv' has a header \(a, b, species\) but no data rows"),
        (bytes(range(256)) * 4, r"'.*bad\.csv' is a binary file \(not text\), not a CSV"),
        (b"PK\x03\x04" + bytes(64), r"'.*bad\.csv' is a binary file \(a zip archive \(an Excel \.xlsx workbook\?\)\)"),
        (b'a,b\n1,"2\n', r"'.*bad\.csv' is not a readable CSV"),
    ],
)
def test_from_csv_refuses_files_that_hold_no_table(tmp_path, content, pattern):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"^path: " + pattern):
        from_csv(path, "species")


def test_from_csv_refuses_a_folder(tmp_path):
    with pytest.raises(ValueError, match=r"path: '.*' is a folder; expected a CSV file"):
        from_csv(tmp_path, "species")
