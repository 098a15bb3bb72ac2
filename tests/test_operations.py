"""Operating the pool at runtime: background key checks, alerts with a webhook, reloading keys."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import ALL_SECRETS, SECRETS, USER_HELLO, MakeClient

from config.settings import ConfigError, load_settings
from llms import AllKeysExhaustedError, SmartClient
from llms.alerts import WebhookSender
from simulator import Simulator


class Webhook:
    """A real HTTP receiver on loopback that answers 500 to the first `failures` POSTs."""

    def __init__(self, failures: int = 0, redirect: Callable[[str], str | None] = lambda path: None) -> None:
        """`redirect(path)`: where a POST to `path` is sent on with a 307 (None: answer it)."""
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.failures = failures
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.attempts += 1
                elsewhere = redirect(self.path)
                if elsewhere is not None:
                    self.send_response(307)
                    self.send_header("Location", elsewhere)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                failing = hook.attempts <= hook.failures
                if not failing:
                    hook.received.append(json.loads(body))
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/B000/secret-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(failures=2)
    yield hook
    hook.server.shutdown()


def _settle(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("state_backend", ["sqlite"], indirect=True)
def test_checks_run_in_the_background_one_provider_at_a_time_with_a_short_timeout(
    make_client: MakeClient, sim: Simulator
) -> None:
    client = make_client({"groq": 2, "openrouter": 1}, LLM_PROBE_TIMEOUT="0.5")
    sim.add_key("groq", SECRETS["groq"][0], name="groq:1", latency=5.0)  # hangs far past the probe timeout
    sim.add_key("groq", SECRETS["groq"][1], "invalid_key", name="groq:2")
    started = time.monotonic()
    assert client.admin.start_checks() is True
    assert client.admin.checks()["running"]  # the caller is not held up: groq:1 alone takes 0.5 s to time out
    assert client.admin.start_checks(["openrouter:1"]) is False  # one run at a time
    _settle(lambda: not client.admin.checks()["running"])
    progress = client.admin.checks()
    assert (progress["done"], progress["total"]) == (3, 3)
    results = progress["results"]
    assert results["openrouter:1"]["ok"] and results["openrouter:1"]["verdict"] == "OK, the key works"
    assert results["groq:1"]["outcome"] == "transient"  # timed out within LLM_PROBE_TIMEOUT, not 5 s
    assert results["groq:2"]["outcome"] == "invalid_key" and results["groq:2"]["status"] == 401
    assert time.monotonic() - started < 3.0
    assert json.dumps(progress) and not any(secret in json.dumps(progress) for secret in ALL_SECRETS)
    with pytest.raises(KeyError, match="unknown key id"):
        client.admin.start_checks(["groq:9"])


@pytest.mark.slow
def test_alerts_open_once_per_incident_reach_the_webhook_with_retries_and_say_when_it_ends(
    sim: Simulator, tmp_path: Path, webhook: Webhook
) -> None:
    sim.add_key("groq", SECRETS["groq"][0], "invalid_key", name="groq:1")
    env = {**sim.env(), "GROQ_API_KEY_1": SECRETS["groq"][0], "LLM_STATE_URL": f"sqlite://{tmp_path / 's.db'}"}
    settings = load_settings({**env, "LLM_ALERT_WEBHOOK": webhook.url}, dotenv_path=None)
    with SmartClient(settings) as client, SmartClient(settings) as other_process:
        with pytest.raises(AllKeysExhaustedError):
            client.complete(USER_HELLO)
        alerts = client.admin.alerts()
        assert {a["id"] for a in alerts} == {"key:groq:1", "provider:Groq", "exhausted"}
        assert other_process.admin.alerts() == alerts  # one list for every process sharing the store...
        texts = [a["text"] for a in webhook.wait_for(3)]
        assert any(t.startswith("🔴 groq:1 (gsk_…") and "parked as invalid" in t for t in texts)
        assert any("Groq has no key available: 1 parked as invalid" in t for t in texts)
        assert webhook.attempts == 5  # two failed POSTs were retried
        client.reset_all()
        other_process.admin.alerts()
        changed = {a["id"]: a for a in client.admin.alerts()[:3]}
        assert changed["key:groq:1"]["state"] == "resolved"  # the key is back in rotation: that is what reset did
        # ...but Groq has not answered yet: no "Groq can answer again" on a reset (it may still answer 503)
        assert {changed[i]["state"] for i in ("provider:Groq", "exhausted")} == {"updated"}
        assert changed["provider:Groq"]["text"].startswith("Groq has keys in rotation again, but no answer yet")
        assert "✅ groq:1 (gsk_…" in json.dumps([a["text"] for a in webhook.wait_for(6)], ensure_ascii=False)
        assert other_process.complete(USER_HELLO).key_id == "groq:1"  # a real answer, in another process
        resolved = {a["id"]: a["text"] for a in client.admin.alerts()[:2]}
        assert resolved == {
            "provider:Groq": "Groq can answer again: it answered",
            "exhausted": "Keys are available again: calls are being answered",
        }
        webhook.wait_for(8)
        time.sleep(0.3)
        assert len(webhook.received) == 8  # ...and one alert per incident and per change of it, not one per process
    assert not any(secret in json.dumps(webhook.received) for secret in ALL_SECRETS)


def test_a_dead_webhook_never_slows_or_fails_a_call(sim: Simulator, tmp_path: Path) -> None:
    sim.add_key("groq", SECRETS["groq"][0], name="groq:1")
    sim.add_key("groq", SECRETS["groq"][1], "invalid_key", name="groq:2")
    env = {**sim.env(), "GROQ_API_KEY_1": SECRETS["groq"][0], "GROQ_API_KEY_2": SECRETS["groq"][1]}
    env |= {"LLM_STATE_URL": "memory://", "LLM_ALERT_WEBHOOK": "http://127.0.0.1:9/nobody-listens"}
    with SmartClient(load_settings(env, dotenv_path=None)) as client:
        started = time.monotonic()
        for _ in range(4):
            assert client.complete(USER_HELLO).key_id == "groq:1"
        assert client.admin.alerts()[0]["id"] == "key:groq:2"
        assert time.monotonic() - started < 2.0


ALERT = {"at": 0.0, "id": "key:groq:1", "state": "open", "text": "groq:1 (gsk_…0001) is parked as invalid"}


def _deliver_one(url: str) -> None:
    sender = WebhookSender(url, delays=(0.01,) * 5, timeout=2.0)
    sender.send(ALERT)
    time.sleep(0.5)
    sender.close()


@pytest.mark.slow
def test_the_webhook_follows_no_redirect_to_another_host_and_a_bounded_number_on_its_own() -> None:
    """A 307 elsewhere would re-POST the alert to another host; a loop used to make 186 requests per alert."""
    thief = Webhook()
    away = Webhook(redirect=lambda path: f"{thief.url}?stolen")
    looping = Webhook(redirect=lambda path: path)
    moved = Webhook(redirect=lambda path: "/hooks/new-path" if path != "/hooks/new-path" else None)
    try:
        for hook in (away, looping, moved):
            _deliver_one(hook.url)
        assert thief.attempts == 0 and away.attempts == 1  # not followed, and not retried: it would go the same way
        assert looping.attempts == 4  # the POST and three redirects, then it gives up
        assert moved.attempts == 2 and moved.received[0]["alert"] == ALERT  # its own host: followed
    finally:
        for hook in (thief, away, looping, moved):
            hook.server.shutdown()


def test_urllib3_debug_lines_never_show_the_webhook_path(caplog: pytest.LogCaptureFixture) -> None:
    hook = Webhook(failures=1)
    caplog.set_level(logging.DEBUG)
    try:
        _deliver_one(hook.url)
        assert hook.received
    finally:
        hook.server.shutdown()
    assert "127.0.0.1" in caplog.text and "POST /…" in caplog.text
    assert "secret-path" not in caplog.text


def test_a_malformed_webhook_names_the_variable_but_not_the_value() -> None:
    with pytest.raises(ConfigError, match="LLM_ALERT_WEBHOOK") as error:
        load_settings({"LLM_ALERT_WEBHOOK": "hooks.slack.com/services/T0/B0/XsecretX"}, dotenv_path=None)
    assert "XsecretX" not in str(error.value)


def test_reloading_keys_adds_and_removes_keys_and_the_rest_keep_their_state(sim: Simulator, tmp_path: Path) -> None:
    groq = SECRETS["groq"]
    sim.add_key("groq", groq[0], "invalid_key", name="groq:1")
    sim.add_key("groq", groq[1], name="groq:2")
    sim.add_key("groq", groq[2], name="groq:3")
    env = {**sim.env(), "GROQ_API_KEY_1": groq[0], "GROQ_API_KEY_2": groq[1], "LLM_STATE_URL": "memory://"}
    with SmartClient(load_settings(env, dotenv_path=None)) as client:
        client.complete(USER_HELLO)  # groq:1 is parked as invalid on the way
        env |= {"GROQ_API_KEY_3": groq[2]}
        del env["GROQ_API_KEY_2"]
        assert client.reload_keys(load_settings(env, dotenv_path=None)) == {"added": ["groq:3"], "removed": ["groq:2"]}
        keys = {k.key_id: k for k in client.key_manager.statuses("groq")}
        assert set(keys) == {"groq:1", "groq:3"} and keys["groq:1"].reason == "invalid_key"  # state kept
        assert {client.complete(USER_HELLO).key_id for _ in range(3)} == {"groq:3"}
        assert sim.calls("groq:2") == 1  # the removed key is never handed out again
        assert client.reload_keys(load_settings(env, dotenv_path=None)) == {"added": [], "removed": []}


def test_what_a_person_did_to_a_key_is_named_in_its_events_and_alerts(sim: Simulator) -> None:
    """Issue 24: with a name, a disable, a test, a test run and keys added or removed say who; a background
    probe leaves no event; a removed key's alert resolves as removed, not as back in rotation."""
    groq = SECRETS["groq"]
    for i in range(3):
        sim.add_key("groq", groq[i], name=f"groq:{i + 1}")
    env = {**sim.env(), "GROQ_API_KEY_1": groq[0], "GROQ_API_KEY_2": groq[1], "LLM_STATE_URL": "memory://"}
    with SmartClient(load_settings(env, dotenv_path=None)) as client:

        def said(kind: str) -> list[tuple[str, str]]:
            return [(e.key_id, e.detail) for e in client.admin.events() if e.kind == kind]

        client.admin.disable_key("groq:1", by="alice")
        assert next(k for k in client.key_manager.statuses("groq") if k.key_id == "groq:1").disabled_by == "alice"
        assert client.admin.alerts()[0]["text"].endswith("is disabled by alice")
        client.admin.check_key("groq:2")  # a background probe: no event
        assert said("checked") == []
        client.admin.check_key("groq:2", by="bob")
        assert said("checked") == [("groq:2", "by bob: the key works")]
        assert client.admin.start_checks(["groq:2"], by="carol")
        _settle(lambda: not client.admin.checks()["running"])
        assert said("checked")[0] == ("groq:2", "by carol: the key works")
        env |= {"GROQ_API_KEY_3": groq[2]}
        del env["GROQ_API_KEY_1"]
        client.reload_keys(load_settings(env, dotenv_path=None), by="dave")
        assert (said("added"), said("removed")) == ([("groq:3", "by dave")], [("groq:1", "by dave")])
        resolved = [a for a in client.admin.alerts() if a["state"] == "resolved"]
        assert [a["text"] for a in resolved] == ["groq:1 is removed"]
        env |= {"GROQ_API_KEY_1": groq[0]}
        client.reload_keys(load_settings(env, dotenv_path=None))  # read again without a person: the file changed
        assert said("added")[0] == ("groq:1", "the keys file changed")


def test_a_key_another_process_added_to_the_shared_ring_is_passed_over(sim: Simulator, tmp_path: Path) -> None:
    groq = SECRETS["groq"]
    for i in range(2):
        sim.add_key("groq", groq[i], name=f"groq:{i + 1}")
    base = {**sim.env(), "LLM_STATE_URL": f"sqlite://{tmp_path / 's.db'}", "GROQ_API_KEY_1": groq[0]}
    with (
        SmartClient(load_settings(base, dotenv_path=None)) as old,
        SmartClient(load_settings({**base, "GROQ_API_KEY_2": groq[1]}, dotenv_path=None)) as new,
    ):
        assert {old.complete(USER_HELLO).key_id for _ in range(4)} == {"groq:1"}
        assert {new.complete(USER_HELLO).key_id for _ in range(4)} == {"groq:1", "groq:2"}
