"""How long the language-model teacher takes to reach nanoGPT's CPU Shakespeare figure.

Trains ``gpt:4,128`` (the results page's teacher) on shakespeare-char with DistillConfig.for_text()
(AdamW, lr 2e-3, 32 blocks of 64 characters a batch, seed 0) on ``--threads`` torch threads, and
evaluates the validation loss every ``--eval-every`` steps. Prints, for each threshold, the step,
the wall-clock seconds and the process CPU seconds from the start of training at which the
validation loss first reached it: 1.88 nats per character (nanoGPT's figure for this size on a
CPU; target: within 5 minutes on 2 cores) and 1.70 (stretch). The evaluations are inside the
clock (they are what tells when the threshold is reached); their share is printed too. The run
stops at the last threshold or at ``--max-steps``.

    PYTHONPATH=. python bench/text_teacher.py [--threads 2] [--eval-every 100] [--max-steps 3000]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

from workbench import DistillConfig, build_model, load_dataset, train

THRESHOLDS = (1.88, 1.70)  # nats per character: nanoGPT's CPU figure, and the stretch target


class Clock:
    """Records (step, wall s, CPU s, val loss) at each validation eval; stops past the last threshold."""

    def __init__(self) -> None:
        self.t0 = self.c0 = 0.0
        self.points: list[tuple[int, float, float, float]] = []
        self.eval_seconds = 0.0
        self._eval_start: float | None = None
        self.should_stop = False  # the engine ends the run when a callback sets this (events.py)

    def on_fit_start(self, p) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, p) -> None:
        self._eval_start = time.perf_counter()  # an eval, if any, runs between this step's end and its event

    def on_eval_end(self, p) -> None:
        if p.split != "val":
            return
        if self._eval_start is not None:
            self.eval_seconds += time.perf_counter() - self._eval_start
        self.points.append((p.step, time.perf_counter() - self.t0, time.process_time() - self.c0, p.loss))
        print(f"  step {p.step:5d}  {self.points[-1][1]:7.1f} s  val loss {p.loss:.3f} nats", flush=True)
        self.should_stop = p.loss <= min(THRESHOLDS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=3000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()
    data = load_dataset("shakespeare-char")
    model = build_model("gpt", data, n_layer=4, n_embd=128)
    cfg = DistillConfig.for_text(max_steps=args.max_steps, epochs=10_000, eval_every=args.eval_every, sample_tokens=0)
    clock = Clock()
    print(
        f"gpt:4,128 ({sum(p.numel() for p in model.parameters()):,} params) on shakespeare-char, "
        f"{args.threads} torch thread(s), batch {cfg.batch_size}, lr {cfg.lr:g}, eval every {args.eval_every} steps; "
        f"load 1/5/15 min at start: {' / '.join(f'{v:.2f}' for v in load)}",
        flush=True,
    )
    train(model, data, cfg, callbacks=[clock])
    load = os.getloadavg()
    print(f"load at end: {' / '.join(f'{v:.2f}' for v in load)}")
    total = clock.points[-1][1] if clock.points else float("nan")
    print(f"evaluations: {clock.eval_seconds:.1f} s of {total:.1f} s")
    for threshold in THRESHOLDS:
        hit = next((pt for pt in clock.points if pt[3] <= threshold), None)
        if hit is None:
            best = min((pt[3] for pt in clock.points), default=math.nan)
            print(f"val loss <= {threshold} nats: not reached in {args.max_steps} steps (best {best:.3f})")
        else:
            step, wall, cpu, loss = hit
            print(
                f"val loss <= {threshold} nats: step {step}, {wall / 60:.2f} min wall, {cpu / 60:.2f} CPU-min "
                f"(val {loss:.3f} nats = {loss / math.log(2):.3f} bpc)"
            )


if __name__ == "__main__":
    main()
