"""Teacher-output cache: KD epoch time with cached teacher logits vs querying the teacher every
step, and vs the same student trained from scratch.

Workloads on digits (64 features, 1167 train samples), batch 64, KD loss, the teacher costing
>= 10x the student's multiply-accumulates: teacher MLP 512x2 (300k MACs) -> student MLP 128x2
(26k), MLP 1024x2 (1.1M) -> MLP 256x2 (84k), MLP 2048x2 (4.3M) -> MLP 512x2 (300k).
What the cache cannot remove is the KD loss itself (softened log-softmaxes and KL, forward
and backward): a fixed cost per step, large next to a tiny student, small next to a big one.
Median epoch time (EpochEnd.epoch_seconds) over rounds run side by side in one process.
Targets: cached KD within 1.15x of scratch; the cache >= 2x faster than querying the teacher.

    PYTHONPATH=. python bench/teacher_cache.py [--rounds 5] [--epochs 10]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from workbench import DistillConfig, Distiller, load_dataset
from workbench.models.zoo import build_model, count_macs


class EpochTimes:
    def __init__(self):
        self.seconds = []

    def on_epoch_end(self, p):
        self.seconds.append(p.epoch_seconds)


def epoch_time(teacher, student_hidden, data, epochs: int, mode: str) -> float:
    torch.manual_seed(1)
    student = build_model("mlp", data, hidden=student_hidden)
    times = EpochTimes()
    cfg = DistillConfig(epochs=epochs, batch_size=64, device="cpu", eval_every=10**9, cache_teacher=(mode != "live"))
    Distiller(
        None if mode == "scratch" else teacher,
        student,
        data,
        cfg,
        [times],
        role="baseline" if mode == "scratch" else None,
    ).fit()
    return statistics.median(times.seconds[1:])  # the first epoch warms up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("digits")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds of {args.epochs} epochs")
    for t_hidden, s_hidden in (((512, 512), (128, 128)), ((1024, 1024), (256, 256)), ((2048, 2048), (512, 512))):
        torch.manual_seed(0)
        teacher = build_model("mlp", data, hidden=t_hidden).eval()
        t_macs = count_macs(teacher, (64,))
        s_macs = count_macs(build_model("mlp", data, hidden=s_hidden), (64,))
        modes = ["scratch", "cached", "live"]
        res: dict[str, list[float]] = {m: [] for m in modes}
        for i in range(args.rounds):
            for m in modes[i % 3 :] + modes[: i % 3]:
                res[m].append(epoch_time(teacher, s_hidden, data, args.epochs, m))
        med = {m: statistics.median(v) for m, v in res.items()}
        print(f"\nteacher mlp{t_hidden} {t_macs} MACs/sample, student mlp{s_hidden} {s_macs} ({t_macs / s_macs:.0f}x)")
        for m in modes:
            print(f"  {m:8s} median epoch {med[m] * 1e3:7.2f} ms")
        print(f"  cached KD / scratch      {med['cached'] / med['scratch']:.3f}  (target <= 1.15)")
        print(f"  live teacher / cached KD {med['live'] / med['cached']:.2f}x  (target >= 2)")


if __name__ == "__main__":
    main()
