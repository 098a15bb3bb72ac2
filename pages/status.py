"""Status page, problems first: a line per provider (a failing provider named), one key table opening on the keys
that need a person with the keys that free themselves counted above it, bulk actions on selected keys, background
key checks, recent events and the busiest keys."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import streamlit as st

from dashboard import auth, charts, key_actions, key_table, keys, shell, status, table_selection, triage
from dashboard.alerts import ALERT_COLUMNS, alerts_frame, incident_actions, listed, mark_own
from dashboard.client import get_backend, get_client
from dashboard.simulate import simulate_panel
from dashboard.text import md_escape, provider_title
from llms import SmartClient, client_time

shell.ensure()
client = get_client()
# Selected keys that get an "Open" link to their own page (more would be a wall of links). A comment, not a
# docstring: Streamlit's magic draws a page script's bare strings on the page.
OPEN_LINKS = 3
INCLUDE_PARKED = "status_include_parked"

st.title("Key status")
current = client.get_current_provider()
st.caption(
    f"Refreshes every {status.REFRESH_SECONDS} s. Keys are identified by id and hint only. "
    + (f"Last answer came from **{provider_title(current)}**." if current else "No answer yet in this process.")
)


NOTICES = "status_notices"


def notify(text: str) -> None:
    """Say what a button did. Buttons call this from their callbacks, where nothing may be drawn (a callback of
    the live part runs inside its fragment's rerun): the message waits in the session for `show_notices`."""
    st.session_state.setdefault(NOTICES, []).append(text)


def show_notices() -> None:
    """Toast the messages the buttons left, once each; called from the live part's body, which every run of
    this page draws (a button of the live part reruns only that part)."""
    for text in st.session_state.pop(NOTICES, []):
        st.toast(md_escape(text), icon=":material/info:")


def reset_everything(providers: Sequence[str] | None = None) -> None:
    include = bool(st.session_state.get(INCLUDE_PARKED))
    chosen = [s for s in client.admin.provider_statuses() if providers is None or s.provider in providers]
    mark_own(st.session_state, [k.key_id for s in chosen for k in s.keys], [s.title for s in chosen])
    notify(key_actions.reset_all(client, include, providers, by=auth.operator()))


def act(action: Callable[[SmartClient, Sequence[str]], str], key_ids: Sequence[str], keep: bool = False) -> None:
    """A bulk button: run the action on the selected ids, say what happened (the alerts restating it are not
    toasted again in this session), and (except for Test) clear the selection so a second click cannot repeat
    it on keys that have moved on."""
    mark_own(st.session_state, key_ids, {provider_title(key_id.rpartition(":")[0]) for key_id in key_ids})
    notify(action(client, key_ids))
    if not keep:
        table_selection.clear_selection(st.session_state)


backend = get_backend()


def reload_keys() -> None:
    changed = client.reload_keys(by=auth.acting())
    added, removed = ", ".join(changed["added"]) or "none", ", ".join(changed["removed"]) or "none"
    notify(f"Keys read again from the environment and .env. Added: {added}. Removed: {removed}.")


@st.fragment(run_every=status.REFRESH_SECONDS)
def live_status() -> None:
    """Only this part reruns on the timer; it builds frames for the rows shown, not for every key."""
    show_notices()
    now = client_time()
    statuses = client.admin.provider_statuses()
    store = client.admin.store_health()
    if store.healthy:
        st.caption(status.store_text(store))
    else:
        st.warning(status.store_text(store), icon=":material/cloud_off:")
    checks = client.admin.checks()

    causes = triage.causes(client)
    summaries = [status.summarize(s, now, causes) for s in statuses]
    for summary in summaries:
        if summary.outage is not None:
            st.error(md_escape(summary.outage.text()), icon=":material/cloud_off:")
    st.markdown(status.summary_table(summaries))
    st.caption(status.models_text(summaries))
    for summary in summaries:
        if summary.problem:
            st.warning(f"{summary.title} configuration problem: {md_escape(summary.problem)}", icon=":material/build:")

    every = status.rows_of(statuses, now)
    st.markdown(status.triage_text(every, now))
    choice = st.pills("Show", list(status.FILTERS), default=status.NEEDS_ATTENTION, key="status_filter")
    search = st.text_input("Search", key="status_search", placeholder="key id, hint or group", width=360)
    chosen = table_selection.selected_ids(st.session_state)
    rows = status.shown_rows(every, choice, search, keep=chosen)
    grid, ticked = table_selection.table_widget(st.session_state, rows, chosen)
    pauses = {s.provider: s.pause for s in summaries if s.pause}
    ids: list[str] = []
    if rows:  # an empty grid draws a highlighted phantom row: say so in words instead
        event = st.dataframe(
            key_table.key_frame(rows, now, checks["results"], pauses, causes),
            column_config=key_table.KEY_COLUMNS,
            hide_index=True,
            width="stretch",
            placeholder="—",
            key=grid,
            on_select="rerun",
            selection_mode="multi-row",
            selection_default=ticked,
        )
        ids = [rows[i].key.key_id for i in event.selection.rows if i < len(rows)]
    else:
        st.caption(status.empty_text(choice, search))
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(
            f"{len(ids)} selected: {listed(ids)}"
            if ids
            else "Tick rows to act on several keys at once, or one to open its own page. Selected rows stay listed "
            "until you untick them."
        )
        for key_id in ids[:OPEN_LINKS]:  # a key's own page: its chart, request log and events
            st.page_link(
                shell.key_page(), label=f"Open {key_id}", icon=":material/open_in_new:", query_params={"key": key_id}
            )
    by = auth.operator()
    bulk = (  # label, icon, action, whether the selection stays (a Test's verdicts show on the ticked rows)
        ("Reset", ":material/lock_reset:", partial(key_actions.reset_keys, by=by), False),
        ("Test", ":material/network_check:", partial(key_actions.test_keys, by=by), True),
        ("Disable", ":material/block:", partial(key_actions.disable_keys, by=by), False),
        ("Enable", ":material/check_circle:", partial(key_actions.enable_keys, by=by), False),
    )
    with st.container(horizontal=True):
        for label, icon, action, keep in bulk:
            st.button(label, icon=icon, on_click=act, args=(action, ids, keep), disabled=not ids)
        with st.popover("Remove", icon=":material/delete:", disabled=not ids):
            st.caption(keys.remove_text(backend, ids))
            st.button(
                "Remove for good",
                key="keys_remove",
                type="primary",
                on_click=act,
                args=(keys.remove_action(backend), ids),
            )
    if checks["running"]:  # beside the Test buttons that started it, not at the top of the page
        st.progress(checks["done"] / max(1, checks["total"]), text=f"Checking keys: {checks['done']}/{checks['total']}")


live_status()


def pool_actions() -> None:
    """Actions on the whole pool; a row that wraps, so a phone shows two buttons per line, not one per screen."""
    with st.container(horizontal=True, vertical_alignment="center"):
        st.button(
            "Test all keys",
            icon=":material/network_check:",
            on_click=lambda: notify(key_actions.test_keys(client, None, by=auth.operator())),
        )
        st.button(
            "Reload keys",
            icon=":material/sync:",
            on_click=reload_keys,
            disabled=backend.demo,
            help="Read keys again from the environment and .env: new keys join, removed keys leave, the rest keep "
            "their state. (Not in demo mode: its keys are fake.)",
        )
        with st.popover("Reset one provider", icon=":material/restart_alt:"):
            for name in client.settings.provider_order:
                st.button(
                    f"Reset {provider_title(name)}",
                    key=f"reset_{name}",
                    on_click=reset_everything,
                    args=([name],),
                    disabled=not client.settings.providers[name].keys,
                    width="stretch",
                )
        st.button("Reset all", icon=":material/restart_alt:", on_click=reset_everything)
        st.checkbox(
            "include invalid keys",
            key=INCLUDE_PARKED,
            help="Reset also the keys parked as invalid, out of credit, at a spend cap or without access to the "
            "model. Disabled keys stay disabled either way.",
        )


pool_actions()
with st.expander("Add keys", icon=":material/key:"):
    keys.keys_panel(backend, notify)
with st.expander("Simulate provider behaviour (demo)", icon=":material/science:") if backend.demo else st.empty():
    simulate_panel(backend, notify)


@st.fragment(run_every=status.ACTIVITY_REFRESH_SECONDS)
def activity() -> None:
    """Recent state changes and the busiest keys of the last hour; a slower refresh is plenty for these."""
    st.subheader("Busiest keys, last hour", divider="gray")
    busiest = status.top_keys(client.admin.history(hours=1))
    if not busiest:
        st.caption("No requests in the last hour.")
    for column, (provider, frame) in zip(st.columns(max(1, len(busiest))), busiest.items(), strict=False):
        with column:
            st.caption(f"**{provider_title(provider)}**: top {len(frame)} keys by requests")
            charts.show(
                charts.stacked_bars(frame, colors=status.CHART_COLORS, horizontal=True, height=status.CHART_HEIGHT)
            )
    st.subheader("Alerts", divider="gray")
    recent = client.admin.alerts(20)
    if recent:
        st.dataframe(alerts_frame(recent), column_config=ALERT_COLUMNS, hide_index=True, width="stretch")
        incident_actions(client, recent, auth.operator())
    else:
        st.caption("No alerts: no provider ran out of keys and no key was parked.")
    st.subheader("Recent events", divider="gray")
    events = status.events_frame(client)
    if events.empty:
        st.caption("No cooldowns, failures or resets yet.")
    else:
        st.dataframe(events, column_config=status.EVENT_COLUMNS, hide_index=True, width="stretch")


activity()
