"""One `SmartClient` per Streamlit process, shared by every session and page, plus the demo mode behind it.

Why a module: `st.cache_resource` keys include the defining module, and page scripts run as `__main__`, so a
factory defined in a page would be cached once per page. Settings are read afresh when the resource is built
(not taken from the process-wide `config.settings.SETTINGS`), so tests can steer the dashboard through env vars;
in a normal run both read the same environment and `.env`.

Demo mode (no keys configured, or `LLM_DEMO=1`): the provider simulator starts on a free loopback port with
fake keys. OpenRouter's keys allow one request per ten minutes each, so the fifth message falls back to Groq
however slowly it is typed; Groq's and Gemini's allow a few a minute, so they keep answering after that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import streamlit as st

from config.settings import Settings, load_settings
from llms import SmartClient

if TYPE_CHECKING:
    from simulator import Simulator


@dataclass(frozen=True)
class Backend:
    """The process-wide client, and whether it talks to the demo simulator instead of real providers."""

    client: SmartClient
    demo: bool = False
    demo_reason: str = ""
    simulator: Simulator | None = field(default=None, repr=False)
    demo_env: dict[str, str] = field(default_factory=dict, repr=False)
    """Demo mode: the environment the demo client was built from; the Keys panel adds fake keys to it."""

    @property
    def simulator_url(self) -> str | None:
        return self.simulator.url if self.simulator else None

    def close(self) -> None:
        self.client.close()
        if self.simulator is not None:
            self.simulator.stop()


def demo_reason(settings: Settings) -> str:
    """Why the dashboard runs in demo mode ("" when it uses the configured keys)."""
    if settings.demo:
        return "LLM_DEMO is set"
    if not settings.has_keys:
        return "no API keys are configured"
    return ""


def build_backend(env: Mapping[str, str] | None = None, dotenv_path: str | None = "") -> Backend:
    """Build the client from the environment (default `os.environ` over `.env`), or start demo mode."""
    settings = load_settings(env, dotenv_path=dotenv_path)
    reason = demo_reason(settings)
    if not reason:
        return Backend(SmartClient(settings))
    from simulator import start_demo  # the fake providers are imported only for the demo

    simulator, demo_env = start_demo(os.environ if env is None else env)
    try:
        client = SmartClient(load_settings(demo_env, dotenv_path=None))
    except Exception:
        simulator.stop()
        raise
    return Backend(client, demo=True, demo_reason=reason, simulator=simulator, demo_env=demo_env)


def demo_key_counts() -> dict[str, int]:
    from simulator import DEMO_KEYS

    return {provider: len(secrets) for provider, secrets in DEMO_KEYS.items()}


def _release(backend: Backend) -> None:
    backend.close()


@st.cache_resource(show_spinner="Starting the LLM client…", on_release=_release)
def get_backend() -> Backend:
    """The shared backend; `st.cache_resource.clear()` closes it (and stops a demo simulator)."""
    return build_backend()


def get_client() -> SmartClient:
    return get_backend().client
