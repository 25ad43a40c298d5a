"""Reproduce what distillation achieves here: regenerates ``docs/results.md`` and
``docs/results.json`` (every headline figure as name -> mean, std, n).

    python -m workbench.reports.results            # the full page (docs/), run time printed
    python -m workbench.reports.results --quick    # the whole pipeline, tiny, into a temp folder
    python -m workbench.reports.results --sections lm   # rerun some sections; the page keeps the others

Temperatures and weights are picked on the validation split, never on test; students run over
several seeds and the KD-vs-scratch gain is paired by seed with a 95% t-interval.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..data.datasets import load_dataset
from ..data.text import from_text, shakespeare_text
from ..engine.config import DistillConfig
from ..experiment import Experiment
from ..sweeps.plots import accuracy_vs_size, bars_with_lines, gain_figure, mean_curve, temperature_heatmap
from ..sweeps.stats import best_temperature, paired_gain, summarize
from ..sweeps.sweep import Sweep

FULL = dict(
    seeds=5,
    teacher_seeds=3,
    mnist_teacher_epochs=150,
    mnist_student_epochs=100,
    n_extra=50000,
    extra_sizes=[5000, 20000],
    digits_teacher_epochs=60,
    digits_student_epochs=100,
    sizes=["mlp:4", "mlp:8", "mlp:16", "mlp:32", "mlp:64"],
    temps=[1.0, 2.0, 4.0, 8.0, 16.0],
    grid_t=[2.0, 4.0, 8.0],
    grid_alpha=[0.1, 0.5],
    temp_seeds=3,
    lm_chars=None,  # the whole corpus
    lm_teacher="gpt:4,128",
    lm_student="gpt:2,64",
    lm_teacher_steps=2000,
    lm_student_steps=1000,
    lm_seeds=3,
)
QUICK = dict(
    seeds=2,
    teacher_seeds=2,
    mnist_teacher_epochs=3,
    mnist_student_epochs=2,
    n_extra=500,
    extra_sizes=[200],
    digits_teacher_epochs=3,
    digits_student_epochs=2,
    sizes=["mlp:4", "mlp:16"],
    temps=[1.0, 4.0],
    grid_t=[4.0],
    grid_alpha=[0.1, 0.5],
    temp_seeds=2,
    lm_chars=40_000,
    lm_teacher="gpt:1,32",
    lm_student="gpt:1,16",
    lm_teacher_steps=40,
    lm_student_steps=10,
    lm_seeds=2,
)
SECTIONS = ("mnist1d", "digits", "lm")
MNIST_TEACHER = "cnn1d:64,64,64"
DIGITS_TEACHER = {"family": "cnn2d", "channels": (32, 64), "dropout": 0.3}


class Report:
    """Markdown lines and headline figures (name -> mean, std, n)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.figures: dict[str, dict[str, float]] = {}
        self.charts: list[tuple[str, Any]] = []  # (title, plotly figure) for results-figures.html

    def chart(self, title: str, fig: Any) -> None:
        """Keep a plotly figure for the figures page and link it from here."""
        self.charts.append((title, fig))
        n = len(self.charts)
        self.add(f"Figure {n}: [{title}](results-figures.html#figure-{n}) (interactive, offline).", "")

    def figures_html(self) -> str:
        """One self-contained HTML page with every chart (plotly.js embedded once: works offline)."""
        parts = [
            f'<h2 id="figure-{i}">Figure {i}: {html.escape(title)}</h2>'
            + fig.to_html(full_html=False, include_plotlyjs=(i == 1))
            for i, (title, fig) in enumerate(self.charts, 1)
        ]
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>KD Workbench results: figures</title>"
            "</head><body style='font-family: sans-serif'><h1>What distillation achieves here: figures</h1>"
            "<p>Regenerated with <code>results.md</code> by <code>python -m workbench.reports.results</code>.</p>"
            + "\n".join(parts)
            + "</body></html>\n"
        )

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def figure(self, name: str, values: pd.Series) -> dict[str, float]:
        v = values.dropna().astype(float)
        self.figures[name] = {"mean": float(v.mean()), "std": float(v.std()) if len(v) > 1 else math.nan, "n": len(v)}
        return self.figures[name]

    def table(self, df: pd.DataFrame) -> None:
        self.add(df.to_markdown(index=False, floatfmt=".4f"), "")  # pandas' to_markdown needs tabulate


def _pm(f: dict[str, float]) -> str:
    return (
        f"{100 * f['mean']:.1f} ± {100 * f['std']:.1f} (n={f['n']})" if f["n"] > 1 else f"{100 * f['mean']:.1f} (n=1)"
    )


def pick_on_val(
    data: Any,
    teacher: Any,
    student: str,
    base: DistillConfig,
    tcfg: DistillConfig,
    method: dict,
    p: dict,
    workers: int,
    runs: Path,
) -> tuple[float, float, pd.DataFrame]:
    """The (temperature, alpha) with the best val accuracy for ``method`` (seed 0)."""
    methods = [{**method, "name": f"{method['name']}-a{a:g}", "alpha": a} for a in p["grid_alpha"]]
    df = Sweep(
        data, teacher, [student], methods, [0], p["grid_t"], base, tcfg, workers=workers, runs=runs, record=False
    ).run()
    best = df.sort_values("val_acc", ascending=False, kind="stable").iloc[0]
    return float(best["temperature"]), float(best["method"].rsplit("-a", 1)[1]), df


def teacher_spread(data: Any, spec: Any, tcfg: DistillConfig, seeds: int, rep: Report, name: str) -> pd.DataFrame:
    """Train (or load) the teacher under several seeds: its own seed spread."""
    rows = []
    for seed in range(seeds):
        exp = Experiment(data, spec, "mlp:4", tcfg.replace(seed=seed), tcfg.replace(seed=seed), baseline=False)
        res = exp.prepare_teacher()
        rows.append({"seed": seed, "val_acc": res.summary.get("val_acc"), "test_acc": res.summary.get("test_acc")})
    df = pd.DataFrame(rows)
    rep.figure(f"{name}.teacher.test_acc", df["test_acc"])
    return df


def mnist1d(p: dict, rep: Report, workers: int, runs: Path) -> None:
    data = load_dataset("mnist1d", seed=0, n_unlabeled=p["n_extra"])
    # the paper's CNN recipe (Adam 1e-2, batch 100, 6000 steps = 150 epochs of 4000), 64 channels
    tcfg = DistillConfig(
        epochs=p["mnist_teacher_epochs"],
        lr=1e-2,
        batch_size=100,
        weight_decay=0.0,
        w_ce=1.0,
        w_kd=0.0,
        use_unlabeled=False,
    )
    spread = teacher_spread(data, MNIST_TEACHER, tcfg, p["teacher_seeds"], rep, "mnist1d")
    base = DistillConfig(epochs=p["mnist_student_epochs"], lr=3e-3, batch_size=64)
    T, alpha, _ = pick_on_val(data, MNIST_TEACHER, "mlp:128,128", base, tcfg, {"name": "kd-extra"}, p, workers, runs)
    base = base.replace(temperature=T, alpha=alpha)
    methods = [
        {"name": "scratch", "use_unlabeled": False},
        {"name": "kd", "use_unlabeled": False},
        {"name": "kd-mixup", "use_unlabeled": False, "mixup_alpha": 1.0},
        {"name": "kd-extra"},
        {"name": "scratch-10%", "teacher": False, "w_ce": 1.0, "w_kd": 0.0, "alpha": None, "labeled_fraction": 0.1},
        {"name": "kd-10%-extra", "labeled_fraction": 0.1},
    ]
    df = Sweep(
        data,
        MNIST_TEACHER,
        ["mlp:128,128"],
        methods,
        p["seeds"],
        None,
        base,
        tcfg,
        workers=workers,
        runs=runs,
        name="results-mnist1d",
        record=False,
    ).run()
    rep.add(
        "## MNIST-1D: the transfer set is where KD earns its keep",
        "",
        f"Teacher `{MNIST_TEACHER}` ({p['mnist_teacher_epochs']} epochs, Adam 1e-2, batch 100, no weight "
        f"decay: the paper's CNN recipe with 64 channels) over {len(spread)} seeds: test accuracy {_pm(rep.figures['mnist1d.teacher.test_acc'])} "
        f"(the paper's CNN: 94%); students learn from the seed-0 one ({100 * spread.test_acc.iloc[0]:.1f}%). "
        f"Data: the published split (4000 train / 1000 test, `data_seed=42`) plus {len(data.val)} validation "
        "rows generated from another seed (every train row stays a train row, as in the paper). "
        "Student: MLP 40-128-128-10, Adam 3e-3, batch 64, "
        f"{p['mnist_student_epochs']} epochs' worth of steps of the labeled set for every method. "
        f"T={T:g} and alpha={alpha:g} were picked on the validation split (grid T in {p['grid_t']}, "
        f"alpha in {p['grid_alpha']}, seed 0, KD with generated inputs).",
        "",
    )
    rows, bars = [], []
    for m in [x["name"] for x in methods]:
        f = rep.figure(f"mnist1d.{m}.test_acc", df[df.method == m]["test_acc"])
        rows.append({"method": m, "test accuracy %": _pm(f)})
        bars.append((m, 100 * f["mean"], 100 * f["std"]))
    rep.table(pd.DataFrame(rows))
    rep.chart(
        "MNIST-1D: test accuracy by transfer set (mean ± std over seeds)",
        bars_with_lines(
            bars,
            "test accuracy %",
            [
                ("published MLP", 68.0),
                ("published CNN", 94.0),
                ("our teacher", 100 * rep.figures["mnist1d.teacher.test_acc"]["mean"]),
            ],
        ),
    )
    rep.add(
        "Published (Greydanus, *Scaling down deep learning*): logistic regression 32%, MLP 68%, CNN 94%, "
        "GRU 91%, human 96%. Methods: `kd` = the labeled train set, soft-labeled by the teacher "
        f"as well; `kd-mixup` = teacher queried on mixed inputs; `kd-extra` = plus {p['n_extra']} generated "
        "inputs labeled by the teacher; `10%` = only 10% of the labels for CE.",
        "",
    )
    gains = [paired_gain(df, m, "scratch") for m in ("kd", "kd-mixup", "kd-extra")]
    gains.append(paired_gain(df, "kd-10%-extra", "scratch-10%"))
    g = pd.concat(gains)[["method", "baseline", "n", "gain", "ci_low", "ci_high"]]
    rep.add("Paired gain over the matching scratch baseline (test accuracy, 95% interval over seeds):", "")
    rep.table(g)
    transfer_set_size(p, rep, workers, runs, base, tcfg)


def transfer_set_size(p: dict, rep: Report, workers: int, runs: Path, base: DistillConfig, tcfg: DistillConfig) -> None:
    """kd-extra with fewer generated inputs (the same T, alpha and step budget): how the student
    grows with the transfer set."""
    rows = [{"generated inputs": 0, "test accuracy %": _pm(rep.figures["mnist1d.kd.test_acc"])}]
    for n in p["extra_sizes"]:
        data = load_dataset("mnist1d", seed=0, n_unlabeled=n)
        df = Sweep(
            data,
            MNIST_TEACHER,
            ["mlp:128,128"],
            [{"name": "kd-extra"}],
            p["seeds"],
            None,
            base,
            tcfg,
            workers=workers,
            runs=runs,
            name=f"results-mnist1d-extra-{n}",
            record=False,
        ).run()
        rows.append(
            {
                "generated inputs": n,
                "test accuracy %": _pm(rep.figure(f"mnist1d.kd-extra-{n}.test_acc", df["test_acc"])),
            }
        )
    rows.append({"generated inputs": p["n_extra"], "test accuracy %": _pm(rep.figures["mnist1d.kd-extra.test_acc"])})
    rep.add(
        "### The bigger the transfer set, the better the student",
        "",
        "The same student, teacher, T, alpha and step budget, with more generated inputs for the teacher "
        "to label (0 is `kd`: the labeled train inputs alone; each size is its own generated set):",
        "",
    )
    rep.table(pd.DataFrame(rows))
    sizes = [0, *p["extra_sizes"], p["n_extra"]]
    names = [
        "mnist1d.kd.test_acc",
        *[f"mnist1d.kd-extra-{n}.test_acc" for n in p["extra_sizes"]],
        "mnist1d.kd-extra.test_acc",
    ]
    fig = mean_curve(
        sizes,
        [100 * rep.figures[k]["mean"] for k in names],
        [100 * rep.figures[k]["std"] for k in names],
        "generated inputs labeled by the teacher",
        "student test accuracy %",
    )
    rep.chart("MNIST-1D: the student grows with the transfer set", fig)


def digits(p: dict, rep: Report, workers: int, runs: Path) -> None:
    data = load_dataset("digits-images", seed=0)
    tcfg = DistillConfig(epochs=p["digits_teacher_epochs"], lr=1e-3, w_ce=1.0, w_kd=0.0)
    spread = teacher_spread(data, DIGITS_TEACHER, tcfg, p["teacher_seeds"], rep, "digits")
    # label_seed=0: every student seed, and the fair teacher, use the very same 10% of the labels
    base = DistillConfig(epochs=p["digits_student_epochs"], lr=3e-3, batch_size=64, labeled_fraction=0.1, label_seed=0)
    T, alpha, _ = pick_on_val(data, DIGITS_TEACHER, "mlp:16", base, tcfg, {"name": "kd"}, p, workers, runs)
    base = base.replace(temperature=T, alpha=alpha)
    rep.add(
        "## digits with 10% of the labels: scratch vs KD vs logit MSE across student sizes",
        "",
        f"Teacher: 2-D CNN (32/64 channels, dropout 0.3), test accuracy {_pm(rep.figures['digits.teacher.test_acc'])} "
        f"over its seeds; students learn from the seed-0 one ({100 * spread.test_acc.iloc[0]:.1f}%). Students: MLPs on the 8x8 images, the same 10% of the labels for CE at every "
        f"seed (`label_seed=0`), KD on every train input; T={T:g}, alpha={alpha:g} picked on val (mlp:16, seed 0).",
        "",
    )
    for label, teacher_cfg in (
        ("teacher trained on all labels", tcfg),
        ("teacher trained on the same 10% (the fair control)", tcfg.replace(labeled_fraction=0.1, label_seed=0)),
    ):
        tag = "all" if teacher_cfg is tcfg else "fair"
        df = Sweep(
            data,
            DIGITS_TEACHER,
            p["sizes"],
            ["scratch", "kd", "mse"],
            p["seeds"],
            None,
            base,
            teacher_cfg,
            workers=workers,
            runs=runs,
            name=f"results-digits10-{tag}",
            record=False,
        ).run()
        s = summarize(df)
        for r in s.itertuples():
            rep.figures[f"digits10.{tag}.{r.student}.{r.method}.test_acc"] = {
                "mean": float(r.test_acc_mean),
                "std": float(r.test_acc_std),
                "n": int(r.n),
            }
        rep.add(f"### {label}", "")
        rep.table(s[["student", "method", "params", "n", "test_acc_mean", "test_acc_std"]])
        gain = paired_gain(df, "kd", "scratch")[["student", "n", "gain", "ci_low", "ci_high"]]
        rep.add("KD - scratch (paired, 95% interval):", "")
        rep.table(gain)
        rep.chart(f"digits, 10% labels, {label}: test accuracy vs student size", accuracy_vs_size(s))
        if tag == "all":
            rep.figure("digits10.all.kd_minus_scratch.mean_over_sizes", gain["gain"])

    # Hinton's temperature finding: best T per width, picked on val.
    df = Sweep(
        data,
        DIGITS_TEACHER,
        p["sizes"],
        [{"name": "kd", "alpha": 0.1}],
        p["temp_seeds"],
        p["temps"],
        base,
        tcfg,
        workers=workers,
        runs=runs,
        name="results-digits-temperature",
        record=False,
    ).run()
    best = best_temperature(df, "kd")[["student", "temperature", "val_acc", "test_acc"]]
    rep.add(
        "## Hinton's temperature finding: the best temperature by student width",
        "",
        f"KD with alpha=0.1 on digits with 10% labels, T in {p['temps']}, {p['temp_seeds']} seeds; best T by mean "
        "val accuracy (Hinton et al. 2015: with 300+ units every T above 8 did about as well; with 30 units "
        "T of 2.5 to 4 worked best).",
        "",
    )
    order = {s: i for i, s in enumerate(p["sizes"])}  # by width, not alphabetically
    pivot = df.pivot_table(index="student", columns="temperature", values="val_acc", aggfunc="mean")
    rep.table(pivot.sort_index(key=lambda idx: idx.map(order)).reset_index())
    rep.table(
        best.sort_values("student", key=lambda col: col.map(order)).rename(columns={"temperature": "best T (val)"})
    )
    rep.chart("digits: val accuracy by temperature and student width (star: best T)", temperature_heatmap(df))

    # The honest negative result: KD on the full labeled set the teacher was trained on.
    full = base.replace(labeled_fraction=1.0)
    df = Sweep(
        data,
        DIGITS_TEACHER,
        p["sizes"],
        ["scratch", "kd"],
        p["seeds"],
        None,
        full,
        tcfg,
        workers=workers,
        runs=runs,
        name="results-digits-full",
        record=False,
    ).run()
    full_gain = paired_gain(df, "kd", "scratch")
    gain = full_gain[["student", "n", "gain", "ci_low", "ci_high", "method_mean", "baseline_mean"]]
    rep.figure("digits.full_labels.kd_minus_scratch.mean_over_sizes", gain["gain"])
    rep.add(
        "## The honest negative result: KD on the full labeled set",
        "",
        "Same teacher, students and step budget, but every label available to the student: the teacher, "
        "trained to near-perfect train accuracy on these same labels, passes little beyond them.",
        "",
    )
    rep.table(gain)
    rep.chart("digits, all labels: KD - scratch (paired, 95% interval)", gain_figure(full_gain))


def language_model(p: dict, rep: Report, runs: Path) -> None:
    """A GPT teacher on Shakespeare (time and val loss against nanoGPT's CPU figure), then a smaller GPT
    distilled vs scratch with 10% and with all of the text labelled, paired by seed (bits per character)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: 2 threads on 2 busy cores ran a GPT step ~14x slower than 1 here
    try:
        _language_model(p, rep, runs)
    finally:
        torch.set_num_threads(before)


def _language_model(p: dict, rep: Report, runs: Path) -> None:
    chars = p["lm_chars"]
    data = load_dataset("shakespeare-char") if chars is None else from_text(shakespeare_text()[:chars], name="lm")
    steps = dict(epochs=10_000, eval_every=max(p["lm_student_steps"] // 4, 1))
    tcfg = DistillConfig.for_text(max_steps=p["lm_teacher_steps"], **steps)
    cache = runs / "lm-teacher-cache"  # a fresh cache: the first experiment trains the teacher, and is timed
    rows, teacher = [], None
    for fraction in (0.1, 1.0):
        for seed in range(p["lm_seeds"]):
            cfg = DistillConfig.for_text(
                max_steps=p["lm_student_steps"], seed=seed, labeled_fraction=fraction, label_seed=0, **steps
            )
            res = Experiment(data, p["lm_teacher"], p["lm_student"], cfg, tcfg, runs=False, cache_dir=cache).run()
            teacher = teacher or res.teacher
            for fit, method in ((res.student, "kd"), (res.baseline, "scratch")):
                s = fit.summary
                rows.append(
                    dict(
                        student=p["lm_student"],
                        labelled=fraction,
                        method=method,
                        seed=seed,
                        status=fit.status,
                        temperature=None,
                        test_bpc=s.get("test_bpc"),
                        val_bpc=s.get("val_bpc"),
                        seconds=s.get("seconds"),
                    )
                )
    df = pd.DataFrame(rows)
    w = cfg.weights
    ts = teacher.summary
    nats = rep.figure("lm.teacher.val_loss_nats", pd.Series([ts.get("val_loss")]))["mean"]
    minutes = ts.get("seconds", math.nan) / 60
    rep.figures["lm.teacher.minutes"] = {"mean": minutes, "std": math.nan, "n": 1}
    rep.add(
        "## A language model: a GPT teacher and a smaller GPT student on Shakespeare",
        "",
        f"Character-level next-token prediction on {'the built-in corpus' if chars is None else f'{chars:,} characters of it'}"
        f" (blocks of {data.train.x.shape[1]}), in bits per character (bpc, lower is better; nats / ln 2). "
        f"Teacher `{p['lm_teacher']}`: {p['lm_teacher_steps']} steps in {minutes:.1f} minutes, val loss {nats:.3f} nats "
        f"per character ({nats / math.log(2):.3f} bpc); nanoGPT's CPU figure for a 4-layer width-128 model is about "
        f"1.88 nats. Student `{p['lm_student']}`: {p['lm_student_steps']} steps, KD term `{w.divergence}` at "
        f"T={w.temperature:g} weighted {w.kd:g}, the labels' cross-entropy {w.ce:g}; the scratch baseline has the same "
        f"labels and steps. {p['lm_seeds']} seeds; "
        "with 10% labelled, the CE term sees the same 10% of the blocks at every seed (`label_seed=0`) and the "
        "KD term every block.",
        "",
    )
    s = df[df.status == "completed"].groupby(["labelled", "method"])["test_bpc"].agg(["mean", "std", "count"])
    rep.table(s.reset_index().rename(columns={"mean": "test_bpc_mean", "std": "test_bpc_std", "count": "n"}))
    gains = []
    for fraction, part in df.groupby("labelled"):
        g = paired_gain(part, "scratch", "kd", metric="test_bpc").iloc[0]  # scratch - kd: bits KD saves
        rep.figures[f"lm.labelled{fraction:g}.bpc_saved_by_kd"] = {
            "mean": float(g["gain"]),
            "std": math.nan,
            "n": int(g["n"]),
        }
        gains.append(
            {
                "labelled": fraction,
                "n": g["n"],
                "bpc saved by KD": g["gain"],
                "ci_low": g["ci_low"],
                "ci_high": g["ci_high"],
            }
        )
    rep.add("Bits per character KD saves over scratch (scratch - KD, paired by seed, 95% interval):", "")
    rep.table(pd.DataFrame(gains))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings, written to a temporary folder")
    ap.add_argument("--out", default=None, help="output folder (default: docs/, or a temp folder with --quick)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="rerun only these sections; an existing page keeps the others (default: all)",
    )
    args = ap.parse_args(argv)
    charted = sorted(set(args.sections) & {"mnist1d", "digits"})
    if charted and set(args.sections) != set(SECTIONS):
        ap.error(
            f"--sections: {', '.join(charted)} draw figures numbered across the whole page; "
            "rerun every section (no --sections), or only: lm"
        )
    p = QUICK if args.quick else FULL
    out = Path(args.out or (tempfile.mkdtemp(prefix="kd-results-") if args.quick else "docs"))
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs" if args.quick else Path(tempfile.mkdtemp(prefix="kd-results-runs-"))
    everything = set(args.sections) == set(SECTIONS)
    command = "python -m workbench.reports.results" + (" --quick" if args.quick else "")
    sections: dict[str, list[str]] = {}
    figures: dict[str, Any] = {}
    t_all = time.perf_counter()
    rep = Report()
    for name in SECTIONS:
        if name not in args.sections:
            continue
        t0, start = time.perf_counter(), len(rep.lines)
        if name == "mnist1d":
            mnist1d(p, rep, args.workers, runs)
        elif name == "digits":
            digits(p, rep, args.workers, runs)
        else:
            language_model(p, rep, runs)
            rep.add(
                f"(This section: `{command} --sections lm`, {(time.perf_counter() - t0) / 60:.1f} minutes on "
                f"{os.cpu_count()} CPU cores.)",
                "",
            )
        sections[name] = rep.lines[start:]
    seconds = time.perf_counter() - t_all
    page, json_path = out / "results.md", out / "results.json"
    if not everything and page.exists() and json_path.exists():  # keep the sections not rerun
        kept = split_sections(page.read_text())
        sections = {name: sections.get(name, kept.get(name, [])) for name in SECTIONS}
        head = kept.get("", [])
        figures = json.loads(json_path.read_text()).get("figures", {})
        seconds = json.loads(json_path.read_text()).get("seconds", seconds)
    else:
        head = [
            "# What distillation achieves here",
            "",
            f"Regenerated by `{command}` in {seconds / 60:.1f} minutes on {os.cpu_count()} CPU cores. Numbers are "
            "test accuracies (bits per character for the language model), mean ± std over seeds; temperatures "
            "and weights were chosen on the validation split.",
            "",
        ]
    figures.update(rep.figures)
    body = [line for name in SECTIONS if sections.get(name) for line in [f"<!-- section: {name} -->", *sections[name]]]
    page.write_text("\n".join(head + body) + "\n")
    json_path.write_text(json.dumps({"seconds": seconds, "figures": figures}, indent=2))
    if everything:  # (a partial rerun is of sections without charts: the figures page stays as it is)
        (out / "results-figures.html").write_text(rep.figures_html())
    print(f"wrote {page} and {json_path} in {time.perf_counter() - t_all:.0f} s")
    return 0


def split_sections(page: str) -> dict[str, list[str]]:
    """The page's lines per section (``""``: the head before the first one), by the section markers;
    a page written before the markers: the head, then its sections by their first heading."""
    out: dict[str, list[str]] = {"": []}
    current = ""
    starts = {"## MNIST-1D": "mnist1d", "## digits with 10%": "digits", "## A language model": "lm"}
    for line in page.splitlines():
        if line.startswith("<!-- section: ") and line.endswith(" -->"):
            current = line[len("<!-- section: ") : -len(" -->")]
            out[current] = []
            continue
        legacy = next((name for head, name in starts.items() if line.startswith(head)), None)
        if legacy and legacy not in out:
            current = legacy
            out[current] = []
        out[current].append(line)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
