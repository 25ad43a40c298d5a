"""Reusable pieces for browser tests: Debian's Chromium driven by Playwright,
a Streamlit server, a JupyterLab server and a notebook runner.

Test modules use them like this::

    import pytest
    from browser import browser_page  # noqa: F401  (fixture)
    from browser import screenshot, serve_streamlit

    pytestmark = pytest.mark.browser

    def test_app(browser_page):
        with serve_streamlit("app.py") as url:
            browser_page.goto(url)
            ...

The browser is always /usr/bin/chromium (``make browser`` installs Debian's
``chromium``); a missing browser fails the test, it is never skipped. Never run
``playwright install``: it downloads a browser and fails on these machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "artifacts"
DEFAULT_TIMEOUT_MS = 30_000
KERNEL_IDLE = "Python 3 (ipykernel) | Idle"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_chromium() -> None:
    """Fail (never skip) when the browser is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} not found: run `make browser` (installs Debian's chromium with apt-get). "
            "Do not run `playwright install`.",
            pytrace=False,
        )


def launch_chromium(playwright, *, viewport=None):
    """Start /usr/bin/chromium headless with a fresh temporary user-data dir.

    Returns a Playwright ``BrowserContext`` (persistent, because Playwright
    refuses ``--user-data-dir`` in ``args``); ``context.close()`` stops the
    browser and removes the profile folder.
    """
    require_chromium()
    profile = tempfile.mkdtemp(prefix="kd-chromium-")
    try:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=viewport or {"width": 1280, "height": 900},
        )
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    context.on("close", lambda *_: shutil.rmtree(profile, ignore_errors=True))
    return context


@pytest.fixture
def browser_page():
    """A Playwright page in a fresh headless Chromium, closed afterwards."""
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as pw:
        context = launch_chromium(pw)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(DEFAULT_TIMEOUT_MS)
            page.set_default_navigation_timeout(DEFAULT_TIMEOUT_MS)
            yield page
        finally:
            context.close()


def screenshot(page, name: str) -> Path:
    """Save a full-page PNG as artifacts/<name>.png at the repo root (kept by CI)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    path = ARTIFACTS / (safe if safe.endswith(".png") else safe + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


# --------------------------------------------------------------------------- servers


def _log_tail(log_path: Path, n: int = 60) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _wait_http_200(url: str, proc: subprocess.Popen, timeout: float, log_path: Path, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {proc.returncode} before {url} answered.\n"
                f"--- log tail ({log_path}) ---\n{_log_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except (urllib.error.URLError, OSError) as e:
            last = repr(e)
        time.sleep(0.25)
    raise TimeoutError(
        f"{what}: {url} did not answer 200 within {timeout:.0f} s (last: {last}).\n"
        f"--- log tail ({log_path}) ---\n{_log_tail(log_path)}"
    )


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # whatever the group still holds (kernels, helpers) goes too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@contextlib.contextmanager
def _serve(cmd, *, env, cwd, health_url, timeout, what, log_path: Path):
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own process group: killpg takes children too
    )
    ok = False
    try:
        _wait_http_200(health_url, proc, timeout, log_path, what)
        yield
        ok = True
    finally:
        _stop_group(proc)
        log.close()
        if not ok:
            print(f"--- {what} log tail ({log_path}) ---\n{_log_tail(log_path)}", file=sys.stderr)


@contextlib.contextmanager
def serve_streamlit(script_path, env=None, timeout=60, cwd=None):
    """Run ``streamlit run <script>`` on a free port; yield its base URL.

    ``env`` entries are added to (and override) the current environment. The
    server runs in its own process group, logs to a temporary file (its tail is
    printed on failure) and is killed on exit.
    """
    script = Path(script_path).resolve()
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="kd-streamlit-"))
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        # tests write files under the repo (venv, caches): never watch or rerun on them
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        with _serve(
            cmd,
            env=full_env,
            cwd=str(cwd or REPO_ROOT),
            health_url=base + "/_stcore/health",
            timeout=timeout,
            what="streamlit",
            log_path=tmp / "streamlit.log",
        ):
            yield base
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def serve_jupyterlab(root_dir, timeout=90):
    """Run JupyterLab (no token, no password) serving ``root_dir``; yield its base URL.

    Jupyter config/data/runtime dirs and HOME live in a temporary folder, the
    announcements plugin is disabled, update checks and news are off, and the
    app is exposed as ``window.jupyterapp`` so tests can run commands.
    """
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="kd-jupyter-"))
    cfg, data, runtime, home = (tmp / d for d in ("config", "data", "runtime", "home"))
    for d in (cfg / "labconfig", data, runtime, home):
        d.mkdir(parents=True)
    (cfg / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(cfg),
        JUPYTER_DATA_DIR=str(data),
        JUPYTER_RUNTIME_DIR=str(runtime),
        HOME=str(home),
        JUPYTER_PLATFORM_DIRS="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        "--PasswordIdentityProvider.hashed_password=",
        f"--ServerApp.root_dir={Path(root_dir).resolve()}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None",
        "--LabApp.expose_app_in_browser=True",
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        with _serve(
            cmd,
            env=env,
            cwd=str(root_dir),
            health_url=base + "/api/status",
            timeout=timeout,
            what="jupyterlab",
            log_path=tmp / "jupyterlab.log",
        ):
            yield base
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- notebooks in Lab

_STATUS_JS = """() => {
  const bar = document.querySelector('#jp-main-statusbar');
  return bar ? bar.innerText.replace(/\\s+/g, ' ') : '';
}"""

# true once every code cell of the open notebook shows an execution count, none running
_ALL_EXECUTED_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return false;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
  if (!prompts.length) return false;
  return prompts.every(p => /\\[\\d+\\]/.test(p.textContent) && !p.textContent.includes('*'));
}"""


def wait_kernel_idle(page, timeout: float = 60) -> None:
    """Wait until the status bar reads 'Python 3 (ipykernel) | Idle'.

    The toolbar's idle indicator turns idle before the kernel is connected; the
    status bar text only once it really is.
    """
    page.wait_for_function(
        f"() => ({_STATUS_JS})().includes({json.dumps(KERNEL_IDLE)})",
        timeout=timeout * 1000,
    )


def run_notebook_in_lab(page, base_url: str, nb_name: str, timeout: float = 60) -> None:
    """Open ``<nb_name>.ipynb`` in JupyterLab, run all cells, return once done.

    Done means: every code cell has an execution count and the kernel is idle.
    Background threads started by the cells may still be running.
    """
    nb = nb_name if nb_name.endswith(".ipynb") else nb_name + ".ipynb"
    deadline = time.monotonic() + timeout

    def left_ms():
        return max(1_000, (deadline - time.monotonic()) * 1000)

    page.goto(f"{base_url.rstrip('/')}/lab/tree/{nb}", timeout=left_ms())
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=left_ms())
    # a notebook without kernelspec metadata asks "Select Kernel": take the default (Python 3)
    kernel_dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    while KERNEL_IDLE not in page.evaluate(_STATUS_JS):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"kernel of {nb} not '{KERNEL_IDLE}' within {timeout} s; status bar: {page.evaluate(_STATUS_JS)!r}"
            )
        if kernel_dialog.count():
            kernel_dialog.locator(".jp-mod-accept").first.click()
        page.wait_for_timeout(200)

    exposed = page.evaluate(
        "() => !!(window.jupyterapp && window.jupyterapp.commands"
        " && window.jupyterapp.commands.hasCommand('runmenu:run-all'))"
    )
    if exposed:
        # saved execution counts would make the "all executed" check pass at once
        page.evaluate(
            "async () => { const c = window.jupyterapp.commands;"
            " if (c.hasCommand('notebook:clear-all-cell-outputs'))"
            "   await c.execute('notebook:clear-all-cell-outputs');"
            " c.execute('runmenu:run-all'); }"
        )
    else:  # the Run menu's "Run All Cells"
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click(timeout=left_ms())
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click(timeout=left_ms())

    page.wait_for_function(_ALL_EXECUTED_JS, timeout=left_ms())
    wait_kernel_idle(page, left_ms() / 1000)


def output_text(page) -> str:
    """All text in the open notebook's output areas (not the cell sources)."""
    return page.evaluate(
        "() => [...document.querySelectorAll('.jp-OutputArea-output')].map(e => e.innerText).join('\\n')"
    )


WIDGET_ERRORS = ("Error displaying widget", "Failed to load model class")


def assert_no_widget_errors(page) -> None:
    text = output_text(page)
    bad = [e for e in WIDGET_ERRORS if e in text]
    assert not bad, f"widget errors in outputs: {bad}\n{text[:2000]}"
