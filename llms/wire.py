"""Reading answers the way every provider writes them: durations, `Retry-After`, error bodies, calendars.

Pure functions with no provider knowledge; the provider modules (`llms.providers.*`) combine them with their
own facts. `classify_common` is the status-code ladder all three providers share; each provider module handles
its own special cases first and hands the rest to it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any

from llms.cooldown import ROUND_LENGTHS
from llms.outcomes import Outcome, OutcomeKind, rejected, transient

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s))+$")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_MESSAGE_HINT = re.compile(
    r"(?:try again|retry)\s+(?:in|after)\s+"
    r"((?:\d+(?:\.\d+)?(?:ms|h|m|s)\s?)+(?![a-z])|\d+(?:\.\d+)?\s*(?:seconds?|secs?|minutes?|mins?))",
    re.I,
)
_WORD_UNITS = {"second": 1.0, "sec": 1.0, "minute": 60.0, "min": 60.0}

RATE_WORDS = re.compile(r"rate.?limit|quota|too many requests|resource.?exhausted", re.I)
TOKEN_LIMIT_WORDS = re.compile(r"\btokens? per min|\bTPM\b|token rate limit|\btokens?_quota", re.I)
"""A 429 of a limit on tokens, in its words: OpenAI's and Groq's "… on tokens per min (TPM): Limit 30000, …"
(`type: tokens`), Azure's "… have exceeded token rate limit of your current … pricing tier", Cerebras'
`token_quota_exceeded` (README, provider facts)."""
CONTEXT_WORDS = re.compile(
    r"context.?length|context window|maximum context|too many tokens|exceeds the maximum number of tokens"
    r"|payload size exceeds|request too large|reduce (the length|your message)",
    re.I,
)
MODERATION_WORDS = re.compile(r"moderation|flagged|safety|guardrail", re.I)
KEY_WORDS = re.compile(r"api.?key|user not found|unauthori[sz]ed|authenticat", re.I)
CAPABILITY_WORDS = re.compile(
    r"support(s|ed)? tool use|support the provided 'tool_choice'|does not support (tools|tool|function|response format)"
    r"|(function calling|json mode) is not (enabled|supported)|function calling with a response mime type"
    r"|tool choice requires",
    re.I,
)
"""A model that cannot take the request's tools or JSON output (OpenRouter 404 "No endpoints found that support
tool use", Groq 400 "This model does not support response format `json_schema`", Gemini 400 "Function calling is
not enabled for models/gemma-…", Ollama "… does not support tools", vLLM "auto tool choice requires …"): the
request's problem with that model only; another model may take it."""


def parse_duration(text: str) -> float | None:
    """Go-style durations as Groq and Gemini send them (`2m59.56s`, `7.66s`, `840ms`, `6m 11.52s`), bare seconds,
    and `30 seconds` / `2 minutes`."""
    text = text.strip().replace(" ", "").lower()
    if not text:
        return None
    if _DURATION.match(text):
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    words = re.fullmatch(r"(\d+(?:\.\d+)?)(seconds?|secs?|minutes?|mins?)", text)
    if words:
        return float(words.group(1)) * _WORD_UNITS[words.group(2).rstrip("s")]
    return _number(text)


def _number(raw: Any) -> float | None:
    """A finite number of zero or more, as a header or a body field gives it (None: anything else)."""
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def message_hint(message: str) -> float | None:
    """`Please try again in 7.66s` / `Please retry in 51.2s` / `retry after 30 seconds` → seconds."""
    match = _MESSAGE_HINT.search(message)
    return parse_duration(match.group(1)) if match else None


_SAME_WAIT = 1.25
"""Seconds apart two hints may be and still name one wait (a whole second of rounding, and some latency)."""


def most_precise(*hints: float | None) -> float | None:
    """The first hint given, in the caller's order of authority — unless it is whole seconds and another hint says
    the same to a fraction: HTTP's `Retry-After` carries no fraction, so `Retry-After: 3` beside an
    `X-RateLimit-Reset` 2.41 s away (or Gemini's `RetryInfo` "51s" beside "Please retry in 51.6s") means the finer
    one. Resting the rounded-up value leaves quota unused every window; the rounded-down one earns a 429. "The
    same" allows for `first` rounded either way and for the finer one read a fraction of a round trip apart."""
    given = [h for h in hints if h is not None]
    if not given:
        return None
    first = given[0]
    if float(first).is_integer():
        finer = [h for h in given[1:] if abs(h - first) <= _SAME_WAIT and not float(h).is_integer()]
        if finer:
            return finer[0]
    return first


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def retry_after_header(headers: Mapping[str, str], now: float) -> float | None:
    """`Retry-After` as seconds or as an HTTP date (headers already lower-cased)."""
    raw = headers.get("retry-after", "").strip()
    if not raw:
        return None
    value = parse_duration(raw)
    if value is not None:
        return value
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def epoch_grid(raw: Any) -> float | None:
    """The longest of the window lengths providers use (`llms.cooldown.ROUND_LENGTHS`) on whose grid an epoch reset
    given in milliseconds lies, where it lies on a whole second (None: not milliseconds, or not a whole second). A
    window on the clock turns on the multiples of its length and names that turn (OpenRouter's per-minute free limit
    resets on the minute: `X-RateLimit-Reset: 1765680060000` in the answers users posted), where a sliding log's
    oldest request frees at any millisecond."""
    value = _number(raw)
    if value is None or value <= 1e11 or value % 1000:
        return None
    return moment_grid(round(value / 1000), within=0.0)


MOMENT_SPREAD = 0.02
"""Seconds a moment read from a duration may lie off a round one and still count as on it: the provider read its
limit somewhere within the request's trip (taken at its middle), and durations come rounded to the centisecond."""


def moment_grid(moment: float, within: float = MOMENT_SPREAD) -> float | None:
    """`epoch_grid` for a wait given as a duration (Groq's "try again in 7.66s", Gemini's `RetryInfo`): the longest
    of the window lengths providers use on whose grid the moment the wait ends lies, read on the provider's clock,
    within `within` seconds (None: on none). A window on the clock ends on its grid; a sliding log's oldest request
    frees anywhere, one moment in 25 this near a whole second, so the counts decide (`SlotLog._on_grid`)."""
    return next(
        (length for length in reversed(ROUND_LENGTHS) if abs(moment - round(moment / length) * length) <= within),
        None,
    )


def epoch_reset(raw: Any, now: float) -> float | None:
    """A reset given as an epoch (milliseconds, as OpenRouter sends, or seconds) or as seconds from now."""
    value = _number(raw)
    if value is None:
        return None
    if value > 1e11:
        return max(0.0, value / 1000.0 - now)
    if value > 1e9:
        return max(0.0, value - now)
    return value


# --- error bodies --------------------------------------------------------------------------------------------


def error_object(body: Any) -> dict[str, Any]:
    """The `error` object of an OpenAI- or Google-style error body (Google streams it inside a list)."""
    if isinstance(body, list) and body:
        body = body[0]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    return {}


def error_metadata(body: Any) -> dict[str, Any]:
    meta = error_object(body).get("metadata")
    return meta if isinstance(meta, dict) else {}


def error_message(body: Any) -> str:
    """The human part of an error body, whichever provider shape it has, shortened."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = str(err.get("message") or "")
            raw = error_metadata(body).get("raw")
            return snippet(f"{msg} ({raw})" if raw and str(raw) not in msg else msg)
        if isinstance(err, str):
            return snippet(err)
        return snippet(str(body.get("message") or ""))
    if isinstance(body, list) and body:
        return error_message(body[0])
    return snippet(body) if body else ""


def snippet(value: Any, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_of(code: Any) -> int | None:
    """An error's `code` as an HTTP status: a number, or a string of digits (OpenRouter sends both)."""
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip().isdigit():
        return int(code.strip())
    return None


# --- calendars -----------------------------------------------------------------------------------------------


def seconds_until_midnight(zone: tzinfo, now: float) -> float:
    """Per-day quotas reset at midnight in the provider's zone."""
    local = datetime.fromtimestamp(now, zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return max(1.0, midnight.timestamp() - now)


def seconds_until_next_month(zone: tzinfo, now: float) -> float:
    """Monthly spend limits reset on the 1st at midnight."""
    local = datetime.fromtimestamp(now, zone)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return max(1.0, datetime(year, month, 1, tzinfo=zone).timestamp() - now)


# --- the shared status-code ladder ---------------------------------------------------------------------------


def classify_common(status: int, message: str, hint: float | None) -> Outcome:
    """What a status code means when the provider module has no more specific rule for the answer."""
    if status == 429 or (400 <= status < 500 and RATE_WORDS.search(message) and not CONTEXT_WORDS.search(message)):
        on_tokens = bool(TOKEN_LIMIT_WORDS.search(message))
        return Outcome(OutcomeKind.RATE_LIMIT, status, message, retry_after=hint, on_tokens=on_tokens)
    if status == 401:
        return Outcome(OutcomeKind.INVALID_KEY, status, message)
    if status == 402:
        return Outcome(OutcomeKind.NO_CREDITS, status, message)
    if status in (400, 404, 422) and CAPABILITY_WORDS.search(message):
        return rejected(message, status)  # not the model's configuration: other requests still fit it
    if status == 413 or (status == 400 and (CONTEXT_WORDS.search(message) or MODERATION_WORDS.search(message))):
        return rejected(message, status)
    if status == 403:
        if MODERATION_WORDS.search(message):
            return rejected(message, status)
        return Outcome(OutcomeKind.INVALID_KEY, status, message)
    if status == 404:
        return rejected(message, status, config=True)
    if status == 400 and KEY_WORDS.search(message):
        return Outcome(OutcomeKind.INVALID_KEY, status, message)
    if status in (400, 405, 415, 422):
        return rejected(message, status, elsewhere=False)
    return transient(message or f"HTTP {status}", status)
