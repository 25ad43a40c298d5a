"""predict_logits / soft_targets / inference: the one way to run a model outside the training loop."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.engine.evaluation import inference, model_device, predict_logits, soft_targets


class DictNet(nn.Module):
    """Returns a dict (like Hugging Face models) and has dropout, so eval mode matters."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))

    def forward(self, x):
        return {"logits": self.body(x)}


def test_predict_logits_is_eval_no_grad_batched_and_restores_the_mode():
    torch.manual_seed(0)
    net = DictNet().train()
    x = torch.randn(10, 4)
    out = predict_logits(net, x, batch_size=3)
    with torch.no_grad():
        expected = net.eval()(x)["logits"]
    net.train()
    torch.testing.assert_close(out, expected)  # eval mode: dropout off, the same in any batching
    assert net.training and not out.requires_grad and out.dtype == torch.float32
    torch.testing.assert_close(predict_logits(net, x.numpy()), expected)  # arrays too
    assert predict_logits(net, x[:0]).numel() == 0


def test_predict_logits_moves_inputs_to_the_model_device():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))

        def forward(self, x):
            seen.append(x.device)
            return x.double() @ self.w

    out = predict_logits(Probe(), np.ones((3, 2), dtype=np.float32))
    assert seen == [model_device(Probe())] and out.dtype == torch.float32 and out.tolist() == [[2.0, 2.0]] * 3


def test_soft_targets_is_softmax_of_logits_over_t():
    torch.manual_seed(0)
    net = nn.Linear(4, 5)
    x = torch.randn(6, 4)
    with torch.no_grad():
        ref = F.softmax(net(x) / 4.0, dim=-1)
    torch.testing.assert_close(soft_targets(net, x, 4.0), ref)
    with pytest.raises(ValueError, match="temperature: 0"):
        soft_targets(net, x, 0)


def test_inference_restores_the_mode_even_on_error():
    net = nn.Dropout().train()
    with pytest.raises(RuntimeError), inference(net):
        assert not net.training and not torch.is_grad_enabled()
        raise RuntimeError("boom")
    assert net.training and torch.is_grad_enabled()


def test_bad_batch_size_is_named():
    with pytest.raises(ValueError, match="batch_size: 0"):
        predict_logits(nn.Linear(2, 2), torch.zeros(1, 2), batch_size=0)
