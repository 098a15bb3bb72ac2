"""A key's own page, opened from the Status table, and who acted: the Status page's Alerts buttons acknowledge or
mute an incident, and with a password set the name typed at login names the operator in events and incidents.
AppTest against the simulator over real HTTP, as in tests/test_dashboard_status.py."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import key_page, status
from dashboard.client import get_client
from llms import SmartClient
from simulator import Simulator
from simulator import server as simulator_server
from tests.conftest import SECRETS
from tests.test_dashboard import STATUS, app, chat, use_keys
from tests.test_dashboard_status import click, env, select, show, status_page

__all__ = ["env"]
KEY_PAGE = "pages/key.py"


def open_key(at: AppTest, key_id: str) -> AppTest:
    at.query_params[key_page.PARAM] = key_id
    at.switch_page(KEY_PAGE).run()
    assert not at.exception, at.exception
    return at


def test_a_selected_row_opens_the_keys_own_page(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 3}, steps={"groq:2": ["invalid_key"]})
    at = app().run()
    for _ in range(2):  # groq:1 answers, groq:2 is parked as invalid on the way, groq:3 answers
        chat(at, "Hello")
    status_page(at)
    assert not [link for link in at.get("page_link") if link.proto.label.startswith("Open ")]
    select(at, "groq:2")
    [link] = [link for link in at.get("page_link") if link.proto.label.startswith("Open ")]
    assert (link.proto.label, link.proto.page, link.proto.query_string) == ("Open groq:2", "key", "key=groq%3A2")

    open_key(at, "groq:2")
    assert at.title[0].value == "groq:2"
    assert at.selectbox(key="key_page_pick_groq:2").value == "groq:2"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["State"] == "invalid key" and metrics["Frees in"] == "—"
    assert any("**Reason:** HTTP 401: invalid API key" in m.value for m in at.markdown)
    [requests, events] = at.dataframe
    assert set(requests.value["Key"]) == {"groq:2"} and len(requests.value) >= 1
    assert set(events.value["Key"]) == {"groq:2"} and list(events.value["Event"]) == ["cooled"]
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart"), "its hourly chart"
    page = " ".join(str(e.value) for e in [*at.markdown, *at.caption, *at.metric])
    page += requests.value.to_string() + events.value.to_string()
    assert not any(secret in page for secret in SECRETS["groq"]), "id and hint only"

    open_key(at, "groq:9")
    assert "No key groq:9 is configured" in at.warning[0].value and at.title[0].value == "groq:1"


def _settle_checks(client: SmartClient, timeout: float = 10.0) -> None:
    ends = time.monotonic() + timeout
    while client.admin.checks()["running"] and time.monotonic() < ends:
        time.sleep(0.02)
    assert not client.admin.checks()["running"]


def log_in(env: pytest.MonkeyPatch, name: str) -> AppTest:
    """The app behind a password, unlocked with `name` typed as who acts."""
    env.setenv("DASHBOARD_PASSWORD", "open sesame")
    at = app().run()
    at.text_input(key="auth_password").input("open sesame")
    at.text_input(key="auth_name").input(name)
    [unlock] = [b for b in at.button if b.label == "Unlock"]
    unlock.click().run()
    assert not at.exception and at.chat_input
    return at


def test_with_a_password_the_name_typed_at_login_names_who_acted(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 2})
    at = log_in(env, "Alice\x07 Operator")
    status_page(at)
    show(at, status.ALL)
    select(at, "groq:2")
    click(at, "Disable")
    client = get_client()
    assert next(e.detail for e in client.admin.events() if e.key_id == "groq:2") == "by Alice Operator"
    at.switch_page(STATUS).run()  # the Alerts list (its fragment ran with the page)
    assert at.selectbox(key="alerts_incident").value == "key:groq:2"
    click(at, "Acknowledge")
    assert client.admin.alerts()[0]["acknowledged"]["by"] == "Alice Operator"
    assert any(c.value.startswith("Acknowledged by Alice Operator: open: groq:2") for c in at.caption)
    click(at, "Mute")
    assert client.admin.alerts()[0]["muted"]["by"] == "Alice Operator"
    alerts = next(d for d in at.dataframe if "Alert" in d.value.columns).value
    assert "acknowledged by Alice Operator · muted until" in alerts["State"][0]
    assert [a["text"] for a in client.admin.alerts()] == ["groq:2 (gsk_…0002) is disabled by Alice Operator"]
    select(at, "groq:2")  # unticked by the Disable; tick it again to test it
    click(at, "Test")
    _settle_checks(client)
    assert ("groq:2", "by Alice Operator: the key works") in [(e.key_id, e.detail) for e in client.admin.events()]


@pytest.mark.slow
def test_with_a_password_the_demos_recover_names_who_reset_the_keys(env: pytest.MonkeyPatch) -> None:
    """Simulate's "Recover" also ends the client's cooldowns (as Reset all): its reset events name the operator
    as Reset all's do, not "manual reset" by nobody."""
    env.setattr(simulator_server, "DEMO_LATENCY", 0.0)
    at = log_in(env, "Bob")
    for n in range(5):  # OpenRouter's four demo keys answer once each, then rest for ten minutes
        chat(at, f"message {n}")
    status_page(at)
    click(at, "Recover")
    assert any(c.value.endswith("The client's cooldowns were reset too.") for c in at.caption)
    resets = [e for e in get_client().admin.events() if e.kind == "reset"]
    assert sorted(e.key_id for e in resets) == [f"openrouter:{n}" for n in range(1, 5)]
    assert {e.detail for e in resets} == {"manual reset by Bob"}
