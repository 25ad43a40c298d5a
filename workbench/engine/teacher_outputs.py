"""The teacher's outputs on a run's fixed transfer inputs, computed once and cached: its logits for
every class, or (for token data with a large vocabulary, or a top-k divergence) a top-k record that
keeps the k largest logits per position and the log-sum-exp that gives the tail mass. Which one a run
uses, and which live controls that choice rules out, are decided here too.

For token data the teacher also writes transfer inputs of its own: blocks it samples from prompts of
the train text (sequence-level KD, Kim & Rush 2016; :func:`teacher_text`, or ``generated_blocks`` in
the config), generated once per teacher and cached beside its outputs.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn

from ..data.splits import DataSplits, Split
from .batches import continue_blocks
from .config import DEFAULT_TOP_K, FULL_OUTPUTS_BUDGET, MAX_GENERATED_BLOCKS, DistillConfig
from .divergences import TOPK_DIVERGENCES, TopKRecord, top_k_record
from .evaluation import logits_of
from .losses import LossWeights

GENERATED_PROMPT_TOKENS = 8  # a teacher-generated block starts from this many tokens of the train text


def resolve_top_k(
    cfg: DistillConfig, data: DataSplits, teacher: nn.Module | None, sequence: bool
) -> tuple[int | None, str]:
    """The k of the cached top-k teacher outputs (None: every class, or no cache), and why so."""
    k = cfg.teacher_top_k
    if teacher is None:
        return None, ""
    train = data.train
    if not (cfg.cache_teacher and cfg.mixup_alpha == 0 and isinstance(train, Split)):
        why = (
            "cache_teacher=False"
            if not cfg.cache_teacher
            else "mixup"
            if cfg.mixup_alpha > 0
            else "data['train'] is a DataLoader"
        )
        if isinstance(k, int) or cfg.divergence in TOPK_DIVERGENCES:
            what = f"teacher_top_k: {k!r}" if isinstance(k, int) else f"divergence: {cfg.divergence!r}"
            raise ValueError(
                f"{what} needs the teacher's outputs cached on fixed inputs, but with {why} the teacher "
                "is queried live at every step; use a full-teacher divergence and teacher_top_k='auto'"
            )
        return None, f"the teacher is queried live at every step ({why})"
    vocab = int(data.num_classes or 0)
    if isinstance(k, int):
        if vocab and k > vocab:
            raise ValueError(
                f"teacher_top_k: {k!r} is more than the {vocab} classes; use at most {vocab}, or None for every class"
            )
        return k, ""
    if sequence:  # the train blocks, the unlabeled ones, the teacher-generated ones: every position
        extra = len(data.unlabeled) if (cfg.use_unlabeled and data.unlabeled is not None) else 0
        positions = (len(train) + extra + cfg.generated_blocks) * train.x.shape[1]
    else:
        positions = len(train)
        if cfg.use_unlabeled and data.unlabeled is not None:
            positions += len(data.unlabeled)
    full_bytes = positions * vocab * 4
    if k is None or not vocab:
        return None, ""
    if cfg.divergence in TOPK_DIVERGENCES:  # "auto" with a top-k divergence: a top-k record
        return min(DEFAULT_TOP_K, vocab), ""
    if full_bytes <= FULL_OUTPUTS_BUDGET or DEFAULT_TOP_K >= vocab:
        return None, ""
    note = (
        f"divergence {cfg.divergence!r} needs the teacher's full outputs, which would take "
        f"{full_bytes / 2**20:.0f} MB (over the {FULL_OUTPUTS_BUDGET // 2**20} MB of teacher_top_k='auto', "
        f"which caches the top {DEFAULT_TOP_K}): the teacher is queried live at each step; set "
        "teacher_top_k=None to cache every class, or use divergence 'topk_kl_tail' or 'topk_kl'"
    )
    warnings.warn(note, stacklevel=3)
    return DEFAULT_TOP_K, note


def check_controls(w: LossWeights, record: TopKRecord | None, full_note: str, teacher_top_k: Any) -> None:
    """Refuse live values this run cannot use: a top-k divergence with no top-k record, another T
    for the tail mode (its record holds the tail mass at one T)."""
    if w.divergence not in TOPK_DIVERGENCES:
        return
    if record is None:
        how = full_note or (f"this run caches the teacher's outputs for every class (teacher_top_k={teacher_top_k!r})")
        raise ValueError(
            f"divergence: {w.divergence!r} needs the teacher's cached top-k outputs, but {how}; "
            "start the run with a top-k divergence or an integer teacher_top_k to use it"
        )
    if w.divergence == "topk_kl_tail" and w.temperature != record.temperature:
        raise ValueError(
            f"temperature: {w.temperature!r} cannot be used with divergence 'topk_kl_tail': the teacher's "
            f"top-k record holds its tail mass at T={record.temperature:g} only; keep "
            f"T={record.temperature:g}, or use 'topk_kl' (renormalised over the top k, any T)"
        )


@torch.no_grad()
def teacher_outputs(
    teacher: nn.Module,
    x: torch.Tensor,
    *,
    top_k: int | None,
    temperature: float,
    batch_size: int,
    feature_tap: Any = None,
    cache: Any = None,
    teacher_key: str | None = None,
    hint_teacher: str | None = None,
) -> tuple[torch.Tensor | TopKRecord, torch.Tensor | None]:
    """The teacher's logits on ``x`` (with ``top_k``: its top-k :class:`TopKRecord` at ``temperature``,
    built batch by batch so the full logits are never held) and the features ``feature_tap`` caught;
    read from ``cache`` (an :class:`~workbench.store.cache.OutputCache`) when it has them, else computed
    and stored there for later runs."""
    key = None
    if cache is not None:
        key = cache.key(teacher_key, x, hint_teacher, top_k=top_k, temperature=temperature if top_k else None)
        hit = cache.get(key)
        if hit is not None:
            return _to_device(hit[0], x.device), (None if hit[1] is None else hit[1].to(x.device))
    parts, feats = [], []
    for i in range(0, len(x), batch_size):
        logits = logits_of(teacher(x[i : i + batch_size])).float()
        parts.append(logits if top_k is None else top_k_record(logits, top_k, temperature).compact())
        if feature_tap is not None:
            feats.append(feature_tap.value)
    outputs = _concat(parts), (torch.cat(feats) if feats else None)
    if key is not None:
        cache.put(key, *outputs)
    return outputs


def _to_device(t: torch.Tensor | TopKRecord, device: torch.device) -> torch.Tensor | TopKRecord:
    if isinstance(t, TopKRecord):
        return TopKRecord(
            t.values.to(device), t.indices.to(device), t.logsumexp.to(device), t.temperature, t.vocab_size
        )
    return t.to(device)


def _concat(parts: list[torch.Tensor] | list[TopKRecord]) -> torch.Tensor | TopKRecord:
    """Batches of logits, or of top-k records, joined along the first dimension."""
    if not isinstance(parts[0], TopKRecord):
        return torch.cat(parts)
    first = parts[0]
    return TopKRecord(
        torch.cat([r.values for r in parts]),
        torch.cat([r.indices for r in parts]),
        torch.cat([r.logsumexp for r in parts]),
        first.temperature,
        first.vocab_size,
    )


def output_nbytes(outputs: torch.Tensor | TopKRecord) -> int:
    """Bytes held by cached teacher outputs (logits, or a top-k record's tensors)."""
    return outputs.nbytes if isinstance(outputs, TopKRecord) else outputs.numel() * outputs.element_size()


def outputs_note(outputs: torch.Tensor | TopKRecord) -> str:
    """One line on the cached teacher outputs: what is kept, for how many positions, and their size."""
    mb = output_nbytes(outputs) / 2**20
    if isinstance(outputs, TopKRecord):
        positions = outputs.logsumexp.numel()
        full = positions * outputs.vocab_size * 4 / 2**20
        return (
            f"teacher outputs cached: top-{outputs.k} of {outputs.vocab_size} classes at T={outputs.temperature:g} "
            f"for {positions:,} positions, {mb:.1f} MB (every class: {full:.1f} MB)"
        )
    positions = outputs.shape[:-1].numel()
    return f"teacher outputs cached: all {outputs.shape[-1]} classes for {positions:,} positions, {mb:.1f} MB"


# ----------------------------------------------------------------------------- teacher-generated text


def generation_prompts(
    train_x: torch.Tensor, blocks: int, prompt_tokens: int, generator: torch.Generator
) -> torch.Tensor:
    """(blocks, P) prompts: P consecutive tokens at a random block and offset of ``train_x`` (N, L), seeded."""
    n, length = train_x.shape
    rows = torch.randint(0, n, (blocks,), generator=generator)
    starts = torch.randint(0, length - prompt_tokens + 1, (blocks,), generator=generator)
    return train_x.cpu()[rows[:, None], starts[:, None] + torch.arange(prompt_tokens)]


def generate_blocks(
    teacher: nn.Module,
    train_x: torch.Tensor,
    *,
    blocks: int,
    temperature: float = 1.0,
    seed: int = 0,
    prompt_tokens: int = GENERATED_PROMPT_TOKENS,
    batch_size: int = 256,
    cache: Any = None,
    teacher_key: str | None = None,
) -> torch.Tensor:
    """``blocks`` token blocks (blocks, L) int64 sampled from ``teacher``: a prompt of ``min(prompt_tokens,
    L - 1)`` train tokens (:func:`generation_prompts`), continued from ``softmax(logits / temperature)``
    (:func:`~workbench.engine.sequence.continue_blocks`); one CPU generator seeded with ``seed`` draws
    the prompts and the tokens, so a seed gives the same blocks on any device. On the device of
    ``train_x``. With ``cache`` and ``teacher_key``, read from / stored in the teacher output cache."""
    length = int(train_x.shape[1])
    prompt = min(prompt_tokens, length - 1)
    key = None
    if cache is not None and teacher_key is not None:
        key = cache.key(teacher_key, train_x, f"generated-blocks:{blocks}:{float(temperature)!r}:{seed}:{prompt}")
        hit = cache.get(key)
        if hit is not None:
            return hit[0].to(train_x.device)
    g = torch.Generator().manual_seed(seed)
    device = next((q.device for q in teacher.parameters()), train_x.device)
    prompts = generation_prompts(train_x, blocks, prompt, g).to(device)  # (blocks, P)
    out = continue_blocks(teacher, prompts, length, temperature, g, batch_size).to(train_x.device)  # (blocks, L)
    if key is not None:
        cache.put(key, out, None)
    return out


def teacher_text(
    data: DataSplits,
    teacher: nn.Module,
    blocks: int,
    temperature: float = 1.0,
    seed: int = 0,
    prompt_tokens: int = GENERATED_PROMPT_TOKENS,
    batch_size: int = 256,
) -> DataSplits:
    """``data`` with ``blocks`` teacher-generated blocks added to its unlabeled blocks (sequence-level KD).

    Each block is ``min(prompt_tokens, L - 1)`` tokens of the train text continued by the teacher at
    ``temperature`` (:func:`generate_blocks`, seeded by ``seed``). A run distils on them as on any
    unlabeled input: in the KD stream only (never CE, never val or test), every position a KD target,
    the teacher's outputs on them cached with the train blocks' (same top-k rules). This function lets
    a notebook read the text (``tokenizer_of(data).decode(block)``) and reuse one set across students;
    ``DistillConfig(generated_blocks=N, generate_temperature=T)`` does the same inside a run (seeded by
    its ``seed``, cached per teacher), which the CLI and the apps use: the teacher they distil may be
    trained in the same call.
    """
    if not isinstance(data, DataSplits) or not isinstance(data.train, Split) or data.train.y.ndim != 2:
        raise ValueError(
            f"data: {type(data).__name__} is invalid; expected token data (e.g. workbench.from_text or "
            "load_dataset('shakespeare-char'))"
        )
    if not isinstance(teacher, nn.Module):
        raise ValueError(f"teacher: expected a torch.nn.Module, got {type(teacher).__name__}")
    checks = (
        ("blocks", blocks, 1),
        ("seed", seed, 0),
        ("prompt_tokens", prompt_tokens, 1),
        ("batch_size", batch_size, 1),
    )
    for name, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: {value!r} is invalid; expected an integer >= {low}")
    if blocks > MAX_GENERATED_BLOCKS:
        raise ValueError(f"blocks: {blocks!r} is invalid; expected at most {MAX_GENERATED_BLOCKS:,}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0.01 <= temperature <= 100:
        raise ValueError(
            f"temperature: {temperature!r} is invalid; expected a number in [0.01, 100] (typical 0.5 to 1.5)"
        )
    if data.train.x.shape[1] < 2:
        raise ValueError(f"data: blocks of {data.train.x.shape[1]} token cannot hold a prompt and a sampled token")
    generated = generate_blocks(
        teacher,
        data.train.x,
        blocks=blocks,
        temperature=temperature,
        seed=seed,
        prompt_tokens=prompt_tokens,
        batch_size=batch_size,
    ).cpu()
    old = data.unlabeled
    unlabeled = generated if old is None else torch.cat([old.to(torch.int64), generated])
    made = {"blocks": blocks, "temperature": float(temperature), "seed": seed, "prompt_tokens": prompt_tokens}
    return data.with_(unlabeled=unlabeled, spec={**data.spec, "teacher_text": made})
