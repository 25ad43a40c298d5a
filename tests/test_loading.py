"""load_model: every format round-trips to the original outputs; code-running formats need trust;
crafted pickles never run; mismatches are named; check_compatible against a dataset."""

import json
import os
import pathlib
import socket

import pytest
import torch
import torch.nn.functional as F

import workbench as wb
from workbench.data.splits import DataSplits, Split
from workbench.models.load import LoadedModel, check_compatible, hf_task_of, load_model
from workbench.models.zoo import build_model
from workbench.store.export import export_model
from workbench.store.runs import RunRecorder

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


class Evil:
    """Pickles to a call that creates ``marker``: loading it unsafely would leave the file behind."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def tiny_data(n=24, features=8, classes=3, name="tiny"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, features, generator=g)
    y = torch.arange(n) % classes
    return DataSplits(train=Split(x[:16], y[:16]), val=Split(x[16:], y[16:]), num_classes=classes, name=name)


def zoo(hidden=(16,), features=8, classes=3):
    torch.manual_seed(0)
    return build_model("mlp", (features,), classes, hidden=hidden).eval()


X = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))


# --- round trips --------------------------------------------------------------------------------


def test_state_dict_with_its_export_spec_round_trips(tmp_path):
    model = zoo()
    path = export_model(model, (8,), tmp_path / "student.pt", fmt="state_dict")  # + student.spec.json
    loaded = load_model(path)
    assert isinstance(loaded, LoadedModel) and loaded.kind == "state_dict" and loaded.hf_task is None
    assert loaded.spec == model.spec and loaded.source == str(path)
    n = 8 * 16 + 16 + 16 * 3 + 3
    assert loaded.description == f"mlp:16 from student.pt, {n:,} params"
    torch.testing.assert_close(loaded.module(X), model(X))


def test_state_dict_finds_spec_json_in_its_folder(tmp_path):
    model = zoo(hidden=(4, 5))
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    (tmp_path / "spec.json").write_text(json.dumps(model.spec))
    loaded = load_model(tmp_path / "weights.pth")
    assert loaded.description.startswith("mlp:4,5 from weights.pth")
    torch.testing.assert_close(loaded.module(X), model(X))


def test_safetensors_round_trips(tmp_path):
    from safetensors.torch import save_file

    model = zoo()
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    (tmp_path / "m.spec.json").write_text(json.dumps(model.spec))
    loaded = load_model(str(tmp_path / "m.safetensors"))
    assert loaded.kind == "safetensors" and loaded.spec == model.spec
    torch.testing.assert_close(loaded.module(X), model(X))


def test_export_program_needs_trust_then_round_trips(tmp_path):
    model = zoo()
    path = export_model(model, (8,), tmp_path / "student.pt2")  # traced on a batch of 2
    with pytest.raises(ValueError, match=r"student\.pt2.*torch\.export program.*trusted=False.*trusted=True"):
        load_model(path)
    loaded = load_model(path, trusted=True)
    assert loaded.kind == "export" and loaded.spec is None and "torch.export program student.pt2" in loaded.description
    loaded.module.train()  # the engine toggles modes; the program's own module would raise here
    loaded.module.eval()
    torch.testing.assert_close(loaded.module(X), model(X))  # a batch of 5: the batch size stayed dynamic


def test_torchscript_needs_trust_even_when_named_pt(tmp_path):
    model = zoo()
    scripted = torch.jit.script(model)
    scripted.save(str(tmp_path / "m.ts"))
    scripted.save(str(tmp_path / "m.pt"))  # a TorchScript archive with a state_dict's suffix
    for name in ("m.ts", "m.pt"):
        with pytest.raises(ValueError, match=rf"{name}.*TorchScript program.*runs code.*trusted=True"):
            load_model(tmp_path / name)
    loaded = load_model(tmp_path / "m.pt", trusted=True)
    assert loaded.kind == "torchscript"
    torch.testing.assert_close(loaded.module(X), model(X))


def test_run_id_made_by_a_real_fit_round_trips(tmp_path):
    data = tiny_data()
    model = build_model("mlp", data, hidden=(8,))
    res = wb.train(model, data, wb.DistillConfig(epochs=2, log_every=1), callbacks=[RunRecorder(model)])
    loaded = load_model(f"run:{res.run_id}")  # the runs root from $WORKBENCH_RUNS (conftest)
    assert loaded.kind == "run" and loaded.source == f"run:{res.run_id}" and loaded.spec == model.spec
    assert loaded.description.startswith(f"mlp:8 from run {res.run_id}, ")
    model.eval()
    torch.testing.assert_close(loaded.module(data.train.x), model(data.train.x))
    assert any(not torch.equal(a, b) for a, b in zip(loaded.module.parameters(), zoo(hidden=(8,)).parameters()))


# --- refusals -----------------------------------------------------------------------------------


def test_crafted_pickles_are_refused_in_files_and_runs(tmp_path):
    marker = tmp_path / "pwned"
    model = zoo()
    (tmp_path / "evil.spec.json").write_text(json.dumps(model.spec))
    torch.save({**model.state_dict(), "p": Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt.*other than tensors.*refused"):
        load_model(tmp_path / "evil.pt")

    data = tiny_data()
    student = build_model("mlp", data, hidden=(4,))
    res = wb.train(student, data, wb.DistillConfig(epochs=1), callbacks=[RunRecorder(student)])
    weights = pathlib.Path(os.environ["WORKBENCH_RUNS"]) / res.run_id / "model.pt"
    torch.save({**student.state_dict(), "p": Evil(marker)}, weights)
    with pytest.raises(ValueError, match=r"model\.pt.*other than tensors.*refused"):
        load_model(f"run:{res.run_id}")
    assert not marker.exists()


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"'.*missing\.pt' does not exist"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match=r"folder' is a folder without config\.json"):
        load_model(tmp_path / "folder")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"model\.onnx' has an unknown extension '\.onnx'"):
        load_model(tmp_path / "model.onnx")
    torch.save(zoo().state_dict(), tmp_path / "lonely.pt")
    with pytest.raises(ValueError, match=r"lonely\.pt' has no spec next to it; expected .*lonely\.spec\.json"):
        load_model(tmp_path / "lonely.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt' holds a list that is not a state_dict"):
        load_model(tmp_path / "list.pt")
    for bad in ("run:../etc", "run:nope"):
        with pytest.raises(ValueError, match="run: "):
            load_model(bad)
    with pytest.raises(ValueError, match=r"source: '' is invalid"):
        load_model("")
    with pytest.raises(ValueError, match=r"role: 'judge' is invalid; valid: teacher, student"):
        load_model(tmp_path / "lonely.pt", role="judge")


def test_a_spec_that_does_not_match_the_weights_names_the_difference(tmp_path):
    torch.save(zoo(hidden=(16,)).state_dict(), tmp_path / "w.pt")
    (tmp_path / "w.spec.json").write_text(json.dumps(zoo(hidden=(12,)).spec))
    with pytest.raises(
        ValueError,
        match=r"w\.pt' does not fit the model of '.*w\.spec\.json' \(mlp:12\): "
        r"wrong size: hidden\.0\.linear\.weight \(16, 8\) \(expected \(12, 8\)\)",
    ):
        load_model(tmp_path / "w.pt")
    (tmp_path / "w.spec.json").write_text(json.dumps(zoo(hidden=(16, 4)).spec))
    with pytest.raises(
        ValueError,
        match=r"missing: hidden\.1\.linear\.weight, hidden\.1\.linear\.bias; "
        r"wrong size: head\.weight \(3, 16\) \(expected \(3, 4\)\)",
    ):
        load_model(tmp_path / "w.pt")
    (tmp_path / "w.spec.json").write_text(json.dumps({"family": "transformer"}))
    with pytest.raises(ValueError, match=r"w\.spec\.json' does not describe a zoo model"):
        load_model(tmp_path / "w.pt")


# --- compatibility with the data ----------------------------------------------------------------


def test_check_compatible_names_the_file_and_the_fix(tmp_path):
    data = tiny_data(classes=3)
    path = export_model(zoo(classes=3), (8,), tmp_path / "ok.pt", fmt="state_dict")
    assert check_compatible(load_model(path), data, "teacher") is None
    assert load_model(path, data=data, role="student").kind == "state_dict"

    wrong = export_model(zoo(classes=5), (8,), tmp_path / "five.pt", fmt="state_dict")
    with pytest.raises(
        ValueError,
        match=r"teacher: '.*five\.pt' outputs logits of shape \(2, 5\) for a batch of 2, "
        r"but data 'tiny' needs \(2, 3\) \(3 classes.*teacher trained on this data",
    ):
        load_model(wrong, data=data)
    with pytest.raises(
        ValueError,
        match=r"student: '.*five\.pt'.*build a fresh student with num_classes=3 .*"
        r"--student mlp:16",
    ):
        check_compatible(load_model(wrong), data, "student")

    narrow = export_model(zoo(features=6), (6,), tmp_path / "six.pt", fmt="state_dict")
    with pytest.raises(
        ValueError,
        match=r"'.*six\.pt' was built for inputs of shape \(6,\), but data 'tiny' has "
        r"inputs of shape \(8,\)",
    ):
        load_model(narrow, data=data)
    scripted = tmp_path / "six.ts"
    torch.jit.script(zoo(features=6)).save(str(scripted))  # no spec: the forward pass finds it
    with pytest.raises(
        ValueError,
        match=r"six\.ts' does not accept the inputs of data 'tiny' \(a batch of shape "
        r"\(2, 8\), torch\.float32\)",
    ):
        load_model(scripted, trusted=True, data=data)
    with pytest.raises(ValueError, match="data: dict is invalid; expected a DataSplits"):
        check_compatible(load_model(path), {"train": (torch.zeros(2, 8), torch.zeros(2))})


def test_check_compatible_restores_the_training_mode(tmp_path):
    path = export_model(zoo(), (8,), tmp_path / "m.pt", fmt="state_dict")
    loaded = load_model(path)
    loaded.module.train()
    check_compatible(loaded, tiny_data())
    assert loaded.module.training


# --- Hugging Face folders -----------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails: loading must not even try one."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def tiny_bert(folder, num_labels=3):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=num_labels,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    return model


def tiny_gpt2(folder, vocab=20):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=12, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return model


def test_hf_sequence_classifier_returns_the_models_logits(tmp_path, no_network):
    reference = tiny_bert(tmp_path / "bert")
    loaded = load_model(tmp_path / "bert")
    assert loaded.kind == "hf" and loaded.hf_task == "sequence-classification" and loaded.spec is None
    assert loaded.description.startswith("bert sequence classifier (3 classes) from bert, ")
    ids = torch.randint(0, 30, (4, 7), generator=torch.Generator().manual_seed(3))
    out = loaded.module(ids)
    assert out.shape == (4, 3)
    torch.testing.assert_close(out, reference(input_ids=ids).logits)
    assert "HF_HUB_OFFLINE" not in os.environ  # the environment is restored after loading
    loaded.module.hf_model.save_pretrained(tmp_path / "again")  # the HF model stays reachable
    assert (tmp_path / "again" / "config.json").is_file()


def test_hf_causal_lm_returns_per_position_logits_and_checks_the_vocabulary(tmp_path, no_network):
    reference = tiny_gpt2(tmp_path / "gpt2", vocab=20)
    loaded = load_model(str(tmp_path / "gpt2"))
    assert loaded.hf_task == "causal-lm" and "gpt2 causal LM (vocab 20)" in loaded.description
    ids = torch.randint(0, 20, (3, 6), generator=torch.Generator().manual_seed(4))
    out = loaded.module(ids)
    assert out.shape == (3, 6, 20)
    torch.testing.assert_close(out, reference(input_ids=ids).logits)
    # the model's own next-token loss, recomputed from the returned logits
    loss = F.cross_entropy(out[:, :-1].reshape(-1, 20), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, reference(input_ids=ids, labels=ids).loss)

    tokens = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(5))
    text = DataSplits(
        train=Split(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()),
        num_classes=20,
        name="chars",
        input_shape=(5,),
    )
    check_compatible(loaded, text, "teacher")
    assert not loaded.module.training and not loaded.module.hf_model.training  # still eval: no dropout
    bigger = text.with_(num_classes=25)
    with pytest.raises(
        ValueError,
        match=r"^teacher: HF folder '.*gpt2' has vocab_size 20 but the data's vocabulary has 25 tokens; "
        r"expected a teacher trained on this data$",
    ):
        check_compatible(loaded, bigger, "teacher")
    with pytest.raises(ValueError, match=r"student: .* e\.g\. GPT2Config\(vocab_size=25, n_positions=5\)"):
        check_compatible(loaded, bigger, "student")


def test_hf_folders_that_need_remote_code_or_unknown_heads_are_refused(tmp_path):
    tiny_gpt2(tmp_path / "remote")
    config = json.loads((tmp_path / "remote" / "config.json").read_text())
    (tmp_path / "remote" / "config.json").write_text(
        json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "modeling_evil.EvilLM"}})
    )
    with pytest.raises(ValueError, match=r"config\.json' has an 'auto_map'.*refused"):
        load_model(tmp_path / "remote")
    (tmp_path / "remote" / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2Model"]}))
    with pytest.raises(
        ValueError,
        match=r"architectures \['GPT2Model'\]; expected one ending in "
        r"ForSequenceClassification",
    ):
        load_model(tmp_path / "remote")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text(json.dumps({"lr": 0.1}))
    with pytest.raises(ValueError, match="names no 'architectures' or 'model_type'"):
        load_model(tmp_path / "plain")


def test_hf_pickled_weights_are_refused(tmp_path, no_network):
    marker = tmp_path / "pwned"
    tiny_gpt2(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "model.safetensors").unlink()
    torch.save(
        {"transformer.wte.weight": torch.zeros(20, 16), "p": Evil(marker)}, tmp_path / "gpt2" / "pytorch_model.bin"
    )
    with pytest.raises(ValueError, match=r"gpt2' holds pickled weights with objects other than tensors; refused"):
        load_model(tmp_path / "gpt2")
    assert not marker.exists()


def test_hf_task_of_reads_the_architecture_names():
    assert hf_task_of(["BertForSequenceClassification"]) == "sequence-classification"
    assert hf_task_of(["LlamaForCausalLM"]) == hf_task_of(["GPT2LMHeadModel"]) == "causal-lm"
    assert hf_task_of(["BertModel"]) is None and hf_task_of([]) is None


def test_importing_the_loader_pulls_in_no_optional_package():
    import subprocess
    import sys

    code = "import sys, workbench.models.load; print(sorted({'transformers', 'safetensors'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
