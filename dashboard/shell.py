"""What every page needs before it draws anything: page config, the password gate, the client, the demo banner,
and the navigation between pages.

`streamlit_app.py` calls `main()`. Each page also calls `ensure()` first, because Streamlit sometimes runs a
`pages/` script *without* the entry script: while no run in the process has called `st.navigation` yet, it still
uses its legacy pages-directory mode, so the first request after start-up that targets `/status` runs
`pages/status.py` directly (AppTest's `switch_page` does the same). Such a run then does what the entry script
does — the password gate, the banner, `st.navigation` (which ends legacy mode: the sidebar shows the real page
names) — and draws the page through it.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from dashboard import alerts, auth

if TYPE_CHECKING:
    from dashboard.client import Backend

_run = threading.local()  # a script run executes on one thread, start to finish


FAVICON = str(Path(__file__).parent / "assets" / "favicon.png")
"""Served by Streamlit itself: an emoji or Material icon favicon would be fetched from a CDN, and the dashboard
must look right offline."""


def configure_page() -> None:
    st.set_page_config(page_title="LLM key rotation", page_icon=FAVICON, layout="wide")


PAGES = Path(__file__).parents[1] / "pages"


def pages() -> list[Any]:
    """Absolute paths: Streamlit resolves relative ones against the script it ran, which is a page's own file
    when it skipped the entry script."""
    return [
        st.Page(PAGES / "chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page(PAGES / "status.py", title="Status", icon=":material/monitor_heart:"),
        st.Page(PAGES / "history.py", title="History", icon=":material/history:"),
        key_page(),
    ]


def key_page() -> Any:
    """One key's page, reached from the Status table (`/key?key=groq:2`): hidden from the sidebar, which would
    otherwise list a page that needs a key to make sense."""
    return st.Page(PAGES / "key.py", title="Key", icon=":material/key:", url_path="key", visibility="hidden")


def main() -> None:
    """One run of the app: set-up shared by every page, then the page the URL names."""
    configure_page()
    if not auth.is_unlocked():
        st.navigation([st.Page(auth.login_page, title="Log in", icon=":material/lock:")], position="hidden").run()
        st.stop()
    backend = start()
    banner(backend)
    auth.logout_button()
    alerts.toasts(backend.client)
    with routed():
        st.navigation(pages()).run()
    _freeze_long_lived_objects()


def start() -> Backend:
    """The shared backend, or a configuration error on the page (and the run stopped) instead of a traceback."""
    try:
        from dashboard.client import get_backend  # settings are validated here: ConfigError is a ValueError

        return get_backend()
    except ValueError as exc:
        st.error(f"**Configuration error:** {exc}", icon=":material/settings_alert:")
        st.stop()


def banner(backend: Backend) -> None:
    """In demo mode, say so in one line that opens to say what to try and how to switch to real keys, so the
    banner does not push the chat down on every page."""
    if not backend.demo:
        return
    from dashboard.client import demo_key_counts
    from simulator import DEMO_LIMITS

    counts = demo_key_counts()
    label = f"**Demo mode** ({backend.demo_reason}): a local simulator answers with fake keys"
    with st.expander(label, icon=":material/science:"):
        openrouter, groq = DEMO_LIMITS["openrouter"], DEMO_LIMITS["groq"]
        st.markdown(
            f"Answers come from a provider simulator at `{backend.simulator_url}` with fake keys: "
            f"{counts['openrouter']} OpenRouter, {counts['groq']} Groq, {counts['gemini']} Gemini. "
            f"Each OpenRouter key allows {openrouter[0]} request per {openrouter[1] / 60:g} minutes, each Groq and "
            f"Gemini key {groq[0]} a minute, so by the fifth message OpenRouter's keys are rate-limited and the "
            "answer falls back to Groq (an orange badge says so). The **Simulate** panel on the Status page "
            "rate-limits or revokes a key, takes a provider down, or puts everything back, on demand. "
            f"{counts.get('compat', 0)} keys of a generic OpenAI-compatible provider wait too: add `compat` to "
            "`LLM_PROVIDER_ORDER` to try a provider known only by its configuration.\n\n"
            "To use real keys, set `OPENROUTER_API_KEY_1`, `GROQ_API_KEY_1`, `GEMINI_API_KEY_1`, … in the "
            "environment or `.env` (see `.env.example`), leave `LLM_DEMO` unset, and restart."
        )
    openrouter = DEMO_LIMITS["openrouter"]
    st.caption(  # the demo's story depends on it: said outside the folded banner
        f"Each OpenRouter demo key answers {openrouter[0]} request per {openrouter[1] / 60:g} minutes, so the "
        "first four messages rotate through openrouter:1 … openrouter:4 and the fifth falls back to Groq."
    )
    from dashboard.simulate import demo_strip

    demo_strip(backend.client)


@contextmanager
def routed() -> Iterator[None]:
    """Mark this run as having passed the entry script's setup, for the duration of the page it routes to."""
    _run.routed = True
    try:
        yield
    finally:
        _run.routed = False


def ensure() -> None:
    """Called first by every page: when Streamlit skipped the entry script, run the app from the top instead (it
    draws this same page inside the navigation), then end this run."""
    if getattr(_run, "routed", False):
        return
    main()
    st.stop()


_frozen = threading.Event()


def _freeze_long_lived_objects() -> None:
    """Make Streamlit's collection after every run cheap. Streamlit calls `gc.collect(2)` after each script and
    fragment run (`runner.postScriptGC`), and a full collection walks every object alive in the process (pandas,
    pyarrow, Streamlit itself, the client's keys): two thirds of an open Status tab's CPU (bench_dashboard.py).
    What is alive once a page has rendered lives as long as the process, so it is frozen out of the collector's
    sight, once per process; objects made later (frames, session state) are still collected."""
    if not _frozen.is_set():
        _frozen.set()
        gc.collect()
        gc.freeze()
