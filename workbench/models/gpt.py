"""A nanoGPT-style causal transformer for character-level language modelling, rebuildable from a
spec dict like the zoo's; sampling, parameter and MAC counts.

Layout (module paths, for feature hints): ``tok_emb``, ``pos_emb``, ``blocks.i`` (output of block
i, shape (B, L, C)), ``ln_f``, ``head`` (tied to ``tok_emb``). Each block is pre-LN:
``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

FAMILY = "gpt"
DEFAULTS: dict[str, Any] = {"n_layer": 2, "n_head": 4, "n_embd": 64, "dropout": 0.0}
REQUIRED = ("vocab_size", "block_size")


def _bad(name: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"{name}: {value!r} is invalid; {valid}")


def _int_at_least(name: str, value: Any, low: int) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise _bad(name, value, f"expected an integer >= {low}")
    return int(value)


def check_gpt_size(
    vocab_size: Any, block_size: Any, n_layer: Any, n_head: Any, n_embd: Any, dropout: Any
) -> dict[str, Any]:
    """The size arguments, checked, as a spec dict (without ``family``)."""
    size = {
        "vocab_size": _int_at_least("vocab_size", vocab_size, 2),
        "block_size": _int_at_least("block_size", block_size, 1),
        "n_layer": _int_at_least("n_layer", n_layer, 1),
        "n_head": _int_at_least("n_head", n_head, 1),
        "n_embd": _int_at_least("n_embd", n_embd, 1),
    }
    if size["n_embd"] % size["n_head"]:
        divisors = [h for h in range(1, min(size["n_embd"], 16) + 1) if size["n_embd"] % h == 0]
        raise _bad(
            "n_embd",
            size["n_embd"],
            f"expected a multiple of n_head={size['n_head']} (each head gets "
            f"n_embd / n_head dimensions); n_head values up to 16 that divide "
            f"{size['n_embd']}: {divisors}",
        )
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise _bad("dropout", dropout, "expected a number in [0, 1)")
    return {**size, "dropout": float(dropout)}


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions 0..t only."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, L, C)
        q, k, v = (t.view(B, L, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, L, D)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, H, L, D)
        y = y.transpose(1, 2).reshape(B, L, C)  # (B, L, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LN transformer block: attention then a 4x-wide GELU MLP, each added to the residual."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token + position embeddings, ``n_layer`` pre-LN blocks, a final LayerNorm and an lm head
    tied to the token embedding. ``forward(idx (B, L) int64) -> logits (B, L, vocab_size)``."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = DEFAULTS["n_layer"],
        n_head: int = DEFAULTS["n_head"],
        n_embd: int = DEFAULTS["n_embd"],
        dropout: float = DEFAULTS["dropout"],
    ):
        super().__init__()
        size = check_gpt_size(vocab_size, block_size, n_layer, n_head, n_embd, dropout)
        self.vocab_size, self.block_size = size["vocab_size"], size["block_size"]
        self.tok_emb = nn.Embedding(self.vocab_size, n_embd)
        self.pos_emb = nn.Embedding(self.block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, self.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying: one (V, C) matrix embeds and predicts
        self._init_weights(n_layer)
        self.spec = {"family": FAMILY, **size}

    def _init_weights(self, n_layer: int) -> None:
        """GPT-2's init: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2 n_layer)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.dtype != torch.int64:
            got = (
                f"shape {tuple(idx.shape)} and dtype {idx.dtype}"
                if isinstance(idx, torch.Tensor)
                else type(idx).__name__
            )
            raise _bad("idx", got, "expected int64 token ids of shape (B, L)")
        L = idx.shape[1]
        if not 1 <= L <= self.block_size:
            raise ValueError(
                f"idx: sequence length {L} is invalid; expected 1..block_size={self.block_size} "
                f"tokens (crop a longer context to its last {self.block_size})"
            )
        pos = torch.arange(L, device=idx.device)  # (L,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, L, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (B, L, V)


def build_gpt(spec: Mapping[str, Any]) -> GPT:
    """A fresh GPT from a spec dict ``{"family": "gpt", "vocab_size", "block_size", "n_layer",
    "n_head", "n_embd", "dropout"}`` (the last four default to ``DEFAULTS``); ``model.spec`` rebuilds it."""
    return GPT(**gpt_size(spec))


def gpt_size(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The checked size arguments of a spec dict (defaults filled in, ``family`` dropped)."""
    if not isinstance(spec, Mapping):
        raise _bad("spec", spec, "expected a dict like {'family': 'gpt', 'vocab_size': 65, 'block_size': 64}")
    spec = dict(spec)
    family = spec.pop("family", FAMILY)
    if family != FAMILY:
        raise _bad("family", family, f"expected {FAMILY!r} for a GPT spec")
    missing = [k for k in REQUIRED if k not in spec]
    if missing:
        raise ValueError(
            f"spec: missing key(s) {missing}; a GPT needs {list(REQUIRED)} (from the data: "
            "vocab_size = num_classes, block_size = input_shape[0])"
        )
    unknown = sorted(map(str, set(spec) - set(REQUIRED) - set(DEFAULTS)))
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)}: not a size option of family {FAMILY!r}; valid: {', '.join((*REQUIRED, *DEFAULTS))}"
        )
    return check_gpt_size(**{**DEFAULTS, **spec})


def gpt_param_count(spec: Mapping[str, Any]) -> int:
    """Parameters of ``build_gpt(spec)`` without building it (the head is tied, so it adds none):
    ``V*C + L*C + n_layer * (12*C^2 + 13*C) + 2*C``."""
    size = gpt_size(spec)
    V, L, C, n = size["vocab_size"], size["block_size"], size["n_embd"], size["n_layer"]
    return V * C + L * C + n * (12 * C * C + 13 * C) + 2 * C


def gpt_macs(spec: Mapping[str, Any], seq_len: int | None = None) -> int:
    """Multiply-accumulates for one sequence of ``seq_len`` tokens (default ``block_size``), counted
    like the zoo's ``count_macs`` (matmuls only; attention over the full L x L scores, as
    FlopCounterMode counts it): ``n_layer * (12*L*C^2 + 2*L^2*C) + L*C*V``."""
    size = gpt_size(spec)
    L = size["block_size"] if seq_len is None else _int_at_least("seq_len", seq_len, 1)
    if L > size["block_size"]:
        raise _bad("seq_len", L, f"expected at most block_size={size['block_size']}")
    C, V, n = size["n_embd"], size["vocab_size"], size["n_layer"]
    return n * (12 * L * C * C + 2 * L * L * C) + L * C * V


@torch.no_grad()
def generate(
    model: GPT,
    prompt_ids: torch.Tensor,
    n: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``prompt_ids`` (P,) or (B, P) followed by ``n`` sampled tokens; the model sees the last
    ``block_size`` tokens. Each token is drawn from ``softmax(logits / temperature)`` restricted to
    the ``top_k`` largest logits (all when None); ``temperature=0`` picks the argmax. Sampling runs
    on the generator's device, so a seeded generator gives the same tokens on every call."""
    n = _int_at_least("n", n, 0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        raise _bad("temperature", temperature, "expected a finite number >= 0 (0 picks the most likely token)")
    if top_k is not None:
        top_k = _int_at_least("top_k", top_k, 1)
        if top_k > model.vocab_size:
            raise _bad("top_k", top_k, f"expected 1..vocab_size={model.vocab_size}, or None for all tokens")
    ids = _checked_prompt(prompt_ids, model.vocab_size)
    device = next(model.parameters()).device
    sample_device = generator.device if generator is not None else device
    was_training = model.training
    model.eval()
    try:
        out = ids.to(device)  # (B, P)
        for _ in range(n):
            logits = model(out[:, -model.block_size :])[:, -1, :].float()  # (B, V)
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, -math.inf)
                probs = F.softmax(logits, dim=-1).to(sample_device)
                nxt = torch.multinomial(probs, 1, generator=generator).to(device)  # (B, 1)
            out = torch.cat([out, nxt], dim=1)
    finally:
        model.train(was_training)
    return out[0] if prompt_ids.ndim == 1 else out


def _checked_prompt(prompt_ids: Any, vocab_size: int) -> torch.Tensor:
    """The prompt as (B, P) int64 ids, P >= 1, every id in 0..vocab_size-1."""
    if not isinstance(prompt_ids, torch.Tensor) or prompt_ids.ndim not in (1, 2) or prompt_ids.dtype != torch.int64:
        got = (
            f"shape {tuple(prompt_ids.shape)} and dtype {prompt_ids.dtype}"
            if isinstance(prompt_ids, torch.Tensor)
            else type(prompt_ids).__name__
        )
        raise _bad("prompt_ids", got, "expected an int64 tensor of shape (P,) or (B, P), e.g. tokenizer.encode(text)")
    ids = prompt_ids.reshape(1, -1) if prompt_ids.ndim == 1 else prompt_ids
    if ids.shape[1] == 0 or ids.shape[0] == 0:
        raise _bad("prompt_ids", f"shape {tuple(prompt_ids.shape)}", "expected at least one token per prompt")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise _bad("prompt_ids", low if low < 0 else high, f"expected token ids 0..{vocab_size - 1}")
    return ids
