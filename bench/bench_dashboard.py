"""Dashboard: how long does the status page take to render with 1,000 configured keys?

Teams with many keys open the status page to see which can answer; it must stay interactive. The page runs
in-process under Streamlit's `AppTest` (the same harness as tests/test_dashboard.py), configured like a
deployment — through env vars, 1,000 Groq keys pointing at the simulator. *Cold*: the shared client cache is
cleared before each run, so the run also parses the settings and builds the client with 1,000 keys (the first
visit after start-up). *Warm*: a new session against the cached client (every later visit or tab).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, Result, Row, Skip, main, median, register_keys

TITLE = "Dashboard: status page render time with 1,000 configured keys (Streamlit AppTest)"
METHOD = (
    "`streamlit.testing.v1.AppTest.from_file('pages/status.py').run()` in-process, with 1,000 Groq keys set "
    "as `GROQ_API_KEY_1..1000` env vars pointing at the simulator (the way `dashboard/client.py` builds its "
    "client: settings read from the environment when the cached resource is built), no password, and the "
    "working directory an empty temp dir (no `.env`). After one untimed run (module imports), 5 *cold* runs — "
    "`st.cache_resource.clear()` first, so each run also parses the settings and builds the client with 1,000 "
    "keys — and 5 *warm* runs — a new session against the cached client. Each run draws the whole page: "
    "per-provider metrics, the 1,000-row key table, key actions and recent events. Medians reported; AppTest "
    "skips the browser, so this is the server-side cost of a page view."
)
KEYS = 1000
RUNS = 5
TARGET_S = 1.0
_OURS_PREFIXES = ("LLM_", "OPENROUTER_", "GROQ_", "GEMINI_", "DASHBOARD_PASSWORD")


def _imports() -> tuple[Any, Any]:
    """Streamlit's AppTest and the dashboard's cache, or a Skip saying what is missing."""
    if not (ROOT / "pages" / "status.py").exists():
        raise Skip("pages/status.py does not exist yet (the dashboard is being written)")
    try:
        import streamlit as st
        from streamlit.testing.v1 import AppTest

        import dashboard.client  # noqa: F401 - the page's client factory must import cleanly
    except Exception as exc:
        raise Skip(f"the dashboard is not importable yet: {type(exc).__name__}: {exc}") from None
    return st, AppTest


def _render(app_test: Any, path: str) -> float:
    at = app_test.from_file(path, default_timeout=60)
    started = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - started
    if at.exception:
        raise Skip(f"pages/status.py raised: {at.exception[0].message}")
    shown = {m.label: m.value for m in at.metric}
    if shown.get("Groq") != f"{KEYS}/{KEYS} available":
        raise Skip(f"the status page did not show the {KEYS} Groq keys (metrics: {shown})")
    return elapsed


def run() -> Result:
    st, app_test = _imports()
    from simulator import Simulator

    for name in [n for n in os.environ if n.startswith(_OURS_PREFIXES)]:
        del os.environ[name]
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("streamlit")]:
        logging.getLogger(name).setLevel(logging.ERROR)  # "missing ScriptRunContext" on every cache clear
    page = str(ROOT / "pages" / "status.py")
    here = Path.cwd()
    with Simulator(latency=0.0) as sim, tempfile.TemporaryDirectory(prefix="bench-dashboard-") as cwd:
        _, env = register_keys(sim, "groq", KEYS)
        os.environ.update({**env, "LLM_REQUEST_TIMEOUT": "2"})
        os.chdir(cwd)  # load_settings looks for .env from the working directory upwards
        try:
            st.cache_resource.clear()
            _render(app_test, page)
            cold, warm = [], []
            for _ in range(RUNS):
                st.cache_resource.clear()
                cold.append(_render(app_test, page))
            for _ in range(RUNS):
                warm.append(_render(app_test, page))
        finally:
            st.cache_resource.clear()  # closes the client
            os.chdir(here)
    return {"keys": KEYS, "runs": RUNS, "cold_s": median(cold), "warm_s": median(warm), "cold": cold, "warm": warm}


def rows(r: Result) -> list[Row]:
    return [
        Row(
            "cold: first view, builds the client (median)",
            f"{r['cold_s']:.2f} s",
            f"≈ {TARGET_S:g} s",
            met=r["cold_s"] <= TARGET_S,
        ),
        Row(
            "warm: a new session, cached client (median)",
            f"{r['warm_s']:.2f} s",
            f"≈ {TARGET_S:g} s",
            met=r["warm_s"] <= TARGET_S,
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(main(TITLE, run, rows))
