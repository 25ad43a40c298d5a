"""The workbench command, end to end in a subprocess."""

import json
import subprocess
import sys


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_demo_json():
    out = run("demo", "--epochs", "3", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert [r["model"] for r in res["runs"]] == ["teacher", "student, scratch", "student, distilled"]
    assert all(r["status"] == "completed" and 0 < r["test_acc"] <= 1 for r in res["runs"])
    assert res["config"]["alpha"] == 0.5


def test_bad_input_exits_2_with_a_message():
    out = run("demo", "--alpha", "1.5")
    assert out.returncode == 2
    assert "alpha: 1.5 is invalid" in out.stderr and "Traceback" not in out.stderr
    out = run("demo", "--dataset", "cifar")
    assert out.returncode == 2 and "cifar" in out.stderr and "digits" in out.stderr
    for flag, value, valid in (("--dataset", "cifar", "digits, digits-images, mnist1d"),
                               ("--extra-unlabeled", "-5", "integer >= 0"), ("--epochs", "0", "integer >= 1")):
        out = run("distill", flag, value)
        assert out.returncode == 2 and f"argument {flag}: {value!r}" in out.stderr and valid in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_the_contract_command_runs():
    """The flags the issue names, verbatim (short epochs): a CNN teacher on the flat 64-pixel digits."""
    out = run("distill", "--dataset", "digits", "--teacher", "cnn2d", "--student", "mlp:16", "--temperature", "4",
              "--alpha", "0.5", "--epochs", "2", "--labeled-fraction", "0.1", "--seed", "1", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert [r["role"] for r in res["runs"]] == ["teacher", "student", "baseline"]
    assert res["config"]["labeled_fraction"] == 0.1 and res["config"]["temperature"] == 4.0


def test_distill_json_and_runs_dir(tmp_path):
    out = run("distill", "--dataset", "moons", "--teacher", "mlp:32,32", "--student", "mlp:4", "--epochs", "3",
              "--labeled-fraction", "0.2", "--mixup", "--runs", str(tmp_path / "r"), "--json")
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


def test_distill_bad_flags_name_the_flag():
    out = run("distill", "--labeled-fraction", "0")
    assert out.returncode == 2 and "--labeled-fraction" in out.stderr
    out = run("distill", "--epochs", "0")
    assert out.returncode == 2 and "--epochs" in out.stderr
    out = run("distill", "--student", "resnet:9")
    assert out.returncode == 2 and "student" in out.stderr and "mlp" in out.stderr


def test_compare_end_to_end(tmp_path):
    out = run("compare", "--dataset", "moons", "--teacher", "mlp:16", "--students", "mlp:2,mlp:4",
              "--methods", "scratch,kd", "--seeds", "2", "--epochs", "2", "--workers", "1",
              "--runs", str(tmp_path / "runs"), "--csv", str(tmp_path / "sweep.csv"), "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["rows"] == 8 and len(res["summary"]) == 4
    import pandas as pd
    df = pd.read_csv(tmp_path / "sweep.csv")
    assert len(df) == 8 and set(df.student) == {"mlp:2", "mlp:4"}
    again = run("compare", "--dataset", "moons", "--teacher", "mlp:16", "--students", "mlp:2,mlp:4",
                "--methods", "scratch,kd", "--seeds", "2", "--epochs", "2", "--workers", "1",
                "--runs", str(tmp_path / "runs"), "--json")
    assert json.loads(again.stdout)["rows"] == 8  # resumed: every cell was already saved
