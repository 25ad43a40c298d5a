"""Every notebook runs end to end in its quick setting, in a real kernel with no network, and then
checks what it claims against references, in the same kernel (so the checks see its variables).

Each notebook gets a check cell from CHECKS, appended after its last cell. A check recomputes a
number the notebook reports from something independent of how the notebook got it: plain
``torch.nn.functional`` on the models it trained, a hand-computed count, a pandas groupby of the
rows it summarised, the files it wrote (runs, the teacher cache, exported models) read back from
disk. Only facts that hold deterministically in QUICK mode (everything is seeded on CPU) are
asserted; claims of the prose that need the full run (e.g. "distillation helps with 10% of the
labels") are not. The checks retrain nothing heavy: at most one tiny cell or one tiny experiment
whose teacher comes from the cache.
"""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
CHECKED = "notebook checks passed"  # the last line a check cell prints: every assert before it held

# Installed in the kernel before anything else: any connection off this machine fails loudly.
NETWORK_GUARD = """
import socket as _socket
def _refuse(self, address, *args, **kwargs):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):  # AF_UNIX addresses may be bytes
        host = host.decode(errors="replace")
    # this machine only: loopback, and AF_UNIX paths and abstract names (worker processes)
    if isinstance(host, str) and (host in ("localhost", "::1") or host.startswith(("127.", "/", "\\0"))):
        return _orig_connect(self, address, *args, **kwargs)
    raise ConnectionRefusedError(f"network access is blocked in the notebook tests: {address!r}")
_orig_connect = _socket.socket.connect
_socket.socket.connect = _refuse
_socket.socket.connect_ex = _refuse
_socket.create_connection = lambda address, *a, **k: _refuse(None, address)
"""

# Helpers every check cell starts with (names start with _check_ so no notebook variable is hidden).
CHECK_HELPERS = '''
import json as _check_json
import math as _check_math

import numpy as _check_np
import torch as _check_torch
import torch.nn.functional as _check_F


def _check_close(got, want, what, tol=1e-6):
    """got equals want within tol (relative or absolute), else an AssertionError naming what."""
    assert _check_math.isclose(float(got), float(want), rel_tol=tol, abs_tol=tol), (
        f"{what}: got {float(got)!r}, expected {float(want)!r}"
    )


def _check_tensor(values):
    """A float64 tensor of a tensor, an array, a frame column or a list (a copy)."""
    if isinstance(values, _check_torch.Tensor):
        return values.detach().cpu().double()
    return _check_torch.tensor(_check_np.array(values, dtype=float))


def _check_all_close(got, want, what, tol=1e-6):
    """Arrays of the same shape, equal within tol (relative and absolute)."""
    got, want = _check_tensor(got), _check_tensor(want)
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    assert _check_torch.allclose(got, want, rtol=tol, atol=tol), (
        f"{what}: largest difference {(got - want).abs().max().item():.3g} (tolerance {tol:g})"
    )


def _check_logits(model, x):
    """A classifier's logits on x: eval mode, no grad, plain PyTorch (the reference)."""
    model.eval()
    with _check_torch.no_grad():
        return model(x)


def _check_accuracy(got, logits, y, what):
    """got is the accuracy of logits on y; one sample of slack, since the engine's batches differ
    from this single forward pass and a near-tie may round the other way in float32."""
    want = (logits.argmax(-1) == y).float().mean().item()
    assert abs(float(got) - want) <= 1.0 / len(y) + 1e-9, f"{what}: got {float(got)!r}, recomputed {want!r}"


def _check_summary_is_history(fit, what):
    """A fit's summary numbers are what its history recorded: the last val/test evaluation, the best
    val accuracy, the last step."""
    ev = fit.evals
    for split in ("val", "test"):
        last = ev[ev["split"] == split].iloc[-1]
        _check_close(fit.summary[f"{split}_acc"], last["acc"], f"{what}: summary {split}_acc vs its history")
        _check_close(fit.summary[f"{split}_loss"], last["loss"], f"{what}: summary {split}_loss vs its history")
    _check_close(
        fit.summary["best_val_acc"], ev[ev["split"] == "val"]["acc"].max(), f"{what}: best_val_acc vs its history"
    )
    assert fit.summary["steps"] == ev["step"].max() == fit.steps["step"].max(), (
        f"{what}: summary steps {fit.summary['steps']} vs the history's last step {ev['step'].max()}"
    )


def _check_loss_is_weighted_sum(fit, weights, what):
    """Every logged step's total loss is the weighted sum of the terms it logged (the loss formula);
    ``fit``: a fit result or a history frame."""
    steps = fit.steps if hasattr(fit, "steps") else fit[fit["event"] == "step"]
    assert len(steps) > 0, f"{what}: no step was logged"
    # a term of weight 0 may be left out of the log: it adds nothing
    want = sum(w * steps[f"loss_{name}"] for name, w in weights.items() if w or f"loss_{name}" in steps)
    _check_all_close(steps["loss"], want, f"{what}: total loss vs sum of w * term {weights}", 1e-5)
    for name, w in weights.items():
        logged = steps[f"w_{name}"].to_numpy(dtype=float)
        assert _check_np.allclose(logged, w), f"{what}: w_{name} logged {sorted(set(logged))}, expected {w}"


def _check_teachers_on_disk():
    """The teacher cache's entries, read from disk: key -> meta.json."""
    from workbench.store.cache import TeacherCache

    root = TeacherCache().root
    return {p.name: _check_json.loads((p / "meta.json").read_text()) for p in root.iterdir() if p.is_dir()}


def _check_mlp_params(n_in, hidden, n_out):
    """Hand count of an MLP's parameters: weights and biases of each Linear layer."""
    sizes = [n_in, *hidden, n_out]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))
'''

CHECKS: dict[str, str] = {}

CHECKS["01_dark_knowledge"] = """
# The teacher's logits are its outputs, and its reported test accuracy is theirs.
_check_all_close(test_logits, _check_logits(teacher, data.test.x), "test_logits vs the teacher's outputs", 1e-5)
_check_all_close(train_logits, _check_logits(teacher, data.train.x), "train_logits vs the teacher's outputs", 1e-5)
_check_accuracy(fit.summary["test_acc"], test_logits, data.test.y, "teacher test_acc")
assert int(data.test.y[i]) == 3 and not (data.test.y[:i] == 3).any(), f"test image {i} is not the first 3"

# Softened distributions: softmax(logits / T); their entropy grows with T; the top class stays on top.
entropies = []
for t in TEMPERATURES:
    p = _check_torch.tensor(plots.softened(test_logits[i], t), dtype=_check_torch.float64)
    want = _check_F.softmax(test_logits[i].double() / t, dim=0)
    _check_all_close(p, want, f"plots.softened(T={t}) vs F.softmax(logits / T)", 1e-6)
    assert int(p.argmax()) == int(test_logits[i].argmax()), f"T={t}: the top class moved"
    entropies.append(-(p * p.clamp_min(1e-300).log()).sum().item())
assert all(a < b for a, b in zip(entropies, entropies[1:])), f"entropy does not grow with T: {entropies}"
assert entropies[-1] < _check_math.log(data.num_classes), "entropy above that of the uniform distribution"

# The heatmap: per true class, the mean softened output of its training images (one-hot average).
onehot = _check_F.one_hot(data.train.y, data.num_classes).float()  # (N_train, 10)
want = onehot.T @ _check_F.softmax(train_logits / 4.0, dim=1) / onehot.sum(0)[:, None]
_check_all_close(by_class, want, "by_class vs a one-hot average of softmax(train_logits / 4)", 1e-5)
_check_all_close(by_class.sum(1), _check_torch.ones(data.num_classes), "by_class rows sum to 1", 1e-5)

# The gradient of T^2 * KL (batch mean) w.r.t. the student's logits is T * (q - p) / B, without T^2
# it is (q - p) / (T * B): the measured norms are those of the closed form.
B = len(student_logits)
assert len(grads) == 24
for T_, loss_name, norm in zip(grads["T"], grads["loss"], grads["gradient norm"]):
    scaled = loss_name == "T² · KL"
    q = _check_F.softmax(student_logits / T_, dim=1)
    p = _check_F.softmax(teacher_batch / T_, dim=1)
    _check_close(
        norm, ((T_ if scaled else 1 / T_) * (q - p) / B).norm().item(), f"gradient norm, T={T_}, {loss_name}", 1e-4
    )
    # and kd_loss is the batch-mean KL(teacher || student) at T (times T^2 when scaled)
    kl = _check_F.kl_div(
        _check_F.log_softmax(student_logits / T_, 1),
        _check_F.log_softmax(teacher_batch / T_, 1),
        reduction="batchmean",
        log_target=True,
    ).item()
    _check_close(
        kd_loss(student_logits, teacher_batch, T_, scale_t2=scaled).item(),
        kl * (T_**2 if scaled else 1),
        f"kd_loss at T={T_} ({loss_name}) vs F.kl_div",
        1e-4,
    )
with_t2 = grads[grads["loss"] == "T² · KL"].set_index("T")["gradient norm"]
without = grads[grads["loss"] == "KL without T²"].set_index("T")["gradient norm"]
_check_all_close(with_t2 / without, with_t2.index.to_numpy() ** 2, "gradient ratio with / without T^2 = T^2", 1e-4)
# what the prose says: slope near -2 without T^2; with it, within a factor of two from T=2 to T=50
assert abs(slope + 2) < 0.25, f"log-log slope without T^2 for T >= 8 is {slope:.3f}, expected about -2"
kept = with_t2[(with_t2.index >= 2) & (with_t2.index <= 50)]
assert kept.max() / kept.min() < 2, f"with T^2 the gradient varies {kept.max() / kept.min():.2f}x from T=2 to 50"

# At high T, T^2 * KL is the centered logit MSE / 2K.
_check_close(
    kd_loss(student_logits, teacher_batch, 1000.0).item(),
    ((s_centered - t_centered) ** 2).sum(dim=1).mean().item() / (2 * k),
    "T^2 KL at T=1000 vs MSE / 2K",
    1e-2,
)
"""

CHECKS["02_first_distillation"] = """
import workbench as wb

# The sizes in the table, counted by hand: 64 inputs, 10 classes.
t = result.table().set_index("role")
assert t.loc["teacher", "params"] == _check_mlp_params(64, [256, 256], 10) == 85002, t["params"]
assert t.loc["student", "params"] == t.loc["baseline", "params"] == _check_mlp_params(64, [16], 10) == 1210

# Every fit's summary is what its history says, and the student and the baseline took the same steps:
# EPOCHS passes over the training split in batches of 64.
steps = EPOCHS * _check_math.ceil(len(data.train) / config.batch_size)
for role in ("student", "baseline"):
    fit_ = result.fits[role]
    _check_summary_is_history(fit_, role)
    assert fit_.summary["steps"] == steps, f"{role}: {fit_.summary['steps']} steps, expected {steps}"
    for col in ("val_acc", "test_acc"):
        _check_close(t.loc[role, col], fit_.summary[col], f"table {role} {col} vs its summary")
_check_loss_is_weighted_sum(result.student, {"ce": 0.5, "kd": 0.5}, "alpha=0.5 student")
assert (result.student.steps["temperature"] == 4.0).all()

# The numbers recomputed from the models: accuracy, CE, agreement with the teacher, KL(teacher || student).
teacher_logits = _check_logits(result.teacher.model, data.test.x)
student_logits = _check_logits(result.student.model, data.test.x)
_check_accuracy(result.teacher.summary["test_acc"], teacher_logits, data.test.y, "teacher test_acc")
_check_accuracy(result.student.summary["test_acc"], student_logits, data.test.y, "student test_acc")
_check_accuracy(result.student.summary["test_agreement"], student_logits, teacher_logits.argmax(1), "test_agreement")
_check_close(
    result.student.summary["test_loss"],
    _check_F.cross_entropy(student_logits, data.test.y).item(),
    "student test_loss vs F.cross_entropy",
    1e-4,
)
kl = _check_F.kl_div(
    _check_F.log_softmax(student_logits, 1),
    _check_F.log_softmax(teacher_logits, 1),
    reduction="batchmean",
    log_target=True,
).item()
_check_close(result.student.summary["test_kl"], kl, "student test_kl vs F.kl_div", 1e-4)
_check_accuracy(
    result.baseline.summary["test_acc"],
    _check_logits(result.baseline.model, data.test.x),
    data.test.y,
    "baseline test_acc",
)

# The teacher was trained once and cached on disk (its run id, its numbers, its weights); every later
# experiment loaded it from there.
on_disk = _check_teachers_on_disk()
assert list(on_disk) == [experiment.teacher_key], f"teacher cache holds {list(on_disk)}, expected one teacher"
meta = on_disk[experiment.teacher_key]
assert meta["run_id"] == result.teacher.run_id, (meta["run_id"], result.teacher.run_id)
_check_close(meta["summary"]["test_acc"], result.teacher.summary["test_acc"], "cached teacher test_acc")
from workbench.store.cache import TeacherCache

reloaded = wb.build_model("mlp", data, hidden=(256, 256))
assert TeacherCache().load(experiment.teacher_key, reloaded) is not None
assert _check_torch.equal(_check_logits(reloaded, data.test.x), teacher_logits), "cached teacher weights differ"
for table_ in tables:
    row = table_.set_index("role").loc["teacher"]
    assert row["run_id"] == result.teacher.run_id, (
        f"{table_['student'].iloc[0]}: teacher {row['run_id']} not the cached one"
    )
assert run.teacher.summary.get("cached") is True

# The MSE-vs-KL table: one cell per student and method, each the test accuracy its run's history ends on.
pivot = runs.pivot(index="student", columns="method", values="test_acc")
assert pivot.shape == (2, 3) and not pivot.isna().any().any(), pivot
for (student_, method_), acc in runs.set_index(["student", "method"])["test_acc"].items():
    name = f"{student_}, {'scratch' if method_.startswith('scratch') else method_}"
    ev = curves[name]
    _check_close(acc, ev[(ev["event"] == "eval") & (ev["split"] == "test")]["acc"].iloc[-1], f"{name}: test_acc")
    assert int(ev["step"].max()) == steps, f"{name}: {ev['step'].max()} steps, expected {steps}"
for student_ in STUDENTS:
    _check_loss_is_weighted_sum(
        curves[f"{student_}, MSE on logits"], {"ce": 0.5, "kd": 0.0, "mse": 1.0}, f"{student_} MSE"
    )
    _check_loss_is_weighted_sum(curves[f"{student_}, KL, T=4"], {"ce": 0.5, "kd": 0.5}, f"{student_} KL")
"""

CHECKS["03_when_distillation_helps"] = """
# The same step budget for every method: EPOCHS passes over the whole training split, whatever the
# labeled fraction, the unlabeled inputs or mixup.
for name, res, split_ in [
    ("full", full, images),
    ("few", few, images),
    ("fair", fair, images),
    ("plain", plain, signals),
    ("extra", extra, signals),
    ("mixed", mixed, signals),
]:
    cfg = config if split_ is images else signal_config
    want = cfg.epochs * _check_math.ceil(len(split_.train) / cfg.batch_size)
    for role, fit_ in res.fits.items():
        if role == "teacher":
            continue
        _check_summary_is_history(fit_, f"{name} {role}")
        assert fit_.summary["steps"] == want, f"{name} {role}: {fit_.summary['steps']} steps, expected {want}"
        x, y = split_.test.x, split_.test.y
        _check_accuracy(fit_.summary["test_acc"], _check_logits(fit_.model, x), y, f"{name} {role} test_acc")
    _check_loss_is_weighted_sum(res.student, {"ce": 0.1, "kd": 0.9}, f"{name} student (alpha=0.1)")

# Teachers: trained once per setting, then loaded from the cache (same run id, same weights).
assert full.teacher.summary.get("cached") is None and few.teacher.summary.get("cached") is True
assert few.teacher.run_id == full.teacher.run_id
assert _check_torch.equal(
    _check_logits(few.teacher.model, images.test.x), _check_logits(full.teacher.model, images.test.x)
)
assert fair.teacher.summary.get("cached") is None and fair.teacher.run_id != full.teacher.run_id
assert extra.teacher.run_id == mixed.teacher.run_id == plain.teacher.run_id and mixed.teacher.summary["cached"]
_check_accuracy(
    full.teacher.summary["test_acc"],
    _check_logits(full.teacher.model, images.test.x),
    images.test.y,
    "digits teacher test_acc",
)
_check_accuracy(
    fair.teacher.summary["test_acc"],
    _check_logits(fair.teacher.model, images.test.x),
    images.test.y,
    "fair teacher test_acc",
)
_check_accuracy(
    plain.teacher.summary["test_acc"],
    _check_logits(plain.teacher.model, signals.test.x),
    signals.test.y,
    "MNIST-1D teacher test_acc",
)
on_disk = _check_teachers_on_disk()
runs_on_disk = {m["run_id"]: m["config"]["labeled_fraction"] for m in on_disk.values()}
assert runs_on_disk == {full.teacher.run_id: 1.0, fair.teacher.run_id: 0.1, plain.teacher.run_id: 1.0}, runs_on_disk

# What the teacher labels: the training inputs, plus the unlabeled ones; mixup queries it live.
assert len(signals.unlabeled) == N_UNLABELED
messages = {
    name: res.student.recorder.start.message for name, res in [("plain", plain), ("extra", extra), ("mixed", mixed)]
}
assert f"for {len(signals.train):,} positions" in messages["plain"], messages
assert f"for {len(signals.train) + N_UNLABELED:,} positions" in messages["extra"], messages
assert "queried live at every step (mixup)" in messages["mixed"], messages

# The results table is the fits' test accuracies (rounded to 3 places), setting by setting.
for row, (name, t_fit, b_fit, d_fit) in zip(summary.itertuples(), settings):
    assert row.setting == name
    for got, fit_ in ((row.teacher, t_fit), (row.scratch, b_fit), (row.distilled, d_fit)):
        _check_close(got, round(fit_.summary["test_acc"], 3), f"{name}: {got}", 1e-9)
"""

CHECKS["04_how_small"] = """
import pandas as _check_pd
import scipy.stats as _check_stats

import workbench as wb

# One row per cell: students x methods x seeds, each once, all completed.
assert len(runs) == len(STUDENTS) * 2 * SEEDS, len(runs)
cells = set(zip(runs["student"], runs["method"], runs["seed"]))
assert cells == {(s, m, seed) for s in STUDENTS for m in ("scratch", "kd") for seed in range(SEEDS)}, cells
assert (runs["status"] == "completed").all(), runs[["student", "method", "seed", "status", "message"]]
assert runs.loc[runs["method"] == "scratch", "temperature"].isna().all()
assert (runs.loc[runs["method"] == "kd", "temperature"] == 4.0).all()

# Sizes counted by hand: one hidden layer of h units on 64 inputs, 10 classes.
for row in runs.itertuples():
    h = int(row.student.split(":")[1])
    assert row.params == _check_mlp_params(64, [h], 10), (row.student, row.params)
    assert row.macs == 64 * h + h * 10, (row.student, row.macs)

# summarize: mean, std (n - 1) and count of each cell = a pandas groupby of the rows.
ref = runs.groupby(["student", "method"])["test_acc"].agg(["mean", "std", "count"])
got = summary.set_index(["student", "method"])
assert len(got) == len(ref) == len(STUDENTS) * 2
for key, r in ref.iterrows():
    _check_close(got.loc[key, "test_acc_mean"], r["mean"], f"{key} test_acc_mean vs groupby")
    _check_close(got.loc[key, "test_acc_std"], r["std"], f"{key} test_acc_std vs groupby")
    assert got.loc[key, "n"] == r["count"] == SEEDS

# paired_gain: kd - scratch of the same seed, mean over seeds, 95% t-interval (scipy's t quantile).
pairs = runs.pivot_table(index=["student", "seed"], columns="method", values="test_acc")
diff = pairs["kd"] - pairs["scratch"]
for row in gain.itertuples():
    d = diff.loc[row.student]
    half = _check_stats.t.ppf(0.975, len(d) - 1) * d.std() / _check_math.sqrt(len(d))
    _check_close(row.gain, d.mean(), f"{row.student}: paired gain")
    _check_close(row.ci_low, d.mean() - half, f"{row.student}: ci_low", 1e-4)
    _check_close(row.ci_high, d.mean() + half, f"{row.student}: ci_high", 1e-4)
    assert row.n == SEEDS

# Every fit was recorded on disk: its summary and its weights give the row's numbers.
teacher_on_disk = _check_teachers_on_disk()
assert len(teacher_on_disk) == 1, f"the teacher was cached {len(teacher_on_disk)} times, expected once"
meta = next(iter(teacher_on_disk.values()))
_check_close(meta["summary"]["test_acc"], teacher_acc, "teacher test accuracy vs the cached teacher's")
teacher_pred = _check_logits(sweep.experiment.teacher, data.test.x).argmax(1)
_check_accuracy(teacher_acc, _check_logits(sweep.experiment.teacher, data.test.x), data.test.y, "teacher test_acc")
for row in runs.itertuples():
    rec = wb.load_run(row.run_id)
    assert rec.status == "completed", (row.run_id, rec.status)
    _check_close(rec.summary["test_acc"], row.test_acc, f"{row.run_id}: summary.json test_acc")
    logits = _check_logits(rec.model, data.test.x)
    _check_accuracy(row.test_acc, logits, data.test.y, f"{row.run_id}: test_acc from model.pt")
    _check_accuracy(row.test_agreement, logits, teacher_pred, f"{row.run_id}: test_agreement from model.pt")
saved = _check_pd.read_csv(sweep.path)
assert set(saved["run_id"]) == set(runs["run_id"]), f"{sweep.path} holds other runs"
merged = saved.set_index("run_id").loc[runs["run_id"], "test_acc"].to_numpy()
_check_all_close(merged, runs["test_acc"], "the sweep's CSV vs its rows", 1e-9)

# Serial and parallel runs give the same numbers: one kd cell again, in this process.
student_, seed_ = STUDENTS[0], SEEDS - 1
again = Sweep(
    data,
    TEACHER,
    [student_],
    ["kd"],
    [seed_],
    config=config,
    teacher_config=teacher_config,
    workers=1,
    save=False,
    record=False,
).run()
first_run = runs[(runs["student"] == student_) & (runs["method"] == "kd") & (runs["seed"] == seed_)].iloc[0]
for col in ("val_acc", "test_acc", "test_agreement"):
    _check_close(
        again[col].iloc[0], first_run[col], f"{student_} kd seed {seed_}: {col} in-process vs in a worker", 1e-12
    )

# The temperature grid: one fit per (student, T); the best T is the one of highest val accuracy, and
# the T=4 cell is the main sweep's kd cell of seed 0 (same seed, same config).
assert sorted(zip(grid["student"], grid["temperature"])) == sorted(
    (s, float(t)) for s in GRID_STUDENTS for t in TEMPERATURES
)
best = best_temperature(grid).set_index("student")
for student_, rows in grid.groupby("student"):
    _check_close(best.loc[student_, "val_acc"], rows["val_acc"].max(), f"{student_}: best val_acc")
    assert best.loc[student_, "temperature"] in set(rows.loc[rows["val_acc"] == rows["val_acc"].max(), "temperature"])
    same = runs[(runs["student"] == student_) & (runs["method"] == "kd") & (runs["seed"] == 0)]
    if len(same):
        _check_close(
            rows.loc[rows["temperature"] == 4.0, "test_acc"].iloc[0],
            same["test_acc"].iloc[0],
            f"{student_}: grid T=4 cell vs the sweep's kd cell",
            1e-12,
        )
"""

CHECKS["05_hints_and_your_models"] = """
from torch import nn as _check_nn

import workbench as wb

# The hint: a Linear(16, 256) adapter, and a loss of 0.5 CE + 0.5 KD + 1.0 hint at every step.
adapter = hint_result.student.adapter
assert isinstance(adapter, _check_nn.Linear) and (adapter.in_features, adapter.out_features) == (16, 256), adapter
_check_loss_is_weighted_sum(hint_result.student, {"ce": 0.5, "kd": 0.5, "hint": 1.0}, "hinted student")
_check_loss_is_weighted_sum(kd_result.student, {"ce": 0.5, "kd": 0.5}, "KD student")
for name, fit_ in [("KD", kd_result.student), ("scratch", kd_result.baseline), ("KD + hint", hint_result.student)]:
    _check_summary_is_history(fit_, name)
    _check_accuracy(fit_.summary["test_acc"], _check_logits(fit_.model, data.test.x), data.test.y, f"{name} test_acc")

# Your own table: every row is kept with its label (classes sorted), features standardized on train.
assert list(table.class_names) == sorted(df["label"].unique()), table.class_names
assert len(table.train) + len(table.val) + len(table.test) == len(df)
counts = _check_torch.bincount(_check_torch.cat([table.train.y, table.val.y, table.test.y]), minlength=4)
want = [int((df["label"] == c).sum()) for c in table.class_names]
assert counts.tolist() == want, f"labels per class {counts.tolist()}, the DataFrame has {want}"
_check_all_close(table.train.x.mean(0), _check_torch.zeros(12), "train feature means", 1e-5)
_check_all_close(table.train.x.std(0, unbiased=False), _check_torch.ones(12), "train feature stds", 1e-4)

# Your own models: the experiment trained these very modules; their sizes, counted by hand.
assert mine.student.model is my_student and mine.teacher.model is my_teacher
t = mine.table().set_index("role")
assert t.loc["teacher", "params"] == _check_mlp_params(12, [256, 256], 4) == 70148
assert t.loc["student", "params"] == t.loc["baseline", "params"] == _check_mlp_params(12, [8], 4) == 140
_check_loss_is_weighted_sum(mine.student, {"ce": 0.5, "kd": 0.5, "hint": 0.5}, "table student")
for role in ("teacher", "student", "baseline"):
    _check_accuracy(
        mine.fits[role].summary["test_acc"],
        _check_logits(mine.fits[role].model, table.test.x),
        table.test.y,
        f"table {role} test_acc",
    )

# The files: a model loaded from a file gives the outputs of the module it was saved from.
assert sorted(p.name for p in MODELS.iterdir()) == [
    "student.pt",
    "student.spec.json",
    "teacher.pt",
    "teacher.spec.json",
]
x = data.train.x
teacher_out = _check_logits(kd_only.teacher, x)
student_out = _check_logits(fresh_student, x)
for name, module_out in [("teacher.pt", teacher_out), ("student.pt", student_out)]:
    loaded = wb.load_model(MODELS / name, data=data, role=name.split(".")[0])
    assert _check_torch.equal(_check_logits(loaded.module, x), module_out), f"{name}: outputs differ from its module"
# the recipe's teacher was frozen: still the file's weights
assert _check_torch.equal(_check_logits(experiment.loaded["teacher"].module, x), teacher_out), "the teacher changed"

# The source document's recipe: MSE on the logits only, plain gradient descent; it lowers the MSE
# between the student's and the teacher's logits from the student file's initial value.
_check_loss_is_weighted_sum(recipe_result.student, {"mse": 1.0}, "recipe student")
assert (recipe_result.student.steps["lr"] == 0.1).all()
before = _check_F.mse_loss(student_out, teacher_out).item()
after = _check_F.mse_loss(_check_logits(recipe_result.student.model, x), teacher_out).item()
assert after < 0.5 * before, f"the recipe's MSE to the teacher went from {before:.3f} to {after:.3f}"
_check_summary_is_history(recipe_result.student, "recipe student")
for name, fit_ in [
    ("recipe", recipe_result.student),
    ("KD from files", kd_files.student),
    ("scratch from files", kd_files.baseline),
]:
    _check_accuracy(fit_.summary["test_acc"], _check_logits(fit_.model, data.test.x), data.test.y, f"{name} test_acc")
assert kd_files.student.summary["steps"] == kd_files.baseline.summary["steps"] == recipe_result.student.summary["steps"]
"""

CHECKS["06_dashboard"] = """
import contextlib as _check_contextlib
import html as _check_html
import io as _check_io
import re as _check_re

from workbench.verdict import kd_verdict

# The run: teacher, distilled student and scratch baseline, all completed.
res = dash.job.result
assert dash.job.status == "completed" and list(res.fits) == ["teacher", "student", "baseline"]
assert all(f.status == "completed" for f in res.fits.values())
ev = res.student.evals
val = ev[ev["split"] == "val"]
base = res.baseline.evals
base = base[base["split"] == "val"]

# The charts drew the run's numbers.
traces = {t.name: t for t in dash.accuracy_fig.data}
assert list(traces["student"].x) == val["step"].tolist(), (traces["student"].x, val["step"].tolist())
_check_all_close(traces["student"].y, val["acc"], "accuracy chart: student val acc")
assert list(traces["baseline"].x) == base["step"].tolist()
_check_all_close(traces["baseline"].y, base["acc"], "accuracy chart: baseline val acc")
_check_close(traces["teacher"].y[0], res.teacher.summary["val_acc"], "accuracy chart: the teacher's line")
agreement = {t.name: t for t in dash.agreement_fig.data}
_check_all_close(agreement["agreement"].y, val["agreement"], "agreement chart")
_check_all_close(agreement["kl"].y, val["kl"], "KL chart")
steps = res.student.steps.set_index("step")
total = dash.loss_fig.data[0]
assert total.name == "total" and len(total.x) > 0 and set(total.x) <= set(steps.index), total.x
_check_all_close(total.y, steps.loc[list(total.x), "loss"], "loss chart: the total")
assert dash.progress.value == dash.progress.max == res.student.summary["steps"]

# The temperature explorer: the teacher's softmax(logits / T) on the chosen test input.
explorer_data = dash.experiment.data
x = explorer_data.test.x[dash.sample.value : dash.sample.value + 1]
T = float(dash.temperature.value)
want = _check_F.softmax(_check_logits(dash.experiment.teacher, x)[0] / T, dim=0)
_check_all_close(dash.explorer_fig.data[0].y, want, f"explorer: softmax(teacher logits / {T})", 1e-6)
assert f"label {int(explorer_data.test.y[dash.sample.value])}" in dash.explorer_fig.layout.title.text

# The status line and the verdict give the fits' test accuracies.
accs = {role: f.summary["test_acc"] for role, f in res.fits.items()}
assert "distill done" in dash.status.value
for role, acc in accs.items():
    assert f"{role} {acc:.3f}" in dash.status.value, (role, acc, dash.status.value)
line = kd_verdict(accs["student"], accs["baseline"], labeled_fraction=0.1, teacher_acc=accs["teacher"])
assert _check_html.unescape(_check_re.sub(r"<[^>]+>", "", dash.verdict.value)) == line, (dash.verdict.value, line)

# "Copy as code" reproduces the run: the code it prints gives the same numbers (teacher from the cache).
scope = {}
with _check_contextlib.redirect_stdout(_check_io.StringIO()):
    exec(dash.show_code(), scope)
copied = scope["result"]
assert copied.teacher.summary.get("cached") is True, "the copied code trained another teacher"
for role in ("student", "baseline"):
    for col in ("val_acc", "test_acc"):
        _check_close(copied.fits[role].summary[col], res.fits[role].summary[col], f"copied code: {role} {col}", 1e-12)
"""

CHECKS["07_distilling_a_language_model"] = """
from workbench.data.text import IGNORE_INDEX
from workbench.store.cache import OutputCache

LN2 = _check_math.log(2)
fits = {"first": first, "few": few, **{f"{d} student": r for d, r in by_divergence.items()}}

# Bits per character = nats / ln 2, in every evaluation and in every summary.
for name, res in fits.items():
    for role, fit_ in res.fits.items():
        s = fit_.summary
        for split in ("val", "test"):
            _check_close(s[f"{split}_bpc"], s[f"{split}_loss"] / LN2, f"{name} {role}: {split}_bpc = loss / ln 2")
        if role != "teacher":
            ev = fit_.evals
            _check_all_close(ev["bpc"], ev["loss"] / LN2, f"{name} {role}: eval bpc = loss / ln 2")
            _check_summary_is_history(fit_, f"{name} {role}")
            assert s["steps"] == STEPS, f"{name} {role}: {s['steps']} steps, expected {STEPS}"

# Recomputed from the models on the test blocks: per-token CE over the target positions, and the
# teacher's mean entropy.
y = data.test.y.reshape(-1)
assert int((y != IGNORE_INDEX).sum()) == first.student.evals.query("split == 'test'")["n"].iloc[-1]
t_logits = wb.logits_of(_check_logits(first.teacher.model, data.test.x)).reshape(len(y), -1)
s_logits = wb.logits_of(_check_logits(first.student.model, data.test.x)).reshape(len(y), -1)
for role, role_logits in [("teacher", t_logits), ("student", s_logits)]:
    ce = _check_F.cross_entropy(role_logits, y, ignore_index=IGNORE_INDEX).item()
    _check_close(first.fits[role].summary["test_bpc"], ce / LN2, f"{role} test_bpc vs F.cross_entropy / ln 2", 1e-4)
logp = _check_F.log_softmax(t_logits[y != IGNORE_INDEX], -1)
_check_close(
    first.student.summary["test_teacher_entropy"],
    -(logp.exp() * logp).sum(-1).mean().item(),
    "the teacher's test entropy",
    1e-4,
)
assert TEACHER_STEPS == first.teacher.summary["steps"]

# The teacher's next character: the 12 likeliest, softened at each T of the figure.
with _check_torch.no_grad():
    last = wb.logits_of(teacher(x))[0, -1]
_check_all_close(last, logits, "the next-character logits vs the teacher's output")
assert logits[top].min() >= logits[~_check_torch.isin(_check_torch.arange(len(logits)), top)].max()
for trace, T in zip(fig.data, [0.5, 1, 2, 4]):
    _check_all_close(trace.y, _check_F.softmax(logits[top] / T, dim=0), f"next-character softmax at T={T}", 1e-6)

# Forward KL covers, reverse KL seeks modes: the reverse-KL student's predictions are sharper.
ent = {d: r.student.evals.query("split == 'val'")["entropy"].iloc[-1] for d, r in by_divergence.items()}
assert ent["kl"] > ent["reverse_kl"], f"entropy: forward KL {ent['kl']:.4f}, reverse KL {ent['reverse_kl']:.4f}"

# The same experiment twice gives the same numbers: the size table's row of the lesson's student.
for row in sizes.to_dict("records"):
    if row["student"] == STUDENT:
        _check_close(
            row["distilled bpc"], first.student.summary["test_bpc"], "sizes: distilled bpc vs the first run", 1e-12
        )
        _check_close(
            row["scratch bpc"], first.baseline.summary["test_bpc"], "sizes: scratch bpc vs the first run", 1e-12
        )

# Cached vs live: the teacher outputs on disk are the live teacher's logits on the train blocks (every
# class, or the top k with their ids and the log-sum-exp); the FitStart messages give their real size.
live = wb.logits_of(_check_logits(first.teacher.model, data.train.x)).float()  # (N, L, V)
positions, vocab = live.shape[0] * live.shape[1], live.shape[-1]
assert vocab == tok.vocab_size
kinds = {}
for path in sorted(OutputCache().root.glob("*.pt")):
    d = _check_torch.load(path, weights_only=True)
    if "logits" in d:
        _check_all_close(d["logits"], live, f"{path.name}: cached logits vs the live teacher", 1e-4)
        kinds["full"] = d["logits"].numel() * d["logits"].element_size()
    else:
        rec = d["topk"]
        k_ = rec["values"].shape[-1]
        ids = rec["indices"].long()
        _check_all_close(rec["values"], live.topk(k_, dim=-1).values, f"{path.name}: top-{k_} values", 1e-4)
        _check_all_close(live.gather(-1, ids), rec["values"], f"{path.name}: values at the cached ids", 1e-4)
        _check_all_close(
            rec["logsumexp"], _check_torch.logsumexp(live / rec["temperature"], -1), f"{path.name}: log-sum-exp", 1e-4
        )
        kinds[k_] = sum(rec[n].numel() * rec[n].element_size() for n in ("values", "indices", "logsumexp"))
assert "full" in kinds and 8 in kinds, f"cached outputs found: {kinds}"
assert kinds["full"] == positions * vocab * 4
notes = {name: v["cached"] for name, v in by_cache.items()}
mb = lambda n: f"{n / 2**20:.1f} MB"  # as the message writes sizes
assert notes["full distribution (kl)"].endswith(
    f"all {vocab} classes for {positions:,} positions, {mb(kinds['full'])}"
), notes
for name in ("top-8 (topk_kl)", "top-8 + tail (topk_kl_tail)"):
    want = f"top-8 of {vocab} classes at T=1 for {positions:,} positions, {mb(kinds[8])}"
    want += f" (every class: {mb(kinds['full'])})"
    assert notes[name].endswith(want), (notes[name], want)
"""


def prepared(path: pathlib.Path) -> nbformat.NotebookNode:
    """The notebook with QUICK = True after its parameters cell and the network guard first."""
    nb = nbformat.read(path, as_version=4)
    idx = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
    assert idx is not None, f"{path.name}: needs a cell tagged 'parameters' (QUICK = False)"
    nb.cells.insert(idx + 1, nbformat.v4.new_code_cell("QUICK = True"))
    nb.cells.insert(0, nbformat.v4.new_code_cell(NETWORK_GUARD))
    return nb


def test_every_notebook_has_checks():
    assert NOTEBOOKS, "no notebooks found"
    missing = [p.stem for p in NOTEBOOKS if p.stem not in CHECKS]
    assert not missing, f"notebooks without checks in CHECKS: {missing}"
    stale = sorted(set(CHECKS) - {p.stem for p in NOTEBOOKS})
    assert not stale, f"CHECKS for notebooks that do not exist: {stale}"


@pytest.mark.slow  # real kernels: the full test command runs them
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_its_numbers_check_out(path, tmp_path):
    nb = prepared(path)
    check = CHECK_HELPERS + CHECKS[path.stem] + f"\nprint({CHECKED!r})\n"
    nb.cells.append(nbformat.v4.new_code_cell(check))
    # An error in a cell (the checks' included) raises CellExecutionError with its traceback.
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    outputs = nb.cells[-1].get("outputs", [])
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.get("name") == "stdout")
    assert printed.strip().endswith(CHECKED), f"the check cell did not finish: {printed[-2000:]!r}"


@pytest.mark.slow
def test_the_network_guard_bites(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(NETWORK_GUARD),
        nbformat.v4.new_code_cell(
            "import urllib.request\n"
            "try:\n    urllib.request.urlopen('http://example.com', timeout=5)\n"
            "except Exception as e:\n    print(type(e).__name__, e)"
        ),
    ]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    assert "network access is blocked" in nb.cells[1].outputs[0]["text"]
