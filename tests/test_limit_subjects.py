"""Whose limit it is (issue 22): each provider fact decides which subject rests — a key, its account, (key,
model), (provider, model), or nothing — and for how long. Each test runs both wire paths (blocking and awaited)
against the simulator over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping

import pytest
from conftest import SECRETS, USER_HELLO, in_threads

from config.settings import load_settings
from llms import SmartClient
from llms.state import store_from_url
from llms.types import ChatResult
from simulator import Simulator

WIRE_PATHS = ["blocking", "awaited"]
Build = Callable[..., SmartClient]


@pytest.fixture
def build(sim: Simulator) -> Iterator[Build]:
    """`build({"groq": 1}, limits={"groq:1": (n, seconds)}, steps={"groq:1": [...]}, **env)`: a client over the
    simulator's keys with an in-memory store."""
    clients: list[SmartClient] = []

    def make(
        keys: Mapping[str, int],
        limits: Mapping[str, tuple[int, float]] | None = None,
        steps: Mapping[str, list[str]] | None = None,
        **env: str,
    ) -> SmartClient:
        variables = {**sim.env(), "LLM_REQUEST_TIMEOUT": "5", "LLM_PROVIDER_ORDER": ",".join(keys), **env}
        for provider, count in keys.items():
            for i in range(count):
                name = f"{provider}:{i + 1}"
                variables[f"{provider.upper()}_API_KEY_{i + 1}"] = SECRETS[provider][i]
                sim.add_key(
                    provider,
                    SECRETS[provider][i],
                    *(steps or {}).get(name, ()),
                    limit=(limits or {}).get(name),
                    name=name,
                )
        client = SmartClient(load_settings(variables, dotenv_path=None), store=store_from_url("memory://"))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def burst(client: SmartClient, count: int, wire: str) -> list[ChatResult]:
    """`count` requests at once, from threads or from one event loop."""
    if wire == "blocking":
        return in_threads(count, lambda: client.complete(USER_HELLO))

    async def gather() -> list[ChatResult]:
        try:
            return list(await asyncio.gather(*(client.acomplete(USER_HELLO) for _ in range(count))))
        finally:
            await client.aclose()

    return asyncio.run(gather())


def most_at_once(sim: Simulator, latency: float) -> int:
    """The most requests the simulator admitted within one answer's latency of each other."""
    times = sorted(r.at for r in sim.requests)
    return max(sum(1 for t in times[i:] if t - start < latency * 0.75) for i, start in enumerate(times))


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_groq_requests_left_today_do_not_widen_what_goes_at_once(build: Build, sim: Simulator, wire: str) -> None:
    """Groq's `x-ratelimit-*-requests` count the day (999 left of 1000) and its per-minute limit (30) is never
    reported: the daily count must not let a burst put every request on the organization at once."""
    sim.latency = 0.2
    client = build({"groq": 1}, limits={"groq:1": (1000, 86_400.0)})
    assert client.complete(USER_HELLO).key_id == "groq:1"
    assert sim.requests[-1].status == 200
    sim.clear_log()
    assert [r.key_id for r in burst(client, 6, wire)] == ["groq:1"] * 6
    assert most_at_once(sim, sim.latency) == 1
