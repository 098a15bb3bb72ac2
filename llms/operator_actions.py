"""What an operator does to keys by hand, and what a probe checking keys for one proves: key state changed from
outside the request path.

Disabling, enabling and resetting keys, reviving a parked key a probe found well, and keeping what a probe read of
an account's day write the store as an outcome does, but answer to a person (who acted goes in the event and in
`DISABLED_BY`) or to a probe, not to the cooldown policy: kept apart from the key manager, which turns answers into
rests and leaves these to say what they undo.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

from config.api_keys import ApiKey
from llms.key_states import KeyState
from llms.outcomes import QuotaHint
from llms.quota import limit_subject
from llms.state import EventKind, KeyEvent, StateStore
from llms.state.base import Document

DISABLED_BY = "disabled-by"
"""The document naming who disabled each disabled key (by fingerprint): one write per bulk action, one read per
status of a provider with a disabled key."""


class OperatorActions:
    """Changes to keys' state that an operator or a probe makes, in the store every process sharing it obeys."""

    def __init__(self, store: StateStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    def set_disabled(self, keys: Sequence[ApiKey], disabled: bool, by: str | None) -> None:
        """Take the keys out of rotation (or put them back); `by`: who did it (else "an operator")."""
        who, fingerprints = by or "an operator", [k.fingerprint for k in keys]
        changed = set(fingerprints)

        def named(document: Document) -> Document:  # who disabled which key, for the status and the alert
            names = {k: v for k, v in document.items() if k not in changed}
            return names | (dict.fromkeys(fingerprints, who) if disabled else {})

        self._store.change(DISABLED_BY, named)
        self._store.set_disabled(fingerprints, disabled)
        now = self._clock()
        for key in keys:
            self._event(now, key, EventKind.DISABLED if disabled else EventKind.ENABLED, f"by {who}")

    def reset(self, keys: Iterable[ApiKey], by: str | None = None) -> None:
        """Clear the keys' rests and failure streaks; an event for each key that had either."""
        keys = list(keys)
        now = self._clock()
        records = self._store.records([k.fingerprint for k in keys])
        self._store.reset(k.fingerprint for k in keys)
        for key, record in zip(keys, records, strict=True):
            if record.cooldown_until > now or record.consecutive_failures:
                self._event(now, key, EventKind.RESET, f"manual reset by {by}" if by else "manual reset")

    def revive(
        self,
        key: ApiKey,
        revivable: Collection[KeyState],
        revives_credit: Callable[[str], bool] | None,
    ) -> bool:
        """Bring back a key a probe's call just worked on, if it is parked for a `revivable` reason (a no-credit
        parking only if `revives_credit` says so of the message that parked it; None: always)."""
        now = self._clock()
        record = self._store.records([key.fingerprint])[0]
        state = KeyState.of(record.reason)
        if record.cooldown_until <= now or state is None or state not in revivable:
            return False
        credit = state == KeyState.NO_CREDITS
        if credit and revives_credit is not None and not revives_credit(record.last_error or ""):
            return False
        self._store.reset([key.fingerprint])
        self._event(now, key, EventKind.RECOVERED, f"probe passed after {state.value}")
        return True

    def note_daily_requests(self, key: ApiKey, quota: QuotaHint) -> None:
        """Keep what a probe read of the key's account's requests left today (`daily/…`), until the day ends."""
        now = self._clock()
        until = now + (quota.reset_after or 0.0)
        document = {"remaining": quota.remaining, "limit": quota.limit, "until": until, "at": now}
        self._store.change(f"daily/{limit_subject(key, '')}", lambda _: document)

    def _event(self, now: float, key: ApiKey, kind: EventKind, detail: str) -> None:
        self._store.add_event(KeyEvent(at=now, key_id=key.key_id, kind=kind, detail=detail))
