"""Sweep wall time, and the parallel speed-up over serial, on MNIST-1D.

Teacher: 1D CNN, 3 conv layers of 64 channels (``cnn1d:64,64,64``), 150 epochs, Adam lr 1e-2,
batch 100, no weight decay (the MNIST-1D paper's CNN recipe) -- trained once and kept in the
teacher cache. Data: the published 4000 train / 1000 test rows plus 750 generated val rows. Students: MLPs with
two hidden layers of 8, 16, 32, 64 and 128 units; methods scratch, kd (alpha 0.5, T=4) and mse;
5 seeds; 30 epochs each (batch 64, lr 3e-3). Target: the 75-cell sweep in <= 5 min on 2 cores.

Speed-up: a subset (two sizes x 3 methods x 3 seeds) run serially (one process, one torch
thread, as each worker has) and with one worker per core, alternated ``--rounds`` times;
best-vs-best and the median of paired ratios are printed (other work on a shared machine
lands in single rounds: the best times are the least disturbed). Target: >= 1.7x on 2 cores.
Both include starting the sweep (spawning the workers included).

    python bench/sweep.py [--epochs 30] [--seeds 5] [--rounds 3] [--subset-seeds 3] [--workers N]
                                  [--runs DIR] [--speedup-only] [--threaded]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from workbench import DistillConfig, load_dataset
from workbench.sweeps.sweep import Sweep, paired_gain, pareto_front

STUDENTS = [f"mlp:{w},{w}" for w in (8, 16, 32, 64, 128)]
METHODS = ["scratch", "kd", "mse"]


def timed(sweep: Sweep) -> tuple[float, object]:
    t0 = time.perf_counter()
    df = sweep.run()
    return time.perf_counter() - t0, df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--speedup-only", action="store_true", help="skip the full sweep")
    ap.add_argument("--threaded", action="store_true", help="also time a serial run with all cores as torch threads")
    ap.add_argument("--subset-seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--runs", default=None, help="runs root for the sweep CSV (default: a temporary folder)")
    args = ap.parse_args()
    runs = args.runs or tempfile.mkdtemp(prefix="bench-sweep-")
    data = load_dataset("mnist1d")
    teacher_cfg = DistillConfig(epochs=150, batch_size=100, lr=1e-2, weight_decay=0.0, device="cpu")
    student_cfg = DistillConfig(epochs=args.epochs, batch_size=64, lr=3e-3, temperature=4.0, alpha=0.5, device="cpu")
    common = dict(
        data=data, teacher="cnn1d:64,64,64", config=student_cfg, teacher_config=teacher_cfg, runs=runs, record=False
    )
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"{args.workers} workers; mnist1d train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}"
    )

    t0 = time.perf_counter()
    probe = Sweep(**common, students=STUDENTS[:1], methods=["scratch"], seeds=1, save=False)
    probe.experiment.prepare_teacher()  # trained once, then loaded from the teacher cache
    cached = probe.experiment.teacher_result.summary.get("cached", False)
    t_acc = probe.experiment.teacher_result.summary.get("test_acc")
    print(
        f"teacher cnn1d:64,64,64: test acc {t_acc:.3f}, {'loaded from the cache' if cached else 'trained'} "
        f"in {time.perf_counter() - t0:.1f} s"
    )

    if not args.speedup_only:
        full_sweep(common, args)
    speedup(common, args)


def full_sweep(common: dict, args: argparse.Namespace) -> None:
    """The 5 sizes x 3 methods x N seeds sweep: wall time, gains and the Pareto front."""
    full = Sweep(
        **common,
        students=STUDENTS,
        methods=METHODS,
        seeds=args.seeds,
        workers=args.workers,
        name=f"bench-{time.strftime('%Y%m%d-%H%M%S')}",
    )
    seconds, df = timed(full)
    fits = df.seconds.sum()
    print(
        f"\nsweep: {len(df)} cells ({len(STUDENTS)} sizes x {len(METHODS)} methods x {args.seeds} seeds, "
        f"{args.epochs} epochs) in {seconds:.1f} s wall ({seconds / 60:.2f} min; target <= 5 min); "
        f"fits {fits:.1f} s summed, {fits / seconds:.2f} cells busy on average; load average "
        f"{os.getloadavg()[0]:.1f}; saved to {full.path}"
    )
    print(f"statuses: {df.status.value_counts().to_dict()}")
    for method in ("kd", "mse"):
        g = paired_gain(df, method=method)
        print(f"\n{method} - scratch, test accuracy (mean over {args.seeds} seeds, 95% CI):")
        for r in g.itertuples():
            print(
                f"  {r.student:12s} {r.params:6d} params  scratch {r.baseline_mean:.3f}  {method} "
                f"{r.method_mean:.3f}  gain {r.gain:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
            )
    front = pareto_front(df)
    print(
        "\nPareto front (params, mean test acc): "
        + ", ".join(f"{r.student} {r.method} {r.test_acc_mean:.3f}" for r in front.itertuples())
    )


def speedup(common: dict, args: argparse.Namespace) -> None:
    """Serial vs parallel on a subset, alternated round by round."""
    subset = dict(common, students=[STUDENTS[2], STUDENTS[4]], methods=METHODS, seeds=args.subset_seeds, save=False)
    serial, parallel, loads, same = [], [], [], True
    for _ in range(args.rounds):
        s_sec, s_df = timed(Sweep(**subset, workers=1))
        p_sec, p_df = timed(Sweep(**subset, workers=args.workers))
        serial.append(s_sec)
        parallel.append(p_sec)
        loads.append(os.getloadavg()[0])
        same &= s_df[["val_acc", "test_acc"]].equals(p_df[["val_acc", "test_acc"]])
    ratios = [s / p for s, p in zip(serial, parallel)]
    print(f"\nspeed-up on {len(s_df)} cells ({', '.join(subset['students'])}; {args.rounds} rounds, alternated):")
    print(f"  serial, 1 thread:           {', '.join(f'{s:.1f}' for s in serial)} s")
    print(f"  {args.workers} workers x 1 thread:     {', '.join(f'{p:.1f}' for p in parallel)} s")
    print(f"  load average after each round: {', '.join(f'{x:.1f}' for x in loads)} (other work on the machine)")
    if args.threaded:
        threaded, _ = timed(Sweep(**subset, workers=1, threads=os.cpu_count()))
        print(f"  serial, {os.cpu_count()} torch threads:    {threaded:.1f} s")
    print(
        f"  speed-up: {min(serial) / min(parallel):.2f}x best vs best, {statistics.median(ratios):.2f}x median of "
        f"paired rounds (target >= 1.7x); serial and parallel numbers identical: {same}"
    )


if __name__ == "__main__":  # required: spawned workers import this file
    main()
