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

import json
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import urllib3

from llms.clock import client_time
from llms.key_manager import PARKED_REASONS, KeyStatus
from llms.outcomes import STATE_WORDS, describe_states, format_duration
from llms.state.base import Document
from llms.transport import HttpPool

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
            if key.disabled:  # its own words: an operator took it out, it is neither parked nor back in rotation
                found[f"key:{key.key_id}"] = Incident(
                    f"key:{key.key_id}",
                    f"{key.key_id} ({key.hint}) is {STATE_WORDS['disabled']}",
                    f"{key.key_id} ({key.hint}) is enabled and back in rotation",
                )
            elif not key.available and key.reason in PARKED_REASONS:
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
        clock: Callable[[], float] = client_time,
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
    """POSTs alerts one after another from its own thread; a failed POST is retried after 1, 2, 4, 8 and 16 s.

    Over urllib3 (`HttpPool`: the proxy and CA bundle the environment names), following only 307/308 redirects
    within the webhook's own origin, at most `max_redirects`: a redirect elsewhere would hand the alert to another
    host, and a loop would multiply every alert. The webhook's path, often its secret, is masked in urllib3's
    debug log lines and never written in ours."""

    def __init__(
        self,
        url: str,
        delays: Sequence[float] = (1.0, 2.0, 4.0, 8.0, 16.0),
        timeout: float = 5.0,
        max_redirects: int = 3,
    ) -> None:
        self._url = url
        parts = urlsplit(url)
        self._where = parts.netloc.rsplit("@", 1)[-1]
        self._origin = _origin(url)
        self._delays = tuple(delays)
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._max_redirects = max_redirects
        self._http = HttpPool(url, pool_size=1)
        self._mask = _MaskedPath(url[len(f"{parts.scheme}://{parts.netloc}") :])
        for name in _URLLIB3_LOGGERS:
            logging.getLogger(name).addFilter(self._mask)
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
        body = json.dumps({"text": f"{mark} {alert['text']}", "alert": alert}).encode()
        for retry_in in (*self._delays, None):
            problem, final = self._post(body)
            if problem is None:
                return
            if retry_in is None or final:
                log.warning("alert webhook at %s failed (%s); gave up on: %s", self._where, problem, alert["text"])
                return
            log.warning("alert webhook at %s failed (%s); retrying in %s s", self._where, problem, retry_in)
            if self._stop.wait(retry_in):
                return

    def _post(self, body: bytes) -> tuple[str | None, bool]:
        """One delivery, following same-origin 307/308 redirects: (None, _) when it was taken, else (what went
        wrong, whether trying again is pointless)."""
        url = self._url
        for _ in range(self._max_redirects + 1):
            try:
                answer = self._http.request("POST", url, body, dict(_JSON), self._timeout)
                answer.drain_conn()
                answer.release_conn()
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                return type(exc).__name__, False
            if 200 <= answer.status < 300:
                return None, False
            location = answer.headers.get("location")
            if answer.status not in (307, 308) or not location:
                return f"HTTP {answer.status}", answer.status in (301, 302, 303)
            url = urljoin(url, location)
            if _origin(url) != self._origin:
                return f"HTTP {answer.status} to another host, not followed", True
        return f"more than {self._max_redirects} redirects", True

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=2)
        self._http.close()
        for name in _URLLIB3_LOGGERS:
            logging.getLogger(name).removeFilter(self._mask)


_JSON = {"Content-Type": "application/json", "User-Agent": "llm-key-rotation alerts"}
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.poolmanager")


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = urllib3.util.parse_url(url)
    return (parsed.scheme or "", (parsed.host or "").lower(), parsed.port)


class _MaskedPath(logging.Filter):
    """Masks a webhook's path (and query) in urllib3's log lines, which quote every request's path at DEBUG."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path if len(path) > 1 else ""

    def filter(self, record: logging.LogRecord) -> bool:
        if self._path:
            message = record.getMessage()
            if self._path in message:
                record.msg, record.args = message.replace(self._path, "/…"), ()
        return True
