"""Every user error of the ``workbench`` command: exit 2, one line on stderr naming the flag or
file, no traceback, and no training started (run in-process through ``cli.main``)."""

from __future__ import annotations

import pandas as pd
import pytest

from workbench import cli
from workbench.engine.distiller import Distiller

NO_CSV = "no.csv"


@pytest.fixture
def no_training(monkeypatch):
    """Any fit fails the test: the errors below must come before training starts."""

    def fit(self):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(Distiller, "fit", fit)


def _files(tmp_path):
    """One file of each hostile kind, and a plain file where a folder is expected."""
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "blank.csv").write_bytes(b"\n\n  \n")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf\n\n")  # a byte-order mark and blank lines
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "book.csv").write_bytes(b"PK\x03\x04" + b"\x00" * 100)  # an .xlsx renamed
    (tmp_path / "header.csv").write_text("x1,x2,label\n")
    (tmp_path / "short.txt").write_text("to be or not to be")
    (tmp_path / "folder").mkdir()
    return tmp_path


def _main(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line(err, *names):
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])


CASES = [  # (argv with {tmp} for the folder of _files, words the one line must hold)
    (["distill", "--runs", "{tmp}/a_file"], ["--runs", "a_file", "not a folder"]),
    (["distill", "--runs", "{tmp}/a_file/runs"], ["--runs", "a_file", "is a file"]),
    (["runs", "--runs", "{tmp}/a_file"], ["--runs", "a_file"]),
    (["rm", "x", "--runs", "{tmp}/a_file"], ["--runs", "a_file"]),
    (["distill", "--csv", "{tmp}/empty.csv", "--target", "label"], ["--csv", "empty.csv", "is empty"]),
    (["distill", "--csv", "{tmp}/blank.csv", "--target", "label"], ["--csv", "blank.csv", "is empty"]),
    (["distill", "--csv", "{tmp}/bom.csv", "--target", "label"], ["--csv", "bom.csv", "blank lines"]),
    (["distill", "--csv", "{tmp}/binary.csv", "--target", "label"], ["--csv", "binary.csv", "binary file"]),
    (["distill", "--csv", "{tmp}/book.csv", "--target", "label"], ["--csv", "book.csv", "Excel"]),
    (["distill", "--csv", "{tmp}/header.csv", "--target", "label"], ["--csv", "header.csv", "no data rows"]),
    (["distill", "--csv", "{tmp}/" + NO_CSV, "--target", "label"], ["--csv", NO_CSV, "no such file"]),
    (["distill", "--csv", "{tmp}/folder", "--target", "label"], ["--csv", "folder", "is a folder"]),
    (["distill", "--csv", "{tmp}/header.csv"], ["--target", "required"]),
    (["distill", "--target", "label"], ["--target", "--csv"]),
    (["distill", "--mixup-alpha", "0.5"], ["--mixup-alpha", "--mixup"]),
    (["distill", "--csv", "{tmp}/header.csv", "--dataset", "moons", "--target", "label"], ["--dataset", "--csv"]),
    (["compare", "--temperatures", "a,b"], ["--temperatures", "'a,b'", "1,2,4,8"]),
    (["compare", "--temperatures", "2,0"], ["--temperatures", "> 0"]),
    (["compare", "--methods", "scrach"], ["--methods", "'scrach'", "scratch, kd, mse"]),
    (["compare", "--methods", "kd,kd"], ["--methods", "repeated"]),
    (["compare", "--students", "mlp:4,resnet:9"], ["--students", "mlp"]),
    (["compare", "--seeds", "0"], ["--seeds"]),
    (["compare", "--name", "../../etc"], ["--name", "'../../etc'"]),
    (["compare", "--csv", "{tmp}/folder"], ["--csv", "folder"]),
    (["compare", "--csv", "{tmp}/short.txt"], ["--csv", "short.txt", "not a result table", "never overwritten"]),
    (["compare", "--text", "{tmp}/short.txt", "--csv", "{tmp}/short.txt"], ["--csv", "short.txt", "not a result"]),
    (["export", "some-run", "--out", "{tmp}/folder"], ["--out", "existing folder"]),
    (["export", "some-run", "--out", "{tmp}/missing/model.pt2"], ["--out", "does not exist"]),
    (["export", "some-run", "--out", "{tmp}/short.txt"], ["--out", "short.txt", "never overwrites"]),
    (["distill", "--teacher", "mlp:100000,100000"], ["--teacher", "10,007,600,010 parameters", "--force"]),
    (["distill", "--dataset", "shakespeare-char", "--teacher", "gpt:1,1000000000"], ["--teacher", "too large"]),
    (["distill", "--student", "cnn2d", "--dataset", "moons"], ["--student", "cnn2d", "mlp"]),
    (["compare", "--students", "mlp:4;mlp:100000,1000"], ["--students", "mlp:100000,1000", "--force"]),
    (["demo", "--student-width", "10000000"], ["--student-width", "--force"]),
    (["demo", "--alpha", "1.5"], ["--alpha", "'1.5'", "[0, 1]"]),
    (["demo", "--alpha", "nan"], ["--alpha", "'nan'"]),
    (["demo", "--epochs", "-3"], ["--epochs", "'-3'", "integer >= 1"]),
    (["demo", "--temperature", "0"], ["--temperature", "> 0"]),
    (["demo", "--temperature", "inf"], ["--temperature", "'inf'"]),
    (["demo", "--lr", "-0.001"], ["--lr", "> 0"]),
    (["demo", "--lr=-1e-3"], ["--lr", "> 0"]),
    (["demo", "--seed", "-1"], ["--seed", "'-1'"]),
    (["demo", "--student-width", "0"], ["--student-width", "integer >= 1"]),
    (["demo", "--dataset", "cifar"], ["--dataset", "cifar", "digits"]),
    (["distill", "--labeled-fraction", "0"], ["--labeled-fraction", "(0, 1]"]),
    (["distill", "--extra-unlabeled", "-5"], ["--extra-unlabeled", "'-5'"]),
    (["distill", "--batch-size", "1.5"], ["--batch-size", "'1.5'"]),
    (["distill", "--device", "gpu"], ["--device", "'gpu'", "cuda:N"]),
    (["distill", "--precision", "fp8"], ["--precision", "fp8"]),
    (["distill", "--epochs"], ["--epochs", "expected one argument"]),
    (["distill", "--no-such-flag"], ["--no-such-flag"]),
    (["distill", "--divergence", "kll"], ["--divergence", "'kll'", "kl, reverse_kl, jsd, mse, topk_kl, topk_kl_tail"]),
    (["distill", "--beta", "1.5"], ["--beta", "'1.5'", "[0, 1]"]),
    (["distill", "--top-k", "0"], ["--top-k", "'0'", "integer k >= 1", "'full'", "'auto'"]),
    (["distill", "--top-k", "many"], ["--top-k", "'many'"]),
    (["distill", "--sample-tokens", "-1"], ["--sample-tokens", "'-1'", "integer >= 0"]),
    (["distill", "--sample-tokens", "5"], ["--sample-tokens", "only used with text"]),
    (["distill", "--generated-blocks", "-2"], ["--generated-blocks", "'-2'", "integer >= 0"]),
    (["distill", "--generated-blocks", "4"], ["--generated-blocks", "only used with text"]),
    (["distill", "--generate-temperature", "0"], ["--generate-temperature", "'0'", "number > 0"]),
    (["distill", "--on-policy", "1.5"], ["--on-policy", "'1.5'", "[0, 1]"]),
    (["distill", "--on-policy", "0.5"], ["--on-policy", "only used with text"]),
    (
        ["distill", "--dataset", "shakespeare-char", "--generate-temperature", "0.7"],
        ["--generate-temperature", "only used with --generated-blocks"],
    ),
    (["distill", "--block-size", "32"], ["--block-size", "only used with text"]),
    (["distill", "--block-size", "1"], ["--block-size", "'1'", "[2, 4096]"]),
    (["distill", "--text", "{tmp}/no.txt"], ["--text", "no.txt", "no such file"]),
    (["distill", "--text", "{tmp}/folder"], ["--text", "folder", "is a folder"]),
    (["distill", "--text", "{tmp}/empty.csv"], ["--text", "empty.csv", "is empty"]),
    (["distill", "--text", "{tmp}/binary.csv"], ["--text", "binary.csv", "binary file"]),
    (["distill", "--text", "{tmp}/short.txt"], ["--text", "too short for block_size=64"]),
    (["distill", "--text", "{tmp}/short.txt", "--dataset", "moons"], ["--dataset", "--text", "one of them"]),
    (["distill", "--text", "{tmp}/short.txt", "--csv", "{tmp}/header.csv"], ["--text", "--csv", "one of them"]),
    (["distill", "--dataset", "shakespeare-char", "--mixup"], ["--mixup", "not text"]),
    (["distill", "--data", "shakespeare-char", "--mixup"], ["--mixup", "not text"]),  # --data: --dataset's prefix
    (["compare", "--block-size", "16"], ["--block-size", "only used with text"]),
    (["compare", "--text", "{tmp}/short.txt", "--dataset", "moons"], ["--dataset", "--text", "one of them"]),
    (["distill", "--dataset", "shakespeare-char", "--extra-unlabeled", "5"], ["--extra-unlabeled", "not text"]),
    (["distill", "--dataset", "shakespeare-char", "--target", "y"], ["--target", "text has no labels"]),
    (["distill", "--dataset", "shakespeare-char", "--student", "mlp:16"], ["--student", "'mlp'", "valid", "gpt"]),
    (["distill", "--dataset", "shakespeare-char", "--top-k", "100"], ["--top-k", "100", "73 classes", "full"]),
    (
        ["distill", "--dataset", "shakespeare-char", "--divergence", "topk_kl", "--top-k", "full"],
        ["--divergence", "'topk_kl'", "--top-k full", "--top-k auto"],
    ),
    (["distill", "--divergence", "topk_kl", "--mixup"], ["--divergence", "'topk_kl'", "mixup"]),
    (["distill", "--dataset", "shakespeare-char", "--beta", "0.3"], ["--beta", "--divergence jsd"]),
    (["distill", "--divergence", "kl", "--beta", "0.3"], ["--beta", "--divergence jsd", "kl"]),
    (["app", "--port", "70000"], ["--port", "'70000'"]),
    (["app", "--address", ""], ["--address"]),
    ([], ["command"]),
    (["frobnicate"], ["frobnicate", "distill"]),
]


@pytest.mark.parametrize("argv, names", CASES, ids=[" ".join(a) or "no-command" for a, _ in CASES])
def test_a_user_error_is_one_line_and_exit_2(argv, names, tmp_path, capsys, no_training):
    folder = _files(tmp_path)
    rc, _, err = _main(capsys, *[a.format(tmp=folder) for a in argv])
    assert rc == 2
    _assert_one_line(err, *names)
    assert not list((tmp_path / "runs").glob("*"))  # nothing was recorded (conftest's WORKBENCH_RUNS)


@pytest.mark.parametrize(
    "variable, argv",
    [
        ("WORKBENCH_CACHE", ["distill", "--dataset", "moons", "--epochs", "1"]),
        ("WORKBENCH_CACHE", ["demo", "--dataset", "moons", "--epochs", "1"]),
        ("WORKBENCH_CACHE", ["compare", "--dataset", "moons", "--epochs", "1", "--workers", "1"]),
        ("WORKBENCH_RUNS", ["distill", "--dataset", "moons", "--epochs", "1"]),
        ("WORKBENCH_RUNS", ["runs"]),
    ],
)
def test_an_environment_folder_that_is_a_file_is_named(variable, argv, tmp_path, monkeypatch, capsys, no_training):
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv(variable, str(tmp_path / "a_file"))
    rc, _, err = _main(capsys, *argv)
    assert rc == 2
    _assert_one_line(err, variable, "a_file", "not a folder")


def test_force_lets_a_large_model_through(monkeypatch, capsys):
    """The size cap names the flag; --force passes it (cap lowered so the model stays tiny)."""
    from workbench.data.datasets import load_dataset

    monkeypatch.setattr(cli, "MAX_PARAMS", 100)
    data = load_dataset("moons")
    with pytest.raises(
        ValueError, match=r"--teacher: 'mlp:64' has 322 parameters, more than 100; pass --force"
    ):  # 2*64+64 + 64*2+2
        cli._check_sizes(data, False, teacher="mlp:64")
    cli._check_sizes(data, True, teacher="mlp:64")


def test_help_exits_0(capsys):
    assert cli.main(["distill", "--help"]) == 0
    assert "--labeled-fraction" in capsys.readouterr().out


def test_terminal_output_escapes_control_characters(monkeypatch, capsys):
    """Run names come from files: `runs` and `rm` print them with escape codes shown, not run."""
    evil = "run\x1b[2J\x1b]0;pwned\x07-1\nnext"
    assert cli.printable(evil) == "run\\x1b[2J\\x1b]0;pwned\\x07-1\\nnext"
    assert cli.printable("café-ü") == "café-ü"  # printable text is kept as is
    frame = pd.DataFrame(
        [
            {
                "run_id": evil,
                "role": "student",
                "status": "completed",
                "dataset": "d\x1bx",
                "val_acc": 0.5,
                "test_acc": None,
            }
        ]
    )
    monkeypatch.setattr("workbench.store.runs.list_runs", lambda root=None: frame)
    assert cli.main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "run\\x1b[2J" in out and "d\\x1bx" in out
    monkeypatch.setattr("workbench.store.runs.remove_runs", lambda runs, root=None: list(runs))
    assert cli.main(["rm", evil]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "removed run\\x1b[2J\\x1b]0;pwned\\x07-1\\nnext"


def test_an_error_message_with_control_characters_stays_one_line(capsys):
    rc, _, err = _main(capsys, "show", "bad\x1b[31m\nid")
    assert rc == 2
    _assert_one_line(err, "bad\\x1b[31m\\nid")
    assert "\x1b" not in err


def test_a_latin1_csv_is_read_with_a_warning(tmp_path, capsys):
    """A spreadsheet's cp1252 export trains; the one-line warning names the file and the encoding."""
    rows = ["taille,poids,espèce"] + [f"{i % 7},{(i * 3) % 5},{'été' if i % 2 else 'hiver'}" for i in range(60)]
    path = tmp_path / "données.csv"
    path.write_bytes("\n".join(rows).encode("cp1252"))
    rc, _, err = _main(
        capsys,
        "distill",
        "--csv",
        path,
        "--target",
        "espèce",
        "--teacher",
        "mlp:8",
        "--student",
        "mlp:2",
        "--epochs",
        "1",
        "--quiet",
        "--json",
    )
    assert rc == 0, err
    warning = [line for line in err.splitlines() if "UTF-8" in line]
    assert len(warning) == 1 and "warning" in warning[0], err
    assert "données.csv" in warning[0] and "read as cp1252" in warning[0]
    assert "Traceback" not in err


def test_an_api_error_past_parsing_names_the_flag():
    """Checks that need the data or the machine (a labeled fraction too small for a class, a
    missing GPU) raise with the API's field name; the command line shows its flag."""
    line = cli._error_line(ValueError("labeled_fraction: 0.001 leaves class '0' without a labeled example"))
    assert line == "--labeled-fraction: 0.001 leaves class '0' without a labeled example"
    assert cli._error_line(ValueError("device: 'cuda' is not available")) == "--device: 'cuda' is not available"
    assert cli._error_line(ValueError("columns ['a']: missing values")) == "columns ['a']: missing values"
    assert cli._error_line(RuntimeError("first line\nsecond line")) == "first line"


def test_a_fit_that_did_not_complete_says_why_on_stderr(capsys):
    from types import SimpleNamespace

    fits = {
        "teacher": SimpleNamespace(status="completed", message=""),
        "student": SimpleNamespace(status="error", message="RuntimeError: probability tensor contains nan"),
        "baseline": SimpleNamespace(status="diverged", message="loss is nan at step 3\x1b[2J"),
    }
    assert cli._status(SimpleNamespace(fits=fits, student=fits["student"])) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "student: error: RuntimeError: probability tensor contains nan",
        "baseline: diverged: loss is nan at step 3\\x1b[2J",  # a terminal escape is shown, not run
    ]
    fits = {role: SimpleNamespace(status="completed", message="") for role in ("teacher", "student")}
    assert cli._status(SimpleNamespace(fits=fits, student=fits["student"])) == 0
    assert capsys.readouterr().err == ""
