"""The ``workbench`` command.

    workbench app [--address 127.0.0.1] [--port 8501] [--open]
    workbench demo [--dataset digits] [--epochs 30] [--json]
    workbench distill --dataset digits --teacher cnn2d|run:ID|FILE --student mlp:16|run:ID|FILE [--trusted]
                      --temperature 4 --alpha 0.5 --epochs 20 [--labeled-fraction 0.1] [--extra-unlabeled N] [--mixup]
                      [--csv PATH --target COL] [--runs DIR] [--seed S] [--json]
    workbench distill --dataset shakespeare-char (or --text FILE.txt) --teacher gpt:2,64 --student gpt:1,32
                      [--divergence topk_kl] [--beta 0.5] [--top-k 16|auto|full] [--sample-tokens 100]
                      [--generated-blocks N [--generate-temperature 1]] [--on-policy 0.25]
    workbench compare --students mlp:4,mlp:16 --methods scratch,kd [--temperatures 1,2,4,8]
    workbench compare --dataset shakespeare-char (or --text FILE.txt) --students "gpt:1,16;gpt:2,32"

``demo`` trains a teacher, a scratch student and a distilled student on built-in data and
prints their test accuracies side by side; ``distill`` does the same with every setting open;
``compare`` prints mean ± std per student and method, the paired KD gain and the Pareto front of
size vs test accuracy (text: bits per character, lower is better). Every flag is checked when
it is parsed, and every input error is one line naming the flag or file, before any training.
Exit codes: 0 all runs completed, 1 a run did not complete, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# Models past this many parameters are refused unless --force: a typo like mlp:100000,100000
# (10 billion parameters) would otherwise try to allocate 40 GB before anything is said.
MAX_PARAMS = 100_000_000
MAX_EXTRA_UNLABELED = 1_000_000
MAX_SEEDS = 1000
DEMO_TEACHER = "mlp:256,256"
TABLE_TEACHER, TABLE_STUDENT = "mlp:256,256", "mlp:16"
TEXT_TEACHER, TEXT_STUDENT = "gpt:2,64", "gpt:1,32"  # text data: causal transformers from the zoo
# distill's training flags default by the kind of data (None on the command line: not given)
TABLE_TRAINING = {"epochs": 20, "batch_size": 64, "lr": 3e-3, "temperature": 4.0}
TABLE_STUDENTS = "mlp:4,mlp:16,mlp:64"
TEXT_STUDENTS = ["gpt:1,16", "gpt:1,32", "gpt:2,32"]  # compare's default GPT student sizes
_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class _UsageError(Exception):
    """A flag argparse refused (raised instead of printing the usage block and exiting)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


# -- argument types: each checks one flag and says what is valid -------------------------------


def _type(check: Callable[[str], Any], valid: str) -> Callable[[str], Any]:
    """An argparse type: ``check(text)`` returns the value, or fails (any error) with ``valid``."""

    def parse(text: str) -> Any:
        try:
            value = check(text)
        except (ValueError, TypeError, OverflowError):
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid; expected {valid}")
        return value

    return parse


def _finite(text: str) -> float | None:
    v = float(text)
    return v if math.isfinite(v) else None


def _in_range(low: float, high: float = math.inf, open_low: bool = False) -> Callable[[str], float | None]:
    def check(text: str) -> float | None:
        v = _finite(text)
        return v if v is not None and (low < v if open_low else low <= v) and v <= high else None

    return check


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int | None]:
    def check(text: str) -> int | None:
        v = int(text)
        return v if v >= low and (high is None or v <= high) else None

    return check


_positive = _type(_in_range(0, open_low=True), "a number > 0")
_alpha = _type(_in_range(0, 1), "a number in [0, 1] (alpha*CE + (1-alpha)*T^2*KL)")
_fraction = _type(_in_range(0, 1, open_low=True), "a fraction in (0, 1]")
_beta = _type(_in_range(0, 1), "a number in [0, 1] (JSD's weight of the teacher: 0 forward KL, 1 reverse KL)")
_share = _type(_in_range(0, 1), "a share in [0, 1] (0: off)")
_block = _type(_int_at_least(2, 4096), "a block size in [2, 4096] (characters per training block)")
_positive_int = _type(_int_at_least(1), "an integer >= 1")
_count = _type(_int_at_least(0), "an integer >= 0")
_seed = _type(_int_at_least(0, 2**32 - 1), "an integer in [0, 2**32 - 1]")
_seeds = _type(_int_at_least(1, MAX_SEEDS), f"a number of seeds in [1, {MAX_SEEDS}]")
_extra = _type(_int_at_least(0, MAX_EXTRA_UNLABELED), f"an integer in [0, {MAX_EXTRA_UNLABELED:,}]")
_port = _type(_int_at_least(1, 65535), "a port number in [1, 65535]")
_device = _type(lambda t: t if _DEVICE_RE.fullmatch(t) else None, "auto, cpu, cuda, cuda:N or mps")
_name = _type(
    lambda t: t if _NAME_RE.fullmatch(t) else None,
    "a name of letters, digits, '.', '_' or '-' (at most 100, starting with a letter or digit)",
)
_address = _type(
    lambda t: t if t and t.isprintable() and " " not in t else None, "a host address such as 127.0.0.1 or 0.0.0.0"
)


def _temperatures(text: str) -> list[float] | None:
    temps = [_in_range(0, open_low=True)(t) if t.strip() else None for t in text.split(",")]
    return None if None in temps else temps


_temperature_list = _type(_temperatures, "temperatures > 0 separated by commas, e.g. 1,2,4,8")


def _dataset(text: str) -> str:
    from .data.datasets import list_datasets

    if text not in list_datasets("all"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a built-in dataset; valid: {', '.join(list_datasets('all'))} "
            "(or your own file with --csv PATH --target COL, or --text FILE.txt)"
        )
    return text


def _divergence(text: str) -> str:
    from .engine.config import KD_DIVERGENCES

    if text not in KD_DIVERGENCES:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; expected one of {', '.join(KD_DIVERGENCES)}")
    return text


def _top_k(text: str) -> int | str:
    """--top-k: an integer k >= 1, 'auto' or 'full' (every class: teacher_top_k=None)."""
    if text in ("auto", "full"):
        return text
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is invalid; expected an integer k >= 1 (cache the teacher's k largest logits per "
            "position), 'full' (every class) or 'auto' (full while it fits 64 MB, else the top 16)"
        )
    return k


def _model(text: str) -> str:
    from .models.zoo import parse_model

    try:
        parse_model(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


_SOURCE_HELP = (
    "a zoo spec (mlp:16), run:ID, a .pt/.pth/.safetensors file with its spec, a Hugging Face folder, "
    "or with --trusted a .pt2/.ts program"
)


def _model_or_source(text: str) -> str:
    """A zoo spec, or a model to load (checked here for its form; loaded and checked against the data later)."""
    from .experiment import is_source
    from .store.runs import RUN_ID_RULE, is_run_id

    if not is_source(text):
        return _model(text)
    if text.startswith("run:"):
        if not is_run_id(text[len("run:") :]):
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid run:ID; the id must be {RUN_ID_RULE}")
    elif not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text!r}: no such file or folder; expected {_SOURCE_HELP}")
    return text


def _students(text: str) -> list[str]:
    """'mlp:4,mlp:16' (sizes re-joined at their commas) or 'mlp:64,32;mlp:8' -> a list of specs."""
    parts = [s.strip() for s in text.split(";" if ";" in text else ",") if s.strip()]
    if ";" not in text:
        joined: list[str] = []
        for part in parts:
            if ":" in part or not joined:
                joined.append(part)
            else:
                joined[-1] += "," + part
        parts = joined
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; expected zoo specs like mlp:4,mlp:16")
    return [_model(p) for p in parts]


def _methods(text: str) -> list[str]:
    from .sweeps.sweep import BUILTINS

    valid = [m for m in BUILTINS if m != "hints"]  # hints need layer names: Python only
    names = [m.strip() for m in text.split(",")]
    bad = [m for m in names if m not in valid]
    if bad or len(set(names)) != len(names):
        what = f"{bad[0]!r} is not a method" if bad else "a method is repeated"
        raise argparse.ArgumentTypeError(f"{what}; valid: {', '.join(valid)} (comma-separated, each once)")
    return names


def _folder(text: str) -> Path:
    from .store.cache import folder_problem

    problem = folder_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return Path(text)


def _input_file(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; expected a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file")
    return path


def _output_path(text: str) -> Path:
    """A file or folder to write (an existing folder is refused later for file formats)."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError(f"{text!r} is empty; expected a path to write")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: folder {str(path.parent)!r} does not exist")
    return path


def _output_file(text: str) -> Path:
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is an existing folder; expected a file name to write")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: folder {str(path.parent)!r} does not exist")
    return path


# -- shared steps --------------------------------------------------------------------------------


def printable(text: Any) -> str:
    """``text`` with control characters (escape sequences, newlines) shown escaped, for a terminal."""
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c)[0] == "C" else c for c in str(text)
    )


def _check_sizes(data: Any, force: bool, **models: str) -> None:
    """Refuse a model past MAX_PARAMS (counted without building it) unless ``--force``."""
    from .experiment import estimate_params, is_source

    for flag, spec in models.items():
        if is_source(spec):  # its weights exist already: there is nothing to refuse before building
            continue
        n = estimate_params(spec, data, f"--{flag.replace('_', '-')}")
        if n > MAX_PARAMS and not force:
            raise ValueError(
                f"--{flag.replace('_', '-')}: {spec!r} has {n:,} parameters, more than "
                f"{MAX_PARAMS:,}; pass --force to build it anyway"
            )


def _progress(args: argparse.Namespace, desc: str | None = None) -> list:
    from .engine.callbacks import ProgressBar

    return [] if (args.json or args.quiet) else [ProgressBar(desc=desc)]


def _acc(fit: Any) -> float | None:
    return fit.summary.get("test_acc") if fit is not None else None


def _verdict(result: Any, cfg: Any, extra_unlabeled: int = 0) -> str | None:
    """kd_verdict's one line for an experiment with a scratch baseline, else None."""
    from .verdict import kd_verdict

    return kd_verdict(
        _acc(result.student),
        _acc(result.baseline),
        labeled_fraction=cfg.labeled_fraction,
        teacher_acc=_acc(result.teacher),
        extra_unlabeled=extra_unlabeled,
        mixup=cfg.mixup_alpha > 0,
    )


def _status(result: Any) -> int:
    """0 when every fit completed, else 1, with each other fit's status and reason on stderr (the table
    only says ``error`` or ``diverged``)."""
    for role, fit in result.fits.items():
        if fit.status != "completed":
            reason = f": {printable(fit.message)}" if getattr(fit, "message", "") else ""
            print(f"{role}: {fit.status}{reason}", file=sys.stderr)
    return 0 if result.student is not None and all(r.status == "completed" for r in result.fits.values()) else 1


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


# -- commands ------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .data.datasets import load_dataset
    from .engine.config import DistillConfig
    from .experiment import Experiment
    from .models.zoo import count_params

    cfg = DistillConfig(
        epochs=args.epochs, seed=args.seed, lr=args.lr, temperature=args.temperature, alpha=args.alpha
    )  # every value is checked here, before any training
    data = load_dataset(args.dataset, seed=args.seed)
    student = f"mlp:{args.student_width}"
    _check_sizes(data, args.force, student_width=student)
    result = Experiment(data, DEMO_TEACHER, student, cfg, callbacks=_progress(args)).run()
    rows = [
        (name, fit)
        for name, fit in (
            ("teacher", result.teacher),
            ("student, scratch", result.baseline),
            ("student, distilled", result.student),
        )
        if fit is not None
    ]
    table = [
        {
            "model": name,
            "status": r.status,
            "params": count_params(r.model),
            "test_acc": _acc(r),
            "val_acc": r.summary.get("val_acc"),
            "seconds": round(r.summary.get("seconds", 0.0), 2),
            "run_id": r.run_id,
        }
        for name, r in rows
    ]
    verdict = _verdict(result, cfg)
    if args.json:
        print(json.dumps({"dataset": data.name, "config": cfg.to_dict(), "runs": table, "verdict": verdict}, indent=2))
        return _status(result)
    print(
        f"\n{data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test samples, "
        f"T={args.temperature}, alpha={args.alpha}"
    )
    print(f"{'model':22s} {'params':>8s} {'test acc':>9s} {'seconds':>8s}")
    for r in table:
        print(f"{r['model']:22s} {r['params']:8d} {_fmt(r['test_acc'], '9.4f'):>9s} {r['seconds']:8.2f}")
    if verdict:
        print(f"\n{verdict}")
    return _status(result)


def _is_text(name: str | None) -> bool:
    from .data.text import TEXT_DATASETS

    return name in TEXT_DATASETS


def _check_text_flags(args: argparse.Namespace) -> None:
    """Flags that have no meaning for text are refused, naming the flag, before anything is built."""
    if args.csv:
        raise ValueError(f"--text, --csv: give one of them (--text {args.text} or --csv {args.csv})")
    if args.text and args.dataset:
        raise ValueError(f"--dataset, --text: give one of them (--dataset {args.dataset} or --text {args.text})")
    if args.target:
        raise ValueError("--target: only used with --csv (the label column of your file); text has no labels")
    if args.extra_unlabeled:
        raise ValueError("--extra-unlabeled: generated inputs exist only for mnist1d, moons and spirals, not text")
    if args.mixup:
        raise ValueError("--mixup: token ids cannot be mixed; mixup is for tables and images, not text")


def _text_data(args: argparse.Namespace) -> Any:
    """Token data from --dataset shakespeare-char or --text FILE."""
    from .data.datasets import load_dataset
    from .data.text import from_text

    _check_text_flags(args)
    block = args.block_size or 64
    if not args.text:
        return load_dataset(args.dataset, seed=args.seed, block_size=block)
    try:
        return from_text(Path(args.text), block_size=block, name=Path(args.text).stem or "text")
    except ValueError as e:
        message = str(e)
        if message.startswith("block_size:"):
            raise ValueError(f"--block-size:{message.removeprefix('block_size:')}") from None
        raise ValueError(f"--text: {message.removeprefix('path: ').removeprefix('text: ')}") from None


def _distill_data(args: argparse.Namespace) -> Any:
    from .data.datasets import from_csv, load_dataset

    if args.text or _is_text(args.dataset):
        return _text_data(args)
    if args.block_size is not None:
        raise ValueError("--block-size: only used with text (--dataset shakespeare-char or --text FILE.txt)")
    if not args.csv:
        if args.target:
            raise ValueError("--target: only used with --csv (the label column of your file)")
        return load_dataset(args.dataset or "digits", seed=args.seed, n_unlabeled=args.extra_unlabeled)
    if args.dataset:
        raise ValueError(f"--dataset, --csv: give one of them (--dataset {args.dataset} or --csv {args.csv})")
    if not args.target:
        raise ValueError("--target: required with --csv (the name of the label column)")
    if args.extra_unlabeled:
        raise ValueError(
            "--extra-unlabeled: generated inputs exist only for built-in datasets (mnist1d, moons, spirals)"
        )
    try:
        return from_csv(args.csv, args.target, seed=args.seed)
    except ValueError as e:
        message = str(e)
        if message.startswith("target:"):
            raise ValueError(f"--target:{message.removeprefix('target:')}") from None
        raise ValueError(f"--csv: {message.removeprefix('path: ')}") from None


def _distill(args: argparse.Namespace) -> int:
    from .engine import distributed
    from .engine.config import DistillConfig
    from .experiment import Experiment, teacher_config_for

    if args.mixup_alpha is not None and not args.mixup:
        raise ValueError("--mixup-alpha: only used with --mixup")
    text = bool(args.text) or _is_text(args.dataset)
    if text:
        _check_text_flags(args)
    given = {
        k: v
        for k, v in dict(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            temperature=args.temperature,
            divergence=args.divergence,
            beta=args.beta,
            teacher_top_k=args.top_k,
            sample_tokens=args.sample_tokens,
            generated_blocks=args.generated_blocks,
            generate_temperature=args.generate_temperature,
            on_policy=args.on_policy,
        ).items()
        if v is not None
    }
    if args.beta is not None and args.divergence != "jsd":
        raise ValueError(
            f"--beta: only used with --divergence jsd (the teacher's weight in the mixture); "
            f"the divergence is {args.divergence or 'the default'}"
        )
    if given.get("teacher_top_k") == "full":
        given["teacher_top_k"] = None  # every class
        if text and "divergence" not in given:  # the text default reads top-k outputs: full ones take plain KL
            given["divergence"] = "kl"
        if given.get("divergence", "").startswith("topk_"):
            raise ValueError(
                f"--divergence: {args.divergence!r} needs the teacher's cached top-k outputs, but --top-k full "
                "caches every class; use --top-k auto or --top-k K"
            )
    if not text:
        for flag, name, what in (
            ("--sample-tokens", "sample_tokens", "a generated sample at each evaluation"),
            ("--generated-blocks", "generated_blocks", "blocks the teacher writes for the KD stream"),
            ("--generate-temperature", "generate_temperature", "the teacher's sampling temperature"),
            ("--on-policy", "on_policy", "the student's own continuations, scored by the teacher"),
        ):
            if name in given:
                raise ValueError(f"{flag}: only used with text ({what})")
    if "generate_temperature" in given and not given.get("generated_blocks"):
        raise ValueError("--generate-temperature: only used with --generated-blocks N (N >= 1)")
    settings = dict(
        seed=args.seed,
        alpha=args.alpha,
        labeled_fraction=args.labeled_fraction,
        mixup_alpha=(args.mixup_alpha or 1.0) if args.mixup else 0.0,
        device=args.device or "auto",
        precision=args.precision or "fp32",
    )
    cfg = (  # every value is checked here, before any data is read or training starts
        DistillConfig.for_text(**settings, **given)
        if text
        else DistillConfig(**{**TABLE_TRAINING, **settings, **given})
    )
    teacher_cfg = teacher_config_for(cfg, epochs=args.teacher_epochs, lr=args.teacher_lr)
    data = _distill_data(args)
    if isinstance(cfg.teacher_top_k, int) and data.num_classes and cfg.teacher_top_k > data.num_classes:
        raise ValueError(
            f"--top-k: {cfg.teacher_top_k} is more than the {data.num_classes} classes of {data.name!r}; "
            f"use at most {data.num_classes}, or full"
        )
    args.teacher = args.teacher or (TEXT_TEACHER if text else TABLE_TEACHER)
    args.student = args.student or (TEXT_STUDENT if text else TABLE_STUDENT)
    _check_sizes(data, args.force, teacher=args.teacher, student=args.student)
    exp = Experiment(
        data,
        args.teacher,
        args.student,
        cfg,
        teacher_cfg,
        callbacks=_progress(args),
        runs=args.runs or True,
        retrain=args.retrain,
        trusted=args.trusted,
    )
    loaded = {role: m.description for role, m in exp.loaded.items()}
    result = exp.run()
    if not distributed.is_main():  # under torchrun only rank 0 reports
        return _status(result)
    table = result.table()
    verdict = _text_verdict(result, cfg.labeled_fraction) if text else _verdict(result, cfg, args.extra_unlabeled)
    if args.json:
        print(
            json.dumps(
                {
                    "dataset": data.name,
                    "config": cfg.to_dict(),
                    "teacher_val_acc": result.teacher_val_acc,
                    "loaded": loaded,
                    "warnings": result.warnings,
                    "verdict": verdict,
                    "runs": json.loads(table.to_json(orient="records")),
                },
                indent=2,
            )
        )
        return _status(result)
    for note in result.warnings:
        if note not in args.warned:  # the warnings shown as they were raised are not repeated
            print(f"workbench distill: warning: {printable(note)}", file=sys.stderr)
    if text:
        beta = f" (beta {cfg.beta:g})" if cfg.divergence == "jsd" else ""
        print(
            f"\n{printable(data.name)}: {len(data.train)} train blocks of {data.train.x.shape[1]} characters, "
            f"vocabulary {data.num_classes}; divergence {cfg.divergence}{beta}, T={cfg.temperature:g}, "
            f"w_ce={cfg.w_ce:g}, w_kd={cfg.w_kd:g}, labeled fraction {cfg.labeled_fraction:g}"
        )
        note = _outputs_note(result)
        if note:
            print(note)
    else:
        print(
            f"\n{printable(data.name)}: T={cfg.temperature}, w_ce={cfg.w_ce:g}, w_kd={cfg.w_kd:g}, "
            f"labeled fraction {cfg.labeled_fraction:g}, mixup {cfg.mixup_alpha:g}"
        )
    for role, description in loaded.items():
        val = (
            f", val acc {result.teacher_val_acc:.4f}"
            if role == "teacher" and result.teacher_val_acc is not None
            else ""
        )
        print(f"{role}: {printable(description)}{val}{' (fine-tuned)' if role == 'student' else ''}")
    print(table.drop(columns=["run_id"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if text:
        for role, fit in result.fits.items():
            sample = _last_sample(fit)
            if sample:
                print(f"\nsample ({role}): {printable(sample)}")
    if verdict:
        print(f"\n{verdict}")
    return _status(result)


def _bpc(fit: Any) -> float | None:
    return fit.summary.get("test_bpc") if fit is not None else None


def _text_verdict(result: Any, labeled_fraction: float) -> str | None:
    """One line on the distilled student vs the scratch baseline in test bits per character (lower is better)."""
    from .verdict import text_verdict

    return text_verdict(
        _bpc(result.student), _bpc(result.baseline), labeled_fraction=labeled_fraction, teacher_bpc=_bpc(result.teacher)
    )


def _outputs_note(result: Any) -> str | None:
    """The student fit's note on its cached teacher outputs (kept and size), from its FitStart message."""
    fit = result.student
    if fit is None:
        return None
    start = fit.recorder.start
    message = start.message if start is not None else ""
    return next((part for part in message.split("; ") if part.startswith("teacher outputs")), None)


def _last_sample(fit: Any) -> str | None:
    """The text a fit generated at its last evaluation (None: none was generated)."""
    if fit is None:
        return None
    evals = fit.evals
    if "sample" not in evals.columns:
        return None
    samples = evals["sample"].dropna()
    return str(samples.iloc[-1]) if len(samples) else None


def _check_results_csv(path: Path | None) -> None:
    """``compare --csv``: a new file, or a result table an earlier compare wrote (rewritten); never any
    other file (e.g. the ``--text`` corpus itself), checked before the sweep trains anything."""
    from .sweeps.sweep import COLUMNS

    if path is None or not path.exists():
        return
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        header = ""
    if not header.startswith(",".join(COLUMNS[:3])):
        raise ValueError(
            f"--csv: {str(path)!r} exists and is not a result table written by compare; it is never "
            f"overwritten: pick a new file name (or delete the file first)"
        )


def _compare(args: argparse.Namespace) -> int:
    from .data.datasets import load_dataset
    from .engine.config import DistillConfig
    from .experiment import is_source, load_source
    from .sweeps.stats import paired_gain, summarize
    from .sweeps.sweep import Sweep
    from .ui.settings import DEFAULT_TEACHERS

    _check_results_csv(args.csv)
    text = bool(args.text) or _is_text(args.dataset)
    if args.block_size is not None and not text:
        raise ValueError("--block-size: only used with text (--dataset shakespeare-char or --text FILE.txt)")
    given = {
        k: v for k, v in dict(epochs=args.epochs, lr=args.lr, temperature=args.temperature).items() if v is not None
    }
    settings = dict(alpha=args.alpha, labeled_fraction=args.labeled_fraction)
    cfg = (
        DistillConfig.for_text(**settings, **given)
        if text
        else DistillConfig(**{**{k: TABLE_TRAINING[k] for k in ("epochs", "lr", "temperature")}, **settings, **given})
    )
    if args.text:
        if args.dataset:
            raise ValueError(f"--dataset, --text: give one of them (--dataset {args.dataset} or --text {args.text})")
        data = _text_data(
            argparse.Namespace(**{**vars(args), "csv": None, "target": None, "mixup": False, "extra_unlabeled": 0})
        )
    elif text:
        data = load_dataset(args.dataset, block_size=args.block_size or 64)
    else:
        data = load_dataset(args.dataset or "digits")
    dataset = args.dataset or ("text" if text else "digits")
    teacher = args.teacher or (TEXT_TEACHER if text else DEFAULT_TEACHERS.get(dataset, "mlp:256,256"))
    students = args.students or (TEXT_STUDENTS if text else _students(TABLE_STUDENTS))
    _check_sizes(data, args.force, teacher=teacher)
    workers = args.workers
    if is_source(teacher):  # loaded (and checked against the data) here, so --trusted and --runs reach it
        teacher = load_source(teacher, data, "--teacher", trusted=args.trusted, root=args.runs).module
        if getattr(teacher, "spec", None) is None and workers is None:
            workers = 1  # a program (.pt2, TorchScript) may not pickle into worker processes: run in-process
    for student in students:
        _check_sizes(data, args.force, students=student)
    sweep = Sweep(
        data,
        teacher,
        students,
        args.methods,
        args.seeds,
        args.temperatures,
        cfg,
        workers=workers,
        runs=args.runs,
        name=args.name,
    )
    sweep.experiment.callbacks.extend(_progress(args, "teacher"))  # the teacher trains first: show it
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
    if text:
        df = _with_bpc(df, args.runs)
    if args.csv:
        df.to_csv(args.csv, index=False)
    summary = _bpc_summary(summarize(df), df) if text else summarize(df)
    metric = "test_bpc" if text else "test_acc"
    front = _pareto(summary, metric)
    if args.json:
        print(
            json.dumps(
                {
                    "sweep": sweep.name,
                    "saved": str(sweep.path),
                    "summary": json.loads(summary.to_json(orient="records")),
                    "pareto": {
                        "x": "params",
                        "y": metric,
                        "lower_is_better": text,
                        "front": json.loads(front.to_json(orient="records")) if front is not None else [],
                    },
                    "rows": len(df),
                },
                indent=2,
            )
        )
        return 0 if not sweep.stopped else 1
    cols = [
        c
        for c in summary.columns
        if c in ("student", "method", "temperature", "params", "n") or c.endswith("_mean") or c.endswith("_std")
    ]
    print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    methods = set(df["method"])
    if {"kd", "scratch"} <= methods and df["seed"].nunique() > 1:
        metric = "test_bpc" if text and "test_bpc" in df else "test_acc"
        gain = paired_gain(df, metric=metric)
        what = "test bits per character (negative: KD better)" if metric == "test_bpc" else "test accuracy"
        print(f"\nKD - scratch on {what} (paired over seeds, 95% interval):")
        print(
            gain[["student", "n", "gain", "ci_low", "ci_high"]].to_string(
                index=False, float_format=lambda v: f"{v:+.4f}"
            )
        )
    if front is not None:
        what = "test bits per character, lower is better" if text else "test accuracy, higher is better"
        cols = [c for c in ("student", "method", "temperature", "params", f"{metric}_mean") if c in front]
        print(f"\nPareto front (parameters vs {what}; no smaller student does as well):")
        print(front[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nsaved to {sweep.path}")
    return 0 if not sweep.stopped else 1


def _pareto(summary: Any, metric: str) -> Any:
    """The sweep's Pareto front of parameters vs ``metric`` (its own direction), or None when no cell has it."""
    from .sweeps.stats import pareto_front

    if f"{metric}_mean" not in summary or summary[f"{metric}_mean"].isna().all():
        return None
    return pareto_front(summary, x="params", y=metric)


def _with_bpc(df: Any, runs: Any) -> Any:
    """Sweep rows with ``val_bpc`` / ``test_bpc`` (bits per character), read from each fit's recorded run
    where the rows do not carry them."""
    from .store.runs import load_run

    df = df.copy()
    for col in ("val_bpc", "test_bpc"):
        if col not in df:
            df[col] = float("nan")
    for i, row in df.iterrows():
        if row.get("status") != "completed" or (
            row["test_bpc"] == row["test_bpc"] and row["val_bpc"] == row["val_bpc"]
        ):
            continue
        try:
            summary = load_run(str(row["run_id"]), runs).summary
        except (ValueError, OSError):
            continue
        for col in ("val_bpc", "test_bpc"):
            if summary.get(col) is not None:
                df.at[i, col] = summary[col]
    return df


def _bpc_summary(summary: Any, df: Any) -> Any:
    """``summary`` with the mean and std of bits per character per row group, when it lacks them."""
    if "test_bpc_mean" in summary or "test_bpc" not in df:
        return summary
    keys = [k for k in ("student", "method", "temperature") if k in summary]
    done = df[df["status"] == "completed"] if "status" in df else df
    g = done.groupby(keys, dropna=False, sort=False)[["val_bpc", "test_bpc"]].agg(["mean", "std"])
    g.columns = [f"{m}_{stat}" for m, stat in g.columns]
    merged = summary.merge(g.reset_index(), on=keys, how="left")
    first = [c for c in summary.columns if not c.endswith(("_mean", "_std"))]
    bpc = ["val_bpc_mean", "val_bpc_std", "test_bpc_mean", "test_bpc_std"]
    return merged[first + bpc + [c for c in summary.columns if c not in first]]


def _runs(args: argparse.Namespace) -> int:
    import pandas as pd

    from .store.runs import list_runs

    df = list_runs(args.runs)
    if args.json:
        print(df.to_json(orient="records"))
        return 0
    if not len(df):
        print("no runs yet")
        return 0
    cols = [
        c
        for c in ("run_id", "role", "status", "dataset", "val_acc", "test_acc", "params", "seconds")
        if c in df.columns
    ]
    df = df[cols].copy()
    for c in df.columns:  # names come from files: a terminal must not run their escape codes
        if not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = df[c].map(lambda v: v if v is None or isinstance(v, float) else printable(v))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _show(args: argparse.Namespace) -> int:
    from .store.runs import load_run

    rec = load_run(args.run, args.runs)
    out = {
        "run_id": rec.run_id,
        "status": rec.status,
        "path": str(rec.path),
        "config": rec.config,
        "summary": rec.summary,
        "events": len(rec.history),
    }
    print(json.dumps(out, indent=2, default=str))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .store.export import export_run

    out = args.out
    if out is not None and args.format != "hf" and out.is_dir():  # --format hf writes a folder
        raise ValueError(f"--out: {str(out)!r} is an existing folder; expected a file name to write")
    if out is not None and args.format != "hf" and out.exists():
        raise ValueError(
            f"--out: {str(out)!r} exists; export never overwrites a file: pick a new file name (or delete it first)"
        )
    facts = export_run(args.run, args.format, args.runs, out)
    print(json.dumps(facts, indent=2, default=str))
    return 0


def _rm(args: argparse.Namespace) -> int:
    from .store.runs import remove_runs

    for run in remove_runs(args.run, args.runs):  # all or none: every id is checked before any is removed
        print(f"removed {printable(run)}")
    return 0


def _check_port(address: str, port: int) -> None:
    """Refuse a port that is taken (or an address this machine cannot serve) before starting."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ValueError(f"--address: {address!r} is not a host name or address this machine knows") from None
    family, _, _, _, where = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if os.name != "nt":  # as the server does: a port in TIME_WAIT is free (on Windows this would share it)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(where)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(
                    f"--port: {port} on {address} is in use (the app already running?); pick another with --port N"
                ) from None
            if e.errno == errno.EACCES:
                raise ValueError(f"--port: {port} needs administrator rights; use a port >= 1024") from None
            raise ValueError(f"--address: {address!r} cannot be served here ({e.strerror or e})") from None


def _app(args: argparse.Namespace) -> int:
    """Start the Streamlit app on this machine only (``--address 0.0.0.0`` serves a network).

    Headless by default: it asks nothing (no first-run e-mail prompt, no browser), so it starts
    with no terminal, in the background too, and prints its URL; ``--open`` opens a browser tab.
    """
    import subprocess

    _check_port(args.address, args.port)
    script = Path(__file__).resolve().parent.parent / "app.py"
    if not script.exists():  # installed without the repository: run the packaged entry
        script = Path(__file__).resolve().parent / "ui" / "streamlit_entry.py"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.address",
        args.address,
        "--server.port",
        str(args.port),
        "--server.headless",
        "false" if args.open else "true",
        "--server.showEmailPrompt",
        "false",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",  # no Deploy button or developer menu
    ]
    host = "127.0.0.1" if args.address == "0.0.0.0" else args.address
    print(f"KD Workbench: http://{host}:{args.port} (Ctrl+C stops it)", flush=True)
    if os.name != "nt":  # the server takes this process's place: Ctrl+C and kill reach it
        os.execv(sys.executable, cmd)
    return subprocess.call(cmd, stdin=subprocess.DEVNULL)  # Windows has no exec: wait for it


# -- the parser ----------------------------------------------------------------------------------


def _runs_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", metavar="DIR", type=_folder, help="runs folder (default: $WORKBENCH_RUNS, else ./runs)")


def _force_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help=f"build models over {MAX_PARAMS:,} parameters")


def _trusted_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trusted",
        action="store_true",
        help="allow .pt2 (torch.export) and TorchScript models: loading them RUNS CODE stored in the "
        "file; only for files you made or whose author you trust",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="workbench", description="KD Workbench: knowledge distillation you can watch.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="teacher vs scratch student vs distilled student on built-in data")
    d.add_argument("--dataset", type=_dataset, default="digits", help="a built-in dataset (default: digits)")
    d.add_argument("--epochs", type=_positive_int, default=30)
    d.add_argument("--lr", type=_positive, default=3e-3)
    d.add_argument("--temperature", type=_positive, default=4.0)
    d.add_argument("--alpha", type=_alpha, default=0.5, help="alpha*CE + (1-alpha)*T^2*KL")
    d.add_argument("--student-width", type=_positive_int, default=16)
    d.add_argument("--seed", type=_seed, default=0)
    d.add_argument("--json", action="store_true", help="print the results as JSON")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    _force_flag(d)
    d.set_defaults(func=_demo)

    k = sub.add_parser("distill", help="train a teacher, distill a student, and compare with a scratch baseline")
    src = k.add_argument_group("data")
    src.add_argument(
        "--dataset",
        type=_dataset,
        default=None,
        help="built-in dataset: digits (default), digits-images, mnist1d, moons, spirals, or text: shakespeare-char",
    )
    src.add_argument("--csv", metavar="PATH", type=_input_file, help="your own data: a CSV file (use with --target)")
    src.add_argument("--target", metavar="COL", help="the label column of --csv")
    src.add_argument(
        "--text", metavar="FILE", type=_input_file, help="your own text: a UTF-8 .txt file (next-character blocks)"
    )
    src.add_argument("--block-size", type=_block, default=None, help="text: characters per block (default 64)")
    src.add_argument(
        "--labeled-fraction",
        type=_fraction,
        default=1.0,
        help="share of train labels the student may use (KD still sees every input)",
    )
    src.add_argument(
        "--extra-unlabeled",
        type=_extra,
        default=0,
        metavar="N",
        help="N generated unlabeled inputs for the teacher to label (mnist1d, moons, spirals)",
    )
    src.add_argument("--mixup", action="store_true", help="mix transfer inputs (the teacher labels the mixes)")
    src.add_argument("--mixup-alpha", type=_positive, default=None, help="Beta(alpha, alpha) of --mixup (default 1)")
    m = k.add_argument_group("models")
    m.add_argument(
        "--teacher",
        type=_model_or_source,
        default=None,
        metavar="SPEC|FILE|run:ID",
        help="zoo spec (cnn2d, cnn1d:64,64,64, mlp:256,256 (default); text: gpt:2,64 (default); trained here) "
        "or a trained teacher to load and use as is: run:ID, a .pt/.pth/.safetensors file with its spec, "
        "a Hugging Face folder",
    )
    m.add_argument(
        "--student",
        type=_model_or_source,
        default=None,
        metavar="SPEC|FILE|run:ID",
        help="zoo spec (mlp:16 (default), mlp:64,32; text: gpt:1,32 (default)) or a model to load and "
        "fine-tune (run:ID, a file; the scratch baseline then starts from the same loaded weights)",
    )
    _trusted_flag(m)
    _force_flag(m)
    t = k.add_argument_group("training (defaults: tables / text)")
    t.add_argument("--temperature", type=_positive, default=None, help="default 4 / 1")
    t.add_argument("--alpha", type=_alpha, default=0.5, help="alpha*CE + (1-alpha)*KD term (default 0.5)")
    t.add_argument(
        "--divergence",
        type=_divergence,
        default=None,
        help="the KD term: kl (default for tables), reverse_kl, jsd, mse, topk_kl (default for text: forward KL "
        "on the teacher's cached top-k logits, renormalised), topk_kl_tail (its tail mass as one more bucket)",
    )
    t.add_argument("--beta", type=_beta, default=None, help="jsd: the teacher's weight in the mixture (default 0.5)")
    t.add_argument(
        "--top-k",
        type=_top_k,
        default=None,
        metavar="K|auto|full",
        help="teacher outputs cached on the fixed blocks: the top K logits per position, full (every class; "
        "the divergence then defaults to kl) or auto (default: full while it fits 64 MB, else the top 16)",
    )
    t.add_argument(
        "--sample-tokens", type=_count, default=None, help="text: characters generated at each evaluation (100)"
    )
    t.add_argument(
        "--generated-blocks",
        type=_count,
        default=None,
        metavar="N",
        help="text: N blocks sampled from the teacher (prompts from the train text) added to the KD stream only: "
        "sequence-level KD (default 0)",
    )
    t.add_argument(
        "--generate-temperature",
        type=_positive,
        default=None,
        metavar="T",
        help="text: the teacher's sampling temperature for --generated-blocks (default 1)",
    )
    t.add_argument(
        "--on-policy",
        type=_share,
        default=None,
        metavar="SHARE",
        help="text: the share of each KD batch's blocks whose second half the student samples itself, scored "
        "by the teacher live: GKD's lambda (default 0; slower: the student generates every step)",
    )
    t.add_argument("--epochs", type=_positive_int, default=None, help="default 20 / 1")
    t.add_argument("--teacher-epochs", type=_positive_int, default=None, help="default: --epochs")
    t.add_argument("--batch-size", type=_positive_int, default=None, help="default 64 / 32")
    t.add_argument("--lr", type=_positive, default=None, help="default 3e-3 / 2e-3")
    t.add_argument("--teacher-lr", type=_positive, default=None, help="default: --lr")
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--device", type=_device, default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    t.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None, help="default fp32")
    o = k.add_argument_group("output")
    _runs_flag(o)
    o.add_argument("--retrain", action="store_true", help="train the teacher even if it is in the cache")
    o.add_argument("--json", action="store_true", help="print the summary as JSON")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    k.set_defaults(func=_distill)

    c = sub.add_parser("compare", help="sweep student sizes x methods x seeds sharing one teacher")
    c.add_argument("--dataset", type=_dataset, default=None, help="a built-in dataset (default: digits)")
    c.add_argument("--text", metavar="FILE", type=_input_file, help="your own text: a UTF-8 .txt file")
    c.add_argument("--block-size", type=_block, default=None, help="text: characters per block (default 64)")
    c.add_argument(
        "--teacher",
        type=_model_or_source,
        default=None,
        metavar="SPEC|FILE|run:ID",
        help="zoo spec (default: the dataset's default teacher) or a trained teacher to load: "
        "run:ID, a .pt/.pth/.safetensors file with its spec, a Hugging Face folder",
    )
    _trusted_flag(c)
    c.add_argument(
        "--students",
        type=_students,
        default=None,
        help=f"zoo specs (default {TABLE_STUDENTS}; text: {';'.join(TEXT_STUDENTS)}; use ';' between specs "
        "with several sizes: mlp:64,32;mlp:8)",
    )
    c.add_argument("--methods", type=_methods, default="scratch,kd", help="scratch, kd, mse (comma-separated)")
    c.add_argument("--seeds", type=_seeds, default=3)
    c.add_argument("--temperatures", type=_temperature_list, default=None, help="e.g. 1,2,4,8 (KD methods)")
    c.add_argument("--temperature", type=_positive, default=None, help="default 4; text: 1")
    c.add_argument("--alpha", type=_alpha, default=0.5)
    c.add_argument("--labeled-fraction", type=_fraction, default=1.0)
    c.add_argument("--epochs", type=_positive_int, default=None, help="default 20; text: 1")
    c.add_argument("--lr", type=_positive, default=None, help="default 3e-3; text: 2e-3")
    c.add_argument("--workers", type=_count, default=None, help="processes (default: CPU count; 0 or 1: in-process)")
    c.add_argument("--name", type=_name, default=None, help="sweep name (resuming uses the same name)")
    _runs_flag(c)
    c.add_argument("--csv", metavar="PATH", type=_output_file, help="also write the result table here")
    c.add_argument("--json", action="store_true")
    c.add_argument("--quiet", action="store_true")
    _force_flag(c)
    c.set_defaults(func=_compare)

    a = sub.add_parser("app", help="start the Streamlit app (bound to 127.0.0.1)")
    a.add_argument(
        "--address",
        type=_address,
        default="127.0.0.1",
        help="0.0.0.0 serves every network interface: do it deliberately",
    )
    a.add_argument("--port", type=_port, default=8501)
    shown = a.add_mutually_exclusive_group()
    shown.add_argument("--open", action="store_true", help="open the app in a browser tab")
    shown.add_argument("--headless", action="store_true", help="print the URL, open no browser (the default)")
    a.set_defaults(func=_app)

    r = sub.add_parser("runs", help="list runs, newest first")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_runs)
    sh = sub.add_parser("show", help="a run's config and summary")
    sh.add_argument("run")
    sh.set_defaults(func=_show)
    ex = sub.add_parser(
        "export", help="export a run's model (torch.export .pt2, state_dict + spec, or a Hugging Face folder)"
    )
    ex.add_argument("run")
    ex.add_argument(
        "--format",
        choices=["export", "state_dict", "hf"],
        default="export",
        help="hf: save_pretrained folder, for a model loaded from a Hugging Face folder",
    )
    ex.add_argument(
        "--out", type=_output_path, help="output file, or folder for --format hf (default: inside the run folder)"
    )
    ex.set_defaults(func=_export)
    rm = sub.add_parser("rm", help="delete runs")
    rm.add_argument("run", nargs="+")
    rm.set_defaults(func=_rm)
    for cmd in (r, sh, ex, rm):
        _runs_flag(cmd)
    return p


# -- main ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _one_line_warnings(prog: str, shown: list[str]) -> Iterator[None]:
    """Warnings print as one ``prog: warning: ...`` line each (and are recorded in ``shown``)."""

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        shown.append(str(message))
        print(f"{prog}: warning: {printable(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _check_environment(args: argparse.Namespace) -> None:
    """A ``$WORKBENCH_RUNS`` that is not a folder fails before any training (``--runs`` is a flag)."""
    from .store.cache import check_folder

    env = os.environ.get("WORKBENCH_RUNS")
    if env and getattr(args, "runs", False) is None:
        check_folder(env, "WORKBENCH_RUNS")


# The flags of the API's field names, so an error found past parsing still names the flag.
_FLAGS = {
    "device": "--device",
    "precision": "--precision",
    "labeled_fraction": "--labeled-fraction",
    "temperature": "--temperature",
    "alpha": "--alpha",
    "epochs": "--epochs",
    "lr": "--lr",
    "batch_size": "--batch-size",
    "seed": "--seed",
    "mixup_alpha": "--mixup-alpha",
    "n_unlabeled": "--extra-unlabeled",
    "teacher": "--teacher",
    "student": "--student",
    "divergence": "--divergence",
    "beta": "--beta",
    "teacher_top_k": "--top-k",
    "sample_tokens": "--sample-tokens",
    "block_size": "--block-size",
    "generated_blocks": "--generated-blocks",
    "generate_temperature": "--generate-temperature",
    "on_policy": "--on-policy",
}


def _error_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    lines = [s for s in str(e).splitlines() if s.strip()] or [type(e).__name__]
    line = lines[0] if isinstance(e, RuntimeError) else " ".join(lines)
    field, sep, rest = line.partition(": ")
    return f"{_FLAGS[field]}: {rest}" if sep and field in _FLAGS else line


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as e:
        print(printable(e), file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    prog = f"workbench {args.command}"
    args.warned = []
    codes = ((ValueError, 2), (OSError, 2), (ImportError, 2), (RuntimeError, 1), (MemoryError, 1))
    try:
        with _one_line_warnings(prog, args.warned):
            _check_environment(args)
            return args.func(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (runs keep what they logged)", file=sys.stderr)
        return 130
    except tuple(kind for kind, _ in codes) as e:  # bad input: a clear line, not a traceback
        print(f"{prog}: error: {printable(_error_line(e))}", file=sys.stderr)
        return next(code for kind, code in codes if isinstance(e, kind))
