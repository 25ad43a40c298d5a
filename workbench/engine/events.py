"""Event payloads and callback dispatch: the one contract between the engine and its clients.

A callback is any object with some of the methods in :data:`HOOKS`; each is called with one
frozen payload of plain Python numbers and strings (never tensors), so a UI can keep payloads
across threads. A hook is called only if the object has it (duck typing, as in Lightning
Fabric). A callback that wants training to end sets ``should_stop = True`` (and may set
``stop_reason``); the engine reads it after each event and ends the run with status "stopped".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, runtime_checkable

HOOKS = ("on_fit_start", "on_step_end", "on_eval_end", "on_epoch_end", "on_fit_end")
STATUSES = ("completed", "stopped", "diverged", "error")


def frozen_map(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only view of a fresh copy of ``d`` (nested dicts made read-only too)."""
    return MappingProxyType(
        {k: frozen_map(v) if type(v) in (dict, MappingProxyType) else v for k, v in (d or {}).items()}
    )


def _plain(v: Any) -> Any:
    if type(v) is MappingProxyType or type(v) is dict:  # exact types: cheaper than an ABC check
        return {k: _plain(x) for k, x in v.items()}
    if type(v) is tuple:
        return [_plain(x) for x in v]
    return v


@dataclass(frozen=True)
class Payload:
    """Base of all payloads: ``to_dict()`` gives a plain, JSON-able dict with an ``event`` key."""

    event: ClassVar[str] = ""
    omit_if_none: ClassVar[tuple[str, ...]] = ()  # fields left out of to_dict() while None

    def to_dict(self) -> dict[str, Any]:
        d = {"event": self.event}
        d.update({k: _plain(v) for k, v in self.__dict__.items() if v is not None or k not in self.omit_if_none})
        return d


@dataclass(frozen=True)
class FitStart(Payload):
    """A run begins."""

    event: ClassVar[str] = "fit_start"
    run_id: str
    role: str  # "teacher" | "student" | "baseline"
    config: Mapping[str, Any]
    device: str
    dataset: str
    num_classes: int
    train_size: int
    student_params: int
    teacher_params: int | None
    epochs: int
    steps_per_epoch: int
    steps_planned: int
    started_at: float  # Unix time
    labeled_size: int = 0  # train samples whose labels the CE term uses
    transfer_size: int = 0  # inputs the teacher labels for the KD terms (0 without a teacher)
    message: str = ""  # notes on how the run trains: cached teacher outputs and their size, dropped batches


@dataclass(frozen=True)
class StepEnd(Payload):
    """One reported optimizer step; loss terms and weights are the ones this step used."""

    event: ClassVar[str] = "step"
    run_id: str
    role: str
    step: int  # 1-based count of optimizer steps done
    epoch: int  # 1-based epoch this step belongs to
    seconds: float  # since fit start
    lr: float
    loss: float
    terms: Mapping[str, float]  # unweighted terms: ce, kd (already times T^2), mse, hint
    batch_acc: float
    temperature: float
    w_ce: float
    w_kd: float
    w_mse: float
    w_hint: float
    samples: int  # training samples seen so far (target tokens, for token data)
    controls_changed: bool = False  # first step using new live temperature/weights/divergence
    divergence: str = "kl"  # the KD term's divergence (a live control)
    beta: float = 0.5  # JSD's beta (used by divergence "jsd" only)


@dataclass(frozen=True)
class EvalEnd(Payload):
    """Evaluation of the student (and teacher) on one split.

    For token data ``acc``, ``loss``, ``agreement`` and ``kl`` are per target token (``n`` tokens)
    and the fields after ``kl`` are set; for classifiers they stay None (and out of ``to_dict``).
    """

    event: ClassVar[str] = "eval"
    omit_if_none: ClassVar[tuple[str, ...]] = (
        "bpc",
        "entropy",
        "teacher_bpc",
        "teacher_entropy",
        "sample",
        "sample_prompt",
    )
    run_id: str
    role: str
    step: int
    epoch: int
    split: str
    acc: float
    loss: float  # cross-entropy of the student on this split
    n: int
    seconds: float
    teacher_acc: float | None = None
    agreement: float | None = None  # top-1 teacher/student agreement
    kl: float | None = None  # mean KL(p_teacher || p_student) at T=1
    bpc: float | None = None  # token data: loss in bits per token (character), loss / ln 2
    entropy: float | None = None  # token data: mean entropy of the student's next-token distribution (nats)
    teacher_bpc: float | None = None  # token data: the teacher's loss in bits per token
    teacher_entropy: float | None = None  # token data: mean entropy of the teacher's distribution (nats)
    sample: str | None = None  # token data: text the model generated after ``sample_prompt`` (fixed seed)
    sample_prompt: str | None = None


@dataclass(frozen=True)
class EpochEnd(Payload):
    """An epoch finished: ``loss`` averages every step of the epoch; ``terms`` and
    ``train_acc`` average the epoch's reported steps (empty/None when none was reported)."""

    event: ClassVar[str] = "epoch"
    run_id: str
    role: str
    epoch: int
    step: int
    loss: float
    terms: Mapping[str, float]
    train_acc: float | None
    seconds: float
    epoch_seconds: float


@dataclass(frozen=True)
class FitEnd(Payload):
    """A run ended; status is one of :data:`STATUSES`."""

    event: ClassVar[str] = "fit_end"
    run_id: str
    role: str
    status: str
    message: str
    step: int
    epoch: int
    seconds: float
    best: Mapping[str, Any]  # e.g. {"val_acc": .., "step": ..}
    final: Mapping[str, Any]  # e.g. {"val_acc": .., "test_acc": .., "test_agreement": ..}


@runtime_checkable
class Callback(Protocol):
    """Documentation of the hooks; a callback may implement any subset of them."""

    def on_fit_start(self, p: FitStart) -> None: ...
    def on_step_end(self, p: StepEnd) -> None: ...
    def on_eval_end(self, p: EvalEnd) -> None: ...
    def on_epoch_end(self, p: EpochEnd) -> None: ...
    def on_fit_end(self, p: FitEnd) -> None: ...


class Dispatcher:
    """Calls each hook on the callbacks that have it, in the order they were given."""

    def __init__(self, callbacks: Iterable[Any]):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not any(callable(getattr(cb, h, None)) for h in HOOKS):
                raise ValueError(f"callbacks: {cb!r} has none of the hooks {HOOKS}; pass an object with at least one")
        self._hooks = {h: [getattr(cb, h) for cb in self.callbacks if callable(getattr(cb, h, None))] for h in HOOKS}

    def __call__(self, hook: str, payload: Payload) -> None:
        for fn in self._hooks[hook]:
            fn(payload)

    def stop_request(self) -> str | None:
        """The reason of the first callback asking to stop (``should_stop``), else None."""
        for cb in self.callbacks:
            if getattr(cb, "should_stop", False):
                return str(getattr(cb, "stop_reason", "") or f"{type(cb).__name__} asked to stop")
        return None
