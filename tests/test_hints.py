"""Feature hints (FitNets): named layers, automatic adapters, the hint term."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import Recorder, mlp, toy_data

from workbench import DistillConfig, Distiller, distill
from workbench.engine.hints import make_adapter


def test_adapters_map_student_shapes_to_teacher_shapes():
    cases = [
        ((16,), (32,)),
        ((4, 10), (8, 10)),
        ((4, 10), (8, 5)),
        ((3, 8, 8), (6, 4, 4)),
        ((3, 8, 8), (6, 8, 8)),
        ((3, 4, 4), (20,)),
    ]
    for s, t in cases:
        a = make_adapter(s, t)
        assert a(torch.randn(2, *s)).shape == (2, *t), (s, t)
    assert isinstance(make_adapter((4, 10), (8, 10)), nn.Conv1d)


def test_hint_term_matches_a_hand_computation_and_adapter_trains():
    data = toy_data(n_train=64)
    teacher, student = mlp(hidden=32, seed=1), mlp(hidden=16, seed=2)
    cfg = DistillConfig(epochs=3, batch_size=64, log_every=1, w_hint=2.0, hint_student="1", hint_teacher="1", seed=5)
    x = data["train"][0]
    with torch.no_grad():
        fs, ft = torch.relu(student[0](x)), torch.relu(teacher[0](x))
        torch.manual_seed(5)  # the adapter is created right after the run's seed
        adapter0 = make_adapter((16,), (32,))
        want = F.mse_loss(adapter0(fs), ft).item()
    rec = Recorder()
    res = distill(teacher, student, data, cfg, callbacks=[rec])
    step1 = rec.of("step")[0]
    assert set(step1.terms) == {"ce", "kd", "hint"}
    assert step1.terms["hint"] == pytest.approx(want, rel=1e-5)
    assert step1.loss == pytest.approx(0.5 * step1.terms["ce"] + 0.5 * step1.terms["kd"] + 2.0 * want, rel=1e-5)
    assert not torch.equal(res.adapter.weight, adapter0.weight)  # trained with the student
    assert rec.of("step")[-1].terms["hint"] < want


def test_cached_and_live_teacher_features_agree():
    data = toy_data()
    cfg = DistillConfig(epochs=2, w_hint=1.0, hint_student="1", hint_teacher="1", seed=2)
    a = distill(mlp(hidden=32, seed=1), mlp(seed=2), data, cfg)
    b = distill(mlp(hidden=32, seed=1), mlp(seed=2), data, cfg.replace(cache_teacher=False))
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q)


def test_bad_layer_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"hint_student: 'body.3' is not a layer of the student; valid: 0, 1, 2"):
        Distiller(mlp(hidden=32), mlp(), toy_data(), w_hint=1.0, hint_student="body.3", hint_teacher="1")
    with pytest.raises(ValueError, match=r"hint_teacher: 'x' is not a layer of the teacher"):
        Distiller(mlp(hidden=32), mlp(), toy_data(), w_hint=1.0, hint_student="1", hint_teacher="x")
    with pytest.raises(ValueError, match="w_hint: 1.0 needs hint_student and hint_teacher"):
        DistillConfig(w_hint=1.0)
    with pytest.raises(ValueError, match="give both layer names"):
        DistillConfig(hint_student="1")
