"""Shared fixtures: a provider simulator on loopback and clients pointed at it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from config.settings import load_settings
from llms.simulator import Simulator
from llms.smart_client import SmartClient
from llms.state import MemoryStore, StateStore

ROOT = Path(__file__).resolve().parents[1]

# Distinctive fake keys: the secret-leak tests grep everything captured for these exact strings.
SECRETS: Mapping[str, tuple[str, ...]] = {
    "openrouter": tuple(f"sk-or-v1-LEAKCHECK{i}{'a1b2c3d4' * 6}{i:04d}" for i in range(1, 5)),
    "groq": tuple(f"gsk_LEAKCHECK{i}{'Q9w8E7r6' * 5}{i:04d}" for i in range(1, 5)),
    "gemini": tuple(f"AIzaLEAKCHECK{i}{'Zx8Yw7Vu' * 3}{i:04d}" for i in range(1, 5)),
}
ALL_SECRETS = tuple(s for group in SECRETS.values() for s in group)


class Clock:
    """A clock the test moves by hand, so cooldown arithmetic needs no sleeping."""

    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(hang_seconds=3.0) as server:
        yield server


MakeClient = Callable[..., SmartClient]


@pytest.fixture
def make_client(sim: Simulator) -> Iterator[MakeClient]:
    """Build a client over the simulator. `keys={"groq": 2}` registers the first N test keys of each provider;
    `steps={"groq:1": ["rate_limit"]}` scripts a key, `limits={"groq:1": (2, 30.0)}` gives it a request window;
    extra keyword arguments become environment variables."""
    clients: list[SmartClient] = []

    def build(
        keys: Mapping[str, int],
        steps: Mapping[str, Sequence[str]] | None = None,
        limits: Mapping[str, tuple[int, float]] | None = None,
        clock: Callable[[], float] | None = None,
        store: StateStore | None = None,
        **env: str,
    ) -> SmartClient:
        variables = {**sim.env(), "LLM_REQUEST_TIMEOUT": "1.5", **env}
        for provider, count in keys.items():
            for i in range(count):
                secret = SECRETS[provider][i]
                variables[f"{provider.upper()}_API_KEY_{i + 1}"] = secret
                scripted = (steps or {}).get(f"{provider}:{i + 1}", ())
                limit = (limits or {}).get(f"{provider}:{i + 1}")
                sim.add_key(provider, secret, *scripted, limit=limit, name=f"{provider}:{i + 1}")
        client = SmartClient(
            load_settings(variables, dotenv_path=None),
            store=store or MemoryStore(),
            **({"clock": clock} if clock else {}),
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def python_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess running this checkout's code with no keys from the developer's shell."""
    keep = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY",)) and "_API_KEY_" not in k}
    keep = {k: v for k, v in keep.items() if not k.startswith(("LLM_", "OPENROUTER_", "GROQ_", "GEMINI_"))}
    return {**keep, "PYTHONPATH": str(ROOT), **extra}


PYTHON = sys.executable
USER_HELLO = [{"role": "user", "content": "Hello"}]
