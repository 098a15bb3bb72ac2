"""Every state a key can be in, each carrying its own facts (as pybreaker's states carry their behaviour): whether
it is parked, whether a probe can revive it, whether it frees itself, and its words for every view — the status
table's pill and filter, the cause shown beside it, the chat trail, alerts and messages.

`KeyState` is the one enum of cooldown reasons: a store keeps a reason as its plain string value and knows
nothing of its meaning, and code that reads one back makes it a member here (`KeyState.of`) to act on it. This
module imports nothing of the project, so any module (a store's among them) may import it. A new cooldown reason
is its member here with its facts, the `OutcomeKind` that parks a key in it (`llms.outcomes`) if it is a new kind
of verdict, and the provider's rule; every view reads them from here, and `tests/test_key_states.py` walks each
member through every view.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class StateFacts:
    label: str
    """The status table's pill: words, never internal names, each state its own."""
    color: str
    """The pill's colour (the words carry the state, the colour helps)."""
    words: str
    """In messages and alerts: `groq:2 is parked as invalid`, `3 rate-limited`."""
    cause: str
    """The status page's cause when the provider said nothing more (`invalid key`, `configuration problem`)."""
    held: str
    """In the chat's fallback trail: `2 keys invalid`."""
    filter: str
    """The status table's filter pill that lists it."""
    parked: bool = False
    """Out for the long cooldown until a person acts (or the provider's date): a key problem, not a limit."""
    probed: bool = False
    """A background probe may bring it back early (a cheap call that disproves it)."""
    frees_itself: bool = False
    """Back by itself within minutes: a countdown means something; nobody needs to act."""
    caused_by: frozenset[str] = frozenset()
    """The outcomes (`OutcomeKind` values) that put a key in it: a key's latest failure explains its state only
    if it is one of these (a 429 from an hour ago says nothing of a revoked key)."""


class KeyState(StrEnum):
    """A key's state: its cooldown reason (the value a store keeps), or available, disabled by hand, or waiting on
    its provider's pause."""

    AVAILABLE = "available"
    RATE_LIMIT = "rate_limit"
    ERRORS = "errors"
    UPSTREAM = "upstream"
    PAUSED = "paused"
    MANUAL = "manual"
    INVALID_KEY = "invalid_key"
    NO_CREDITS = "no_credits"
    SPEND_CAP = "spend_cap"
    NO_ACCESS = "no_access"
    DISABLED = "disabled"

    @property
    def facts(self) -> StateFacts:
        return FACTS[self]

    @property
    def needs_person(self) -> bool:
        """Listed under "Needs a person": parked, parked by hand, or disabled."""
        return self.facts.parked or self in (KeyState.MANUAL, KeyState.DISABLED)

    @classmethod
    def of(cls, state: str | None) -> KeyState | None:
        """The member for a stored or reported state; None for None or a state this version does not know."""
        try:
            return cls(state) if state is not None else None
        except ValueError:
            return None


FACTS: dict[KeyState, StateFacts] = {
    KeyState.AVAILABLE: StateFacts(
        label="available",
        color="#16a34a",
        words="available",
        cause="available",
        held="available",
        filter="Available",
    ),
    KeyState.RATE_LIMIT: StateFacts(
        label="rate-limited",
        color="#f59e0b",
        words="rate-limited",
        cause="rate-limited",
        held="rate-limited",
        filter="Rate-limited",
        frees_itself=True,
        caused_by=frozenset({"rate_limit"}),
    ),
    KeyState.ERRORS: StateFacts(
        label="resting after errors",
        color="#eab308",
        words="resting after errors",
        cause="resting after errors",
        held="resting after errors",
        filter="Resting after errors",
        frees_itself=True,
        caused_by=frozenset({"transient"}),
    ),
    KeyState.UPSTREAM: StateFacts(
        label="model busy upstream",
        color="#f97316",
        words="resting: model busy upstream",
        cause="model busy upstream",
        held="busy upstream",
        filter="Rate-limited",
        frees_itself=True,
        caused_by=frozenset({"rate_limit", "transient"}),
    ),
    KeyState.PAUSED: StateFacts(
        label="provider paused",
        color="#3b82f6",
        words="waiting on its provider",
        cause="waiting on a provider pause",
        held="waiting on its provider",
        filter="Provider paused",
        frees_itself=True,
    ),
    KeyState.MANUAL: StateFacts(
        label="parked by hand",
        color="#9ca3af",
        words="parked by hand",
        cause="parked by hand",
        held="parked by hand",
        filter="Parked",
    ),
    KeyState.INVALID_KEY: StateFacts(
        label="invalid key",
        color="#dc2626",
        words="parked as invalid",
        cause="invalid key",
        held="invalid",
        filter="Parked",
        parked=True,
        probed=True,
        caused_by=frozenset({"invalid_key"}),
    ),
    KeyState.NO_CREDITS: StateFacts(
        label="no credit",
        color="#e11d48",
        words="parked without credit",
        cause="no credit left",
        held="out of credit",
        filter="Parked",
        parked=True,
        probed=True,
        caused_by=frozenset({"no_credits"}),
    ),
    KeyState.SPEND_CAP: StateFacts(
        label="spend cap",
        color="#9333ea",
        words="parked at a spend cap",
        cause="spend cap",
        held="at a spend cap",
        filter="Parked",
        parked=True,
        caused_by=frozenset({"spend_cap"}),
    ),
    KeyState.NO_ACCESS: StateFacts(
        label="no access",
        color="#a16207",
        words="parked without access to the model",
        cause="configuration problem",
        held="without access to the model",
        filter="Parked",
        parked=True,
        caused_by=frozenset({"no_access"}),
    ),
    KeyState.DISABLED: StateFacts(
        label="disabled",
        color="#6b7280",
        words="disabled by an operator",
        cause="disabled by an operator",
        held="disabled",
        filter="Disabled",
    ),
}
"""Each state's facts; `tests/test_key_states.py` checks every member has them and every view uses them."""

PARKED_REASONS: frozenset[str] = frozenset(s.value for s in KeyState if s.facts.parked)
"""The states (`KeyStatus.reason`) of parked keys: out until someone acts or the long cooldown ends."""
