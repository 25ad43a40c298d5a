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
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from . import distributed
from .callbacks import History
from .config import DistillConfig, check_alpha, check_weights
from ..data.splits import DataSplits, Split, as_splits
from .evaluation import Evaluator, logits_of
from .events import HOOKS, Dispatcher, EpochEnd, EvalEnd, FitEnd, FitStart, StepEnd, frozen_map
from .hints import FeatureTap, find_module, make_adapter
from .losses import LossWeights, ce_loss, distill_loss
from .preflight import check_models, check_transfer, num_params, resolve_device
from .batches import BatchSource

ROLES = ("teacher", "student", "baseline")
CONTROLS = ("temperature", "w_ce", "w_kd", "w_mse", "w_hint", "alpha")  # what set_controls may change
__all__ = ["Controls", "Distiller", "FitResult", "distill", "train", "logits_of", "resolve_device"]


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


class _Stopped(Exception):
    """Raised inside ``fit`` to end the run with status "stopped"."""


class Controls:
    """Temperature and loss weights, changeable from any thread while a run goes on.

    The training thread reads ``current`` (one attribute read) every step; ``update`` validates
    and swaps in a new frozen :class:`LossWeights`, so a change applies from the next step.
    """

    def __init__(self, weights: LossWeights):
        self.current = weights
        self._lock = threading.Lock()

    def update(self, temperature: float | None = None, w_ce: float | None = None,
               w_kd: float | None = None, w_mse: float | None = None,
               w_hint: float | None = None, alpha: float | None = None) -> LossWeights:
        """Set some of the values; raises ``ValueError`` (and changes nothing) on a bad one."""
        with self._lock:
            w = self.current
            if alpha is not None:
                if w_ce is not None or w_kd is not None:
                    raise ValueError("alpha: give either alpha or w_ce/w_kd, not both")
                preset = LossWeights.from_alpha(check_alpha(alpha))
                w_ce, w_kd = preset.ce, preset.kd
            new = dict(temperature=w.temperature if temperature is None else temperature,
                       w_ce=w.ce if w_ce is None else w_ce, w_kd=w.kd if w_kd is None else w_kd,
                       w_mse=w.mse if w_mse is None else w_mse,
                       w_hint=w.hint if w_hint is None else w_hint)
            check_weights(**new)
            self.current = LossWeights(*(float(v) for v in new.values()))
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


class Distiller:
    """Distills ``teacher`` into ``student`` on ``data`` under ``config``; ``teacher=None``
    trains on plain cross-entropy (a teacher, or a scratch baseline with ``role="baseline"``).

    ``stop()``, ``pause()``, ``resume()`` and ``set_controls()`` may be called from any thread
    and take effect before the next step. With ``teacher_key`` and an ``output_cache``
    (:class:`workbench.store.cache.OutputCache`) the teacher's outputs on the transfer set are shared
    across runs and sessions.
    """

    def __init__(self, teacher: nn.Module | None, student: nn.Module, data: Any,
                 config: DistillConfig | Mapping[str, Any] | None = None,
                 callbacks: Iterable[Any] = (), role: str | None = None,
                 run_id: str | None = None, controls: Controls | None = None,
                 teacher_key: str | None = None, output_cache: Any = None, **overrides: Any):
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
        self.run_id = run_id or f"{self.role}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self.controls = controls or Controls(self.config.weights)
        self.recorder = History()
        self.callbacks = _callbacks(callbacks)
        self.adapter: nn.Module | None = None
        self._latest_eval: dict[str, EvalEnd] = {}
        self._net: nn.Module = student
        self._ddp = False
        self._device = torch.device("cpu")
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()  # cleared while paused
        self._started = threading.Lock()  # held from the first fit() on: a Distiller runs once
        check_transfer(self.config, self.data, teacher)
        self._hint_shapes = check_models(self.config, self.data, teacher, student)

    # -- control from any thread -------------------------------------------------------------
    def stop(self) -> None:
        """End the run before its next step; it keeps everything logged so far."""
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def set_controls(self, **values: float) -> LossWeights:
        """Change temperature / loss weights (``temperature``, ``w_ce``, ``w_kd``, ``w_mse``, ``w_hint``, ``alpha``)."""
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
            raise RuntimeError(f"fit: run {self.run_id!r} has already been started; a Distiller runs once, "
                               "create a new one (with the trained student) to train again")
        cfg, data, teacher, student = self.config, self.data, self.teacher, self.student
        t0 = time.perf_counter()
        step = epoch = 0
        status, message, tb = "completed", "", None
        best: dict[str, Any] = {}
        final: dict[str, Any] = {}
        teacher_flags = None
        evals: dict[str, Split | DataLoader] = {}
        evaluate = Evaluator(student, teacher, self.run_id, self.role, cfg.eval_batch_size)
        self._taps: dict[str, FeatureTap] = {}
        device = resolve_device(cfg.device)
        self._ddp = distributed.init(device)  # under torchrun: a process group, one rank per process
        device = distributed.local_device(device)
        if self._ddp and isinstance(data.train, DataLoader) and not isinstance(data.train.sampler, DistributedSampler):
            warnings.warn("data['train']: under torchrun every rank iterates this DataLoader whole (the same batches "
                          "on every rank: correct, but no speed-up); pass tensors or arrays (the engine gives each "
                          "rank its share of every batch) or use torch.utils.data.DistributedSampler", stacklevel=2)
        # Only rank 0 calls the user's callbacks (and so writes runs and draws).
        events = Dispatcher([self.recorder, *self.callbacks] if distributed.is_main() else [self.recorder])
        try:
            torch.manual_seed(cfg.seed)  # dropout, adapter init and other random ops
            gen = torch.Generator().manual_seed(cfg.seed)  # the batch order
            student.to(device).train()
            if teacher is not None:
                teacher.to(device).eval()
                teacher_flags = [p.requires_grad for p in teacher.parameters()]
                teacher.requires_grad_(False)
            self._net = self._wrap(student, device)
            if self._hint_shapes is not None:
                if self._ddp:
                    raise ValueError("hint_student, hint_teacher: feature hints are not supported under DDP yet")
                self._taps = {"student": FeatureTap(find_module(student, cfg.hint_student, "hint_student")),
                              "teacher": FeatureTap(find_module(teacher, cfg.hint_teacher, "hint_teacher"))}
                self.adapter = make_adapter(*self._hint_shapes).to(device)
            train = data.train.to(device) if isinstance(data.train, Split) else data.train
            evals = {n: (s.to(device) if isinstance(s, Split) else s) for n, s in data.splits().items()}
            evals["train"] = train
            source = BatchSource(self, train, device, gen)
            steps_planned = cfg.epochs * source.steps_per_epoch
            if cfg.max_steps is not None:
                steps_planned = min(steps_planned, cfg.max_steps)
            opt = self._optimizer()
            autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if cfg.precision == "bf16" else torch.float16)
                        if cfg.precision != "fp32" else nullcontext())
            scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
            sched = (torch.optim.lr_scheduler.LambdaLR(
                opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps_planned) / steps_planned)))
                if cfg.scheduler == "cosine" else None)
            events("on_fit_start", FitStart(
                run_id=self.run_id, role=self.role, config=frozen_map(cfg.to_dict()), device=str(device),
                dataset=data.name, num_classes=data.num_classes,
                train_size=len(train) if isinstance(train, Split) else len(train.dataset),
                student_params=num_params(student), teacher_params=num_params(teacher),
                epochs=cfg.epochs, steps_per_epoch=source.steps_per_epoch, steps_planned=steps_planned,
                started_at=time.time(), labeled_size=source.labeled, transfer_size=source.transfer))

            plain_ce = LossWeights(cfg.temperature, 1.0, 0.0, 0.0, 0.0)  # runs without a teacher
            last_w = None
            samples = 0
            done = False
            for epoch in range(1, cfg.epochs + 1):
                t_epoch = time.perf_counter()
                ep_loss_sum: torch.Tensor | None = None  # summed in place: no per-step sync
                ep_steps = 0
                ep_reports: list[StepEnd] = []
                for batch in source.epoch(device):
                    if not self._running.is_set():
                        self._wait_while_paused()
                    if self._stop.is_set() and not self._ddp:  # under DDP: agreed at reported steps
                        raise _Stopped("stopped by the user")
                    w = self.controls.current if teacher is not None else plain_ce
                    with autocast:
                        loss, terms, s_logits, yb = self._loss(batch, w)
                    opt.zero_grad(set_to_none=True)
                    if scaler is None:
                        loss.backward()
                    else:
                        scaler.scale(loss).backward()
                        scaler.unscale_(opt)
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_(opt.param_groups[0]["params"], cfg.grad_clip)
                    if scaler is None:
                        opt.step()
                    else:
                        scaler.step(opt)
                        scaler.update()
                    if sched is not None:
                        sched.step()
                    step += 1
                    samples += yb.shape[0]
                    ep_loss_sum = loss.detach().clone() if ep_loss_sum is None else ep_loss_sum.add_(loss.detach())
                    ep_steps += 1
                    changed = last_w is not None and w is not last_w
                    if step % cfg.log_every == 0 or changed or step == steps_planned:
                        p = self._step_payload(step, epoch, t0, opt, loss, terms, s_logits, yb, w, samples, changed)
                        ep_reports.append(p)
                        events("on_step_end", p)
                        if self._ddp and distributed.any_rank(self._stop.is_set(), device):
                            raise _Stopped("stopped by the user")
                    last_w = w
                    if cfg.eval_every is not None and step % cfg.eval_every == 0:
                        best = self._evaluate(evaluate, evals, step, epoch, t0, events, best)
                    if step >= steps_planned:
                        done = True
                        break
                self._epoch_end(events, epoch, step, t0, t_epoch, ep_loss_sum, ep_steps, ep_reports)
                if cfg.eval_every is None:
                    best = self._evaluate(evaluate, evals, step, epoch, t0, events, best)
                if done:
                    break
            final = self._final_eval(evaluate, evals, step, epoch, t0, events)
        except _Stopped as e:
            status, message = "stopped", str(e)
        except Diverged as e:
            status, message = "diverged", str(e)
        except Exception as e:  # an error ends the run; what was logged is kept
            status, message, tb = "error", f"{type(e).__name__}: {e}", traceback.format_exc()
        finally:
            if teacher is not None and teacher_flags is not None:
                for p, flag in zip(teacher.parameters(), teacher_flags):
                    p.requires_grad_(flag)
            for tap in self._taps.values():
                tap.remove()
        if status == "stopped" and not final and step > 0:
            try:
                final = self._final_eval(evaluate, evals, step, epoch, t0, events)
            except Exception:  # a stopped run's final numbers are a bonus
                final = {}
        end = FitEnd(run_id=self.run_id, role=self.role, status=status, message=message, step=step,
                     epoch=epoch, seconds=time.perf_counter() - t0, best=frozen_map(best),
                     final=frozen_map(final))
        try:
            events("on_fit_end", end)
        except Exception as e:  # a failing callback at the very end still leaves a result
            if status == "completed":
                status, message, tb = "error", f"{type(e).__name__}: {e}", traceback.format_exc()
        summary = {"run_id": self.run_id, "role": self.role, "status": status, "message": message,
                   "steps": step, "epochs": epoch, "seconds": end.seconds, "dataset": data.name,
                   "student_params": num_params(student), "teacher_params": num_params(teacher),
                   **{f"best_{k}": v for k, v in best.items()}, **final}
        return FitResult(self.run_id, self.role, status, message, summary, student, self.recorder, tb,
                         self.adapter)

    # -- pieces of the loop ------------------------------------------------------------------
    def _loss(self, batch: tuple, w: LossWeights) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
        """One step's loss: returns ``(total, terms, student logits on the CE batch, CE labels)``."""
        x_ce, y_ce, x_kd, t_kd, tf_kd = batch
        teacher = self.teacher
        if teacher is None:
            s = logits_of(self._net(x_ce))  # (B, K)
            loss = ce_loss(s, y_ce)
            return loss, {"ce": loss.detach()}, s, y_ce
        taps = self._taps
        x_teacher = x_ce if x_kd is None else x_kd
        if t_kd is None:  # not cached (mixup, DataLoader, cache off): query the frozen teacher
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
        loss, terms = distill_loss(s_ce, y_ce, t_kd, w, student_feature=hint, teacher_feature=tf_kd,
                                   kd_student_logits=s_kd)
        return loss, terms, s_ce, y_ce

    @torch.no_grad()
    def _teacher_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's logits (and hinted features) on fixed transfer inputs, computed once."""
        logits, feats = [], []
        bs = self.config.eval_batch_size
        for i in range(0, len(x), bs):
            logits.append(logits_of(self.teacher(x[i:i + bs])).float())
            if self._taps:
                feats.append(self._taps["teacher"].value)
        return torch.cat(logits), (torch.cat(feats) if feats else None)

    def _wrap(self, student: nn.Module, device: torch.device) -> nn.Module:
        """The module the loop calls: the student, wrapped in DDP and/or torch.compile."""
        self._device = device
        net: nn.Module = student
        if self._ddp:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
        if self.config.compile:
            if not hasattr(torch, "compile"):
                raise ValueError(f"compile: torch {torch.__version__} has no torch.compile; use compile=False")
            net = torch.compile(net)
        return net

    def _wait_while_paused(self) -> None:
        while not self._running.wait(timeout=0.1):
            pass

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = [p for p in self.student.parameters() if p.requires_grad]
        if self.adapter is not None:
            params += list(self.adapter.parameters())
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _step_payload(self, step, epoch, t0, opt, loss, terms, s_logits, yb, w, samples, changed) -> StepEnd:
        names = list(terms)
        acc = (s_logits.detach().argmax(1) == yb).sum(dtype=torch.float32) / yb.shape[0]
        values = distributed.mean(torch.stack([loss.detach().float(), acc, *(terms[n].float() for n in names)])).tolist()
        if not math.isfinite(values[0]):
            raise Diverged(f"loss became {values[0]} at step {step}; try a lower lr (now "
                           f"{opt.param_groups[0]['lr']:g}) or grad_clip")
        return StepEnd(run_id=self.run_id, role=self.role, step=step, epoch=epoch,
                       seconds=time.perf_counter() - t0, lr=float(opt.param_groups[0]["lr"]),
                       loss=values[0], terms=frozen_map(dict(zip(names, values[2:]))), batch_acc=values[1],
                       temperature=w.temperature, w_ce=w.ce, w_kd=w.kd, w_mse=w.mse, w_hint=w.hint,
                       samples=samples, controls_changed=changed)

    def _epoch_end(self, events, epoch, step, t0, t_epoch, loss_sum, n_steps, reports) -> None:
        """Fire on_epoch_end: the loss averaged over every step; terms and batch accuracy
        averaged over the epoch's reported steps (they are synced only when reported)."""
        if not n_steps:
            return
        loss = distributed.mean(loss_sum).item() / n_steps
        if not math.isfinite(loss):
            raise Diverged(f"loss became {loss} during epoch {epoch} (by step {step}); try a lower lr or grad_clip")
        names = sorted({n for p in reports for n in p.terms})
        terms = {n: sum(p.terms[n] for p in reports if n in p.terms) / sum(n in p.terms for p in reports)
                 for n in names}
        events("on_epoch_end", EpochEnd(
            run_id=self.run_id, role=self.role, epoch=epoch, step=step, loss=loss, terms=frozen_map(terms),
            train_acc=sum(p.batch_acc for p in reports) / len(reports) if reports else None,
            seconds=time.perf_counter() - t0, epoch_seconds=time.perf_counter() - t_epoch))
        self._check_stop_request(events)

    def _check_stop_request(self, events: Dispatcher) -> None:
        reason = events.stop_request()  # only rank 0 has the user's callbacks: ranks agree here
        if self._ddp and distributed.any_rank(reason is not None, self._device):
            raise _Stopped(reason or "stopped on rank 0")
        if reason:
            raise _Stopped(reason)

    def _evaluate(self, evaluate, evals, step, epoch, t0, events, best) -> dict[str, Any]:
        """Evaluate the held-out splits; keeps the best val accuracy. Returns the updated ``best``."""
        for name in ("val", "test"):
            if name not in evals:
                continue
            p = evaluate(name, evals[name], step, epoch, t0)
            if not math.isfinite(p.loss) and not math.isfinite(p.acc):
                raise Diverged(f"{name} loss became {p.loss} at step {step}")
            events("on_eval_end", p)
            self._latest_eval[name] = p
            if name == "val" and (not best or p.acc > best["val_acc"]):
                best = {"val_acc": p.acc, "step": step, "epoch": epoch}
        self._check_stop_request(events)
        return best

    def _final_eval(self, evaluate, evals, step, epoch, t0, events) -> dict[str, Any]:
        """Evaluate every split at the end; returns flat ``{split}_{metric}`` numbers."""
        final: dict[str, Any] = {}
        for name in ("train", "val", "test"):
            if name not in evals:
                continue
            p = self._latest_eval.get(name)
            if p is None or p.step != step:  # not evaluated at this step yet
                p = evaluate(name, evals[name], step, epoch, t0)
                events("on_eval_end", p)
            for k in ("acc", "loss", "teacher_acc", "agreement", "kl"):
                if getattr(p, k) is not None:
                    final[f"{name}_{k}"] = getattr(p, k)
        return final


def _config(config: Any, overrides: Mapping[str, Any]) -> DistillConfig:
    """The run's config from a DistillConfig, a dict of its fields or None, with ``overrides`` applied."""
    if config is None:
        config = DistillConfig()
    elif isinstance(config, Mapping):
        config = DistillConfig.from_dict(config)
    elif not isinstance(config, DistillConfig):
        raise ValueError(f"config: {type(config).__name__} {config!r:.80} is invalid; expected a DistillConfig, "
                         "a dict of its fields or None")
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
            raise ValueError(f"teacher, student: they share {len(shared)} parameter tensor(s) (is one part of the "
                             "other?); the teacher is frozen while the student trains: pass a copy.deepcopy")


def _callbacks(callbacks: Any) -> list[Any]:
    """The callbacks as a list, each checked to have a hook (a lone callback must be wrapped in a list)."""
    if callbacks is None:
        return []
    if any(callable(getattr(callbacks, h, None)) for h in HOOKS) or isinstance(callbacks, (str, bytes, Mapping)) \
            or not isinstance(callbacks, Iterable):
        raise ValueError(f"callbacks: expected a list of callback objects, got {type(callbacks).__name__}; "
                         "pass callbacks=[cb]")
    callbacks = list(callbacks)
    Dispatcher(callbacks)  # raises on an object with no hook
    return callbacks


def distill(teacher: nn.Module, student: nn.Module, data: Any, config: DistillConfig | None = None,
            callbacks: Iterable[Any] = (), **overrides: Any) -> FitResult:
    """Distill ``teacher`` into ``student``: ``Distiller(teacher, student, data, config, callbacks).fit()``."""
    if teacher is None:
        raise ValueError("teacher: None was given; to train without a teacher use workbench.train()")
    return Distiller(teacher, student, data, config, callbacks, **overrides).fit()


def train(model: nn.Module, data: Any, config: DistillConfig | None = None, callbacks: Iterable[Any] = (),
          role: str = "teacher", **overrides: Any) -> FitResult:
    """Train ``model`` on plain cross-entropy (a teacher, or a scratch baseline with ``role="baseline"``)."""
    return Distiller(None, model, data, config, callbacks, role=role, **overrides).fit()
