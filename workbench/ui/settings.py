"""What a user picks in a UI, as one validated object: dataset, teacher, student, loss mix,
transfer set and optimization. Both UIs (Jupyter and Streamlit) build their runs from it, and
``to_code()`` gives the Python that reproduces it ("copy as code")."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..data.splits import DataSplits
from ..engine.config import DistillConfig

DEFAULT_TEACHERS = {
    "digits": "mlp:256,256",
    "digits-images": "cnn2d:32,64",
    "mnist1d": "cnn1d:64,64,64",
    "moons": "mlp:64,64",
    "spirals": "mlp:128,128",
}
DEFAULT_STUDENTS = {
    "digits": "mlp:16",
    "digits-images": "mlp:16",
    "mnist1d": "mlp:128,128",
    "moons": "mlp:4",
    "spirals": "mlp:16",
}


@dataclass(frozen=True)
class Settings:
    """A run as a UI describes it. ``alpha`` (None to use the four weights) is the usual preset."""

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

    def __post_init__(self) -> None:
        from ..data.datasets import list_datasets
        from ..models.zoo import parse_model

        if self.csv is None and self.dataset not in list_datasets():
            raise ValueError(
                f"dataset: {self.dataset!r} is not a built-in dataset; valid: "
                f"{', '.join(list_datasets())} (or give csv= and target=)"
            )
        for name in ("csv", "target"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name}: {value!r} is invalid; expected a non-empty string or None")
        if (self.csv is None) != (self.target is None):
            raise ValueError(
                f"csv, target: {self.csv!r}, {self.target!r}; give both (a CSV and its label column) or neither"
            )
        for name in ("teacher", "student"):
            spec = getattr(self, name)
            if not isinstance(spec, str):
                raise ValueError(f"{name}: {spec!r} is invalid; expected a zoo spec like 'mlp:16'")
            try:
                parse_model(spec)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
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
        self.config()  # every training field is checked by DistillConfig

    @classmethod
    def for_dataset(cls, dataset: str, **changes: Any) -> Settings:
        """Settings with the dataset's default teacher and student (``changes`` may replace them)."""
        defaults = {
            "teacher": DEFAULT_TEACHERS.get(dataset, "mlp:256,256"),
            "student": DEFAULT_STUDENTS.get(dataset, "mlp:16"),
        }
        return cls(dataset=dataset, **{**defaults, **changes})

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def weights(self) -> dict[str, Any]:
        if self.alpha is not None:
            return {"alpha": self.alpha}
        return {"w_ce": self.w_ce, "w_kd": self.w_kd, "w_mse": self.w_mse, "w_hint": self.w_hint}

    def config(self) -> DistillConfig:
        """The student's config."""
        hints = {"hint_student": self.hint_student, "hint_teacher": self.hint_teacher} if self.hint_student else {}
        return DistillConfig(
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
            **self.weights(),
            **hints,
        )

    def teacher_config(self) -> DistillConfig:
        """The teacher's config: all labels, plain CE, its own epochs."""
        return DistillConfig(
            epochs=self.teacher_epochs or self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            seed=self.seed,
            log_every=self.log_every,
            w_ce=1.0,
            w_kd=0.0,
        )

    def data(self) -> DataSplits:
        """The data these settings name: the CSV file when ``csv`` is set, else the built-in dataset."""
        from ..data.datasets import from_csv, load_dataset

        if self.csv is not None:
            return from_csv(self.csv, target=self.target, seed=self.seed)
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
        default = DistillConfig()

        def args(c: DistillConfig, always: tuple[str, ...]) -> str:
            d = c.to_dict()
            skip = {"w_ce", "w_kd"} if d["alpha"] is not None else set()  # alpha sets them
            return ", ".join(
                f"{k}={v!r}" for k, v in d.items() if k not in skip and (k in always or v != getattr(default, k))
            )

        if self.csv is not None:
            data = f"wb.from_csv({self.csv!r}, target={self.target!r}, seed={self.seed!r})"
        else:
            extra = f", n_unlabeled={self.extra_unlabeled!r}" if self.extra_unlabeled else ""
            data = f"wb.load_dataset({self.dataset!r}, seed={self.seed!r}{extra})"
        return "\n".join(
            [
                "import workbench as wb",
                "",
                f"data = {data}",
                f"config = wb.DistillConfig({args(cfg, ('epochs', 'temperature'))})",
                f"teacher_config = wb.DistillConfig({args(tcfg, ('epochs', 'w_ce', 'w_kd'))})",
                f"experiment = wb.Experiment(data, teacher={self.teacher!r}, student={self.student!r},",
                "                           config=config, teacher_config=teacher_config)",
                "result = experiment.run()",
                "print(result.table())",
            ]
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
