"""Token data in the one engine: target rows of (B, L, V) logits, checks before training, and
evaluation (nats and bits per token, token accuracy, agreement, KL, entropies, a generated sample).

A batch of token blocks carries logits (B, L, V) and targets (B, L) in which ``IGNORE_INDEX``
marks the positions with no next token. The loop flattens them to rows (N, V) of the target
positions only (:func:`target_rows`), so every loss term -- written once for (rows, classes) --
is a mean over target tokens, never over sequences.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.splits import DataSplits, Split
from ..data.text import IGNORE_INDEX, CharTokenizer
from .config import DistillConfig
from .divergences import flatten_positions
from .evaluation import logits_of
from .events import EvalEnd
from .preflight import _check_trainable, _forward, num_params

SAMPLE_SEED = 0  # every model's sample draws from the same seeded stream: samples compare across models
PROMPT_TOKENS = 32  # the prompt: the first tokens of the sample split's first block
MIN_TRAIN_EVAL_BLOCKS = 256  # the train split's evaluation uses at least this many blocks (all if fewer)
TEACHER_CACHE_FLOATS = 16 * 2**20  # cache a split's teacher log-probs up to 64 MB; larger: recompute


def is_sequence(data: DataSplits) -> bool:
    """True for token data: an in-memory train split whose targets have one entry per position (N, L)."""
    train = data.train
    return isinstance(train, Split) and train.y.ndim == 2


def rows(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L, V) logits -> (N, V) rows of the positions ``mask`` (B, L) marks (all B*L when None).

    A mask that marks every position gives a view (no boolean gather, and none in the backward
    pass): fixed text blocks have a target at every position."""
    flat, flat_mask = flatten_positions(logits, mask)
    return flat if flat_mask is None or bool(flat_mask.all()) else flat[flat_mask]


def target_rows(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, V) logits and (B, L) targets -> rows (N, V) and labels (N,) of the N target positions."""
    mask = targets != IGNORE_INDEX  # (B, L)
    if bool(mask.all()):
        return rows(logits, None), targets.reshape(-1)
    return rows(logits, mask), targets[mask]


def train_eval_split(train: Split, data: DataSplits) -> Split:
    """The train blocks a token run evaluates: the first ``max(len(val), len(test), MIN_TRAIN_EVAL_BLOCKS)``.

    A corpus' train split is large (shakespeare-char: ~14k blocks, a full pass of teacher and student
    takes seconds on a CPU); a slice as large as the held-out splits measures the train/val gap as well.
    """
    held_out = [len(s) for s in (data.val, data.test) if isinstance(s, Split)]
    n = max([MIN_TRAIN_EVAL_BLOCKS, *held_out])
    return train if len(train) <= n else Split(train.x[:n], train.y[:n])


# ----------------------------------------------------------------------------- checks before training


def check_sequence_setup(cfg: DistillConfig, data: DataSplits) -> None:
    """Settings that have no meaning for token data fail here, before any training."""
    if cfg.mixup_alpha > 0:
        raise ValueError(
            f"mixup_alpha: {cfg.mixup_alpha!r} cannot be used with token data (token ids cannot be mixed); use 0"
        )
    if cfg.hint_student is not None:
        raise ValueError(
            "hint_student, hint_teacher: feature hints are not available for token data yet; leave them unset"
        )
    for name, split in data.splits().items():
        if not isinstance(split, Split) or split.y.ndim != 2:
            raise ValueError(
                f"data[{name!r}]: expected token blocks like the train split's (tokens (N, L) and targets "
                "(N, L)), in memory; a DataLoader of token data is not supported yet"
            )
    length = int(data.train.x.shape[1])
    for name in ("generated_blocks", "on_policy"):
        if getattr(cfg, name) > 0 and length < 2:
            raise ValueError(
                f"{name}: {getattr(cfg, name)!r} needs blocks of at least 2 tokens (a prompt and a sampled "
                f"token), but the data's blocks have {length}; use a larger block_size or {name}=0"
            )
    _check_unlabeled_blocks(data)


def _check_unlabeled_blocks(data: DataSplits) -> None:
    """Token data's extra unlabeled inputs are blocks (M, L) of whole token ids below the vocabulary."""
    extra = data.unlabeled
    if extra is None:
        return
    length, vocab = int(data.train.x.shape[1]), int(data.num_classes)
    if extra.ndim != 2 or extra.shape[1] != length:
        raise ValueError(
            f"unlabeled: shape {tuple(extra.shape)} does not fit; expected token blocks (M, {length}) like the "
            "train blocks (e.g. from workbench.teacher_text)"
        )
    if extra.numel() and (
        not torch.equal(extra, extra.round()) or extra.min().item() < 0 or extra.max().item() >= vocab
    ):
        raise ValueError(f"unlabeled: expected whole token ids 0..{vocab - 1} (the data's vocabulary)")


def hf_causal_lm_config(model: nn.Module) -> Any | None:
    """The Hugging Face config of a transformers causal LM (``*ForCausalLM``, ``*LMHeadModel``), or of
    the loader's wrapper of one (``model.hf_model``); None for other models."""
    inner = getattr(model, "hf_model", model)
    config = getattr(inner, "config", None)
    causal = type(inner).__name__.endswith(("ForCausalLM", "LMHeadModel"))
    return config if causal and hasattr(config, "vocab_size") and hasattr(config, "to_json_string") else None


def _check_hf_config(name: str, config: Any, data: DataSplits) -> None:
    """A HF model's vocabulary and position embeddings against the token blocks, named by its folder."""
    folder = getattr(config, "name_or_path", "") or ""
    what = f"HF folder {folder!r}" if folder else "HF model"
    k, length = data.num_classes, int(data.train.x.shape[1])
    units = "characters" if dict(data.spec.get("tokenizer") or {}).get("kind") == "char" else "tokens"
    if k and int(config.vocab_size) != k:
        raise ValueError(
            f"{name}: {what} has vocab_size {config.vocab_size} but the data's vocabulary has {k} {units}; "
            f"expected a model built with vocab_size={k} on this data's tokenizer"
        )
    sizes = [getattr(config, n, None) for n in ("n_positions", "max_position_embeddings")]  # GPT-2, Llama...
    positions = next((v for v in sizes if isinstance(v, int)), None)
    if positions is not None and length > positions:
        raise ValueError(
            f"{name}: {what} has position embeddings for {positions} tokens, but the data's blocks are "
            f"{length} tokens long; expected a model built for at least {length} positions, or shorter "
            f"blocks (block_size={positions})"
        )


def check_sequence_models(data: DataSplits, teacher: nn.Module | None, student: nn.Module) -> None:
    """Run both models on two training blocks: logits (2, L, V) with V = the vocabulary, finite.

    A Hugging Face model (a causal LM called with input ids (B, L), returning ``.logits``) has its
    vocabulary and position embeddings checked from its config first, with its folder named.
    """
    x = data.train.x[:2]
    _check_trainable(student)
    vocab = {}
    for name, m in (("student", student), ("teacher", teacher)):
        if m is None:
            continue
        if (config := hf_causal_lm_config(m)) is not None:
            _check_hf_config(name, config, data)
        out = _forward(m, name, x, grad=name == "student")
        want = (*x.shape, data.num_classes or out.shape[-1])
        if out.ndim != 3 or tuple(out.shape[:2]) != tuple(x.shape):
            raise ValueError(
                f"{name}: expected logits of shape (batch, length, vocabulary) = {want} for token "
                f"blocks of shape {tuple(x.shape)}, got {tuple(out.shape)}"
            )
        if not out.is_floating_point():
            raise ValueError(f"{name}: returned logits of dtype {out.dtype}; expected floating-point scores")
        if not torch.isfinite(out).all():
            raise ValueError(f"{name}: outputs NaN or inf on two training blocks; check its weights and forward")
        if data.num_classes and out.shape[-1] != data.num_classes:
            raise ValueError(
                f"{name}: outputs {out.shape[-1]} token scores but the data's vocabulary has "
                f"{data.num_classes}; expected a head with {data.num_classes} outputs"
            )
        if name == "student" and not out.requires_grad:
            raise ValueError("student: its output does not depend on its trainable parameters (no gradient)")
        vocab[name] = out.shape[-1]
    if len(vocab) == 2 and vocab["student"] != vocab["teacher"]:
        raise ValueError(
            f"teacher, student: teacher outputs {vocab['teacher']} token scores, student {vocab['student']}; "
            "they must share the vocabulary"
        )
    if teacher is not None and num_params(teacher) < num_params(student):
        warnings.warn(
            f"teacher has {num_params(teacher)} parameters, fewer than the student's "
            f"{num_params(student)}: were teacher and student swapped?",
            stacklevel=3,
        )


# ----------------------------------------------------------------------------- samples


def sample_prompt(data: DataSplits) -> torch.Tensor | None:
    """The prompt every model continues: the first tokens of the first val (else test, train) block."""
    split = data.val if data.val is not None else data.test if data.test is not None else data.train
    if not isinstance(split, Split) or len(split) == 0:
        return None
    return split.x[0, :PROMPT_TOKENS].detach().cpu().clone()  # (P,)


@torch.no_grad()
def generate_tokens(
    model: nn.Module, prompt: torch.Tensor, n: int, block_size: int, seed: int = SAMPLE_SEED
) -> torch.Tensor:
    """``n`` tokens after ``prompt`` (P,), each drawn from ``softmax(logits)`` of the last
    ``block_size`` tokens by a CPU generator seeded with ``seed`` (same draws on any device)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    out = prompt.reshape(1, -1).to(device)  # (1, P)
    for _ in range(n):
        logits = logits_of(model(out[:, -block_size:]))[:, -1, :].float()  # (1, V)
        nxt = torch.multinomial(F.softmax(logits, dim=-1).cpu(), 1, generator=gen)  # (1, 1)
        out = torch.cat([out, nxt.to(device)], dim=1)
    return out[0, prompt.numel() :].cpu()  # (n,)


# ----------------------------------------------------------------------------- evaluation


class SequenceEvaluator:
    """Evaluates a model (and its frozen teacher) on token splits, per target token.

    ``loss`` nats per token and ``bpc = loss / ln 2``; ``acc`` token accuracy; with a teacher
    ``agreement`` (same top-1 token), ``kl`` = mean KL(p_teacher || p_model) at T=1, the teacher's
    accuracy and bits per token; ``entropy`` and ``teacher_entropy`` in nats. On ``sample_split`` it
    also generates ``sample_tokens`` tokens after a fixed prompt with a fixed seed, as text.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        run_id: str,
        role: str,
        batch_size: int,
        data: DataSplits,
        sample_tokens: int = 0,
    ):
        self.student, self.teacher, self.run_id, self.role = student, teacher, run_id, role
        self.batch_size = batch_size
        self.block_size, self.vocab = int(data.train.x.shape[1]), int(data.num_classes)
        self.sample_tokens = sample_tokens
        self.tokenizer = CharTokenizer.from_dict(data.spec["tokenizer"]) if "tokenizer" in data.spec else None
        self.prompt = sample_prompt(data) if sample_tokens and self.tokenizer is not None else None
        self.sample_split = "val" if data.val is not None else "test" if data.test is not None else "train"
        self._teacher_cache: dict[str, list[torch.Tensor] | None] = {}

    @torch.no_grad()
    def _teacher_logp(self, split: Split) -> list[torch.Tensor]:
        """The teacher's log-probabilities (B, L, V) per evaluation batch of ``split``."""
        out = []
        for i in range(0, len(split), self.batch_size):
            t = logits_of(self.teacher(split.x[i : i + self.batch_size])).float()
            out.append(F.log_softmax(t, -1))
        return out

    @torch.no_grad()
    def __call__(self, name: str, split: Split, step: int, epoch: int, t0: float) -> EvalEnd:
        teacher, student = self.teacher, self.student
        cached = None
        if teacher is not None:
            if name not in self._teacher_cache:
                fits = split.y.numel() * self.vocab <= TEACHER_CACHE_FLOATS
                self._teacher_cache[name] = self._teacher_logp(split) if fits else None
            cached = self._teacher_cache[name]
        was_training = student.training
        student.eval()
        try:
            sums = []  # per batch: [tokens, correct, nll, entropy(, agreement, kl, t_correct, t_nll, t_entropy)]
            for b, i in enumerate(range(0, len(split), self.batch_size)):
                xb, yb = split.x[i : i + self.batch_size], split.y[i : i + self.batch_size]
                mask = yb != IGNORE_INDEX  # (B, L)
                logp = rows(F.log_softmax(logits_of(student(xb)).float(), -1), mask)  # (N, V)
                y = yb[mask]  # (N,)
                pred = logp.argmax(-1)
                row = [
                    mask.sum(dtype=torch.float32),
                    (pred == y).sum(dtype=torch.float32),
                    F.nll_loss(logp, y, reduction="sum"),
                    -(logp.exp() * logp).sum(),
                ]
                if teacher is not None:
                    t_full = cached[b] if cached is not None else F.log_softmax(logits_of(teacher(xb)).float(), -1)
                    t_logp = rows(t_full, mask)  # (N, V)
                    t_pred = t_logp.argmax(-1)
                    row += [
                        (t_pred == pred).sum(dtype=torch.float32),
                        F.kl_div(logp, t_logp, reduction="sum", log_target=True),
                        (t_pred == y).sum(dtype=torch.float32),
                        F.nll_loss(t_logp, y, reduction="sum"),
                        -(t_logp.exp() * t_logp).sum(),
                    ]
                sums.append(torch.stack(row))
            totals = torch.stack(sums).sum(0).tolist() if sums else []
            sample, prompt = self._sample() if name == self.sample_split else (None, None)
        finally:
            student.train(was_training)
        n = totals[0] if totals else 0
        if n == 0:
            raise ValueError(f"data[{name!r}]: has 0 target tokens to evaluate")
        loss = totals[2] / n
        extra: dict[str, Any] = {}
        if teacher is not None:
            extra = dict(
                agreement=totals[4] / n,
                kl=totals[5] / n,
                teacher_acc=totals[6] / n,
                teacher_bpc=totals[7] / n / math.log(2),
                teacher_entropy=totals[8] / n,
            )
        return EvalEnd(
            run_id=self.run_id,
            role=self.role,
            step=step,
            epoch=epoch,
            split=name,
            acc=totals[1] / n,
            loss=loss,
            n=int(n),
            seconds=time.perf_counter() - t0,
            bpc=loss / math.log(2),
            entropy=totals[3] / n,
            sample=sample,
            sample_prompt=prompt,
            **extra,
        )

    def _sample(self) -> tuple[str | None, str | None]:
        """The model's continuation of the fixed prompt, and the prompt, as text (None: no sample)."""
        if self.prompt is None:
            return None, None
        ids = generate_tokens(self.student, self.prompt, self.sample_tokens, self.block_size)
        return self.tokenizer.decode(ids), self.tokenizer.decode(self.prompt)
