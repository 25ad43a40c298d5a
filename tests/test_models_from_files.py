"""Teachers and students loaded from earlier runs and files, in the API (``Experiment``,
``make_model``) and the CLI (``--teacher`` / ``--student`` FILE|run:ID|SPEC, ``--trusted``): a
loaded teacher is used as is (never trained again), a loaded student is fine-tuned and its
scratch baseline starts from the same weights, and every bad source is one exit-2 line."""

from __future__ import annotations

import json
import os
import pathlib
import pickle

import pytest
import torch

import workbench as wb
from workbench import cli
from workbench.engine.distiller import Distiller
from workbench.experiment import Experiment, is_source, make_model
from workbench.models.zoo import build_model
from workbench.store.export import export_model
from workbench.store.runs import load_run

FAST = ["--epochs", "2", "--batch-size", "256", "--json", "--quiet"]  # moons: 650 train rows, 3 steps an epoch


class Evil:
    """Pickles to a call that creates ``marker``: loading it unsafely would leave the file behind."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture
def moons():
    return wb.load_dataset("moons", seed=0)


@pytest.fixture
def fits(monkeypatch):
    """Every ``Distiller.fit`` of the test, as (role, teacher module) in call order."""
    calls = []
    real_fit = Distiller.fit

    def fit(self):
        calls.append((self.role, self.teacher))
        return real_fit(self)

    monkeypatch.setattr(Distiller, "fit", fit)
    return calls


def teacher_run(data) -> str:
    """A real teacher run (mlp:16, 3 epochs) in the test's runs root ($WORKBENCH_RUNS); its id."""
    exp = Experiment(data, "mlp:16", "mlp:4", wb.DistillConfig(epochs=3, seed=0), baseline=False, runs=True)
    res = exp.prepare_teacher()
    assert res.status == "completed" and res.role == "teacher"
    return res.run_id


def runs_root() -> pathlib.Path:
    return pathlib.Path(os.environ["WORKBENCH_RUNS"])


def main(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line(err, *words):
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])


def assert_same_outputs(module, reference, x):
    module.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(x), rtol=0, atol=0)


# --- which text is a source ---------------------------------------------------------------------


def test_is_source_tells_sources_from_zoo_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-bert").mkdir()  # a Hugging Face folder named without a separator
    (tmp_path / "mlp").mkdir()  # a folder named like a zoo family: the spec wins
    cases = {
        "run:abc": True,
        "teacher.pt": True,
        "w.safetensors": True,
        "m.PT2": True,
        "m.ts": True,
        "sub/x": True,
        "my-bert": True,
        tmp_path / "x.pt": True,
        "mlp": False,
        "mlp:16": False,
        "cnn2d:32,64": False,
        "nope": False,
        3: False,
    }
    assert {k: is_source(k) for k in cases} == cases


# --- CLI: a teacher from a run or a file ----------------------------------------------------------


def test_cli_teacher_from_a_run_is_not_trained_again(capsys, moons, fits):
    run_id = teacher_run(moons)
    fits.clear()
    before = set(os.listdir(runs_root()))
    rc, out, err = main(
        capsys, "distill", "--dataset", "moons", "--teacher", f"run:{run_id}", "--student", "mlp:4", *FAST
    )
    assert rc == 0, err
    res = json.loads(out)
    assert [r["role"] for r in res["runs"]] == ["student", "baseline"]  # no teacher fit, no teacher row
    assert [role for role, _ in fits] == ["student", "baseline"]
    new = set(os.listdir(runs_root())) - before
    assert sorted(n.split("-")[0] for n in new) == ["baseline", "student"]  # no new teacher run folder
    assert res["loaded"]["teacher"].startswith(f"mlp:16 from run {run_id}, ")
    student_run = next(r["run_id"] for r in res["runs"] if r["role"] == "student")
    config = json.loads((runs_root() / student_run / "config.json").read_text())
    assert config["teacher_run_id"] == run_id
    used = fits[0][1]  # the teacher the student was distilled from: the stored model, unchanged by the fit
    stored = load_run(run_id).model
    assert_same_outputs(used, stored, moons.test.x)
    assert all(torch.equal(a, b) for a, b in zip(used.state_dict().values(), stored.state_dict().values()))
    assert res["teacher_val_acc"] == pytest.approx(load_run(run_id).summary["val_acc"])


def test_cli_teacher_from_an_exported_state_dict(capsys, moons, fits, tmp_path):
    run_id = teacher_run(moons)
    rc, out, err = main(capsys, "export", run_id, "--format", "state_dict", "--out", tmp_path / "teacher.pt")
    assert rc == 0, err
    assert (tmp_path / "teacher.spec.json").is_file()
    fits.clear()
    rc, out, err = main(
        capsys, "distill", "--dataset", "moons", "--teacher", tmp_path / "teacher.pt", "--student", "mlp:4", *FAST
    )
    assert rc == 0, err
    assert [r["role"] for r in json.loads(out)["runs"]] == ["student", "baseline"]
    assert [role for role, _ in fits] == ["student", "baseline"]
    assert_same_outputs(fits[0][1], load_run(run_id).model, moons.test.x)


def test_cli_text_output_names_the_loaded_teacher(capsys, moons):
    run_id = teacher_run(moons)
    rc, out, err = main(
        capsys,
        "distill",
        "--dataset",
        "moons",
        "--teacher",
        f"run:{run_id}",
        "--student",
        "mlp:4",
        "--epochs",
        "2",
        "--batch-size",
        "256",
        "--quiet",
    )
    assert rc == 0, err
    assert f"teacher: mlp:16 from run {run_id}, " in out and ", val acc 0." in out


# --- CLI: refusals, before any training -----------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    def fit(self):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(Distiller, "fit", fit)


def test_cli_teacher_that_does_not_fit_the_data_exits_2_naming_the_file(capsys, tmp_path, no_training):
    torch.manual_seed(0)
    wrong = build_model("mlp", (2,), 3, hidden=(8,))  # moons has 2 classes
    export_model(wrong, (2,), tmp_path / "three_classes.pt", fmt="state_dict")
    rc, out, err = main(capsys, "distill", "--dataset", "moons", "--teacher", tmp_path / "three_classes.pt", *FAST)
    assert rc == 2 and out == ""
    assert_one_line(
        err, "workbench distill: error: --teacher:", "three_classes.pt", "(2, 3)", "(2, 2)", "trained on this data"
    )


def test_cli_student_that_does_not_fit_says_how_to_build_one(capsys, tmp_path, no_training):
    torch.manual_seed(0)
    export_model(build_model("mlp", (2,), 3, hidden=(8,)), (2,), tmp_path / "s.pt", fmt="state_dict")
    rc, _, err = main(
        capsys, "distill", "--dataset", "moons", "--teacher", "mlp:8", "--student", tmp_path / "s.pt", *FAST
    )
    assert rc == 2
    assert_one_line(err, "--student:", "s.pt", "num_classes=2", "--student mlp:8")


def test_cli_program_without_trusted_is_refused_naming_trusted(capsys, tmp_path, no_training):
    (tmp_path / "x.pt2").write_bytes(b"PK\x03\x04 not read: refused before it is opened")
    rc, out, err = main(capsys, "distill", "--dataset", "moons", "--teacher", tmp_path / "x.pt2", *FAST)
    assert rc == 2 and out == ""
    assert_one_line(err, "--teacher:", "x.pt2", "runs code", "--trusted")


def test_cli_crafted_pickle_is_refused_and_never_runs(capsys, tmp_path, no_training):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": Evil(marker)}))
    torch.save({"w": Evil(marker)}, tmp_path / "evil2.pt")  # the same in torch's zip format
    for name in ("evil.pt", "evil2.pt"):
        rc, out, err = main(capsys, "distill", "--dataset", "moons", "--teacher", tmp_path / name, *FAST)
        assert rc == 2 and out == ""
        assert_one_line(err, "--teacher:", name)
    assert not marker.exists()


@pytest.mark.parametrize(
    "teacher, words",
    [
        ("nothere.pt", ["argument --teacher:", "'nothere.pt': no such file or folder", "run:ID"]),
        ("run:../escape", ["argument --teacher:", "'run:../escape' is not a valid run:ID"]),
        ("run:never-was", ["--teacher:", "never-was"]),
        ("mlp:x", ["argument --teacher:", "'mlp:x'"]),
    ],
)
def test_cli_bad_teacher_sources_are_one_line(capsys, teacher, words, no_training):
    rc, out, err = main(capsys, "distill", "--dataset", "moons", "--teacher", teacher, *FAST)
    assert rc == 2 and out == ""
    assert_one_line(err, *words)


@pytest.mark.slow  # torch.export traces the teacher: several seconds on a busy CPU
def test_cli_trusted_loads_a_program_teacher(capsys, moons, fits, tmp_path):
    torch.manual_seed(0)
    teacher = build_model("mlp", moons, hidden=(8,)).eval()
    export_model(teacher, (2,), tmp_path / "t.pt2")
    rc, out, err = main(capsys, "distill", "--dataset", "moons", "--teacher", tmp_path / "t.pt2", "--trusted", *FAST)
    assert rc == 0, err
    assert [role for role, _ in fits] == ["student", "baseline"]
    assert_same_outputs(fits[0][1], teacher, moons.test.x)


def test_cli_compare_with_a_teacher_from_a_run(capsys, moons, fits, tmp_path):
    run_id = teacher_run(moons)
    fits.clear()
    rc, out, err = main(
        capsys,
        "compare",
        "--dataset",
        "moons",
        "--teacher",
        f"run:{run_id}",
        "--students",
        "mlp:4",
        "--methods",
        "kd",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--workers",
        "0",
        "--json",
        "--quiet",
    )
    assert rc == 0, err
    assert json.loads(out)["rows"] == 1
    assert [role for role, _ in fits] == ["student"]  # the teacher was loaded, not trained
    assert_same_outputs(fits[0][1], load_run(run_id).model, moons.test.x)


# --- API ------------------------------------------------------------------------------------------


def test_api_experiment_with_a_teacher_run(moons, fits):
    run_id = teacher_run(moons)
    fits.clear()
    exp = wb.Experiment(moons, f"run:{run_id}", "mlp:4", wb.DistillConfig(epochs=2, batch_size=256), runs=True)
    assert exp.train_teacher is False and exp.loaded["teacher"].kind == "run"
    res = exp.run()
    assert res.teacher is None and res.student.status == "completed" and res.baseline.status == "completed"
    assert [role for role, _ in fits] == ["student", "baseline"]
    assert_same_outputs(exp.teacher, load_run(run_id).model, moons.test.x)
    config = json.loads((runs_root() / res.student.run_id / "config.json").read_text())
    assert config["teacher_run_id"] == run_id


@pytest.mark.filterwarnings("ignore:teacher. val accuracy:UserWarning")  # an untrained teacher: the point here
def test_api_module_teacher_is_not_trained_again(moons, fits):
    teacher = build_model("mlp", moons, hidden=(8,))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    exp = wb.Experiment(moons, teacher, "mlp:4", wb.DistillConfig(epochs=1, batch_size=256), baseline=False)
    exp.run()
    assert exp.train_teacher is False and [role for role, _ in fits] == ["student"]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_api_student_from_a_file_is_fine_tuned_and_its_baseline_starts_from_it(moons, tmp_path, fits):
    torch.manual_seed(3)
    start = build_model("mlp", moons, hidden=(4,))
    path = export_model(start, (2,), tmp_path / "student.pt", fmt="state_dict")
    exp = wb.Experiment(moons, "mlp:8", str(path), wb.DistillConfig(epochs=2, batch_size=256))
    assert exp.loaded["student"].kind == "state_dict" and exp.train_teacher is True
    for model in (exp.student, exp._initial_student):  # both start from the file's weights
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), start.state_dict().values()))
    res = exp.run()
    assert [role for role, _ in fits] == ["teacher", "student", "baseline"]
    for fit in (res.student, res.baseline):  # both trained from there
        assert fit.status == "completed"
        assert any(not torch.equal(a, b) for a, b in zip(fit.model.state_dict().values(), start.state_dict().values()))


def test_api_errors_name_the_field_and_the_file(moons, tmp_path):
    with pytest.raises(ValueError, match=r"^teacher: '.*missing\.pt' does not exist; expected 'run:ID'"):
        wb.Experiment(moons, str(tmp_path / "missing.pt"), "mlp:4")
    (tmp_path / "p.pt2").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"^student: '.*p\.pt2' is a torch\.export program.*trusted=True"):
        make_model(str(tmp_path / "p.pt2"), moons, "student", 0)
    with pytest.raises(ValueError, match=r"^trusted: 'yes' is invalid; expected True or False"):
        wb.Experiment(moons, "mlp:8", "mlp:4", trusted="yes")
    with pytest.raises(ValueError, match=r"^teacher: model: 'mlp:x' is invalid.*or a model to load: 'run:ID'"):
        wb.Experiment(moons, "mlp:x", "mlp:4")
