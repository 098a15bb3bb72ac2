"""The status page's data, as plain functions: provider summaries, the one key table (filtered and searched),
events and charts of fixed size. What the buttons do is `dashboard.key_actions`; which rows are ticked,
`dashboard.table_selection`.

Problems first: the table opens on the keys that need a person (revoked, out of credit, spend cap, no access,
disabled), and the keys that free themselves within minutes are one line above it, counted with their next free
time (`dashboard.triage`); every state has its own words and colour so a revoked key never reads like a rate
limit, and the Reason says what the provider answered. Everything is read through `SmartClient`'s public methods; only
`key_id` and `hint` ever identify a key. Nothing here draws: the page (`pages/status.py`) does, so the cost of
a refresh is the cost of these functions on the rows shown, and tests call them directly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from config.api_keys import key_order
from dashboard.text import (
    clock_time,
    countdown,
    md_escape,
    pause_text,
)
from dashboard.triage import (
    FREES_ITSELF,
    NEEDS_PERSON,
    Causes,
    Outage,
    cause_text,
    healing_text,
    outage,
    triage,
    urgency,
)
from llms import PARKED_REASONS, KeyState, KeyStatus, ProviderStatus, SmartClient, StoreHealth
from llms.key_status import state_of
from llms.state import describe as describe_store

REFRESH_SECONDS = 2
"""How often the live part reruns: countdowns move visibly, and an open tab stays cheap at hundreds of keys."""
ACTIVITY_REFRESH_SECONDS = 10
"""Events and request charts change slowly; they rerun less often than the table."""
TOP_KEYS = 15
"""Bars per provider chart: the busiest keys, so the chart stays readable at 10,000 keys."""
CHART_HEIGHT = 360
"""Fixed chart height in pixels, whatever the number of keys."""

NEEDS_ATTENTION = "Needs a person"
SELF_HEALING = "Frees itself"
ALL = "All"
FILTERS: dict[str, frozenset[str] | None] = {
    NEEDS_ATTENTION: None,  # triage: revoked, out of credit, spend cap, no access, parked or disabled by hand
    SELF_HEALING: None,  # triage: rate-limited, resting after errors, busy upstream, provider paused
    ALL: None,
} | {
    pill: frozenset(state.value for state in KeyState if state.facts.filter == pill)
    for pill in dict.fromkeys(state.facts.filter for state in KeyState)
}
"""The table's state filter. The default shows the keys that need a person: at 1,000 keys most keys out of
rotation are rate-limited and back within minutes, and listing them first buried the revoked ones."""
_TRIAGED = {NEEDS_ATTENTION: NEEDS_PERSON, SELF_HEALING: FREES_ITSELF}
"""Pixels: with Key, State and the countdown it fits the main column at 1400 px with the sidebar open."""


def category(state: str) -> str:
    """available / cooling / parked / disabled, for the per-provider counts."""
    if state in ("available", "disabled"):
        return state
    return "parked" if state in PARKED_REASONS else "cooling"


# --- per-provider summary ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderSummary:
    """One provider in one line: counts per category, the provider-wide pause, and the next key to free."""

    provider: str
    title: str
    model: str
    problem: str | None
    total: int
    available: int
    cooling: int
    parked: int
    disabled: int
    pause: str | None
    next_key: str | None
    next_in: float | None
    daily: str | None = None
    """Requests left today of the daily limit the provider reports (OpenRouter's `:free` requests, read by
    probes), e.g. "38/50 free-model requests left today"; None when it reports none."""
    outage: Outage | None = None
    """Every key in rotation rests after transient errors: the provider is failing (named, not counted)."""
    forecast: str | None = None
    """Requests left today and, at the last hour's pace, when they run out and when they free (`forecast_text`)."""

    @property
    def note(self) -> str:
        """The outage's retry time, or the pause, else when the next key frees up, else why nothing will."""
        if not self.total:
            return "No keys configured."
        if self.outage is not None:
            return f"retry in {countdown(self.outage.retry_in)}" if self.outage.retry_in is not None else "retrying"
        if self.pause:
            return f"Paused: {self.pause}"
        if self.next_key is not None and self.next_in is not None:
            return f"{self.next_key} frees in {countdown(self.next_in)}"
        if self.available == self.total:
            return "All keys ready."
        return "Nothing frees up by itself: disabled keys wait for Enable."


def summarize(status: ProviderStatus, now: float, causes: Causes | None = None) -> ProviderSummary:
    """The provider in one line; `causes` (the HTTP statuses keys answered) lets an outage say what it is."""
    paused = bool(status.paused_until and status.paused_until > now)
    counts: dict[str, int] = defaultdict(int)
    for key in status.keys:
        counts[category(state_of(key, paused))] += 1
    waiting = [k for k in status.keys if not k.available and not k.disabled]
    soonest = min(waiting, key=lambda k: k.cooldown_remaining) if waiting else None
    return ProviderSummary(
        provider=status.provider,
        title=status.title,
        model=status.model,
        problem=status.problem,
        total=status.total,
        available=counts["available"],
        cooling=counts["cooling"],
        parked=counts["parked"],
        disabled=counts["disabled"],
        pause=pause_text(status, now) if paused else None,
        next_key=soonest.key_id if soonest else None,
        next_in=soonest.cooldown_remaining if soonest else None,
        daily=_daily_text(status.daily_requests),
        outage=outage(status, now, causes.failure if causes is not None else lambda key_id: None),
        forecast=forecast_text(status, now),
    )


def forecast_text(status: ProviderStatus, now: float) -> str | None:
    """`1,240 requests left today · at the last hour's pace they run out at 14:20:00 · they free at 00:00:00`:
    where the keys' quota for the day is known."""
    left, runs_out, frees = status.forecast.today_left, status.forecast.runs_out_in, status.forecast.frees_in
    if left is None:
        return None
    parts = [f"{left:,} requests left today"]
    if runs_out is not None and (frees is None or runs_out < frees):
        parts.append(f"at the last hour's pace they run out at {clock_time(now + runs_out)}")
    if frees is not None:
        parts.append(f"they free at {clock_time(now + frees)}")
    return " · ".join(parts)


def _daily_text(daily: dict[str, int] | None) -> str | None:
    if not daily:
        return None
    accounts = f" ({daily['accounts']} accounts)" if daily.get("accounts", 1) > 1 else ""
    return f"{daily['remaining']}/{daily['limit']} free-model requests left today{accounts}"


def summary_table(summaries: Sequence[ProviderSummary]) -> str:
    """Every provider as one row of one Markdown table: a single cheap element per refresh. Three columns, and
    only the states some key is in, so it fits a phone without scrolling sideways. Marks are Material icons
    (served by the app), never emoji; a failing provider is named in red rather than counted."""
    lines = ["| Provider | Keys | Next |", "|---|---|---|"]
    for s in summaries:
        if not s.total:
            lines.append(f"| **{md_escape(s.title)}** | — | {md_escape(s.note)} |")
            continue
        counts = [f":material/check_circle: {s.available}/{s.total} available"]
        if s.outage is not None:
            counts.insert(0, f":red[:material/cloud_off: **failing**: {md_escape(s.outage.answered)}]")
        counts += [f"{mark} {n} {word}" for mark, n, word in _counted(s) if n]
        counts += [f"📅 {s.daily}"] if s.daily else []
        ahead = f" · :material/hourglass_bottom: {md_escape(s.forecast)}" if s.forecast else ""
        lines.append(f"| **{md_escape(s.title)}** | {' · '.join(counts)} | {md_escape(s.note)}{ahead} |")
    return "\n".join(lines)


def _counted(s: ProviderSummary) -> tuple[tuple[str, int, str], ...]:
    return (
        (":material/schedule:", s.cooling, "cooling"),
        (":material/report:", s.parked, "parked"),
        (":material/block:", s.disabled, "disabled"),
    )


def triage_text(rows: Sequence[Row], now: float) -> str:
    """The table's headline, in Markdown: `**69 need a person** · 554 free themselves (540 rate-limited, …): the
    next, groq:17, in 12 s; all by 14:32:10 · 377 available`."""
    kinds = defaultdict(int)
    healing = []
    for row in rows:
        kind = triage(row.state)
        kinds[kind] += 1
        if kind == FREES_ITSELF:
            healing.append((row.key.key_id, row.state, frees_in(row)))
    person = kinds[NEEDS_PERSON]
    parts = [
        f":red[:material/build: **{person} key{'' if person == 1 else 's'} need{'s' if person == 1 else ''} a person**]"
        if person
        else ":material/build: no key needs a person"
    ]
    if healing:
        parts.append(f":orange[:material/schedule: {md_escape(healing_text(healing, now, clock_time))}]")
    parts.append(f":green[:material/check_circle: {kinds['available']} available]")
    return " · ".join(parts)


def models_text(summaries: Sequence[ProviderSummary]) -> str:
    return "Models: " + " · ".join(f"{md_escape(s.title)} `{s.model}`" for s in summaries if s.total)


def store_text(store: StoreHealth) -> str:
    where = describe_store(store)  # each backend says where it keeps state (llms.state's registry)
    if not store.healthy:
        return f"Key state is kept {where} — **{store.detail}**"
    return f"Key state is kept {where}" + (f" ({store.detail})." if store.detail else ".")


# --- the key table ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One key with what the table needs to know about its provider at this moment."""

    key: KeyStatus
    state: str
    pause_left: float | None  # seconds the provider still rests, for keys that are only waiting on that
    model: str = ""  # the provider's default model, which the key's state speaks for


def rows_of(statuses: Iterable[ProviderStatus], now: float) -> list[Row]:
    """Every key, keys needing a person first, then disabled keys, keys freeing themselves and available keys,
    each in configuration order: whatever the filter, what a person must fix is at the top."""
    rows = []
    for status in statuses:
        paused = bool(status.paused_until and status.paused_until > now)
        left = (status.paused_until or now) - now if paused else None
        rows.extend(Row(k, state_of(k, paused), left, status.model) for k in status.keys)
    return sorted(rows, key=lambda row: urgency(row.state))


def wanted(row: Row, choice: str | None, needle: str) -> bool:
    """Whether the state filter and the search (key id, hint or group, any case) let this row through."""
    if choice in _TRIAGED and triage(row.state) != _TRIAGED[choice]:
        return False
    states = FILTERS.get(choice or ALL)
    if states is not None and row.state not in states:
        return False
    if not needle:
        return True
    key = row.key
    return any(needle in (text or "").lower() for text in (key.key_id, key.hint, key.group))


def shown_rows(rows: Sequence[Row], choice: str | None, search: str, keep: Iterable[str] = ()) -> list[Row]:
    """The rows the filter and search let through, plus the selected ones (`keep`), in configuration order:
    a selected key never vanishes from under the operator's cursor because it recovered or the filter changed."""
    needle = search.strip().lower()
    kept = set(keep)
    return [r for r in rows if r.key.key_id in kept or wanted(r, choice, needle)]


def empty_text(choice: str | None, search: str) -> str:
    """What the page says instead of an empty table (a grid without rows draws a highlighted phantom row)."""
    if search.strip():
        return f"No key matches “{search.strip()}” here."
    if choice == NEEDS_ATTENTION:
        return "No key needs a person."
    if choice == SELF_HEALING:
        return "No key is resting: none is waiting to free itself."
    return "No key is in this state."


def frees_in(row: Row) -> float | None:
    """Whole seconds until the key is back in rotation; None when it is available or needs a person (a revoked
    key's 24 h rest is when the client tries it again, not when it works: "Frees in 86369 s" misled)."""
    if triage(row.state) == NEEDS_PERSON:
        return None
    if row.state == "paused":
        return float(math.ceil(row.pause_left or 0.0))
    if not row.key.available and math.isfinite(row.key.cooldown_remaining):
        return float(math.ceil(row.key.cooldown_remaining))
    return None


def reason(
    row: Row, pauses: Mapping[str, str], causes: Causes | None = None, checks: Mapping[str, Any] | None = None
) -> str:
    """Why the key is down, as the provider said it (see `triage.cause_text`); "" for an available key."""
    if row.state == "available":
        return ""
    if row.state == "paused":
        return pauses.get(row.key.provider, "provider paused")
    if causes is None:
        return cause_text(row.key)
    key_id = row.key.key_id
    return cause_text(row.key, causes.failure(key_id, checks), causes.coolings.get(key_id), row.model)


EVENT_COLUMNS: dict[str, Any] = {
    "Time": st.column_config.DatetimeColumn("Time", format="HH:mm:ss"),
    "Key": st.column_config.TextColumn("Key"),
    "Event": st.column_config.TextColumn("Event"),
    "Detail": st.column_config.TextColumn("Detail", width="large"),
}


def events_frame(client: SmartClient, limit: int = 50) -> pd.DataFrame:
    rows = [
        {"Time": datetime.fromtimestamp(e.at), "Key": e.key_id, "Event": str(e.kind), "Detail": e.detail}
        for e in client.admin.events(limit)
    ]
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS)).astype({"Time": "datetime64[ns]"})


CHART_SERIES = ("Succeeded", "Rate-limited", "Other errors")
CHART_COLORS = ["#16a34a", "#f59e0b", "#dc2626"]


def top_keys(history: Iterable[Mapping[str, Any]], top: int = TOP_KEYS) -> dict[str, pd.DataFrame]:
    """Per provider, the `top` keys by requests in `client.admin.history()`'s hours, as stacked-bar frames indexed by
    key id, busiest first: a fixed number of bars whatever the number of keys."""
    totals: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    for hour in history:
        counts = totals[hour["provider"]][hour["key_id"]]
        counts[0] += hour["successes"]
        counts[1] += hour["rate_limits"]
        counts[2] += hour["errors"]
    frames = {}
    for provider, per_key in totals.items():
        busiest = sorted(per_key.items(), key=lambda item: (-sum(item[1]), key_order(item[0])))[:top]
        frame = pd.DataFrame([c for _, c in busiest], index=[k for k, _ in busiest], columns=list(CHART_SERIES))
        frame.index.name = "Key"
        frames[provider] = frame
    return frames
