"""Wording shared by the pages: provider names, durations, the answer caption, error messages.

Pure functions of library values, so the exact text operators read (and tests assert on) lives in one place.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from llms import (
    AllKeysExhaustedError,
    Attempt,
    ChatResult,
    KeyState,
    KeyStatus,
    Outcome,
    OutcomeKind,
    ProviderStatus,
    client_time,
)
from llms.providers import PROVIDERS

_MARKDOWN = re.compile(r"([\\`*_\[\]<>$~|])")
MAX_SKIPS_SHOWN = 4


_TARGET = r"\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)"
_INLINE_IMAGE = re.compile(r"!\[([^\]\n]*)\]" + _TARGET)
_INLINE_LINK = re.compile(r"\[([^\]\n]*)\]" + _TARGET)
_DEFINITION = re.compile(r"^( {0,3})\[(?=[^\]\n]+\]:)", re.MULTILINE)


def safe_markdown(text: str) -> str:
    """Markdown from a model or a provider, made unable to fetch or hide anything: no image is ever loaded (a
    tracking pixel costs nothing to send), and every link shows its target as text beside its label. Reference
    definitions are escaped, so `[label][ref]` links cannot resolve to a hidden target either."""
    text = _DEFINITION.sub(lambda m: m.group(1) + "\\[", text)
    text = _INLINE_IMAGE.sub(lambda m: f"\\[image: {m.group(1) or 'untitled'}\\] ({m.group(2)})", text)
    text = text.replace("![", "!\\[")
    return _INLINE_LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(2) else m.group(1), text)


def provider_title(provider: str) -> str:
    spec = PROVIDERS.get(provider)
    return spec.title if spec else provider.title()


def reason_words(reason: str) -> str:
    """A cooldown reason in words ("rate-limited", "spend cap"); a state this version does not know, as stored."""
    state = KeyState.of(reason)
    return state.facts.cause if state is not None else reason.replace("_", " ")


def reason_text(key: KeyStatus) -> str:
    """Why a key is out of rotation, as an operator reads it: "Groq spend cap — until 1 Dec",
    "no quota for gemini-2.5-pro in this project", "rate-limited"."""
    reason = key.reason or ""
    words = reason_words(reason)
    if reason == "spend_cap" and key.cooldown_until:
        return f"{provider_title(key.provider)} spend cap — until {utc_day(key.cooldown_until)}"
    if reason == "no_access" and key.last_error:
        return key.last_error.split(":", 1)[0]
    if reason in ("invalid_key", "no_credits") and key.last_error:
        return f"{words}: {key.last_error}"
    return words


STATE_LABELS: dict[str, str] = {state.value: state.facts.label for state in KeyState}
"""Each key state as the status table shows it (`KeyState`'s facts): words, never internal names, each state its
own, so a revoked key never reads like a rate limit. No emoji: a machine without an emoji font draws those as
boxes. The table draws each as a pill of its colour, so the words carry the state and the colour helps."""

STATE_COLORS: dict[str, str] = {state.value: state.facts.color for state in KeyState}
"""The pill colour of each state: green available, warm (amber, yellow, orange) or blue for keys that free
themselves, red, purple and brown for keys that need a person, grey for keys switched off."""


def state_label(state: str) -> str:
    known = KeyState.of(state)
    return known.facts.label if known is not None else state.replace("_", " ")


def check_text(result: Mapping[str, Any]) -> str:
    """A background check's result for the "Last check" column: `OK · 12:03:04`, `failed: invalid key (HTTP 401)
    · 12:03:05` (words, not emoji, which a machine without an emoji font draws as boxes)."""
    when = clock_time(result["at"]) if result.get("at") else ""
    if result.get("ok"):
        return f"OK · {when}"
    kind = result.get("outcome")
    if kind is None:
        return f"failed: {result.get('verdict', 'no verdict')} · {when}"
    code = result.get("status")
    status = f" (HTTP {code})" if code and kind != OutcomeKind.TRANSIENT else ""  # transient words name it
    return f"failed: {kind_word(kind, code)}{status} · {when}"


def pause_text(status: ProviderStatus, now: float) -> str:
    """A provider resting as a whole: "OpenRouter model busy upstream — back in 8 s"."""
    reason = KeyState.of(status.pause_reason)
    words = reason.facts.cause if reason is not None else "paused"
    return f"{status.title} {words} — back in {countdown((status.paused_until or now) - now)}"


def utc_day(at: float) -> str:
    """`1 Dec`: the day a spend cap lifts (caps reset at midnight UTC on the 1st). Read to the nearest minute: a
    rest counts from when its request was sent, a round trip before midnight, which read "until 30 Nov"."""
    moment = datetime.fromtimestamp(round(at / 60) * 60, UTC)
    return f"{moment.day} {moment:%b}"


def md_escape(text: str) -> str:
    """Captions render Markdown: keep `gsk_…` hints and model names literal (and `$` from turning into LaTeX)."""
    return _MARKDOWN.sub(r"\\\1", text)


def countdown(seconds: float) -> str:
    """A cooldown as operators read it: `42 s`, `12 min 05 s`, `23 h 59 min`. Rounds up, so never `0 s` early."""
    if not math.isfinite(seconds):
        return "never" if seconds > 0 else "0 s"
    total = max(0, math.ceil(seconds))
    if total < 100:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"


def clock_time(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S")


def kind_word(kind: str, status: int | None = None) -> str:
    if kind == OutcomeKind.TRANSIENT:
        return f"error {status}" if status else "no answer"
    try:
        return OutcomeKind(kind).word
    except ValueError:  # an outcome this version does not know, as stored
        return str(kind)


def describe_attempt(attempt: Attempt) -> str:
    return f"{attempt.key_id} {kind_word(attempt.kind, attempt.status)}"


def skipped_text(attempts: Sequence[Attempt]) -> str:
    """`skipped openrouter:1 rate-limited, openrouter:2 invalid key` ("" when nothing was skipped)."""
    if not attempts:
        return ""
    shown = ", ".join(describe_attempt(a) for a in attempts[:MAX_SKIPS_SHOWN])
    more = len(attempts) - MAX_SKIPS_SHOWN
    return "skipped " + shown + (f" and {more} more" if more > 0 else "")


def answer_caption(result: ChatResult) -> str:
    """`groq · openai/gpt-oss-20b · groq:2 (gsk_…9f3a) · 0.8 s · skipped openrouter:1 rate-limited`."""
    parts = [result.provider, result.model, f"{result.key_id} ({result.key_hint})", f"{result.latency_s:.1f} s"]
    skipped = skipped_text(result.skipped)
    if skipped:
        parts.append(skipped)
    return " · ".join(parts)


def exhausted_message(error: AllKeysExhaustedError, now: float | None = None) -> str:
    """Every key is cooling: say when the first one frees up instead of showing a traceback."""
    if error.retry_in is None:
        return (
            "No API key could answer, and none is scheduled to free up by itself. "
            "Check the Status page for invalid keys or repeated errors."
        )
    if error.next_key_id is None:
        return (
            "Every key failed this request, but none is cooling: they can be tried again now. "
            "The Status page shows their last errors."
        )
    at = (client_time() if now is None else now) + error.retry_in
    return (
        f"All API keys are cooling down right now. The next one, {error.next_key_id}, frees up in "
        f"{countdown(error.retry_in)} (at {clock_time(at)}). Try again then, or reset keys on the Status page."
    )


def verdict(key_id: str, outcome: Outcome) -> str:
    """A key check's result in one line, for a toast."""
    if outcome.kind == OutcomeKind.OK:
        return f"{key_id}: OK, the key works"
    status = f" (HTTP {outcome.status})" if outcome.status else ""
    wait = f", retry in {countdown(outcome.retry_after)}" if outcome.retry_after else ""
    message = f": {outcome.message}" if outcome.message else ""
    return f"{key_id}: {outcome.kind.word}{status}{wait}{message}"
