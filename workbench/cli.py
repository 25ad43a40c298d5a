"""The ``workbench`` command.

    workbench demo [--dataset digits] [--epochs 30] [--temperature 4] [--alpha 0.5] [--json]

``demo`` trains a teacher, a scratch student and a distilled student on built-in data and
prints their test accuracies side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


def _demo(args: argparse.Namespace) -> int:
    from .callbacks import ProgressBar
    from .config import DistillConfig
    from .datasets import load_dataset
    from .engine import distill, train
    from .models import build_model, count_params

    data = load_dataset(args.dataset, seed=args.seed)
    teacher = build_model("mlp", data, hidden=(256, 256))
    quiet = args.json or args.quiet
    bars = (lambda name: [] if quiet else [ProgressBar(desc=name)])
    base = DistillConfig(epochs=args.epochs, seed=args.seed, lr=args.lr)
    rows = []
    res = train(teacher, data, base, callbacks=bars("teacher"))
    rows.append(("teacher", res))
    res = train(build_model("mlp", data, hidden=(args.student_width,)), data, base, role="baseline",
                callbacks=bars("scratch student"))
    rows.append(("student, scratch", res))
    kd_cfg = base.replace(temperature=args.temperature, alpha=args.alpha)
    res = distill(teacher, build_model("mlp", data, hidden=(args.student_width,)), data, kd_cfg,
                  callbacks=bars("distilled student"))
    rows.append(("student, distilled", res))
    table = [{"model": name, "status": r.status, "params": count_params(r.model),
              "test_acc": r.summary.get("test_acc"), "val_acc": r.summary.get("val_acc"),
              "seconds": round(r.summary["seconds"], 2), "run_id": r.run_id} for name, r in rows]
    if args.json:
        print(json.dumps({"dataset": data.name, "config": kd_cfg.to_dict(), "runs": table}, indent=2))
    else:
        print(f"\n{data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test samples, "
              f"T={args.temperature}, alpha={args.alpha}")
        print(f"{'model':22s} {'params':>8s} {'test acc':>9s} {'seconds':>8s}")
        for r in table:
            print(f"{r['model']:22s} {r['params']:8d} {r['test_acc']:9.4f} {r['seconds']:8.2f}")
    return 0 if all(r.status == "completed" for _, r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description="KD Workbench: knowledge distillation you can watch.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="teacher vs scratch student vs distilled student on built-in data")
    d.add_argument("--dataset", default="digits", help="a built-in dataset (default: digits)")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--lr", type=float, default=3e-3)
    d.add_argument("--temperature", type=float, default=4.0)
    d.add_argument("--alpha", type=float, default=0.5, help="alpha*CE + (1-alpha)*T^2*KL")
    d.add_argument("--student-width", type=int, default=16)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true", help="print the results as JSON")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # bad input: a clear message, not a traceback
        print(f"workbench {args.command}: error: {e}", file=sys.stderr)
        return 2
