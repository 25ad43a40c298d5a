"""The workbench command, end to end: in a subprocess, and in-process through ``cli.main``."""

import json
import subprocess
import sys

import pytest

from workbench import cli
from workbench.engine.distiller import Distiller
from workbench.verdict import kd_verdict


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_demo_json():
    out = run("demo", "--epochs", "3", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert [r["model"] for r in res["runs"]] == ["teacher", "student, scratch", "student, distilled"]
    assert all(r["status"] == "completed" and 0 < r["test_acc"] <= 1 for r in res["runs"])
    assert res["config"]["alpha"] == 0.5
    acc = {r["model"]: r["test_acc"] for r in res["runs"]}
    assert res["verdict"] == kd_verdict(acc["student, distilled"], acc["student, scratch"], teacher_acc=acc["teacher"])


def test_bad_input_exits_2_with_one_line():
    """Through the real entry point (python -m workbench): one line, no usage block, no traceback
    (tests/test_cli_errors.py goes through every flag in-process)."""
    out = run("demo", "--alpha", "1.5")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == (
        "workbench demo: error: argument --alpha: '1.5' is invalid; expected a number "
        "in [0, 1] (alpha*CE + (1-alpha)*T^2*KL) (see workbench demo --help)"
    )


@pytest.mark.slow
def test_the_contract_command_runs():
    """The flags the issue names, verbatim (short epochs): a CNN teacher on the flat 64-pixel digits."""
    out = run(
        "distill",
        "--dataset",
        "digits",
        "--teacher",
        "cnn2d",
        "--student",
        "mlp:16",
        "--temperature",
        "4",
        "--alpha",
        "0.5",
        "--epochs",
        "2",
        "--labeled-fraction",
        "0.1",
        "--seed",
        "1",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert [r["role"] for r in res["runs"]] == ["teacher", "student", "baseline"]
    assert res["config"]["labeled_fraction"] == 0.1 and res["config"]["temperature"] == 4.0


@pytest.mark.slow
def test_distill_json_and_runs_dir(tmp_path):
    out = run(
        "distill",
        "--dataset",
        "moons",
        "--teacher",
        "mlp:32,32",
        "--student",
        "mlp:4",
        "--epochs",
        "3",
        "--labeled-fraction",
        "0.2",
        "--mixup",
        "--runs",
        str(tmp_path / "r"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert [r["role"] for r in res["runs"]] == ["teacher", "student", "baseline"]
    assert res["config"]["labeled_fraction"] == 0.2 and res["config"]["mixup_alpha"] == 1.0
    run_dirs = {r["role"]: tmp_path / "r" / r["run_id"] for r in res["runs"]}
    for role, d in run_dirs.items():
        events = [json.loads(s) for s in (d / "metrics.jsonl").read_text().splitlines()]
        assert events[-1]["event"] == "fit_end" and events[-1]["role"] == role
    student_cfg = json.loads((run_dirs["student"] / "config.json").read_text())
    assert student_cfg["teacher_run_id"] == res["runs"][0]["run_id"]


@pytest.mark.slow
def test_distill_csv(tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(200, 3)), columns=["x1", "x2", "x3"])
    df["label"] = np.where(df.x1 > 0, "yes", "no")
    path = tmp_path / "mine.csv"
    df.to_csv(path, index=False)
    out = run("distill", "--csv", str(path), "--target", "label", "--epochs", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["dataset"] == "mine"
    out = run("distill", "--csv", str(path), "--target", "nope")
    assert out.returncode == 2 and "nope" in out.stderr and "label" in out.stderr


@pytest.mark.slow
def test_compare_end_to_end(tmp_path):
    out = run(
        "compare",
        "--dataset",
        "moons",
        "--teacher",
        "mlp:16",
        "--students",
        "mlp:2,mlp:4",
        "--methods",
        "scratch,kd",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--workers",
        "1",
        "--runs",
        str(tmp_path / "runs"),
        "--csv",
        str(tmp_path / "sweep.csv"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["rows"] == 8 and len(res["summary"]) == 4
    import pandas as pd

    df = pd.read_csv(tmp_path / "sweep.csv")
    assert len(df) == 8 and set(df.student) == {"mlp:2", "mlp:4"}
    again = run(
        "compare",
        "--dataset",
        "moons",
        "--teacher",
        "mlp:16",
        "--students",
        "mlp:2,mlp:4",
        "--methods",
        "scratch,kd",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--workers",
        "1",
        "--runs",
        str(tmp_path / "runs"),
        "--json",
    )
    assert json.loads(again.stdout)["rows"] == 8  # resumed: every cell was already saved


@pytest.fixture
def teacher_fits(monkeypatch):
    """The roles of every fit that trains (a teacher loaded from the cache trains nothing)."""
    roles = []
    fit = Distiller.fit

    def counted(self):
        roles.append(self.role)
        return fit(self)

    monkeypatch.setattr(Distiller, "fit", counted)
    return roles


def _cached_teachers(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache" / "teachers").iterdir() if not p.name.startswith("."))


MOONS = ["distill", "--dataset", "moons", "--teacher", "mlp:16", "--student", "mlp:4", "--epochs", "2", "--quiet"]


@pytest.mark.slow
def test_changing_alpha_or_temperature_reuses_the_teacher(tmp_path, capsys, teacher_fits):
    teacher_runs = []
    for extra in ([], ["--alpha", "0.1"], ["--temperature", "8"]):
        assert cli.main(MOONS + extra + ["--json"]) == 0
        res = json.loads(capsys.readouterr().out)
        teacher_runs.append(res["runs"][0]["run_id"])
    assert teacher_fits.count("teacher") == 1 and teacher_fits.count("student") == 3
    assert len(set(teacher_runs)) == 1 and len(_cached_teachers(tmp_path)) == 1


@pytest.mark.slow
def test_the_app_the_cli_and_python_share_one_teacher(tmp_path, capsys, teacher_fits):
    """The app builds its run as workbench/ui/app.py does (Settings -> experiment); the CLI and a
    plain Experiment with other loss settings then find the same teacher in the cache."""
    from workbench import DistillConfig, load_dataset
    from workbench.experiment import Experiment
    from workbench.ui.settings import Settings

    app = (
        Settings(
            dataset="moons",
            teacher="mlp:16",
            student="mlp:4",
            temperature=2.0,
            alpha=0.3,
            labeled_fraction=0.5,
            epochs=2,
            teacher_epochs=2,
            seed=0,
        )
        .experiment(runs=True)
        .run()
    )
    assert cli.main(MOONS + ["--json", "--alpha", "0.8", "--temperature", "6"]) == 0
    cli_teacher = json.loads(capsys.readouterr().out)["runs"][0]
    py = Experiment(
        load_dataset("moons"), "mlp:16", "mlp:8", DistillConfig(epochs=2, alpha=0.9, mixup_alpha=1.0), baseline=False
    ).run()
    assert teacher_fits.count("teacher") == 1
    assert cli_teacher["run_id"] == app.teacher.run_id == py.teacher.run_id
    assert cli_teacher["test_acc"] == app.teacher.summary["test_acc"]
    assert len(_cached_teachers(tmp_path)) == 1


@pytest.mark.slow
def test_distill_prints_the_verdict(capsys):
    assert cli.main(MOONS + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    acc = {r["role"]: r["test_acc"] for r in res["runs"]}
    verdict = kd_verdict(acc["student"], acc["baseline"], labeled_fraction=1.0, teacher_acc=acc["teacher"])
    assert verdict and res["verdict"] == verdict
    assert cli.main(MOONS) == 0  # the same run again (teacher from the cache): the line in the table's output
    assert verdict in capsys.readouterr().out.splitlines()


def test_compare_shows_the_teacher_training(capsys):
    rc = cli.main(
        [
            "compare",
            "--dataset",
            "moons",
            "--teacher",
            "mlp:8",
            "--students",
            "mlp:2",
            "--methods",
            "scratch",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--workers",
            "1",
        ]
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert "teacher: 100%" in err and "sweep: 100%" in err


@pytest.fixture
def small_text(tmp_path):
    from workbench.data.text import shakespeare_text

    path = tmp_path / "play.txt"
    path.write_text(shakespeare_text()[:4000], encoding="utf-8")
    return path


TEXT = ["distill", "--block-size", "16", "--teacher", "gpt:1,16", "--student", "gpt:1,8", "--epochs", "1", "--quiet"]


@pytest.mark.slow
def test_distill_text_json_reports_bits_per_character_and_takes_the_text_flags(small_text, capsys):
    flags = ["--divergence", "jsd", "--beta", "0.3", "--top-k", "full", "--sample-tokens", "12", "--json"]
    assert cli.main(TEXT + ["--text", str(small_text), *flags]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["dataset"] == "play"
    cfg = res["config"]
    assert (cfg["divergence"], cfg["beta"], cfg["teacher_top_k"], cfg["sample_tokens"]) == ("jsd", 0.3, None, 12)
    assert (cfg["temperature"], cfg["optimizer"], cfg["batch_size"]) == (1.0, "adamw", 32)  # the text defaults
    runs = {r["role"]: r for r in res["runs"]}
    assert set(runs) == {"teacher", "student", "baseline"}
    assert all(r["status"] == "completed" and 0 < r["test_bpc"] < 10 for r in runs.values())
    s, b = runs["student"]["test_bpc"], runs["baseline"]["test_bpc"]
    assert (
        res["verdict"].startswith("Distillation ")
        and f"{s:.3f} vs {b:.3f} bits per character for scratch" in res["verdict"]
    )


def test_top_k_full_alone_distills_text_with_plain_kl(small_text, capsys):
    """The text default divergence reads top-k outputs: --top-k full alone used to be refused in API words."""
    assert cli.main(TEXT + ["--text", str(small_text), "--top-k", "full", "--sample-tokens", "0", "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert (cfg["divergence"], cfg["teacher_top_k"]) == ("kl", None)


@pytest.mark.slow
def test_distill_text_takes_the_transfer_set_flags(small_text, capsys):
    flags = ["--generated-blocks", "6", "--generate-temperature", "0.8", "--on-policy", "0.25", "--json"]
    assert cli.main(TEXT + ["--text", str(small_text), *flags]) == 0
    res = json.loads(capsys.readouterr().out)
    cfg = res["config"]
    assert (cfg["generated_blocks"], cfg["generate_temperature"], cfg["on_policy"]) == (6, 0.8, 0.25)
    runs = {r["role"]: r for r in res["runs"]}
    assert all(r["status"] == "completed" for r in runs.values())


@pytest.mark.slow
def test_distill_text_table_shows_bpc_the_cache_and_samples(small_text, capsys):
    assert cli.main(TEXT + ["--text", str(small_text), "--top-k", "4", "--sample-tokens", "8"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["role", "status"])
    assert header.split()[3:5] == ["val_bpc", "test_bpc"]
    assert any(line.startswith("play: ") and "divergence topk_kl, T=1" in line for line in lines)
    assert any(line.startswith("teacher outputs cached: top-4 of ") for line in lines)
    assert sum(line.startswith("sample (") for line in lines) == 3
    assert "bits per character for scratch" in out


@pytest.mark.slow
def test_compare_gpt_student_sizes_reports_bits_per_character(small_text, tmp_path, capsys):
    argv = ["compare", "--text", str(small_text), "--block-size", "16", "--teacher", "gpt:1,16"]
    argv += ["--students", "gpt:1,8;gpt:1,16", "--seeds", "2", "--epochs", "1", "--workers", "1"]
    assert cli.main(argv + ["--runs", str(tmp_path / "runs"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    rows = {(r["student"], r["method"]): r for r in res["summary"]}
    assert set(rows) == {(s, m) for s in ("gpt:1,8", "gpt:1,16") for m in ("kd", "scratch")}
    assert all(r["n"] == 2 and 0 < r["test_bpc_mean"] < 10 and r["val_bpc_mean"] > 0 for r in rows.values())
    # the Pareto front of bits per character, lower is better, checked against the definition by hand
    want = [
        key
        for key, r in rows.items()
        if not any(
            o["params"] <= r["params"]
            and o["test_bpc_mean"] <= r["test_bpc_mean"]
            and (o["params"] < r["params"] or o["test_bpc_mean"] < r["test_bpc_mean"])
            for o in rows.values()
        )
    ]
    pareto = res["pareto"]
    assert (pareto["x"], pareto["y"], pareto["lower_is_better"]) == ("params", "test_bpc", True)
    assert sorted((r["student"], r["method"]) for r in pareto["front"]) == sorted(want)
    assert cli.main(argv + ["--runs", str(tmp_path / "runs"), "--quiet"]) == 0  # resumed from the saved sweep
    out = capsys.readouterr().out
    assert "test_bpc_mean" in out and "KD - scratch on test bits per character" in out
    lines = out.splitlines()
    at = lines.index(
        "Pareto front (parameters vs test bits per character, lower is better; no smaller student does as well):"
    )
    assert lines[at + 1].split() == ["student", "method", "temperature", "params", "test_bpc_mean"]
    printed = [tuple(line.split()[:2]) for line in lines[at + 2 : at + 2 + len(want)]]
    assert sorted(printed) == sorted(want) and lines[at + 2 + len(want)] == ""


@pytest.mark.slow  # torch.export traces the teacher: several seconds on a busy CPU
def test_compare_with_a_program_teacher_runs_its_cells_in_process(tmp_path, capsys, monkeypatch):
    """A .pt2 teacher does not pickle into worker processes: without --workers the sweep runs
    in-process (it used to end in a traceback from the process pool), and the teacher is not trained."""
    import torch

    from workbench import load_dataset
    from workbench.models.zoo import build_model
    from workbench.store.export import export_model

    roles, real_fit = [], Distiller.fit

    def fit(self):
        roles.append(self.role)
        return real_fit(self)

    monkeypatch.setattr(Distiller, "fit", fit)
    torch.manual_seed(0)
    export_model(build_model("mlp", load_dataset("moons"), hidden=[8]).eval(), (2,), tmp_path / "t.pt2")
    argv = ["compare", "--dataset", "moons", "--teacher", str(tmp_path / "t.pt2"), "--trusted"]
    argv += ["--students", "mlp:2", "--seeds", "1", "--epochs", "1", "--runs", str(tmp_path / "runs"), "--json"]
    assert cli.main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["rows"] == 2 and {r["method"] for r in res["summary"]} == {"scratch", "kd"}
    assert sorted(roles) == ["baseline", "student"]  # the cells ran here; no teacher fit
    assert res["pareto"]["y"] == "test_acc" and res["pareto"]["lower_is_better"] is False
