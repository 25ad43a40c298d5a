"""GPT: causality, shapes, weight tying, the attention against a hand-written masked softmax,
parameter and MAC counts against hand formulas and FlopCounterMode, seeded sampling, a tiny
overfit, and bad specs refused with clear messages."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

from workbench.models.gpt import GPT, build_gpt, generate, gpt_macs, gpt_param_count, gpt_size

SPEC = {"family": "gpt", "vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16}


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return build_gpt(SPEC).eval()


def test_shapes_and_spec_round_trip(model):
    idx = torch.randint(11, (3, 5))
    assert model(idx).shape == (3, 5, 11)
    assert model.spec == {**SPEC, "dropout": 0.0}
    assert json.loads(json.dumps(model.spec)) == model.spec
    torch.manual_seed(0)
    again = build_gpt(model.spec).eval()
    assert torch.equal(again(idx), model(idx))  # same seed, same spec: the same network


def test_changing_a_later_token_never_changes_earlier_logits(model):
    torch.manual_seed(1)
    idx = torch.randint(11, (2, 8))
    base = model(idx)
    for t in range(8):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % 11
        out = model(changed)
        assert torch.equal(out[:, :t], base[:, :t])  # positions before t see nothing of token t
        assert not torch.allclose(out[:, t], base[:, t])  # position t does


def test_attention_matches_a_hand_written_masked_softmax(model):
    torch.manual_seed(2)
    attn, x = model.blocks[0].attn, torch.randn(2, 6, 16)
    q, k, v = (t.reshape(2, 6, 2, 8).transpose(1, 2) for t in (x @ attn.qkv.weight.T + attn.qkv.bias).split(16, 2))
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)  # (B, H, L, L)
    future = torch.ones(6, 6).triu(1).bool()
    weights = scores.masked_fill(future, float("-inf")).softmax(-1)
    expected = (weights @ v).transpose(1, 2).reshape(2, 6, 16) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_lm_head_is_tied_to_the_token_embedding(model):
    assert model.head.weight is model.tok_emb.weight
    assert sum(p is model.tok_emb.weight for p in model.parameters()) == 1  # counted once
    with torch.no_grad():
        model.tok_emb.weight[3].zero_()
    assert model(torch.tensor([[1, 2]]))[..., 3].abs().max().item() == 0.0  # the head sees the change


def test_param_count_against_a_hand_formula(model):
    V, L, C, n = 11, 8, 16, 2
    per_block = (
        2 * C  # ln1
        + (C * 3 * C + 3 * C)  # qkv
        + (C * C + C)  # attention output projection
        + 2 * C  # ln2
        + (C * 4 * C + 4 * C)  # mlp up
        + (4 * C * C + C)
    )  # mlp down
    expected = V * C + L * C + n * per_block + 2 * C  # embeddings, blocks, ln_f; the head is tied
    assert sum(p.numel() for p in model.parameters()) == expected == gpt_param_count(SPEC) == 6896
    for spec in ({**SPEC, "n_layer": 1, "n_embd": 8}, {"vocab_size": 65, "block_size": 64}):
        assert gpt_param_count(spec) == sum(p.numel() for p in build_gpt(spec).parameters())


@pytest.mark.parametrize("seq_len", [1, 5, 8])
def test_macs_match_flop_counter_mode(model, seq_len):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:  # the math kernel runs (and counts) matmuls
        model(torch.zeros(1, seq_len, dtype=torch.int64))
    assert gpt_macs(SPEC, seq_len) == counter.get_total_flops() // 2
    C, V, n = 16, 11, 2
    assert gpt_macs(SPEC) == n * (12 * 8 * C * C + 2 * 64 * C) + 8 * C * V


def test_generate_is_deterministic_for_a_seeded_generator(model):
    prompt = torch.tensor([1, 2, 3])
    a = generate(model, prompt, 20, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(7))
    b = generate(model, prompt, 20, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(7))
    c = generate(model, prompt, 20, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(8))
    assert a.shape == (23,) and torch.equal(a[:3], prompt) and torch.equal(a, b) and not torch.equal(a, c)
    assert not model.training  # mode restored
    model.train()
    generate(model, prompt, 2, generator=torch.Generator().manual_seed(0))
    assert model.training


def test_generate_greedy_and_top_k_follow_the_logits(model):
    prompt = torch.randint(11, (2, 12))  # longer than block_size: the model sees the last 8 tokens
    greedy = generate(model, prompt, 4, temperature=0)
    ctx = prompt.clone()
    for _ in range(4):  # re-derived step by step
        ctx = torch.cat([ctx, model(ctx[:, -8:])[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, ctx)
    top1 = generate(model, prompt, 4, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(top1, greedy)  # top_k=1 leaves only the argmax to sample
    logits = model(prompt[:1, -8:])[0, -1]
    allowed = set(logits.topk(3).indices.tolist())
    gen = torch.Generator().manual_seed(0)
    draws = {generate(model, prompt[:1], 1, top_k=3, generator=gen)[0, -1].item() for _ in range(40)}
    assert draws <= allowed and len(draws) > 1


def test_a_tiny_gpt_overfits_a_short_repeated_text():
    torch.manual_seed(0)
    text = "to be or not to be. " * 20
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    x = torch.stack([ids[i : i + 16] for i in range(0, 300, 4)])  # (75, 16)
    y = torch.stack([ids[i + 1 : i + 17] for i in range(0, 300, 4)])  # next characters
    model = GPT(len(chars), 16, n_layer=1, n_head=2, n_embd=32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.9 * math.log(len(chars))  # starts near uniform
    assert losses[-1] < 0.25 * losses[0]
    out = generate(model, ids[:4], 12, temperature=0)  # 16 tokens: no context cropping
    assert "".join(chars[i] for i in out.tolist()) == text[:16]


def test_dropout_is_used_only_in_training():
    torch.manual_seed(0)
    model = GPT(11, 8, n_layer=1, n_head=2, n_embd=16, dropout=0.5)
    idx = torch.randint(11, (2, 8))
    model.train()
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"n_embd": 30, "n_head": 4},
            r"n_embd: 30 is invalid; expected a multiple of n_head=4 .*: \[1, 2, 3, 5, 6, 10, 15\]",
        ),
        ({"n_layer": 0}, r"n_layer: 0 is invalid; expected an integer >= 1"),
        ({"vocab_size": 1}, r"vocab_size: 1 is invalid; expected an integer >= 2"),
        ({"block_size": 2.5}, r"block_size: 2.5 is invalid; expected an integer >= 1"),
        ({"dropout": 1.0}, r"dropout: 1.0 is invalid; expected a number in \[0, 1\)"),
        ({"n_heads": 2}, r"n_heads: not a size option of family 'gpt'; valid: vocab_size, block_size, n_layer"),
        ({"family": "mlp"}, r"family: 'mlp' is invalid; expected 'gpt'"),
    ],
)
def test_bad_specs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        build_gpt({**SPEC, **change})
    with pytest.raises(ValueError, match=message):
        gpt_param_count({**SPEC, **change})


def test_missing_spec_keys_are_named():
    with pytest.raises(ValueError, match=r"spec: missing key\(s\) \['block_size'\]; .*block_size = input_shape\[0\]"):
        gpt_size({"family": "gpt", "vocab_size": 11})


def test_bad_inputs_are_refused(model):
    with pytest.raises(ValueError, match=r"idx: sequence length 9 is invalid; expected 1..block_size=8"):
        model(torch.zeros(1, 9, dtype=torch.int64))
    with pytest.raises(
        ValueError,
        match=r"idx: 'shape \(8,\) and dtype torch.int64' is invalid; expected int64 "
        r"token ids of shape \(B, L\)",
    ):
        model(torch.zeros(8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"idx: .*dtype torch.float32"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"seq_len: 9 is invalid; expected at most block_size=8"):
        gpt_macs(SPEC, 9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt_ids": torch.tensor([11])}, r"prompt_ids: 11 is invalid; expected token ids 0..10"),
        ({"prompt_ids": torch.tensor([], dtype=torch.int64)}, r"prompt_ids: .* expected at least one token"),
        ({"prompt_ids": torch.tensor([1.0])}, r"prompt_ids: .*dtype torch.float32.* expected an int64 tensor"),
        ({"n": -1}, r"n: -1 is invalid; expected an integer >= 0"),
        ({"temperature": -0.5}, r"temperature: -0.5 is invalid; expected a finite number >= 0"),
        ({"top_k": 12}, r"top_k: 12 is invalid; expected 1..vocab_size=11, or None"),
    ],
)
def test_generate_errors(model, kwargs, message):
    args = {"prompt_ids": torch.tensor([1, 2]), "n": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(model, **args)
