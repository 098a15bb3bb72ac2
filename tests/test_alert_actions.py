"""Acknowledging and muting alerts: kept in the store's alert document, so every process sharing it sees them; a
muted incident raises no webhook post (nor toast) until the mute ends; events and incidents name the operator."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import ALL_SECRETS, SECRETS, USER_HELLO
from test_operations import Webhook

from config.settings import load_settings
from dashboard.alerts import alerts_frame, grouped, quiet
from llms import SmartClient
from simulator import Simulator


def _settings(sim: Simulator, tmp_path: Path, **more: str) -> dict[str, str]:
    sim.add_key("groq", SECRETS["groq"][0], "invalid_key", name="groq:1")
    sim.add_key("groq", SECRETS["groq"][1], name="groq:2")
    return {
        **sim.env(),
        "GROQ_API_KEY_1": SECRETS["groq"][0],
        "GROQ_API_KEY_2": SECRETS["groq"][1],
        "LLM_STATE_URL": f"sqlite://{tmp_path / 's.db'}",
        "LLM_REQUEST_TIMEOUT": "1.5",
        **more,
    }


def test_an_acknowledged_incident_stays_listed_marked_in_every_process(sim: Simulator, tmp_path: Path) -> None:
    settings = load_settings(_settings(sim, tmp_path), dotenv_path=None)
    with SmartClient(settings) as client, SmartClient(settings) as other_process:
        assert client.complete(USER_HELLO).key_id == "groq:2"  # groq:1 answered 401 first: parked
        assert client.admin.alerts()[0]["id"] == "key:groq:1"
        assert not client.admin.acknowledge_alert("key:groq:9", by="alice")  # no such open incident
        assert client.admin.acknowledge_alert("key:groq:1", by="alice")
        row = other_process.admin.alerts()[0]
        assert row["acknowledged"]["by"] == "alice" and "muted" not in row
        assert quiet(row, time.time()) and grouped([row]) == [(row["text"], "open")]
        assert alerts_frame([row])["State"][0] == "open · acknowledged by alice"
        other_process.reset_key("groq:1", by="alice")  # the incident ends: its end is announced, not hushed
        resolved = client.admin.alerts()[0]
        assert resolved["state"] == "resolved" and "acknowledged" not in resolved
        assert not quiet(resolved, time.time())
        assert next(e.detail for e in client.admin.events() if e.key_id == "groq:1") == "manual reset by alice"


@pytest.mark.slow
def test_a_muted_incident_sends_no_webhook_until_the_mute_ends(sim: Simulator, tmp_path: Path) -> None:
    webhook = Webhook()
    try:
        env = _settings(sim, tmp_path, LLM_ALERT_WEBHOOK=webhook.url)
        with SmartClient(load_settings(env, dotenv_path=None)) as client:
            client.admin.disable_key("groq:2", by="bob")
            assert [a["id"] for a in client.admin.alerts()] == ["key:groq:2"]
            assert webhook.wait_for(1) and len(webhook.received) == 1
            assert client.admin.mute_alert("key:groq:2", 60, by="bob")
            client.admin.enable_key("groq:2", by="bob")
            with_mute = client.admin.alerts()[0]
            assert with_mute["state"] == "resolved" and with_mute["muted"]["by"] == "bob"
            assert quiet(with_mute, time.time())
            assert "muted until" in alerts_frame([with_mute])["State"][0]
            client.admin.disable_key("groq:2")
            client.admin.alerts()
            time.sleep(0.5)
            assert len(webhook.received) == 1, "muted: neither the end nor the new opening was posted"
            assert client.admin.mute_alert("key:groq:2", 0)  # the mute ends now
            client.admin.enable_key("groq:2")
            assert "muted" not in client.admin.alerts()[0]
            assert len(webhook.wait_for(2)) == 2
            details = [e.detail for e in client.admin.events() if e.key_id == "groq:2"]
            assert "by bob" in details
            assert "by an operator" in details  # no name given: the old wording
        assert not any(secret in json.dumps(webhook.received) for secret in ALL_SECRETS)
    finally:
        webhook.server.shutdown()


def test_muting_a_bulk_alert_mutes_each_of_its_keys(sim: Simulator, tmp_path: Path) -> None:
    settings = load_settings(_settings(sim, tmp_path), dotenv_path=None)
    with SmartClient(settings) as client:
        client.admin.disable_key("groq:1", "groq:2", by="carol")
        bulk = next(a for a in client.admin.alerts() if a["id"].startswith("keys:"))
        assert bulk["key_ids"] == ["groq:1", "groq:2"]
        assert client.admin.mute_alert(bulk["id"], 600, by="carol")
        assert client.admin.acknowledge_alert(bulk["id"], by="carol")
        row = next(a for a in client.admin.alerts() if a["id"] == bulk["id"])
        assert row["muted"]["by"] == "carol" and row["acknowledged"]["by"] == "carol"
        client.admin.enable_key("groq:1", "groq:2")
        assert client.admin.alerts()[0]["muted"]["by"] == "carol"  # the bulk end is muted too
