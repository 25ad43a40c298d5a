"""Character-level text data for language-model distillation: a built-in Shakespeare corpus,
a user's own text, a character tokenizer, and fixed-length next-character blocks.

The text is cut into train/val/test as *contiguous* ranges (90/5/5 by default, in that order),
so no character is shared between splits. Each range is cut into non-overlapping blocks of
``block_size`` tokens; the targets are the tokens shifted by one, and a position whose next
character lies outside its range gets ``IGNORE_INDEX`` (the remainder of a range shorter than
one block is dropped). Splits hold ``x`` = tokens (N, L) int64 and ``y`` = targets (N, L) int64.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .splits import DataSplits, Split

IGNORE_INDEX = -100  # target of a position with no next character (F.cross_entropy's default)
TEXT_DATASETS = ("shakespeare-char",)
DEFAULT_FRACTIONS = (0.05, 0.05)  # val, test; train keeps the rest
_CORPUS = ("corpora", "shakespeare.txt.gz")  # inside the top-level package, so moving this module keeps it
# Leading bytes of common binary formats, for a clear "not text" error.
_BINARY_MAGIC = {
    b"PK\x03\x04": "a zip archive (xlsx, docx...)",
    b"\x1f\x8b": "gzip-compressed",
    b"%PDF": "a PDF",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x80\x02": "a Python pickle",
    b"\x93NUMPY": "a NumPy array",
}


def _bad(name: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"{name}: {value!r} is invalid; {valid}")


# ----------------------------------------------------------------------------- tokenizer


class CharTokenizer:
    """Maps each character of a fixed vocabulary to its index in the sorted vocabulary."""

    def __init__(self, chars: str | Sequence[str]):
        chars = list(chars)
        if not chars or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise _bad(
                "chars",
                "".join(map(str, chars[:20])) if chars else chars,
                "expected a non-empty sequence of single characters",
            )
        if len(set(chars)) != len(chars):
            dup = sorted({c for c in chars if chars.count(c) > 1})
            raise _bad("chars", "".join(chars[:40]), f"characters {dup} appear more than once")
        self.chars = "".join(sorted(chars))
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)  # ascending, like the chars

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is the distinct characters of ``text``."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """``text`` as a 1-D int64 tensor of character indices; unknown characters are refused."""
        if not isinstance(text, str):
            raise _bad("text", type(text).__name__, "expected a str")
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, codes)  # the vocabulary is sorted by code point
        known = self._codes[np.minimum(ids, len(self._codes) - 1)] == codes
        if not known.all():
            unknown = sorted({chr(c) for c in codes[~known]})
            raise ValueError(
                f"text: characters {unknown[:10]} are not in the vocabulary of "
                f"{self.vocab_size} characters; expected only characters from {self.chars[:80]!r}"
            )
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The text of a 1-D sequence of indices in ``0..vocab_size-1``."""
        arr = np.asarray(ids.detach().cpu() if isinstance(ids, torch.Tensor) else ids)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise _bad(
                "ids",
                f"array of shape {arr.shape} and dtype {arr.dtype}",
                "expected a 1-D sequence of integer token ids",
            )
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = arr[(arr < 0) | (arr >= self.vocab_size)][0]
            raise _bad(
                "ids",
                int(bad),
                f"expected token ids 0..{self.vocab_size - 1} "
                f"(drop IGNORE_INDEX={IGNORE_INDEX} positions before decoding)",
            )
        return self._codes[arr.astype(np.int64)].tobytes().decode("utf-32-le")

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict; ``CharTokenizer.from_dict`` rebuilds the tokenizer."""
        return {"kind": "char", "chars": self.chars}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CharTokenizer:
        """The tokenizer saved by ``to_dict``."""
        if not isinstance(d, Mapping) or d.get("kind") != "char" or not isinstance(d.get("chars"), str):
            raise _bad("tokenizer", d, "expected a dict from CharTokenizer.to_dict(): {'kind': 'char', 'chars': ...}")
        return cls(d["chars"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def tokenizer_of(data: DataSplits) -> CharTokenizer:
    """The tokenizer of text data made by ``load_text_dataset`` or ``from_text`` (kept in ``spec``)."""
    if "tokenizer" not in data.spec:
        raise _bad("data", data.name, "is not text data; expected DataSplits from load_text_dataset or from_text")
    return CharTokenizer.from_dict(data.spec["tokenizer"])


# ----------------------------------------------------------------------------- splits and blocks


def _check_fractions(val_fraction: Any, test_fraction: Any) -> tuple[float, float]:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise _bad(name, f, "expected a number in [0, 1) (0 means no such split)")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction: {val_fraction} + {test_fraction} is invalid; "
            "expected a sum < 1 so the train split keeps some text"
        )
    return float(val_fraction), float(test_fraction)


def split_lengths(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Characters in (train, val, test): ``val = floor(val_fraction * n)``, same for test, train the rest."""
    n_val, n_test = math.floor(round(val_fraction * n, 9)), math.floor(round(test_fraction * n, 9))
    return n - n_val - n_test, n_val, n_test


def min_text_length(block_size: int, val_fraction: float, test_fraction: float) -> int:
    """The fewest characters that give every split (with a fraction > 0) one block."""
    shares = [f for f in (1 - val_fraction - test_fraction, val_fraction, test_fraction) if f > 0]
    n = max(block_size, math.ceil(block_size / min(shares)) - 2)  # a lower bound; rounding may need a few more
    while _shortest_split(n, val_fraction, test_fraction) < block_size:
        n += 1
    return n


def _shortest_split(n: int, val_fraction: float, test_fraction: float) -> int:
    """Characters in the shortest split of ``n`` that is present (train always is)."""
    lengths = split_lengths(n, val_fraction, test_fraction)
    return min(k for k, f in zip(lengths, (1.0, val_fraction, test_fraction), strict=True) if f > 0)


def make_blocks(ids: torch.Tensor, block_size: int) -> Split:
    """Non-overlapping blocks of a 1-D token range: ``x[i, j] = ids[i*L + j]`` and
    ``y[i, j] = ids[i*L + j + 1]``, or ``IGNORE_INDEX`` where ``i*L + j + 1`` is past the range."""
    n_blocks = len(ids) // block_size
    if n_blocks < 1:
        raise _bad("block_size", block_size, f"expected at most the range's {len(ids)} tokens")
    x = ids[: n_blocks * block_size].reshape(n_blocks, block_size)  # (N, L)
    shifted = torch.full((n_blocks * block_size,), IGNORE_INDEX, dtype=torch.int64)
    tail = ids[1 : n_blocks * block_size + 1]  # next tokens that exist
    shifted[: len(tail)] = tail
    return Split(x.contiguous(), shifted.reshape(n_blocks, block_size))  # (N, L), (N, L)


def text_splits(
    text: str,
    *,
    block_size: int = 64,
    val_fraction: float = DEFAULT_FRACTIONS[0],
    test_fraction: float = DEFAULT_FRACTIONS[1],
    name: str = "text",
    spec: Mapping[str, Any] | None = None,
) -> DataSplits:
    """``text`` as contiguous train/val/test ranges cut into next-character blocks."""
    block_size = _block_size(block_size)
    val_fraction, test_fraction = _check_fractions(val_fraction, test_fraction)
    if not text.strip():
        raise _bad("text", text[:40], "is empty (or only whitespace); expected some text to learn from")
    need = min_text_length(block_size, val_fraction, test_fraction)
    if len(text) < need:
        raise ValueError(
            f"text: {len(text)} characters is too short for block_size={block_size} with "
            f"val_fraction={val_fraction} and test_fraction={test_fraction}: one block per split "
            f"needs at least {need} characters (or use a smaller block_size)"
        )
    tokenizer = CharTokenizer.from_text(text)
    if tokenizer.vocab_size < 2:
        raise _bad("text", text[:40], "holds only 1 distinct character; expected at least 2")
    ids = tokenizer.encode(text)
    n_train, n_val, _ = split_lengths(len(ids), val_fraction, test_fraction)
    ranges = {"train": ids[:n_train], "val": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}
    splits = {k: make_blocks(r, block_size) if len(r) else None for k, r in ranges.items()}
    full_spec = {
        **(spec or {}),
        "block_size": block_size,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "tokenizer": tokenizer.to_dict(),
    }
    return DataSplits(
        **splits,
        num_classes=tokenizer.vocab_size,
        name=name,
        class_names=tuple(tokenizer.chars),
        input_shape=(block_size,),
        spec=full_spec,
    )


def _block_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise _bad("block_size", value, "expected an integer >= 1 (context length in characters)")
    return int(value)


# ----------------------------------------------------------------------------- built-in and user text


@functools.lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """The built-in corpus: seven Shakespeare tragedies, about 1 MB (see corpora/README.md)."""
    package = __name__.partition(".")[0]
    blob = resources.files(package).joinpath(*_CORPUS).read_bytes()
    return gzip.decompress(blob).decode("utf-8")


def load_text_dataset(
    name: str,
    *,
    block_size: int = 64,
    seed: int = 0,
    val_fraction: float = DEFAULT_FRACTIONS[0],
    test_fraction: float = DEFAULT_FRACTIONS[1],
    n_unlabeled: int = 0,
) -> DataSplits:
    """A built-in text dataset as next-character blocks. The splits are contiguous ranges fixed
    by the fractions; ``seed`` is recorded in ``spec`` (batch order is the batcher's to shuffle)."""
    if name not in TEXT_DATASETS:
        raise _bad("name", name, f"valid text datasets: {', '.join(TEXT_DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise _bad("seed", seed, "expected an integer >= 0")
    if n_unlabeled:
        raise _bad(
            "n_unlabeled", n_unlabeled, f"generating unlabeled inputs is not available for dataset {name!r}; use 0"
        )
    spec = {"name": name, "seed": int(seed), "n_unlabeled": 0}
    return text_splits(
        shakespeare_text(),
        block_size=block_size,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        name=name,
        spec=spec,
    )


def from_text(
    text_or_path: str | Path,
    *,
    block_size: int = 64,
    val_fraction: float = DEFAULT_FRACTIONS[0],
    test_fraction: float = DEFAULT_FRACTIONS[1],
    name: str = "text",
) -> DataSplits:
    """A user's text (a str, or a ``Path``/str naming an existing UTF-8 file) as next-character
    blocks; line endings are normalised to ``\\n``."""
    if not isinstance(name, str) or not name.strip():
        raise _bad("name", name, "expected a non-empty str naming the dataset, e.g. 'my-poems'")
    if isinstance(text_or_path, Path) or (isinstance(text_or_path, str) and _exists_as(text_or_path, Path.is_file)):
        path = Path(text_or_path)
        text, spec = read_text_file(path), {"source": "file", "path": str(path)}
    elif isinstance(text_or_path, str):
        if _exists_as(text_or_path, Path.is_dir):
            raise _bad("text_or_path", text_or_path, "is a folder; expected a UTF-8 text file or the text itself")
        if _looks_like_path(text_or_path):
            raise _bad(
                "text_or_path",
                text_or_path,
                "looks like a file path, but no such file exists; pass an existing file or the text itself",
            )
        text, spec = text_or_path, {"source": "text"}
    else:
        raise _bad("text_or_path", type(text_or_path).__name__, "expected a str of text or a file path")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    spec.update(name=name, chars=len(text), sha256=hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])
    return text_splits(
        text, block_size=block_size, val_fraction=val_fraction, test_fraction=test_fraction, name=name, spec=spec
    )


def _looks_like_path(s: str) -> bool:
    """True for one short line ending in a file suffix such as ``.txt`` (too short to be a corpus),
    or one line without whitespace that holds a path separator or starts with ``~`` or ``./``."""
    if "\n" in s or len(s) >= 4096:
        return False
    if len(s) < 260 and re.search(r"\.[A-Za-z][A-Za-z0-9]{0,4}$", s.strip()):
        return True
    s = s.strip()
    return not re.search(r"\s", s) and ("/" in s or "\\" in s or s.startswith(("~", "./")))


def _exists_as(s: str, kind: Callable[[Path], bool]) -> bool:
    """True when ``s`` is short, on one line and names an existing file (``Path.is_file``) or folder
    (``Path.is_dir``)."""
    if "\n" in s or "\x00" in s or len(s) >= 4096:
        return False
    try:
        return kind(Path(s))
    except OSError:  # e.g. a name longer than the file system allows: text, not a path
        return False


def read_text_file(path: Path) -> str:
    """The UTF-8 text of a file (a leading BOM dropped); folders, binary and non-UTF-8 files are refused."""

    def bad(problem: str) -> ValueError:
        return ValueError(f"path: {str(path)!r} {problem}")

    if path.is_dir():
        raise bad("is a folder; expected a UTF-8 text file")
    if not path.is_file():
        raise bad("does not exist (no such file); expected a UTF-8 text file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise bad(f"cannot be read ({e.strerror or e})") from None
    if not raw.strip():
        raise bad("is empty; expected some text to learn from")
    kind = next((k for magic, k in _BINARY_MAGIC.items() if raw.startswith(magic)), None)
    if kind or b"\x00" in raw[:65536]:
        raise bad(f"is a binary file ({kind or 'it holds NUL bytes'}), not text; expected a UTF-8 text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise bad(
            f"is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8 and try again"
        ) from None
