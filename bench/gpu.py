"""GPU throughput: the engine vs a hand-written PyTorch loop doing the same math.

Workload: generated 32x32 RGB images (10 classes), a CNN teacher (64-128-256 channels) and a
small CNN student (16-32-64), batch 512, KD loss (0.5*CE + 0.5*T^2*KL, T=4), Adam.
Rows: fp32 and bf16, teacher queried live every step and from cached logits. Samples/s are
medians of epoch times after a warm-up epoch; the engine runs with its default reporting and
no evaluation split. Needs only torch (numpy comes with it):

    PYTHONPATH=. python3 bench/gpu.py            # on a GPU machine
    PYTHONPATH=. python3 bench/gpu.py --quick    # a small CPU smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.engine.config import DistillConfig
from workbench.engine.distiller import Distiller


def cnn(channels: tuple[int, ...], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers, c_in = [], 3
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 10))


class EpochTimes:
    def __init__(self):
        self.seconds: list[float] = []

    def on_epoch_end(self, p):
        self.seconds.append(p.epoch_seconds)


def engine_sps(x, y, teacher, student, epochs, bs, precision, cached, device) -> float:
    times = EpochTimes()
    cfg = DistillConfig(
        epochs=epochs,
        batch_size=bs,
        lr=1e-3,
        temperature=4.0,
        device=str(device),
        precision=precision,
        cache_teacher=cached,
        eval_every=10**9,
    )
    res = Distiller(teacher, student, {"train": (x, y)}, cfg, [times]).fit()
    assert res.status == "completed", res.message
    return len(x) / statistics.median(times.seconds[1:])


def hand_sps(x, y, teacher, student, epochs, bs, precision, cached, device) -> float:
    x, y = x.to(device), y.to(device)
    teacher.to(device).eval()
    student.to(device).train()
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    dtype = torch.bfloat16 if precision == "bf16" else None
    T = 4.0
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        t_all = torch.cat([teacher(x[i : i + 1024]) for i in range(0, len(x), 1024)]).float() if cached else None
    times = []
    for _ in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(len(x), generator=gen).to(device)
        xp, yp = x[perm], y[perm]
        tp = t_all[perm] if cached else None
        for i in range(0, len(x), bs):
            xb, yb = xp[i : i + bs], yp[i : i + bs]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                if cached:
                    tb = tp[i : i + bs]
                else:
                    with torch.no_grad():
                        tb = teacher(xb).float()
                s = student(xb)
            s = s.float()
            kl = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(tb / T, 1), reduction="batchmean", log_target=True)
            loss = 0.5 * F.cross_entropy(s, yb) + 0.5 * T * T * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return len(x) / statistics.median(times[1:])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = args.samples or (1024 if args.quick else 20480)
    bs = 128 if args.quick else 512
    t_ch, s_ch = ((16, 32), (8, 16)) if args.quick else ((64, 128, 256), (16, 32, 64))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"torch {torch.__version__} on {name}; {n} samples of 3x32x32, batch {bs}, {args.epochs} epochs "
        f"(first one is warm-up)"
    )
    print(f"{'precision':9s} {'teacher':7s} {'engine s/s':>11s} {'hand s/s':>10s} {'ratio':>6s}")
    for precision in ("fp32", "bf16"):  # warm-up round: kernels built, caches primed, clocks up
        for cached in (False, True):
            engine_sps(
                x[: bs * 4], y[: bs * 4], cnn(t_ch, 1).to(device), cnn(s_ch, 2), 2, bs, precision, cached, device
            )
            hand_sps(x[: bs * 4], y[: bs * 4], cnn(t_ch, 1).to(device), cnn(s_ch, 2), 2, bs, precision, cached, device)
    rows = {}
    for precision in ("fp32", "bf16"):
        for cached in (False, True):
            teacher = cnn(t_ch, 1).to(device)
            e = engine_sps(x, y, teacher, cnn(s_ch, 2), args.epochs, bs, precision, cached, device)
            h = hand_sps(x, y, teacher, cnn(s_ch, 2), args.epochs, bs, precision, cached, device)
            rows[(precision, cached)] = e
            print(
                f"{precision:9s} {'cached' if cached else 'live':7s} {e:11.0f} {h:10.0f} {e / h:6.3f}"
                "   (target >= 0.95)"
            )
    print(
        f"bf16 / fp32 with the teacher live: {rows[('bf16', False)] / rows[('fp32', False)]:.2f}x (target > 1 on a GPU)"
    )


if __name__ == "__main__":
    main()
