"""The gateway's own settings, read from the environment with errors that name the variable.

Kept here (not in `config/settings.py`) while the gateway is new; every value is validated at start-up so a
typo fails before the port opens, not on the first request.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from config.settings import ConfigError

DEFAULT_MAX_BODY = 20 * 1024 * 1024
"""20 MB: one inline image at Gemini's limit, base64-encoded, fits with room for the text."""
DEFAULT_WORKERS = 32
DEFAULT_MAX_HEADER = 64 * 1024
"""64 KiB of request line and headers: a bearer token and an SDK's headers take under 2 KiB."""
DEFAULT_MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class GatewaySettings:
    tokens: tuple[str, ...] = ()
    """Bearer tokens a caller must present (`LLM_GATEWAY_TOKENS`); empty: no auth, loopback only."""
    max_body: int = DEFAULT_MAX_BODY
    """The largest request body read, in bytes (`LLM_GATEWAY_MAX_BODY`); larger ones get 413 unread."""
    workers: int = DEFAULT_WORKERS
    """Requests served at once (`LLM_GATEWAY_WORKERS`; more queue), and the threads for what blocks."""
    max_header: int = DEFAULT_MAX_HEADER
    """The largest request line and headers read, in bytes (`LLM_GATEWAY_MAX_HEADER`); more gets 431."""
    header_timeout: float = 10.0
    """Seconds a request's line and headers may take to arrive (`LLM_GATEWAY_HEADER_TIMEOUT`); then 408."""
    body_timeout: float = 60.0
    """Seconds a request's body may take to arrive (`LLM_GATEWAY_BODY_TIMEOUT`); then 408."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open connections at most (`LLM_GATEWAY_MAX_CONNECTIONS`, and never more than the process's file
    descriptors allow); past it, a connection still waiting for its headers is dropped, else the new one gets 503."""

    def __repr__(self) -> str:  # tokens are secrets: never in a repr, a log line or a traceback
        return (
            f"GatewaySettings(tokens=<{len(self.tokens)}>, max_body={self.max_body}, workers={self.workers}, "
            f"max_header={self.max_header}, header_timeout={self.header_timeout}, "
            f"body_timeout={self.body_timeout}, max_connections={self.max_connections})"
        )


def load_gateway_settings(env: Mapping[str, str] | None = None) -> GatewaySettings:
    env = os.environ if env is None else env
    raw_tokens = env.get("LLM_GATEWAY_TOKENS", "")
    tokens = tuple(dict.fromkeys(t.strip() for t in raw_tokens.split(",") if t.strip()))
    if any(len(t) < 16 for t in tokens):
        raise ConfigError("LLM_GATEWAY_TOKENS: every token must be at least 16 characters (use a random string)")
    if any(not t.isprintable() or " " in t for t in tokens):
        raise ConfigError("LLM_GATEWAY_TOKENS: tokens are comma-separated and may not contain spaces")
    return GatewaySettings(
        tokens=tokens,
        max_body=_size(env, "LLM_GATEWAY_MAX_BODY", DEFAULT_MAX_BODY),
        workers=_count(env, "LLM_GATEWAY_WORKERS", DEFAULT_WORKERS, most=1024),
        max_header=_size(env, "LLM_GATEWAY_MAX_HEADER", DEFAULT_MAX_HEADER),
        header_timeout=_seconds(env, "LLM_GATEWAY_HEADER_TIMEOUT", 10.0),
        body_timeout=_seconds(env, "LLM_GATEWAY_BODY_TIMEOUT", 60.0),
        max_connections=_count(env, "LLM_GATEWAY_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, most=1_000_000),
    )


_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "kib": 1024, "mib": 1024**2}


def _size(env: Mapping[str, str], name: str, default: int) -> int:
    """Bytes, or with a unit: `512KiB`, `20MB`, `20MiB`."""
    value = env.get(name, "").strip().lower().replace(" ", "")
    if not value:
        return default
    digits = value.rstrip("kmib")
    unit = value[len(digits) :]
    if unit not in _UNITS or not digits.isdigit() or int(digits) < 1:
        raise ConfigError(f"{name} must be a size in bytes (e.g. 20971520, 20MiB or 512KB), got {value!r}")
    return int(digits) * _UNITS[unit]


def _seconds(env: Mapping[str, str], name: str, default: float, *, most: float = 3600.0) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= most:
        raise ConfigError(f"{name} must be a number of seconds, more than 0 and at most {most:g}, got {value!r}")
    return seconds


def _count(env: Mapping[str, str], name: str, default: int, *, most: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise ConfigError(f"{name} must be a whole number from 1 to {most}, got {value!r}")
    return int(value)
