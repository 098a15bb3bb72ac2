"""The status page's data and controls: key tables, next-free hints, events, request counts, reset/test callbacks.

Everything is read through `SmartClient`'s public methods; only `key_id` and `hint` ever identify a key.
Callbacks run before the rerun they trigger, so the tables drawn right after a click already show the effect.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

import pandas as pd
import streamlit as st

from dashboard.text import countdown, pause_text, reason_text, safe_markdown, verdict
from llms import KeyStatus, LLMError, ProviderStatus, SmartClient, StoreHealth

HISTORY_KEY = "status_availability"
HISTORY_POINTS = 300
"""Availability samples kept per session for the metrics' sparklines: five minutes at one sample a second."""


@dataclass(frozen=True)
class ProviderView(ProviderStatus):
    """One provider's status, with what the page draws from it at the moment `now`."""

    now: float

    @property
    def label(self) -> str:
        return f"{self.available}/{self.total} available"

    @property
    def next_free(self) -> KeyStatus | None:
        cooling = [k for k in self.keys if not k.available]
        return min(cooling, key=lambda k: k.cooldown_remaining) if cooling else None

    @property
    def tone(self) -> Literal["green", "orange", "gray"]:
        """Colour of the note: nothing configured, something cooling, or all ready."""
        if not self.total:
            return "gray"
        return "orange" if self.available < self.total else "green"

    @property
    def note(self) -> str:
        """`openrouter:1 frees in 42 s`, a provider-wide pause, or a word on why nothing is cooling."""
        if not self.total:
            return "No keys configured."
        if self.paused_until:
            return pause_text(self, self.now)
        soonest = self.next_free
        if soonest is None:
            return "All keys ready."
        return f"{soonest.key_id} frees in {countdown(soonest.cooldown_remaining)}"


def provider_views(client: SmartClient, now: float | None = None) -> list[ProviderView]:
    moment = time.time() if now is None else now
    return [
        ProviderView(**{f.name: getattr(status, f.name) for f in fields(status)}, now=moment)
        for status in client.provider_statuses()
    ]


def backoff_text(key: KeyStatus) -> str:
    parts = [f"step {key.backoff_step}"] if key.backoff_step else []
    if key.learned_rest:
        parts.append(f"learned {countdown(key.learned_rest)}")
    return " · ".join(parts)


def store_text(store: StoreHealth) -> str:
    where = {
        "memory": "in this process only (lost on restart)",
        "sqlite": f"in the SQLite file `{store.location}` (kept across restarts, shared by this machine's processes)",
    }.get(store.backend, f"in Redis at `{store.location}` (shared by every process that uses it)")
    return f"Key state is kept {where}" + ("." if store.healthy else f" — **{store.detail}**")


def _when(at: float | None) -> datetime | None:
    return datetime.fromtimestamp(at) if at else None


def key_frame(keys: Sequence[KeyStatus]) -> pd.DataFrame:
    rows = [
        {
            "Key": k.key_id,
            "Hint": k.hint,
            "Group": k.group or "",
            "State": "available" if k.available else "cooling",
            "Reason": reason_text(k) if not k.available else "",
            "Frees in": "" if k.available else countdown(k.cooldown_remaining),
            "Backoff": backoff_text(k),
            "Streak": k.consecutive_failures,
            "Successes": k.successes,
            "Failures": k.failures,
            "Last used": _when(k.last_used),
            "Last error": k.last_error or "",
        }
        for k in keys
    ]
    frame = pd.DataFrame(rows, columns=list(KEY_COLUMNS))
    return frame.astype({"Last used": "datetime64[ns]"})


KEY_COLUMNS: dict[str, Any] = {
    "Key": st.column_config.TextColumn("Key", pinned=True),
    "Hint": st.column_config.TextColumn("Hint", help="First and last four characters; the key is never shown."),
    "Group": st.column_config.TextColumn("Group", help="Keys of one account share one rate limit (…_API_KEY_N_GROUP)."),
    "State": st.column_config.TextColumn("State"),
    "Reason": st.column_config.TextColumn("Reason"),
    "Frees in": st.column_config.TextColumn("Frees in", help="Live countdown until the key is back in rotation."),
    "Backoff": st.column_config.TextColumn(
        "Backoff", help="Adaptive rest after 429s without a hint: current step, and the rest that worked last time."
    ),
    "Streak": st.column_config.NumberColumn("Streak", help="Consecutive failures (cooling at the threshold)."),
    "Successes": st.column_config.NumberColumn("OK", help="Successful requests since the process started."),
    "Failures": st.column_config.NumberColumn("Failed", help="Failed requests since the process started."),
    "Last used": st.column_config.DatetimeColumn("Last used", format="HH:mm:ss"),
    "Last error": st.column_config.TextColumn("Last error", width="large"),
}

EVENT_COLUMNS: dict[str, Any] = {
    "Time": st.column_config.DatetimeColumn("Time", format="HH:mm:ss"),
    "Key": st.column_config.TextColumn("Key"),
    "Event": st.column_config.TextColumn("Event"),
    "Detail": st.column_config.TextColumn("Detail", width="large"),
}


def events_frame(client: SmartClient, limit: int = 50) -> pd.DataFrame:
    rows = [
        {"Time": datetime.fromtimestamp(e.at), "Key": e.key_id, "Event": str(e.kind), "Detail": e.detail}
        for e in client.events(limit)
    ]
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS)).astype({"Time": "datetime64[ns]"})


def requests_frame(views: Iterable[ProviderView]) -> pd.DataFrame:
    """Successes and failures per key since the process started, for a stacked bar chart."""
    rows = [{"Key": k.key_id, "Succeeded": k.successes, "Failed": k.failures} for v in views for k in v.keys]
    return pd.DataFrame(rows, columns=["Key", "Succeeded", "Failed"]).set_index("Key")


def sample_availability(views: Sequence[ProviderView], now: float | None = None) -> pd.DataFrame:
    """Append this moment's available-key counts to the session's series and return the series."""
    series: list[dict[str, Any]] = st.session_state.setdefault(HISTORY_KEY, [])
    point: dict[str, Any] = {"Time": datetime.fromtimestamp(time.time() if now is None else now)}
    point.update({v.title: v.available for v in views if v.total})
    series.append(point)
    del series[:-HISTORY_POINTS]
    return pd.DataFrame(series).set_index("Time")


def key_choices(client: SmartClient) -> dict[str, str]:
    """Key id → `openrouter:1 · sk-o…0001` labels for the key picker."""
    return {k.key_id: f"{k.key_id} · {k.hint}" for v in client.provider_statuses() for k in v.keys}


# --- callbacks (on_click) ---------------------------------------------------------------------------------------


def reset_all(client: SmartClient) -> None:
    client.reset_all()
    st.toast("All keys are back in rotation.", icon=":material/restart_alt:")


def reset_provider(client: SmartClient, provider: str, title: str) -> None:
    client.reset_provider(provider)
    st.toast(f"{title} keys are back in rotation.", icon=":material/restart_alt:")


def reset_key(client: SmartClient, key_id: str | None) -> None:
    if not key_id:
        return
    client.reset_key(key_id)
    st.toast(f"{key_id} is back in rotation.", icon=":material/restart_alt:")


VERDICT_KEY = "status_last_check"


def check_key(client: SmartClient, key_id: str | None) -> None:
    """One cheap real call with the key; the verdict goes to a toast and stays under the buttons."""
    if not key_id:
        return
    try:
        text = verdict(key_id, client.check_key(key_id))
    except (LLMError, KeyError) as exc:
        text = f"{key_id}: check failed: {exc}"
    text = safe_markdown(text)
    st.session_state[VERDICT_KEY] = text
    st.toast(text, icon=":material/check_circle:" if "OK" in text else ":material/report:")
