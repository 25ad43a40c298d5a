"""The package's layout is its architecture: each folder one part, and imports only go down.

    data/      splits, built-in sets, your own tables and text   (imports no other part)
    engine/    config, losses, events, the loop, live runs       (data only)
    models/    the zoo, GPT, loading from files                  (zoo/gpt: engine and data)
    store/     files, runs, caches, export                       (engine, models)
    experiment, sweeps/, reports/, cli, ui/                      (anything below)

Figure builders (``plots.py``, ``sweeps/plots.py``) are pure functions of frames and arrays:
they import neither torch nor the engine. Streamlit and ipywidgets live in ``ui/`` only;
plotly in the figure builders and ``ui/``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "workbench"

UI_PACKAGES = ("streamlit", "ipywidgets", "anywidget", "IPython")
FIGURE_MODULES = ("workbench.plots", "workbench.sweeps.plots")

# module prefix -> workbench parts it must not import
FORBIDDEN = {
    "workbench.data": (
        "workbench.engine",
        "workbench.models",
        "workbench.store",
        "workbench.sweeps",
        "workbench.ui",
        "workbench.experiment",
        "workbench.reports",
        "workbench.cli",
        "workbench.plots",
    ),
    "workbench.engine": (
        "workbench.store",
        "workbench.sweeps",
        "workbench.ui",
        "workbench.models",
        "workbench.experiment",
        "workbench.reports",
        "workbench.cli",
        "workbench.plots",
    ),
    "workbench.models.zoo": (
        "workbench.store",
        "workbench.sweeps",
        "workbench.ui",
        "workbench.experiment",
        "workbench.reports",
        "workbench.cli",
        "workbench.plots",
    ),
    "workbench.models.gpt": (
        "workbench.store",
        "workbench.sweeps",
        "workbench.ui",
        "workbench.experiment",
        "workbench.reports",
        "workbench.cli",
        "workbench.plots",
    ),
    "workbench.store": (
        "workbench.sweeps",
        "workbench.ui",
        "workbench.experiment",
        "workbench.reports",
        "workbench.cli",
        "workbench.plots",
    ),
    "workbench.plots": (
        "workbench.engine",
        "workbench.store",
        "workbench.models",
        "workbench.sweeps.sweep",
        "workbench.experiment",
        "workbench.ui",
        "torch",
    ),
    "workbench.sweeps.plots": (
        "workbench.engine",
        "workbench.store",
        "workbench.models",
        "workbench.sweeps.sweep",
        "workbench.experiment",
        "workbench.ui",
        "torch",
    ),
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports (at any depth, relative imports resolved), as dotted names."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from . import x` may name a module
    return found


def violations(module: str, imported: set[str]) -> list[str]:
    bad = []
    for prefix, banned in FORBIDDEN.items():
        if module == prefix or module.startswith(prefix + "."):
            bad += [
                f"{module} imports {name}"
                for name in sorted(imported)
                for b in banned
                if name == b or name.startswith(b + ".")
            ]
    if not module.startswith("workbench.ui"):
        bad += [f"{module} imports {name}" for name in sorted(imported) if name.split(".")[0] in UI_PACKAGES]
    if not (module in FIGURE_MODULES or module.startswith("workbench.ui")):
        bad += [
            f"{module} imports {name} (figures belong in the figure builders)"
            for name in sorted(imported)
            if name.split(".")[0] == "plotly"
        ]
    return bad


MODULES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_imports_only_go_down(path):
    module = module_name(path)
    assert violations(module, imports_of(path.read_text(), module, path.name == "__init__.py")) == []


def test_each_part_is_a_folder():
    parts = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {"data", "models", "engine", "store", "sweeps", "ui", "reports"} <= parts
    flat = sorted(p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert flat == ["cli", "experiment", "plots", "verdict"], flat


@pytest.mark.parametrize(
    "module,source,expected",
    [
        ("workbench.engine.distiller", "from ..store.runs import RunRecorder", "workbench.store.runs"),
        ("workbench.engine.live", "def f():\n    import streamlit as st", "streamlit"),
        ("workbench.engine.live", "import plotly.graph_objects as go", "plotly.graph_objects"),
        ("workbench.plots", "from .engine.callbacks import History", "workbench.engine.callbacks"),
        ("workbench.plots", "import torch", "torch"),
        ("workbench.data.splits", "from ..engine import config", "workbench.engine"),
    ],
)
def test_the_checker_catches_a_wrong_import(module, source, expected):
    bad = violations(module, imports_of(source, module))
    assert bad and expected in bad[0]


def test_the_engine_imports_with_ui_packages_blocked(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('streamlit', 'ipywidgets', 'plotly', 'IPython'):\n"
        "    sys.modules[name] = None\n"
        "import workbench.engine.distiller, workbench.engine.live, workbench.store.runs, workbench.experiment\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
