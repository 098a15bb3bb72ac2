"""`python -m llms serve`: build the pool (or the demo simulator), apply the loopback rule, run uvicorn.

The loopback rule: without `LLM_GATEWAY_TOKENS` anyone who can reach the port spends the pool's keys, so an
open gateway may listen on loopback only; anything else is refused before the port opens.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from config.settings import ConfigError, load_settings
from gateway.config import GatewaySettings, load_gateway_settings
from gateway.pool import ClientPool

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

    from simulator import Simulator


@dataclass
class Gateway:
    """The pool, the gateway settings and (in demo mode) the simulator behind them."""

    pool: ClientPool
    settings: GatewaySettings
    simulator: Simulator | None = field(default=None, repr=False)

    def app(self) -> Starlette:
        from gateway.app import create_app

        return create_app(self.pool, self.settings)

    def close(self) -> None:
        self.pool.close()
        if self.simulator is not None:
            self.simulator.stop()


def build_gateway(env: Mapping[str, str] | None = None, *, demo: bool = False, dotenv_path: str | None = "") -> Gateway:
    """The pool from the environment (and `.env`), or, with `demo`, the simulator with demo keys in memory."""
    environ = os.environ if env is None else env
    gateway_settings = load_gateway_settings(environ)
    if not demo:
        return Gateway(ClientPool(load_settings(env, dotenv_path=dotenv_path)), gateway_settings)
    from simulator import FREE_TIER_LIMITS, start_demo  # the fake providers are imported only for the demo

    simulator, demo_env = start_demo(environ, FREE_TIER_LIMITS)
    try:
        pool = ClientPool(load_settings(demo_env, dotenv_path=None))
    except Exception:
        simulator.stop()
        raise
    return Gateway(pool, gateway_settings, simulator)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(host: str = "127.0.0.1", port: int = 8000, demo: bool = False) -> int:
    """Run the gateway in the foreground until Ctrl-C / SIGTERM; returns the process exit code."""
    try:
        gateway_settings = load_gateway_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not gateway_settings.tokens and not is_loopback(host):
        print(
            f"error: refusing to listen on {host}: LLM_GATEWAY_TOKENS is not set, so anyone who can reach this "
            "address could spend your API keys. Set LLM_GATEWAY_TOKENS (comma-separated bearer tokens, 16+ "
            "characters each) or listen on 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    try:
        gateway = build_gateway(demo=demo)
    except ValueError as exc:  # a ConfigError, or a setting the transport refuses (an unsupported proxy)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    try:
        print(_banner(gateway, host, port), file=sys.stderr, flush=True)
        server = uvicorn.Server(uvicorn_config(gateway.app(), host, port, gateway.settings))
        settle_heap()
        server.run()
        return 0 if server.started else 1
    finally:
        gateway.close()


YOUNG_OBJECTS = 7000
"""Allocations between collections of the youngest generation (Python's default: 700). Every request leaves
reference cycles (tasks, coroutines, exceptions); under `bench/bench_gateway.py`'s load the collector took about
a tenth of the gateway's time at the default, a quarter of that at this threshold (higher costs more again: each
collection then walks more objects than the cache holds)."""


def settle_heap() -> None:
    """Before serving: what start-up built (modules, settings, the pool) is moved out of the collector's sight,
    so its full collections walk only what serving allocates, and young collections run a tenth as often."""
    import llms.transport_async  # noqa: F401  # aiohttp, for the awaited provider calls: loaded now, not mid-request

    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])


def uvicorn_config(app: Starlette, host: str, port: int, settings: GatewaySettings) -> uvicorn.Config:
    """How uvicorn serves the gateway: with the connection policy of `gateway.connections` (header size and time,
    a connection cap within the file descriptors this process may open)."""
    import uvicorn

    from gateway.connections import connection_cap, guarded_protocol, raise_descriptor_limit

    cap = connection_cap(settings, raise_descriptor_limit())
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(settings, cap),
        access_log=False,  # a line per request costs throughput; /metrics counts requests instead
        proxy_headers=False,  # nothing here reads the caller's address or scheme: no X-Forwarded-* parsing per request
        log_level="warning",
        timeout_graceful_shutdown=5,
        server_header=False,
    )


def _banner(gateway: Gateway, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    pool = gateway.pool
    keys = ", ".join(f"{p} {len(pool.settings.providers[p].keys)}" for p in pool.providers)
    keys = keys or "none configured (every request will fail; try --demo)"
    auth = f"{len(gateway.settings.tokens)} bearer token(s)" if gateway.settings.tokens else "none (loopback only)"
    demo = " · demo mode (simulator, fake keys)" if gateway.simulator else ""
    return f"LLM gateway on http://{shown}:{port}/v1 · keys: {keys} · auth: {auth}{demo}"
