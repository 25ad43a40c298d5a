"""A KD step with cached top-k teacher outputs vs a scratch (CE only) step, on shakespeare-char.

Pinned workload: shakespeare-char (blocks of 64 characters, 65-character vocabulary), a
`gpt:2,64` teacher (its weights do not change the cost: it is built, not trained), a `gpt:1,32`
student, DistillConfig.for_text() (AdamW, batch 32, grad clip 1.0, T = 1). Three kinds of run,
side by side in one process and rotated in order, each timed over the same window of steps (from
step WARMUP to step WARMUP + STEPS, read from the engine's own step events, so the teacher-output
cache, built once before the first step and shared through an in-memory OutputCache, and the
final evaluation are outside the window):

    scratch    no teacher, plain cross-entropy
    kd top-k   divergence topk_kl_tail on the teacher's cached top-k (teacher_top_k=k)
    kd full    divergence kl on the teacher's cached logits for every class (teacher_top_k=None)

Prints the median seconds per step of each, the ratios to scratch (target for kd top-k: <= 1.3x)
and the size of the cached teacher outputs, full vs top-k.

    PYTHONPATH=. python bench/text_kd_step.py [--pairs 5] [--steps 200] [--k 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from workbench import DistillConfig, Distiller, load_dataset
from workbench.experiment import make_model
from workbench.store.cache import OutputCache

WARMUP = 20


class StepClock:
    """The engine's ``seconds`` at two reported steps: the window's wall time."""

    def __init__(self, first: int, last: int):
        self.first, self.last, self.at = first, last, {}

    def on_step_end(self, p) -> None:
        if p.step in (self.first, self.last):
            self.at[p.step] = p.seconds


def timed_run(kind: str, data, teacher, cache: OutputCache, steps: int, k: int) -> float:
    """Seconds per step of one run of ``kind`` over the timed window."""
    clock = StepClock(WARMUP, WARMUP + steps)
    cfg = DistillConfig.for_text(
        max_steps=WARMUP + steps, log_every=WARMUP if steps % WARMUP == 0 else 1, eval_every=None, sample_tokens=0
    )
    student = make_model("gpt:1,32", data, "student", 0)
    if kind == "scratch":
        d = Distiller(None, student, data, cfg, [clock], role="baseline")
    else:
        top_k, divergence = (k, "topk_kl_tail") if kind == "kd top-k" else (None, "kl")
        cfg = cfg.replace(teacher_top_k=top_k, divergence=divergence)
        d = Distiller(teacher, student, data, cfg, [clock], teacher_key="bench-teacher", output_cache=cache)
    res = d.fit()
    if res.status != "completed":
        raise RuntimeError(f"{kind}: {res.status}: {res.message}")
    return (clock.at[WARMUP + steps] - clock.at[WARMUP]) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5, help="rounds of the three runs (median over rounds)")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per run")
    ap.add_argument("--k", type=int, default=16, help="teacher_top_k of the top-k run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no oversubscription on 2 cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("shakespeare-char")
    teacher = make_model("gpt:2,64", data, "teacher", 0)
    kinds = ("scratch", "kd top-k", "kd full")
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        cache = OutputCache(tmp, disk=False)
        t0 = time.perf_counter()
        for kind in kinds[1:]:  # build both caches once (not timed): later runs read them from memory
            timed_run(kind, data, teacher, cache, WARMUP, args.k)
        built = time.perf_counter() - t0
        for r in range(args.pairs):
            order = kinds[r % 3 :] + kinds[: r % 3]  # rotate the order: drifting machine load hits each alike
            for kind in order:
                times[kind].append(timed_run(kind, data, teacher, cache, args.steps, args.k))
        info = cache.info()
    OutputCache.clear_memory()
    blocks, length = data.train.x.shape
    print(
        f"shakespeare-char: {blocks} train blocks x {length} = {blocks * length:,} positions, "
        f"vocabulary {data.num_classes}; student gpt:1,32, teacher gpt:2,64, batch 32, "
        f"{args.threads} thread(s), {args.pairs} rounds x {args.steps} steps"
    )
    print(f"{'run':10s} {'ms/step':>9s} {'x scratch':>10s}")
    base = statistics.median(times["scratch"])
    for kind in kinds:
        med = statistics.median(times[kind])
        print(f"{kind:10s} {1000 * med:9.2f} {med / base:10.2f}")
    sizes = {e["kind"]: e for e in info["entries"]}
    full, top = sizes["full"], sizes["top-k"]
    print(
        f"\nteacher-output cache: full vocabulary {full['bytes'] / 2**20:.1f} MB; top-{top['k']} "
        f"{top['bytes'] / 2**20:.1f} MB ({full['bytes'] / top['bytes']:.1f}x smaller); both built in {built:.1f} s"
    )
    ratio = statistics.median(times["kd top-k"]) / base
    print(f"KD step with cached top-{args.k} / scratch step: {ratio:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
