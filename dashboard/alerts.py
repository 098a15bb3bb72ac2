"""Alerts in open dashboards: a toast on every page when an incident opens or ends, and the list for Status.

The incidents themselves are the client's (`client.admin.alerts()`: read off key state, one list for every process
sharing the store); this module only shows them. A session toasts the alerts raised after it started, so opening
the dashboard does not replay history, and not the alerts that only restate what its own button just did (its
notice said it already): after "Disable" on 7 keys the acting session sees one toast, "Disabled 7 keys", while
every other session sees the alert. An acknowledged or muted alert is listed but never toasted (`quiet`); the
Alerts list's buttons acknowledge or mute the incident a row belongs to (`client.admin.acknowledge_alert` /
`mute_alert`), naming the operator when one is logged in (`dashboard.auth.operator`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

import pandas as pd
import streamlit as st

from config.api_keys import key_order
from dashboard.text import clock_time, md_escape
from llms import SmartClient, client_time
from llms.alerts import listed

SEEN = "alerts_seen_at"
OWN = "alerts_own_actions"
CHECK_SECONDS = 5
OWN_SECONDS = 30.0
"""How long after a button's action its session skips the alerts restating it (alerts are raised by whichever
session or process looks first, within a few seconds)."""

ALERT_COLUMNS: dict[str, Any] = {
    "Time": st.column_config.DatetimeColumn("Time", format="HH:mm:ss"),
    "State": st.column_config.TextColumn("State", width="medium"),
    "Alert": st.column_config.TextColumn("Alert", width="large"),
}


def fresh(alerts: list[dict[str, Any]], seen_at: float | None) -> tuple[list[dict[str, Any]], float]:
    """The alerts newer than `seen_at`, oldest first, and the new `seen_at` (nothing is fresh on a first look)."""
    latest = max((a["at"] for a in alerts), default=seen_at or 0.0)
    if seen_at is None:
        return [], latest
    return sorted((a for a in alerts if a["at"] > seen_at), key=lambda a: a["at"]), max(latest, seen_at)


def key_ids(alert: dict[str, Any]) -> list[str]:
    """The keys a key alert is about (`key_ids`, or its `key:<id>` id from before alerts had them); [] for
    provider and pool alerts."""
    if alert.get("key_ids"):
        return list(alert["key_ids"])
    incident = alert.get("id", "")
    return [incident.removeprefix("key:")] if incident.startswith("key:") else []


def grouped(alerts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The toasts for alerts seen in one look, as (text, state): one per provider-wide alert, and one per kind
    of key alert however many keys and rows it names (disabling 69 keys is one toast, not 69)."""
    kinds: dict[tuple[str, str], list[str]] = {}
    texts: dict[tuple[str, str], str] = {}
    counts: dict[tuple[str, str], int] = {}
    toasts: list[tuple[str, str]] = []
    for alert in alerts:
        ids = key_ids(alert)
        words = alert.get("words") or _words(alert["text"])
        if not ids or not words:
            toasts.append((alert["text"], alert["state"]))
            continue
        kind = (words, alert["state"])
        kinds.setdefault(kind, []).extend(ids)
        texts.setdefault(kind, alert["text"])
        counts[kind] = counts.get(kind, 0) + int(alert.get("keys", len(ids)))
    for (words, state), found in kinds.items():
        ids = sorted(dict.fromkeys(found), key=key_order)
        count = max(counts[(words, state)], len(ids))
        text = texts[(words, state)] if count == 1 else f"{count} keys are {words}: {listed(ids, count)}"
        toasts.append((text, state))
    return toasts


def _words(text: str) -> str:
    """`parked as invalid` from `groq:1 (gsk…) is parked as invalid` (alerts from before they carried `words`)."""
    _, _, words = text.partition(") is ")
    return words


def quiet(alert: dict[str, Any], now: float) -> bool:
    """Whether the alert is hushed: its incident was acknowledged (seen already) or is muted now."""
    muted = alert.get("muted")
    return bool(alert.get("acknowledged")) or bool(muted and muted.get("until", 0) > now)


def who(by: str | None) -> str:
    return f" by {by}" if by else ""


def hushed_text(alert: dict[str, Any], now: float) -> str:
    """` · acknowledged by alice`, ` · muted until 13:04:05 by bob`, or "" for the list's State column."""
    parts = []
    if acknowledged := alert.get("acknowledged"):
        parts.append(f"acknowledged{who(acknowledged.get('by'))}")
    muted = alert.get("muted")
    if muted and muted.get("until", 0) > now:
        parts.append(f"muted until {clock_time(muted['until'])}{who(muted.get('by'))}")
    return "".join(f" · {part}" for part in parts)


class SessionState(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def __setitem__(self, key: str, value: Any) -> None: ...


def mark_own(state: SessionState, keys: Iterable[str] = (), providers: Iterable[str] = ()) -> None:
    """Remember that this session's button just acted on these keys (ids) and providers (titles), so `toasts`
    skips the alerts that restate it. Called from the button's callback, before the action."""
    now = client_time()
    marks = [m for m in state.get(OWN, []) if m["since"] > now - OWN_SECONDS]
    marks.append({"since": now, "keys": set(keys), "providers": set(providers)})
    state[OWN] = marks


def own(alert: dict[str, Any], marks: Iterable[dict[str, Any]]) -> bool:
    """Whether the alert only restates an action of this session: key alerts about keys it acted on, and the
    "keys in rotation again, no answer yet" update of a provider's (or the pool's) incident after it reset that
    provider. A provider left with no key by the action is news, and so is a recovery (only an answer declares
    one): both are still toasted."""
    for mark in marks:
        if alert["at"] < mark["since"] - 1.0 or alert["at"] > mark["since"] + OWN_SECONDS:
            continue
        ids = key_ids(alert)
        if ids and set(ids) <= mark["keys"]:
            return True
        if alert["state"] == "updated" and mark["providers"]:
            title = alert.get("id", "").removeprefix("provider:")
            if alert.get("id") == "exhausted" or title in mark["providers"]:
                return True
    return False


_ICONS = {"open": ":material/notifications_active:", "updated": ":material/update:"}


@st.fragment(run_every=CHECK_SECONDS)
def toasts(client: SmartClient) -> None:
    """Runs on every page: toasts what happened since the last look.

    The look is marked seen only once its toasts are queued: a rerun that interrupts this run stops it at the
    first `st.toast` (Streamlit checks for a rerun before it queues an element), and marking first lost the
    alerts of that look for good."""
    new, seen_at = fresh(client.admin.alerts(50), st.session_state.get(SEEN))
    marks = st.session_state.get(OWN, [])
    now = client_time()
    for text, state in grouped([alert for alert in new if not own(alert, marks) and not quiet(alert, now)]):
        st.toast(md_escape(text), icon=_ICONS.get(state, ":material/check_circle:"), duration="long")
    st.session_state[SEEN] = seen_at


def alerts_frame(alerts: list[dict[str, Any]]) -> pd.DataFrame:
    """The list, newest first, one row per alert (one per bulk change, however many keys). An alert whose
    incident moved on since says so (`open → resolved 12:04:05`), so no row reads "open" after it ended."""
    later: dict[str, tuple[str, float]] = {}
    rows = []
    now = client_time()
    for alert in alerts:
        state = alert["state"]
        after = later.get(alert["id"])
        moved = f"{state} → {after[0]} {clock_time(after[1])}" if after and after[0] != state else state
        rows.append(
            {
                "Time": datetime.fromtimestamp(alert["at"]),
                "State": moved + hushed_text(alert, now),
                "Alert": alert["text"],
            }
        )
        later.setdefault(alert["id"], (state, alert["at"]))
    return pd.DataFrame(rows, columns=list(ALERT_COLUMNS)).astype({"Time": "datetime64[ns]"})


MUTE_CHOICES: dict[str, float] = {"15 min": 900.0, "1 hour": 3600.0, "4 hours": 14400.0, "1 day": 86400.0}
_PICKED = "alerts_incident"
_DONE = "alerts_action_done"


def incident_choices(alerts: list[dict[str, Any]]) -> dict[str, str]:
    """Incident id → the newest text of its alerts, newest first: what the Acknowledge and Mute buttons act on."""
    choices: dict[str, str] = {}
    for alert in alerts:
        choices.setdefault(alert["id"], f"{alert['state']}: {alert['text']}")
    return choices


def incident_actions(client: SmartClient, alerts: list[dict[str, Any]], by: str | None) -> None:
    """Acknowledge or mute one incident of the list. The callbacks only act and leave their message in the
    session; it is drawn next to the buttons (a callback must not draw: it may run inside a fragment's rerun)."""
    choices = incident_choices(alerts)
    if not choices:
        return

    def acknowledge() -> None:
        incident = st.session_state.get(_PICKED)
        done = incident is not None and client.admin.acknowledge_alert(incident, by=by)
        text = choices.get(incident or "", incident or "")
        st.session_state[_DONE] = (
            f"Acknowledged{who(by)}: {text}" if done else "That incident has ended: nothing left to acknowledge."
        )

    def mute() -> None:
        incident = st.session_state.get(_PICKED)
        span = str(st.session_state.get("alerts_mute_for", "1 hour"))
        done = incident is not None and client.admin.mute_alert(incident, MUTE_CHOICES.get(span, 3600.0), by=by)
        st.session_state[_DONE] = f"Muted for {span}{who(by)}: {choices.get(incident or '', '')}" if done else ""

    with st.container(horizontal=True, vertical_alignment="bottom"):
        st.selectbox(
            "Incident",
            list(choices),
            format_func=lambda incident: choices.get(incident, incident),
            key=_PICKED,
            width=420,
        )
        st.button("Acknowledge", icon=":material/done_all:", on_click=acknowledge, key="alerts_acknowledge")
        st.selectbox("Mute for", list(MUTE_CHOICES), index=1, key="alerts_mute_for", width=110)
        st.button("Mute", icon=":material/notifications_off:", on_click=mute, key="alerts_mute")
    if done := st.session_state.get(_DONE):
        st.caption(md_escape(done))
