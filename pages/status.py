"""Status page: which keys can answer now, live cooldown countdowns, resets, key checks and recent activity."""

import streamlit as st

from dashboard import shell, status
from dashboard.client import get_client
from dashboard.text import provider_title

shell.ensure()
client = get_client()

st.title("Key status")
left, right = st.columns([3, 1], vertical_alignment="bottom")
current = client.get_current_provider()
left.caption(
    "Refreshes every second. Keys are identified by id and hint only. "
    + (f"Last answer came from **{provider_title(current)}**." if current else "No answer yet in this process.")
)
right.button("Reset all", icon=":material/restart_alt:", on_click=status.reset_all, args=(client,), width="stretch")


@st.fragment(run_every="1s")
def live_status() -> None:
    """Only this part reruns every second, so countdowns tick without redrawing the page."""
    views = status.provider_views(client)
    store = client.store_health()
    if store.healthy:
        st.caption(status.store_text(store))
    else:
        st.warning(status.store_text(store), icon=":material/cloud_off:")
    trend = status.sample_availability(views)
    for column, view in zip(st.columns(len(views)), views, strict=True):
        with column.container(border=True):
            st.metric(
                view.title,
                view.label,
                delta=view.note,
                delta_color=view.tone,
                delta_arrow="off",
                chart_data=trend[view.title].tolist() if view.total and len(trend) > 1 else None,
                chart_type="area",
                help="Keys in rotation now; the sparkline covers the last few minutes on this page.",
            )
            st.caption(f"Model `{view.model}`")
            if view.problem:
                st.warning(f"Configuration problem: {view.problem}", icon=":material/build:")
            st.button(
                f"Reset {view.title}",
                key=f"reset_{view.provider}",
                icon=":material/restart_alt:",
                on_click=status.reset_provider,
                args=(client, view.provider, view.title),
                disabled=not view.total,
                width="stretch",
            )
    for view in views:
        if view.keys:
            st.subheader(view.title, divider="gray")
            st.dataframe(
                status.key_frame(view.keys),
                column_config=status.KEY_COLUMNS,
                hide_index=True,
                width="stretch",
                placeholder="—",
            )


live_status()

st.subheader("Key actions", divider="gray")
choices = status.key_choices(client)
pick, reset, test = st.columns([3, 1, 1], vertical_alignment="bottom")
key_id = pick.selectbox("Key", list(choices), format_func=choices.get, key="status_key", placeholder="No keys")
reset.button(
    "Reset key",
    icon=":material/lock_reset:",
    on_click=status.reset_key,
    args=(client, key_id),
    width="stretch",
    disabled=key_id is None,
)
test.button(
    "Test key",
    icon=":material/network_check:",
    on_click=status.check_key,
    args=(client, key_id),
    width="stretch",
    disabled=key_id is None,
)
if last := st.session_state.get(status.VERDICT_KEY):
    st.caption(f"Last check: {last}")


@st.fragment(run_every="2s")
def activity() -> None:
    """Recent state changes and request counts; a slower refresh is plenty for these."""
    views = status.provider_views(client)
    timeline, charts = st.columns([3, 2])
    with timeline:
        st.subheader("Recent events", divider="gray")
        events = status.events_frame(client)
        if events.empty:
            st.caption("No cooldowns, failures or resets yet.")
        else:
            st.dataframe(events, column_config=status.EVENT_COLUMNS, hide_index=True, width="stretch")
    with charts:
        st.subheader("Requests per key", divider="gray")
        requests = status.requests_frame(views)
        st.bar_chart(requests, color=["#16a34a", "#dc2626"], horizontal=True, height=80 + 34 * len(requests))


activity()
