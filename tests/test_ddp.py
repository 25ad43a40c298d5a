"""DDP under a real torchrun (gloo on CPU) against a 1-process run; precision flags."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import mlp, toy_data

from workbench import DistillConfig, distill
from workbench.store.runs import list_runs

pytestmark = pytest.mark.slow  # real torchrun processes: the full test command runs them

SCRIPT = textwrap.dedent("""
    import sys, json, torch, torch.nn as nn
    import workbench as wb
    from workbench.engine import distributed
    from workbench.store.runs import RunRecorder

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    data = {"train": (x[:192], y[:192]), "val": (x[192:], y[192:])}
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 2))  # no batch norm, no dropout
    torch.manual_seed(2)
    student = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    cfg = wb.DistillConfig(epochs=4, batch_size=32, lr=1e-2, seed=3, device="cpu", log_every=1)  # 24 steps
    res = wb.distill(teacher, student, data, cfg, callbacks=[RunRecorder(student, sys.argv[2])])
    if distributed.is_main():
        torch.save(student.state_dict(), sys.argv[1])
        json.dump({"status": res.status, "world": distributed.world_size(), "steps": res.summary["steps"],
                   "val_acc": res.summary["val_acc"]}, open(sys.argv[1] + ".json", "w"))
""")


def torchrun_env():
    env = dict(os.environ)
    env.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", WORKBENCH_DDP_TIMEOUT="60")
    return env


def torchrun(args, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=torchrun_env())


def test_two_process_ddp_matches_one_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    one = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one.pt"), str(tmp_path / "runs1")],
        capture_output=True,
        text=True,
        timeout=120,
        env=torchrun_env(),
    )
    assert one.returncode == 0, one.stderr
    two = torchrun([str(script), str(tmp_path / "two.pt"), str(tmp_path / "runs2")])
    assert two.returncode == 0, two.stderr[-3000:]
    info1 = json.loads((tmp_path / "one.pt.json").read_text())
    info2 = json.loads((tmp_path / "two.pt.json").read_text())
    assert (info1["world"], info2["world"]) == (1, 2)
    assert info1["status"] == info2["status"] == "completed" and info1["steps"] == info2["steps"] == 24
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert info1["val_acc"] == info2["val_acc"]
    assert len(list_runs(tmp_path / "runs2")) == 1  # only rank 0 writes


def test_cli_under_torchrun_writes_one_set_of_runs(tmp_path):
    out = torchrun(
        [
            "-m",
            "workbench",
            "distill",
            "--dataset",
            "moons",
            "--teacher",
            "mlp:16",
            "--student",
            "mlp:4",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--runs",
            str(tmp_path / "runs"),
            "--json",
        ]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)  # printed once, by rank 0
    assert [r["role"] for r in res["runs"]] == ["teacher", "student", "baseline"]
    df = list_runs(tmp_path / "runs")
    assert len(df) == 3 and set(df.status) == {"completed"}


LOADER_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset
    import workbench as wb
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = (x[:, 0] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    res = wb.train(model, {"train": loader}, wb.DistillConfig(epochs=2, device="cpu"))
    print("STATUS", res.status)
""")


def test_a_dataloader_under_torchrun_trains_and_says_it_is_not_sharded(tmp_path):
    script = tmp_path / "loader.py"
    script.write_text(LOADER_SCRIPT)
    out = torchrun([str(script)])
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("completed") == 2  # both ranks (their lines may interleave)
    assert "every rank iterates this DataLoader whole" in out.stderr and "DistributedSampler" in out.stderr


def test_bf16_runs_the_student_in_bf16_and_the_losses_in_fp32(monkeypatch):
    import workbench.engine.distiller as engine

    student, seen = mlp(seed=2), {"student": set(), "loss": set()}
    student.register_forward_hook(lambda m, i, out: seen["student"].add(out.dtype))
    real = engine.distill_loss

    def spy(*args, **kwargs):
        total, terms = real(*args, **kwargs)
        seen["loss"] |= {total.dtype, *(t.dtype for t in terms.values())}
        return total, terms

    monkeypatch.setattr(engine, "distill_loss", spy)
    res = distill(mlp(hidden=32, seed=1), student, toy_data(), DistillConfig(epochs=1, precision="bf16", device="cpu"))
    assert res.status == "completed"
    assert torch.bfloat16 in seen["student"]  # the forward ran under autocast
    assert seen["loss"] == {torch.float32}  # softmax / KL / CE in fp32: no bf16 round-off in the KD term
    seen["student"].clear()
    distill(mlp(hidden=32, seed=1), student, toy_data(), DistillConfig(epochs=1, device="cpu"))
    assert seen["student"] == {torch.float32}


def test_compile_wraps_the_student_and_a_failing_compile_ends_the_run_with_its_message(monkeypatch):
    wrapped = []
    monkeypatch.setattr(torch, "compile", lambda m: wrapped.append(m) or m)
    student = mlp(seed=2)
    res = distill(mlp(hidden=32, seed=1), student, toy_data(), DistillConfig(epochs=1, compile=True, device="cpu"))
    assert res.status == "completed" and wrapped == [student]

    def broken(m):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    res = distill(mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), DistillConfig(epochs=1, compile=True, device="cpu"))
    assert res.status == "error" and "no C++ compiler found" in res.message


def test_precision_flags():
    res = distill(mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), DistillConfig(epochs=3, precision="bf16"))
    assert res.status == "completed" and res.summary["test_acc"] > 0
    assert torch.isfinite(torch.tensor(res.steps.loss.tolist())).all()
    with pytest.raises(ValueError, match="precision: 'fp16' needs a CUDA device"):
        distill(
            mlp(hidden=32, seed=1), mlp(seed=2), toy_data(), DistillConfig(epochs=1, precision="fp16", device="cpu")
        )
    with pytest.raises(ValueError, match="precision: 'fp8' is invalid"):
        DistillConfig(precision="fp8")
