"""The ``workbench`` command.

    workbench app [--address 127.0.0.1] [--port 8501]
    workbench demo [--dataset digits] [--epochs 30] [--json]
    workbench distill --dataset digits --teacher cnn2d --student mlp:16 --temperature 4 --alpha 0.5
                      --epochs 20 [--labeled-fraction 0.1] [--extra-unlabeled N] [--mixup]
                      [--csv PATH --target COL] [--runs DIR] [--seed S] [--json]

``demo`` trains a teacher, a scratch student and a distilled student on built-in data and
prints their test accuracies side by side; ``distill`` does the same with every setting open.
Exit codes: 0 all runs completed, 1 a run did not complete, 2 bad input.
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


def _fraction(text: str) -> float:
    v = float(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not in (0, 1]")
    return v


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0")
    return v


def _dataset(text: str) -> str:
    from .datasets import list_datasets

    if text not in list_datasets():
        raise argparse.ArgumentTypeError(f"{text!r} is not a built-in dataset; valid: {', '.join(list_datasets())} "
                                         "(or your own file with --csv PATH --target COL)")
    return text


def _distill(args: argparse.Namespace) -> int:
    from .callbacks import ProgressBar
    from .config import DistillConfig
    from .datasets import from_csv, load_dataset
    from .experiment import Experiment

    if args.csv:
        if not args.target:
            raise ValueError("--target: required with --csv (the name of the label column)")
        data = from_csv(args.csv, args.target, seed=args.seed)
        if args.extra_unlabeled:
            raise ValueError("--extra-unlabeled: generated inputs exist only for built-in datasets "
                             "(mnist1d, moons, spirals)")
    else:
        data = load_dataset(args.dataset, seed=args.seed, n_unlabeled=args.extra_unlabeled)
    cfg = DistillConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        temperature=args.temperature, alpha=args.alpha,
                        labeled_fraction=args.labeled_fraction,
                        mixup_alpha=args.mixup_alpha if args.mixup else 0.0)
    teacher_cfg = cfg.replace(labeled_fraction=1.0, mixup_alpha=0.0,
                              epochs=args.teacher_epochs or args.epochs, lr=args.teacher_lr or args.lr)
    callbacks: list = [] if (args.json or args.quiet) else [ProgressBar()]
    if args.device or args.precision:
        cfg = cfg.replace(**{k: v for k, v in (("device", args.device), ("precision", args.precision)) if v})
        teacher_cfg = teacher_cfg.replace(**{k: v for k, v in (("device", args.device), ("precision", args.precision)) if v})
    exp = Experiment(data, args.teacher, args.student, cfg, teacher_cfg, callbacks=callbacks,
                     runs=args.runs or True, retrain=args.retrain)
    result = exp.run()
    from . import distributed
    if not distributed.is_main():  # under torchrun only rank 0 reports
        return 0 if all(r.status == "completed" for r in result.fits.values()) else 1
    table = result.table()
    if args.json:
        print(json.dumps({"dataset": data.name, "config": cfg.to_dict(), "teacher_val_acc": result.teacher_val_acc,
                          "warnings": result.warnings,
                          "runs": json.loads(table.to_json(orient="records"))}, indent=2))
    else:
        for note in result.warnings:
            print(f"warning: {note}", file=sys.stderr)
        print(f"\n{data.name}: T={cfg.temperature}, w_ce={cfg.w_ce:g}, w_kd={cfg.w_kd:g}, "
              f"labeled fraction {cfg.labeled_fraction:g}, mixup {cfg.mixup_alpha:g}")
        print(table.drop(columns=["run_id"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0 if all(r.status == "completed" for r in result.fits.values()) else 1


def _compare(args: argparse.Namespace) -> int:
    from .compare import Sweep
    from .sweep_stats import paired_gain, summarize
    from .config import DistillConfig
    from .settings import DEFAULT_TEACHERS

    students = [s.strip() for s in args.students.split(";" if ";" in args.students else ",") if s.strip()]
    if ";" not in args.students:  # "mlp:4,mlp:16": re-join sizes split at their commas
        joined: list[str] = []
        for part in students:
            if ":" in part or not joined:
                joined.append(part)
            else:
                joined[-1] += "," + part
        students = joined
    temps = [float(t) for t in args.temperatures.split(",")] if args.temperatures else None
    cfg = DistillConfig(epochs=args.epochs, lr=args.lr, temperature=args.temperature, alpha=args.alpha,
                        labeled_fraction=args.labeled_fraction)
    sweep = Sweep(args.dataset, args.teacher or DEFAULT_TEACHERS.get(args.dataset, "mlp:256,256"), students,
                  [m.strip() for m in args.methods.split(",")], args.seeds, temps, cfg,
                  workers=args.workers, runs=args.runs, name=args.name)
    bar = None
    if not (args.json or args.quiet):
        from tqdm.auto import tqdm
        bar = tqdm(total=len(sweep.cells), desc="sweep", unit="fit")

    def progress(p: dict) -> None:
        if bar is not None:
            bar.total = p["total"]
            bar.update(1)

    df = sweep.run(on_progress=progress)
    if bar is not None:
        bar.close()
    if args.csv:
        df.to_csv(args.csv, index=False)
    summary = summarize(df)
    if args.json:
        print(json.dumps({"sweep": sweep.name, "saved": str(sweep.path), "summary": json.loads(summary.to_json(orient="records")),
                          "rows": len(df)}, indent=2))
        return 0 if not sweep.stopped else 1
    cols = [c for c in summary.columns if c in ("student", "method", "temperature", "params", "n")
            or c.endswith("_mean") or c.endswith("_std")]
    print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    methods = set(df["method"])
    if {"kd", "scratch"} <= methods and df["seed"].nunique() > 1:
        gain = paired_gain(df)
        print("\nKD - scratch on test accuracy (paired over seeds, 95% interval):")
        print(gain[["student", "n", "gain", "ci_low", "ci_high"]].to_string(index=False, float_format=lambda v: f"{v:+.4f}"))
    print(f"\nsaved to {sweep.path}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    from .runs import list_runs

    df = list_runs(args.runs)
    if args.json:
        print(df.to_json(orient="records"))
        return 0
    if not len(df):
        print("no runs yet")
        return 0
    cols = [c for c in ("run_id", "role", "status", "dataset", "val_acc", "test_acc", "params", "seconds")
            if c in df.columns]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _show(args: argparse.Namespace) -> int:
    from .runs import load_run

    rec = load_run(args.run, args.runs)
    out = {"run_id": rec.run_id, "status": rec.status, "path": str(rec.path), "config": rec.config,
           "summary": rec.summary, "events": len(rec.history)}
    print(json.dumps(out, indent=2, default=str))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_run

    facts = export_run(args.run, args.format, args.runs, args.out)
    print(json.dumps(facts, indent=2))
    return 0


def _rm(args: argparse.Namespace) -> int:
    from .runs import remove_run

    for run in args.run:
        remove_run(run, args.runs)
        print(f"removed {run}")
    return 0


def _app(args: argparse.Namespace) -> int:
    """Start the Streamlit app on this machine only (``--address 0.0.0.0`` serves a network)."""
    import pathlib
    import subprocess

    script = pathlib.Path(__file__).resolve().parent.parent / "app.py"
    if not script.exists():  # installed without the repository: run the packaged entry
        script = pathlib.Path(__file__).resolve().parent / "ui" / "streamlit_entry.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.address", args.address,
           "--server.port", str(args.port), "--server.headless", "true" if args.headless else "false",
           "--browser.gatherUsageStats", "false"]
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description="KD Workbench: knowledge distillation you can watch.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="teacher vs scratch student vs distilled student on built-in data")
    d.add_argument("--dataset", type=_dataset, default="digits", help="a built-in dataset (default: digits)")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--lr", type=float, default=3e-3)
    d.add_argument("--temperature", type=float, default=4.0)
    d.add_argument("--alpha", type=float, default=0.5, help="alpha*CE + (1-alpha)*T^2*KL")
    d.add_argument("--student-width", type=int, default=16)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true", help="print the results as JSON")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)

    k = sub.add_parser("distill", help="train a teacher, distill a student, and compare with a scratch baseline")
    src = k.add_argument_group("data")
    src.add_argument("--dataset", type=_dataset, default="digits", help="built-in dataset: digits, digits-images, mnist1d, moons, spirals")
    src.add_argument("--csv", metavar="PATH", help="your own data: a CSV file (use with --target)")
    src.add_argument("--target", metavar="COL", help="the label column of --csv")
    src.add_argument("--labeled-fraction", type=_fraction, default=1.0,
                     help="share of train labels the student may use (KD still sees every input)")
    src.add_argument("--extra-unlabeled", type=_count, default=0, metavar="N",
                     help="N generated unlabeled inputs for the teacher to label (mnist1d, moons, spirals)")
    src.add_argument("--mixup", action="store_true", help="mix transfer inputs (the teacher labels the mixes)")
    src.add_argument("--mixup-alpha", type=float, default=1.0, help="Beta(alpha, alpha) of --mixup (default 1)")
    m = k.add_argument_group("models")
    m.add_argument("--teacher", default="mlp:256,256", help="zoo spec, e.g. cnn2d, cnn1d:64,64,64, mlp:256,256")
    m.add_argument("--student", default="mlp:16", help="zoo spec, e.g. mlp:16 or mlp:64,32")
    t = k.add_argument_group("training")
    t.add_argument("--temperature", type=float, default=4.0)
    t.add_argument("--alpha", type=float, default=0.5, help="alpha*CE + (1-alpha)*T^2*KL")
    t.add_argument("--epochs", type=_positive_int, default=20)
    t.add_argument("--teacher-epochs", type=_positive_int, default=None, help="default: --epochs")
    t.add_argument("--batch-size", type=_positive_int, default=64)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--teacher-lr", type=float, default=None, help="default: --lr")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    t.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None, help="default fp32")
    o = k.add_argument_group("output")
    o.add_argument("--runs", metavar="DIR", help="runs folder (default: $WORKBENCH_RUNS, else ./runs)")
    o.add_argument("--retrain", action="store_true", help="train the teacher even if it is in the cache")
    o.add_argument("--json", action="store_true", help="print the summary as JSON")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    k.set_defaults(func=_distill)

    c = sub.add_parser("compare", help="sweep student sizes x methods x seeds sharing one teacher")
    c.add_argument("--dataset", type=_dataset, default="digits")
    c.add_argument("--teacher", default=None, help="zoo spec (default: the dataset's default teacher)")
    c.add_argument("--students", default="mlp:4,mlp:16,mlp:64",
                   help="zoo specs, e.g. mlp:4,mlp:16,mlp:64 (use ';' between specs with several sizes: mlp:64,32;mlp:8)")
    c.add_argument("--methods", default="scratch,kd", help="scratch, kd, mse (comma-separated)")
    c.add_argument("--seeds", type=_positive_int, default=3)
    c.add_argument("--temperatures", default=None, help="e.g. 1,2,4,8 (KD methods)")
    c.add_argument("--temperature", type=float, default=4.0)
    c.add_argument("--alpha", type=float, default=0.5)
    c.add_argument("--labeled-fraction", type=_fraction, default=1.0)
    c.add_argument("--epochs", type=_positive_int, default=20)
    c.add_argument("--lr", type=float, default=3e-3)
    c.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    c.add_argument("--name", default=None, help="sweep name (resuming uses the same name)")
    c.add_argument("--runs", metavar="DIR", help="runs folder (default: $WORKBENCH_RUNS, else ./runs)")
    c.add_argument("--csv", metavar="PATH", help="also write the result table here")
    c.add_argument("--json", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_compare)

    a = sub.add_parser("app", help="start the Streamlit app (bound to 127.0.0.1)")
    a.add_argument("--address", default="127.0.0.1", help="0.0.0.0 serves every network interface: do it deliberately")
    a.add_argument("--port", type=int, default=8501)
    a.add_argument("--headless", action="store_true", help="do not open a browser")
    a.set_defaults(func=_app)

    r = sub.add_parser("runs", help="list runs, newest first")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_runs)
    sh = sub.add_parser("show", help="a run's config and summary")
    sh.add_argument("run")
    sh.set_defaults(func=_show)
    ex = sub.add_parser("export", help="export a run's model (torch.export .pt2, or state_dict + spec)")
    ex.add_argument("run")
    ex.add_argument("--format", choices=["export", "state_dict"], default="export")
    ex.add_argument("--out", help="output file (default: inside the run folder)")
    ex.set_defaults(func=_export)
    rm = sub.add_parser("rm", help="delete runs")
    rm.add_argument("run", nargs="+")
    rm.set_defaults(func=_rm)
    for cmd in (r, sh, ex, rm):
        cmd.add_argument("--runs", metavar="DIR", help="runs folder (default: $WORKBENCH_RUNS, else ./runs)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # bad input: a clear message, not a traceback
        print(f"workbench {args.command}: error: {e}", file=sys.stderr)
        return 2
