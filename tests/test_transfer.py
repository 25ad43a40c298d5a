"""Transfer sets: labeled subset, extra unlabeled inputs, mixup, equal step budgets."""

import pytest
import torch
import torch.nn as nn
from helpers import Recorder, mlp, toy_data

from workbench import DistillConfig, Distiller, distill, train
from workbench.data.splits import as_splits
from workbench.engine.batches import Stream, labeled_subset


def test_labeled_subset_is_stratified_seeded_and_refuses_empty_classes():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    idx = labeled_subset(y, 0.1, seed=3)
    assert torch.bincount(y[idx]).tolist() == [5, 3, 2]
    assert torch.equal(idx, labeled_subset(y, 0.1, seed=3))
    assert not torch.equal(idx, labeled_subset(y, 0.1, seed=4))
    assert torch.equal(labeled_subset(y, 1.0, seed=0), torch.arange(100))
    with pytest.raises(
        ValueError,
        match=r"labeled_fraction: 0.02 leaves class 'c2' without a labeled example "
        r"\(it has 20 train samples\); use at least 0.03",
    ):
        labeled_subset(y, 0.02, seed=0, class_names=("c0", "c1", "c2"))


def test_stream_is_a_plain_epoch_loop_over_whole_passes():
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x = torch.arange(10) * 10
    stream = Stream([torch.arange(10), x, None], 4, g1)
    got = [stream() for _ in range(6)]  # two passes of 3 steps: 4 + 4 + 2
    assert [len(b[0]) for b in got] == [4, 4, 2, 4, 4, 2]
    assert all(b[2] is None and torch.equal(b[1], b[0] * 10) for b in got)  # tensors stay aligned
    for p in range(2):
        perm = torch.randperm(10, generator=g2)
        assert torch.equal(torch.cat([b[0] for b in got[3 * p : 3 * p + 3]]), perm)


class Spy(nn.Module):
    """An MLP that records the inputs of each training forward."""

    def __init__(self):
        super().__init__()
        self.m, self.seen = mlp(seed=2), []

    def forward(self, x):
        if self.training:
            self.seen.append(x.clone())
        return self.m(x)


def _row_ids(x, pool):
    """Index of each row of x in pool (-1 when absent)."""
    eq = (x[:, None, :] == pool[None, :, :]).all(-1)
    return torch.where(eq.any(1), eq.float().argmax(1), torch.full((len(x),), -1))


@pytest.mark.parametrize("seed,label_seed", [(1, None), (5, 1)])
def test_ce_batches_come_from_the_labeled_subset_and_kd_from_all_inputs(seed, label_seed):
    """The labeled subset is drawn with label_seed (else seed): runs of other seeds, or a teacher
    and its students, can share the very same labeled rows."""
    data = toy_data(n_train=96)
    rec, spy = Recorder(), Spy()
    cfg = DistillConfig(epochs=3, batch_size=16, labeled_fraction=0.25, seed=seed, label_seed=label_seed)
    distill(mlp(hidden=32, seed=1), spy, data, cfg, callbacks=[rec])
    start = rec.of("fit_start")[0]
    assert (start.labeled_size, start.transfer_size, start.steps_per_epoch) == (24, 96, 6)
    x_train, y_train = data["train"]
    labeled = labeled_subset(y_train, 0.25, seed=1)
    ce_rows, kd_rows = set(), set()
    for x in spy.seen:
        # [CE batch; KD batch] in one forward; the 24 labeled rows give CE batches of 16 and 8
        assert x.shape[0] in (32, 24)
        ce_rows |= set(_row_ids(x[:-16], x_train).tolist())
        kd_rows |= set(_row_ids(x[-16:], x_train).tolist())
    assert ce_rows == set(labeled.tolist())
    assert len(kd_rows) == 96 and -1 not in kd_rows
    with pytest.raises(ValueError, match="label_seed: -1 is invalid; expected an integer >= 0, or None"):
        DistillConfig(label_seed=-1)


def test_every_method_gets_the_same_step_budget():
    data = toy_data(n_train=96)
    cfg = DistillConfig(epochs=4, batch_size=16, labeled_fraction=0.25)
    a = train(mlp(), data, cfg, role="baseline")
    b = distill(mlp(hidden=32, seed=1), mlp(seed=2), data, cfg)
    c = distill(mlp(hidden=32, seed=1), mlp(seed=2), data, cfg.replace(labeled_fraction=1.0, mixup_alpha=0.4))
    assert a.summary["steps"] == b.summary["steps"] == c.summary["steps"] == 24


def test_extra_unlabeled_inputs_join_the_transfer_set():
    d = toy_data(n_train=96)
    extra = torch.randn(200, 8, generator=torch.Generator().manual_seed(9))
    data = as_splits(d).with_(unlabeled=extra)
    rec, spy = Recorder(), Spy()
    distill(mlp(hidden=32, seed=1), spy, data, DistillConfig(epochs=5, batch_size=16), callbacks=[rec])
    assert rec.of("fit_start")[0].transfer_size == 296
    kd_inputs = torch.cat([x[16:] for x in spy.seen])
    assert (_row_ids(kd_inputs, extra) >= 0).sum() > 100  # most KD rows now come from the extra set
    assert (_row_ids(torch.cat([x[:16] for x in spy.seen]), extra) >= 0).sum() == 0  # CE never does
    rec2 = Recorder()
    distill(mlp(hidden=32, seed=1), mlp(seed=2), data, DistillConfig(epochs=1, use_unlabeled=False), callbacks=[rec2])
    assert rec2.of("fit_start")[0].transfer_size == 96


def test_mixup_queries_the_teacher_live_on_mixed_inputs():
    data = toy_data(n_train=96)
    teacher, spy = mlp(hidden=32, seed=1), Spy()
    calls = []
    teacher.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    res = distill(teacher, spy, data, DistillConfig(epochs=2, batch_size=16, mixup_alpha=1.0))
    assert res.status == "completed"
    assert calls.count(16) == 12  # one live teacher call per step on the 16 mixed inputs
    x_train = data["train"][0]
    kd = torch.cat([x[16:] for x in spy.seen])
    assert (_row_ids(kd, x_train) >= 0).float().mean() < 0.1  # mixed, not original rows
    again = distill(mlp(hidden=32, seed=1), Spy(), data, DistillConfig(epochs=2, batch_size=16, mixup_alpha=1.0))
    for p, q in zip(res.model.parameters(), again.model.parameters()):
        torch.testing.assert_close(p, q)  # seeded


def test_transfer_options_need_in_memory_data():
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(*toy_data()["train"]), batch_size=16)
    with pytest.raises(ValueError, match="labeled_fraction: 0.5 needs in-memory data"):
        Distiller(mlp(hidden=32), mlp(), loader, labeled_fraction=0.5)
    with pytest.raises(ValueError, match=r"labeled_fraction: 0.001 leaves class"):
        Distiller(mlp(hidden=32), mlp(), toy_data(), labeled_fraction=0.001)
    with pytest.raises(ValueError, match=r"labeled_fraction: 0 is invalid; expected a fraction in \(0, 1\]"):
        DistillConfig(labeled_fraction=0)


@pytest.mark.slow
def test_kd_beats_scratch_with_ten_percent_labels():
    """digits, 10% labels, soft labels on the rest: KD ahead by >= 5 points over 5 paired seeds."""
    import workbench as wb

    data = wb.load_dataset("digits-images", seed=0)
    teacher = wb.build_model("cnn2d", data, channels=(32, 64), dropout=0.3)
    t = wb.train(teacher, data, wb.DistillConfig(epochs=60, lr=1e-3, seed=0))
    assert t.summary["test_acc"] > 0.95
    gains = []
    for seed in range(5):
        cfg = wb.DistillConfig(epochs=100, lr=3e-3, batch_size=64, seed=seed, labeled_fraction=0.1)
        torch.manual_seed(seed)
        scratch = wb.train(wb.build_model("mlp", data, hidden=(16,)), data, cfg, role="baseline")
        torch.manual_seed(seed)
        kd = wb.distill(
            teacher, wb.build_model("mlp", data, hidden=(16,)), data, cfg.replace(temperature=4.0, alpha=0.1)
        )
        gains.append(kd.summary["test_acc"] - scratch.summary["test_acc"])
    mean_gain = sum(gains) / len(gains)
    print(f"KD - scratch per seed: {[round(g, 4) for g in gains]}, mean {mean_gain:.4f}")
    assert mean_gain >= 0.05
