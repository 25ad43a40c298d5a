"""The distillation engine: ``Distiller.fit()`` trains a student (or, with no teacher, a
teacher or scratch baseline) and reports every step to callbacks.

Read ``fit()`` top to bottom: each event is fired visibly in the loop body. The loop touches
the host only on the steps it reports (``log_every``) and at evaluations.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from ..data.splits import DataSplits, Split, as_splits
from ..data.text import IGNORE_INDEX
from . import distributed
from .batches import Batch, BatchSource, on_policy_batch, policy_generator, policy_prompt_tokens
from .callbacks import History
from .config import DistillConfig, check_alpha, check_divergence, check_weights
from .divergences import TopKRecord, get_divergence
from .evaluation import Evaluator, logits_of
from .events import HOOKS, Dispatcher, EpochEnd, EvalEnd, FitEnd, FitStart, StepEnd, frozen_map
from .hints import FeatureTap, find_module, make_adapter
from .losses import LossWeights, ce_loss, distill_loss
from .preflight import check_models, check_transfer, num_params, resolve_device
from .sequence import (
    SequenceEvaluator,
    check_sequence_models,
    check_sequence_setup,
    is_sequence,
    rows,
    target_rows,
    train_eval_split,
)
from .teacher_outputs import (
    GENERATED_PROMPT_TOKENS,
    check_controls,
    generate_blocks,
    outputs_note,
    resolve_top_k,
    teacher_outputs,
)

ROLES = ("teacher", "student", "baseline")
# the eval numbers a run's summary keeps per split (the last five: token data only)
FINAL_METRICS = ("acc", "loss", "teacher_acc", "agreement", "kl", "bpc", "teacher_bpc", "entropy", "teacher_entropy")
# what set_controls may change
CONTROLS = ("temperature", "w_ce", "w_kd", "w_mse", "w_hint", "alpha", "divergence", "beta")
__all__ = ["Controls", "Distiller", "FitResult", "distill", "train", "logits_of", "resolve_device"]


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


class _Stopped(Exception):
    """Raised inside ``fit`` to end the run with status "stopped"."""


class Controls:
    """Temperature, loss weights and the KD divergence (and beta), changeable from any thread while a run goes on.

    The training thread reads ``current`` (one attribute read) every step; ``update`` validates
    and swaps in a new frozen :class:`LossWeights`, so a change applies from the next step.
    ``check``: set by the run that reads these controls, it refuses values that run cannot use
    (a top-k divergence without a cached top-k teacher, another T for the top-k tail's record).
    """

    def __init__(self, weights: LossWeights):
        self.current = weights
        self.check: Callable[[LossWeights], None] | None = None
        self._lock = threading.Lock()

    def update(
        self,
        temperature: float | None = None,
        w_ce: float | None = None,
        w_kd: float | None = None,
        w_mse: float | None = None,
        w_hint: float | None = None,
        alpha: float | None = None,
        divergence: str | None = None,
        beta: float | None = None,
        **unknown: Any,
    ) -> LossWeights:
        """Set some of the values; raises ``ValueError`` (and changes nothing) on a bad one or an unknown name."""
        if unknown:
            raise ValueError(f"controls: unknown name(s) {sorted(unknown)}; valid: {', '.join(CONTROLS)}")
        with self._lock:
            w = self.current
            if alpha is not None:
                if w_ce is not None or w_kd is not None:
                    raise ValueError("alpha: give either alpha or w_ce/w_kd, not both")
                preset = LossWeights.from_alpha(check_alpha(alpha))
                w_ce, w_kd = preset.ce, preset.kd
            new = dict(
                temperature=w.temperature if temperature is None else temperature,
                w_ce=w.ce if w_ce is None else w_ce,
                w_kd=w.kd if w_kd is None else w_kd,
                w_mse=w.mse if w_mse is None else w_mse,
                w_hint=w.hint if w_hint is None else w_hint,
            )
            check_weights(**new)
            divergence = w.divergence if divergence is None else divergence
            beta = w.beta if beta is None else beta
            check_divergence(divergence, beta)
            weights = LossWeights(*(float(v) for v in new.values()), divergence, float(beta))
            if self.check is not None:
                self.check(weights)
            self.current = weights
            return self.current


@dataclass
class FitResult:
    """What ``fit()`` returns: status, summary, the trained model and the event history."""

    run_id: str
    role: str
    status: str
    message: str
    summary: dict[str, Any]
    model: nn.Module
    recorder: History = field(repr=False)
    traceback: str | None = field(default=None, repr=False)
    adapter: nn.Module | None = field(default=None, repr=False)

    @property
    def history(self):
        """All step / eval / epoch events as one pandas DataFrame (column ``event``)."""
        return self.recorder.frame()

    @property
    def steps(self):
        return self.recorder.steps()

    @property
    def evals(self):
        return self.recorder.evals()

    @property
    def epochs(self):
        return self.recorder.epochs()


class _StepOutput(NamedTuple):
    """What one training step hands to reporting (tensors, still on the device)."""

    loss: torch.Tensor  # () the weighted total
    terms: dict[str, torch.Tensor]  # the named loss terms, detached
    logits: torch.Tensor  # (B, K) the student's logits on the CE batch (token data: (N, V) target rows)
    labels: torch.Tensor  # (B,) the CE batch's labels (token data: (N,) targets)


@dataclass(eq=False)
class _EpochTally:
    """One epoch's running numbers: the loss summed in place on the device (no per-step sync)
    and the payloads of its reported steps."""

    started: float
    loss_sum: torch.Tensor | None = None
    steps: int = 0
    reports: list[StepEnd] = field(default_factory=list)

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum = loss.detach().clone() if self.loss_sum is None else self.loss_sum.add_(loss.detach())
        self.steps += 1


@dataclass(eq=False, repr=False)
class _LoopState:
    """The state of one ``fit()``.

    ``_begin`` fills the first group before the run's ``try`` (an error there raises), ``_setup``
    builds the second inside it, and the loop advances the counters.
    """

    t0: float
    device: torch.device
    ddp: bool  # under torchrun: one rank per process
    events: Dispatcher
    evaluate: Evaluator
    # built by _setup
    evals: dict[str, Split | DataLoader] = field(default_factory=dict)
    teacher_flags: list[bool] | None = None  # the user's requires_grad flags, restored at the end
    train: Split | DataLoader = field(init=False)
    source: BatchSource = field(init=False)
    steps_planned: int = field(init=False)
    opt: torch.optim.Optimizer = field(init=False)
    sched: torch.optim.lr_scheduler.LambdaLR | None = field(init=False)
    scaler: torch.amp.GradScaler = field(init=False)  # a passthrough unless fp16
    autocast: Any = field(init=False)  # a context manager: torch.autocast or nullcontext
    policy: torch.Generator | None = None  # on-policy KD: draws the student's samples
    # advanced by the loop
    step: int = 0
    epoch: int = 0
    samples: int = 0
    last_w: LossWeights | None = None
    latest_eval: dict[str, EvalEnd] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)


class Distiller:
    """Distills ``teacher`` into ``student`` on ``data`` under ``config``; ``teacher=None``
    trains on plain cross-entropy (a teacher, or a scratch baseline with ``role="baseline"``).

    Classifier data gives logits (B, K) and labels (B,); token data (blocks (N, L) with targets
    (N, L), e.g. ``load_dataset("shakespeare-char")``) gives logits (B, L, V), flattened to the rows
    of the target tokens so that the same loss terms average over tokens, and evaluations report
    bits per character and a generated sample (:mod:`.sequence`). Token data's transfer set may add blocks
    the teacher wrote (``generated_blocks``) and the student's own continuations (``on_policy``), both
    seen by the KD term only (:mod:`.batches`, :mod:`.teacher_outputs`).

    ``stop()``, ``pause()``, ``resume()`` and ``set_controls()`` may be called from any thread
    and take effect before the next step. With ``teacher_key`` and an ``output_cache``
    (:class:`workbench.store.cache.OutputCache`) the teacher's outputs on the transfer set are shared
    across runs and sessions.
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        student: nn.Module,
        data: Any,
        config: DistillConfig | Mapping[str, Any] | None = None,
        callbacks: Iterable[Any] = (),
        role: str | None = None,
        run_id: str | None = None,
        controls: Controls | None = None,
        teacher_key: str | None = None,
        output_cache: Any = None,
        **overrides: Any,
    ):
        self.config = _config(config, overrides)
        _check_pair(teacher, student)
        self.role = role or ("student" if teacher is not None else "teacher")
        if not isinstance(self.role, str) or self.role not in ROLES:
            raise ValueError(f"role: {self.role!r} is invalid; valid: {', '.join(ROLES)}")
        if teacher is not None and self.role != "student":
            raise ValueError(f"role: {self.role!r} trains without a teacher; pass teacher=None or role='student'")
        if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
            raise ValueError(f"run_id: {run_id!r} is invalid; expected a non-empty string, or None for a fresh id")
        if controls is not None and not isinstance(controls, Controls):
            raise ValueError(f"controls: expected a workbench Controls or None, got {type(controls).__name__}")
        self.teacher, self.student = teacher, student
        self.teacher_key, self.output_cache = teacher_key, output_cache  # shared teacher outputs
        self.data: DataSplits = as_splits(data)
        self.sequence = is_sequence(self.data)  # token blocks: logits (B, L, V), targets (B, L)
        self.run_id = run_id or f"{self.role}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self.controls = controls or Controls(self.config.weights)
        self.recorder = History()
        self.callbacks = _callbacks(callbacks)
        self.adapter: nn.Module | None = None
        self._net: nn.Module = student  # what the loop calls: the student or its DDP / compiled wrapper
        self._taps: dict[str, FeatureTap] = {}
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()  # cleared while paused
        self._in_pause = threading.Event()  # set while the training thread waits in pause
        self._pause_lock = threading.Lock()  # orders entering the pause wait against resume / stop
        self._started = threading.Lock()  # held from the first fit() on: a Distiller runs once
        check_transfer(self.config, self.data, teacher)
        _check_text_only(self.config, self.sequence)
        if self.sequence:
            check_sequence_setup(self.config, self.data)
            check_sequence_models(self.data, teacher, student)
            self._hint_shapes = None
        else:
            self._hint_shapes = check_models(self.config, self.data, teacher, student)
        self.drop_single = _check_batchnorm(self.config, self.data, student)
        # top-k teacher outputs (None: every class), and why the teacher is queried live when it is
        self.top_k, self._full_note = resolve_top_k(self.config, self.data, teacher, self.sequence)
        self._record: TopKRecord | None = None  # the cached top-k teacher, once fit() has built it
        self._notes: list[str] = []  # said once in FitStart's message

    # -- wiring, before fit() ----------------------------------------------------------------
    def _check_controls(self, w: LossWeights) -> None:
        """Refuse live values this run's cached teacher outputs cannot serve (see ``teacher_outputs``)."""
        check_controls(w, self._record, self._full_note, self.config.teacher_top_k)

    def add_callback(self, callback: Any) -> None:
        """Add one callback (it gets this run's events after those given to the constructor)."""
        if self._started.locked():
            raise RuntimeError(
                f"add_callback: run {self.run_id!r} has already started; callbacks are fixed when fit() begins"
            )
        self.callbacks.extend(_callbacks([callback]))

    def use_controls(self, controls: Controls) -> None:
        """Read temperature and loss weights from ``controls`` (e.g. shared by a live job's fits)."""
        if not isinstance(controls, Controls):
            raise ValueError(f"controls: expected a workbench Controls, got {type(controls).__name__}")
        self.controls = controls

    # -- control from any thread -------------------------------------------------------------
    def stop(self) -> None:
        """End the run before its next step; it keeps everything logged so far."""
        self._stop.set()
        with self._pause_lock:
            self._running.set()
            self._in_pause.clear()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        with self._pause_lock:
            self._running.set()
            self._in_pause.clear()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_paused(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for the training thread to block in pause; True once it has.

        True means no step runs until ``resume()`` or ``stop()``: unlike ``paused`` (the flag
        ``pause()`` sets), it says the loop has actually stopped moving."""
        return self._in_pause.wait(timeout)

    def set_controls(self, **values: Any) -> LossWeights:
        """Change temperature, loss weights or divergence (``temperature``, ``w_ce``, ``w_kd``, ``w_mse``,
        ``w_hint``, ``alpha``, ``divergence``, ``beta``) from the next step."""
        unknown = sorted(set(values) - set(CONTROLS))
        if unknown:
            raise ValueError(f"controls: unknown name(s) {unknown}; valid: {', '.join(CONTROLS)}")
        return self.controls.update(**values)

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train; returns a :class:`FitResult`. Errors inside the run end it with status "error".

        A Distiller runs once (one run id, one history): to train on, pass the trained student
        to a new Distiller."""
        if not self._started.acquire(blocking=False):
            raise RuntimeError(
                f"fit: run {self.run_id!r} has already been started; a Distiller runs once, "
                "create a new one (with the trained student) to train again"
            )
        cfg = self.config
        s = self._begin()  # errors here raise; from the try on they end the run with a status
        status, message, tb = "completed", "", None
        try:
            self._setup(s)
            s.events("on_fit_start", self._fit_start(s))
            plain_ce = LossWeights(cfg.temperature, 1.0, 0.0, 0.0, 0.0, cfg.divergence, cfg.beta)  # no teacher
            done = False
            for epoch in range(1, cfg.epochs + 1):
                s.epoch = epoch
                tally = _EpochTally(started=time.perf_counter())
                for batch in s.source.batches(s.device):
                    if not self._running.is_set():
                        self._wait_while_paused()
                    if self._stop.is_set() and not s.ddp:  # under DDP: agreed at reported steps
                        raise _Stopped("stopped by the user")
                    w = self.controls.current if self.teacher is not None else plain_ce
                    out = self._train_step(s, batch, w)
                    s.step += 1
                    s.samples += out.labels.shape[0]
                    tally.add(out.loss)
                    changed = s.last_w is not None and w is not s.last_w
                    if s.step % cfg.log_every == 0 or changed or s.step == s.steps_planned:
                        p = self._step_end(s, out, w, changed)
                        tally.reports.append(p)
                        s.events("on_step_end", p)
                        if s.ddp and distributed.any_rank(self._stop.is_set(), s.device):
                            raise _Stopped("stopped by the user")
                    s.last_w = w
                    if cfg.eval_every is not None and s.step % cfg.eval_every == 0:
                        self._evaluate(s)
                    if s.step >= s.steps_planned:
                        done = True
                        break
                if tally.steps:
                    s.events("on_epoch_end", self._epoch_end(s, tally))
                    self._check_stop_request(s)
                if cfg.eval_every is None:
                    self._evaluate(s)
                if done:
                    break
            s.final = self._final_eval(s)
        except _Stopped as e:
            status, message = "stopped", str(e)
        except Diverged as e:
            status, message = "diverged", str(e)
        except Exception as e:  # an error ends the run; what was logged is kept
            status, message, tb = "error", f"{type(e).__name__}: {e}", traceback.format_exc()
        finally:
            self._teardown(s)
        if status == "stopped" and not s.final and s.step > 0:
            s.final = self._final_eval_if_possible(s)
        end = self._fit_end(s, status, message)
        try:
            s.events("on_fit_end", end)
        except Exception as e:  # a failing callback at the very end still leaves a result
            if status == "completed":
                status, message, tb = "error", f"{type(e).__name__}: {e}", traceback.format_exc()
        return self._result(s, end, status, message, tb)

    # -- set-up and teardown -----------------------------------------------------------------
    def _begin(self) -> _LoopState:
        """The clock, the device (and, under torchrun, the process group) and the dispatcher."""
        t0 = time.perf_counter()
        device = resolve_device(self.config.device)
        ddp = distributed.init(device)  # under torchrun: a process group, one rank per process
        device = distributed.local_device(device)
        train = self.data.train
        if ddp and isinstance(train, DataLoader) and not isinstance(train.sampler, DistributedSampler):
            warnings.warn(
                "data['train']: under torchrun every rank iterates this DataLoader whole (the same batches "
                "on every rank: correct, but no speed-up); pass tensors or arrays (the engine gives each "
                "rank its share of every batch) or use torch.utils.data.DistributedSampler",
                stacklevel=3,
            )
        # Only rank 0 calls the user's callbacks (and so writes runs and draws).
        events = Dispatcher([self.recorder, *self.callbacks] if distributed.is_main() else [self.recorder])
        cfg = self.config
        evaluate = (
            SequenceEvaluator(
                self.student, self.teacher, self.run_id, self.role, cfg.eval_batch_size, self.data, cfg.sample_tokens
            )
            if self.sequence
            else Evaluator(self.student, self.teacher, self.run_id, self.role, cfg.eval_batch_size)
        )
        return _LoopState(t0=t0, device=device, ddp=ddp, events=events, evaluate=evaluate)

    def _setup(self, s: _LoopState) -> None:
        """Seed, put the models on the device, and build the batches, optimizer, schedule and precision."""
        cfg, data, teacher, student, device = self.config, self.data, self.teacher, self.student, s.device
        torch.manual_seed(cfg.seed)  # dropout, adapter init and other random ops
        gen = torch.Generator().manual_seed(cfg.seed)  # the batch order
        student.to(device).train()
        if teacher is not None:
            teacher.to(device).eval()
            s.teacher_flags = [p.requires_grad for p in teacher.parameters()]
            teacher.requires_grad_(False)
        self._net = self._wrap(s)
        if self._hint_shapes is not None:
            if s.ddp:
                raise ValueError("hint_student, hint_teacher: feature hints are not supported under DDP yet")
            self._taps = {
                "student": FeatureTap(find_module(student, cfg.hint_student, "hint_student")),
                "teacher": FeatureTap(find_module(teacher, cfg.hint_teacher, "hint_teacher")),
            }
            self.adapter = make_adapter(*self._hint_shapes).to(device)
        s.train = data.train.to(device) if isinstance(data.train, Split) else data.train
        s.evals = {n: (split.to(device) if isinstance(split, Split) else split) for n, split in data.splits().items()}
        s.evals["train"] = train_eval_split(s.train, data) if self.sequence else s.train
        s.source = BatchSource(
            s.train,
            cfg,
            device,
            gen,
            data.class_names,
            data.unlabeled,
            self._teacher_outputs if teacher is not None else None,
            drop_single=self.drop_single,
            generated=self._generated_blocks(s.train) if (teacher is not None and cfg.generated_blocks) else None,
        )
        if teacher is not None and self.sequence and cfg.on_policy > 0:
            s.policy = policy_generator(cfg.seed, distributed.rank())
            self._notes.append(
                f"on-policy KD: {cfg.on_policy:g} of each KD batch's blocks continued by the student's own samples "
                f"after {policy_prompt_tokens(s.train.x.shape[1])} prompt tokens, scored by the teacher live"
            )
        if s.source.drops_single:
            self._notes.append(
                f"a last batch of 1 sample is dropped from each pass (batch_size={cfg.batch_size}): the "
                "student's BatchNorm layers cannot train on one sample"
            )
        if self._full_note:
            self._notes.append(self._full_note)
        if teacher is not None:
            self._check_controls(self.controls.current)  # e.g. values set on a live job before this fit
            self.controls.check = self._check_controls
        s.steps_planned = cfg.epochs * s.source.steps_per_epoch
        if cfg.max_steps is not None:
            s.steps_planned = min(s.steps_planned, cfg.max_steps)
        s.opt = self._optimizer()
        s.autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16 if cfg.precision == "bf16" else torch.float16)
            if cfg.precision != "fp32"
            else nullcontext()
        )
        s.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        n = s.steps_planned
        s.sched = (
            torch.optim.lr_scheduler.LambdaLR(s.opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, n) / n)))
            if cfg.scheduler == "cosine"
            else None
        )

    def _teardown(self, s: _LoopState) -> None:
        """Give the teacher back its requires_grad flags, remove the feature taps and the controls' check."""
        if self.controls.check == self._check_controls:
            self.controls.check = None
        if self.teacher is not None and s.teacher_flags is not None:
            for p, flag in zip(self.teacher.parameters(), s.teacher_flags):
                p.requires_grad_(flag)
        for tap in self._taps.values():
            tap.remove()

    def _result(self, s: _LoopState, end: FitEnd, status: str, message: str, tb: str | None) -> FitResult:
        """The run's result; its summary holds the flat numbers (best val accuracy and final metrics)."""
        data, student, teacher = self.data, self.student, self.teacher
        summary = {
            "run_id": self.run_id,
            "role": self.role,
            "status": status,
            "message": message,
            "steps": s.step,
            "epochs": s.epoch,
            "seconds": end.seconds,
            "dataset": data.name,
            "student_params": num_params(student),
            "teacher_params": num_params(teacher),
            **{f"best_{k}": v for k, v in s.best.items()},
            **s.final,
        }
        return FitResult(self.run_id, self.role, status, message, summary, student, self.recorder, tb, self.adapter)

    # -- pieces of the loop ------------------------------------------------------------------
    def _train_step(self, s: _LoopState, batch: Batch, w: LossWeights) -> _StepOutput:
        """One optimizer step on ``batch`` under loss weights ``w`` (on-policy KD: after the student
        has continued its share of the KD blocks)."""
        with s.autocast:
            if s.policy is not None:
                batch = self._on_policy(s, batch, w)
            out = self._loss(batch, w)
        s.opt.zero_grad(set_to_none=True)
        s.scaler.scale(out.loss).backward()
        s.scaler.unscale_(s.opt)  # clip the true gradients (fp16)
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(s.opt.param_groups[0]["params"], self.config.grad_clip)
        s.scaler.step(s.opt)  # skipped by fp16 on inf / NaN gradients
        s.scaler.update()
        if s.sched is not None:
            s.sched.step()
        return out

    def _loss(self, batch: Batch, w: LossWeights) -> _StepOutput:
        """One step's loss, its terms, and the student's logits and labels on the CE batch."""
        x_ce, y_ce, x_kd, t_kd, tf_kd, kd_mask = batch
        teacher = self.teacher
        if teacher is None:
            s, y = self._rows(logits_of(self._net(x_ce)), y_ce)  # (B, K), or token data's target rows (N, V)
            loss = ce_loss(s, y)
            return _StepOutput(loss, {"ce": loss.detach()}, s, y)
        taps = self._taps
        x_teacher = x_ce if x_kd is None else x_kd
        record = t_kd if isinstance(t_kd, TopKRecord) else None  # the cached top-k teacher: (B[, L], k)
        if record is not None:
            t_kd = None if self._needs_full_teacher(w) else t_kd
        if t_kd is None:  # not cached (mixup, DataLoader, cache off; top-k only): query the frozen teacher
            with torch.no_grad():
                t_kd = logits_of(teacher(x_teacher)).float()
                tf_kd = taps["teacher"].value if taps else None
        net = self._net  # the student, or its DDP / compiled wrapper
        if x_kd is None:  # one stream: the CE batch is the KD batch
            s_ce = s_kd = logits_of(net(x_ce))
            fs = taps["student"].value if taps else None
        else:  # two streams, one forward pass: [CE batch; KD batch]
            n = x_ce.shape[0]
            s_all = logits_of(net(torch.cat([x_ce, x_kd])))
            s_ce, s_kd = s_all[:n], s_all[n:]
            fs = taps["student"].value[n:] if taps else None
        hint = self.adapter(fs) if (taps and w.hint > 0) else None
        if record is not None and t_kd is record:
            t_kd = None  # the record alone: a top-k KD term, no full-teacher term
        if self.sequence:  # (B, L, V) -> rows of the target tokens: every term is a mean per token
            kd_positions = (y_ce != IGNORE_INDEX) if x_kd is None else kd_mask  # (B, L)
            t_kd = None if t_kd is None else rows(t_kd, kd_positions)  # (N_kd, V)
            record = None if record is None else record.rows(kd_positions)  # (N_kd, k)
            s_kd = None if x_kd is None else rows(s_kd, kd_positions)  # one stream: the CE rows below
            s_ce, y_ce = target_rows(s_ce, y_ce)  # (N, V), (N,)
        loss, terms = distill_loss(
            s_ce,
            y_ce,
            t_kd,
            w,
            student_feature=hint,
            teacher_feature=tf_kd,
            kd_student_logits=s_kd,
            teacher_topk=record,
        )
        return _StepOutput(loss, terms, s_ce, y_ce)

    def _on_policy(self, s: _LoopState, batch: Batch, w: LossWeights) -> Batch:
        """``batch`` with ``on_policy`` of its KD blocks continued by the student and scored by the teacher
        (:func:`.batches.on_policy_batch`); a cached top-k record that this step cannot use is dropped first,
        so the teacher is not asked for it on the samples (``_loss`` queries it live on the whole batch)."""
        if isinstance(batch.t_kd, TopKRecord) and self._needs_full_teacher(w):
            batch = batch._replace(t_kd=None)
        return on_policy_batch(batch, self.config.on_policy, self.student, self.teacher, s.policy)

    @staticmethod
    def _needs_full_teacher(w: LossWeights) -> bool:
        """Whether the step's terms read the teacher's full logits (a top-k record cannot serve them)."""
        return (w.kd > 0 and get_divergence(w.divergence).needs_full_teacher) or w.mse > 0

    def _rows(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classifier logits and labels as they are; token data's as rows of its target tokens."""
        return target_rows(logits, labels) if self.sequence else (logits, labels)

    def _teacher_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor | TopKRecord, torch.Tensor | None]:
        """The teacher's outputs (and hinted features) on the fixed transfer inputs ``x``, cached (see
        :func:`teacher_outputs.teacher_outputs`); a top-k record serves the top-k divergences."""
        outputs = teacher_outputs(
            self.teacher,
            x,
            top_k=self.top_k,
            temperature=self.controls.current.temperature,
            batch_size=self.config.eval_batch_size,
            feature_tap=self._taps["teacher"] if self._taps else None,
            cache=self.output_cache if self.teacher_key is not None else None,
            teacher_key=self.teacher_key,
            hint_teacher=self.config.hint_teacher,
        )
        self._record = outputs[0] if isinstance(outputs[0], TopKRecord) else None
        self._notes.append(outputs_note(outputs[0]))
        return outputs

    def _generated_blocks(self, train: Split) -> torch.Tensor:
        """The teacher's own blocks for the KD stream (``generated_blocks``), made once per teacher: read
        from the output cache when this teacher's were stored there, else sampled (and stored)."""
        cfg, t0 = self.config, time.perf_counter()
        blocks = generate_blocks(
            self.teacher,
            train.x,
            blocks=cfg.generated_blocks,
            temperature=cfg.generate_temperature,
            seed=cfg.seed,
            batch_size=cfg.eval_batch_size,
            cache=self.output_cache if self.teacher_key is not None else None,
            teacher_key=self.teacher_key,
        )
        prompt = min(GENERATED_PROMPT_TOKENS, blocks.shape[1] - 1)
        self._notes.append(
            f"{len(blocks)} teacher-generated blocks (T={cfg.generate_temperature:g}, seed {cfg.seed}, prompts of "
            f"{prompt} train tokens) join the KD stream only, ready in {time.perf_counter() - t0:.1f} s"
        )
        return blocks

    def _wrap(self, s: _LoopState) -> nn.Module:
        """The module the loop calls: the student, wrapped in DDP and/or torch.compile."""
        net: nn.Module = self.student
        if s.ddp:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(net, device_ids=[s.device.index] if s.device.type == "cuda" else None)
        if self.config.compile:
            if not hasattr(torch, "compile"):
                raise ValueError(f"compile: torch {torch.__version__} has no torch.compile; use compile=False")
            net = torch.compile(net)
        return net

    def _wait_while_paused(self) -> None:
        """Block the training thread until resume() or stop(); ``wait_paused`` sees it waiting."""
        with self._pause_lock:
            if self._running.is_set():  # resumed (or stopped) since the loop looked
                return
            self._in_pause.set()
        try:
            while not self._running.wait(timeout=0.1):  # a timed wait keeps Ctrl-C working
                pass
        finally:
            self._in_pause.clear()

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = [p for p in self.student.parameters() if p.requires_grad]
        if self.adapter is not None:
            params += list(self.adapter.parameters())
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    # -- payloads and evaluations ------------------------------------------------------------
    def _fit_start(self, s: _LoopState) -> FitStart:
        cfg, data, train = self.config, self.data, s.train
        return FitStart(
            run_id=self.run_id,
            role=self.role,
            config=frozen_map(cfg.to_dict()),
            device=str(s.device),
            dataset=data.name,
            num_classes=data.num_classes,
            train_size=len(train) if isinstance(train, Split) else len(train.dataset),
            student_params=num_params(self.student),
            teacher_params=num_params(self.teacher),
            epochs=cfg.epochs,
            steps_per_epoch=s.source.steps_per_epoch,
            steps_planned=s.steps_planned,
            started_at=time.time(),
            labeled_size=s.source.labeled,
            transfer_size=s.source.transfer,
            message="; ".join(self._notes),
        )

    def _step_end(self, s: _LoopState, out: _StepOutput, w: LossWeights, changed: bool) -> StepEnd:
        """The reported step: loss, terms and batch accuracy synced to the host (averaged over ranks)."""
        names = list(out.terms)
        acc = (out.logits.detach().argmax(1) == out.labels).sum(dtype=torch.float32) / out.labels.shape[0]
        values = distributed.mean(
            torch.stack([out.loss.detach().float(), acc, *(out.terms[n].float() for n in names)])
        ).tolist()
        lr = s.opt.param_groups[0]["lr"]
        if not math.isfinite(values[0]):
            raise Diverged(f"loss became {values[0]} at step {s.step}; try a lower lr (now {lr:g}) or grad_clip")
        return StepEnd(
            run_id=self.run_id,
            role=self.role,
            step=s.step,
            epoch=s.epoch,
            seconds=time.perf_counter() - s.t0,
            lr=float(lr),
            loss=values[0],
            terms=frozen_map(dict(zip(names, values[2:]))),
            batch_acc=values[1],
            temperature=w.temperature,
            w_ce=w.ce,
            w_kd=w.kd,
            w_mse=w.mse,
            w_hint=w.hint,
            samples=s.samples,
            controls_changed=changed,
            divergence=w.divergence,
            beta=w.beta,
        )

    def _epoch_end(self, s: _LoopState, tally: _EpochTally) -> EpochEnd:
        """The epoch's payload: the loss averaged over every step; terms and batch accuracy
        averaged over the epoch's reported steps (they are synced only when reported)."""
        loss = distributed.mean(tally.loss_sum).item() / tally.steps
        if not math.isfinite(loss):
            raise Diverged(f"loss became {loss} during epoch {s.epoch} (by step {s.step}); try a lower lr or grad_clip")
        reports = tally.reports
        names = sorted({n for p in reports for n in p.terms})
        terms = {
            n: sum(p.terms[n] for p in reports if n in p.terms) / sum(n in p.terms for p in reports) for n in names
        }
        return EpochEnd(
            run_id=self.run_id,
            role=self.role,
            epoch=s.epoch,
            step=s.step,
            loss=loss,
            terms=frozen_map(terms),
            train_acc=sum(p.batch_acc for p in reports) / len(reports) if reports else None,
            seconds=time.perf_counter() - s.t0,
            epoch_seconds=time.perf_counter() - tally.started,
        )

    def _fit_end(self, s: _LoopState, status: str, message: str) -> FitEnd:
        return FitEnd(
            run_id=self.run_id,
            role=self.role,
            status=status,
            message=message,
            step=s.step,
            epoch=s.epoch,
            seconds=time.perf_counter() - s.t0,
            best=frozen_map(s.best),
            final=frozen_map(s.final),
        )

    def _check_stop_request(self, s: _LoopState) -> None:
        """End the run when a callback asks to (``should_stop``); under DDP every rank agrees."""
        reason = s.events.stop_request()  # only rank 0 has the user's callbacks: ranks agree here
        if s.ddp and distributed.any_rank(reason is not None, s.device):
            raise _Stopped(reason or "stopped on rank 0")
        if reason:
            raise _Stopped(reason)

    def _evaluate(self, s: _LoopState) -> None:
        """Evaluate the held-out splits (firing on_eval_end for each) and keep the best val accuracy.

        ``s.best`` is updated only once the stop check has passed, as a run's summary has always
        reported it."""
        best = s.best
        for name in ("val", "test"):
            if name not in s.evals:
                continue
            p = s.evaluate(name, s.evals[name], s.step, s.epoch, s.t0)
            if not math.isfinite(p.loss) and not math.isfinite(p.acc):
                raise Diverged(f"{name} loss became {p.loss} at step {s.step}")
            s.events("on_eval_end", p)
            s.latest_eval[name] = p
            if name == "val" and (not best or p.acc > best["val_acc"]):
                best = {"val_acc": p.acc, "step": s.step, "epoch": s.epoch}
        self._check_stop_request(s)
        s.best = best

    def _final_eval(self, s: _LoopState) -> dict[str, Any]:
        """Evaluate every split at the end; returns flat ``{split}_{metric}`` numbers."""
        final: dict[str, Any] = {}
        for name in ("train", "val", "test"):
            if name not in s.evals:
                continue
            p = s.latest_eval.get(name)
            if p is None or p.step != s.step:  # not evaluated at this step yet
                p = s.evaluate(name, s.evals[name], s.step, s.epoch, s.t0)
                s.events("on_eval_end", p)
            for k in FINAL_METRICS:
                if getattr(p, k) is not None:
                    final[f"{name}_{k}"] = getattr(p, k)
        return final

    def _final_eval_if_possible(self, s: _LoopState) -> dict[str, Any]:
        """A stopped run's final numbers are a bonus: ``{}`` when evaluating fails."""
        try:
            return self._final_eval(s)
        except Exception:
            return {}


def _check_text_only(cfg: DistillConfig, sequence: bool) -> None:
    """Teacher-generated blocks and on-policy samples are token blocks: classifier data refuses them."""
    for name in ("generated_blocks", "on_policy"):
        if getattr(cfg, name) > 0 and not sequence:
            raise ValueError(
                f"{name}: {getattr(cfg, name)!r} needs token data (text blocks, e.g. from_text or "
                "load_dataset('shakespeare-char')): a classifier's inputs are not sequences; use 0"
            )


def _check_batchnorm(cfg: DistillConfig, data: DataSplits, student: nn.Module) -> bool:
    """Whether batches of one sample must be dropped: the student has BatchNorm layers (which cannot
    normalise one sample in training mode); a batch size of 1 is refused then."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in student.modules()):
        return False
    if cfg.batch_size == 1:
        raise ValueError(
            "batch_size: 1 cannot train a student with BatchNorm layers (in training mode they need more "
            "than one sample per batch); use batch_size >= 2"
        )
    if isinstance(data.train, Split) and len(data.train) == 1:
        raise ValueError("data['train']: has 1 sample; a student with BatchNorm layers needs at least 2 to train")
    return isinstance(data.train, Split)


def _config(config: Any, overrides: Mapping[str, Any]) -> DistillConfig:
    """The run's config from a DistillConfig, a dict of its fields or None, with ``overrides`` applied."""
    if config is None:
        config = DistillConfig()
    elif isinstance(config, Mapping):
        config = DistillConfig.from_dict(config)
    elif not isinstance(config, DistillConfig):
        raise ValueError(
            f"config: {type(config).__name__} {config!r:.80} is invalid; expected a DistillConfig, "
            "a dict of its fields or None"
        )
    return config.replace(**overrides) if overrides else config


def _check_pair(teacher: Any, student: Any) -> None:
    """Two distinct modules that share no parameters (freezing the teacher must not freeze the student)."""
    if not isinstance(student, nn.Module):
        raise ValueError(f"student: expected a torch.nn.Module, got {type(student).__name__}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise ValueError(f"teacher: expected a torch.nn.Module or None, got {type(teacher).__name__}")
    if teacher is student:
        raise ValueError("teacher, student: the same module was passed as both; pass two models")
    if teacher is not None:
        shared = {id(p) for p in teacher.parameters()} & {id(p) for p in student.parameters()}
        if shared:
            raise ValueError(
                f"teacher, student: they share {len(shared)} parameter tensor(s) (is one part of the "
                "other?); the teacher is frozen while the student trains: pass a copy.deepcopy"
            )


def _callbacks(callbacks: Any) -> list[Any]:
    """The callbacks as a list, each checked to have a hook (a lone callback must be wrapped in a list)."""
    if callbacks is None:
        return []
    if (
        any(callable(getattr(callbacks, h, None)) for h in HOOKS)
        or isinstance(callbacks, (str, bytes, Mapping))
        or not isinstance(callbacks, Iterable)
    ):
        raise ValueError(
            f"callbacks: expected a list of callback objects, got {type(callbacks).__name__}; pass callbacks=[cb]"
        )
    callbacks = list(callbacks)
    Dispatcher(callbacks)  # raises on an object with no hook
    return callbacks


def distill(
    teacher: nn.Module,
    student: nn.Module,
    data: Any,
    config: DistillConfig | None = None,
    callbacks: Iterable[Any] = (),
    **overrides: Any,
) -> FitResult:
    """Distill ``teacher`` into ``student``: ``Distiller(teacher, student, data, config, callbacks).fit()``."""
    if teacher is None:
        raise ValueError("teacher: None was given; to train without a teacher use workbench.train()")
    return Distiller(teacher, student, data, config, callbacks, **overrides).fit()


def train(
    model: nn.Module,
    data: Any,
    config: DistillConfig | None = None,
    callbacks: Iterable[Any] = (),
    role: str = "teacher",
    **overrides: Any,
) -> FitResult:
    """Train ``model`` on plain cross-entropy (a teacher, or a scratch baseline with ``role="baseline"``)."""
    return Distiller(None, model, data, config, callbacks, role=role, **overrides).fit()
