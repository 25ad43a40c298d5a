"""Model zoo: every family on the data it fits, spec round trips, hand-counted params and MACs, errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from workbench.data.datasets import list_datasets, load_dataset
from workbench.models.zoo import (
    build_model,
    build_model_from_spec,
    count_macs,
    count_params,
    describe,
    measure_latency,
    models_for,
)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def datasets():
    return {
        name: load_dataset(name, num_samples=500) if name == "mnist1d" else load_dataset(name)
        for name in list_datasets()
    }


def test_models_for_known_shapes(datasets):
    assert models_for(datasets["digits"]) == ["mlp", "cnn1d", "cnn2d"]  # 64 flat pixels: an 8x8 image too
    assert models_for(datasets["digits-images"]) == ["mlp", "cnn2d"]
    assert models_for(datasets["mnist1d"]) == ["mlp", "cnn1d"]
    assert models_for(datasets["moons"]) == models_for(datasets["spirals"]) == ["mlp"]
    assert models_for((7,)) == ["mlp"]
    assert models_for((3, 20)) == ["mlp", "cnn1d", "cnn2d"]
    assert models_for([3, 16, 16]) == ["mlp", "cnn2d"]
    assert models_for((16,)) == ["mlp", "cnn1d", "cnn2d"] and models_for((9,)) == ["mlp", "cnn1d"]


def test_cnn2d_on_flat_square_inputs_is_the_image_cnn():
    """cnn2d on digits' 64 flat pixels = the same network on the (1, 8, 8) images, same weights."""
    torch.manual_seed(0)
    flat = build_model("cnn2d", (64,), 10)
    image = build_model("cnn2d", (1, 8, 8), 10)
    image.load_state_dict(flat.state_dict())
    x = torch.randn(5, 64)
    torch.testing.assert_close(flat(x), image(x.reshape(5, 1, 8, 8)))


@pytest.mark.parametrize("name", ["digits", "digits-images", "mnist1d", "moons", "spirals"])
def test_every_fitting_family_trains_on_builtin_data(datasets, name):
    d = datasets[name]
    for family in models_for(d):
        model = build_model(family, d)
        x, y = d.train.x[:16], d.train.y[:16]
        logits = model(x)
        assert logits.shape == (16, d.num_classes)
        nn.functional.cross_entropy(logits, y).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        assert model.spec["family"] == family and model.spec["num_classes"] == d.num_classes


def test_layers_have_stable_names():
    mlp = dict(build_model("mlp", (10,), 3, hidden=(8, 6)).named_modules())
    assert {"hidden.0", "hidden.1", "hidden.1.linear", "head"} <= set(mlp)
    assert mlp["hidden.1.linear"].out_features == 6 and mlp["head"].in_features == 6
    cnn1d = dict(build_model("cnn1d", (40,), 10).named_modules())
    assert {"features.0.conv", "features.2.conv", "head"} <= set(cnn1d)
    assert [cnn1d[f"features.{i}.conv"].kernel_size for i in range(3)] == [(5,), (3,), (3,)]
    assert all(cnn1d[f"features.{i}.conv"].stride == (2,) for i in range(3))
    cnn2d = dict(build_model("cnn2d", (1, 8, 8), 10, dropout=0.3).named_modules())
    assert {"features.0.conv", "features.1.pool", "dropout", "head"} <= set(cnn2d)


@pytest.mark.parametrize(
    "family,shape,size",
    [
        ("mlp", (1, 8, 8), {"hidden": 16, "dropout": 0.2}),
        ("mlp", (5,), {"hidden": ()}),  # logistic regression
        ("cnn1d", (40,), {"channels": (8, 16), "pool": "avg"}),
        ("cnn1d", (2, 30), {"channels": [4, 4, 4, 4], "dropout": 0.1}),
        ("cnn2d", (3, 9, 7), {"channels": (4, 8, 8)}),
        ("cnn2d", (8, 8), {}),
    ],
)
def test_spec_round_trip(family, shape, size):
    model = build_model(family, shape, 4, **size)
    spec = json.loads(json.dumps(model.spec))  # plain JSON
    assert spec["input_shape"] == list(shape) and spec["num_classes"] == 4
    again = build_model_from_spec(spec)
    assert again.spec == model.spec
    assert count_params(again) == count_params(model)
    again.load_state_dict(model.state_dict())
    model.eval(), again.eval()
    x = torch.randn(5, *shape)
    assert model(x).shape == (5, 4)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_count_params_by_hand():
    model = build_model("mlp", (10,), 3, hidden=5)
    assert count_params(model) == (10 * 5 + 5) + (5 * 3 + 3)
    model.head.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 10 * 5 + 5
    assert count_params(model) == 73


def test_count_macs_by_hand():
    model = build_model("mlp", (1, 8, 8), 10, hidden=(32, 16), dropout=0.5)
    model.train()
    assert count_macs(model, (1, 8, 8)) == 64 * 32 + 32 * 16 + 16 * 10
    assert model.training  # the measurement restores the mode
    cnn = build_model("cnn1d", (40,), 10, channels=(8, 8, 8))
    # lengths 40 -> 20 -> 10 -> 5; MACs per conv = C_out * L_out * C_in * k
    convs = 8 * 20 * 1 * 5 + 8 * 10 * 8 * 3 + 8 * 5 * 8 * 3
    assert count_macs(cnn, (40,)) == convs + 8 * 5 * 10


def test_measure_latency_and_describe():
    model = build_model("mlp", (64,), 10).train()
    lat = measure_latency(model, (64,), batch_size=8, repeats=20, warmup=2)
    assert set(lat) >= {"median_ms", "p90_ms"} and 0 < lat["median_ms"] <= lat["p90_ms"]
    assert lat["repeats"] == 20 and lat["batch_size"] == 8 and model.training
    info = describe(model, (64,))
    assert info["params"] == count_params(model) and info["macs"] == 64 * 64 + 64 * 32 + 32 * 10
    assert info["latency_ms"] > 0


@pytest.mark.parametrize(
    "args,size,pattern",
    [
        (("resnet", (64,), 10), {}, r"family: 'resnet' is invalid; valid: mlp, cnn1d, cnn2d"),
        (
            ("cnn2d", (40,), 10),
            {},
            r"family: 'cnn2d'.*does not fit input shape \(40,\); valid for this data: mlp, cnn1d",
        ),
        (("cnn1d", (4,), 10), {}, r"family: 'cnn1d'.*valid for this data: mlp$"),
        (("mlp", (64,), None), {}, r"num_classes: None"),
        (("mlp", (64,), 1), {}, r"num_classes: 1 is invalid"),
        (("mlp", (), 10), {}, r"input_shape: \(\)"),
        (
            ("mlp", (64,), 10),
            {"channels": (8,)},
            r"channels: not a size option of family 'mlp'; valid: hidden, dropout",
        ),
        (("mlp", (64,), 10), {"hidden": (8, 0)}, r"hidden: \(8, 0\) is invalid"),
        (("mlp", (64,), 10), {"dropout": 1.0}, r"dropout: 1\.0 is invalid; expected a number in \[0, 1\)"),
        (("cnn1d", (64,), 10), {"channels": ()}, r"channels: \(\) is invalid"),
        (("cnn1d", (64,), 10), {"pool": "max"}, r"pool: 'max' is invalid; valid: flatten, avg"),
    ],
)
def test_build_model_errors(args, size, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_model(*args, **size)


def test_build_model_from_spec_needs_keys():
    with pytest.raises(ValueError, match=r"spec: missing key\(s\) \['num_classes'\]"):
        build_model_from_spec({"family": "mlp", "input_shape": [4]})
