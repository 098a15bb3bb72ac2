"""Prometheus metrics of one gateway process, in its own `CollectorRegistry`.

Counters count what *this* replica did, so the replicas behind a load balancer add up; key gauges are read from
the shared store at scrape time (`client.admin.provider_statuses()`), so every replica reports the same pool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from llms import Attempt, OutcomeKind, ProviderStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
NONE = "none"
"""The provider / key id label of a request no key answered."""


class _PoolCollector(Collector):
    """Keys available / total / cooling per provider, requests left per key and the providers' forecasts, read
    when Prometheus scrapes."""

    def __init__(self, statuses: Callable[[], Sequence[ProviderStatus]]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterable[GaugeMetricFamily]:
        available = GaugeMetricFamily("llm_gateway_keys_available", "Keys that can answer now", labels=["provider"])
        total = GaugeMetricFamily("llm_gateway_keys_total", "Keys configured", labels=["provider"])
        cooling = GaugeMetricFamily(
            "llm_gateway_cooldowns_active", "Keys resting in a cooldown (not disabled)", labels=["provider"]
        )
        left = GaugeMetricFamily(
            "llm_gateway_key_requests_left",
            "Requests a key has left in its current window or today, where the provider, a probe, a configured "
            "limit or a learned window says",
            labels=["provider", "key_id", "span"],
        )
        runs_out = GaugeMetricFamily(
            "llm_gateway_provider_runs_out_in_seconds",
            "Seconds until the provider runs out of today's requests at the last hour's pace",
            labels=["provider"],
        )
        frees = GaugeMetricFamily(
            "llm_gateway_provider_quota_frees_in_seconds", "Seconds until a day's quota frees", labels=["provider"]
        )
        for status in self._statuses():
            available.add_metric([status.provider], status.available)
            total.add_metric([status.provider], status.total)
            cooling.add_metric([status.provider], sum(1 for k in status.keys if k.reason and not k.disabled))
            for key in status.keys:
                for span, value in (("window", key.quota.window_left), ("today", key.quota.today_left)):
                    if value is not None:
                        left.add_metric([status.provider, key.key_id, span], value)
            if status.forecast.runs_out_in is not None:
                runs_out.add_metric([status.provider], status.forecast.runs_out_in)
            if status.forecast.frees_in is not None:
                frees.add_metric([status.provider], status.forecast.frees_in)
        yield from (available, total, cooling, left, runs_out, frees)


class GatewayMetrics:
    def __init__(self, statuses: Callable[[], Sequence[ProviderStatus]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "llm_gateway_requests",
            "Chat requests by the answering provider and key (none: no key answered) and outcome",
            ["provider", "key_id", "outcome"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "llm_gateway_upstream_attempts",
            "Provider calls made for chat requests, by key and outcome (ok, rate_limit, transient, …)",
            ["provider", "key_id", "outcome"],
            registry=self.registry,
        )
        self.rate_limits = Counter(
            "llm_gateway_upstream_429",
            "Rate-limit answers (429 or equivalent) received from providers, by key",
            ["provider", "key_id"],
            registry=self.registry,
        )
        self.exhausted = Counter(
            "llm_gateway_exhausted", "429s this gateway returned because every key was cooling", registry=self.registry
        )
        self.latency = Histogram(
            "llm_gateway_request_duration_seconds",
            "Chat request time in the gateway (a stream: until its last byte), by answering provider",
            ["provider", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("llm_gateway_in_flight", "Chat requests being served now", registry=self.registry)
        self.registry.register(_PoolCollector(statuses))
        self._children: dict[tuple[Any, ...], Any] = {}
        """Each labelled child once looked up (`labels()` checks and copies its labels every call)."""

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def finished(
        self,
        outcome: str,
        attempts: Sequence[Attempt],
        seconds: float,
        stream: bool,
        key_id: str | None = None,
    ) -> None:
        """One chat request is over: its outcome, every key it tried, and how long it took."""
        provider = key_id.split(":", 1)[0] if key_id else NONE
        self._child(self.requests, provider, key_id or NONE, outcome).inc()
        for attempt in attempts:
            attempt_provider = attempt.key_id.split(":", 1)[0]
            self._child(self.attempts, attempt_provider, attempt.key_id, attempt.kind.value).inc()
            if attempt.kind is OutcomeKind.RATE_LIMIT:
                self._child(self.rate_limits, attempt_provider, attempt.key_id).inc()
        if outcome == "exhausted":
            self.exhausted.inc()
        self._child(self.latency, provider, "true" if stream else "false").observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
