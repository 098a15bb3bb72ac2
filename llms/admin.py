"""The operator's side of a client, `client.admin`: what a person or a tool does to the keys and reads about
them — status, events, the request log and history, disabling, checking, resetting, alerts.

It is apart from `SmartClient` so the chat API reads alone: the client answers requests; this object acts on and
reports on the key manager, the store, the background checks and the alerts behind it. It holds no client: it
takes the client's parts (key manager, status reader, settings, adapters) and one hook (`refresh`: look at the
keys file before a status read), so `llms.smart_client` imports this module and never the other way round.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from config.api_keys import ApiKey
from config.settings import Settings
from llms.alerts import Alerts
from llms.checks import KeyChecks
from llms.clock import client_time
from llms.key_manager import KeyManager
from llms.key_states import KeyState
from llms.outcomes import Outcome, OutcomeKind, Scope
from llms.prober import LONG_COOLDOWNS
from llms.providers import ProviderAdapter
from llms.state import EventKind, KeyEvent, StoreHealth
from llms.status import ProviderStatus, StatusReader

log = logging.getLogger("llms.admin")


class Admin:
    """The operator's actions and reads over one client's keys (`client.admin`); the seed's `reset_key`,
    `reset_provider` and `reset_all` are also on the client."""

    def __init__(
        self,
        key_manager: KeyManager,
        status: StatusReader,
        settings: Callable[[], Settings],
        adapter: Callable[[str], ProviderAdapter],
        new_adapter: Callable[[str, tuple[str, ...]], ProviderAdapter],
        *,
        refresh: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = client_time,
    ) -> None:
        """`settings`: the client's current settings (keys change on a reload). `adapter(provider)`: the adapter
        in use; `new_adapter(provider, secrets)`: a throwaway one for keys not in rotation. `refresh`: brings the
        keys up to date (the client's `watch_keys_file`) before a status read."""
        self.key_manager = key_manager
        self.status = status
        self._settings = settings
        self._adapter = adapter
        self._new_adapter = new_adapter
        self._refresh = refresh
        self._closed = threading.Event()
        self._checks = KeyChecks(
            lambda key_id, by: self.check_key(key_id, by=by), lambda key_id: key_manager.key(key_id).provider
        )
        webhook = settings().alert_webhook
        self._alerts = Alerts(
            key_manager.change_document,
            lambda: key_manager.document(Alerts.NAME),
            self.provider_statuses,
            webhook,
            clock,
        )
        if webhook:
            self._alerts.watch()

    def _order(self) -> list[str]:
        """The providers in rotation: those with keys, in fallback order."""
        settings = self._settings()
        return [p for p in settings.provider_order if settings.providers[p].keys]

    # --- reads ----------------------------------------------------------------------------------------------------

    def provider_statuses(self) -> list[ProviderStatus]:
        """The client's `get_status_summary`, as typed values (what the dashboard and the CLI draw)."""
        self._refresh()
        return self.status.provider_statuses()

    def store_health(self) -> StoreHealth:
        """Which backend holds key state, and whether it is working."""
        return self.key_manager.store_health()

    def events(self, limit: int = 100) -> list[KeyEvent]:
        """Recent key state changes, newest first."""
        return self.key_manager.events(limit)

    def request_log(
        self, limit: int = 100, *, provider: str | None = None, key_id: str | None = None, outcome: str | None = None
    ) -> list[dict[str, Any]]:
        """The most recent requests, newest first, as plain data: time, provider, model, key id, outcome, HTTP
        status, latency and tokens. Never message content, never a key. Filters match exactly."""
        return self.status.request_log(limit, provider=provider, key_id=key_id, outcome=outcome)

    def history(
        self, hours: float = 24.0, *, provider: str | None = None, key_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Per key and per hour over the last `hours`: requests, successes, 429s, other errors, tokens in and
        out, mean and p95 latency (seconds), oldest first, as plain data."""
        return self.status.history(hours, provider=provider, key_id=key_id)

    def parked_key_ids(self) -> list[str]:
        """Keys parked for the long cooldown (invalid, no credit), which a probe may bring back."""
        return [
            key.key_id
            for provider in self._order()
            for key in self.key_manager.statuses(provider)
            if key.reason in LONG_COOLDOWNS
        ]

    # --- actions --------------------------------------------------------------------------------------------------

    def disable_key(self, *key_ids: str, by: str | None = None) -> None:
        """Take keys out of rotation until `enable_key`; kept in the store, so every process sharing it skips them.
        `by` names who did it in the events (default "by an operator")."""
        self.key_manager.set_disabled(key_ids, True, by)

    def enable_key(self, *key_ids: str, by: str | None = None) -> None:
        self.key_manager.set_disabled(key_ids, False, by)

    def reset_key(self, *key_ids: str, by: str | None = None) -> None:
        """End these keys' cooldowns now."""
        self.key_manager.reset_key(*key_ids, by=by)

    def reset_provider(self, provider: str, by: str | None = None) -> None:
        """End the cooldowns of every key of `provider` now."""
        self.key_manager.reset_provider(provider, by)

    def reset_all(self, by: str | None = None) -> None:
        """End every key's cooldown now."""
        self.key_manager.reset_all(by)

    def resume_provider(self, provider: str) -> None:
        """Lift a provider-wide pause (an upstream limit), leaving its keys' cooldowns as they are."""
        self.key_manager.resume_provider(provider)

    # --- checks ---------------------------------------------------------------------------------------------------

    def check_key(self, key_id: str, *, by: str | None = None) -> Outcome:
        """One cheap real call with one key (no tokens where the provider allows) within `LLM_PROBE_TIMEOUT`,
        recorded like any other; a key parked for a reason that call disproves (see
        `ProviderSpec.probe_vouches_for`) returns to the rotation. `by`: the person who asked, for a `checked`
        event (background probes leave none)."""
        settings = self._settings()
        key = self.key_manager.key(key_id)
        adapter = self._adapter(key.provider)
        spec = settings.providers[key.provider].spec
        vouches_for = spec.probe_vouches_for
        probe_credit = getattr(adapter, "probe_credit", None)  # a provider whose credit only a paid call shows
        if probe_credit is not None and KeyState.of(self.key_manager.parked_for(key)) == KeyState.NO_CREDITS:
            outcome = probe_credit(key, settings.probe_timeout)
            vouches_for = frozenset({*vouches_for, OutcomeKind.NO_CREDITS})
        else:
            outcome = adapter.probe(key, settings.probe_timeout)
        self.key_manager.record(key, outcome, model=adapter.model if outcome.scope is Scope.MODEL else None)
        if outcome.quota is not None:
            self.key_manager.note_daily_requests(key, outcome.quota)
        if outcome.kind is OutcomeKind.OK:
            self.key_manager.probe_passed(key, vouches_for, spec.probe_revives_credit)
        if by is not None:
            status = f" (HTTP {outcome.status})" if outcome.status else ""
            found = (
                "the key works"
                if outcome.kind is OutcomeKind.OK
                else f"{outcome.kind.value}{status}: {outcome.message}"
            )
            self.key_manager.note(key, EventKind.CHECKED, f"by {by}: {found}")
        return outcome

    def check_new_key(self, provider: str, secret: str) -> Outcome:
        """The probe `check_key` runs, for a key not in rotation yet (one pasted into the dashboard): through a
        throwaway adapter of that provider, recorded nowhere, its message redacted. A probe that breaks says so."""
        adapter = self._new_adapter(provider, (secret,))
        try:
            return adapter.probe(ApiKey(provider, 0, secret), self._settings().probe_timeout).redacted([secret])
        except Exception as exc:
            return Outcome(OutcomeKind.TRANSIENT, None, f"test failed: {type(exc).__name__}")
        finally:
            adapter.close()

    def start_checks(self, key_ids: Sequence[str] | None = None, by: str | None = None) -> bool:
        """Check keys (default: all) in the background, one at a time per provider; `checks()` follows it; each
        check is an event naming `by` (default "an operator"). Returns False, starting nothing, while an earlier
        run is still going; an unknown id raises `KeyError` first."""
        every = (k.key_id for p in self._order() for k in self.key_manager.keys(p))
        return self._checks.start(list(every if key_ids is None else key_ids), by or "an operator")

    def checks(self) -> dict[str, Any]:
        """Progress of the background checks and each key's latest result, as plain data (see `KeyChecks`)."""
        return self._checks.progress()

    def probe_at_start(self) -> None:
        """Probe one key of each account (group, or key alone) of the providers whose probe reads quota reported
        nowhere else (`ProviderSpec.probe_at_start`: OpenRouter's free-model requests left today), once, one at a
        time; the prober's rounds read it again later. Stops when the client closes."""
        settings = self._settings()
        chosen: dict[tuple[str, str], str] = {}
        for provider in self._order():
            if settings.providers[provider].spec.probe_at_start:
                for key in self.key_manager.keys(provider):
                    chosen.setdefault((provider, key.group or key.fingerprint), key.key_id)
        for key_id in chosen.values():
            if self._closed.is_set():
                return
            try:
                self.check_key(key_id)
            except Exception as exc:  # a start-up read must never take the client down
                log.warning("start-up probe of %s failed: %s", key_id, type(exc).__name__)

    # --- alerts ---------------------------------------------------------------------------------------------------

    def alerts(self, limit: int = 50) -> list[dict[str, Any]]:
        """Alerts, newest first, as plain data `{"at", "id", "state": "open" | "resolved", "text"}`: a provider with
        no key available, a key parked (invalid, no credit, spend cap, no access), every key exhausted, and each
        one's end. Brings them up to date with key state first (every process sharing the store sees one list)."""
        self._alerts.update()
        return self._alerts.recent(limit)

    def acknowledge_alert(self, incident_id: str, by: str | None = None) -> bool:
        """Mark an open incident (an alert's `id`) as seen by someone: it stays listed, its later updates are not
        announced again, and its end is. Kept in the store's alert document, so every process sees it. False when
        no open incident has that id."""
        return self._alerts.acknowledge(incident_id, by)

    def mute_alert(self, incident_id: str, seconds: float, by: str | None = None) -> bool:
        """Silence an incident (an alert's `id`; a bulk key alert mutes each of its keys) for `seconds`: its
        alerts are still listed, marked muted, but raise no toast or webhook until the mute ends. False when the
        id names no incident the list knows."""
        return self._alerts.mute(incident_id, seconds, by)

    def close(self) -> None:
        """Stop the background checks, the start-up probes and the alert watcher (the client's `close` calls it)."""
        self._closed.set()
        self._checks.stop()
        self._alerts.close()
