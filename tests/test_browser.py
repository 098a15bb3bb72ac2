"""End to end in a real browser: `streamlit run streamlit_app.py` against a provider simulator, driven by Chromium.

This is the only test that sees the live countdown (AppTest never fires `run_every`) and the real page layout;
it also refreshes the README screenshots in `docs/`. Needs Debian's `chromium`: skipped without it locally,
a failure in CI (`CI=true`), where a missing browser would silently hide a broken dashboard.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator import Simulator
from tests.conftest import ROOT, SECRETS, python_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS = ROOT / "docs"
VIEWPORT = {"width": 1280, "height": 900}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser test (install Debian's chromium and playwright)")
    pytest.skip(f"{reason}; install Debian's chromium (apt-get install chromium) to run the browser test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as answer:
            if answer.status == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"streamlit did not become healthy in {timeout:.0f} s:\n{log.read_text(errors='replace')}")


@pytest.fixture
def chromium() -> str:
    """Checked before the server starts, so a missing browser costs nothing."""
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} not found")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed")
    return CHROMIUM


@pytest.fixture
def dashboard(chromium: str, sim: Simulator, tmp_path: Path) -> Iterator[str]:
    """The real app in its own process group, with four OpenRouter keys (the first always rate-limited) and one
    Groq key. It runs from an empty directory holding only the project's Streamlit config, so a developer's
    `.env` or secrets cannot change what it shows."""
    sim.latency = 0.2  # answers take a moment, as real ones do, so streaming and latency show
    env = python_env(**sim.env(), LLM_REQUEST_TIMEOUT="2")
    env.pop("DASHBOARD_PASSWORD", None)
    for provider, count in (("openrouter", 4), ("groq", 1)):
        for i in range(1, count + 1):
            secret = SECRETS[provider][i - 1]
            limit = (0, 60.0) if f"{provider}:{i}" == "openrouter:1" else None
            sim.add_key(provider, secret, limit=limit, name=f"{provider}:{i}")
            env[f"{provider.upper()}_API_KEY_{i}"] = secret
    (tmp_path / ".streamlit").mkdir()
    shutil.copy(ROOT / ".streamlit" / "config.toml", tmp_path / ".streamlit" / "config.toml")

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "streamlit.log"
    command = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
        "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _screenshot_whole_page(page: Any, path: Path) -> None:
    """Streamlit scrolls inside its main container, so `full_page` sees one screen: grow the viewport instead."""
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(height))})
    page.wait_for_timeout(500)  # charts re-lay out to the new size
    page.screenshot(path=path)
    page.set_viewport_size(VIEWPORT)


def test_chat_then_live_status_then_reset(chromium: str, dashboard: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(15_000)
            page.goto(dashboard)

            # Chat: openrouter:1 answers 429, so openrouter:2 answers and the caption says what was skipped.
            box = page.locator('[data-testid="stChatInputTextArea"]')
            box.fill("Which key answers me?")
            box.press("Enter")
            caption = page.locator('[data-testid="stCaptionContainer"]').filter(
                has_text=re.compile(
                    r"^openrouter · .+ · openrouter:2 \(sk-o…\w{4}\) · \d+\.\d s · skipped openrouter:1"
                )
            )
            expect(caption).to_have_text(re.compile(r"skipped openrouter:1 rate-limited$"))
            expect(page.locator('[data-testid="stChatMessage"]')).to_have_count(2)
            expect(page.get_by_text("Simulated openrouter reply to: Which key answers me?")).to_be_visible()
            page.wait_for_timeout(300)  # let the attempts expander settle before the picture
            page.screenshot(path=DOCS / "screenshot-chat.png")

            # Status: the cooled key shows, and its countdown ticks without any click (the 1 s fragment).
            page.locator('[data-testid="stSidebarNavLink"]').filter(has_text="Status").click()
            expect(page.get_by_text("3/4 available", exact=True)).to_be_visible()
            expect(page.get_by_text("1/1 available", exact=True)).to_be_visible()
            note = page.get_by_text(re.compile(r"openrouter:1 frees in \d+ s"))
            before = note.inner_text()
            page.wait_for_timeout(2_200)
            after = note.inner_text()
            assert before != after, f"countdown did not move: {before!r} then {after!r}"
            seconds = [int(re.search(r"frees in (\d+) s", text).group(1)) for text in (before, after)]
            assert 1 <= seconds[0] - seconds[1] <= 4, seconds
            expect(page.locator('[data-testid="stVegaLiteChart"]').first).to_be_visible()
            _screenshot_whole_page(page, DOCS / "screenshot-status.png")

            page.get_by_role("button", name="Reset all").click()
            expect(page.get_by_text("4/4 available", exact=True)).to_be_visible()
            expect(page.get_by_text(re.compile(r"frees in \d+ s"))).to_have_count(0)
        finally:
            browser.close()
