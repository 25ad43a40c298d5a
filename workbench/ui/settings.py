"""What a user picks in a UI, as one validated object: dataset (a table, images or text),
teacher, student, loss mix (with the KD divergence), transfer set and optimization. Both UIs
(Jupyter and Streamlit) build their runs from it, and ``to_code()`` gives the Python that
reproduces it ("copy as code"). A teacher or student is a zoo spec, or a model to load
(``"run:ID"``, a file path); :func:`model_runs` lists the store's runs a UI can offer, and
:func:`save_model_upload` keeps an uploaded model file under the runs root."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.splits import DataSplits
from ..engine.config import TEXT_DEFAULTS, DistillConfig

TEXT_TEACHER, TEXT_STUDENT = "gpt:2,64", "gpt:1,32"  # next-character models for any text
DEFAULT_TEACHERS = {
    "digits": "mlp:256,256",
    "digits-images": "cnn2d:32,64",
    "mnist1d": "cnn1d:64,64,64",
    "moons": "mlp:64,64",
    "spirals": "mlp:128,128",
    "shakespeare-char": TEXT_TEACHER,
}
DEFAULT_STUDENTS = {
    "digits": "mlp:16",
    "digits-images": "mlp:16",
    "mnist1d": "mlp:128,128",
    "moons": "mlp:4",
    "spirals": "mlp:16",
    "shakespeare-char": TEXT_STUDENT,
}
# Settings.for_dataset's values for text (a built-in corpus or a text file): DistillConfig.for_text's
# optimization and divergence, one epoch for the teacher and the student, every label.
TEXT_SETTINGS: dict[str, Any] = {
    "teacher": TEXT_TEACHER,
    "student": TEXT_STUDENT,
    "temperature": TEXT_DEFAULTS["temperature"],
    "divergence": TEXT_DEFAULTS["divergence"],
    "epochs": TEXT_DEFAULTS["epochs"],
    "teacher_epochs": TEXT_DEFAULTS["epochs"],
    "batch_size": TEXT_DEFAULTS["batch_size"],
    "lr": TEXT_DEFAULTS["lr"],
    "optimizer": TEXT_DEFAULTS["optimizer"],
    "weight_decay": TEXT_DEFAULTS["weight_decay"],
    "labeled_fraction": 1.0,
}


def text_datasets() -> list[str]:
    """The built-in text datasets (``list_datasets(kind="text")``)."""
    from ..data.datasets import list_datasets

    return list_datasets(kind="text")


def suggested_model(role: str, dataset: str, text: bool | None = None) -> str:
    """The zoo spec a ``role`` starts from on ``dataset``; ``text``: whether the data is text (None:
    only the built-in text datasets are)."""
    text = dataset in text_datasets() if text is None else text
    if text:
        return (
            DEFAULT_TEACHERS.get(dataset, TEXT_TEACHER)
            if role == "teacher"
            else DEFAULT_STUDENTS.get(dataset, TEXT_STUDENT)
        )
    return (DEFAULT_TEACHERS if role == "teacher" else DEFAULT_STUDENTS).get(
        dataset, "mlp:256,256" if role == "teacher" else "mlp:16"
    )


@dataclass(frozen=True)
class Settings:
    """A run as a UI describes it. ``alpha`` (None to use the four weights) is the usual preset;
    ``divergence`` (and ``beta`` for "jsd") picks the KD term; ``teacher`` / ``student`` are zoo
    specs, ``"run:ID"`` or a model file's path (``trusted`` also allows .pt2 / TorchScript files,
    which run code when loaded). Data: the built-in ``dataset`` (tables, images, or text such as
    "shakespeare-char"), a CSV (``csv`` and ``target``) or a UTF-8 text file (``text_file``; then
    ``dataset`` is its name). Text trains with :meth:`DistillConfig.for_text`'s other values."""

    dataset: str = "digits"
    teacher: str = "mlp:256,256"
    student: str = "mlp:16"
    temperature: float = 4.0
    alpha: float | None = 0.5
    w_ce: float = 0.5
    w_kd: float = 0.5
    w_mse: float = 0.0
    w_hint: float = 0.0
    hint_student: str | None = None
    hint_teacher: str | None = None
    labeled_fraction: float = 1.0
    extra_unlabeled: int = 0
    mixup: bool = False
    epochs: int = 20
    teacher_epochs: int | None = None
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    seed: int = 0
    log_every: int = 5
    csv: str | None = None  # a CSV file's name or path: the data, instead of the built-in ``dataset``
    target: str | None = None  # the CSV's label column
    trusted: bool = False  # load .pt2 / TorchScript model files (they run code stored in the file)
    divergence: str = "kl"  # the KD term: a name of workbench.engine.divergences.DIVERGENCES
    beta: float = 0.5  # JSD's beta (divergence "jsd")
    text_file: str | None = None  # a UTF-8 text file's name or path: the data, instead of ``dataset``
    eval_every: int | None = None  # steps between evaluations (None: the config's default: each epoch, text 100)

    def __post_init__(self) -> None:
        from ..data.datasets import list_datasets
        from ..models.zoo import parse_model

        builtin = list_datasets(kind="all")
        if self.csv is None and self.text_file is None and self.dataset not in builtin:
            raise ValueError(
                f"dataset: {self.dataset!r} is not a built-in dataset; valid: "
                f"{', '.join(builtin)} (or give csv= and target=, or text_file=)"
            )
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ValueError(f"dataset: {self.dataset!r} is invalid; expected a non-empty name")
        for name in ("csv", "target", "text_file"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name}: {value!r} is invalid; expected a non-empty string or None")
        if (self.csv is None) != (self.target is None):
            raise ValueError(
                f"csv, target: {self.csv!r}, {self.target!r}; give both (a CSV and its label column) or neither"
            )
        if self.csv is not None and self.text_file is not None:
            raise ValueError(
                f"csv, text_file: {self.csv!r}, {self.text_file!r}; give one data file (a CSV or a text file), not both"
            )
        for name in ("teacher", "student"):
            _check_model(name, getattr(self, name), parse_model)
        if not isinstance(self.trusted, bool):
            raise ValueError(f"trusted: {self.trusted!r} is invalid; expected True or False")
        if not _is_int(self.extra_unlabeled) or self.extra_unlabeled < 0:
            raise ValueError(f"extra_unlabeled: {self.extra_unlabeled!r} is invalid; expected an integer >= 0")
        if self.csv is not None and self.extra_unlabeled:
            raise ValueError(
                f"extra_unlabeled: {self.extra_unlabeled!r} is invalid with a CSV; generated "
                "inputs exist for mnist1d, moons and spirals only (use 0)"
            )
        if self.teacher_epochs is not None and (not _is_int(self.teacher_epochs) or self.teacher_epochs < 1):
            raise ValueError(f"teacher_epochs: {self.teacher_epochs!r} is invalid; expected an integer >= 1 or None")
        if not isinstance(self.mixup, bool):
            raise ValueError(f"mixup: {self.mixup!r} is invalid; expected True or False")
        if self.is_text and self.extra_unlabeled:
            raise ValueError(
                f"extra_unlabeled: {self.extra_unlabeled!r} is invalid with text data; generated "
                "inputs exist for mnist1d, moons and spirals only (use 0)"
            )
        if self.is_text and self.mixup:
            raise ValueError("mixup: True is invalid with text data (token ids cannot be mixed); use False")
        self.config()  # every training field is checked by DistillConfig

    @classmethod
    def for_dataset(cls, dataset: str, **changes: Any) -> Settings:
        """Settings with the dataset's default teacher and student (``changes`` may replace them);
        for text (a built-in corpus, or ``text_file=``) also :data:`TEXT_SETTINGS`."""
        text = changes.get("text_file") is not None or dataset in text_datasets()
        defaults = (
            dict(TEXT_SETTINGS)
            if text
            else {"teacher": suggested_model("teacher", dataset), "student": suggested_model("student", dataset)}
        )
        return cls(dataset=dataset, **{**defaults, **changes})

    @property
    def is_text(self) -> bool:
        """Whether the data is text (next-character blocks for GPT models)."""
        return self.text_file is not None or (self.csv is None and self.dataset in text_datasets())

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def weights(self) -> dict[str, Any]:
        if self.alpha is not None:
            return {"alpha": self.alpha}
        return {"w_ce": self.w_ce, "w_kd": self.w_kd, "w_mse": self.w_mse, "w_hint": self.w_hint}

    def config(self) -> DistillConfig:
        """The student's config (for text, :meth:`DistillConfig.for_text` with these settings' values)."""
        hints = {"hint_student": self.hint_student, "hint_teacher": self.hint_teacher} if self.hint_student else {}
        make = DistillConfig.for_text if self.is_text else DistillConfig
        return make(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            temperature=self.temperature,
            seed=self.seed,
            labeled_fraction=self.labeled_fraction,
            mixup_alpha=1.0 if self.mixup else 0.0,
            log_every=self.log_every,
            divergence=self.divergence,
            beta=self.beta,
            **self._eval_every(),
            **self.weights(),
            **hints,
        )

    def teacher_config(self) -> DistillConfig:
        """The teacher's config: all labels, plain CE, its own epochs."""
        make = DistillConfig.for_text if self.is_text else DistillConfig
        return make(
            epochs=self.teacher_epochs or self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            seed=self.seed,
            log_every=self.log_every,
            w_ce=1.0,
            w_kd=0.0,
            **self._eval_every(),
        )

    def _eval_every(self) -> dict[str, Any]:
        return {} if self.eval_every is None else {"eval_every": self.eval_every}

    def data(self) -> DataSplits:
        """The data these settings name: the CSV or text file when one is set, else the built-in dataset."""
        from ..data.datasets import from_csv, load_dataset
        from ..data.text import from_text

        if self.csv is not None:
            return from_csv(self.csv, target=self.target, seed=self.seed)
        if self.text_file is not None:
            return from_text(Path(self.text_file), name=self.dataset)
        return load_dataset(self.dataset, seed=self.seed, n_unlabeled=self.extra_unlabeled)

    def experiment(
        self,
        data: DataSplits | None = None,
        teacher: Any = None,
        student: Any = None,
        callbacks: Iterable[Any] = (),
        **kwargs: Any,
    ):
        """The :class:`~workbench.experiment.Experiment` these settings describe (models and
        data given from Python take the place of the zoo specs and the built-in dataset)."""
        from ..experiment import Experiment

        kwargs.setdefault("trusted", self.trusted)
        return Experiment(
            data if data is not None else self.data(),
            teacher if teacher is not None else self.teacher,
            student if student is not None else self.student,
            self.config(),
            self.teacher_config(),
            callbacks=list(callbacks),
            **kwargs,
        )

    def to_code(self) -> str:
        """Python that reproduces these settings with the public API. Every value a person typed or
        named (dataset, file name, target column, model specs) enters through ``repr``, so the
        code is valid Python whatever the text, and text never becomes code."""
        cfg, tcfg = self.config(), self.teacher_config()
        default = DistillConfig.for_text() if self.is_text else DistillConfig()
        make = "wb.DistillConfig.for_text" if self.is_text else "wb.DistillConfig"

        def args(c: DistillConfig, always: tuple[str, ...]) -> str:
            d = c.to_dict()
            skip = {"w_ce", "w_kd"} if d["alpha"] is not None else set()  # alpha sets them
            return ", ".join(
                f"{k}={v!r}" for k, v in d.items() if k not in skip and (k in always or v != getattr(default, k))
            )

        if self.csv is not None:
            data = f"wb.from_csv({self.csv!r}, target={self.target!r}, seed={self.seed!r})"
        elif self.text_file is not None:
            data = f"wb.from_text({self.text_file!r}, name={self.dataset!r})"
        else:
            extra = f", n_unlabeled={self.extra_unlabeled!r}" if self.extra_unlabeled else ""
            data = f"wb.load_dataset({self.dataset!r}, seed={self.seed!r}{extra})"
        return "\n".join(
            [
                "import workbench as wb",
                "",
                f"data = {data}",
                f"config = {make}({args(cfg, ('epochs', 'temperature', 'divergence'))})",
                f"teacher_config = {make}({args(tcfg, ('epochs', 'w_ce', 'w_kd'))})",
                f"experiment = wb.Experiment(data, teacher={self.teacher!r}, student={self.student!r},",
                "                           config=config, teacher_config=teacher_config"
                + (", trusted=True)" if self.trusted else ")"),
                "result = experiment.run()",
                "print(result.table())",
            ]
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_model_source(spec: Any) -> bool:
    """Whether ``spec`` names a model to load (``"run:ID"``, a file or folder) rather than a zoo spec."""
    from ..experiment import is_source

    return isinstance(spec, str) and is_source(spec)


def _check_model(name: str, spec: Any, parse_model: Any) -> None:
    """A zoo spec that parses, ``run:`` + a well-formed run id, or a path (loaded, and checked, later)."""
    from ..store.runs import RUN_ID_RULE, is_run_id

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"{name}: {spec!r} is invalid; expected a zoo spec like 'mlp:16', 'run:ID' or a model file's path"
        )
    if spec.startswith("run:"):
        if not is_run_id(spec[len("run:") :]):
            raise ValueError(f"{name}: {spec!r} is not a valid 'run:ID'; the id must be {RUN_ID_RULE}")
        return
    if is_model_source(spec):
        return
    try:
        parse_model(spec)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


# -- models from the run store and from uploaded files ---------------------------------------------
UPLOADS = "uploads"  # the folder in the runs root that keeps uploaded model files
MODEL_FILE_TYPES = (".pt", ".pth", ".safetensors", ".pt2", ".ts", ".torchscript")
SPEC_FILE_TYPES = (".pt", ".pth", ".safetensors")  # weights alone: they need the zoo spec of their model
RUN_ROLES = {"teacher": ("teacher",), "student": ("student", "baseline")}  # runs a role's picker offers


@dataclass(frozen=True)
class RunChoice:
    """A finished run whose model a picker can offer: ``run:ID`` loads it."""

    run_id: str
    role: str
    spec: str  # the zoo spec text of its model, e.g. 'mlp:64,64'
    test_acc: float | None
    created: float | None

    @property
    def label(self) -> str:
        """'mlp:64,64 · test acc 97.0% · 2026-01-01 12:00 · <id>' for a list (a narrow one shows the start)."""
        acc = f"test acc {self.test_acc:.1%}" if self.test_acc is not None else "test acc n/a"
        date = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created)) if self.created else "date n/a"
        return f"{self.spec} · {acc} · {date} · {self.run_id}"


def _spec_text(spec: Any) -> str | None:
    """'mlp:64,64' for a zoo ``model.spec`` dict; None when it is not one."""
    if not isinstance(spec, dict) or not isinstance(spec.get("family"), str):
        return None
    if spec["family"] == "gpt" and all(_is_int(spec.get(k)) for k in ("n_layer", "n_embd", "n_head")):
        return f"gpt:{spec['n_layer']},{spec['n_embd']},{spec['n_head']}"
    sizes = spec.get("hidden", spec.get("channels"))
    if isinstance(sizes, list) and sizes and all(_is_int(v) for v in sizes):
        return f"{spec['family']}:{','.join(map(str, sizes))}"
    return spec["family"]


def model_runs(
    dataset: str,
    role: str = "teacher",
    input_shape: Iterable[int] | None = None,
    num_classes: int | None = None,
    root: str | os.PathLike | None = None,
) -> list[RunChoice]:
    """The store's finished runs a ``role`` can load for ``dataset``, newest first: teacher runs
    for a teacher, student and baseline runs for a student; each with its weights and a zoo spec
    (of ``input_shape`` and ``num_classes`` when given). Damaged runs are left out."""
    import warnings

    from ..store.runs import list_run_ids, read_object, run_status, runs_root

    if role not in RUN_ROLES:
        raise ValueError(f"role: {role!r} is invalid; valid: {', '.join(RUN_ROLES)}")
    base = runs_root(root)
    shape = list(input_shape) if input_shape is not None else None
    found = []
    with warnings.catch_warnings():  # odd folders and files are the store listing's to report
        warnings.simplefilter("ignore")
        for run_id in list_run_ids(root):
            path = base / run_id
            config = read_object(path / "config.json")
            if config.get("role") not in RUN_ROLES[role] or config.get("dataset") != dataset:
                continue
            spec = read_object(path / "spec.json")
            text = _spec_text(spec)
            if text is None or not (path / "model.pt").is_file():
                continue
            if (shape is not None and spec.get("input_shape") != shape) or (
                num_classes is not None and spec.get("num_classes") != num_classes
            ):
                continue
            summary = read_object(path / "summary.json")
            if run_status(path, summary) != "completed":
                continue
            acc, created = summary.get("test_acc"), config.get("created")
            found.append(
                RunChoice(
                    run_id,
                    str(config["role"]),
                    text,
                    float(acc) if isinstance(acc, (int, float)) and not isinstance(acc, bool) else None,
                    float(created) if isinstance(created, (int, float)) and not isinstance(created, bool) else None,
                )
            )
    return sorted(found, key=lambda r: (r.created or 0.0, r.run_id), reverse=True)


def uploads_folder(root: str | os.PathLike | None = None) -> Path:
    """``<runs root>/uploads``: where uploaded model files are kept."""
    from ..store.runs import runs_root

    return runs_root(root) / UPLOADS


def file_runs_code(content: bytes | Path, name: str) -> str | None:
    """What kind of program a model file (its bytes, or its path) is when loading it runs code
    ('a torch.export program (.pt2)', 'a TorchScript program'), else None (weights only)."""
    suffix = Path(name).suffix.lower()
    if suffix == ".pt2":
        return "a torch.export program (.pt2)"
    if suffix in (".ts", ".torchscript"):
        return "a TorchScript program"
    try:  # a TorchScript archive saved as .pt: a zip with a code/ folder
        with zipfile.ZipFile(io.BytesIO(content) if isinstance(content, bytes) else content) as z:
            if any("/code/" in n for n in z.namelist()):
                return "a TorchScript program"
    except (zipfile.BadZipFile, OSError):
        pass
    return None


def save_model_upload(
    content: bytes,
    name: str,
    role: str,
    spec: dict[str, Any] | None = None,
    root: str | os.PathLike | None = None,
) -> Path:
    """Keep an uploaded model file as ``<runs root>/uploads/<role>-<hash><suffix>`` (its spec, when
    given, as ``<role>-<hash>.spec.json`` beside it, where the loader looks) and return its path.

    The name is generated from the bytes and the spec, never taken from the upload: only its suffix
    is kept, and it must be a model file type. The same upload gives the same path (written once).
    """
    if role not in RUN_ROLES:
        raise ValueError(f"role: {role!r} is invalid; valid: {', '.join(RUN_ROLES)}")
    suffix = Path(str(name)).suffix.lower()
    if suffix not in MODEL_FILE_TYPES:
        raise ValueError(
            f"{role} file: {str(name)!r} has the extension {suffix or '(none)'!r}; "
            f"expected one of {', '.join(MODEL_FILE_TYPES)}"
        )
    spec_bytes = json.dumps(spec, sort_keys=True).encode() if spec is not None else b""
    key = hashlib.sha256(content + b"\0" + spec_bytes).hexdigest()[:24]
    folder = uploads_folder(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"uploads: cannot create {str(folder)!r} ({e.strerror or e}); expected a writable runs folder "
            "(WORKBENCH_RUNS)"
        ) from None
    path = folder / f"{role}-{key}{suffix}"
    if spec is not None:
        _write_once(path.with_suffix(".spec.json"), spec_bytes)
    _write_once(path, content)
    return path.resolve()


def _write_once(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` through a temporary file and a rename, unless it is there already."""
    if path.is_file() and path.stat().st_size == len(content):
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    os.replace(tmp, path)
