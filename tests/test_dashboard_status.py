"""The problems-first Status page: its frames and actions as plain functions, and the page under AppTest against
the simulator over real HTTP (the dashboard's client is built from env vars, as in tests/test_dashboard.py).

AppTest cannot tick dataframe rows, but a keyed `st.dataframe`'s selection lives in `st.session_state[key]`,
which AppTest may set before a run, as the browser's grid sends it with a rerun: the tests select rows that way
and then click the real buttons.
"""

from __future__ import annotations

import ast
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from config.settings import load_settings
from dashboard import key_table, status, table_selection
from dashboard.alerts import grouped
from dashboard.client import get_client
from dashboard.text import STATE_COLORS, STATE_LABELS, state_label
from llms import KeyStatus, ProviderStatus, SmartClient
from llms.alerts import advance, answers, incidents
from llms.key_states import KeyState
from llms.state import store_from_url
from simulator import Simulator
from tests.conftest import ROOT, SECRETS
from tests.test_dashboard import _OURS, STATUS, app, availability, captions, chat, cool, use_keys

NOW = 1_900_000_000.0


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> Iterator[pytest.MonkeyPatch]:
    """No keys from the developer's shell; a SQLite store in the test's directory; a fresh cached client."""
    for name in list(os.environ):
        if _OURS.search(name):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLM_STATE_URL", f"sqlite://{os.path.join(tmp_path, 'state.db')}")
    st.cache_resource.clear()
    yield monkeypatch
    st.cache_resource.clear()


# --- plain functions --------------------------------------------------------------------------------------------


def key(
    key_id: str, reason: str | None = None, remaining: float = 0.0, disabled: bool = False, **more: object
) -> KeyStatus:
    provider = key_id.split(":")[0]
    values: dict[str, object] = {
        "key_id": key_id,
        "hint": f"{provider[:3]}…{key_id[-1] * 4}",
        "provider": provider,
        "group": None,
        "available": reason is None and not disabled,
        "reason": "disabled" if disabled else reason,
        "cooldown_remaining": remaining,
        "cooldown_until": NOW + remaining if remaining else None,
        "consecutive_failures": 0,
        "successes": 0,
        "failures": 0,
        "last_error": None,
        "last_used": None,
        "disabled": disabled,
    }
    values.update(more)
    return KeyStatus(**values)  # type: ignore[arg-type]


def provider(name: str, *keys: KeyStatus, paused_until: float | None = None) -> ProviderStatus:
    return ProviderStatus(
        provider=name,
        title=name.title(),
        model="m",
        available=0 if paused_until else sum(k.available for k in keys),
        total=len(keys),
        problem=None,
        paused_until=paused_until,
        pause_reason="upstream" if paused_until else None,
        keys=keys,
    )


FLEET = [
    provider(
        "groq",
        key("groq:1"),
        key("groq:2", "rate_limit", 415.2),
        key("groq:3", "invalid_key", 86_400.0, last_error="Invalid API Key"),
        key("groq:4", disabled=True),
        key("groq:5", "errors", 30.0, group="team-a"),
        key("groq:6", "spend_cap", 9 * 86_400.0),
    ),
    provider("openrouter", key("openrouter:1"), key("openrouter:2"), paused_until=NOW + 8),
]


def test_states_have_distinct_words_and_a_revoked_key_never_reads_like_a_rate_limit() -> None:
    rows = {r.key.key_id: r for r in status.rows_of(FLEET, NOW)}
    assert [rows[k].state for k in ("groq:1", "groq:2", "groq:3", "groq:4", "groq:5", "groq:6")] == [
        "available",
        "rate_limit",
        "invalid_key",
        "disabled",
        "errors",
        "spend_cap",
    ]
    assert rows["openrouter:1"].state == "paused"  # available itself, but its provider rests
    frame = key_table.key_frame(list(rows.values()), NOW, pauses={"openrouter": "OpenRouter model busy upstream"})
    labels = dict(zip(frame["Key"], (_label(s) for s in frame["State"]), strict=True))
    assert labels["groq:2"] == "rate-limited"
    assert labels["groq:3"] == "invalid key"
    assert labels["groq:4"] == "disabled"
    assert labels["groq:5"] == "resting after errors"
    assert labels["openrouter:1"] == "provider paused"
    assert len(set(labels.values())) == 7, "every state reads differently"
    reasons = dict(zip(frame["Key"], frame["Reason"], strict=True))
    assert reasons["groq:3"] == "invalid API key" and "rate" not in reasons["groq:3"]  # the message adds nothing
    assert "_" not in "".join(labels.values()) + "".join(frame["Reason"]), "no internal names"


def test_a_column_is_one_entry_of_the_key_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/architecture.md: a value already on `KeyStatus` is one `Column` in `key_table.COLUMNS` — drawn, filled
    and typed from that entry, in the table's order."""
    column = key_table.Column(st.column_config.TextColumn("Seen as"), lambda s: f"{s.key.key_id} is {s.row.state}")
    monkeypatch.setitem(key_table.COLUMNS, "Seen as", column)
    monkeypatch.setattr(key_table, "KEY_COLUMNS", {name: c.config for name, c in key_table.COLUMNS.items()})
    frame = key_table.key_frame(status.rows_of(FLEET, NOW), NOW)
    assert list(frame.columns)[-1] == "Seen as" and list(key_table.KEY_COLUMNS)[-1] == "Seen as"
    assert frame.set_index("Key")["Seen as"].to_dict() == {row.key.key_id: f"{row.key.key_id} is {row.state}"
                                                          for row in status.rows_of(FLEET, NOW)}  # fmt: skip


def test_countdown_column_is_numeric_and_sorts_by_time() -> None:
    frame = key_table.key_frame(status.rows_of(FLEET, NOW), NOW)
    assert frame["Frees in"].dtype == "float64"
    ordered = frame.dropna(subset=["Frees in"]).sort_values("Frees in", kind="stable")
    assert ordered["Key"].tolist() == ["openrouter:1", "openrouter:2", "groq:5", "groq:2"]
    assert ordered["Frees in"].tolist() == [8, 8, 30, 416]  # whole seconds, rounded up
    by_key = frame.set_index("Key")
    # a revoked key does not "free in 86400 s", nor a spend cap in 9 days: they wait for a person
    assert by_key["Frees in"].isna()[["groq:1", "groq:3", "groq:4", "groq:6"]].all()
    assert by_key["Frees at"].isna()[["groq:3", "groq:6"]].all()


def test_filter_defaults_to_keys_needing_attention_and_search_narrows() -> None:
    rows = status.rows_of(FLEET, NOW)
    ids = lambda shown: [r.key.key_id for r in shown]  # noqa: E731
    attention = ids(status.shown_rows(rows, status.NEEDS_ATTENTION, ""))
    assert attention == ["groq:3", "groq:6", "groq:4"], "revoked and capped first, then disabled"
    healing = ids(status.shown_rows(rows, status.SELF_HEALING, ""))
    assert healing == ["groq:2", "groq:5", "openrouter:1", "openrouter:2"]
    assert ids(status.shown_rows(rows, status.ALL, "")) == [*attention, *healing, "groq:1"], "problems first"
    assert status.shown_rows(rows, None, "") == status.shown_rows(rows, status.ALL, ""), "no filter picked: all"
    assert ids(status.shown_rows(rows, "Parked", "")) == ["groq:3", "groq:6"]
    assert ids(status.shown_rows(rows, "Disabled", "")) == ["groq:4"]
    assert ids(status.shown_rows(rows, status.ALL, "TEAM-")) == ["groq:5"]  # group, any case
    assert ids(status.shown_rows(rows, status.ALL, "ope…")) == ["openrouter:1", "openrouter:2"]  # hint
    assert ids(status.shown_rows(rows, status.NEEDS_ATTENTION, "groq:1")) == []
    # a selected key stays listed whatever the filter, so the selection never points at a vanished row
    assert ids(status.shown_rows(rows, status.NEEDS_ATTENTION, "groq:3", keep=["groq:1"])) == ["groq:3", "groq:1"]


def test_provider_summary_counts_categories_and_names_the_next_key() -> None:
    groq, openrouter = (status.summarize(p, NOW) for p in FLEET)
    assert (groq.available, groq.cooling, groq.parked, groq.disabled) == (1, 2, 2, 1)
    assert groq.note == "groq:5 frees in 30 s"
    table = status.summary_table([groq, openrouter]).splitlines()
    assert table[2] == (
        "| **Groq** | :material/check_circle: 1/6 available · :material/schedule: 2 cooling · :material/report: 2 "
        "parked · :material/block: 1 disabled | groq:5 frees in 30 s |"
    )
    # only the states keys are in; Material icons, never emoji (boxes without an emoji font)
    assert table[3].startswith(
        "| **Openrouter** | :material/check_circle: 0/2 available · :material/schedule: 2 cooling |"
    )
    assert (openrouter.available, openrouter.cooling) == (0, 2)
    assert openrouter.note.startswith("Paused: Openrouter model busy upstream — back in 8 s")


def test_busiest_keys_chart_keeps_a_fixed_number_of_bars_at_ten_thousand_keys() -> None:
    history = [
        {"provider": p, "key_id": f"{p}:{i}", "successes": i, "rate_limits": 1, "errors": 0}
        for p in ("groq", "gemini")
        for i in range(1, 5001)
    ]
    frames = status.top_keys(history)
    assert {p: len(f) for p, f in frames.items()} == {"groq": status.TOP_KEYS, "gemini": status.TOP_KEYS}
    totals = frames["groq"].sum(axis=1).tolist()
    assert totals == list(range(5001, 4986, -1)), "busiest first"
    assert frames["groq"].index[0] == "groq:5000"
    assert list(frames["groq"].columns) == list(status.CHART_SERIES)


# --- the page ---------------------------------------------------------------------------------------------------


def status_page(at: AppTest) -> AppTest:
    at.switch_page(STATUS).run()
    assert not at.exception, at.exception
    return at


def grid(at: AppTest) -> Any:
    """The key table as last drawn (its widget key carries a generation: `status_keys_3`)."""
    return next(d for d in at.dataframe if (d.key or "").startswith(table_selection.TABLE_KEY))


def _label(pills: Any) -> str:
    """A State cell (a list of one pill) as its words."""
    return ", ".join(pills)


def table(at: AppTest) -> dict[str, str]:
    """Key id → state as the key table shows it ({} when the page says there is nothing to list)."""
    found = [d for d in at.dataframe if (d.key or "").startswith(table_selection.TABLE_KEY)]
    if not found:
        return {}
    frame = found[0].value
    return dict(zip(frame["Key"], (_label(s) for s in frame["State"]), strict=True))


def ticked(at: AppTest) -> list[int]:
    """The rows a fresh grid starts with ticked (its `selection_default`; none for a grid that keeps its own)."""
    default = grid(at).proto.selection_default
    return json.loads(default)["selection"]["rows"] if default else []


def notices(at: AppTest) -> list[str]:
    """What the page's own buttons said (alerts raise toasts too, with other icons)."""
    return [t.value for t in at.toast if t.icon == ":material/info:"]


def selected_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if "selected: " in c.value or c.value.startswith("Tick rows"))


def bulk_buttons_enabled(at: AppTest) -> list[bool]:
    return [not b.disabled for b in at.button if b.label in ("Reset", "Test", "Disable", "Enable")]


def show(at: AppTest, choice: str) -> None:
    at.button_group(key="status_filter").set_value(choice).run()
    assert not at.exception, at.exception


def select(at: AppTest, *key_ids: str) -> str:
    """Tick rows by key id, as a browser would: positions in the table as last drawn, under the grid's key.
    Returns that key."""
    shown, key = list(table(at)), grid(at).key
    at.session_state[key] = {"selection": {"rows": [shown.index(k) for k in key_ids], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    return key


def click(at: AppTest, label: str) -> None:
    [button] = [b for b in at.button if b.label == label]
    button.click().run()
    assert not at.exception, at.exception


def disabled_ids(client: SmartClient) -> set[str]:
    return {k.key_id for s in client.admin.provider_statuses() for k in s.keys if k.disabled}


@pytest.mark.slow
def test_table_opens_on_problems_and_all_is_one_click_away(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 3}, steps={"groq:2": ["invalid_key"]}, limits={"groq:3": (0, 60.0)})
    at = app().run()
    client = get_client()
    for _ in range(2):  # groq:1 answers both; groq:2 is parked as invalid, groq:3 rate-limited on the way
        chat(at, "Hello")
    status_page(at)
    assert table(at) == {"groq:2": "invalid key"}, "opens on the keys that need a person"
    assert not any(secret in grid(at).value.to_string() for secret in SECRETS["groq"])
    assert grid(at).value.set_index("Key").loc["groq:2", "Reason"] == "HTTP 401: invalid API key"
    summary = " ".join(m.value for m in at.markdown)
    assert "1/3 available · :material/schedule: 1 cooling · :material/report: 1 parked | groq:3 frees in" in summary
    assert re.search(r"1 key frees itself \(1 rate-limited\): the next, groq:3, in (5[5-9]|6[01]) s", summary)
    show(at, status.SELF_HEALING)
    frame = grid(at).value.set_index("Key")
    assert list(frame.index) == ["groq:3"]
    assert 55 <= frame.loc["groq:3", "Frees in"] <= 61 and frame["Frees in"].dtype == "float64"
    assert frame.loc["groq:3", "Reason"] == "HTTP 429: rate limit, provider says 60 s"
    show(at, status.ALL)
    assert list(table(at)) == ["groq:2", "groq:3", "groq:1"], "needing a person, freeing itself, available"
    at.text_input(key="status_search").input("groq:3").run()
    assert list(table(at)) == ["groq:3"]
    client.admin.disable_key("groq:1")
    at.text_input(key="status_search").input("").run()
    show(at, "Disabled")
    assert table(at) == {"groq:1": "disabled"}


def test_bulk_disable_and_enable_act_on_exactly_the_selected_keys(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 4})
    at = status_page(app().run())
    client = get_client()
    show(at, status.ALL)
    select(at, "groq:2", "groq:4")
    assert "2 selected: groq:2, groq:4" in [c.value for c in at.caption]
    click(at, "Disable")
    assert disabled_ids(client) == {"groq:2", "groq:4"}
    assert notices(at)[0].startswith("Disabled 2 keys: groq:2, groq:4")
    settings = load_settings(dict(os.environ), dotenv_path=None)
    with SmartClient(settings, store=store_from_url(settings.state_url)) as other:  # another process's view
        assert disabled_ids(other) == {"groq:2", "groq:4"}
    assert [b.disabled for b in at.button if b.label in ("Reset", "Test", "Disable", "Enable")] == [True] * 4
    show(at, status.NEEDS_ATTENTION)
    assert table(at) == {"groq:2": "disabled", "groq:4": "disabled"}
    select(at, "groq:4")
    click(at, "Enable")
    assert disabled_ids(client) == {"groq:2"}
    assert table(at) == {"groq:2": "disabled"}


def test_selection_follows_the_key_when_rows_move(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    """Streamlit reports positions; the page keeps ids. A key recovering above the selected one must not shift
    the selection onto its neighbour."""
    use_keys(env, sim, {"groq": 3})
    at = status_page(app().run())
    client = get_client()
    cool(client, "groq:1", "groq:3")
    show(at, status.SELF_HEALING)
    assert list(table(at)) == ["groq:1", "groq:3"]
    before = select(at, "groq:3")
    assert ticked(at) == [] and grid(at).key == before, "the grid keeps the tick it sent"
    client.reset_key("groq:1")  # groq:1 leaves the "needs attention" table: groq:3 moves up a row
    at.run()
    assert list(table(at)) == ["groq:3"]
    assert grid(at).key != before and ticked(at) == [0], "a fresh grid, starting with groq:3 ticked"
    assert selected_caption(at) == "1 selected: groq:3"
    at.run()  # the fresh grid sends nothing of its own yet: the selection stays
    assert selected_caption(at) == "1 selected: groq:3"
    click(at, "Disable")
    assert disabled_ids(client) == {"groq:3"}


def test_rows_changing_below_the_selection_keep_the_grid(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    """A new grid loses the operator's scroll and sort: only a selection that would move earns one."""
    use_keys(env, sim, {"groq": 3})
    at = status_page(app().run())
    client = get_client()
    cool(client, "groq:1", "groq:3")
    show(at, status.SELF_HEALING)
    key = select(at, "groq:1")
    client.reset_key("groq:3")
    at.run()
    assert list(table(at)) == ["groq:1"] and grid(at).key == key
    assert selected_caption(at) == "1 selected: groq:1"


def test_a_cleared_selection_stays_cleared_whatever_the_grid_sends_back(
    env: pytest.MonkeyPatch, sim: Simulator
) -> None:
    """The browser's grid draws a selection set from Python but keeps its own, and sends that back with the next
    rerun: after Reset cleared the selection, the next refresh read "1 selected" with no row ticked, and the
    buttons acted on it. The page never sets a drawn grid's selection: a cleared one is a fresh grid."""
    use_keys(env, sim, {"groq": 3})
    at = status_page(app().run())
    client = get_client()
    show(at, status.ALL)
    key = select(at, "groq:2")
    sent = at.session_state[key]
    click(at, "Reset")
    assert "Reset 1 key: groq:2" in notices(at)[0]
    assert selected_caption(at).startswith("Tick rows") and not any(bulk_buttons_enabled(at))
    at.session_state[key] = sent  # what the old grid still holds, sent with the next refresh
    at.run()
    assert selected_caption(at).startswith("Tick rows"), "a selection nobody ticked"
    assert not any(bulk_buttons_enabled(at))
    assert grid(at).key != key and ticked(at) == []
    select(at, "groq:3")  # the fresh grid works as any
    click(at, "Disable")
    assert disabled_ids(client) == {"groq:3"}


def test_returning_to_the_page_ticks_what_stayed_selected(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    """Another page drops the grid; coming back, a new grid in the browser starts from the kept selection."""
    use_keys(env, sim, {"groq": 2})
    at = status_page(app().run())
    show(at, status.ALL)
    select(at, "groq:2")
    at.switch_page("pages/chat.py").run()
    status_page(at)
    show(at, status.ALL)
    assert selected_caption(at) == "1 selected: groq:2" and ticked(at) == [1]


@pytest.mark.slow
def test_reset_all_leaves_invalid_keys_parked_unless_asked(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 4}, steps={"groq:1": ["invalid_key"]})
    at = app().run()
    chat(at, "Hello")  # groq:1 is parked as invalid, groq:2 answers
    client = get_client()
    cool(client, "groq:3")
    client.admin.disable_key("groq:4")
    status_page(at)
    show(at, status.ALL)
    assert table(at) == {"groq:1": "invalid key", "groq:4": "disabled", "groq:3": "rate-limited", "groq:2": "available"}
    click(at, "Reset all")
    assert table(at) == {"groq:1": "invalid key", "groq:4": "disabled", "groq:2": "available", "groq:3": "available"}
    assert "Left 1 key parked" in notices(at)[0]
    at.checkbox(key="status_include_parked").check().run()
    click(at, "Reset all")
    show(at, status.NEEDS_ATTENTION)
    assert table(at) == {"groq:4": "disabled"}, "reset never enables"
    assert disabled_ids(client) == {"groq:4"}


def test_reload_keys_reads_the_environment_again_without_a_restart(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 2}, steps={"groq:1": ["invalid_key"]})
    at = app().run()
    chat(at, "Hello")  # groq:1 is parked as invalid
    status_page(at)
    sim.add_key("groq", SECRETS["groq"][2], name="groq:3")
    env.setenv("GROQ_API_KEY_3", SECRETS["groq"][2])
    env.delenv("GROQ_API_KEY_2")
    click(at, "Reload keys")
    assert "Added: groq:3. Removed: groq:2." in notices(at)[0]
    assert availability(at)["Groq"] == "1/2"
    assert table(at) == {"groq:1": "invalid key"}  # a key that stays keeps its state


def test_alerts_are_listed_on_the_status_page(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 1}, steps={"groq:1": ["invalid_key"]})
    at = chat(app().run(), "Hello")
    status_page(at)
    alerts = next(d.value for d in at.dataframe if list(d.value.columns) == ["Time", "State", "Alert"])
    assert set(alerts["State"]) == {"open"}
    assert any(text.startswith("Groq has no key available: 1 parked as invalid") for text in alerts["Alert"])
    assert not any(secret in alerts.to_string() for secret in SECRETS["groq"])


def test_key_alerts_of_one_look_are_one_toast_per_kind() -> None:
    ids = [f"groq:{i}" for i in range(1, 70)]
    new = [
        {"id": f"key:{k}", "state": "open", "text": f"{k} (gsk…{k[-1] * 4}) is disabled by an operator"} for k in ids
    ]
    new.append(
        {"id": "provider:Groq", "state": "open", "text": "Groq has no key available: 69 disabled by an operator"}
    )
    new.append({"id": "key:groq:70", "state": "resolved", "text": "groq:70 (gsk…0000) is back in rotation"})
    assert grouped(new) == [
        ("Groq has no key available: 69 disabled by an operator", "open"),
        ("69 keys are disabled by an operator: groq:1, groq:2, groq:3, groq:4, groq:5 and 64 more", "open"),
        ("groq:70 (gsk…0000) is back in rotation", "resolved"),
    ]


def test_a_disabled_key_is_neither_parked_nor_back_in_rotation() -> None:
    """Disabling 69 revoked keys announced 69 times "… is back in rotation", enabling them 69 "parked" alerts."""
    revoked = provider("groq", key("groq:1", "invalid_key", 86_400.0), key("groq:2"))
    disabled = provider("groq", key("groq:1", disabled=True), key("groq:2"))
    document = advance({}, incidents([revoked]), NOW)
    assert [a["text"] for a in document["new"]] == ["groq:1 (gro…1111) is parked as invalid"]
    document = advance(document, incidents([disabled]), NOW + 1)
    assert document["new"] == [], "still out of rotation: nothing to announce"
    document = advance(document, incidents([revoked]), NOW + 2)
    assert document["new"] == [], "enabled, and still parked"
    fresh = advance({}, incidents([disabled]), NOW)
    assert [a["text"] for a in fresh["new"]] == ["groq:1 (gro…1111) is disabled by an operator"]
    ended = advance(fresh, incidents([provider("groq", key("groq:1"), key("groq:2"))]), NOW + 1)
    assert [a["text"] for a in ended["new"]] == ["groq:1 (gro…1111) is enabled and back in rotation"]


def alert_toasts(at: AppTest) -> list[str]:
    return [t.value.replace("\\", "") for t in at.toast if t.icon != ":material/info:"]


def alert_rows(at: AppTest) -> list[str]:
    return next(d.value for d in at.dataframe if list(d.value.columns) == ["Time", "State", "Alert"])["Alert"].tolist()


@pytest.mark.slow
def test_a_bulk_action_is_one_toast_here_one_alert_elsewhere_and_one_row(
    env: pytest.MonkeyPatch, sim: Simulator
) -> None:
    """Disabling 69 keys fired 69 toasts, and the acting session got its own notice plus the alert restating it;
    the alert list had a row per key, pushing provider alerts out."""
    use_keys(env, sim, {"groq": 8})
    at = status_page(app().run())
    elsewhere = status_page(app().run())  # another operator's tab, open before the change
    show(at, status.ALL)
    select(at, *(f"groq:{i}" for i in range(1, 8)))
    click(at, "Disable")
    assert notices(at) == [
        "Disabled 7 keys: groq:1, groq:2, groq:3, groq:4, groq:5 and 2 more. They stay out of rotation until Enable."
    ]
    seen = alert_toasts(at)
    at.run()  # alerts raised after this run's look would be toasted in the next
    assert seen + alert_toasts(at) == [], "the acting session's notice already said it"
    elsewhere.run()
    disabled = "7 keys are disabled by an operator: groq:1, groq:2, groq:3, groq:4, groq:5 and 2 more"
    assert alert_toasts(elsewhere) == [disabled]
    assert alert_rows(elsewhere) == [disabled], "one row for the change, not seven"
    assert get_client().admin.alerts()[0]["key_ids"] == [f"groq:{i}" for i in range(1, 8)]


def test_per_provider_reset(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"openrouter": 2, "groq": 2})
    at = status_page(app().run())
    client = get_client()
    cool(client, "groq:1", "openrouter:1")
    show(at, status.SELF_HEALING)
    click(at, "Reset Groq")
    assert table(at) == {"openrouter:1": "rate-limited"}
    assert "reset" in next(d for d in at.dataframe if d.key is None and "Event" in d.value).value["Event"].tolist()


def test_test_buttons_check_in_the_background_and_show_the_last_verdict(
    env: pytest.MonkeyPatch, sim: Simulator
) -> None:
    use_keys(env, sim, {"groq": 2}, steps={"groq:2": ["invalid_key"]})
    at = status_page(app().run())
    client = get_client()
    show(at, status.ALL)
    select(at, "groq:1", "groq:2")
    click(at, "Test")
    assert notices(at)[0].startswith("Checking 2 keys in the background")
    deadline = time.monotonic() + 10
    while client.admin.checks()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    at.run()
    frame = at.dataframe[0].value.set_index("Key")
    assert frame.loc["groq:1", "Last check"].startswith("OK · ")
    assert frame.loc["groq:2", "Last check"].startswith("failed: invalid key (HTTP 401)")
    assert _label(frame.loc["groq:2", "State"]) == "invalid key"  # a check is recorded like any other call
    assert frame.loc["groq:2", "Reason"] == "HTTP 401: invalid API key"  # the probe's status: it is in no log
    click(at, "Test all keys")
    assert notices(at)[0].startswith(("Checking every key", "A check run is still going"))


@pytest.mark.slow
def test_charts_have_a_fixed_height_whatever_the_key_count(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    for count in (1, 8):
        use_keys(env, sim, {"groq": count})
        st.cache_resource.clear()
        at = app().run()
        for _ in range(count):  # round robin: each key answers once
            chat(at, "Hello")
        status_page(at)
        [chart] = at.get("vega_lite_chart")
        spec = json.loads(chart.proto.spec)
        assert spec.get("height") == status.CHART_HEIGHT, (count, spec.get("height"))
        assert f"top {count} keys by requests" in " ".join(c.value for c in at.caption)


def test_state_labels_cover_every_cooldown_reason_in_words_and_colour_without_emoji() -> None:
    """A machine without an emoji font drew the state marks as boxes: the words carry the state, the pill's
    colour (CSS, no font) helps."""
    for reason in KeyState:
        assert reason in STATE_LABELS and reason in STATE_COLORS, reason
        assert all(ord(c) < 0x2000 for c in state_label(reason)), state_label(reason)


@pytest.mark.slow
def test_status_page_says_why_in_words(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    steps = {"openrouter:1": ["upstream_rate_limit"], "groq:1": ["spend_cap"], "gemini:1": ["no_quota"]}
    use_keys(env, sim, {"openrouter": 1, "groq": 1, "gemini": 1}, steps=steps)
    env.setenv("GEMINI_CHAT_MODEL", "gemini-2.5-pro")
    at = chat(app().run(), "Hello")
    assert any("All API keys are cooling down" in e.value for e in at.error)
    status_page(at)
    assert availability(at) == {"OpenRouter": "0/1", "Groq": "0/1", "Gemini": "0/1"}
    assert "| Paused: OpenRouter model busy upstream — back in" in " ".join(m.value for m in at.markdown)
    show(at, status.ALL)
    frame = grid(at).value.set_index("Key")
    assert _label(frame.loc["openrouter:1", "State"]) == "provider paused"
    assert re.fullmatch(r"HTTP 400: Groq spend cap — until \d+ \w+", frame.loc["groq:1", "Reason"])
    assert frame.loc["gemini:1", "Reason"] == "HTTP 429: no quota for gemini-2.5-pro in this project"
    assert frame.loc["gemini:1", "Models resting"].startswith("gemini-2.5-pro (configuration problem, ")


def test_the_key_table_names_the_models_a_key_rests_for(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    """groq:1 answered 429 for another model: it still answers the default one, and the table says what it rests
    for and how long."""
    use_keys(env, sim, {"groq": 2}, steps={"groq:1": ["rate_limit"]})
    env.setenv("LLM_ALIAS_BIG", "groq/openai/gpt-oss-120b")
    at = app().run()
    at.selectbox(key="_chat_model").set_value("big").run()
    chat(at, "Hello")
    status_page(at)
    show(at, status.ALL)
    frame = grid(at).value.set_index("Key")
    assert _label(frame.loc["groq:1", "State"]) == state_label("available")
    assert frame.loc["groq:1", "Models resting"].startswith("openai/gpt-oss-120b (rate-limited, ")
    assert frame.loc["groq:2", "Models resting"] == ""


def badges(at: AppTest) -> list[str]:
    """The fallback badges under the chat's answers, as read."""
    return [m.value.replace("\\", "") for m in at.markdown if m.value.startswith(":orange-badge[")]


@pytest.mark.slow
def test_a_failing_provider_is_named_and_a_reset_is_not_a_recovery(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    """Every Groq key answering 503 read "0/3 available · 3 cooling" and the badge "5 keys rate-limited"; "Reset
    Groq" then announced "Groq can answer again" while Groq still answered 503."""
    use_keys(env, sim, {"groq": 3, "gemini": 1})
    for secret in SECRETS["groq"][:3]:
        sim.set_steps(secret, then="overloaded")
    env.setenv("LLM_ERROR_THRESHOLD", "1")
    env.setenv("LLM_ERROR_COOLDOWN", "40")
    at = chat(app().run(), "Hello")  # each Groq key answers 503 and rests; Gemini answers
    [badge] = badges(at)
    assert "Groq → Gemini · Groq is failing: every key answered 503 · next frees in" in badge
    status_page(at)
    [banner] = [e.value.replace("\\", "") for e in at.error]
    assert re.fullmatch(r"Groq is failing: every key answered 503 · retry in (3\d|40) s", banner)
    assert "| **Groq** | :red[:material/cloud_off: **failing**: every key answered 503] · " in summary_text(at)
    assert re.search(r"\| retry in (3\d|40) s \|", summary_text(at))

    elsewhere = status_page(app().run())  # another operator's tab
    click(at, "Reset Groq")
    assert notices(at) == [
        "Groq's keys were reset by you: 3 keys back in rotation. Recovery is declared when Groq answers again."
    ]
    elsewhere.run()
    assert alert_toasts(elsewhere) == [
        "Groq has keys in rotation again, but no answer yet: recovery is declared on its next answer"
    ]
    at.run()
    assert alert_toasts(at) == [], "the acting session's notice said it"
    assert not any("can answer again" in row for row in alert_rows(at))

    at.switch_page("pages/chat.py").run()
    chat(at, "Still down?")  # Groq still answers 503: the incident opens again
    elsewhere.run()
    assert [t for t in alert_toasts(elsewhere) if t.startswith("Groq has no key available: 3 resting after errors")]

    for secret in SECRETS["groq"][:3]:
        sim.set_steps(secret, then="ok")
    status_page(at)
    click(at, "Reset Groq")
    at.switch_page("pages/chat.py").run()
    chat(at, "Back?")  # a real answer from Groq: now it has recovered
    assert "groq · " in captions(at)[-1]
    elsewhere.run()
    assert "Groq can answer again: it answered" in alert_toasts(elsewhere)
    at.run()
    assert "Groq can answer again: it answered" in alert_toasts(at), "a recovery is news, even after one's reset"


def summary_text(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("| Provider |")).replace("\\", "")


@pytest.mark.slow
def test_the_reason_says_what_the_provider_answered_not_the_state(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    """Reason read "rate-limited" beside State "rate-limited"; the cause was in "Last error", past a sideways
    scroll. Now it is the HTTP status and the cause, in the third column."""
    steps = {"groq:1": ["rate_limit_daily"], "groq:2": ["server_error"] * 2, "groq:3": ["no_credits"]}
    use_keys(env, sim, {"groq": 4}, steps=steps)
    env.setenv("LLM_ERROR_THRESHOLD", "2")
    at = app().run()
    for _ in range(3):
        chat(at, "Hello")
    status_page(at)
    show(at, status.ALL)
    frame = grid(at).value
    assert list(frame.columns[:5]) == ["Key", "State", "Reason", "Frees in", "Frees at"], "why, without scrolling"
    reasons = frame.set_index("Key")["Reason"]
    assert re.fullmatch(r"HTTP 429: daily limit, provider says [\d.]+ (min|h|s)", reasons["groq:1"]), reasons["groq:1"]
    assert reasons["groq:2"] == "HTTP 500: Internal Server Error, 2 times in a row"
    assert re.fullmatch(r"HTTP 402: Groq spend cap — until \d+ \w+", reasons["groq:3"])  # Groq's 402
    assert list(frame["Key"]) == ["groq:3", "groq:1", "groq:2", "groq:4"], "the key needing a person first"
    assert key_table.KEY_COLUMNS["Reason"]["width"] == key_table.REASON_WIDTH


def test_needs_a_person_is_not_buried_under_keys_that_free_themselves() -> None:
    """At 623 keys out of rotation, 554 rate-limited: the 69 that need a person open the table, and the rest are
    one line with their next free time."""
    keys = [key(f"groq:{i}", "rate_limit", 30.0 + i) for i in range(1, 555)]
    keys += [key(f"groq:{i}", "invalid_key", 86_400.0) for i in range(555, 624)]
    keys += [key(f"groq:{i}") for i in range(624, 1001)]
    rows = status.rows_of([provider("groq", *keys)], NOW)
    shown = status.shown_rows(rows, status.NEEDS_ATTENTION, "")
    assert len(shown) == 69 and {r.state for r in shown} == {"invalid_key"}
    headline = status.triage_text(rows, NOW)
    assert ":red[:material/build: **69 keys need a person**]" in headline
    assert "554 keys free themselves (554 rate-limited): the next, groq:1, in 31 s; all by " in headline
    assert headline.endswith(":green[:material/check_circle: 377 available]")


def test_cause_words_for_each_state() -> None:
    from dashboard.triage import Cooling, Failure, cause_text

    limited = key("groq:1", "rate_limit", 60.0)
    ok_429 = Failure(NOW, 429, "rate_limit")
    hint = Cooling(NOW, "rate_limit", None, "24.0 h", "per-day quota")
    assert cause_text(limited, ok_429, hint) == "HTTP 429: daily limit, provider says 24.0 h"
    nohint = Cooling(NOW, "rate_limit", "m2", "2 min", "no hint; adaptive policy, step 2")
    assert cause_text(limited, ok_429, nohint, "m") == (
        "HTTP 429: rate limit without a retry hint: rests 2 min (adaptive policy, step 2) (for m2)"
    )
    shared = Cooling(NOW, "rate_limit", None, "30 s", "shares a limit with groq:7")
    assert cause_text(limited, None, shared) == "shares a limit with groq:7, which was rate-limited"
    revoked = key("groq:2", "invalid_key", 86_400.0, last_error="API key not valid. Please pass a valid API key.")
    stale = Failure(NOW - 10, 429, "rate_limit")  # an older 429 says nothing of why it is parked now
    assert cause_text(revoked, stale) == "invalid API key — API key not valid. Please pass a valid API key."
    assert cause_text(key("groq:4", disabled=True)) == "disabled by an operator: out of rotation until Enable"


def test_an_open_alert_row_says_when_its_incident_moved_on() -> None:
    """An "open" row stayed open after a later row resolved it."""
    from dashboard.alerts import alerts_frame

    recent = [  # newest first, as `client.admin.alerts()` lists them
        {"at": NOW + 20, "id": "provider:Groq", "state": "resolved", "text": "Groq can answer again: it answered"},
        {"at": NOW + 10, "id": "provider:Groq", "state": "updated", "text": "Groq has keys in rotation again, …"},
        {"at": NOW, "id": "provider:Groq", "state": "open", "text": "Groq has no key available: 3 resting"},
        {"at": NOW, "id": "key:groq:1", "state": "open", "text": "groq:1 (gsk…1111) is parked as invalid"},
    ]
    states = alerts_frame(recent)["State"].tolist()
    assert states[0] == "resolved" and states[3] == "open"
    assert re.fullmatch(r"updated → resolved \d\d:\d\d:\d\d", states[1])
    assert re.fullmatch(r"open → resolved \d\d:\d\d:\d\d", states[2]), "the latest word on the incident"


def test_a_provider_recovers_on_an_answer_not_when_its_keys_come_back() -> None:
    down = provider("groq", key("groq:1", "errors", 40.0), key("groq:2", "errors", 40.0))
    back = provider("groq", key("groq:1"), key("groq:2"))
    answered = provider("groq", key("groq:1", successes=1), key("groq:2"))
    document = advance({}, incidents([down]), NOW, answers([down]))
    assert [a["state"] for a in document["new"]] == ["open", "open"]  # Groq, and the pool
    document = advance(document, incidents([back]), NOW + 1, answers([back]))  # reset, or the rest ended
    assert {a["id"]: a["state"] for a in document["new"]} == {"provider:Groq": "updated", "exhausted": "updated"}
    assert advance(document, incidents([back]), NOW + 2, answers([back]))["new"] == [], "said once"
    again = advance(document, incidents([down]), NOW + 2, answers([down]))
    assert {a["id"]: a["state"] for a in again["new"]} == {"provider:Groq": "open", "exhausted": "open"}
    done = advance(document, incidents([answered]), NOW + 3, answers([answered]))
    assert [a["text"] for a in done["new"]] == [
        "Groq can answer again: it answered",
        "Keys are available again: calls are being answered",
    ]
    assert done["open"] == {}


def test_no_page_script_draws_a_stray_string() -> None:
    """Streamlit's magic draws a page script's bare string literals: a constant's docstring in pages/status.py
    showed above "Key status" on every visit. Only the module docstring is exempt."""
    for path in [ROOT / "streamlit_app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        body = ast.parse(path.read_text()).body
        stray = [
            node.lineno
            for node in body[1:]
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        ]
        assert stray == [], f"{path.name}: bare strings on lines {stray} would be drawn on the page"
