"""The verdict on one provider answer, as every other module reads it.

Provider modules produce `Outcome`s (see `llms.providers`); the key manager turns them into penalties; the
smart client decides from them whether to try the next key, the next provider, or to stop. Nothing here knows
any provider's wire format.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from config.api_keys import redact
from llms.key_states import FACTS, KeyState


class OutcomeKind(StrEnum):
    OK = "ok"
    RATE_LIMIT = "rate_limit"  # the key (or its account, or the provider) must rest, then it works again
    INVALID_KEY = "invalid_key"  # revoked, disabled, leaked, unknown
    NO_CREDITS = "no_credits"  # the account has no credit left
    SPEND_CAP = "spend_cap"  # the account hit the spend limit its owner set; back at the next billing period
    NO_ACCESS = "no_access"  # the key's project cannot use the model at all (no quota, region, billing)
    TRANSIENT = "transient"  # the provider failed this once: 5xx, timeouts, garbage, errors inside a 200
    REQUEST_ERROR = "request_error"  # the request's fault: another key of the same provider will not help

    @property
    def parks_as(self) -> KeyState | None:
        """The state a key that got this outcome is parked in (None: it is not parked)."""
        return _OUTCOME_FACTS[self][0]

    @property
    def word(self) -> str:
        """What happened, in a check's verdict or a message: `invalid key`, `rejected the request`."""
        return _OUTCOME_FACTS[self][1]

    @property
    def logged(self) -> str:
        """How the request log and its filter show it: `rate-limited (429)`."""
        return _OUTCOME_FACTS[self][2]

    @property
    def failed(self) -> str | None:
        """How the key failed, in the chat's trail (`2 keys invalid`); None: said by its status code."""
        state = self.parks_as or (KeyState.RATE_LIMIT if self is OutcomeKind.RATE_LIMIT else None)
        if self is OutcomeKind.REQUEST_ERROR:
            return "refused the request"
        return FACTS[state].held if state is not None else None


_OUTCOME_FACTS: dict[OutcomeKind, tuple[KeyState | None, str, str]] = {
    OutcomeKind.OK: (None, "ok", "ok"),
    OutcomeKind.RATE_LIMIT: (None, "rate-limited", "rate-limited (429)"),
    OutcomeKind.INVALID_KEY: (KeyState.INVALID_KEY, "invalid key", "invalid key"),
    OutcomeKind.NO_CREDITS: (KeyState.NO_CREDITS, "no credits", "no credits"),
    OutcomeKind.SPEND_CAP: (KeyState.SPEND_CAP, "spend cap reached", "spend cap"),
    OutcomeKind.NO_ACCESS: (KeyState.NO_ACCESS, "no access to the model", "no access"),
    OutcomeKind.TRANSIENT: (None, "error", "error"),
    OutcomeKind.REQUEST_ERROR: (None, "rejected the request", "request rejected"),
}
"""Per outcome: the state it parks a key in, its word, and how the request log shows it."""


class Scope(StrEnum):
    """Who pays for an outcome, for which models.

    KEY: the key that got it, for every model. ACCOUNT: every key of its account (group), for every model. MODEL:
    the key and the keys it shares limits with, for the requested model only (the provider counts this limit per
    model: the key keeps answering other models). UPSTREAM: every key of the provider, for the requested model (the
    model itself is busy). PROVIDER: every key, every model (the provider refuses this network)."""

    KEY = "key"
    ACCOUNT = "account"
    MODEL = "model"
    UPSTREAM = "upstream"
    PROVIDER = "provider"


TOKENS_WINDOW = 60.0
"""Seconds a limit on tokens counts over where nothing says: a minute (OpenAI's, Groq's, Azure's TPM, Gemini's input
tokens per minute)."""


@dataclass(frozen=True, slots=True)
class TokensLeft:
    """What an answer said of its key's window of tokens: how many are left, seconds until it is whole again (as
    OpenAI words its reset), and how many it holds, where said."""

    left: int
    reset_after: float | None
    limit: int | None = None

    @property
    def whole_in(self) -> float:
        """Seconds until the window is whole again: as said, else a minute (the window such counts speak of)."""
        return self.reset_after if self.reset_after is not None else TOKENS_WINDOW


@dataclass(frozen=True, slots=True)
class QuotaHint:
    """What a successful answer said about the key's quota.

    `remaining` requests until `reset_after` seconds from now; `tokens`: its window of tokens, where the provider
    counts them (OpenAI's, Groq's minute: `llms.quota.TokenBudget` keeps to it). `per_day`: `remaining`
    counts the day's requests (Groq's, Cerebras' headers, OpenRouter's free-model requests) — when to stop, not
    how many may go at once: 999 left today says nothing of a 30-a-minute limit, so it must not widen the in-flight
    limit.
    """

    remaining: int | None
    reset_after: float | None
    limit: int | None = None  # the window's size, when the provider says it
    per_day: bool = False
    tokens: TokensLeft | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict on one answer.

    `retry_after` is how long the provider says to wait, in seconds (None: no hint; the cooldown policy
    decides); `scheduled` marks a wait that is a calendar fact (a monthly spend cap resets on the 1st), not a
    provider's hint, so it is trusted beyond `LLM_MAX_COOLDOWN` (up to 31 days). `scope` says who must rest.
    For request errors, `other_provider_may_serve` says whether another provider could still take the same
    request (too long for this model, blocked by this provider's filter); `config_error` marks problems of our
    configuration (an unknown model) that the status page should show.
    """

    kind: OutcomeKind
    status: int | None = None
    message: str = ""
    retry_after: float | None = None
    daily_quota: bool = False
    scheduled: bool = False
    scope: Scope = Scope.KEY
    other_provider_may_serve: bool = False
    config_error: bool = False
    grid: float | None = None
    """Where a 429's reset named a moment on a round grid of the provider's clock (an epoch on a whole minute): the
    longest round window length that moment lies on (`llms.wire.epoch_grid`), a sign the window turns on the clock."""
    on_tokens: bool = False
    """A 429 whose words name a limit on tokens (`llms.wire.TOKEN_LIMIT_WORDS`, Gemini's quota metric): the requests
    it counts differ in size, so its window is learned in tokens (`llms.quota.TokenDrip`), not in requests."""
    quota: QuotaHint | None = None
    """What a probe read of the account's daily requests (OpenRouter's `free_model_daily_requests`), for the
    status page; None when the answer says nothing of it."""

    def redacted(self, secrets: Sequence[str]) -> Outcome:
        return replace(self, message=redact(self.message, secrets))


OK = Outcome(OutcomeKind.OK, 200)


def transient(message: str, status: int | None = None) -> Outcome:
    return Outcome(OutcomeKind.TRANSIENT, status, message)


def rejected(message: str, status: int | None = None, *, elsewhere: bool = True, config: bool = False) -> Outcome:
    """A request error; `elsewhere`: another provider may still take it."""
    return Outcome(OutcomeKind.REQUEST_ERROR, status, message, other_provider_may_serve=elsewhere, config_error=config)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call the client made while answering a request. `message` is short and already redacted."""

    key_id: str
    kind: OutcomeKind
    status: int | None
    message: str

    def describe(self) -> str:
        status = f" {self.status}" if self.status else ""
        return f"{self.key_id} {self.kind.value}{status}"


def describe_states(states: Iterable[str | None]) -> str:
    """How many keys are in each state, in words: `1 available, 2 rate-limited` (None is available)."""
    counts = Counter(state or "available" for state in states)
    return ", ".join(f"{n} {_words(state)}" for state, n in sorted(counts.items()))


def _words(state: str) -> str:
    known = KeyState.of(state)
    return known.facts.words if known is not None else state


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
