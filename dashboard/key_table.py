"""The status page's key table, one entry a column: how each column is drawn, what it holds for a row, its dtype.

A column is one `Column` in `COLUMNS` (the order is the table's), so adding one is one entry here when the value is
on `KeyStatus` (see docs/architecture.md). Which rows are shown, and why a key is down, are `dashboard.status`'s;
this module only lays the rows it is given out as a frame, so the cost of a refresh follows the rows shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.status import Row, frees_in, reason
from dashboard.text import STATE_COLORS, STATE_LABELS, check_text, countdown, reason_words, state_label
from dashboard.triage import Causes
from llms import KeyStatus

REASON_WIDTH = 380
STATE_OPTIONS = list(STATE_LABELS.values())


@dataclass(frozen=True)
class Shown:
    """One row of the key table as its columns read it: the row, and what the page knows beside it."""

    row: Row
    now: float
    frees_in: float | None
    check: Mapping[str, Any] | None  # the latest Test of this key from this dashboard
    reason: str

    @property
    def key(self) -> KeyStatus:
        return self.row.key


@dataclass(frozen=True)
class Column:
    """One column of the key table, in one place: how it is drawn (a `st.column_config`), what it holds for a row,
    and its dtype where pandas would guess wrong (a number column that may be empty, a time)."""

    config: Any
    value: Callable[[Shown], Any]
    dtype: str | None = None


def resting_models_text(key: KeyStatus) -> str:
    """`openai/gpt-oss-120b (rate-limited, 42 s)` for each model the key rests for."""
    return ", ".join(
        f"{model} ({reason_words(rest['reason'])}, {countdown(rest['remaining'])})"
        for model, rest in key.models.items()
    )


def backoff_text(key: KeyStatus) -> str:
    parts = [f"step {key.backoff_step}"] if key.backoff_step else []
    if key.learned_rest:
        parts.append(f"learned {countdown(key.learned_rest)}")
    return " · ".join(parts)


_TEXT, _NUMBER, _TIME = st.column_config.TextColumn, st.column_config.NumberColumn, st.column_config.DatetimeColumn
COLUMNS: dict[str, Column] = {
    "Key": Column(_TEXT("Key", pinned=True), lambda s: s.key.key_id),
    "State": Column(
        st.column_config.MultiselectColumn(
            "State",
            options=STATE_OPTIONS,
            color=[STATE_COLORS[state] for state in STATE_LABELS],
            help="Each state in its own words and colour: a revoked key never reads like a rate limit.",
        ),
        lambda s: [state_label(s.row.state)],
    ),
    "Reason": Column(
        _TEXT(
            "Reason", width=REASON_WIDTH, help="Why the key is down, as the provider answered (HTTP status and cause)."
        ),
        lambda s: s.reason,
    ),
    "Frees in": Column(
        _NUMBER(
            "Frees in",
            format="%d s",
            help="Seconds until the key is back in rotation (sorts numerically). Empty for keys that need a person.",
        ),
        lambda s: s.frees_in,
        "float64",
    ),
    "Frees at": Column(
        _TIME("Frees at", format="D MMM HH:mm:ss", width=120),
        lambda s: _when(s.now + s.frees_in) if s.frees_in else None,
        "datetime64[ns]",
    ),
    "Left today": Column(
        _NUMBER(
            "Left today",
            format="%d",
            help="Requests left today: the provider's count, a probe's, or a configured limit.",
        ),
        lambda s: s.key.quota.today_left,
        "float64",
    ),
    "Left in window": Column(
        _NUMBER(
            "Left in window", format="%d", help="Requests left in the current window: reported, or learned from 429s."
        ),
        lambda s: s.key.quota.window_left,
        "float64",
    ),
    "Tokens left": Column(
        _NUMBER(
            "Tokens left",
            format="%d",
            help="Tokens left in the provider's window of tokens, as its latest answer said (OpenAI's, Groq's minute).",
        ),
        lambda s: s.key.quota.tokens_left,
        "float64",
    ),
    "Provider": Column(_TEXT("Provider", width="small"), lambda s: s.key.provider),
    "Hint": Column(_TEXT("Hint", help="First and last four characters; the key is never shown."), lambda s: s.key.hint),
    "Models resting": Column(
        _TEXT(
            "Models resting",
            help="Models this key rests for while it answers others: the provider counts these limits per model.",
        ),
        lambda s: resting_models_text(s.key),
    ),
    "Last check": Column(
        _TEXT("Last check", help="The latest Test of this key from this dashboard."),
        lambda s: check_text(s.check) if s.check else "",
    ),
    "Group": Column(
        _TEXT("Group", help="Keys of one account share one rate limit (…_API_KEY_N_GROUP)."),
        lambda s: s.key.group or "",
    ),
    "Streak": Column(
        _NUMBER("Streak", help="Consecutive failures (cooling at the threshold)."), lambda s: s.key.consecutive_failures
    ),
    "Successes": Column(
        _NUMBER("OK", help="Successful requests recorded in the state store."), lambda s: s.key.successes
    ),
    "Failures": Column(
        _NUMBER("Failed", help="Failed requests recorded in the state store."), lambda s: s.key.failures
    ),
    "Backoff": Column(
        _TEXT(
            "Backoff",
            help="Adaptive rest after 429s without a hint: current step, and the rest that worked last time.",
        ),
        lambda s: backoff_text(s.key),
    ),
    "Last used": Column(_TIME("Last used", format="HH:mm:ss"), lambda s: _when(s.key.last_used), "datetime64[ns]"),
    "Last error": Column(_TEXT("Last error", width="large"), lambda s: s.key.last_error or ""),
}
"""The key table, one entry a column (the order is the table's): Key, State, Reason and the countdown first, so
why a key is down reads without scrolling sideways at 1400 px."""
KEY_COLUMNS: dict[str, Any] = {name: column.config for name, column in COLUMNS.items()}
"""What `st.dataframe(column_config=...)` takes."""


def key_frame(
    rows: Sequence[Row],
    now: float,
    checks: Mapping[str, Mapping[str, Any]] | None = None,
    pauses: Mapping[str, str] | None = None,
    causes: Causes | None = None,
) -> pd.DataFrame:
    """The key table for the rows shown (only those: the cost of a refresh follows the filter, not the fleet).
    `causes`: what the keys' providers answered, for the Reason (without it, the state's words)."""
    results = checks or {}
    shown = [
        Shown(row, now, frees_in(row), results.get(row.key.key_id), reason(row, pauses or {}, causes, results))
        for row in rows
    ]
    records = [{name: column.value(one) for name, column in COLUMNS.items()} for one in shown]
    frame = pd.DataFrame(records, columns=list(COLUMNS))
    return frame.astype({name: column.dtype for name, column in COLUMNS.items() if column.dtype})


# --- charts and events ------------------------------------------------------------------------------------------


def _when(at: float | None) -> datetime | None:
    return datetime.fromtimestamp(at) if at else None
