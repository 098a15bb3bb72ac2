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


@st.fragment(run_every=CHECK_SECONDS)
def toasts(client: SmartClient) -> None:
    """Runs on every page: toasts what happened since the last look."""
    new, st.session_state[SEEN] = fresh(client.alerts(50), st.session_state.get(SEEN))
    for alert in new:
        opened = alert["state"] == "open"
        st.toast(
            md_escape(alert["text"]),
            icon=":material/notifications_active:" if opened else ":material/check_circle:",
            duration="long",
        )


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
