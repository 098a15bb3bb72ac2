"""Alerts in open dashboards: a toast on every page when an incident opens or ends, and the list for Status.

The incidents themselves are the client's (`SmartClient.alerts()`: read off key state, one list for every process
sharing the store); this module only shows them. A session toasts the alerts raised after it started, so opening
the dashboard does not replay history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.text import md_escape
from llms import SmartClient

SEEN = "alerts_seen_at"
CHECK_SECONDS = 5

ALERT_COLUMNS: dict[str, Any] = {
    "Time": st.column_config.DatetimeColumn("Time", format="HH:mm:ss"),
    "State": st.column_config.TextColumn("State"),
    "Alert": st.column_config.TextColumn("Alert", width="large"),
}


def fresh(alerts: list[dict[str, Any]], seen_at: float | None) -> tuple[list[dict[str, Any]], float]:
    """The alerts newer than `seen_at`, oldest first, and the new `seen_at` (nothing is fresh on a first look)."""
    latest = max((a["at"] for a in alerts), default=seen_at or 0.0)
    if seen_at is None:
        return [], latest
    return sorted((a for a in alerts if a["at"] > seen_at), key=lambda a: a["at"]), max(latest, seen_at)


LISTED = 5
"""Key ids named in one toast; the rest are counted."""


def listed(ids: list[str], most: int = LISTED) -> str:
    """`groq:1, groq:2` or `groq:1, …, groq:5 and 64 more`."""
    more = f" and {len(ids) - most} more" if len(ids) > most else ""
    return ", ".join(ids[:most]) + more


def grouped(alerts: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The toasts for alerts seen in one look, as (text, opened): one per provider-wide alert, and one per kind
    of key alert however many keys it names (disabling 69 keys is one toast, not 69)."""
    kinds: dict[tuple[str, bool], list[str]] = {}
    texts: dict[tuple[str, bool], str] = {}
    toasts: list[tuple[str, bool]] = []
    for alert in alerts:
        opened = alert["state"] == "open"
        key_id, _, words = alert["text"].partition(" (")
        if not alert.get("id", "").startswith("key:") or ") is " not in words:
            toasts.append((alert["text"], opened))
            continue
        kind = (words.split(") is ", 1)[1], opened)
        kinds.setdefault(kind, []).append(key_id)
        texts.setdefault(kind, alert["text"])
    for (words, opened), found in kinds.items():
        ids = sorted(found, key=_in_order)
        toasts.append(
            (texts[(words, opened)] if len(ids) == 1 else f"{len(ids)} keys are {words}: {listed(ids)}", opened)
        )
    return toasts


def _in_order(key_id: str) -> tuple[str, int, str]:
    """`groq:2` before `groq:10`."""
    provider, _, number = key_id.rpartition(":")
    return (provider, int(number), "") if number.isdigit() else (key_id, 0, key_id)


@st.fragment(run_every=CHECK_SECONDS)
def toasts(client: SmartClient) -> None:
    """Runs on every page: toasts what happened since the last look.

    The look is marked seen only once its toasts are queued: a rerun that interrupts this run stops it at the
    first `st.toast` (Streamlit checks for a rerun before it queues an element), and marking first lost the
    alerts of that look for good."""
    new, seen_at = fresh(client.alerts(50), st.session_state.get(SEEN))
    for text, opened in grouped(new):
        st.toast(
            md_escape(text),
            icon=":material/notifications_active:" if opened else ":material/check_circle:",
            duration="long",
        )
    st.session_state[SEEN] = seen_at


def alerts_frame(alerts: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [
        {
            "Time": datetime.fromtimestamp(a["at"]),
            "State": "🔴 open" if a["state"] == "open" else "✅ resolved",
            "Alert": a["text"],
        }
        for a in alerts
    ]
    return pd.DataFrame(rows, columns=list(ALERT_COLUMNS)).astype({"Time": "datetime64[ns]"})
