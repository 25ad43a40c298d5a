"""Character text data: the bundled corpus, the tokenizer, contiguous splits, next-character
blocks checked against a plain-Python re-derivation, and the errors a user can hit."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from workbench.data.splits import DataSplits, Split
from workbench.data.text import (
    IGNORE_INDEX,
    CharTokenizer,
    from_text,
    load_text_dataset,
    make_blocks,
    min_text_length,
    read_text_file,
    shakespeare_text,
    split_lengths,
    tokenizer_of,
)

CORPUS = Path(__file__).resolve().parents[1] / "workbench" / "corpora" / "shakespeare.txt.gz"


def _reference_blocks(text: str, start: int, end: int, block: int) -> tuple[list[list[str]], list[list[str | None]]]:
    """Blocks of ``text[start:end]`` written out character by character: inputs and next characters
    (None where the next character is outside the range)."""
    xs, ys = [], []
    for b in range((end - start) // block):
        first = start + b * block
        xs.append([text[first + j] for j in range(block)])
        ys.append([text[first + j + 1] if first + j + 1 < end else None for j in range(block)])
    return xs, ys


def _as_chars(tok: CharTokenizer, t: torch.Tensor) -> list[list[str | None]]:
    return [[tok.chars[i] if i != IGNORE_INDEX else None for i in row] for row in t.tolist()]


# ----------------------------------------------------------------------------- corpus


def test_corpus_is_about_one_megabyte_of_normalised_text():
    text = gzip.decompress(CORPUS.read_bytes()).decode("utf-8")
    assert shakespeare_text() == text
    assert 900_000 < len(text) < 1_200_000
    assert "\r" not in text and "\t" not in text
    assert "To be, or not to be" in text and "Out, damned spot" in text
    assert "Gutenberg" not in text  # the distribution's licence header is not part of the corpus
    assert (CORPUS.parent / "README.md").is_file()


def test_shakespeare_char_splits_are_contiguous_blocks_of_the_corpus():
    data = load_text_dataset("shakespeare-char", block_size=64)
    text = shakespeare_text()
    tok = tokenizer_of(data)
    assert isinstance(data, DataSplits) and data.name == "shakespeare-char"
    assert tok.chars == "".join(sorted(set(text))) and data.num_classes == tok.vocab_size == len(set(text))
    assert data.input_shape == (64,) and data.class_names == tuple(tok.chars)
    n = len(text)
    n_val = n_test = n * 5 // 100
    starts = {"train": 0, "val": n - n_val - n_test, "test": n - n_test}
    ends = {"train": starts["val"], "val": starts["test"], "test": n}
    for name, split in data.splits().items():
        assert split.x.dtype == split.y.dtype == torch.int64 and split.x.shape == split.y.shape
        assert split.x.shape == ((ends[name] - starts[name]) // 64, 64)
        # the first and last blocks, character by character
        xs, ys = _reference_blocks(text, starts[name], ends[name], 64)
        assert _as_chars(tok, split.x[[0, -1]]) == [xs[0], xs[-1]]
        assert _as_chars(tok, split.y[[0, -1]]) == [ys[0], ys[-1]]
    assert data.spec["block_size"] == 64 and json.loads(json.dumps(data.spec)) == data.spec


def test_seed_is_recorded_and_does_not_move_the_splits():
    a, b = (
        load_text_dataset("shakespeare-char", block_size=32, seed=0),
        load_text_dataset("shakespeare-char", block_size=32, seed=3),
    )
    assert b.spec["seed"] == 3 and torch.equal(a.val.x, b.val.x)


def test_load_text_dataset_errors():
    with pytest.raises(ValueError, match=r"name: 'tinystories' is invalid; valid text datasets: shakespeare-char"):
        load_text_dataset("tinystories")
    with pytest.raises(ValueError, match=r"block_size: 0 is invalid; expected an integer >= 1"):
        load_text_dataset("shakespeare-char", block_size=0)
    with pytest.raises(ValueError, match=r"val_fraction: 1.5 is invalid; expected a number in \[0, 1\)"):
        load_text_dataset("shakespeare-char", val_fraction=1.5)
    with pytest.raises(ValueError, match=r"n_unlabeled: 10 is invalid"):
        load_text_dataset("shakespeare-char", n_unlabeled=10)
    with pytest.raises(ValueError, match=r"seed: -1 is invalid"):
        load_text_dataset("shakespeare-char", seed=-1)


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_and_sorted_vocabulary():
    tok = CharTokenizer.from_text("hello, world\né")
    assert tok.chars == "\n ,dehlorwé" and tok.vocab_size == 11
    ids = tok.encode("hello é")
    assert ids.dtype == torch.int64 and ids.tolist() == [5, 4, 6, 6, 7, 1, 10]
    assert tok.decode(ids) == "hello é" and tok.decode([]) == ""
    again = CharTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again == tok and again.encode("world").tolist() == tok.encode("world").tolist()


def test_tokenizer_errors_name_the_problem():
    tok = CharTokenizer("ab")
    with pytest.raises(ValueError, match=r"characters \['c', 'z'\] are not in the vocabulary of 2"):
        tok.encode("abcz")
    with pytest.raises(ValueError, match=r"ids: 2 is invalid; expected token ids 0..1"):
        tok.decode([0, 2])
    with pytest.raises(ValueError, match=r"ids: -100 is invalid; .*drop IGNORE_INDEX"):
        tok.decode(torch.tensor([IGNORE_INDEX]))
    with pytest.raises(ValueError, match=r"chars: 'aba' is invalid; characters \['a'\] appear more than once"):
        CharTokenizer("aba")
    with pytest.raises(ValueError, match=r"chars: .* expected a non-empty sequence of single characters"):
        CharTokenizer(["ab", "c"])
    with pytest.raises(ValueError, match=r"tokenizer: .* expected a dict from CharTokenizer.to_dict"):
        CharTokenizer.from_dict({"kind": "bpe"})


# ----------------------------------------------------------------------------- blocks and splits


def test_make_blocks_by_hand():
    split = make_blocks(torch.arange(7), 3)  # 7 tokens -> 2 blocks of 3, token 6 only as a target
    assert split.x.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert split.y.tolist() == [[1, 2, 3], [4, 5, 6]]
    exact = make_blocks(torch.arange(6), 3)  # the very last token has no next one
    assert exact.y.tolist() == [[1, 2, 3], [4, 5, IGNORE_INDEX]]


def test_split_lengths_and_min_text_length():
    assert split_lengths(1000, 0.05, 0.05) == (900, 50, 50)
    assert split_lengths(1019, 0.05, 0.05) == (919, 50, 50)
    assert split_lengths(100, 0.0, 0.1) == (90, 0, 10)
    for block, vf, tf in [(8, 0.05, 0.05), (64, 0.05, 0.05), (5, 0.1, 0.0), (7, 0.3, 0.3), (3, 0.0, 0.0)]:
        need = min_text_length(block, vf, tf)
        present = [f > 0 for f in (1, vf, tf)]  # written out: every present split holds one block
        fits = [
            all(k >= block for k, p in zip(split_lengths(m, vf, tf), present, strict=True) if p)
            for m in (need - 1, need)
        ]
        assert fits == [False, True], (block, vf, tf, need)
    assert min_text_length(64, 0.05, 0.05) == 1280


def test_from_text_string_matches_reference_and_has_no_overlap():
    torch.manual_seed(0)
    alphabet = "abcdefghij \n"
    text = "".join(alphabet[i] for i in torch.randint(len(alphabet), (1000,)).tolist())
    data = from_text(text, block_size=8, val_fraction=0.1, test_fraction=0.1, name="mine")
    tok = tokenizer_of(data)
    assert data.name == "mine" and data.spec["source"] == "text" and data.spec["chars"] == 1000
    bounds = {"train": (0, 800), "val": (800, 900), "test": (900, 1000)}
    for name, (start, end) in bounds.items():
        split = getattr(data, name)
        xs, ys = _reference_blocks(text, start, end, 8)
        assert _as_chars(tok, split.x) == xs and _as_chars(tok, split.y) == ys
    # 800 train chars = 100 full blocks, so only the final target of the range is ignored
    assert (data.train.y == IGNORE_INDEX).sum().item() == 1 and data.train.y[-1, -1].item() == IGNORE_INDEX


def test_from_text_reads_files_and_normalises_line_endings(tmp_path):
    path = tmp_path / "corpus.txt"
    body = "line one\r\nline two\rline three\n" * 60
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))  # with a UTF-8 BOM
    from_path = from_text(path, block_size=4)
    from_str_path = from_text(str(path), block_size=4)
    plain = from_text(body.replace("\r\n", "\n").replace("\r", "\n"), block_size=4)
    assert "\r" not in tokenizer_of(from_path).chars and "\ufeff" not in tokenizer_of(from_path).chars
    assert from_path.spec["source"] == "file" and from_path.spec["path"] == str(path)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(from_path, split).x, getattr(plain, split).x)
        assert torch.equal(getattr(from_str_path, split).y, getattr(plain, split).y)
    assert from_path.spec["sha256"] == plain.spec["sha256"]


def test_from_text_errors(tmp_path):
    with pytest.raises(ValueError, match=r"text: .* is empty"):
        from_text("  \n\n ")
    with pytest.raises(
        ValueError,
        match=r"text: 300 characters is too short for block_size=64 .* "
        r"needs at least 1280 characters",
    ):
        from_text("ab" * 150, block_size=64)
    with pytest.raises(ValueError, match=r"holds only 1 distinct character"):
        from_text("a" * 2000, block_size=8)
    with pytest.raises(ValueError, match=r"text_or_path: 'data/missing.txt' is invalid; looks like a file path"):
        from_text("data/missing.txt")
    with pytest.raises(ValueError, match=r"text_or_path: 'bytes' is invalid; expected a str of text or a file path"):
        from_text(b"abc")
    with pytest.raises(ValueError, match=r"does not exist"):
        from_text(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match=r"is a folder"):
        from_text(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.txt' is empty"):
        from_text(empty)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"PK\x03\x04" + b"\x00" * 100, r"is a binary file \(a zip archive"),
        (b"abc\x00def" * 100, r"is a binary file \(it holds NUL bytes\)"),
        ("café au lait ".encode("latin-1") * 100, r"is not UTF-8 text \(byte 0xe9 at offset 3\); save it as UTF-8"),
    ],
)
def test_non_text_files_are_refused(tmp_path, content, problem):
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"path: '.*data.bin' " + problem):
        read_text_file(path)


def test_splits_are_plain_split_objects():
    data = from_text("to be or not to be, that is the question\n" * 40, block_size=16)
    assert all(isinstance(s, Split) for s in data.splits().values())
    assert data.in_memory and data.num_classes == len(set("to be or not to be, that is the question\n"))


def test_as_splits_keeps_token_blocks_as_they_are():
    from workbench.data.splits import as_splits

    data = from_text("to be or not to be, that is the question\n" * 40, block_size=16)
    checked = as_splits(data)
    for name, split in data.splits().items():
        kept = getattr(checked, name)
        assert kept.x.dtype == kept.y.dtype == torch.int64
        assert torch.equal(kept.x, split.x) and torch.equal(kept.y, split.y)
    assert checked.num_classes == data.num_classes and checked.spec["tokenizer"] == data.spec["tokenizer"]
