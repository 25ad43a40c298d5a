"""Hugging Face models as teachers and students: tiny GPT-2 causal LMs (built from config, saved with
save_pretrained, never downloaded) distill on text through the one engine, against a plain PyTorch
loop; BERT / GPT-2 sequence classifiers distill on a table of token ids; a student loaded from a
folder is saved back as a folder (export_run format "hf", ``workbench export --format hf``) that
loads to the same outputs; mismatches name the folder; no network connection is ever attempted."""

import copy
import json
import math
import socket

import pytest
import torch
import torch.nn.functional as F
from helpers import Recorder

import workbench as wb
from workbench import cli
from workbench.data.text import shakespeare_text
from workbench.engine.sequence import target_rows
from workbench.models.hf import HF_STATE_KEY, HFLogits, hf_from_state
from workbench.store.export import NOT_HF

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore:teacher. .* is no better than chance:UserWarning")  # untrained teachers

BLOCK = 16
TEXT = shakespeare_text()[:3000]  # a few KB: ~170 blocks of 16 characters


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny transformers run many small ops: on a shared 2-core machine one thread is far faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class NetworkBlocked:
    """Every socket connection and name lookup fails and is recorded (a caught failure still counts)."""

    def __init__(self, mp: pytest.MonkeyPatch):
        self.attempts: list[str] = []
        for name in ("connect", "connect_ex"):
            mp.setattr(socket.socket, name, self._refuse(f"socket.{name}"))
        mp.setattr(socket, "getaddrinfo", self._refuse("getaddrinfo"))
        mp.setattr(socket, "create_connection", self._refuse("create_connection"))
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # the loader must go offline by itself
            mp.delenv(var, raising=False)

    def _refuse(self, what):
        def refuse(*args, **kwargs):
            self.attempts.append(what)
            raise OSError(f"network blocked in tests: {what}")

        return refuse


@pytest.fixture
def no_network(monkeypatch):
    blocked = NetworkBlocked(monkeypatch)
    yield blocked
    assert blocked.attempts == []


@pytest.fixture(scope="module")
def text():
    return wb.from_text(TEXT, block_size=BLOCK)


def gpt2_folder(folder, vocab, layers=1, width=16, positions=BLOCK, seed=0):
    """A GPT-2 LM built from a config (no dropout, so a plain loop can replay it) and saved."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=vocab,
        n_positions=positions,
        n_embd=width,
        n_layer=layers,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return str(folder)


def text_config(**changes):
    base = dict(epochs=1, max_steps=3, batch_size=32, sample_tokens=4, eval_batch_size=256, device="cpu")
    return wb.DistillConfig.for_text(**{**base, **changes})


# ----------------------------------------------------------------------------- causal LMs on text


@pytest.fixture(scope="module")
def hf_text_run(tmp_path_factory, text):
    """One experiment, HF teacher and student given as folders, recorded in a runs folder, offline."""
    tmp = tmp_path_factory.mktemp("hf_text")
    teacher = gpt2_folder(tmp / "hf_teacher", text.num_classes, layers=2, width=32, seed=1)
    student = gpt2_folder(tmp / "hf_student", text.num_classes, seed=2)
    with pytest.MonkeyPatch.context() as mp:
        blocked = NetworkBlocked(mp)
        exp = wb.Experiment(text, teacher, student, config=text_config(), runs=tmp / "runs", cache=False)
        initial = copy.deepcopy(exp.student.state_dict())
        res = exp.run()
        assert blocked.attempts == []  # loading, checking and distilling: no connection, no lookup
    return tmp, exp, res, initial


def test_hf_folders_distill_on_text_through_the_experiment(hf_text_run, text):
    tmp, exp, res, initial = hf_text_run
    assert exp.loaded["teacher"].kind == exp.loaded["student"].kind == "hf"
    assert exp.loaded["student"].description.startswith(f"gpt2 causal LM (vocab {text.num_classes}) from hf_student")
    assert not exp.train_teacher  # a teacher from a folder is taken as trained
    assert res.teacher is None and res.student.status == res.baseline.status == "completed"
    assert res.student.summary["steps"] == res.baseline.summary["steps"] == 3
    assert {"val_bpc", "test_bpc", "val_agreement"} <= set(res.student.summary)
    assert isinstance(res.student.model, HFLogits)
    # the student was trained, the teacher is frozen: its weights are the folder's
    changed = [k for k, v in res.student.model.state_dict().items() if not torch.equal(v, initial[k])]
    assert changed and HF_STATE_KEY not in changed
    saved = transformers.GPT2LMHeadModel.from_pretrained(tmp / "hf_teacher")
    for name, p in saved.named_parameters():
        torch.testing.assert_close(exp.teacher.hf_model.get_parameter(name), p, rtol=0, atol=0)


def test_hf_distillation_matches_a_plain_pytorch_loop(tmp_path, text, no_network):
    """Two full-batch SGD steps of w_ce*CE + w_kd*T^2*KL(p_t || p_s), per target token, via wb.distill."""
    teacher = wb.load_model(gpt2_folder(tmp_path / "t", text.num_classes, layers=2, width=32, seed=1)).module
    student = wb.load_model(gpt2_folder(tmp_path / "s", text.num_classes, seed=2)).module
    reference = copy.deepcopy(student.hf_model).train()
    x, y = text.train.x, text.train.y
    T, w_ce, w_kd, lr = 2.0, 0.3, 0.7, 0.5
    cfg = wb.DistillConfig(
        epochs=2,
        batch_size=len(x),  # one batch of every block per epoch: the order within it does not matter
        optimizer="sgd",
        lr=lr,
        momentum=0.0,
        temperature=T,
        w_ce=w_ce,
        w_kd=w_kd,
        divergence="kl",
        teacher_top_k=None,
        log_every=1,
        sample_tokens=0,
        device="cpu",
    )
    rec = Recorder()
    res = wb.distill(teacher, student, text, cfg, callbacks=[rec])
    assert res.status == "completed", res.message

    with torch.no_grad():
        t = teacher.hf_model(input_ids=x).logits  # (B, L, V)
    losses = []
    for _ in range(2):
        s_rows, labels = target_rows(reference(input_ids=x).logits, y)  # (N, V), (N,)
        t_rows, _ = target_rows(t, y)
        ce = F.cross_entropy(s_rows, labels)
        kd = F.kl_div(F.log_softmax(s_rows / T, -1), F.log_softmax(t_rows / T, -1), log_target=True, reduction="sum")
        kd = T * T * kd / len(labels)  # mean over target tokens
        loss = w_ce * ce + w_kd * kd
        losses.append(loss.item())
        reference.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= lr * p.grad
    steps = rec.of("step")
    assert [s.loss for s in steps] == pytest.approx(losses, rel=1e-5)
    for (name, a), b in zip(res.model.hf_model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_hf_mismatches_are_named_before_training(tmp_path, text):
    k = text.num_classes
    good = gpt2_folder(tmp_path / "good", k)
    wide = gpt2_folder(tmp_path / "wide_vocab", k + 7)
    short = gpt2_folder(tmp_path / "short", k, positions=BLOCK // 2)
    with pytest.raises(
        ValueError,
        match=rf"^teacher: HF folder '.*wide_vocab' has vocab_size {k + 7} but the data's vocabulary has "
        rf"{k} characters; expected a teacher trained on this data$",
    ):
        wb.Experiment(text, wide, good, config=text_config())
    with pytest.raises(
        ValueError,
        match=rf"^student: HF folder '.*short' has position embeddings for 8 tokens, but data 'text' has rows "
        rf"of 16 tokens; .* e\.g\. GPT2Config\(vocab_size={k}, n_positions=16\), and save_pretrained it",
    ):
        wb.Experiment(text, good, short, config=text_config())
    # modules handed to the engine directly: its own check names the folder too
    with pytest.raises(ValueError, match=rf"^teacher: HF folder '.*wide_vocab' has vocab_size {k + 7} but"):
        wb.distill(wb.load_model(wide).module, wb.load_model(good).module, text, text_config())
    raw = transformers.GPT2LMHeadModel.from_pretrained(short)  # a transformers model, not wrapped
    with pytest.raises(ValueError, match=r"^student: HF folder '.*short' has position embeddings for 8 tokens"):
        wb.distill(wb.load_model(good).module, raw, text, text_config())
    classifier = tmp_path / "classifier"
    transformers.GPT2ForSequenceClassification(
        transformers.GPT2Config(vocab_size=k, n_positions=BLOCK, n_embd=16, n_layer=1, n_head=2, pad_token_id=0)
    ).save_pretrained(classifier)
    with pytest.raises(ValueError, match=r"^teacher: HF folder '.*classifier' is a sequence classifier"):
        wb.Experiment(text, str(classifier), good, config=text_config())


# ----------------------------------------------------------------------------- classifiers on a table


VOCAB, LENGTH = 20, 8


def token_table(n=160, seed=0):
    """Rows of 8 token ids (0..18; 19 is GPT-2's pad id) labeled by whether most ids are below 9."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB - 1, (n, LENGTH), generator=g)
    y = ((ids < 9).sum(1) >= LENGTH // 2).long()  # about half of the rows
    return ids, y


def bert_classifier(folder, num_labels=2, seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=LENGTH,
        num_labels=num_labels,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return str(folder)


def gpt2_classifier(folder, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=LENGTH,
        n_embd=8,
        n_layer=1,
        n_head=2,
        num_labels=2,
        pad_token_id=VOCAB - 1,
        bos_token_id=0,
        eos_token_id=0,
    )
    transformers.GPT2ForSequenceClassification(config).save_pretrained(folder)
    return str(folder)


def test_hf_sequence_classifiers_distill_on_a_table_of_token_ids(tmp_path, no_network):
    ids, y = token_table()
    data = wb.from_arrays(ids.numpy(), y.numpy(), scale=False, name="token-table")  # float32 columns
    teacher, student = bert_classifier(tmp_path / "bert"), gpt2_classifier(tmp_path / "gpt2")
    cfg = wb.DistillConfig(
        epochs=2,
        batch_size=32,
        w_ce=0.5,
        w_kd=0.5,
        temperature=2.0,
        hint_student="hf_model.transformer.ln_f",  # hidden states (B, L, 8) ...
        hint_teacher="hf_model.bert.encoder.layer.0.output",  # ... hinted towards BERT's (B, L, 16)
        w_hint=0.1,
        log_every=1,
        device="cpu",
    )
    exp = wb.Experiment(data, teacher, student, config=cfg, cache=False, runs=tmp_path / "runs")
    res = exp.run()
    assert res.student.status == res.baseline.status == "completed"
    steps = res.student.history.query("event == 'step'")
    assert len(steps) == 8 and (steps["loss_hint"] > 0).all() and (steps["loss_kd"] >= 0).all()
    # the engine's logits are the HF model's on the integer ids of the table
    x = data.test.x
    model = res.student.model.eval()
    torch.testing.assert_close(model(x), model.hf_model(input_ids=x.long()).logits)
    assert 0.0 <= res.student.summary["test_acc"] <= 1.0
    # both classifiers rebuild from the config their state_dict carries; the student saves back as a folder
    with torch.no_grad():
        torch.testing.assert_close(hf_from_state(exp.teacher.state_dict(), "bert")(x), exp.teacher(x))
        wb.export_run(res.student.run_id, format="hf", root=tmp_path / "runs", out=tmp_path / "out")
        again = wb.load_model(tmp_path / "out", data=data, role="student")
        assert again.hf_task == "sequence-classification"
        torch.testing.assert_close(again.module(x), model(x), rtol=0, atol=0)


def test_hf_classifier_mismatches_are_named(tmp_path):
    ids, y = token_table()
    teacher = bert_classifier(tmp_path / "bert")
    three = bert_classifier(tmp_path / "bert3", num_labels=3)
    fractional = wb.from_arrays(ids.numpy() + 0.5, y.numpy(), scale=False)
    with pytest.raises(ValueError, match=r"HF folder '.*bert' reads token ids, but data\['train'\] .* holds \d+\.5"):
        wb.Experiment(fractional, teacher, "mlp:8")
    data = wb.from_arrays(ids.numpy(), y.numpy(), scale=False)
    with pytest.raises(ValueError, match=r"^teacher: HF folder '.*bert3' has num_labels 3 but data 'custom' has 2"):
        wb.Experiment(data, three, "mlp:8")
    scaled = wb.from_arrays(ids.numpy(), y.numpy())  # standardized columns: no longer token ids
    with pytest.raises(ValueError, match=r"reads token ids, .* not a whole number; .*scale=False"):
        wb.Experiment(scaled, teacher, "mlp:8")
    gpt2 = gpt2_folder(tmp_path / "lm", VOCAB, positions=LENGTH)
    with pytest.raises(ValueError, match=r"^teacher: HF folder '.*lm' is a causal LM .* one label per sample"):
        wb.Experiment(data, gpt2, "mlp:8")
    with pytest.raises(
        ValueError, match=r"^mixup_alpha: 0.2 cannot be used with the Hugging Face teacher: .*token ids"
    ):
        wb.Experiment(data, teacher, "mlp:8", config=wb.DistillConfig(mixup_alpha=0.2))


# ----------------------------------------------------------------------------- saving back as a folder


def test_export_run_hf_round_trips_the_distilled_student(hf_text_run, text, no_network):
    tmp, _, res, _ = hf_text_run
    run_id, x = res.student.run_id, text.test.x[:4]
    facts = wb.export_run(run_id, format="hf", root=tmp / "runs", out=tmp / "exported")
    assert facts["exported_hf"] == str(tmp / "exported") and facts["hf_task"] == "causal-lm"
    assert facts["params"] == wb.count_params(res.student.model)
    assert json.loads((tmp / "runs" / run_id / "summary.json").read_text())["exported_hf"] == str(tmp / "exported")
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp / "exported").iterdir()}
    loaded = wb.load_model(tmp / "exported", data=text, role="student")
    assert loaded.kind == "hf" and loaded.hf_task == "causal-lm"
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), res.student.model.eval()(x), rtol=0, atol=0)
    # the run itself is a source too: rebuilt from the config its weights file carries
    again = wb.load_model(f"run:{run_id}", root=tmp / "runs")
    assert again.kind == "run" and again.hf_task == "causal-lm" and again.description.startswith("gpt2 causal LM")
    with torch.no_grad():
        torch.testing.assert_close(again.module(x), loaded.module(x), rtol=0, atol=0)
    # default: a folder in the run's own folder; an earlier export may be replaced
    assert wb.export_run(run_id, format="hf", root=tmp / "runs")["exported_hf"] == str(
        tmp / "runs" / run_id / "student_hf"
    )
    wb.export_run(run_id, format="hf", root=tmp / "runs", out=tmp / "exported")


def test_cli_export_format_hf_and_its_refusals(hf_text_run, tmp_path, capsys, no_network):
    tmp, _, res, _ = hf_text_run
    runs, run_id = str(tmp / "runs"), res.student.run_id
    assert cli.main(["export", run_id, "--format", "hf", "--out", str(tmp_path / "cli_hf"), "--runs", runs]) == 0
    assert json.loads(capsys.readouterr().out)["exported_hf"] == str(tmp_path / "cli_hf")
    assert wb.load_model(tmp_path / "cli_hf").hf_task == "causal-lm"

    assert cli.main(["export", run_id, "--format", "export", "--runs", runs]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "use format 'hf' (--format hf)" in err
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    for out, words in ((tmp_path / "a_file", "is a file"), (tmp_path / "busy", "with other files in it")):
        assert cli.main(["export", run_id, "--format", "hf", "--out", str(out), "--runs", runs]) == 2
        assert words in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_hf_format_is_refused_for_a_zoo_model(tmp_path, capsys):
    from helpers import toy_data

    res = wb.Experiment(
        toy_data(), "mlp:16", "mlp:8", config=wb.DistillConfig(epochs=1), baseline=False, runs=tmp_path / "runs"
    ).run()
    with pytest.raises(ValueError, match=rf"^format: {NOT_HF} \(run '.*' holds a zoo model\)$"):
        wb.export_run(res.student.run_id, format="hf", root=tmp_path / "runs")
    rc = cli.main(["export", res.student.run_id, "--format", "hf", "--runs", str(tmp_path / "runs")])
    assert rc == 2 and NOT_HF in capsys.readouterr().err
    assert not (tmp_path / "runs" / res.student.run_id / "student_hf").exists()


def test_a_crafted_hf_state_is_refused_with_its_reason(tmp_path, text):
    state = wb.load_model(gpt2_folder(tmp_path / "s", text.num_classes)).module.state_dict()
    info = json.loads(bytes(state[HF_STATE_KEY].tolist()))
    assert info["hf_task"] == "causal-lm" and info["config"]["vocab_size"] == text.num_classes

    def with_info(obj):
        raw = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
        return {**state, HF_STATE_KEY: torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()}

    with pytest.raises(ValueError, match=r"^run: 'x': its '_extra_state' entry is not the task and config"):
        hf_from_state(with_info(b"\xff not json"), "run: 'x'")
    remote = {**info, "config": {**info["config"], "auto_map": {"AutoModelForCausalLM": "evil.EvilLM"}}}
    with pytest.raises(ValueError, match=r"has an 'auto_map' or no 'model_type'; refused"):
        hf_from_state(with_info(remote), "run: 'x'")
    with pytest.raises(ValueError, match=r"hf_task 'translation' is invalid"):
        hf_from_state(with_info({**info, "hf_task": "translation"}), "run: 'x'")
    wider = {**info, "config": {**info["config"], "n_embd": 32}}
    with pytest.raises(ValueError, match=r"its weights do not fit the model of its own config"):
        hf_from_state(with_info(wider), "run: 'x'")


def test_an_hf_teachers_outputs_are_cached_by_its_weights(tmp_path, text, no_network):
    # a teacher from a folder has no zoo spec: its outputs are keyed by its class and weights
    teacher = gpt2_folder(tmp_path / "hf_teacher", text.num_classes, layers=1, width=16, seed=3)
    student = gpt2_folder(tmp_path / "hf_student", text.num_classes, seed=4)
    cfg = text_config()

    def run():
        exp = wb.Experiment(text, teacher, student, config=cfg, baseline=False, cache_dir=tmp_path / "c")
        calls = []
        exp.teacher.register_forward_hook(lambda *a: calls.append(1))
        assert exp.run().student.status == "completed"
        return exp.teacher_key, len(calls)

    (key1, first), (key2, second) = run(), run()
    assert key1 is not None and key2 == key1
    transfer_batches = math.ceil(len(text.train) / cfg.eval_batch_size)
    assert first - second == transfer_batches  # the second run read the transfer set's outputs from the cache
    other = gpt2_folder(tmp_path / "hf_teacher2", text.num_classes, layers=1, width=16, seed=5)
    assert wb.Experiment(text, other, student, config=cfg, baseline=False).teacher_key != key1
