"""The run store under hostile input: run ids never leave the runs root, damaged files never
crash a listing or a command, and checkpoints never run code."""

import os
import pathlib
import pickle
import re
import shutil
import warnings

import pandas as pd
import pytest
import torch
from helpers import mlp, toy_data

from workbench import DistillConfig, Distiller, load_dataset, train
from workbench.cli import main
from workbench.models.zoo import build_model
from workbench.store.export import export_run
from workbench.store.runs import RunRecorder, list_runs, load_checkpoint, load_run, remove_run, remove_runs, run_dir

REFUSED = "is not a valid run id|is a link, not a real folder"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One tiny real fit of a zoo model, recorded: (its folder, its run id)."""
    root = tmp_path_factory.mktemp("real") / "runs"
    torch.manual_seed(0)
    data = load_dataset("moons")
    model = build_model("mlp", data, hidden=(4,))
    res = train(model, data, DistillConfig(epochs=1, seed=0), callbacks=[RunRecorder(model, root)])
    assert res.status == "completed"
    return root / res.run_id, res.run_id


def snapshot(folder, skip=None):
    """Every file under ``folder`` (but not under ``skip``, nor behind a link) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and (skip is None or not p.is_relative_to(skip))
    }


@pytest.fixture
def store(tmp_path, real_run):
    """A runs root with the real run, and decoys outside it that look like runs to a naive store.

    tmp/far/x          reached by '../../x'
    tmp/far/home/      itself a copy of a run (so '..' from the root looks like a run)
    tmp/far/home/decoy reached by '../decoy' and by the link root/link
    tmp/far/home/runs  the root
    """
    src, good = real_run
    home = tmp_path / "far" / "home"
    shutil.copytree(src, home)
    shutil.copytree(src, home / "decoy")
    shutil.copytree(src, tmp_path / "far" / "x")
    root = home / "runs"
    shutil.copytree(src, root / good)
    (root / "link").symlink_to(home / "decoy", target_is_directory=True)
    before = snapshot(tmp_path / "far", skip=root)
    yield root, good, home
    # every test: the decoys outside the root are byte-identical
    assert snapshot(tmp_path / "far", skip=root) == before, "a file outside the runs root was changed"


def bad_ids(home):
    return [
        "..",
        "../decoy",
        "../../x",
        str(home / "decoy"),
        str(home),
        "link",
        ".",
        "",
        "a/b",
        "a\\b",
        "-rf",
        ".hidden",
        "x\x00y",
        "\x1b[31mred",
        "run\nid",
        "x" * 201,
        None,
        7,
    ]


def test_bad_run_ids_are_refused_by_every_api_call_and_touch_nothing(store):
    root, good, home = store
    for bad in bad_ids(home):
        for call, args in (
            (load_run, (bad, root)),
            (remove_run, (bad, root)),
            (export_run, (bad, "state_dict", root)),
            (run_dir, (bad, root)),
        ):
            with pytest.raises(ValueError, match=REFUSED) as info:
                call(*args)
            assert repr(bad) in str(info.value)
    assert (home / "decoy" / "config.json").is_file() and (root / "link").is_symlink()
    assert load_run(good, root).model is not None  # a valid id still works, end to end
    with pytest.raises(ValueError, match=REFUSED):  # several at once: all or none
        remove_runs([good, "../decoy"], root)
    assert (root / good).is_dir()
    remove_run(good, root)
    assert not (root / good).exists()


@pytest.mark.parametrize("command", ["rm", "show", "export"])
def test_cli_refuses_bad_run_ids_and_touches_nothing(store, command, capsys):
    root, good, home = store
    flags = ["--runs", str(root)] + (["--format", "state_dict"] if command == "export" else [])
    for bad in bad_ids(home)[:-2]:  # the CLI only takes text
        if "\x00" in bad:
            continue  # a process argument cannot hold NUL
        assert main([command, *flags, "--", bad]) == 2, bad
        err = capsys.readouterr().err
        assert re.search(REFUSED, err), err
        assert "\x1b" not in err and "Traceback" not in err
    assert (root / good / "config.json").is_file()
    if command == "rm":  # several ids: all or none, a bad one anywhere removes nothing
        assert main(["rm", *flags, good, "../decoy"]) == 2
        assert (root / good / "config.json").is_file()
    assert main([command, *flags, good]) == 0, capsys.readouterr().err
    assert (root / good).exists() == (command != "rm")


def test_listing_skips_links_out_and_strange_folder_names(store, real_run):
    root, good, home = store
    strange = ["\x1b[31mred", "with space", ".hidden", "-dash", "line\nbreak", "caf\u00e9"]
    for name in strange:
        shutil.copytree(real_run[0], root / name)
    (root / "sweeps").mkdir()  # a folder without config.json is not a run, and says nothing
    with pytest.warns(UserWarning) as caught:
        df = list_runs(root)
    assert df.run_id.tolist() == [good]
    said = " ".join(str(w.message) for w in caught)
    assert all(repr(name) in said for name in [*strange, "link"]) and "sweeps" not in said
    assert "\x1b" not in said and "\n" not in said
    for name in strange:
        with pytest.raises(ValueError, match=REFUSED):
            remove_run(name, root)
        assert (root / name / "config.json").is_file()


def test_a_runs_root_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(ValueError, match="runs: .* is not a folder"):
        list_runs(tmp_path / "runs")
    assert len(list_runs(tmp_path / "missing")) == 0


def test_a_recorder_refuses_a_run_id_that_leaves_the_root(tmp_path):
    model = mlp()
    res = Distiller(
        None,
        model,
        toy_data(),
        DistillConfig(epochs=1),
        run_id="../escape",
        callbacks=[RunRecorder(model, tmp_path / "runs")],
    ).fit()
    assert res.status == "error" and "'../escape' is not a valid run id" in res.message
    assert not (tmp_path / "escape").exists() and not (tmp_path / "runs").exists()


def test_export_out_never_overwrites_the_run_store(store, real_run, tmp_path):
    root, good, home = store
    shutil.copytree(real_run[0], root / "other-run")
    kept = snapshot(root)
    for out, why in (
        (root / good / "config.json", "not a new file"),
        (root / good / "model.pt", "not a new file"),
        (root / "other-run" / "student.pt", "not a new file"),
        (root / "x.pt", "not a new file"),
        (root / good, "is a folder"),
        (home / "decoy", "is a folder"),
        (root / "link" / "student.pt", "not a new file"),
        ("a\x00b.pt", "NUL"),
        ("", "is empty"),
    ):
        with pytest.raises(ValueError, match=f"out: .*{why}"):
            export_run(good, "state_dict", root, out=out)
    assert snapshot(root) == kept
    facts = export_run(good, "state_dict", root, out=tmp_path / "exports" / "m.pt")
    assert set(load_checkpoint(facts["exported_state_dict"])) == set(load_run(good, root).state_dict)
    facts = export_run(good, "state_dict", root, out=root / good / "mine.pt")  # a new file in its own folder
    assert pathlib.Path(facts["exported_state_dict"]).is_file()


def damage(run, name, content):
    path = run / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


WRONG_SHAPES = [
    ("config.json", "[1]"),
    ("config.json", '"ok"'),
    ("config.json", "null"),
    ("config.json", b"\xff\xfe{}"),
    ("config.json", "{not json"),
    ("config.json", '{"created": "2024-01-01", "role": 5, "config": [1]}'),
    ("config.json", '{"created": 1e999999, "dataset": {"a": 1}, "teacher_run_id": [1]}'),
    ("config.json", '{"created": ' + "9" * 400 + "}"),
    ("config.json", "[" * 100000 + "]" * 100000),
    ("summary.json", "[1]"),
    ("summary.json", "null"),
    ("summary.json", '{"status": [1], "val_acc": "high"}'),
    ("summary.json", '{"status": "\\u001b[2J", "seconds": "yesterday", "params": {"n": 1}}'),
    ("status.json", "[1]"),
    ("status.json", '{"heartbeat": "yesterday", "pid": "x"}'),
    ("status.json", '{"heartbeat": 1e300, "pid": 99999999999999999999, "host": "' + os.uname().nodename + '"}'),
    ("status.json", '{"heartbeat": true, "pid": true}'),
]


def missing(value):
    return value is None or (isinstance(value, float) and value != value)


@pytest.mark.parametrize("name,content", WRONG_SHAPES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(WRONG_SHAPES)])
def test_a_damaged_run_never_breaks_the_listing(store, real_run, name, content, capsys):
    root, good, home = store
    (root / "link").unlink()  # (links are the listing test's)
    reference = list_runs(root)  # the listing of the good run alone
    bad = root / "damaged-run"
    shutil.copytree(real_run[0], bad)
    if name == "status.json":
        (bad / "summary.json").unlink()  # the status file counts only while there is no summary
    path = damage(bad, name, content)
    with pytest.warns(UserWarning, match=re.escape(repr(str(path)))):
        df = list_runs(root)
    assert set(df.run_id) == {good, "damaged-run"}
    row, expected = df[df.run_id == good].iloc[0], reference.iloc[0]
    for col in reference.columns:
        assert row[col] == expected[col] or (missing(row[col]) and missing(expected[col])), col
    damaged = df[df.run_id == "damaged-run"].iloc[0]
    assert damaged.status in ("completed", "unknown", "killed")
    assert all("\x1b" not in v for v in damaged if isinstance(v, str))
    assert df.created.map(lambda v: v is None or isinstance(v, float)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_run("damaged-run", root).run_id == "damaged-run"
        assert main(["runs", "--runs", str(root)]) == 0
        assert main(["runs", "--json", "--runs", str(root)]) == 0
        assert main(["show", "damaged-run", "--runs", str(root)]) == 0
        out = capsys.readouterr().out
    assert "\x1b" not in out and "damaged-run" in out


def test_metrics_lines_that_are_not_objects_are_skipped_with_a_warning(store):
    root, good, home = store
    file = root / good / "metrics.jsonl"
    clean = load_run(good, root).history
    lines = file.read_bytes().splitlines()
    junk = [
        b"[1, 2]",
        b'"ok"',
        b"null",
        b"\xff\xfe not utf-8",
        b'{"event": ["step"], "terms": [1]}',
        b'{"event": "step", "step": 1, "terms": "x"}',
    ]
    file.write_bytes(b"\n".join(lines[:2] + junk[:4] + lines[2:] + junk[4:]) + b"\n")
    with pytest.warns(UserWarning) as caught:
        history = load_run(good, root).history
    said = [str(w.message) for w in caught]
    assert all(repr(str(file)) in s for s in said)
    assert any("line(s) 3, 4, 5 are not JSON objects" in s for s in said)
    assert any("line(s) 6 are not UTF-8 text" in s for s in said)
    assert len(history) == len(clean) + 1  # the junk dropped; the last line is a real (odd) step
    pd.testing.assert_frame_equal(history.iloc[:-1], clean, check_dtype=False)


def test_weights_of_the_wrong_structure_name_the_file(store):
    root, good, home = store
    weights = root / good / "model.pt"
    state = torch.load(weights, weights_only=True)
    first = next(iter(state))
    for wrong, expected in (
        ([torch.zeros(1)], "not a state_dict"),
        ({"bogus": torch.zeros(1)}, "same names"),
        ({**state, first: torch.zeros(3, 3, 3)}, "same names and shapes"),
        ({**state, first: "text"}, "not a state_dict"),
    ):
        torch.save(wrong, weights)
        with pytest.raises(ValueError, match=f"{re.escape(repr(str(weights)))}.*{expected}"):
            load_run(good, root)
    torch.save(state, weights)
    (root / good / "spec.json").write_text("[1]")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="spec.json.*expected the model.spec dict"):
        load_run(good, root)


class System:
    """Pickles to a call of os.system: loading it unsafely would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Eval:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_crafted_pickles_are_refused_by_name_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "p": System(marker)}, tmp_path / "system.pt")
    with open(tmp_path / "raw.pkl", "wb") as f:  # not even a torch zip file
        pickle.dump(System(marker), f, protocol=2)
    torch.save({"p": Eval()}, tmp_path / "eval.pt")
    import numpy as np

    torch.save({"a": np.zeros(3)}, tmp_path / "numpy.pt")
    for name, what in (("system.pt", "system"), ("raw.pkl", "system"), ("eval.pt", "eval"), ("numpy.pt", "numpy")):
        with pytest.raises(ValueError, match=f"holds objects other than tensors.*{what}.*refused"):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"w": torch.ones(3)}, tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:100])
    for name in ("junk.pt", "empty.pt", "cut.pt"):
        with pytest.raises(ValueError, match="is not a readable torch checkpoint"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "wording",
    [
        "Weights only load failed. Trying to load unsupported GLOBAL posix.system whose module posix is blocked.",
        "WeightsUnpickler error: Unsupported global: GLOBAL posix.system was not an allowed global by default.",
        "Weights only load failed: posix.system is not allowed; use torch.serialization.safe_globals([...])",
        "Refusing posix.system: add it with add_safe_globals only if you trust it (allowlist)",
    ],
)
def test_the_refusal_survives_torch_rewording_its_message(tmp_path, monkeypatch, wording):
    torch.save({"w": torch.zeros(1)}, tmp_path / "m.pt")

    def load(*args, **kwargs):
        raise pickle.UnpicklingError(wording)

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(ValueError, match="holds objects other than tensors.*refused"):
        load_checkpoint(tmp_path / "m.pt")
