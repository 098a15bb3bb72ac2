"""How an answer strayed from the first choice, in words: the live trail of keys tried while a request waits
(`Trail`), and the fallback badge under the answer (`OpenRouter → Groq · 4 keys rate-limited · next frees in
9 min 58 s`), from the attempts and the key states it met.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from dashboard.text import clock_time, countdown, describe_attempt, kind_word, md_escape, provider_title
from dashboard.triage import Failure, outage
from llms import Attempt, ChatResult, KeyState, KeyStatus, OutcomeKind, ProviderStatus, SmartClient


@dataclass(frozen=True)
class Fallback:
    """Why an answer did not come from the first choice. `frees_at` is a moment, not a duration, so a redraw of
    the history counts down afresh instead of repeating the number from the time of the answer."""

    text: str
    frees_at: float | None = None

    def label(self, now: float) -> str:
        """`OpenRouter → Groq · 4 keys rate-limited · next frees in 9 min 58 s`."""
        if self.frees_at is None:
            return self.text
        if self.frees_at > now:
            return f"{self.text} · next frees in {countdown(self.frees_at - now)}"
        return f"{self.text} · next freed at {clock_time(self.frees_at)}"


def _held(reason: str | None) -> str:
    """Why a key was passed over, in the trail (`invalid`, `busy upstream`)."""
    state = KeyState.of(reason)
    return state.facts.held if state is not None else (reason or "unavailable").replace("_", " ")


def _passing(key: KeyStatus) -> bool:
    """A key that rests by itself: its countdown means something. Keys parked for the long cooldown come back
    only when a probe vouches for them, so "next frees in 24 h" would mislead."""
    state = KeyState.of(key.reason)
    return state is not None and state.facts.frees_itself


def failed_word(attempt: Attempt) -> str:
    """How a key failed, to follow a count: `rate-limited`, `invalid`, `failed (503)`."""
    if attempt.kind is OutcomeKind.TRANSIENT:
        return f"failed ({attempt.status})" if attempt.status else "not answering"
    return attempt.kind.failed or kind_word(attempt.kind, attempt.status)


def counted(words: Iterable[str]) -> str:
    """`4 keys rate-limited, 1 key invalid`: most common first."""
    return ", ".join(f"{n} key{'s' if n != 1 else ''} {word}" for word, n in Counter(words).most_common())


def fallback_of(
    result: ChatResult,
    statuses: Sequence[ProviderStatus],
    now: float,
    failures: Callable[[str], Failure | None] = lambda key_id: None,
) -> Fallback | None:
    """How an answer strayed from the first choice (None when the first key tried of the first provider answered).

    Past the first provider: `OpenRouter → Groq · 4 keys rate-limited`, counting why the passed providers' keys
    are out of rotation now (they may have been skipped without a call, being known to cool), or failed just now.
    A passed provider whose every key in rotation failed on transient errors is named instead of counted:
    `OpenRouter → Gemini · Groq is failing: every key answered 503 · 4 keys rate-limited` (`failures`: a key's
    latest failure, for the HTTP status of keys skipped without a call).
    Within the first provider: `openrouter:1 → openrouter:2 · 1 key rate-limited`, from the attempts.
    """
    order = [s for s in statuses if s.total]
    providers = [s.provider for s in order]
    if not order or result.provider not in providers:
        return None
    failing: list[str] = []
    if result.provider != providers[0]:
        passed = order[: providers.index(result.provider)]
        failed_now = {a.key_id: a.status for a in result.attempts if a.kind is OutcomeKind.TRANSIENT}
        outages = {s.provider: found for s in passed if (found := outage(s, now, failures, failed_now))}
        failing = [found.headline for found in outages.values()]
        counted_providers = [s for s in passed if s.provider not in outages]
        held = [k for s in counted_providers for k in s.keys if not k.available]
        words = [_held(k.reason) for k in held]
        pauses = [f"{s.title} paused" for s in counted_providers if s.paused_until]
        if not words and not pauses and not outages:
            skipped = [a for a in result.skipped if a.key_id.split(":")[0] != result.provider]
            words = [failed_word(a) for a in skipped]
        until = [k.cooldown_until for k in held if _passing(k)] + [s.paused_until for s in counted_providers]
        until += [now + found.retry_in for found in outages.values() if found.retry_in is not None]
        text = f"{order[0].title} → {provider_title(result.provider)}"
    elif len(result.attempts) > 1:
        skipped_ids = {a.key_id for a in result.skipped}
        keys = [k for s in order for k in s.keys if k.key_id in skipped_ids and not k.available]
        words, pauses = [failed_word(a) for a in result.skipped], []
        until = [k.cooldown_until for k in keys if _passing(k)]
        text = f"{result.attempts[0].key_id} → {result.key_id}"
    else:
        return None
    rest = ", ".join(part for part in (counted(words), *pauses) if part)
    detail = " · ".join(part for part in (*failing, rest) if part)
    if detail:
        text += f" · {detail}"
    frees_at = min((u for u in until if u and u > now and math.isfinite(u)), default=None)
    return Fallback(text, frees_at)


def trail_lines(attempts: Sequence[Attempt]) -> list[str]:
    """One line per attempt, and a line where the request moved on to the next provider."""
    lines, provider = [], None
    for attempt in attempts:
        current = attempt.key_id.split(":")[0]
        if provider is not None and current != provider:
            lines.append(f"↪ falling back to {provider_title(current)}")
        provider = current
        lines.append(
            f"✓ {attempt.key_id} answered" if attempt.kind is OutcomeKind.OK else f"✗ {describe_attempt(attempt)}"
        )
    return lines


def trail_summary(attempts: Sequence[Attempt], ok: bool) -> str:
    """The collapsed trail's label: `4 keys skipped, groq:1 answered` / `No key could answer (5 attempts)`."""
    if not ok:
        return f"No key could answer ({len(attempts)} attempt{'s' if len(attempts) != 1 else ''})"
    skipped = len(attempts) - 1
    return f"{skipped} key{'s' if skipped != 1 else ''} skipped, {attempts[-1].key_id} answered"


class Trail:
    """The live `st.status` of one request: which keys failed while the next one is tried.

    The client reports each attempt as it ends (`on_attempt`, called from the thread doing the failover); the
    script's thread redraws from what was heard while it waits for the first piece (`first_piece`). A first
    key that simply answers leaves no trail.
    """

    def __init__(self, client: SmartClient, wait: float | None = None, holder: Any = None) -> None:
        """`holder`: the `st.empty()` to draw into (the first of `answer_slots`); a new one by default."""
        self._heard: list[Attempt] = []
        self._shown = 0
        first = next((s.title for s in client.admin.provider_statuses() if s.available), None)
        if wait:
            label = f"Waiting up to {countdown(wait)} for a key to free up …"
        else:
            label = f"Trying {first} …" if first else "Looking for a key …"
        self._holder = holder if holder is not None else st.empty()
        self._status = self._holder.status(md_escape(label), expanded=True)
        self._box = self._status.empty()

    def record(self, attempt: Attempt) -> None:
        """The client's `on_attempt`: only appends (the list is read by the script's thread)."""
        self._heard.append(attempt)

    def poll(self) -> None:
        """Redraw when failures were heard since the last look, and say which key is being tried next."""
        failed = [a for a in self._heard if a.kind is not OutcomeKind.OK]
        if len(failed) == self._shown:
            return
        self._shown = len(failed)
        self._box.markdown("  \n".join(md_escape(line) for line in trail_lines(failed)))
        self._status.update(label=md_escape(f"{describe_attempt(failed[-1])} — trying the next key …"))

    def finish(self, attempts: Sequence[Attempt], ok: bool) -> None:
        """Collapse to a one-line summary over the request's own attempts, or vanish if the first key answered."""
        if not attempts or (ok and len(attempts) == 1):
            self._holder.empty()
            return
        self._box.markdown("  \n".join(md_escape(line) for line in trail_lines(attempts)))
        state = "complete" if ok else "error"
        self._status.update(label=md_escape(trail_summary(attempts, ok)), state=state, expanded=False)
