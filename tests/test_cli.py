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
