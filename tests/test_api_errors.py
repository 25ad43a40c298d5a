"""Hostile input to the API: numpy scalars are taken as plain numbers; every mistake in the
config, the models or the data fails at construction (before any training) with a
``ValueError`` that names the field, the value and what is valid."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from helpers import Recorder, mlp, toy_data
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from workbench import DistillConfig, Distiller, as_splits, build_model, distill, train
from workbench.data.splits import MAX_CLASSES, DataSplits, Split
from workbench.engine.distiller import Controls


def _fails(match, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` raises a ValueError whose message matches ``match``."""
    with pytest.raises(ValueError, match=match) as e:
        fn(*args, **kwargs)
    return str(e.value)


# ----------------------------------------------------------------------------- config


def test_numpy_scalars_become_plain_values():
    c = DistillConfig(
        epochs=np.int64(5),
        batch_size=np.int32(16),
        lr=np.float32(0.5),
        temperature=np.float64(2.0),
        alpha=np.float32(0.25),
        seed=np.uint8(3),
        max_steps=np.int16(7),
        cache_teacher=np.bool_(False),
        optimizer=np.str_("sgd"),
    )
    plain = DistillConfig(
        epochs=5,
        batch_size=16,
        lr=0.5,
        temperature=2.0,
        alpha=0.25,
        seed=3,
        max_steps=7,
        cache_teacher=False,
        optimizer="sgd",
    )
    assert c == plain
    for name in ("epochs", "batch_size", "seed", "max_steps"):
        assert type(getattr(c, name)) is int
    assert type(c.lr) is float and type(c.cache_teacher) is bool and type(c.optimizer) is str
    d = json.loads(json.dumps(c.to_dict()))
    assert DistillConfig.from_dict(d) == c


def test_numpy_scalars_train_like_plain_numbers():
    data = toy_data()
    a = distill(mlp(hidden=32, seed=1), mlp(seed=2), data, epochs=np.int64(2), lr=np.float32(0.01), seed=np.int64(4))
    b = distill(mlp(hidden=32, seed=1), mlp(seed=2), data, epochs=2, lr=float(np.float32(0.01)), seed=4)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q)


def test_live_controls_take_numpy_scalars():
    c = Controls(DistillConfig().weights)
    w = c.update(temperature=np.float32(3.0), w_kd=np.int64(2))
    assert (w.temperature, w.kd) == (3.0, 2.0) and type(w.temperature) is float


def test_live_controls_refuse_bad_names_and_alphas():
    d = Distiller(mlp(hidden=32, seed=1), mlp(seed=2), toy_data())
    _fails(r"controls: unknown name\(s\) \['temp'\]; valid: temperature, w_ce", d.set_controls, temp=3.0)
    _fails(r"alpha: 'high' is invalid; expected a number", d.set_controls, alpha="high")
    _fails(r"alpha: array\(\[0.5\]\) is invalid", d.set_controls, alpha=np.array([0.5]))
    assert d.set_controls(alpha=np.float32(0.25)).ce == 0.25


def test_a_distiller_runs_once():
    d = Distiller(None, mlp(), toy_data(), epochs=1)
    first = d.fit()
    before = first.history.copy()
    with pytest.raises(RuntimeError, match=r"fit: run '.*' has already been started; a Distiller runs once"):
        d.fit()
    assert first.history.equals(before)  # the first run's history is intact


@pytest.mark.parametrize(
    "field,scalar,value,valid",
    [
        ("epochs", np.int64(5), np.array([5]), ">= 1"),
        ("epochs", np.int64(5), np.array(5), ">= 1"),  # a 0-d array is still an array
        ("epochs", np.int64(5), np.bool_(True), ">= 1"),  # a numpy bool is a bool, not a count
        ("epochs", np.int64(5), "5", ">= 1"),
        ("lr", np.float32(0.1), np.float64("nan"), "finite"),
        ("temperature", np.float32(2.0), np.float32("inf"), "finite"),
        ("lr", np.float32(0.1), np.array([0.1, 0.2]), "a number"),
        ("lr", np.float32(0.1), True, "a number"),
        ("seed", np.uint16(1), np.float64(1.5), ">= 0"),
        ("cache_teacher", np.bool_(False), "no", "True or False"),
        ("use_unlabeled", np.bool_(False), 1, "True or False"),
        ("compile", np.bool_(False), None, "True or False"),
        ("device", np.str_("cpu"), "gpu", "'cuda:N'"),
        ("device", np.str_("cpu"), "cuda:abc", "'cuda:N'"),
        ("device", np.str_("cpu"), "meta", "'cuda:N'"),
    ],
)
def test_numpy_scalars_accepted_but_bad_values_refused(field, scalar, value, valid):
    """Each field takes a numpy scalar as its plain value, and still refuses arrays, text, NaN..."""
    assert getattr(DistillConfig(**{field: scalar}), field) == scalar.item()
    msg = _fails(re.escape(valid), DistillConfig, **{field: value})
    assert msg.startswith(f"{field}: ")


def test_from_dict_refuses_non_dicts_and_suggests_close_names():
    _fails(r"config: \['epochs'\] is invalid; expected a DistillConfig or a dict", DistillConfig.from_dict, ["epochs"])
    msg = _fails(r"unknown field\(s\) \['temprature'\]", DistillConfig.from_dict, {"temprature": 4})
    assert "did you mean 'temperature'?" in msg
    _fails(r"unknown field\(s\) \[1, 'x'\]", DistillConfig.from_dict, {1: 2, "x": 3})  # mixed key types


@pytest.mark.parametrize("config", ["fast", 5, [("epochs", 2)]])
def test_distiller_refuses_a_config_of_the_wrong_type(config):
    _fails(
        r"config: .* is invalid; expected a DistillConfig, a dict of its fields or None",
        Distiller,
        None,
        mlp(),
        toy_data(),
        config,
    )


def test_unknown_override_is_refused():
    _fails(r"unknown field\(s\) \['epoch'\].*did you mean 'epochs'", Distiller, None, mlp(), toy_data(), epoch=3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_fails_before_training():
    rec = Recorder()
    _fails(
        r"device: 'cuda' is not available on this machine",
        Distiller,
        None,
        mlp(),
        toy_data(),
        DistillConfig(device="cuda"),
        callbacks=[rec],
    )
    assert rec.calls == []


# ----------------------------------------------------------------------------- models


class Out(nn.Module):
    """An MLP whose forward returns ``make(logits, x)``."""

    def __init__(self, make, seed=2):
        super().__init__()
        self.m, self.make = mlp(seed=seed), make

    def forward(self, x):
        return self.make(self.m(x), x)


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_dict_without_logits_names_the_model_and_its_keys(role):
    bad = Out(lambda z, x: {"out": z, "features": x})
    teacher, student = (mlp(hidden=32, seed=1), bad) if role == "student" else (bad, mlp(seed=2))
    msg = _fails(
        rf"^{role}: model output: cannot find logits in a dict with keys \['features', 'out'\]",
        Distiller,
        teacher,
        student,
        toy_data(),
    )
    assert "'logits'" in msg


def test_non_tensor_logits_entries_are_described():
    _fails(
        r"student: .*a dict whose 'logits' is a list, not a tensor",
        Distiller,
        None,
        Out(lambda z, x: {"logits": z.tolist()}),
        toy_data(),
    )
    _fails(
        r"student: .*a tuple whose first item is a NoneType", Distiller, None, Out(lambda z, x: (None, z)), toy_data()
    )


class TypeErrorForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 3)

    def forward(self, x, mask):  # needs an argument the engine does not pass
        return self.lin(x) * mask


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_type_error_in_forward_is_wrapped_like_any_error(role):
    teacher, student = (mlp(hidden=32), TypeErrorForward()) if role == "student" else (TypeErrorForward(), mlp())
    _fails(
        rf"^{role}: forward pass on inputs of shape \(2, 8\) failed: TypeError: .*mask",
        Distiller,
        teacher,
        student,
        toy_data(),
    )


@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda z, x: z.argmax(1),
            r"student: expected logits of shape \(batch, classes\), got \(2,\) for inputs of "
            r"shape \(2, 8\)",
        ),
        (lambda z, x: z[:, :, None], r"student: expected logits of shape \(batch, classes\), got \(2, 3, 1\) for "),
        (lambda z, x: z.sum(0, keepdim=True), r"student: returned 1 rows of logits for 2 inputs"),
        (lambda z, x: z[:, :1], r"student: outputs 1 class\(es\), shape \(2, 1\)"),
        (
            lambda z, x: torch.zeros_like(z, dtype=torch.long) + z.argmax(1, keepdim=True),
            r"student: returned logits of dtype torch.int64; expected floating-point scores",
        ),
        (lambda z, x: z * float("nan"), r"student: outputs NaN or inf on two training samples"),
        (lambda z, x: z.detach(), r"student: its output does not depend on its trainable parameters"),
    ],
)
def test_wrong_model_outputs_fail_before_training(make, match):
    _fails(match, Distiller, None, Out(make), toy_data())


def test_student_without_trainable_parameters():
    _fails(
        r"student: nothing to train \(it has no parameters\)",
        Distiller,
        None,
        nn.Sequential(nn.Flatten(), nn.Identity()),
        toy_data(),
    )
    frozen = mlp().requires_grad_(False)
    _fails(
        r"student: nothing to train \(all 195 of its parameters have requires_grad=False\)",
        Distiller,
        None,
        frozen,
        toy_data(),
    )


def test_model_on_the_meta_device():
    with torch.device("meta"):
        student = mlp()
    _fails(r"student: its weights are on the 'meta' device", Distiller, None, student, toy_data())


def test_model_of_another_dtype_gets_a_hint():
    _fails(
        r"student: forward pass .* failed: .*\(the inputs are torch.float32 but its weights are torch.float64; "
        r"use model.float\(\)\)",
        Distiller,
        None,
        mlp().double(),
        toy_data(),
    )


def test_teacher_and_student_sharing_parameters():
    student = mlp(seed=2)
    teacher = nn.Sequential(student, nn.Linear(3, 3))  # the student inside the teacher
    _fails(r"teacher, student: they share 4 parameter tensor\(s\)", Distiller, teacher, student, toy_data())


def test_callbacks_must_be_a_list_of_objects_with_hooks():
    _fails(
        r"callbacks: expected a list of callback objects, got Recorder; pass callbacks=\[cb\]",
        Distiller,
        None,
        mlp(),
        toy_data(),
        callbacks=Recorder(),
    )
    _fails(r"callbacks: 'oops' has none of the hooks", Distiller, None, mlp(), toy_data(), callbacks=["oops"])


def test_run_id_and_controls_types():
    _fails(r"run_id: '' is invalid; expected a non-empty string", Distiller, None, mlp(), toy_data(), run_id="")
    _fails(r"run_id: 7 is invalid", Distiller, None, mlp(), toy_data(), run_id=7)
    _fails(
        r"controls: expected a workbench Controls or None, got dict",
        Distiller,
        mlp(hidden=32),
        mlp(),
        toy_data(),
        controls={"temperature": 2},
    )


def test_build_model_takes_numpy_integers():
    a = build_model("mlp", (np.int64(8),), np.int64(3), hidden=(np.int64(16),), dropout=np.float32(0.5))
    torch.manual_seed(0)
    b = build_model("mlp", (8,), 3, hidden=(16,), dropout=0.5)
    assert a.spec == b.spec and type(a.spec["num_classes"]) is int
    json.dumps(a.spec)


# ----------------------------------------------------------------------------- DataLoaders


def _loader(dataset, **kw):
    return DataLoader(dataset, batch_size=8, **kw)


class Items(Dataset):
    """A map-style dataset whose items are ``make(i)``."""

    def __init__(self, make, n=16):
        self.make, self.n = make, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.make(i)


class Stream(IterableDataset):
    def __iter__(self):
        return iter([(torch.zeros(8), 0)] * 4)


X = torch.randn(16, 8)


@pytest.mark.parametrize(
    "loader,match",
    [
        (
            _loader(TensorDataset(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long))),
            r"data\['train'\]: the DataLoader yields no batches \(0 samples, batch_size=8, drop_last=False\)",
        ),
        (
            _loader(TensorDataset(X[:5], torch.zeros(5, dtype=torch.long)), drop_last=True),
            r"data\['train'\]: the DataLoader yields no batches \(5 samples, batch_size=8, drop_last=True\)",
        ),
        (
            _loader(TensorDataset(X, torch.zeros(16, dtype=torch.long), torch.ones(16))),
            r"data\['train'\]: the DataLoader yields lists of 3 items; expected \(x, y\) batches",
        ),
        (_loader(TensorDataset(X)), r"data\['train'\]: the DataLoader yields lists of 1 items"),
        (_loader(Items(lambda i: X[i])), r"data\['train'\]: the DataLoader yields single tensors of shape \(8, 8\)"),
        (
            _loader(Items(lambda i: {"input": X[i], "target": 0})),
            r"data\['train'\]: the DataLoader yields dicts with keys \['input', 'target'\]",
        ),
        (
            _loader(TensorDataset(X, torch.zeros(16))),
            r"data\['train'\] y: the DataLoader yields labels of dtype torch.float32; expected torch.int64",
        ),
        (
            _loader(TensorDataset(X, torch.zeros(16, dtype=torch.int32))),
            r"data\['train'\] y: the DataLoader yields labels of dtype torch.int32",
        ),
        (
            _loader(TensorDataset(X * float("nan"), torch.zeros(16, dtype=torch.long))),
            r"data\['train'\] X: 8 sample\(s\) hold NaN or inf",
        ),
        (
            _loader(TensorDataset(X, -torch.ones(16, dtype=torch.long))),
            r"data\['train'\] y: labels must be class indices >= 0, got -1",
        ),
        (
            _loader(TensorDataset(X, torch.full((16,), 7))),
            r"data\['train'\] y: label 7 in the first batch, but student outputs 3 classes; expected labels 0..2",
        ),
        (
            _loader(Items(lambda i: 1 / 0)),
            r"data\['train'\]: reading the first batch of the DataLoader failed: "
            r"ZeroDivisionError",
        ),
        (_loader(Stream()), r"data\['train'\]: the DataLoader's dataset has no length"),
    ],
    ids=[
        "empty",
        "drop-last",
        "3-tuples",
        "1-tuples",
        "tensor",
        "dicts",
        "float-labels",
        "int32-labels",
        "nan",
        "negative",
        "out-of-range",
        "raising",
        "iterable",
    ],
)
def test_bad_dataloaders_fail_before_training(loader, match):
    rec = Recorder()
    _fails(match, Distiller, None, mlp(), loader, callbacks=[rec])
    assert rec.calls == []


def test_held_out_labels_beyond_the_model_with_a_train_loader():
    vx, vy = toy_data()["val"]
    train_loader = _loader(TensorDataset(X, torch.zeros(16, dtype=torch.long)))
    _fails(
        r"student: outputs 3 classes but the data has 8 \(labels 0..7\)",
        Distiller,
        None,
        mlp(),
        DataSplits(train=train_loader, val=Split(vx, vy + 5)),
    )


def test_bad_validation_loader_fails_before_training():
    data = toy_data()
    val = _loader(TensorDataset(X, torch.zeros(16, dtype=torch.long), torch.ones(16)))
    _fails(
        r"data\['val'\]: the DataLoader yields lists of 3 items",
        Distiller,
        None,
        mlp(),
        {"train": data["train"], "val": val},
    )


# ----------------------------------------------------------------------------- in-memory data

N = 12
XS, YS = np.random.default_rng(0).normal(size=(N, 8)), np.arange(N) % 3


@pytest.mark.parametrize(
    "pair,match",
    [
        ((XS, np.where(YS == 0, np.nan, YS)), r"data\['train'\] y: labels hold NaN or inf"),
        (
            (XS, np.array(["a", "b", "c"] * 4)),
            r"data\['train'\] y: labels are <U1 values such as \['a', 'b', 'c'\]; "
            r"expected class indices 0..K-1 \(workbench.from_arrays",
        ),
        ((XS.astype(complex), YS), r"data\['train'\] X: dtype complex128 .* is not numeric"),
        ((XS.astype(object), YS), r"data\['train'\] X: dtype object .* is not numeric"),
        (
            (XS[:, 0], YS),
            r"data\['train'\] X: expected shape \(N, features...\), got \(12,\); for one feature per "
            r"sample use X.reshape\(-1, 1\)",
        ),
        ((XS[:, :0], YS), r"data\['train'\] X: shape \(12, 0\) has no features per sample"),
        (
            (XS, YS[:, None]),
            r"expected shape \(12,\) to match X \(12 rows\), got \(12, 1\); flatten it: y.reshape\(-1\)",
        ),
        (
            (XS, np.eye(3)[YS]),
            r"got \(12, 3\); it looks one-hot or per-class scores: pass class indices, y.argmax\(1\)",
        ),
        ((XS, YS[:5]), r"expected shape \(12,\) to match X \(12 rows\), got \(5,\)"),
        ((XS, YS + MAX_CLASSES), rf"data\['train'\] y: label {MAX_CLASSES + 2} is too large"),
    ],
    ids=[
        "nan-labels",
        "string-labels",
        "complex",
        "object",
        "1d-x",
        "0-features",
        "column-y",
        "one-hot",
        "lengths",
        "huge-label",
    ],
)
def test_bad_arrays_fail_with_field_value_and_fix(pair, match):
    _fails(match, as_splits, pair)


@pytest.mark.parametrize(
    "data,match",
    [
        (pd.DataFrame({"a": [1.0, 2.0], "y": [0, 1]}), r"got DataFrame; for a DataFrame use workbench.from_dataframe"),
        ("digits.csv", r"got str; for a CSV file use workbench.from_csv"),
        ((XS, YS, YS), r"got tuple of 3 items"),
        (
            {"train": (XS, YS), "val": (XS, YS, YS)},
            r"data\['val'\]: expected an \(X, y\) pair, .* got tuple of 3 items",
        ),
        ({0: (XS, YS), "x": (XS, YS)}, r"data: unknown split name\(s\) \[0, 'x'\]"),
        ({"train": None, "val": (XS, YS)}, r"data: a 'train' split is required"),
    ],
)
def test_wrong_containers_say_what_to_use(data, match):
    _fails(match, as_splits, data)


def test_absent_splits_may_be_none():
    res = train(mlp(), {"train": toy_data()["train"], "val": None, "test": None}, epochs=1)
    assert res.status == "completed" and set(res.evals.split) == {"train"}


def test_splits_must_agree():
    x, y = toy_data()["train"]
    _fails(
        r"data\['val'\] X: per-sample shape \(4,\) differs from train's \(8,\)",
        as_splits,
        {"train": (x, y), "val": (x[:, :4], y)},
    )
    _fails(
        r"data\['test'\] y: label 3 is out of range for num_classes=3; expected labels 0..2",
        as_splits,
        DataSplits(train=Split(x, y), test=Split(x, y + 1), num_classes=3),
    )
    _fails(
        r"unlabeled: shape \(5, 4\) does not fit; expected \(M, 8\)",
        as_splits,
        DataSplits(train=Split(x, y), unlabeled=torch.zeros(5, 4)),
    )
    _fails(
        r"unlabeled: holds NaN or inf", as_splits, DataSplits(train=Split(x, y), unlabeled=torch.full((5, 8), np.nan))
    )
    _fails(r"class_names: 2 names for 3 classes", as_splits, DataSplits(train=Split(x, y), class_names=("a", "b")))
    _fails(r"num_classes: '3' is invalid; expected an integer >= 1", DataSplits, train=Split(x, y), num_classes="3")


def test_hand_made_splits_are_checked_and_converted():
    x, y = toy_data()["train"]
    bad = x.clone()
    bad[5, 2] = float("inf")
    _fails(
        r"data\['train'\] X: 1 sample\(s\) hold NaN or inf \(first at row 5\)",
        Distiller,
        None,
        mlp(),
        DataSplits(train=Split(bad, y)),
    )
    _fails(r"data\['train'\]: has 0 samples", as_splits, DataSplits(train=Split(x[:0], y[:0])))
    # float64 inputs and float labels in a hand-made Split train exactly like float32 / int64 ones
    a = train(mlp(), DataSplits(train=Split(x.double(), y.float())), epochs=2, seed=1)
    b = train(mlp(), (x, y), epochs=2, seed=1)
    assert a.status == b.status == "completed"
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q)
    d = DataSplits(train=Split(x, y))
    assert as_splits(d) is d  # valid splits pass through unchanged
    from workbench.data.text import text_splits

    d = text_splits("to be or not to be, that is the question. " * 20, block_size=8)
    assert as_splits(d) is d and d.train.x.dtype == torch.int64  # text blocks keep their integer tokens
