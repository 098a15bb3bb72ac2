"""One key's own page (`/key?key=groq:2`, opened from the Status table): its state and why, quota left, its last
24 hours by the hour, its recent requests and its events. Only the key's id and hint identify it; everything is
read through `SmartClient`'s public methods (`history`, `request_log` and `events`, filtered to the key)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from config.api_keys import key_order
from dashboard import charts, status, triage
from dashboard.history import LOG_COLUMNS, hour_start, log_frame
from dashboard.text import countdown, md_escape, provider_title, state_label
from llms import SmartClient, client_time

PARAM = "key"
"""The query parameter naming the key: a link to one key can be bookmarked and shared."""
HOURS = 24
EVENTS_READ = 500
"""Events read to find this key's (the store keeps the newest events of every key together)."""
LOG_ROWS = 100


def find_row(client: SmartClient, key_id: str, now: float) -> status.Row | None:
    """The key's row as the Status table has it (state, provider pause), or None for an unknown id."""
    return next(
        (row for row in status.rows_of(client.admin.provider_statuses(), now) if row.key.key_id == key_id), None
    )


def hourly_frame(hours: Sequence[Mapping[str, Any]], now: float | None = None) -> pd.DataFrame:
    """`client.admin.history(key_id=…)` rows as the chart's frame: one row per clock hour, OK / 429 / errors. With
    `now`, every hour of the last `HOURS` is a row (quiet ones zeros), so one busy hour is one bar of 25, not a
    bar as wide as the chart."""
    frame = pd.DataFrame(
        [
            {
                "Hour": datetime.fromtimestamp(h["hour"]),
                "Succeeded": h["successes"],
                "Rate-limited": h["rate_limits"],
                "Other errors": h["errors"],
            }
            for h in hours
        ],
        columns=["Hour", *status.CHART_SERIES],
    )
    if frame.empty:
        return frame.set_index("Hour")
    frame = frame.groupby("Hour").sum()
    if now is None:
        return frame
    start = hour_start(now - HOURS * 3600)
    return frame.reindex([datetime.fromtimestamp(start + 3600 * i) for i in range(HOURS + 1)], fill_value=0)


def key_events(client: SmartClient, key_id: str) -> pd.DataFrame:
    """This key's events among the store's newest, newest first."""
    events = [e for e in client.admin.events(EVENTS_READ) if e.key_id == key_id]
    rows = [
        {"Time": datetime.fromtimestamp(e.at), "Key": e.key_id, "Event": str(e.kind), "Detail": e.detail}
        for e in events
    ]
    return pd.DataFrame(rows, columns=list(status.EVENT_COLUMNS)).astype({"Time": "datetime64[ns]"})


def key_page(client: SmartClient) -> None:
    """The page: a key picker (the query parameter chooses), then that key's state, chart, log and events."""
    ids = sorted((k.key_id for s in client.admin.provider_statuses() for k in s.keys), key=key_order)
    wanted = st.query_params.get(PARAM)
    st.page_link("pages/status.py", label="Back to Status", icon=":material/arrow_back:")
    if not ids:
        st.info("No keys are configured.")
        return
    picked = st.selectbox(
        "Key", ids, index=ids.index(wanted) if wanted in ids else 0, key=f"key_page_pick_{wanted}", width=240
    )
    if picked != wanted:
        st.query_params[PARAM] = picked
    if wanted and wanted not in ids:
        st.warning(f"No key {md_escape(wanted)} is configured; showing {md_escape(picked)}.")
    now = client_time()
    row = find_row(client, picked, now)
    if row is None:
        return
    key = row.key
    st.title(f"{key.key_id}", anchor=False)
    st.caption(f"{provider_title(key.provider)} · hint {md_escape(key.hint)} (the key itself is never shown)")
    pauses = {s.provider: status.pause_text(s, now) for s in client.admin.provider_statuses() if s.paused_until}
    why = status.reason(row, pauses, triage.causes(client), client.admin.checks()["results"])
    frees = status.frees_in(row)
    with st.container(horizontal=True):
        st.metric("State", state_label(row.state), border=True)
        st.metric("Frees in", countdown(frees) if frees else "—", border=True)
        st.metric("Left today", _number(key.quota.today_left), border=True)
        st.metric("Left in window", _number(key.quota.window_left), border=True)
        st.metric("Tokens left", _number(key.quota.tokens_left), border=True)
        st.metric("OK / failed", f"{key.successes} / {key.failures}", border=True)
    if why:
        st.markdown(f"**Reason:** {md_escape(why)}")
    st.subheader(f"Last {HOURS} hours", divider="gray")
    hours = hourly_frame(client.admin.history(hours=HOURS, key_id=key.key_id), now)
    if hours.empty:
        st.caption(f"No requests in the last {HOURS} hours.")
    else:
        charts.show(charts.stacked_bars(hours, colors=status.CHART_COLORS, height=260))
    st.subheader("Recent requests", divider="gray")
    log = client.admin.request_log(LOG_ROWS, key_id=key.key_id)
    if log:
        st.dataframe(log_frame(log), column_config=LOG_COLUMNS, hide_index=True, width="stretch")
    else:
        st.caption("No requests recorded for this key yet.")
    st.subheader("Events", divider="gray")
    events = key_events(client, key.key_id)
    if events.empty:
        st.caption("No cooldowns, failures or resets for this key yet.")
    else:
        st.dataframe(events, column_config=status.EVENT_COLUMNS, hide_index=True, width="stretch")


def _number(value: float | None) -> str:
    return "—" if value is None else f"{int(value):,}"
