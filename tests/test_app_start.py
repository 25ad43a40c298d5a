"""`workbench app` starts on a fresh machine with no terminal: no first-run prompt, no browser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

DEADLINE_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.mark.slow
def test_app_starts_with_no_terminal_and_an_empty_home(tmp_path):
    """stdin closed, a HOME with no ~/.streamlit (a first run), started in the background."""
    home = tmp_path / "home"
    home.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "HOME": str(home),
        "USERPROFILE": str(home),
        "WORKBENCH_RUNS": str(tmp_path / "runs"),
        "WORKBENCH_CACHE": str(tmp_path / "cache"),
    }
    env.pop("XDG_CONFIG_HOME", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "app", "--port", str(port)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        status, deadline = None, time.monotonic() + DEADLINE_S
        while status != 200 and proc.poll() is None and time.monotonic() < deadline:
            status = _get(f"http://127.0.0.1:{port}/")
            if status != 200:
                time.sleep(0.5)
        assert status == 200, (
            f"exit code {proc.poll()}; output:\n{proc.stdout.read() if proc.poll() is not None else ''}"
        )
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert f"http://127.0.0.1:{port}" in out
    assert "Email" not in out  # the first-run prompt was never shown
    assert not (home / ".streamlit" / "credentials.toml").exists()
