"""Alerts: operators hear when a provider has no key left or is about to run out of today's requests, a key is
parked, or every key is exhausted — once per incident, and once more when it ends.

A provider (or the whole pool) is declared recovered only once it answered again: keys back in rotation after a
reset or at the end of their rest are not an answer (a reset Groq may still answer 503). Until then the incident
is *updated* ("has keys in rotation again, no answer yet"), and opens again if they fail once more. Key alerts
raised by one change are one alert naming the keys (`key_ids`, at most `KEY_IDS_KEPT`), not one per key:
disabling 69 keys is one row, one toast and one webhook post.

Incidents are read off key state, not off single calls, so they open and close the same way whichever process
caused them. The open incidents and the recent alerts are one document in the store, changed atomically: when
several processes share the store, the one whose change opened an incident is the one that announces it, so one
incident sends one alert. `LLM_ALERT_WEBHOOK` gets each alert as a JSON POST with a Slack-compatible `text` field
from a background thread, retried with backoff; it never blocks or fails a call, and no text holds a secret (keys
appear as id and hint).

An operator can *acknowledge* an open incident (it stays listed, marked, and its later updates are not announced
again; its end is) or *mute* one for a while (its alerts are listed, marked muted, but send no toast or webhook
until the mute ends). Both live in the same document, changed atomically, so every process sees them.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import urllib3

from config.api_keys import key_order
from llms.clock import client_time
from llms.key_states import PARKED_REASONS, KeyState
from llms.key_status import KeyStatus
from llms.outcomes import describe_states, format_duration
from llms.quota_left import Forecast
from llms.state.base import Document
from llms.transport import HttpPool

log = logging.getLogger("llms.alerts")

KEEP = 200
"""Alerts kept in the list, newest first."""
RUNS_DRY_WARNING = 3600.0
"""A provider that runs out of today's requests within this many seconds at the last hour's pace (and before they
free) raises an alert: time to add keys or slow down, before calls fail."""
KEY_IDS_KEPT = 50
"""Key ids an alert about many keys keeps (its text names five and counts the rest): the document stays small."""
NAMED = 5
"""Key ids an alert's (or a toast's, a notice's) text names; the rest are counted."""


class ProviderState(Protocol):
    """What alerts read of a provider's status (`llms.ProviderStatus` has it)."""

    title: str
    available: int
    total: int
    keys: tuple[KeyStatus, ...]
    forecast: Forecast


@dataclass(frozen=True)
class Incident:
    """`update`: what the alert says when the incident's condition ended without an answer (providers and the
    pool only: their recovery waits for one). `key_id` and `words` (`parked as invalid`; `recovery_words`
    for its end) let alerts about several keys of one change be one alert."""

    id: str
    text: str
    recovery: str
    update: str | None = None
    key_id: str | None = None
    words: str = ""
    recovery_words: str = ""


def incidents(providers: Sequence[ProviderState]) -> dict[str, Incident]:
    """The incidents the key state shows now, by id (`provider:groq`, `key:groq:2`, `exhausted`)."""
    found: dict[str, Incident] = {}
    configured = [p for p in providers if p.total]
    for provider in configured:
        for key in provider.keys:
            if key.disabled:  # its own words: an operator took it out, it is neither parked nor back in rotation
                words = f"disabled by {key.disabled_by or 'an operator'}"  # as its event names who
                found[f"key:{key.key_id}"] = _key_incident(key, words, "enabled and back in rotation")
            elif not key.available and key.reason in PARKED_REASONS:
                found[f"key:{key.key_id}"] = _key_incident(key, KeyState(key.reason).facts.words, "back in rotation")
        dry = provider.forecast.runs_out_in
        frees = provider.forecast.frees_in
        if dry is not None and 0 < dry <= RUNS_DRY_WARNING and (frees is None or dry < frees):
            found[f"dry:{provider.title}"] = Incident(
                f"dry:{provider.title}",
                f"{provider.title} runs out of today's requests in {format_duration(dry)} at the last hour's pace"
                + (f"; they free in {format_duration(frees)}" if frees is not None else ""),
                f"{provider.title} is no longer about to run out of today's requests",
            )
        if provider.available == 0:
            found[f"provider:{provider.title}"] = Incident(
                f"provider:{provider.title}",
                f"{provider.title} has no key available: {_why(provider.keys)}",
                f"{provider.title} can answer again: it answered",
                f"{provider.title} has keys in rotation again, but no answer yet: recovery is declared on its next "
                "answer",
            )
    if configured and all(p.available == 0 for p in configured):
        everything = [k for p in configured for k in p.keys]
        found["exhausted"] = Incident(
            "exhausted",
            f"Every API key is exhausted: {_why(everything)}",
            "Keys are available again: calls are being answered",
            "Keys are in rotation again, but no call was answered yet",
        )
    return found


def _key_incident(key: KeyStatus, words: str, recovery_words: str) -> Incident:
    who = f"{key.key_id} ({key.hint})"
    return Incident(
        f"key:{key.key_id}",
        f"{who} is {words}",
        f"{who} is {recovery_words}",
        key_id=key.key_id,
        words=words,
        recovery_words=recovery_words,
    )


def answers(providers: Sequence[ProviderState]) -> dict[str, int]:
    """Successful answers recorded so far, per incident whose recovery waits for an answer (`provider:<title>`,
    `exhausted`): a recovery is declared when this count has grown since the incident opened."""
    configured = [p for p in providers if p.total]
    found = {f"provider:{p.title}": sum(k.successes for k in p.keys) for p in configured}
    found["exhausted"] = sum(found.values())
    return found


def _why(keys: Sequence[KeyStatus]) -> str:
    """The keys' states, and when the first of them frees (`2 rate-limited; the next frees in 48 s`)."""
    waits = [k.cooldown_remaining for k in keys if k.cooldown_remaining > 0 and not k.disabled]
    return describe_states(k.reason for k in keys) + (
        f"; the next frees in {format_duration(min(waits))}" if waits else ""
    )


def advance(
    document: Document,
    now_open: Mapping[str, Incident],
    at: float,
    answered: Mapping[str, int] | None = None,
    configured: Collection[str] | None = None,
) -> Document:
    """The alert document after comparing the incidents open now with those it recorded: each new incident and
    each ended one is an alert. A provider's (or the pool's) ended incident is resolved only if it answered since
    it opened (`answered`, see `answers`); until then it is updated once and waits, and opens again if its
    condition comes back. A key's incident that ended because the key left the configuration (not among the
    `configured` key ids) is resolved as removed, not as back in rotation. `new` holds only the alerts this change
    made, for its caller to announce."""
    recorded: dict[str, dict[str, Any]] = dict(document.get("open", {}))
    muted = {i: m for i, m in document.get("muted", {}).items() if m.get("until", 0) > at}
    counts = answered or {}
    new = []
    for incident_id, incident in now_open.items():
        entry = recorded.get(incident_id)
        if entry is None or entry.get("waiting"):
            recorded[incident_id] = _entry(incident, at, counts)
            new.append(_alert(at, incident_id, "open", incident.text, incident.key_id, incident.words))
    for incident_id in [i for i in recorded if i not in now_open]:
        entry = recorded[incident_id]
        if "answered" in entry and counts.get(incident_id, 0) <= entry["answered"]:
            if not entry.get("waiting"):
                recorded[incident_id] = {**entry, "waiting": True}
                update = _alert(at, incident_id, "updated", entry["update"])
                if entry.get("acknowledged"):  # seen already: listed, not announced again
                    update["acknowledged"] = entry["acknowledged"]
                new.append(update)
            continue
        ended = recorded.pop(incident_id)
        words, text, key_id = ended.get("recovery_words", ""), ended["recovery"], ended.get("key_id")
        if key_id is not None and configured is not None and key_id not in configured:
            words, text = "removed", f"{key_id} is removed"
        new.append(_alert(at, incident_id, "resolved", text, key_id, words))
    for alert in new:
        if alert["id"] in muted:
            alert["muted"] = muted[alert["id"]]
    new = _one_per_change(new)
    recent = [*reversed(new), *document.get("recent", [])][:KEEP]
    return {"open": recorded, "recent": recent, "new": new, "muted": muted}


def members(document: Document, incident_id: str) -> list[str]:
    """The incidents an alert's id stands for: itself, or for a bulk key alert (`keys:open:…`) each of its keys'
    (`key:groq:1`, …), as its newest row lists them."""
    if not incident_id.startswith("keys:"):
        return [incident_id]
    row = next((r for r in document.get("recent", []) if r.get("id") == incident_id), None)
    return [f"key:{key_id}" for key_id in (row or {}).get("key_ids", [])]


def acknowledge(document: Document, incident_id: str, at: float, by: str | None = None) -> Document:
    """The document with the open incidents behind `incident_id` marked acknowledged (by whom, when)."""
    recorded = dict(document.get("open", {}))
    for member in members(document, incident_id):
        if member in recorded:
            recorded[member] = {**recorded[member], "acknowledged": {"by": by, "at": at}}
    return {**document, "open": recorded, "new": []}


def mute(document: Document, incident_id: str, until: float, at: float, by: str | None = None) -> Document:
    """The document with the incidents behind `incident_id` muted until `until` (mutes already over dropped)."""
    muted = {i: m for i, m in document.get("muted", {}).items() if m.get("until", 0) > at}
    for member in members(document, incident_id):
        muted[member] = {"until": until, "by": by, "at": at}
    return {**document, "muted": muted, "new": []}


def annotated(document: Document, limit: int, now: float) -> list[dict[str, Any]]:
    """The newest `limit` alerts, each marked `acknowledged` (its incident is open and was acknowledged after
    the alert was raised, or it was raised after that) and `muted` (its incident is muted now) as they stand."""
    recorded: Mapping[str, Mapping[str, Any]] = document.get("open", {})
    muted = {i: m for i, m in document.get("muted", {}).items() if m.get("until", 0) > now}
    rows = []
    for alert in list(document.get("recent", []))[:limit]:
        row = dict(alert)
        ids = [f"key:{k}" for k in row.get("key_ids", [])] if row["id"].startswith("keys:") else [row["id"]]
        if row["state"] != "resolved" and ids:
            acks = [recorded.get(i, {}).get("acknowledged") for i in ids]
            entries = [recorded.get(i, {}) for i in ids]
            if all(acks) and all(e.get("at", 0) <= row["at"] for e in entries):
                row["acknowledged"] = acks[0]
        if ids and all(i in muted for i in ids):
            row["muted"] = muted[ids[0]]
        rows.append(row)
    return rows


def _entry(incident: Incident, at: float, answered: Mapping[str, int]) -> dict[str, Any]:
    entry: dict[str, Any] = {"at": at, "recovery": incident.recovery}
    if incident.update is not None:
        entry |= {"update": incident.update, "answered": answered.get(incident.id, 0)}
    if incident.key_id is not None:
        entry |= {"key_id": incident.key_id, "recovery_words": incident.recovery_words}
    return entry


def _alert(
    at: float, incident_id: str, state: str, text: str, key_id: str | None = None, words: str = ""
) -> dict[str, Any]:
    alert: dict[str, Any] = {"at": at, "id": incident_id, "state": state, "text": text}
    if key_id is not None:
        alert |= {"key_ids": [key_id], "words": words}
    return alert


def listed(ids: Sequence[str], count: int | None = None) -> str:
    """`groq:1, groq:2`, or the first `NAMED` and `and 64 more` (`count`: how many in all, where `ids` holds only
    some of them)."""
    total = max(count or 0, len(ids))
    more = f" and {total - NAMED} more" if total > NAMED else ""
    return ", ".join(ids[:NAMED]) + more


def _one_per_change(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Key alerts of one change that say the same thing as one alert: `7 keys are disabled by an operator:
    groq:1, …, groq:5 and 2 more`, with `key_ids` and `keys` (how many). Other alerts pass as they are."""
    kinds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    merged: list[dict[str, Any]] = []
    for alert in alerts:
        if "key_ids" not in alert or not alert.get("words"):
            merged.append(alert)
        else:
            kinds.setdefault((alert["state"], alert["words"], "muted" in alert), []).append(alert)
    for (state, words, quiet), group in kinds.items():
        if len(group) == 1:
            merged.append(group[0])
            continue
        ids = sorted((m["key_ids"][0] for m in group), key=key_order)
        text = f"{len(ids)} keys are {words}: {listed(ids)}"
        alert = {
            "at": group[0]["at"],
            "id": f"keys:{state}:{words}",
            "state": state,
            "text": text,
            "key_ids": ids[:KEY_IDS_KEPT],
            "keys": len(ids),
            "words": words,
        }
        merged.append(alert | ({"muted": group[0]["muted"]} if quiet else {}))
    return merged


def _changed(
    recorded: Mapping[str, Mapping[str, Any]], now_open: Mapping[str, Incident], answered: Mapping[str, int]
) -> bool:
    """Whether `advance` would make an alert: an incident opened (or came back while waiting for an answer), one
    ended, or one waiting for an answer got it. A read, no write, when nothing did."""
    if any(i not in recorded or recorded[i].get("waiting") for i in now_open):
        return True
    for incident_id, entry in recorded.items():
        if incident_id in now_open:
            continue
        if "answered" not in entry or not entry.get("waiting") or answered.get(incident_id, 0) > entry["answered"]:
            return True
    return False


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
        providers = self._providers()
        now_open, answered = incidents(providers), answers(providers)
        if not _changed(self._read().get("open", {}), now_open, answered):
            return []
        at = self._clock()
        configured = {key.key_id for provider in providers for key in provider.keys}
        new = self._change(self.NAME, lambda document: advance(document, now_open, at, answered, configured))["new"]
        if self._sender is not None:
            for alert in new:
                if not alert.get("muted"):
                    self._sender.send(alert)
        return new

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return annotated(self._read(), limit, self._clock())

    def acknowledge(self, incident_id: str, by: str | None = None) -> bool:
        """See `Admin.acknowledge_alert` (`llms.admin`); one atomic change of the document."""
        document = self._read()
        if not any(i in document.get("open", {}) for i in members(document, incident_id)):
            return False
        at = self._clock()
        self._change(self.NAME, lambda document: acknowledge(document, incident_id, at, by))
        return True

    def mute(self, incident_id: str, seconds: float, by: str | None = None) -> bool:
        """See `Admin.mute_alert` (`llms.admin`); one atomic change of the document."""
        document = self._read()
        listed = {r.get("id") for r in document.get("recent", [])}
        if incident_id not in listed and incident_id not in document.get("open", {}):
            return False
        at = self._clock()
        self._change(self.NAME, lambda d: mute(d, incident_id, at + max(0.0, seconds), at, by))
        return True

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
        mark = {"open": "🔴", "updated": "🔄"}.get(alert["state"], "✅")
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
