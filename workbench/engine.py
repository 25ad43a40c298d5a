"""The distillation engine: ``Distiller.fit()`` trains a student (or, with no teacher, a
teacher or scratch baseline) and reports every step to callbacks.

Read ``fit()`` top to bottom: each event is fired visibly in the loop body. The loop touches
the device's host only on the steps it reports (``log_every``) and at evaluations.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .callbacks import History
from .config import DistillConfig, check_weights
from .data import DataSplits, Split, TensorBatcher, as_splits
from .events import Dispatcher, EpochEnd, EvalEnd, FitEnd, FitStart, StepEnd, frozen_map
from .losses import LossWeights, ce_loss, distill_loss

ROLES = ("teacher", "student", "baseline")


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


def logits_of(out: Any) -> torch.Tensor:
    """Logits from a model output: a tensor, a tuple/list (first item), or ``.logits`` / ``["logits"]``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    raise TypeError(
        f"model output: cannot find logits in a {type(out).__name__}; return a tensor, a tuple "
        "whose first item is the logits, or an object/dict with a 'logits' entry"
    )


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; other names are checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device: {name!r} is invalid; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} is not available on this machine (no CUDA); use 'auto' or 'cpu'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device: {name!r} is not available on this machine (no MPS); use 'auto' or 'cpu'")
    return dev


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
                w_ce, w_kd = LossWeights.from_alpha(alpha).ce, 1.0 - alpha
            new = dict(temperature=w.temperature if temperature is None else temperature,
                       w_ce=w.ce if w_ce is None else w_ce, w_kd=w.kd if w_kd is None else w_kd,
                       w_mse=w.mse if w_mse is None else w_mse,
                       w_hint=w.hint if w_hint is None else w_hint)
            check_weights(**new)
            self.current = LossWeights(float(new["temperature"]), float(new["w_ce"]),
                                       float(new["w_kd"]), float(new["w_mse"]), float(new["w_hint"]))
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


def _num_params(m: nn.Module | None) -> int | None:
    return None if m is None else sum(p.numel() for p in m.parameters())


def _batches(split: Split | DataLoader, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(split, Split):
        for i in range(0, len(split), batch_size):
            yield split.x[i:i + batch_size], split.y[i:i + batch_size]
    else:
        for xb, yb in split:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


class Distiller:
    """Distills ``teacher`` into ``student`` on ``data`` under ``config``; ``teacher=None``
    trains on plain cross-entropy (a teacher, or a scratch baseline with ``role="baseline"``).

    ``stop()``, ``pause()``, ``resume()`` and ``set_controls()`` may be called from any thread
    and take effect before the next step.
    """

    def __init__(self, teacher: nn.Module | None, student: nn.Module, data: Any,
                 config: DistillConfig | Mapping[str, Any] | None = None,
                 callbacks: Iterable[Any] = (), role: str | None = None,
                 run_id: str | None = None, controls: Controls | None = None, **overrides: Any):
        if isinstance(config, Mapping):
            config = DistillConfig.from_dict(config)
        config = config or DistillConfig()
        self.config = config.replace(**overrides) if overrides else config
        if not isinstance(student, nn.Module):
            raise ValueError(f"student: expected a torch.nn.Module, got {type(student).__name__}")
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise ValueError(f"teacher: expected a torch.nn.Module or None, got {type(teacher).__name__}")
        if teacher is student:
            raise ValueError("teacher, student: the same module was passed as both; pass two models")
        self.role = role or ("student" if teacher is not None else "teacher")
        if self.role not in ROLES:
            raise ValueError(f"role: {self.role!r} is invalid; valid: {', '.join(ROLES)}")
        if teacher is not None and self.role != "student":
            raise ValueError(f"role: {self.role!r} trains without a teacher; pass teacher=None or role='student'")
        self.teacher, self.student = teacher, student
        self.data: DataSplits = as_splits(data)
        self.run_id = run_id or f"{self.role}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self.controls = controls or Controls(self.config.weights)
        self.recorder = History()
        self.callbacks = list(callbacks)
        self._latest_eval: dict[str, EvalEnd] = {}
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()  # cleared while paused
        self._check_models()

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
        return self.controls.update(**values)

    # -- checks before training --------------------------------------------------------------
    def _check_models(self) -> None:
        """Run both models on two training samples so shape mistakes fail before training."""
        train = self.data.train
        if isinstance(train, Split):
            x = train.x[:2]
        else:
            x = next(iter(train))[0][:2]
        outs = {}
        for name, m in (("student", self.student), ("teacher", self.teacher)):
            if m is None:
                continue
            dev = next((p.device for p in m.parameters()), torch.device("cpu"))
            was_training = m.training
            m.eval()
            try:
                with torch.no_grad():
                    out = logits_of(m(x.to(dev)))
            except TypeError:
                raise
            except Exception as e:
                raise ValueError(
                    f"{name}: forward pass on inputs of shape {tuple(x.shape)} failed: {type(e).__name__}: {e}"
                ) from e
            finally:
                m.train(was_training)
            if out.ndim != 2:
                raise ValueError(f"{name}: expected logits of shape (batch, classes), got {tuple(out.shape)}")
            outs[name] = out.shape[1]
        k = self.data.num_classes
        for name, c in outs.items():
            if k and c < k:
                raise ValueError(f"{name}: outputs {c} classes but the data has {k} (labels 0..{k - 1})")
        if len(outs) == 2 and outs["student"] != outs["teacher"]:
            raise ValueError(
                f"teacher, student: teacher outputs {outs['teacher']} classes, student {outs['student']}; they must match"
            )
        if self.teacher is not None and _num_params(self.teacher) < _num_params(self.student):
            warnings.warn(
                f"teacher has {_num_params(self.teacher)} parameters, fewer than the student's "
                f"{_num_params(self.student)}: were teacher and student swapped?", stacklevel=3
            )

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train; returns a :class:`FitResult`. Errors inside the run end it with status "error"."""
        cfg, data, teacher, student = self.config, self.data, self.teacher, self.student
        events = Dispatcher([self.recorder, *self.callbacks])
        t0 = time.perf_counter()
        step = epoch = 0
        status, message, tb = "completed", "", None
        best: dict[str, Any] = {}
        final: dict[str, Any] = {}
        teacher_flags = None
        evals: dict[str, Split | DataLoader] = {}
        teacher_eval_cache: dict[str, tuple[torch.Tensor, torch.Tensor, float] | None] = {}
        try:
            device = resolve_device(cfg.device)
            torch.manual_seed(cfg.seed)  # dropout and other random ops inside the models
            gen = torch.Generator().manual_seed(cfg.seed)  # the batch order
            student.to(device).train()
            if teacher is not None:
                teacher.to(device).eval()
                teacher_flags = [p.requires_grad for p in teacher.parameters()]
                teacher.requires_grad_(False)
            train = data.train.to(device) if isinstance(data.train, Split) else data.train
            evals = {n: (s.to(device) if isinstance(s, Split) else s) for n, s in data.splits().items()}
            evals["train"] = train
            # Teacher logits on a fixed in-memory train set are computed once and indexed per step.
            t_train = (self._teacher_logits(train, device)
                       if teacher is not None and cfg.cache_teacher and isinstance(train, Split) else None)
            batcher = TensorBatcher(len(train), cfg.batch_size, gen) if isinstance(train, Split) else None
            steps_per_epoch = len(batcher) if batcher is not None else len(train)
            steps_planned = cfg.epochs * steps_per_epoch
            if cfg.max_steps is not None:
                steps_planned = min(steps_planned, cfg.max_steps)
            opt = self._optimizer()
            sched = (torch.optim.lr_scheduler.LambdaLR(
                opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps_planned) / steps_planned)))
                if cfg.scheduler == "cosine" else None)
            events("on_fit_start", FitStart(
                run_id=self.run_id, role=self.role, config=frozen_map(cfg.to_dict()), device=str(device),
                dataset=data.name, num_classes=data.num_classes,
                train_size=len(train) if isinstance(train, Split) else len(train.dataset),
                student_params=_num_params(student), teacher_params=_num_params(teacher),
                epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, steps_planned=steps_planned,
                started_at=time.time()))

            plain_ce = LossWeights(cfg.temperature, 1.0, 0.0, 0.0, 0.0)
            last_w = None
            samples = 0
            done = False
            for epoch in range(1, cfg.epochs + 1):
                t_epoch = time.perf_counter()
                ep_loss_sum: torch.Tensor | None = None  # summed in place: no per-step sync
                ep_steps = 0
                ep_reports: list[StepEnd] = []
                batches = (((train.x[i], train.y[i], None if t_train is None else t_train[i]) for i in batcher.epoch())
                           if batcher is not None else
                           ((xb.to(device, non_blocking=True), yb.to(device, non_blocking=True), None) for xb, yb in train))
                for xb, yb, tb_logits in batches:
                    if not self._running.is_set():
                        self._wait_while_paused()
                    if self._stop.is_set():
                        raise _Stopped("stopped by the user")
                    w = self.controls.current if teacher is not None else plain_ce
                    if teacher is not None and tb_logits is None:
                        with torch.no_grad():
                            tb_logits = logits_of(teacher(xb))
                    s_logits = logits_of(student(xb))  # (B, K)
                    if teacher is not None:
                        loss, terms = distill_loss(s_logits, yb, tb_logits, w)
                    else:
                        loss = ce_loss(s_logits, yb)
                        terms = {"ce": loss.detach()}
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
                    opt.step()
                    if sched is not None:
                        sched.step()
                    step += 1
                    samples += xb.shape[0]
                    ep_loss_sum = loss.detach().clone() if ep_loss_sum is None else ep_loss_sum.add_(loss.detach())
                    ep_steps += 1
                    changed = last_w is not None and w is not last_w
                    if step % cfg.log_every == 0 or changed or step == steps_planned:
                        p = self._step_payload(step, epoch, t0, opt, loss, terms, s_logits, yb, w, samples, changed)
                        ep_reports.append(p)
                        events("on_step_end", p)
                    last_w = w
                    if cfg.eval_every is not None and step % cfg.eval_every == 0:
                        best = self._evaluate(evals, ("val", "test"), step, epoch, t0, events,
                                              teacher_eval_cache, best)
                    if step >= steps_planned:
                        done = True
                        break
                self._epoch_end(events, epoch, step, t0, t_epoch, ep_loss_sum, ep_steps, ep_reports)
                if cfg.eval_every is None:
                    best = self._evaluate(evals, ("val", "test"), step, epoch, t0, events,
                                          teacher_eval_cache, best)
                if done:
                    break
            final = self._final_eval(evals, step, epoch, t0, events, teacher_eval_cache)
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
        if status == "stopped" and not final:
            final = self._safe_final(evals, step, epoch, t0, events, teacher_eval_cache)
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
                   "student_params": _num_params(student), "teacher_params": _num_params(teacher),
                   **{f"best_{k}": v for k, v in best.items()}, **final}
        return FitResult(self.run_id, self.role, status, message, summary, student, self.recorder, tb)

    # -- pieces of the loop ------------------------------------------------------------------
    def _wait_while_paused(self) -> None:
        while not self._running.wait(timeout=0.1):
            pass

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg, params = self.config, [p for p in self.student.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    @torch.no_grad()
    def _teacher_logits(self, split: Split, device: torch.device) -> torch.Tensor:
        outs = [logits_of(self.teacher(xb)) for xb, _ in _batches(split, self.config.eval_batch_size, device)]
        return torch.cat(outs).float()

    def _step_payload(self, step, epoch, t0, opt, loss, terms, s_logits, yb, w, samples, changed) -> StepEnd:
        names = list(terms)
        acc = (s_logits.detach().argmax(1) == yb).sum(dtype=torch.float32) / yb.shape[0]
        values = torch.stack([loss.detach().float(), acc, *(terms[n].float() for n in names)]).tolist()
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
        loss = loss_sum.item() / n_steps
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
        reason = events.stop_request()
        if reason:
            raise _Stopped(reason)

    @torch.no_grad()
    def _teacher_eval(self, split, device) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """The teacher's log-probabilities, predictions and accuracy on an in-memory split (once)."""
        if not isinstance(split, Split):
            return None
        t = torch.cat([logits_of(self.teacher(xb)).float()
                       for xb, _ in _batches(split, self.config.eval_batch_size, device)])
        pred = t.argmax(1)
        return F.log_softmax(t, 1), pred, (pred == split.y).float().mean().item()

    @torch.no_grad()
    def _eval_split(self, name: str, split, step: int, epoch: int, t0: float,
                    teacher_cache: dict) -> EvalEnd:
        """Student accuracy/CE on one split, and the teacher's accuracy, agreement and KL."""
        cfg, teacher, student = self.config, self.teacher, self.student
        device = next((p.device for p in student.parameters()), torch.device("cpu"))
        if teacher is not None and name not in teacher_cache:
            teacher_cache[name] = self._teacher_eval(split, device)
        cached = teacher_cache.get(name)
        was_training = student.training
        student.eval()
        try:
            n = 0
            sums = []  # per batch: [student correct, CE sum(, agreement, KL sum, teacher correct)]
            for xb, yb in _batches(split, cfg.eval_batch_size, device):
                logp = F.log_softmax(logits_of(student(xb)).float(), 1)  # (B, K)
                pred = logp.argmax(1)
                row = [(pred == yb).sum(dtype=torch.float32), F.nll_loss(logp, yb, reduction="sum")]
                if teacher is not None:
                    if cached is not None:
                        t_logp, t_pred = cached[0][n:n + xb.shape[0]], cached[1][n:n + xb.shape[0]]
                    else:
                        t_logp = F.log_softmax(logits_of(teacher(xb)).float(), 1)
                        t_pred = t_logp.argmax(1)
                    row += [(t_pred == pred).sum(dtype=torch.float32),
                            F.kl_div(logp, t_logp, reduction="sum", log_target=True)]
                    if cached is None:
                        row.append((t_pred == yb).sum(dtype=torch.float32))
                sums.append(torch.stack(row))
                n += xb.shape[0]
            totals = (sums[0] if len(sums) == 1 else torch.stack(sums).sum(0)).tolist()
        finally:
            student.train(was_training)
        if teacher is None:
            t_acc = agreement = kl = None
        else:
            t_acc = cached[2] if cached is not None else totals[4] / n
            agreement, kl = totals[2] / n, totals[3] / n
        return EvalEnd(run_id=self.run_id, role=self.role, step=step, epoch=epoch, split=name,
                       acc=totals[0] / n, loss=totals[1] / n, n=n, seconds=time.perf_counter() - t0,
                       teacher_acc=t_acc, agreement=agreement, kl=kl)

    def _evaluate(self, evals, names, step, epoch, t0, events, teacher_cache, best) -> dict[str, Any]:
        """Evaluate the held-out splits; keeps the best val accuracy. Returns the updated ``best``."""
        for name in names:
            if name not in evals:
                continue
            p = self._eval_split(name, evals[name], step, epoch, t0, teacher_cache)
            if not math.isfinite(p.loss) and not math.isfinite(p.acc):
                raise Diverged(f"{name} loss became {p.loss} at step {step}")
            events("on_eval_end", p)
            self._latest_eval[name] = p
            if name == "val" and (not best or p.acc > best["val_acc"]):
                best = {"val_acc": p.acc, "step": step, "epoch": epoch}
        self._check_stop_request(events)
        return best

    def _final_eval(self, evals, step, epoch, t0, events, teacher_cache) -> dict[str, Any]:
        """Evaluate every split at the end; returns flat ``{split}_{metric}`` numbers."""
        final: dict[str, Any] = {}
        for name in ("train", "val", "test"):
            if name not in evals:
                continue
            p = self._latest_eval.get(name)
            if p is None or p.step != step:  # not evaluated at this step yet
                p = self._eval_split(name, evals[name], step, epoch, t0, teacher_cache)
                events("on_eval_end", p)
            for k in ("acc", "loss", "teacher_acc", "agreement", "kl"):
                if getattr(p, k) is not None:
                    final[f"{name}_{k}"] = getattr(p, k)
        return final

    def _safe_final(self, evals, step, epoch, t0, events, teacher_cache) -> dict[str, Any]:
        """Final numbers of a stopped run (nothing if even that fails)."""
        if step == 0 or not evals:
            return {}
        try:
            return self._final_eval(evals, step, epoch, t0, events, teacher_cache)
        except Exception:
            return {}


class _Stopped(Exception):
    """Raised inside ``fit`` to end the run with status "stopped"."""


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
