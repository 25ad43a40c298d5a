"""Every notebook runs end to end in its quick setting, in a real kernel with no network."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.slow  # real kernels: the full test command runs them

# Installed in the kernel before anything else: any connection off this machine fails loudly.
NETWORK_GUARD = """
import socket as _socket
def _refuse(self, address, *args, **kwargs):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):  # AF_UNIX addresses may be bytes
        host = host.decode(errors="replace")
    # this machine only: loopback, and AF_UNIX paths and abstract names (worker processes)
    if isinstance(host, str) and (host in ("localhost", "::1") or host.startswith(("127.", "/", "\\0"))):
        return _orig_connect(self, address, *args, **kwargs)
    raise ConnectionRefusedError(f"network access is blocked in the notebook tests: {address!r}")
_orig_connect = _socket.socket.connect
_socket.socket.connect = _refuse
_socket.socket.connect_ex = _refuse
_socket.create_connection = lambda address, *a, **k: _refuse(None, address)
"""


def prepared(path: pathlib.Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    idx = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
    assert idx is not None, f"{path.name}: needs a cell tagged 'parameters' (QUICK = False)"
    nb.cells.insert(idx + 1, nbformat.v4.new_code_cell("QUICK = True"))
    nb.cells.insert(0, nbformat.v4.new_code_cell(NETWORK_GUARD))
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = prepared(path)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_the_network_guard_bites(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(NETWORK_GUARD),
        nbformat.v4.new_code_cell(
            "import urllib.request\n"
            "try:\n    urllib.request.urlopen('http://example.com', timeout=5)\n"
            "except Exception as e:\n    print(type(e).__name__, e)"
        ),
    ]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    assert "network access is blocked" in nb.cells[1].outputs[0]["text"]
