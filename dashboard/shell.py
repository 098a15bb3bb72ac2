"""What every page needs before it draws anything: page config, the password gate, the client, the demo banner.

`streamlit_app.py` does this once per run, then routes with `st.navigation` inside `routed()`. Each page also
calls `ensure()`, because Streamlit sometimes runs a `pages/` script *without* the entry script: while no run in
the process has called `st.navigation` yet, it still uses its legacy pages-directory mode, so the first request
after start-up that targets `/status` runs `pages/status.py` directly (AppTest's `switch_page` does the same).
Without `ensure()` that request would skip the password gate.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import streamlit as st

from dashboard import auth

if TYPE_CHECKING:
    from dashboard.client import Backend

_run = threading.local()  # a script run executes on one thread, start to finish


def configure_page() -> None:
    st.set_page_config(page_title="LLM key rotation", page_icon=":material/key:", layout="wide")


def start() -> Backend:
    """The shared backend, or a configuration error on the page (and the run stopped) instead of a traceback."""
    try:
        from dashboard.client import get_backend  # settings are validated here: ConfigError is a ValueError

        return get_backend()
    except ValueError as exc:
        st.error(f"**Configuration error:** {exc}", icon=":material/settings_alert:")
        st.stop()


def banner(backend: Backend) -> None:
    """In demo mode, say so, what to try, and how to switch to real keys."""
    if not backend.demo:
        return
    from dashboard.client import demo_key_counts

    counts = demo_key_counts()
    st.info(
        f"**Demo mode** ({backend.demo_reason}): answers come from a local provider simulator at "
        f"`{backend.simulator_url}` with fake keys — {counts['openrouter']} OpenRouter, {counts['groq']} Groq, "
        f"{counts['gemini']} Gemini — each allowed a few requests a minute. Chat for a minute to watch keys get "
        "rate-limited, answers fall back to Groq and Gemini, and keys recover on the Status page. "
        "To use real keys, set `OPENROUTER_API_KEY_1`, `GROQ_API_KEY_1`, `GEMINI_API_KEY_1`, … in the environment "
        "or `.env` (see `.env.example`), leave `LLM_DEMO` unset, and restart.",
        icon=":material/science:",
    )


@contextmanager
def routed() -> Iterator[None]:
    """Mark this run as having passed the entry script's setup, for the duration of the page it routes to."""
    _run.routed = True
    try:
        yield
    finally:
        _run.routed = False


def ensure() -> None:
    """Called first by every page: does the entry script's setup when Streamlit skipped the entry script."""
    if getattr(_run, "routed", False):
        return
    configure_page()
    if not auth.is_unlocked():
        auth.login_page()
        st.stop()
    banner(start())
    auth.logout_button()
