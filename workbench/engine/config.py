"""Typed, validated run configuration.

Every field is checked on construction; a bad value raises ``ValueError`` naming the field,
the value and what is valid, before any training starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..data.values import plain_scalar
from .divergences import DIVERGENCES, TOPK_DIVERGENCES, check_beta
from .losses import LossWeights

OPTIMIZERS = ("adam", "adamw", "sgd")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULERS = ("constant", "cosine")
DEVICE_TYPES = ("cpu", "cuda", "mps")
DEFAULT_W_CE = 0.5
DEFAULT_W_KD = 0.5
# The KD term's divergence (a live control like T): every registry entry. The top-k ones read the
# teacher's cached top-k record (teacher_top_k); the others its full outputs.
KD_DIVERGENCES = tuple(DIVERGENCES)
FULL_DIVERGENCES = tuple(name for name, d in DIVERGENCES.items() if d.needs_full_teacher)
# Teacher outputs on a fixed transfer set are cached at full vocabulary while they take at most this many
# bytes (positions * classes * 4); past it "auto" caches the top DEFAULT_TOP_K classes per position.
# shakespeare-char (~1M positions x 65 characters, 264 MB in float32) is past it: top-16 takes 85 MB.
FULL_OUTPUTS_BUDGET = 64 * 2**20
DEFAULT_TOP_K = 16
# Defaults for token data (next-character prediction with a causal transformer), as nanoGPT and the
# LM distillation recipes use them (kd-facts.md): AdamW, clipped gradients, T = 1, frequent evaluation.
TEXT_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 32,
    "lr": 2e-3,
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "grad_clip": 1.0,
    "temperature": 1.0,
    # forward KL on the teacher's cached top-k logits, renormalised: a fraction of full KL's memory, and
    # (unlike the tail-bucket mode, whose tail mass is known at the cached T only) T stays a live control
    "divergence": "topk_kl",
    "eval_every": 100,
    "eval_batch_size": 256,
}


def _bad(name: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"{name}: {value!r} is invalid; {valid}")


def _number(name: str, value: Any) -> float:
    value = plain_scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(name, value, "expected a number")
    if not math.isfinite(value):
        raise _bad(name, value, "expected a finite number")
    return float(value)


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(name, value, "expected an integer >= 1" + (" or None" if allow_none else ""))


def check_alpha(alpha: Any) -> float:
    """A valid ``alpha`` preset (shared by the config and live controls) as a float."""
    if not 0.0 <= _number("alpha", alpha) <= 1.0:
        raise _bad("alpha", alpha, "expected a number in [0, 1] (alpha*CE + (1-alpha)*KD)")
    return float(plain_scalar(alpha))


FLOAT32_MAX = 3.4028234663852886e38
MAX_TEMPERATURE = 1000.0  # past this softmax(z / T) is uniform to float32 precision, and T^2 overflows soon after
MAX_SAMPLE_TOKENS = 2000  # an eval's generated sample: one token at a time, for each model, at every eval
MAX_GENERATED_BLOCKS = 20_000  # teacher-generated blocks (the built-in corpus has about 14,000 training blocks)


def check_weights(temperature: Any, w_ce: Any, w_kd: Any, w_mse: Any, w_hint: Any) -> None:
    """Validate a temperature and loss weights (shared by the config and live controls)."""
    if not 0 < _number("temperature", temperature) <= MAX_TEMPERATURE:
        raise _bad("temperature", temperature, f"expected a number in (0, {MAX_TEMPERATURE:g}] (typical: 1 to 20)")
    ws = {"w_ce": w_ce, "w_kd": w_kd, "w_mse": w_mse, "w_hint": w_hint}
    for name, w in ws.items():
        if _number(name, w) < 0:
            raise _bad(name, w, "expected a weight >= 0")
    if all(float(w) == 0.0 for w in ws.values()):
        raise ValueError(f"w_ce, w_kd, w_mse, w_hint: all are 0 ({ws}); at least one weight must be > 0")


def check_divergence(divergence: Any, beta: Any) -> None:
    """Validate the KD divergence's name and its ``beta`` (shared by the config and live controls)."""
    if not isinstance(divergence, str) or divergence not in KD_DIVERGENCES:
        raise _bad("divergence", divergence, f"valid: {', '.join(KD_DIVERGENCES)}")
    try:
        check_beta(plain_scalar(beta))
    except ValueError:
        raise _bad("beta", beta, "expected a number in [0, 1] (the weight of the teacher in JSD's mixture)") from None


def check_top_k(teacher_top_k: Any) -> None:
    """``teacher_top_k`` is "auto", None (full vocabulary) or an integer >= 1."""
    if teacher_top_k is None or teacher_top_k == "auto":
        return
    if isinstance(teacher_top_k, bool) or not isinstance(teacher_top_k, int) or teacher_top_k < 1:
        raise _bad(
            "teacher_top_k",
            teacher_top_k,
            "expected an integer k >= 1 (cache the teacher's k largest logits per position), None (cache "
            f"every class) or 'auto' (every class up to {FULL_OUTPUTS_BUDGET // 2**20} MB, else the top "
            f"{DEFAULT_TOP_K})",
        )


def _parses_as_device(name: str) -> bool:
    """True for ``"auto"`` and CPU / CUDA / MPS device names (whether the device exists is
    checked when a run starts: a config may be written on one machine and run on another)."""
    if name == "auto":
        return True
    try:
        return torch.device(name).type in DEVICE_TYPES
    except (RuntimeError, ValueError):
        return False


@dataclass(frozen=True)
class DistillConfig:
    """How one run trains: optimization, the loss mix, reporting and device.

    Loss: ``w_ce*CE + w_kd*T^2*KL(p_t||p_s) + w_mse*MSE(s,t) + w_hint*MSE(adapter(f_s), f_t)``.
    ``divergence`` picks the KD term: "kl" (the Hinton term above), "reverse_kl" ``T^2 KL(p_s||p_t)``,
    "jsd" (generalized JSD with ``beta``; 0 and 1 are forward and reverse KL) or "mse" (centred logits,
    no T), or "topk_kl" / "topk_kl_tail": forward KL against the teacher's cached top-k logits,
    renormalised over those k classes / with the rest of the teacher's mass as one tail bucket (the
    tail needs T to stay at the value the record was made at). ``teacher_top_k`` says how the teacher's
    outputs on the fixed transfer set are cached: an integer k (its k largest logits per position, their
    ids and its log-sum-exp), None (every class) or "auto" (every class while they fit
    :data:`FULL_OUTPUTS_BUDGET`, else the top :data:`DEFAULT_TOP_K`; always top-k for a top-k divergence).
    A full-teacher divergence or MSE term on a top-k run queries the teacher live. On token data (logits (B, L, V)) every term is a mean over the target tokens, and each
    evaluation carries a generated sample of ``sample_tokens`` tokens (0: none).
    ``alpha`` is a preset of the weights: ``w_ce = alpha, w_kd = 1 - alpha``. A run with no
    teacher (a teacher or a scratch baseline) trains on plain cross-entropy.
    Transfer set: CE uses a stratified ``labeled_fraction`` of the train labels, drawn with
    ``label_seed`` (None: ``seed``; fix it to give runs of several seeds, or a teacher and its
    students, the very same labeled subset); the teacher
    labels every train input, plus the data's extra unlabeled inputs (``use_unlabeled``), mixed
    with ``mixup_alpha`` > 0. Hints match ``hint_student`` to ``hint_teacher`` (module paths).
    Token data only: ``generated_blocks`` blocks sampled from the teacher at ``generate_temperature``
    (seeded by ``seed``, from prompts of the train text) join the KD stream, every position a KD target
    and none a CE target (sequence-level KD; see :func:`workbench.engine.teacher_outputs.teacher_text`);
    ``on_policy`` (GKD's lambda) is the share of each KD batch's blocks whose second half the student
    samples itself at that step, scored by the teacher live on the student-generated positions.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "constant"
    grad_clip: float | None = None
    max_steps: int | None = None
    temperature: float = 4.0
    w_ce: float | None = None
    w_kd: float | None = None
    w_mse: float = 0.0
    w_hint: float = 0.0
    alpha: float | None = None
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None
    eval_batch_size: int = 1024
    device: str = "auto"
    cache_teacher: bool = True
    labeled_fraction: float = 1.0
    label_seed: int | None = None
    use_unlabeled: bool = True
    mixup_alpha: float = 0.0
    hint_student: str | None = None
    hint_teacher: str | None = None
    precision: str = "fp32"
    compile: bool = False
    divergence: str = "kl"
    beta: float = 0.5
    sample_tokens: int = 100
    teacher_top_k: int | str | None = "auto"
    generated_blocks: int = 0
    generate_temperature: float = 1.0
    on_policy: float = 0.0

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        for f in fields(self):  # numpy scalars become plain values, so to_dict() stays JSON-able
            set_(f.name, plain_scalar(getattr(self, f.name)))
        for name in ("epochs", "batch_size", "log_every", "eval_batch_size"):
            _positive_int(name, getattr(self, name))
        for name in ("max_steps", "eval_every"):
            _positive_int(name, getattr(self, name), allow_none=True)
        n = self.sample_tokens
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_SAMPLE_TOKENS:
            raise _bad(
                "sample_tokens",
                n,
                f"expected an integer in [0, {MAX_SAMPLE_TOKENS}] (characters each eval generates per model; 0: none)",
            )
        check_divergence(self.divergence, self.beta)
        set_("beta", float(self.beta))
        self._check_text_transfer()
        check_top_k(self.teacher_top_k)
        if not 0 < _number("lr", self.lr) <= FLOAT32_MAX:  # the optimizers' float32 math overflowed mid-run
            raise _bad("lr", self.lr, f"expected a learning rate in (0, {FLOAT32_MAX:.3g}] (typical: 1e-4 to 1e-1)")
        if _number("weight_decay", self.weight_decay) < 0:
            raise _bad("weight_decay", self.weight_decay, "expected a number >= 0")
        if not 0 <= _number("momentum", self.momentum) < 1:
            raise _bad("momentum", self.momentum, "expected a number in [0, 1)")
        if self.optimizer not in OPTIMIZERS:
            raise _bad("optimizer", self.optimizer, f"valid: {', '.join(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise _bad("precision", self.precision, f"valid: {', '.join(PRECISIONS)} (fp16 needs a CUDA device)")
        if self.scheduler not in SCHEDULERS:
            raise _bad("scheduler", self.scheduler, f"valid: {', '.join(SCHEDULERS)}")
        if self.grad_clip is not None and _number("grad_clip", self.grad_clip) <= 0:
            raise _bad("grad_clip", self.grad_clip, "expected a number > 0 or None")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise _bad("seed", self.seed, "expected an integer >= 0")
        if self.label_seed is not None and (
            isinstance(self.label_seed, bool) or not isinstance(self.label_seed, int) or self.label_seed < 0
        ):
            raise _bad("label_seed", self.label_seed, "expected an integer >= 0, or None to use seed")
        if not isinstance(self.device, str) or not _parses_as_device(self.device):
            raise _bad("device", self.device, "expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        for name in ("cache_teacher", "use_unlabeled", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, getattr(self, name), "expected True or False")
        if self.alpha is not None:
            alpha = check_alpha(self.alpha)
            for name, want in (("w_ce", alpha), ("w_kd", 1.0 - alpha)):
                given = getattr(self, name)
                if given is not None and not math.isclose(float(given), want, abs_tol=1e-12):
                    raise ValueError(
                        f"{name}: {given!r} conflicts with alpha={self.alpha!r} (which sets "
                        f"{name}={want!r}); give either alpha or the weights"
                    )
                set_(name, want)
        if not 0 < _number("labeled_fraction", self.labeled_fraction) <= 1:
            raise _bad(
                "labeled_fraction",
                self.labeled_fraction,
                "expected a fraction in (0, 1]: the share of train samples whose labels are used",
            )
        if _number("mixup_alpha", self.mixup_alpha) < 0:
            raise _bad("mixup_alpha", self.mixup_alpha, "expected a number >= 0 (0 = no mixup; typical 0.2 to 1)")
        for name in ("hint_student", "hint_teacher"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v):
                raise _bad(name, v, "expected a layer name such as 'hidden.1' (a module path) or None")
        if (self.hint_student is None) != (self.hint_teacher is None):
            raise ValueError(
                f"hint_student, hint_teacher: {self.hint_student!r}, {self.hint_teacher!r}; "
                "give both layer names for a feature hint, or neither"
            )
        if self.w_ce is None:
            set_("w_ce", DEFAULT_W_CE)
        if self.w_kd is None:
            set_("w_kd", DEFAULT_W_KD)
        check_weights(self.temperature, self.w_ce, self.w_kd, self.w_mse, self.w_hint)
        if self.divergence in TOPK_DIVERGENCES:
            no_record = (
                "teacher_top_k=None caches every class"
                if self.teacher_top_k is None
                else "cache_teacher=False queries the teacher live"
                if not self.cache_teacher
                else "mixup queries the teacher live on mixed inputs"
                if self.mixup_alpha > 0
                else None
            )
            if no_record:
                raise ValueError(
                    f"divergence: {self.divergence!r} needs the teacher's cached top-k outputs, but {no_record}; "
                    f"use teacher_top_k='auto' or an integer (with cache_teacher=True and no mixup), or a "
                    f"full-teacher divergence ({', '.join(FULL_DIVERGENCES)})"
                )
        if self.w_hint > 0 and self.hint_student is None:
            raise ValueError(
                f"w_hint: {self.w_hint!r} needs hint_student and hint_teacher (the layers to match); "
                "set them or use w_hint=0"
            )

    def _check_text_transfer(self) -> None:
        """``generated_blocks``, ``generate_temperature`` and ``on_policy`` (token data's transfer set)."""
        n = self.generated_blocks
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_GENERATED_BLOCKS:
            raise _bad(
                "generated_blocks",
                n,
                f"expected an integer in [0, {MAX_GENERATED_BLOCKS:,}] (teacher-generated blocks; 0: none)",
            )
        if not 0.01 <= _number("generate_temperature", self.generate_temperature) <= 100:
            raise _bad(
                "generate_temperature",
                self.generate_temperature,
                "expected a number in [0.01, 100] (the teacher samples from softmax(logits / T); typical 0.5 to 1.5)",
            )
        if not 0 <= _number("on_policy", self.on_policy) <= 1:
            raise _bad(
                "on_policy",
                self.on_policy,
                "expected a share in [0, 1] of each KD batch's blocks continued by the student (0: off)",
            )
        object.__setattr__(self, "generate_temperature", float(self.generate_temperature))
        object.__setattr__(self, "on_policy", float(self.on_policy))

    @property
    def weights(self) -> LossWeights:
        """The temperature and loss weights as a :class:`LossWeights`."""
        return LossWeights(
            float(self.temperature),
            float(self.w_ce),
            float(self.w_kd),
            float(self.w_mse),
            float(self.w_hint),
            self.divergence,
            float(self.beta),
        )

    @classmethod
    def for_text(cls, **changes: Any) -> DistillConfig:
        """A config with :data:`TEXT_DEFAULTS` (AdamW, lr 2e-3, 32 blocks a batch, T=1...); ``changes`` override them."""
        return cls.from_dict({**TEXT_DEFAULTS, **changes})

    @property
    def labels_seed(self) -> int:
        """The seed that draws the labeled subset: ``label_seed``, else ``seed``."""
        return self.seed if self.label_seed is None else self.label_seed

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict; ``DistillConfig.from_dict(c.to_dict()) == c``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DistillConfig:
        """Build from a dict; unknown keys raise ``ValueError`` listing the valid ones."""
        if not isinstance(d, Mapping):
            raise _bad("config", d, "expected a DistillConfig or a dict of its fields")
        names = [f.name for f in fields(cls)]
        unknown = sorted((k for k in d if k not in names), key=str)
        if unknown:
            close = [(k, m[0]) for k in unknown if isinstance(k, str) and (m := difflib.get_close_matches(k, names, 1))]
            hint = "".join(f" ({k!r}: did you mean {v!r}?)" for k, v in close)
            raise ValueError(f"config: unknown field(s) {unknown}{hint}; valid: {names}")
        return cls(**d)

    def replace(self, **changes: Any) -> DistillConfig:
        """A validated copy with some fields changed (``alpha`` re-derives the weights)."""
        d = self.to_dict()
        if "alpha" not in changes and ({"w_ce", "w_kd"} & set(changes)):
            d["alpha"] = None
        if "alpha" in changes:
            d["w_ce"] = d["w_kd"] = None
        d.update(changes)
        return DistillConfig.from_dict(d)
