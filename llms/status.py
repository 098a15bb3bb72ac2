"""Key state as people read it: each provider with its keys, quota and forecast (`ProviderStatus`, the shape of
`get_status_summary`), the request log and the hourly history as plain data. What the dashboard, the CLI, the
gateway's `/metrics` and `get_status_summary` draw; nothing here changes state.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from config.settings import Settings
from llms.key_manager import KeyManager
from llms.key_status import KeyStatus
from llms.quota_left import Forecast, QuotaLeft, forecast
from llms.routing import Target
from llms.state.base import LATENCY_BOUNDS, HourOfKey, RequestRecord

PACE_READ_EVERY = 30.0
"""Seconds a provider's recent pace (for its forecast) is kept before the history is read again."""


@dataclass(frozen=True)
class ProviderStatus:
    """One provider as `get_status_summary` and the dashboard show it."""

    provider: str
    title: str
    model: str
    available: int
    total: int
    problem: str | None
    paused_until: float | None
    pause_reason: str | None
    keys: tuple[KeyStatus, ...]
    daily_requests: dict[str, int] | None = None
    """Requests left today of the provider's reported daily limit (`remaining`, `limit`, `accounts`), as the
    latest probe of each account read it (OpenRouter's `:free` requests); None: not reported."""
    forecast: Forecast = field(default_factory=Forecast)
    """When the provider runs out of today's requests at the last hour's pace, and when they free."""

    def as_dict(self) -> dict[str, Any]:
        """Plain data (`json.dumps` takes it), in the shape the original description's status loop reads."""
        return {
            "available": self.available,
            "total": self.total,
            "title": self.title,
            "model": self.model,
            "problem": self.problem,
            "paused_until": self.paused_until,
            "pause_reason": self.pause_reason,
            "keys": [asdict(k) for k in self.keys],
            "daily_requests": self.daily_requests,
            "forecast": asdict(self.forecast),
        }


class StatusReader:
    """Reads one client's key state for people: providers with their keys, quota and forecast, the request log,
    the hourly history. `settings`: the client's current settings; `problems`: what the client knows is wrong with
    a provider's configuration, per target, right now."""

    def __init__(
        self,
        key_manager: KeyManager,
        settings: Callable[[], Settings],
        problems: Callable[[], Mapping[Target, str]],
        clock: Callable[[], float],
    ) -> None:
        self.key_manager = key_manager
        self._settings = settings
        self._problems = problems
        self._clock = clock
        self._pace_read: tuple[float, dict[str, float]] = (-math.inf, {})

    def provider_statuses(self) -> list[ProviderStatus]:
        """The same as `get_status_summary`, as typed values (what the dashboard and the CLI draw)."""
        settings, problems = self._settings(), self._problems()
        statuses = []
        now = self._clock()
        read = {provider: self.key_manager.provider_state(provider) for provider in settings.provider_order}
        every = {provider: tuple(keys) for provider, (keys, _) in read.items()}
        known = any(k.quota.today_left is not None for keys in every.values() for k in keys)
        pace = self._pace(now) if known else {}
        for provider in settings.provider_order:
            model = settings.providers[provider].model
            keys = every[provider]
            pause = self.key_manager.provider_pause(provider, model)
            statuses.append(
                ProviderStatus(
                    provider=provider,
                    title=settings.providers[provider].spec.title,
                    model=settings.providers[provider].model,
                    available=0 if pause else sum(k.available for k in keys),
                    total=len(keys),
                    problem="; ".join(text for t, text in problems.items() if t.provider == provider) or None,
                    paused_until=pause[0] if pause else None,
                    pause_reason=pause[1] if pause else None,
                    keys=keys,
                    daily_requests=read[provider][1],
                    forecast=forecast(_accounts(keys), pace.get(provider, 0.0)),
                )
            )
        return statuses

    def _pace(self, now: float) -> dict[str, float]:
        """Each provider's requests per second over the last hour or so (the history's previous and current clock
        hours: what every process sharing the store did). Read at most every `PACE_READ_EVERY` seconds: a status
        page refreshing every 2 s read two hours of every key's history each time."""
        read_at, pace = self._pace_read
        if now - read_at < PACE_READ_EVERY:
            return pace
        began = (now // 3600.0 - 1.0) * 3600.0
        asked: Counter[str] = Counter()
        for hour in self.key_manager.history(began):
            if hour.hour >= began:
                asked[hour.provider] += hour.requests
        pace = {provider: count / max(1.0, now - began) for provider, count in asked.items()}
        self._pace_read = (now, pace)
        return pace

    def request_log(
        self, limit: int = 100, *, provider: str | None = None, key_id: str | None = None, outcome: str | None = None
    ) -> list[dict[str, Any]]:
        """The most recent requests, newest first, as plain data: time, provider, model, key id, outcome, HTTP
        status, latency and tokens. Never message content, never a key. Filters match exactly."""
        wanted = (provider, key_id, outcome)
        rows = self.key_manager.request_log(self._settings().request_log_size if any(wanted) else limit)
        kept = [
            r
            for r in rows
            if (provider is None or r.provider == provider)
            and (key_id is None or r.key_id == key_id)
            and (outcome is None or r.outcome == outcome)
        ]
        return [_plain_request(r) for r in kept[:limit]]

    def history(
        self, hours: float = 24.0, *, provider: str | None = None, key_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Per key and per hour over the last `hours`: requests, successes, 429s, other errors, tokens in and
        out, mean and p95 latency (seconds), oldest first, as plain data."""
        rows = self.key_manager.history(self._clock() - hours * 3600)
        return [
            _plain_hour(r)
            for r in rows
            if (provider is None or r.provider == provider) and (key_id is None or r.key_id == key_id)
        ]


def _plain_request(record: RequestRecord) -> dict[str, Any]:
    return {
        "at": record.at,
        "provider": record.provider,
        "model": record.model,
        "key_id": record.key_id,
        "outcome": record.outcome,
        "status": record.status,
        "latency_s": record.latency,
        "tokens_in": record.tokens_in,
        "tokens_out": record.tokens_out,
    }


def _plain_hour(row: HourOfKey) -> dict[str, Any]:
    return {
        "hour": row.hour,
        "provider": row.provider,
        "key_id": row.key_id,
        "requests": row.requests,
        "successes": row.successes,
        "rate_limits": row.rate_limits,
        "errors": row.errors,
        "tokens_in": row.tokens_in,
        "tokens_out": row.tokens_out,
        "latency_mean_s": row.latency_total / row.requests if row.requests else 0.0,
        "latency_p95_s": latency_quantile(row.latency_buckets, 0.95),
        "latency_buckets": list(row.latency_buckets),
    }


def latency_quantile(buckets: Sequence[int], share: float) -> float:
    """The upper bound of the latency bucket holding the `share` quantile (twice the last bound past it), from
    the bucket counts `history()` rows carry (`latency_buckets`): sum rows' buckets first to get the quantile of
    several hours or keys exactly (to the bucket), not an average of their quantiles."""
    total = sum(buckets)
    if not total:
        return 0.0
    seen = 0
    for i, count in enumerate(buckets):
        seen += count
        if seen >= share * total:
            return LATENCY_BOUNDS[i] if i < len(LATENCY_BOUNDS) else LATENCY_BOUNDS[-1] * 2
    return LATENCY_BOUNDS[-1] * 2


def _accounts(keys: Sequence[KeyStatus]) -> list[QuotaLeft]:
    """Each account's quota once: the keys of a shared-limit group report one."""
    seen: set[str] = set()
    found = []
    for key in keys:
        if key.disabled or (key.group and key.group in seen):
            continue
        seen.add(key.group or key.key_id)
        found.append(key.quota)
    return found
