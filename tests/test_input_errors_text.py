"""Hostile input to from_text, LiveRun.set_controls / Controls.update and build_model: each mistake
raises a ``ValueError`` that names the field, the value and what is valid."""

import numpy as np
import pytest
from helpers import mlp, toy_data

import workbench as wb
from workbench.data.text import from_text, shakespeare_text
from workbench.engine.distiller import CONTROLS, Controls
from workbench.engine.live import LiveRun
from workbench.engine.losses import LossWeights

TEXT = "to be or not to be, that is the question\n" * 20


# ----------------------------------------------------------------------------- from_text


def test_from_text_refuses_a_folder_given_as_a_str(tmp_path):
    folder = tmp_path / "corpus.d"
    folder.mkdir()
    for value in (str(folder), str(tmp_path)):
        with pytest.raises(ValueError) as e:
            from_text(value, block_size=2)
        msg = str(e.value)
        assert repr(value) in msg and "is a folder" in msg, msg
        assert "text file or the text itself" in msg, msg
        assert "no such file" not in msg, msg


@pytest.mark.parametrize(
    "value",
    [
        "/home/someone/projects/data/shakespeare_complete_corpus",
        "data/corpus",
        "C:\\Users\\someone\\corpus",
        "~/corpus",
        "./corpus",
    ],
)
def test_from_text_refuses_a_missing_path_without_a_suffix(value):
    with pytest.raises(ValueError, match=r"looks like a file path, but no such file exists") as e:
        from_text(value, block_size=2)
    assert f"text_or_path: {value!r} is invalid" in str(e.value)


@pytest.mark.parametrize(
    "text",
    [
        "and/or " * 40,  # a separator, but spaces: text
        "a/b\nc/d\n" * 40,  # a separator, but several lines: text
        "x~yz" * 40,  # '~' only counts at the start
        "abcabcabcabc" * 20,  # plain text without whitespace
    ],
)
def test_from_text_still_takes_text(text):
    data = from_text(text, block_size=2)
    assert data.spec["source"] == "text"


def test_from_text_still_reads_files_and_the_corpus(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text(TEXT)
    assert from_text(str(f), block_size=8).spec["source"] == "file"
    assert from_text(shakespeare_text()[:5000], block_size=8).spec["source"] == "text"


@pytest.mark.parametrize("name", [123, None, "", "   ", 1.5, ["x"]])
def test_from_text_checks_name(name):
    with pytest.raises(ValueError, match=r"name: .* is invalid; expected a non-empty str") as e:
        from_text(TEXT, block_size=8, name=name)
    assert repr(name) in str(e.value)


def test_from_text_takes_a_name():
    assert from_text(TEXT, block_size=8, name="my-poems").name == "my-poems"


# ----------------------------------------------------------------------------- controls


@pytest.mark.parametrize("bad", [{"top_k": 3}, {"on_policy": 0.5}, {"top_k": 3, "on_policy": 0.5, "temperature": 2}])
def test_controls_refuse_unknown_names(bad):
    unknown = sorted(k for k in bad if k not in CONTROLS)
    c = Controls(LossWeights())
    before = c.current
    with pytest.raises(ValueError) as e:
        c.update(**bad)
    msg = str(e.value)
    assert f"controls: unknown name(s) {unknown}" in msg, msg
    assert "valid: " + ", ".join(CONTROLS) in msg, msg
    assert c.current is before

    # a LiveRun before any fit validates through a probe Controls
    pending = LiveRun(lambda run: None)
    with pytest.raises(ValueError, match=r"controls: unknown name\(s\)"):
        pending.set_controls(**bad)
    assert pending._pending == {}

    # a LiveRun with a distilled fit updates that fit's Controls
    live = LiveRun(wb.Distiller(mlp(seed=1), mlp(seed=2), toy_data(), epochs=1))
    assert live.controls is not None
    with pytest.raises(ValueError, match=r"controls: unknown name\(s\)"):
        live.set_controls(**bad)
    assert live.set_controls(temperature=3.0).temperature == 3.0


# ----------------------------------------------------------------------------- build_model


def test_build_model_explains_spec_strings():
    data = from_text(TEXT, block_size=8)
    with pytest.raises(ValueError) as e:
        wb.build_model("gpt:1,16", data)
    msg = str(e.value)
    assert "family: 'gpt:1,16' is invalid" in msg, msg
    assert "build_model takes a family name" in msg, msg
    assert "build_model('gpt', data, n_layer=1, n_embd=16)" in msg, msg
    assert "Experiment" in msg and "make_model" in msg, msg
    with pytest.raises(ValueError, match=r"build_model\('mlp', data, hidden=\(64, 32\)\)"):
        wb.build_model("mlp:64,32", toy_data())
    # an unknown family still lists the valid ones
    with pytest.raises(ValueError, match=r"family: 'gtp:1,16' is invalid; valid: mlp, cnn1d, cnn2d, gpt"):
        wb.build_model("gtp:1,16", data)
    # the spelled-out call works
    assert wb.build_model("gpt", data, n_layer=1, n_embd=16).spec["n_embd"] == 16


def test_a_run_teacher_trained_on_another_vocabulary_of_the_same_size_is_refused(tmp_path):
    """Same vocabulary size, other characters: the ids would mean other characters (it was accepted)."""
    from workbench.experiment import load_source

    def text(chars: str, seed: int) -> str:
        g = np.random.default_rng(seed)
        return "".join(g.choice(list(chars), 400))

    mine, other = (
        from_text(text(c, i), block_size=8, name=n)
        for i, (c, n) in enumerate([("abcdef \n", "mine"), ("uvwxyz \n", "other")])
    )
    assert mine.num_classes == other.num_classes == 8
    cfg = wb.DistillConfig.for_text(max_steps=1, epochs=1, eval_every=None, sample_tokens=0)
    wb.Experiment(mine, "gpt:1,8", "gpt:1,8", cfg, runs=tmp_path, baseline=False).run()
    (teacher_run,) = [p.parent.name for p in tmp_path.glob("*/config.json") if '"role": "teacher"' in p.read_text()]
    assert load_source(f"run:{teacher_run}", mine, "--teacher", root=tmp_path).tokenizer is not None  # its own text
    with pytest.raises(ValueError, match=r"^--teacher: .* another vocabulary \(8 characters .* than data 'other'"):
        load_source(f"run:{teacher_run}", other, "--teacher", root=tmp_path)


@pytest.mark.parametrize("spec", ["gpt:1,1000000000", "gpt:1,4000000"])
def test_a_model_too_large_to_build_is_a_value_error_naming_the_field(spec):
    """Tensors whose sizes overflow, or that do not fit in memory: torch's RuntimeError named the field nowhere."""
    from workbench.experiment import estimate_params, make_model

    data = from_text("abcdefgh " * 100, block_size=8)
    if spec == "gpt:1,1000000000":  # counted on the meta device: the sizes overflow before any memory is asked
        with pytest.raises(ValueError, match=r"^--student: 'gpt:1,1000000000' is too large to build here \("):
            estimate_params(spec, data, "--student")
    with pytest.raises(ValueError, match=rf"^student: '{spec}' is too large to build here \(.*\); expected a smaller"):
        make_model(spec, data, "student", 0)


def test_an_experiment_refuses_a_gpt_module_of_another_vocabulary_or_block_size():
    """It failed with torch's raw IndexError (or the GPT's own idx message) in the sanity gate, naming no role."""
    from workbench.models.gpt import GPT

    data = from_text("abcdefghijklmnopqrstuvwxyz0123" * 100, block_size=16)
    cfg = wb.DistillConfig.for_text(max_steps=2, epochs=1, eval_every=None, sample_tokens=0)
    k = data.num_classes
    for teacher, words in (
        (GPT(k - 8, 16, 1, 2, 16), r"IndexError: index out of range"),
        (GPT(k, 8, 1, 2, 16), r"block_size=8"),
    ):
        with pytest.raises(ValueError, match=rf"^teacher: the GPT given does not accept blocks of data .*{words}"):
            wb.Experiment(data, teacher, "gpt:1,8", cfg, baseline=False)
    with pytest.raises(ValueError, match=r"^student: the GPT given"):
        wb.Experiment(data, "gpt:1,8", GPT(k - 8, 16, 1, 2, 8), cfg, baseline=False)
    wb.Experiment(data, GPT(k, 16, 1, 2, 16), "gpt:1,8", cfg, baseline=False)  # one that fits is taken
