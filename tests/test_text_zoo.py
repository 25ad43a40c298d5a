"""Text data through ``load_dataset`` and the GPT family in the zoo: routing and defaults, logits
per position, parameter and MAC counts against ``gpt.py``'s formulas and torch's FlopCounterMode,
latency on token inputs, which families the data is offered, and a spec that rebuilds the model
(also from a run folder, through ``load_model``)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from workbench.data.datasets import list_datasets, load_dataset
from workbench.data.text import load_text_dataset, tokenizer_of
from workbench.models import gpt
from workbench.models.load import check_compatible, load_model
from workbench.models.zoo import (
    DEFAULTS,
    FAMILIES,
    build_model,
    build_model_from_spec,
    count_macs,
    count_params,
    describe,
    measure_latency,
    models_for,
    parse_model,
)
from workbench.store.runs import atomic_save, atomic_write_json

BLOCK = 16
SIZE = {"n_layer": 2, "n_embd": 32, "n_head": 2}  # tiny: every test stays well under a second


@pytest.fixture(scope="module")
def text():
    return load_dataset("shakespeare-char", block_size=BLOCK)


@pytest.fixture(scope="module")
def table():
    return load_dataset("moons", n_samples=60)


def _native(data, **size) -> dict:
    """The ``gpt.build_gpt`` spec of a GPT of ``size`` for ``data``."""
    return {"family": "gpt", "vocab_size": data.num_classes, "block_size": data.input_shape[0], **size}


# ----------------------------------------------------------------------------- load_dataset


def test_load_dataset_routes_text_to_load_text_dataset_with_text_defaults(text):
    ref = load_text_dataset("shakespeare-char", block_size=BLOCK)
    assert dict(text.spec) == dict(ref.spec)
    assert (text.spec["val_fraction"], text.spec["test_fraction"]) == (0.05, 0.05)  # not the tables' 0.15 / 0.2
    for name in ("train", "val", "test"):
        mine, theirs = getattr(text, name), getattr(ref, name)
        assert torch.equal(mine.x, theirs.x) and torch.equal(mine.y, theirs.y)
    assert text.input_shape == (BLOCK,) and text.train.x.dtype == torch.int64
    assert text.num_classes == tokenizer_of(text).vocab_size == len(text.class_names)
    x, y = text.train.x, text.train.y  # (N, L) each
    assert torch.equal(y[:, :-1], x[:, 1:])  # the target is the next character...
    assert torch.equal(y[:-1, -1], x[1:, 0])  # ...across block boundaries too: the blocks are contiguous


def test_load_dataset_text_options_and_rebuild_from_spec(text):
    again = load_dataset(**text.spec)  # spec holds the arguments that rebuild it (tokenizer included)
    assert torch.equal(again.train.x, text.train.x) and dict(again.spec) == dict(text.spec)
    small = load_dataset("shakespeare-char", block_size=8, val_fraction=0.1, test_fraction=0)
    assert small.test is None and small.input_shape == (8,) and small.spec["val_fraction"] == 0.1
    moons = load_dataset("moons", n_samples=60)  # tables keep their defaults
    assert (moons.spec["val_fraction"], moons.spec["test_fraction"]) == (0.15, 0.2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise": 0.1}, r"noise: not an option of dataset 'shakespeare-char'; valid: block_size"),
        ({"block_size": 0}, r"block_size: 0 is invalid; expected an integer >= 1"),
        ({"n_unlabeled": 5}, r"n_unlabeled: 5 is invalid; generating unlabeled inputs is not available"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, r"val_fraction \+ test_fraction: 0.6 \+ 0.5 is invalid"),
        ({"tokenizer": {"kind": "char", "chars": "ab"}}, r"tokenizer: .* does not match the vocabulary"),
    ],
)
def test_load_dataset_text_errors_name_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("shakespeare-char", **kwargs)


def test_list_datasets_keeps_text_out_of_the_table_pickers():
    tables = ["digits", "digits-images", "mnist1d", "moons", "spirals"]
    assert list_datasets() == list_datasets("table") == tables
    assert list_datasets("text") == ["shakespeare-char"]
    assert list_datasets("all") == tables + ["shakespeare-char"]
    with pytest.raises(ValueError, match=r"kind: 'images' is invalid; valid: table, text, all"):
        list_datasets("images")
    with pytest.raises(ValueError, match=r"name: 'shakespeare' is invalid; valid datasets: .*shakespeare-char"):
        load_dataset("shakespeare")


# ----------------------------------------------------------------------------- the gpt family


def test_gpt_from_the_zoo_is_build_gpt_on_the_data(text):
    torch.manual_seed(0)
    model = build_model("gpt", text, **SIZE)
    torch.manual_seed(0)
    ref = gpt.build_gpt(_native(text, **SIZE))  # the same seed: the same weights
    assert isinstance(model, gpt.GPT)
    assert model.spec == {
        "family": "gpt",
        "input_shape": [BLOCK],
        "num_classes": text.num_classes,
        **SIZE,
        "dropout": 0.0,
    }
    x = text.train.x[:3]  # (3, L)
    logits = model(x)
    assert logits.shape == (3, BLOCK, text.num_classes)  # (B, L, V)
    torch.testing.assert_close(logits, ref(x), rtol=0, atol=0)
    assert count_params(model) == count_params(ref) == gpt.gpt_param_count(_native(text, **SIZE))
    assert DEFAULTS["gpt"] == gpt.DEFAULTS and "gpt" not in FAMILIES  # the UIs' family list stays tables only
    default = build_model("gpt", text)
    assert {k: default.spec[k] for k in gpt.DEFAULTS} == gpt.DEFAULTS


def test_gpt_macs_match_gpt_macs_and_flop_counter(text):
    model = build_model("gpt", text, **SIZE)
    native = _native(text, **SIZE)
    assert count_macs(model, (BLOCK,)) == gpt.gpt_macs(native)
    assert count_macs(model, (5,)) == gpt.gpt_macs(native, seq_len=5)
    # Independent check: FlopCounterMode counts every matmul; on CPU it may miss the attention
    # scores (2 L^2 C per layer) of scaled_dot_product_attention.
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randint(text.num_classes, (1, BLOCK)))
    attention = SIZE["n_layer"] * 2 * BLOCK * BLOCK * SIZE["n_embd"]
    assert counter.get_total_flops() // 2 in (gpt.gpt_macs(native) - attention, gpt.gpt_macs(native))


def test_gpt_latency_feeds_token_ids(text):
    model = build_model("gpt", text, **SIZE)
    lat = measure_latency(model, (BLOCK,), batch_size=3, repeats=2, warmup=1)
    assert lat["batch_size"] == 3 and lat["repeats"] == 2 and 0 < lat["median_ms"] <= lat["p90_ms"]
    facts = describe(model, text.input_shape)
    assert facts["params"] == count_params(model) and facts["macs"] == count_macs(model, (BLOCK,))
    for bad in ((BLOCK + 1,), (1, BLOCK)):
        with pytest.raises(
            ValueError, match=rf"input_shape: .* is invalid; expected \(L,\) with L <= block_size={BLOCK}"
        ):
            count_macs(model, bad)


def test_models_for_offers_gpt_for_text_only(text, table):
    assert models_for(text) == ["gpt"]
    assert models_for(table) == ["mlp"] and "gpt" not in models_for((BLOCK,))  # a bare shape is a table's
    with pytest.raises(
        ValueError, match=r"family: 'gpt' is invalid; does not fit input shape \(2,\): it needs text data"
    ):
        build_model("gpt", table)
    with pytest.raises(
        ValueError,
        match=r"family: 'mlp' is invalid; does not fit text data 'shakespeare-char'.*"
        r"valid for this data: gpt",
    ):
        build_model("mlp", text)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (
            ("transformer",),
            {},
            r"family: 'transformer' is invalid; valid: mlp, cnn1d, cnn2d, gpt \(for this data: gpt\)",
        ),
        (
            ("gpt",),
            {"vocab_size": 10},
            r"vocab_size: not a size option of family 'gpt'; valid: n_layer, n_head, "
            r"n_embd, dropout \(vocab_size and block_size come from the data",
        ),
        (("gpt",), {"num_classes": 5}, r"num_classes: 5 is invalid; expected the vocabulary size"),
        (("gpt",), {"n_embd": 30}, r"n_embd: 30 is invalid; expected a multiple of n_head=4"),
        (("gpt",), {"n_layer": 0}, r"n_layer: 0 is invalid; expected an integer >= 1"),
    ],
)
def test_build_gpt_errors_name_the_field(text, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(*args, text, **kwargs)


def test_gpt_on_a_bare_shape_needs_a_sequence():
    assert build_model("gpt", (8,), 11, n_layer=1, n_embd=8).spec["num_classes"] == 11
    with pytest.raises(ValueError, match=r"input_shape: \(1, 8, 8\) is invalid; expected \(block_size,\)"):
        build_model("gpt", (1, 8, 8), 10)


# ----------------------------------------------------------------------------- specs and loading


def test_gpt_spec_round_trips_through_json(text):
    model = build_model("gpt", text, **SIZE)
    spec = json.loads(json.dumps(model.spec))
    again = build_model_from_spec(spec)
    assert again.spec == model.spec
    again.load_state_dict(model.state_dict())
    x = text.val.x[:2]
    torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)
    native = gpt.build_gpt(_native(text, **SIZE)).spec  # gpt.py's own form is accepted too
    assert build_model_from_spec(native).spec == model.spec
    with pytest.raises(ValueError, match=r"spec: block_size=8 disagrees with input_shape=\[16\]"):
        build_model_from_spec({**model.spec, "block_size": 8})
    with pytest.raises(ValueError, match=r"spec: missing key\(s\) \['input_shape'\]"):
        build_model_from_spec({"family": "gpt", "vocab_size": 10})


def test_a_gpt_run_loads_by_run_id(text, tmp_path):
    model = build_model("gpt", text, **SIZE).eval()
    run = tmp_path / "runs" / "gpt-run"  # the folder a finished RunRecorder leaves ($WORKBENCH_RUNS: conftest)
    run.mkdir(parents=True)
    atomic_save(model.state_dict(), run / "model.pt")
    atomic_write_json(run / "spec.json", model.spec)
    atomic_write_json(run / "config.json", {"run_id": "gpt-run", "role": "teacher", "model_spec": model.spec})
    atomic_write_json(run / "summary.json", {"run_id": "gpt-run", "status": "finished"})
    atomic_write_json(run / "status.json", {"status": "finished"})
    (run / "metrics.jsonl").write_text("", encoding="utf-8")
    loaded = load_model("run:gpt-run", data=text)  # check_compatible: (2, L, V) logits
    assert loaded.kind == "run" and loaded.spec == model.spec
    x = text.test.x[:2]
    torch.testing.assert_close(loaded.module(x), model(x), rtol=0, atol=0)
    check_compatible(loaded, text, role="student")


# ----------------------------------------------------------------------------- parse_model


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gpt", ("gpt", {})),
        ("gpt:3", ("gpt", {"n_layer": 3})),
        ("gpt:2,64", ("gpt", {"n_layer": 2, "n_embd": 64})),
        (" gpt:4, 128, 8", ("gpt", {"n_layer": 4, "n_embd": 128, "n_head": 8})),
        ("mlp:64,32", ("mlp", {"hidden": (64, 32)})),
    ],
)
def test_parse_model_gpt(spec, expected):
    assert parse_model(spec) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            "gpt:1,2,3,4",
            r"model: 'gpt:1,2,3,4' is invalid; expected 'gpt:LAYERS,WIDTH\[,HEADS\]' \(at most 3 numbers\)",
        ),
        ("gpt:two", r"model: 'gpt:two' is invalid; sizes must be integers, e.g. 'gpt:2,64'"),
        ("gpt:2,64,", r"sizes must be integers"),
        ("llama:2", r"FAMILY in mlp, cnn1d, cnn2d, gpt"),
    ],
)
def test_parse_model_gpt_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_model(spec)


def test_parsed_gpt_text_builds(text):
    family, size = parse_model("gpt:1,24,3")
    model = build_model(family, text, **size)
    assert (len(model.blocks), model.tok_emb.embedding_dim, model.blocks[0].attn.n_head) == (1, 24, 3)
