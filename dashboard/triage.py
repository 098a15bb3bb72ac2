"""Triage at scale: which keys need a person and which free themselves, why each key is down, and when a whole
provider is failing.

At 1,000 keys most keys out of rotation are rate-limited and back within minutes; the few that need a person
(revoked, out of credit, at a spend cap, no access, disabled) must not drown among them. Why a key is down is its
*cause*, as the provider said it: the HTTP status of its latest failure (the request log, shared by every process
using the store, or a Test from this dashboard) and the cooldown's own words (the "cooled" event: a provider hint,
a daily limit, no hint). Both are read incrementally (`Causes`): a refresh reads only what was logged since the
last one, so an open Status tab stays cheap. Only key ids ever identify a key here.
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from config.api_keys import key_order
from dashboard.text import countdown, provider_title, reason_text, reason_words
from llms import KeyState, KeyStatus, ProviderStatus, SmartClient
from llms.outcomes import OutcomeKind

NEEDS_PERSON = "needs_person"
"""Out of rotation until someone acts: invalid, out of credit, spend cap, no access, parked or disabled by hand."""
FREES_ITSELF = "frees_itself"
"""Back by itself within minutes: rate-limited, resting after errors, busy upstream, provider paused."""
AVAILABLE = "available"

PERSON_STATES: frozenset[str] = frozenset(state.value for state in KeyState if state.needs_person)
"""States (see `llms.key_status.state_of`) that wait for a person."""

_RANK = {"disabled": 1}
"""Sort rank inside "needs a person": keys an operator switched off on purpose after the unexpected ones."""


def triage(state: str) -> str:
    """`needs_person`, `frees_itself` or `available` for a key state."""
    if state == "available":
        return AVAILABLE
    return NEEDS_PERSON if state in PERSON_STATES else FREES_ITSELF


def urgency(state: str) -> int:
    """Sort rank of a key state: problems for a person first, then disabled keys, keys freeing themselves, and
    available keys last."""
    kind = triage(state)
    if kind == NEEDS_PERSON:
        return _RANK.get(state, 0)
    return 2 if kind == FREES_ITSELF else 3


# --- causes: what the provider said, read incrementally -------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A key's latest failed call: when, the HTTP status (None: no answer came back) and the outcome kind."""

    at: float
    status: int | None
    outcome: str


@dataclass(frozen=True)
class Cooling:
    """A key's latest cooldown in the key manager's own words (its "cooled" event): `reason`, `model` when the
    rest is for one model only, `duration` as written (`7 min`) and `why` (`provider hint`, `per-day quota`, …)."""

    at: float
    reason: str
    model: str | None
    duration: str
    why: str


_COOLED = re.compile(
    r"^(?P<reason>[a-z_]+)(?: on (?P<model>\S+))? for (?P<duration>[\d.]+ (?:s|min|h|days))(?: \((?P<why>.*)\))?$",
    re.DOTALL,
)
"""A "cooled" event's detail (`KeyManager.cool`): `rate_limit on openai/gpt-oss-120b for 7 min (per-day quota)`."""

Row = TypeVar("Row")


def _tail(read: Callable[[int], list[Row]], at: Callable[[Row], float], since: float, most: int) -> list[Row]:
    """The rows newer than `since` (less a few seconds: processes log out of step), oldest first, from a list read
    newest first. Reads 64 rows, and four times more while all of them are new, up to `most`."""
    count = min(64, most)
    while True:
        rows = read(count)
        if len(rows) < count or count >= most or at(rows[-1]) < since:
            break
        count = min(count * 4, most)
    return [row for row in reversed(rows) if at(row) >= since - 5.0]


class Causes:
    """Per key, its latest failure and its latest cooldown's words, kept up to date from the request log and the
    events by reading only their new rows. One per client, shared by every session of the process."""

    EVENTS = 500
    """The most events a store keeps."""

    def __init__(self, log_size: int) -> None:
        self._lock = threading.Lock()
        self._log_size = log_size
        self._log_seen = -math.inf
        self._events_seen = -math.inf
        self.failures: dict[str, Failure] = {}
        self.coolings: dict[str, Cooling] = {}

    def refresh(self, client: SmartClient) -> Causes:
        """Read what was logged since the last call (the whole log the first time). Returns itself."""
        with self._lock:
            rows = _tail(client.admin.request_log, lambda r: r["at"], self._log_seen, self._log_size)
            for row in rows:
                if row["outcome"] not in (OutcomeKind.OK, OutcomeKind.REQUEST_ERROR, "abandoned"):
                    self._keep(self.failures, row["key_id"], Failure(row["at"], row["status"], row["outcome"]))
            self._log_seen = max((r["at"] for r in rows), default=self._log_seen)
            events = _tail(client.admin.events, lambda e: e.at, self._events_seen, self.EVENTS)
            for event in events:
                found = _COOLED.match(event.detail) if str(event.kind) == "cooled" else None
                if found:
                    cooling = Cooling(event.at, found["reason"], found["model"], found["duration"], found["why"] or "")
                    self._keep(self.coolings, event.key_id, cooling)
            self._events_seen = max((e.at for e in events), default=self._events_seen)
        return self

    @staticmethod
    def _keep(found: dict[str, Any], key_id: str, value: Failure | Cooling) -> None:
        old = found.get(key_id)
        if old is None or value.at >= old.at:
            found[key_id] = value

    def failure(self, key_id: str, checks: Mapping[str, Mapping[str, Any]] | None = None) -> Failure | None:
        """The key's latest failure: a logged call, or a Test from this dashboard if that came later."""
        logged = self.failures.get(key_id)
        check = (checks or {}).get(key_id)
        if check and not check.get("ok") and check.get("outcome") and check.get("at"):
            tested = Failure(float(check["at"]), check.get("status"), str(check["outcome"]))
            if logged is None or tested.at > logged.at:
                return tested
        return logged


_CAUSES: weakref.WeakKeyDictionary[SmartClient, Causes] = weakref.WeakKeyDictionary()
_CAUSES_LOCK = threading.Lock()


def causes(client: SmartClient) -> Causes:
    """The client's `Causes`, brought up to date (a couple of small reads when little happened)."""
    with _CAUSES_LOCK:
        found = _CAUSES.get(client)
        if found is None:
            found = _CAUSES[client] = Causes(client.settings.request_log_size)
    return found.refresh(client)


# --- the cause of one key, in words ---------------------------------------------------------------------------

_PARKED_WORDS = {
    "invalid_key": "invalid API key",
    "no_credits": "out of credit",
    "no_access": "no access to the model",
}
"""How the provider's refusal reads after its status code (`HTTP 401: invalid API key`), where that says more
than the state's own words (`KeyState` facts' `cause`)."""
MESSAGE_CHARS = 80
"""Of the provider's message in a Reason; the whole of it is in "Last error"."""


def _status(failure: Failure | None, state: str) -> str:
    """`HTTP 401: ` when the key's latest failure is one that puts a key in this state, else nothing."""
    known = KeyState.of(state)
    if failure is None or failure.status is None or known is None or failure.outcome not in known.facts.caused_by:
        return ""
    return f"HTTP {failure.status}: "


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _message(message: str | None, said: str) -> str:
    """`: the provider's message` when it adds to what `said` already says, shortened."""
    if not message or _words(message) <= _words(said) | {"api", "key", "the", "a", "is"}:
        return ""
    short = " ".join(message.split())
    return f" — {short[:MESSAGE_CHARS].rstrip()}…" if len(short) > MESSAGE_CHARS else f" — {short}"


def _rate_limit_text(key: KeyStatus, cooling: Cooling | None, code: str) -> str:
    why, duration = (cooling.why, cooling.duration) if cooling else ("", "")
    if why.startswith("shares a limit with"):
        return f"{why}, which was rate-limited"
    if why.endswith("on most keys at once"):
        return f"{provider_title(key.provider)} answered 429 on most keys at once: every key rests {duration}"
    if why == "per-day quota":
        return f"{code}daily limit, provider says {duration}"
    if why == "provider hint":
        return f"{code}rate limit, provider says {duration}"
    if why.startswith("no hint"):
        detail = why.removeprefix("no hint; ")
        return f"{code}rate limit without a retry hint: rests {duration} ({detail})"
    return f"{code}rate limit"


def cause_text(
    key: KeyStatus, failure: Failure | None = None, cooling: Cooling | None = None, default_model: str = ""
) -> str:
    """Why a key is out of rotation, as the provider said it: "HTTP 401: invalid API key", "HTTP 429: daily
    limit, provider says 7 min", "HTTP 503: Service Unavailable, 3 times in a row". Falls back to the state's
    words when the failure is no longer in the log. A rest for one model names it, unless it is the provider's
    `default_model` (the one the table speaks for)."""
    if key.disabled:
        return f"disabled by {key.disabled_by or 'an operator'}: out of rotation until Enable"
    state = key.reason or "manual"
    code = _status(failure, state)
    cooling = cooling if cooling is not None and cooling.reason == state else None
    model = f" (for {cooling.model})" if cooling and cooling.model and cooling.model != default_model else ""
    if cooling and cooling.why.startswith("shares an account with"):
        return f"{cooling.why}: {_PARKED_WORDS.get(state) or reason_words(state)}{model}"
    if state == "rate_limit":
        return _rate_limit_text(key, cooling, code) + model
    if state == "errors":
        streak = f", {key.consecutive_failures} times in a row" if key.consecutive_failures > 1 else ""
        return f"{code or 'error: '}{key.last_error or 'no answer'}{streak}"
    if state == "upstream":
        return f"{code}model busy upstream{model}"
    if state == "spend_cap" or (state == "no_access" and key.last_error):
        return f"{code}{reason_text(key)}{model}"
    if state in _PARKED_WORDS:
        said = _PARKED_WORDS[state]
        return f"{code}{said}{_message(key.last_error, said)}{model}"
    return reason_words(state)


# --- a provider that is failing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    """Every key of a provider that would be in rotation rests after transient errors (or the provider as a
    whole does): the provider is failing, not its keys."""

    title: str
    keys: int
    total: int
    statuses: tuple[int | None, ...]
    retry_in: float | None

    @property
    def answered(self) -> str:
        """`every key answered 503`, `all 2 keys in rotation answered 503 or 500`, `every key failed`."""
        who = "every key" if self.keys == self.total else f"all {self.keys} keys in rotation"
        codes = sorted({s for s in self.statuses if s is not None})
        if not codes:
            resting = f"{who} {'is' if self.keys == self.total else 'are'} resting after errors"
            return f"{who} failed without an answer" if self.statuses else resting
        spoken = " or ".join(str(c) for c in codes)
        return f"{who} answered {spoken}" + (" or nothing" if None in self.statuses else "")

    @property
    def headline(self) -> str:
        """`Groq is failing: every key answered 503`."""
        return f"{self.title} is failing: {self.answered}"

    def text(self) -> str:
        """`Groq is failing: every key answered 503 · retry in 40 s`."""
        wait = f" · retry in {countdown(self.retry_in)}" if self.retry_in is not None else ""
        return self.headline + wait


def outage(
    status: ProviderStatus,
    now: float,
    failures: Callable[[str], Failure | None] = lambda key_id: None,
    failed_now: Mapping[str, int | None] | None = None,
) -> Outage | None:
    """The provider's outage, if it has one: no key in rotation answers, and every key that would be (neither
    parked nor disabled) rests after errors, or failed transiently in this request (`failed_now`: key id →
    HTTP status), or the provider rests as a whole after errors. None otherwise (rate limits are not an outage,
    and keys that need a person are theirs to fix)."""
    working = [k for k in status.keys if not k.disabled and k.reason not in PERSON_STATES]
    if not working:
        return None
    failed = failed_now or {}
    paused = bool(status.paused_until and status.paused_until > now and status.pause_reason == "errors")
    resting = [k for k in working if not k.available and k.reason == "errors"]
    if not paused and len(resting) + sum(1 for k in working if k.available and k.key_id in failed) < len(working):
        return None
    codes: list[int | None] = []
    for key in working:
        if key.key_id in failed:
            codes.append(failed[key.key_id])
        elif (failure := failures(key.key_id)) is not None and failure.outcome == OutcomeKind.TRANSIENT:
            codes.append(failure.status)
    retry_in = None  # a key that failed just now but is not resting yet may be tried again at once
    if paused:
        retry_in = (status.paused_until or now) - now
    elif len(resting) == len(working):
        retry_in = min(k.cooldown_remaining for k in resting)
    return Outage(status.title, len(working), status.total, tuple(codes), retry_in)


# --- keys that free themselves, summed up ---------------------------------------------------------------------


def healing_text(states: Iterable[tuple[str, str, float | None]], now: float, clock: Callable[[float], str]) -> str:
    """The keys freeing themselves in one line: `554 keys free themselves (540 rate-limited, 14 resting after
    errors): the next, groq:17, in 12 s; all by 14:32:10`. `states`: (key id, state, seconds until free) of such
    keys; "" when there are none."""
    found = list(states)
    if not found:
        return ""
    kinds = Counter(state for _, state, _ in found)
    words = ", ".join(f"{n} {reason_words(s)}" for s, n in kinds.most_common())
    head = "1 key frees itself" if len(found) == 1 else f"{len(found)} keys free themselves"
    waits = [(seconds, key_id) for key_id, _, seconds in found if seconds is not None]
    if not waits:
        return f"{head} ({words})"
    first, last = min(waits), max(waits)
    soonest = f"the next, {first[1]}, in {countdown(first[0])}"
    every = f"; all by {clock(now + last[0])}" if len(waits) > 1 else ""
    return f"{head} ({words}): {soonest}{every}"


def sorted_ids(ids: Iterable[str]) -> list[str]:
    """Key ids in numeric order: `groq:2` before `groq:10`."""
    return sorted(ids, key=key_order)
