"""Engine overhead vs a hand-written loop, and permutation slicing vs DataLoader.

Pinned workload: digits-sized data (1437 train / 360 val samples of 64 features, 10 classes),
an MLP 64-32-10 student, cached teacher logits, batch 64, KD loss (0.5*CE + 0.5*T^2*KL, T=4),
Adam. The engine runs with its default reporting: a step event every 10 steps, an evaluation of the
val split at every epoch end and a final evaluation of every split. Two hand-written loops
report nothing: "hand+eval" does the same math (training and the same evaluations: accuracy,
CE, agreement, KL), "bare" only trains. Runs are paired (order rotated) and median ratios are
printed. Target: engine / hand+eval <= 1.05.

    PYTHONPATH=. python bench/engine_overhead.py [--pairs 9] [--epochs 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from workbench import DistillConfig, Distiller

N_TRAIN, N_VAL, D, K, BS = 1437, 360, 64, 10, 64


def workload(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN + N_VAL, D, generator=g)
    y = (x @ torch.randn(D, K, generator=g)).argmax(1)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def student(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, K))


class CachedTeacher(nn.Module):
    """A fixed linear teacher; its logits on the train set are cached by both loops."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.lin = nn.Linear(D, K)

    def forward(self, x):
        return 3 * self.lin(x)


def _evaluate(m, x, y, t_logp, t_pred) -> list[float]:
    """Accuracy, CE, agreement and KL to the teacher, as the engine computes them."""
    m.eval()
    with torch.no_grad():
        logp = F.log_softmax(m(x), 1)
        pred = logp.argmax(1)
        out = torch.stack(
            [
                (pred == y).sum(dtype=torch.float32),
                F.nll_loss(logp, y, reduction="sum"),
                (pred == t_pred).sum(dtype=torch.float32),
                F.kl_div(logp, t_logp, reduction="sum", log_target=True),
            ]
        ).tolist()
    m.train()
    return out


def hand_loop(x, y, teacher, epochs, seed=0, T=4.0, val=None) -> float:
    """The training math by hand; with ``val=(xv, yv)`` also the engine's default evaluations."""
    m = student()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        t_all = teacher(x)
        if val is not None:
            tv = teacher(val[0])
            tv_logp, tv_pred = F.log_softmax(tv, 1), tv.argmax(1)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), BS):
            idx = perm[i : i + BS]
            s = m(x[idx])
            kl = F.kl_div(
                F.log_softmax(s / T, 1), F.log_softmax(t_all[idx] / T, 1), reduction="batchmean", log_target=True
            )
            loss = 0.5 * F.cross_entropy(s, y[idx]) + 0.5 * T * T * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if val is not None:
            _evaluate(m, *val, tv_logp, tv_pred)
    if val is not None:  # the final evaluation of the train split (val was just evaluated)
        _evaluate(m, x, y, F.log_softmax(t_all, 1), t_all.argmax(1))
    return time.perf_counter() - t0


def engine(x, y, xv, yv, teacher, epochs, seed=0, with_val=True) -> float:
    data = {"train": (x, y), "val": (xv, yv)} if with_val else {"train": (x, y)}
    d = Distiller(
        teacher,
        student(),
        data,
        DistillConfig(epochs=epochs, batch_size=BS, lr=3e-3, temperature=4.0, seed=seed, device="cpu"),
    )
    t0 = time.perf_counter()
    res = d.fit()
    assert res.status == "completed", res.message
    return time.perf_counter() - t0


def loader_vs_slicing(x, y, epochs: int) -> tuple[float, float, float]:
    """Seconds per epoch of the same training step fed by DataLoader, by indexing a permutation
    each step, and by gathering the permuted data once per epoch and slicing it (the engine)."""

    def run(batches):
        m = student()
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        t0 = time.perf_counter()
        for _ in range(epochs):
            for xb, yb in batches():
                loss = F.cross_entropy(m(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return (time.perf_counter() - t0) / epochs

    gen = torch.Generator().manual_seed(0)
    dl = DataLoader(TensorDataset(x, y), batch_size=BS, shuffle=True, generator=gen)

    def sliced():
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), BS):
            idx = perm[i : i + BS]
            yield x[idx], y[idx]

    def gathered():
        perm = torch.randperm(len(x), generator=gen)
        xp, yp = x[perm], y[perm]
        for i in range(0, len(x), BS):
            yield xp[i : i + BS], yp[i : i + BS]

    return run(lambda: iter(dl)), run(sliced), run(gathered)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=9)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y, xv, yv = workload()
    teacher = CachedTeacher().eval()
    warnings.simplefilter("ignore")  # the toy teacher is smaller than the student: not a mistake here
    engine(x, y, xv, yv, teacher, 2)  # warm-up
    hand_loop(x, y, teacher, 2)
    runs = {
        "bare": lambda: hand_loop(x, y, teacher, args.epochs),
        "hand+eval": lambda: hand_loop(x, y, teacher, args.epochs, val=(xv, yv)),
        "engine": lambda: engine(x, y, xv, yv, teacher, args.epochs),
        "engine-noval": lambda: engine(x, y, xv, yv, teacher, args.epochs, with_val=False),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for i in range(args.pairs):
        for k in names[i % len(names) :] + names[: i % len(names)]:  # rotate the order
            times[k].append(runs[k]())
    steps = args.epochs * -(-N_TRAIN // BS)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.pairs} rounds of {args.epochs} epochs "
        f"({steps} steps each)"
    )
    for k, v in times.items():
        print(f"{k:10s} median {statistics.median(v) * 1e6 / steps:7.1f} us/step")
    for eng, ref, note in (
        ("engine", "hand+eval", "same math incl. evaluation; target <= 1.05"),
        ("engine", "bare", "the engine also evaluates val every epoch"),
        ("engine-noval", "bare", "no val split: step events + final train eval"),
    ):
        r = [e / h for e, h in zip(times[eng], times[ref])]
        print(
            f"{eng:12s} / {ref:9s} median ratio {statistics.median(r):.3f} "
            f"(min {min(r):.3f}, max {max(r):.3f})  [{note}]"
        )
    res = [loader_vs_slicing(x, y, 10) for _ in range(5)]
    dl, sl, ga = (statistics.median(r[i] for r in res) for i in range(3))
    print(
        f"DataLoader(TensorDataset) {dl * 1e3:.2f} ms/epoch; permutation slicing per step {sl * 1e3:.2f} "
        f"ms/epoch ({dl / sl:.2f}x faster, expect >= 1.5x); gathered once per epoch then sliced "
        f"(the engine) {ga * 1e3:.2f} ms/epoch ({dl / ga:.2f}x faster)"
    )


if __name__ == "__main__":
    main()
