"""History page: totals per provider and key, requests per hour, the request log, CSV exports. Thin: the data
comes from `client.admin.history()` and `request_log()`, shaped by `dashboard.history`."""

import streamlit as st

from dashboard import charts, history, shell
from dashboard.client import get_client
from dashboard.text import provider_title
from llms import client_time

shell.ensure()
client = get_client()
now = client_time()

st.title("History")
pick, refresh = st.columns([4, 1], vertical_alignment="bottom")
with pick:
    label = st.segmented_control(
        "Range", list(history.RANGES), default=history.DEFAULT_RANGE, required=True, key="history_range"
    )
refresh.button("Refresh", icon=":material/refresh:", width="stretch")
label = label or history.DEFAULT_RANGE
hours = history.RANGES[label]
rows = client.admin.history(hours=hours)
frame = history.hours_frame(rows)
hints = history.key_hints(client)

if frame.empty:
    st.info(history.empty_text(label), icon=":material/history:")
else:
    st.subheader("Totals per provider", divider="gray")
    st.dataframe(history.provider_totals(frame), column_config=history.TOTAL_COLUMNS, hide_index=True, width="stretch")

    st.subheader("Requests per hour", divider="gray")
    split = st.segmented_control(
        "Split by", ["Outcome", "Provider"], default="Outcome", required=True, key="history_split"
    )
    by = "Provider" if split == "Provider" else "Outcome"
    charts.show(
        charts.stacked_bars(
            history.timeline(frame, hours, now, by),
            colors=history.OUTCOME_COLORS if by == "Outcome" else None,
            y_label="Requests",
            height=280,
        )
    )
    st.caption(
        "History is kept in whole clock hours, so the chart has one bar per hour and “Last hour” covers the "
        "current and the previous clock hour. Bar height is the number of requests."
    )

    st.subheader("Keys", divider="gray")
    search = st.text_input("Search keys", placeholder="Part of a key id or hint, e.g. groq:2", key="history_search")
    keys, matched = history.key_totals(frame, hints, search)
    if keys.empty:
        st.caption(f"No key matches “{search}”.")
    else:
        st.dataframe(keys, column_config=history.KEY_COLUMNS, hide_index=True, width="stretch", height=400)
        st.caption(f"The {len(keys):,} busiest of {matched:,} keys with requests in this range.")
    st.download_button(
        "Hourly history (CSV)",
        history.history_csv(rows),
        file_name=history.history_file_name(label),
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        help="One line per key and hour in this range; hours in UTC. No keys, no message content.",
    )

st.subheader("Request log", divider="gray")
provider_box, key_box, outcome_box = st.columns(3)
provider = provider_box.selectbox(
    "Provider",
    history.providers(client),
    index=None,
    format_func=provider_title,
    placeholder="All providers",
    key="log_provider",
)
key_id = key_box.selectbox(
    "Key",
    list(hints),
    index=None,
    format_func=lambda k: f"{k} · {hints[k]}",
    placeholder="All keys (type to search)",
    key="log_key",
)
outcome = outcome_box.selectbox(
    "Outcome",
    list(history.OUTCOME_WORDS),
    index=None,
    format_func=history.OUTCOME_WORDS.get,
    placeholder="All outcomes",
    key="log_outcome",
)
log = client.admin.request_log(history.LOG_LIMIT, provider=provider, key_id=key_id, outcome=outcome)
if not log:
    filtered = provider or key_id or outcome
    st.info(
        "No logged request matches these filters." if filtered else "No requests logged yet.",
        icon=":material/receipt_long:",
    )
else:
    st.dataframe(history.log_frame(log), column_config=history.LOG_COLUMNS, hide_index=True, width="stretch")
    st.caption(f"The {len(log):,} most recent matching requests, newest first (at most {history.LOG_LIMIT:,}).")
    st.download_button(
        "Request log (CSV)",
        history.log_csv(log),
        file_name=history.LOG_FILE_NAME,
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        help="The requests shown above; times in UTC. No keys, no message content.",
    )
