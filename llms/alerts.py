"""Alerts: operators hear when a provider has no key left, a key is parked, or every key is exhausted — once per
incident, and once more when it ends.

Incidents are read off key state, not off single calls, so they open and close the same way whichever process
caused them. The open incidents and the recent alerts are one document in the store, changed atomically: when
several processes share the store, the one whose change opened an incident is the one that announces it, so one
incident sends one alert. `LLM_ALERT_WEBHOOK` gets each alert as a JSON POST with a Slack-compatible `text` field
from a background thread, retried with backoff; it never blocks or fails a call, and no text holds a secret (keys
appear as id and hint).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from llms.key_manager import PARKED_REASONS, KeyStatus
from llms.outcomes import STATE_WORDS, describe_states, format_duration
from llms.state.base import Document

log = logging.getLogger("llms.alerts")

KEEP = 200
"""Alerts kept in the list, newest first."""


class ProviderState(Protocol):
    """What alerts read of a provider's status (`llms.ProviderStatus` has it)."""

    title: str
    available: int
    total: int
    keys: tuple[KeyStatus, ...]


@dataclass(frozen=True)
class Incident:
    id: str
    text: str
    recovery: str


def incidents(providers: Sequence[ProviderState]) -> dict[str, Incident]:
    """The incidents the key state shows now, by id (`provider:groq`, `key:groq:2`, `exhausted`)."""
    found: dict[str, Incident] = {}
    configured = [p for p in providers if p.total]
    for provider in configured:
        for key in provider.keys:
            if not key.available and key.reason in PARKED_REASONS:
                found[f"key:{key.key_id}"] = Incident(
                    f"key:{key.key_id}",
                    f"{key.key_id} ({key.hint}) is {STATE_WORDS[key.reason]}",
                    f"{key.key_id} ({key.hint}) is back in rotation",
                )
        if provider.available == 0:
            found[f"provider:{provider.title}"] = Incident(
                f"provider:{provider.title}",
                f"{provider.title} has no key available: {_why(provider.keys)}",
                f"{provider.title} can answer again",
            )
    if configured and all(p.available == 0 for p in configured):
        everything = [k for p in configured for k in p.keys]
        found["exhausted"] = Incident(
            "exhausted",
            f"Every API key is exhausted: {_why(everything)}",
            "Keys are available again: calls are being answered",
        )
    return found


def _why(keys: Sequence[KeyStatus]) -> str:
    """The keys' states, and when the first of them frees (`2 rate-limited; the next frees in 48 s`)."""
    waits = [k.cooldown_remaining for k in keys if k.cooldown_remaining > 0 and not k.disabled]
    return describe_states(k.reason for k in keys) + (
        f"; the next frees in {format_duration(min(waits))}" if waits else ""
    )


def advance(document: Document, now_open: Mapping[str, Incident], at: float) -> Document:
    """The alert document after comparing the incidents open now with those it recorded: each new incident and
    each ended one is an alert. `new` holds only the alerts this change made, for its caller to announce."""
    recorded: dict[str, dict[str, Any]] = dict(document.get("open", {}))
    new = []
    for incident_id, incident in now_open.items():
        if incident_id not in recorded:
            recorded[incident_id] = {"at": at, "recovery": incident.recovery}
            new.append({"at": at, "id": incident_id, "state": "open", "text": incident.text})
    for incident_id in [i for i in recorded if i not in now_open]:
        ended = recorded.pop(incident_id)
        new.append({"at": at, "id": incident_id, "state": "resolved", "text": ended["recovery"]})
    recent = [*reversed(new), *document.get("recent", [])][:KEEP]
    return {"open": recorded, "recent": recent, "new": new}


class Alerts:
    """Keeps the store's alert document in step with key state, and hands new alerts to the webhook."""

    NAME = "alerts"

    def __init__(
        self,
        change: Callable[[str, Callable[[Document], Document]], Document],
        read: Callable[[], Document],
        providers: Callable[[], Sequence[ProviderState]],
        webhook: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._change = change
        self._read = read
        self._providers = providers
        self._clock = clock
        self._sender = WebhookSender(webhook) if webhook else None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def update(self) -> list[dict[str, Any]]:
        """Open and close incidents to match key state now; returns the alerts this call raised. Costs one
        read when nothing changed, one atomic change when something did."""
        now_open = incidents(self._providers())
        if set(now_open) == set(self._read().get("open", {})):
            return []
        at = self._clock()
        new = self._change(self.NAME, lambda document: advance(document, now_open, at))["new"]
        if self._sender is not None:
            for alert in new:
                self._sender.send(alert)
        return new

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return list(self._read().get("recent", []))[:limit]

    def watch(self, every: float = 5.0) -> None:
        """Check in the background (when a webhook is set, so nobody has to have a dashboard open)."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._loop, args=(every,), name="llms-alerts", daemon=True)
            self._watcher.start()

    def _loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.update()
            except Exception:  # alerts must never take the client down
                log.exception("alert check failed")

    def close(self) -> None:
        self._stop.set()
        if self._sender is not None:
            self._sender.close()


class WebhookSender:
    """POSTs alerts one after another from its own thread; a failed POST is retried after 1, 2, 4, 8 and 16 s."""

    def __init__(self, url: str, delays: Sequence[float] = (1.0, 2.0, 4.0, 8.0, 16.0), timeout: float = 5.0) -> None:
        self._url = url
        self._where = urlsplit(url).netloc.rsplit("@", 1)[-1]  # the path of a webhook URL is often its secret
        self._delays = tuple(delays)
        self._timeout = timeout
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llms-webhook", daemon=True)
        self._thread.start()

    def send(self, alert: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            log.warning("alert webhook at %s is behind; dropped: %s", self._where, alert["text"])

    def _loop(self) -> None:
        while (alert := self._queue.get()) is not None:
            self._deliver(alert)

    def _deliver(self, alert: dict[str, Any]) -> None:
        mark = "🔴" if alert["state"] == "open" else "✅"
        payload = {"text": f"{mark} {alert['text']}", "alert": alert}
        for retry_in in (*self._delays, None):
            try:
                answer = requests.post(self._url, json=payload, timeout=self._timeout)
                if answer.ok:
                    return
                problem = f"HTTP {answer.status_code}"
            except requests.RequestException as exc:
                problem = type(exc).__name__
            if retry_in is None:
                log.warning("alert webhook at %s failed (%s); gave up on: %s", self._where, problem, alert["text"])
                return
            log.warning("alert webhook at %s failed (%s); retrying in %s s", self._where, problem, retry_in)
            if self._stop.wait(retry_in):
                return

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=2)
