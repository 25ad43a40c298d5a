"""Caches shared by notebooks, the app and the CLI: trained teachers, and teacher outputs on
fixed transfer sets. Both live in ``$WORKBENCH_CACHE``, else the platform's user cache folder.

A teacher is stored under a key made from its model spec, its training config and the data
spec (seed included), so nothing trains the same teacher twice. Writes go to a temporary
folder that is renamed into place: two processes caching the same teacher never mix files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data.splits import Split
from ..engine.divergences import TopKRecord
from .runs import atomic_save, load_checkpoint

# Fields of a config that do not change what a teacher learns: reporting and device, and the
# student's loss settings (a fit without a teacher trains on plain cross-entropy of its labels).
_NOT_IN_KEY = {
    "log_every",
    "eval_every",
    "eval_batch_size",
    "device",
    "cache_teacher",
    "temperature",
    "alpha",
    "w_ce",
    "w_kd",
    "w_mse",
    "w_hint",
    "hint_student",
    "hint_teacher",
    "mixup_alpha",
    "use_unlabeled",
    "teacher_top_k",
    "generated_blocks",  # token data's transfer set: the student's, not what a teacher learns
    "generate_temperature",
    "on_policy",
}


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$WORKBENCH_CACHE``, else the platform's user cache folder + ``kd-workbench``."""
    if root or os.environ.get("WORKBENCH_CACHE"):
        return Path(root or os.environ["WORKBENCH_CACHE"])
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kd-workbench"


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a folder to write in (it, or its nearest existing part, is a file), else None."""
    path = Path(path)
    if not str(path).strip():
        return "is empty; expected a folder path"
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "" if existing == path else f" (its part {str(existing)!r} is a file)"
        return f"is not a folder{where}; expected a folder, which is created if missing"
    return None


def check_folder(path: str | os.PathLike, name: str) -> Path:
    """``path`` as a folder to write in, refused naming ``name`` (see :func:`folder_problem`), so a
    bad setting fails before any training, not after it."""
    problem = folder_problem(path)
    if problem:
        raise ValueError(f"{name}: {str(path)!r} {problem}")
    return Path(path)


def check_cache_root(root: str | os.PathLike | None = None) -> Path:
    """The cache folder (see :func:`cache_root`), checked with :func:`check_folder`."""
    name = "cache_dir" if root else "WORKBENCH_CACHE" if os.environ.get("WORKBENCH_CACHE") else "cache folder"
    return check_folder(cache_root(root), name)


def digest(obj: Any) -> str:
    """A short, stable hash of JSON-able data."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def tensor_digest(t: torch.Tensor) -> str:
    """A short hash of a tensor's shape, dtype and values."""
    h = hashlib.sha256(f"{tuple(t.shape)}{t.dtype}".encode())
    h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())  # any dtype (bf16 too)
    return h.hexdigest()[:20]


def teacher_key(model: nn.Module, config: Mapping[str, Any], data: Any, weights: bool = False) -> str | None:
    """The cache key of a zoo teacher trained on reproducible data, else None (not cacheable).
    ``weights``: the model was given (from Python or a file): its weights are part of the key, and a
    model without a zoo spec (e.g. a Hugging Face folder) is keyed by its class and weights.

    The key holds what changes the trained weights: the model spec, the training config less
    its reporting, device and loss-mix fields (``temperature``, ``alpha``, the weights...), the
    data and the torch version, so students with other T or alpha share one teacher.

    ``data`` is a ``DataSplits``: the key holds the hashes of its train/val/test tensors (what
    the teacher is trained and scored on), so a change in how a dataset is generated or split
    never loads a stale teacher, and the unlabeled transfer inputs (which a teacher is not
    trained on) do not split the cache.
    """
    spec = getattr(model, "spec", None)
    if spec is None and weights:
        spec = {"module": f"{type(model).__module__}.{type(model).__qualname__}"}
    splits = [getattr(data, name, None) for name in ("train", "val", "test")]
    if spec is None or not getattr(data, "spec", None) or not isinstance(splits[0], Split):
        return None
    tensors = [[tensor_digest(s.x), tensor_digest(s.y)] if isinstance(s, Split) else None for s in splits]
    cfg = {k: v for k, v in dict(config).items() if k not in _NOT_IN_KEY}
    if cfg.get("labeled_fraction", 1.0) >= 1.0:
        cfg.pop("label_seed", None)  # every label is used: the seed that would draw a subset is moot
    key = digest(
        {
            "model": spec,
            "config": cfg,
            "data": [data.spec.get("name"), tensors],
            "torch": torch.__version__.split("+")[0],
        }
    )
    if weights:
        state = model.state_dict().values()
        key = digest([key, [tensor_digest(v) if isinstance(v, torch.Tensor) else digest(v) for v in state]])
    return key


class TeacherCache:
    """Trained teachers on disk: ``<cache>/teachers/<key>/{model.pt, meta.json}``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = cache_root(root) / "teachers"

    def load(self, key: str, model: nn.Module) -> dict[str, Any] | None:
        """Load the cached weights into ``model``; returns the stored metadata, or None on a miss."""
        folder = self.root / key
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            return None
        try:
            model.load_state_dict(load_checkpoint(folder / "model.pt"))
            return json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, RuntimeError, OSError) as e:  # a corrupt entry is a miss, not a crash
            warnings.warn(f"teacher cache: entry {key} is unreadable ({e}); training again", stacklevel=2)
            return None

    def save(self, key: str, model: nn.Module, meta: Mapping[str, Any]) -> Path | None:
        """Store a trained teacher (the first writer of a key wins; later writers keep it).

        Returns its folder, or None with a warning when the cache cannot be written (read-only,
        disk full): the teacher just trained is still used, it is only not cached.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{key}."))
        except OSError as e:
            warnings.warn(
                f"teacher cache: cannot write in {str(self.root)!r} ({e.strerror or e}); the teacher is not cached",
                stacklevel=2,
            )
            return None
        try:
            torch.save(model.state_dict(), tmp / "model.pt")
            (tmp / "meta.json").write_text(json.dumps(dict(meta), indent=2, default=str), encoding="utf-8")
        except (OSError, RuntimeError) as e:  # torch reports a failed write as a RuntimeError
            shutil.rmtree(tmp, ignore_errors=True)
            warnings.warn(
                f"teacher cache: cannot store teacher {key} ({e.strerror or e}); it is not cached", stacklevel=2
            )
            return None
        try:
            os.replace(tmp, self.root / key)
        except OSError:  # another process stored it first
            shutil.rmtree(tmp, ignore_errors=True)
        return self.root / key


Outputs = torch.Tensor | TopKRecord  # a teacher's cached outputs: full logits, or a top-k record


def outputs_nbytes(outputs: Outputs | None) -> int:
    """Bytes held by cached outputs (logits, a top-k record's three tensors, features)."""
    if outputs is None:
        return 0
    if isinstance(outputs, TopKRecord):
        return outputs.nbytes
    return outputs.numel() * outputs.element_size()


class OutputCache:
    """Teacher outputs (and hinted features) on fixed transfer inputs, in memory and on disk,
    reused across epochs, students and sessions. Keyed by teacher key + input hash + layer (+ k
    and T for a top-k record).

    Outputs are full logits (positions..., V) or a :class:`TopKRecord`: the top-k logits, their
    class ids (uint8 / int16: compact) and the log-sum-exp over every class at the record's T,
    which gives the tail mass. :meth:`info` reports what is held and its size.
    """

    _memory: dict[str, tuple[Outputs, torch.Tensor | None]] = {}
    _lock = threading.Lock()

    def __init__(self, root: str | os.PathLike | None = None, disk: bool = True):
        self.root = cache_root(root) / "outputs"
        self.disk = disk

    @staticmethod
    def key(
        teacher: str,
        inputs: torch.Tensor,
        layer: str | None,
        top_k: int | None = None,
        temperature: float | None = None,
    ) -> str:
        """The entry's key; full-vocabulary entries keep the keys they had before top-k existed."""
        parts: dict[str, Any] = {"teacher": teacher, "inputs": tensor_digest(inputs), "layer": layer}
        if top_k is not None:
            parts.update(top_k=int(top_k), temperature=float(temperature if temperature is not None else 1.0))
        return digest(parts)

    def get(self, key: str) -> tuple[Outputs, torch.Tensor | None] | None:
        """The outputs and features stored under ``key`` (memory first, then disk), or None."""
        with self._lock:
            if key in self._memory:
                return self._memory[key]
        path = self.root / f"{key}.pt"
        if self.disk and path.exists():
            try:
                d = load_checkpoint(path)
                outputs = TopKRecord.from_dict(d["topk"]) if "topk" in d else d["logits"]
                value = (outputs, d.get("features"))
            except (ValueError, KeyError, TypeError):
                return None
            with self._lock:
                self._memory[key] = value
            return value
        return None

    def put(self, key: str, outputs: Outputs, features: torch.Tensor | None) -> None:
        """Keep ``outputs`` (logits or a top-k record) and ``features`` in memory and, with ``disk``, on disk."""
        if isinstance(outputs, TopKRecord):
            outputs = TopKRecord(
                outputs.values.detach(),
                outputs.indices,
                outputs.logsumexp.detach(),
                outputs.temperature,
                outputs.vocab_size,
            )
        else:
            outputs = outputs.detach()
        value = (outputs, None if features is None else features.detach())
        with self._lock:
            self._memory[key] = value
        if self.disk:
            if isinstance(outputs, TopKRecord):
                rec = outputs.as_dict()
                d: dict[str, Any] = {"topk": {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in rec.items()}}
            else:
                d = {"logits": outputs.cpu()}
            if value[1] is not None:
                d["features"] = value[1].cpu()
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                atomic_save(d, self.root / f"{key}.pt")
            except (OSError, RuntimeError) as e:  # kept in memory: this session still reuses them
                warnings.warn(
                    f"teacher output cache: cannot write in {str(self.root)!r} ({e.strerror or e})", stacklevel=2
                )

    def info(self) -> dict[str, Any]:
        """What the cache holds: per entry in memory its kind (``"full"`` or ``"top-k"``), k, classes,
        positions and bytes; totals in memory and on disk (``disk_files``, ``disk_bytes``)."""
        entries = []
        with self._lock:
            items = list(self._memory.items())
        for key, (outputs, features) in items:
            top = isinstance(outputs, TopKRecord)
            entries.append(
                {
                    "key": key,
                    "kind": "top-k" if top else "full",
                    "k": outputs.k if top else None,
                    "classes": outputs.vocab_size if top else int(outputs.shape[-1]),
                    "positions": int(outputs.logsumexp.numel() if top else outputs.shape[:-1].numel()),
                    "temperature": outputs.temperature if top else None,
                    "bytes": outputs_nbytes(outputs) + outputs_nbytes(features),
                }
            )
        files = sorted(self.root.glob("*.pt")) if self.root.is_dir() else []
        return {
            "entries": entries,
            "memory_bytes": sum(e["bytes"] for e in entries),
            "disk_files": len(files),
            "disk_bytes": sum(f.stat().st_size for f in files),
        }

    @classmethod
    def clear_memory(cls) -> None:
        with cls._lock:
            cls._memory.clear()
