"""Runs on disk, the teacher and teacher-output caches, checkpoints and export."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import mlp, toy_data

from workbench import DistillConfig, Distiller, load_dataset, train
from workbench.experiment import Experiment
from workbench.store.cache import OutputCache
from workbench.store.export import export_model, export_run, load_exported
from workbench.store.runs import RunRecorder, list_runs, load_checkpoint, load_run, remove_run


def test_a_recorded_run_reads_back(tmp_path):
    data = load_dataset("moons")
    from workbench.models.zoo import build_model

    model = build_model("mlp", data, hidden=(8,))
    seen_mid_run = []

    class Peek:
        def on_step_end(self, p):
            if p.step == 20:
                d = tmp_path / "runs" / p.run_id
                seen_mid_run.append(len((d / "metrics.jsonl").read_text().splitlines()))
                seen_mid_run.append(json.loads((d / "status.json").read_text())["status"])

    res = train(
        model,
        data,
        DistillConfig(epochs=5, log_every=5),
        callbacks=[RunRecorder(model, tmp_path / "runs", meta={"note": "x"}), Peek()],
    )
    assert seen_mid_run[0] > 1 and seen_mid_run[1] == "running"  # readable while live
    rec = load_run(res.run_id, tmp_path / "runs")
    assert rec.status == "completed" and rec.config["note"] == "x" and rec.config["role"] == "teacher"
    assert rec.summary["test_acc"] == pytest.approx(res.summary["test_acc"])
    assert len(rec.history) == len(res.history)
    x = data.test.x
    torch.testing.assert_close(rec.model(x), model.eval()(x))
    df = list_runs(tmp_path / "runs")
    assert df.run_id.tolist() == [res.run_id] and df.status.tolist() == ["completed"]
    remove_run(res.run_id, tmp_path / "runs")
    assert not len(list_runs(tmp_path / "runs"))
    with pytest.raises(ValueError, match="run: 'nope' is not in"):
        load_run("nope", tmp_path / "runs")


def test_sigkill_leaves_a_readable_killed_run(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench",
            "distill",
            "--epochs",
            "5000",
            "--quiet",
            "--runs",
            str(runs),
            "--teacher",
            "mlp:32",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        t0 = time.monotonic()
        while True:
            files = list(runs.glob("*/metrics.jsonl"))
            if files and len(files[0].read_text().splitlines()) > 5:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() - t0 < 300
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    run_id = files[0].parent.name
    rec = load_run(run_id, runs)
    assert rec.status == "killed" and rec.summary == {}
    assert len(rec.history) > 3 and set(rec.history.event) <= {"step", "eval", "epoch"}
    assert list_runs(runs).status.tolist() == ["killed"]


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    model = mlp()
    res = train(model, toy_data(), DistillConfig(epochs=2, log_every=1), callbacks=[RunRecorder(model, tmp_path)])
    path = tmp_path / res.run_id / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:15])
    with pytest.warns(UserWarning, match=f"line {len(lines)} is incomplete"):
        rec = load_run(res.run_id, tmp_path)
    assert len(rec.history) == len(res.history)


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_checkpoints_refuse_code_and_explain_corrupt_files(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weights": torch.zeros(2), "payload": Evil(str(marker))}, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(ValueError, match="holds objects other than tensors.*refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="is not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    good = {"w": torch.ones(3)}
    torch.save(good, tmp_path / "good.pt")
    assert torch.equal(load_checkpoint(tmp_path / "good.pt")["w"], good["w"])


def test_teacher_cache_hit_skips_training(tmp_path):
    data = load_dataset("digits")
    cfg = DistillConfig(epochs=4)

    class Count:
        def __init__(self):
            self.steps, self.ends = 0, []

        def on_step_end(self, p):
            self.steps += p.role == "teacher"

        def on_fit_end(self, p):
            self.ends.append((p.role, p.message))

    first, second, third = Count(), Count(), Count()
    a = Experiment(data, "mlp:128", "mlp:8", cfg, callbacks=[first], baseline=False).run()
    t0 = time.perf_counter()
    b = Experiment(data, "mlp:128", "mlp:8", cfg, callbacks=[second], baseline=False).run()
    assert first.steps > 0 and second.steps == 0
    assert second.ends[0][0] == "teacher" and second.ends[0][1].startswith("loaded from the teacher cache")
    assert b.teacher.summary["cached"] and b.teacher.summary["val_acc"] == a.teacher.summary["val_acc"]
    for p, q in zip(a.student.model.parameters(), b.student.model.parameters()):
        torch.testing.assert_close(p, q)  # the same teacher teaches the same student
    Experiment(data, "mlp:128", "mlp:8", cfg, callbacks=[third], baseline=False, retrain=True).run()
    assert third.steps == first.steps
    assert time.perf_counter() - t0 > 0  # (timing is in bench/teacher_cache.py, not asserted here)


def test_cached_and_uncached_teacher_outputs_agree(tmp_path):
    data = toy_data()
    cfg = DistillConfig(epochs=3, seed=1)
    cache = OutputCache(tmp_path / "c")
    teacher = mlp(hidden=32, seed=1)
    a = Distiller(teacher, mlp(seed=2), data, cfg).fit()
    b = Distiller(teacher, mlp(seed=2), data, cfg, teacher_key="t1", output_cache=cache).fit()
    OutputCache.clear_memory()  # the next run reads the outputs back from disk
    c = Distiller(teacher, mlp(seed=2), data, cfg, teacher_key="t1", output_cache=cache).fit()
    assert len(list((tmp_path / "c" / "outputs").glob("*.pt"))) == 1
    for p, q, r in zip(a.model.parameters(), b.model.parameters(), c.model.parameters()):
        torch.testing.assert_close(p, q)
        torch.testing.assert_close(p, r)


def test_export_round_trip(tmp_path):
    data = load_dataset("digits")
    res = Experiment(data, "mlp:64", "mlp:16", DistillConfig(epochs=2), runs=tmp_path / "runs", baseline=False).run()
    facts = export_run(res.student.run_id, "export", tmp_path / "runs")
    assert facts["params"] == 1210 and facts["macs"] == 64 * 16 + 16 * 10
    assert facts["latency_ms_batch1"] > 0 and facts["latency_ms_batch256"] > 0
    program = load_exported(facts["exported_export"])
    x = data.test.x[:37]
    torch.testing.assert_close(program.module()(x), res.student.model.eval()(x))
    summary = load_run(res.student.run_id, tmp_path / "runs").summary
    assert summary["macs"] == facts["macs"]
    sd = export_model(res.student.model, (64,), tmp_path / "s.pt", "state_dict")
    assert set(load_checkpoint(sd)) == set(res.student.model.state_dict())
    assert json.loads((tmp_path / "s.spec.json").read_text())["family"] == "mlp"
    with pytest.raises(ValueError, match="format: 'onnx' is invalid"):
        export_model(res.student.model, (64,), tmp_path / "x", "onnx")


@pytest.mark.slow
def test_two_processes_share_one_runs_root(tmp_path):
    runs = tmp_path / "runs"
    cmd = [
        sys.executable,
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
        "3",
        "--quiet",
        "--runs",
        str(runs),
    ]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait(180) == 0, p.stderr.read().decode()
    df = list_runs(runs)
    assert len(df) >= 5 and df.run_id.is_unique  # the second may load the first's cached teacher
    assert set(df.status) == {"completed"}
    for run_id in df.run_id:
        assert load_run(run_id, runs).summary["status"] == "completed"


@pytest.mark.slow
def test_cli_runs_show_export_rm(tmp_path):
    runs = str(tmp_path / "runs")
    py = [sys.executable, "-m", "workbench"]
    out = subprocess.run(
        py + ["distill", "--epochs", "2", "--json", "--runs", runs], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    student = json.loads(out.stdout)["runs"][1]["run_id"]
    listed = json.loads(
        subprocess.run(py + ["runs", "--json", "--runs", runs], capture_output=True, text=True, timeout=120).stdout
    )
    assert len(listed) == 3
    shown = json.loads(
        subprocess.run(py + ["show", student, "--runs", runs], capture_output=True, text=True, timeout=120).stdout
    )
    assert shown["status"] == "completed" and shown["config"]["role"] == "student"
    ex = subprocess.run(
        py + ["export", student, "--format", "state_dict", "--runs", runs], capture_output=True, text=True, timeout=120
    )
    assert ex.returncode == 0 and json.loads(ex.stdout)["params"] == 1210
    rm = subprocess.run(py + ["rm", student, "--runs", runs], capture_output=True, text=True, timeout=120)
    assert rm.returncode == 0
    gone = subprocess.run(py + ["show", student, "--runs", runs], capture_output=True, text=True, timeout=120)
    assert gone.returncode == 2 and "is not in" in gone.stderr


def test_teachers_given_as_modules_never_share_cached_outputs():
    from workbench.models.zoo import build_model

    data = load_dataset("moons")
    cfg = DistillConfig(epochs=2, alpha=0.0)
    torch.manual_seed(0)
    trained = build_model("mlp", data, hidden=(64,))
    train(trained, data, DistillConfig(epochs=5))
    torch.manual_seed(0)
    untrained = build_model("mlp", data, hidden=(64,))
    a = Experiment(data, trained, "mlp:4", cfg, baseline=False).run()
    b = Experiment(data, untrained, "mlp:4", cfg, baseline=False).run()
    assert a.student.summary["test_agreement"] != b.student.summary["test_agreement"] or not all(
        torch.equal(p, q) for p, q in zip(a.student.model.parameters(), b.student.model.parameters())
    )
    assert Experiment(data, trained, "mlp:4", cfg).teacher_key != Experiment(data, untrained, "mlp:4", cfg).teacher_key


def test_teacher_key_follows_the_data_the_teacher_sees():
    import dataclasses

    from workbench.data.splits import Split
    from workbench.models.zoo import build_model
    from workbench.store.cache import teacher_key

    data = load_dataset("moons", n_unlabeled=50)
    model, cfg = build_model("mlp", data), DistillConfig().to_dict()
    key = teacher_key(model, cfg, data)
    assert key is not None and key == teacher_key(build_model("mlp", data), cfg, load_dataset("moons", n_unlabeled=50))
    # more transfer inputs: the same teacher (it never trains on them)
    assert teacher_key(model, cfg, load_dataset("moons", n_unlabeled=80)) == key
    # the same spec but other rows (e.g. a changed generator or split): another teacher
    moved = dataclasses.replace(data, train=Split(data.train.x[1:], data.train.y[1:]))
    assert moved.spec == data.spec and teacher_key(model, cfg, moved) != key
    # other split seed, other training config, or data without a spec (not reproducible)
    assert teacher_key(model, cfg, load_dataset("moons", seed=1, n_unlabeled=50)) != key
    assert teacher_key(model, {**cfg, "lr": 0.1}, data) != key
    assert teacher_key(model, cfg, dataclasses.replace(data, spec={})) is None
