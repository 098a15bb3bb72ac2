"""The Status page's Keys panel: each pasted key tested against the simulator before it joins, only keys the
provider did not refuse written (to a real file in tmp_path), removal of ticked keys, the demo's fake keys, and
no secret anywhere on the page. Plain functions first, then the page under AppTest."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from config.settings import load_settings
from dashboard import keys, simulate, status
from dashboard.client import build_backend
from llms import AllKeysExhaustedError
from simulator import DEMO_LIMITS, Simulator
from simulator import server as simulator_server
from tests.conftest import ALL_SECRETS, SECRETS
from tests.test_dashboard import app, availability, use_keys
from tests.test_dashboard_status import env, notices, select, show, status_page  # noqa: F401  (env is a fixture)

GQ1, GQ2, GQ3 = SECRETS["groq"][:3]
OR1 = SECRETS["openrouter"][0]


def key_ids(backend: Any) -> list[str]:
    return [k.key_id for s in backend.client.admin.provider_statuses() for k in s.keys]


def test_each_key_is_tested_and_only_keys_not_refused_are_written(tmp_path: Path, sim: Simulator) -> None:
    sim.add_key("groq", GQ1, name="groq:1")
    sim.add_key("groq", GQ2, name="groq:2")
    sim.add_key("groq", GQ3, then="invalid_key", name="groq:3")
    sim.add_key("openrouter", OR1, then="overloaded", name="openrouter:1")
    path = tmp_path / "keys.env"
    path.write_text(f"# ours\nGROQ_API_KEY_1={GQ1}\n")
    variables = {**sim.env(), "LLM_KEYS_FILE": str(path), "LLM_STATE_URL": "memory://", "LLM_PROBE_TIMEOUT": "2"}
    backend = build_backend(variables, dotenv_path=None)
    try:
        verdicts = keys.add(backend, f"{GQ2}\n{GQ3}\nOPENROUTER_API_KEY_5={OR1}\n{GQ1}\nnot-a-known-key-123456")
        assert [(v.provider, v.key_id) for v in verdicts] == [
            ("groq", "groq:2"),
            ("groq", None),
            ("openrouter", "openrouter:1"),
            ("groq", None),
            ("", None),
        ]
        assert verdicts[0].verdict == "works"
        assert verdicts[1].verdict.startswith("not added: the provider refused it (HTTP 401")
        assert verdicts[2].verdict.startswith("joined, resting until it works (HTTP 5")
        assert verdicts[3].verdict == "not added: already configured as groq:1"
        assert verdicts[4].verdict.startswith("not added: provider not recognised")
        assert path.read_text() == f"# ours\nGROQ_API_KEY_1={GQ1}\nGROQ_API_KEY_2={GQ2}\nOPENROUTER_API_KEY_1={OR1}\n"
        assert key_ids(backend) == ["openrouter:1", "groq:1", "groq:2"], "joined at once, no restart"
        assert not any(secret in repr(verdicts) for secret in ALL_SECRETS)
        message = keys.remove(backend, ["groq:2", "openrouter:1"])
        assert message == f"Removed groq:2, openrouter:1 from {path}."
        assert path.read_text() == f"# ours\nGROQ_API_KEY_1={GQ1}\n"
        assert key_ids(backend) == ["groq:1"]
    finally:
        backend.close()


def test_demo_keys_are_fake_keys_of_the_simulator_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulator_server, "DEMO_LATENCY", 0.0)
    monkeypatch.chdir(tmp_path)
    backend = build_backend({"LLM_DEMO": "1"}, dotenv_path=None)
    try:
        [verdict] = keys.add(backend, "gsk_my-own-demo-key-0123456789")
        assert (verdict.key_id, verdict.verdict) == ("groq:4", "works")
        assert "groq:4" in key_ids(backend)
        backend.client.admin.disable_key("groq:1", "groq:2", "groq:3")
        backend.client.admin.disable_key("gemini:1", *(f"openrouter:{i}" for i in range(1, 5)))
        assert backend.client.complete([{"role": "user", "content": "hi"}]).key_id == "groq:4"
        assert backend.simulator is not None
        simulate.revoke(backend.simulator, "groq:4", backend.demo_env)  # Simulate reaches an added key too
        with pytest.raises(AllKeysExhaustedError):
            backend.client.complete([{"role": "user", "content": "hi"}])
        simulate.recover(backend.simulator, DEMO_LIMITS, backend.demo_env)
        backend.client.reset_all()
        assert backend.client.complete([{"role": "user", "content": "hi"}]).key_id == "groq:4"
        assert keys.remove(backend, ["groq:4"]) == "Removed groq:4 from the demo."
        assert "groq:4" not in key_ids(backend)
        assert os.listdir(tmp_path) == [], "nothing written in demo mode"
    finally:
        backend.close()


def page_text(at: AppTest) -> str:
    """Everything the page drew, as text: markdown, captions, toasts, tables, widget values."""
    parts = [
        e.value for kind in ("markdown", "caption", "toast", "warning", "error", "text_area") for e in getattr(at, kind)
    ]
    parts += [d.value.to_string() for d in at.dataframe]
    return "\n".join(map(str, parts))


@pytest.mark.slow
def test_the_keys_panel_adds_tests_and_removes_keys(env: pytest.MonkeyPatch, sim: Simulator) -> None:  # noqa: F811
    use_keys(env, sim, {"groq": 1})
    sim.add_key("groq", GQ2, name="groq:2")
    sim.add_key("groq", GQ3, then="invalid_key", name="groq:3")
    at = status_page(app().run())
    assert availability(at)["Groq"] == "1/1"
    at.text_area(key=keys.PASTE).set_value(f"{GQ2}\n{GQ3}").run()
    preview = next(d.value for d in at.dataframe if "Note" in d.value.columns)
    assert list(preview["Key"]) == [f"gsk_…{GQ2[-4:]}", f"gsk_…{GQ3[-4:]}"]
    assert list(preview["Provider"]) == ["Groq", "Groq"]
    [add] = [b for b in at.button if b.label == "Add"]
    add.click().run()
    assert not at.exception, at.exception
    assert notices(at) == ["Added groq:2. 1 not added: see the Keys panel."]
    verdicts = next(d.value for d in at.dataframe if "Verdict" in d.value.columns)
    assert list(verdicts["Joined as"]) == ["groq:2", ""]
    assert verdicts["Verdict"][1].startswith("not added: the provider refused it (HTTP 401")
    assert at.text_area(key=keys.PASTE).value == "", "the paste box is emptied once read"
    written = Path(".env")
    assert written.read_text() == f"GROQ_API_KEY_2={GQ2}\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert availability(at)["Groq"] == "2/2"
    assert not any(secret in page_text(at) for secret in ALL_SECRETS)

    show(at, status.ALL)
    select(at, "groq:1", "groq:2")
    [remove] = [b for b in at.button if b.label == "Remove for good"]
    remove.click().run()
    assert not at.exception, at.exception
    assert [n.replace("\\", "") for n in notices(at)] == [
        f"Removed groq:2 from {written.resolve()}. Still set in the environment, not in the keys file (remove "
        "them there): groq:1."
    ]
    assert written.read_text() == ""
    assert availability(at)["Groq"] == "1/1"
    assert not any(secret in page_text(at) for secret in ALL_SECRETS)
    assert load_settings(dotenv_path=str(written)).groq_api_keys[0].secret == GQ1


def test_the_demo_never_reads_or_watches_the_real_keys_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulator_server, "DEMO_LATENCY", 0.0)
    real = tmp_path / "keys.env"
    real.write_text(f"GROQ_API_KEY_9={GQ1}\n")
    backend = build_backend({"LLM_DEMO": "1", "LLM_KEYS_FILE": str(real)}, dotenv_path=None)
    try:
        assert backend.client.settings.keys_file is None
        assert "groq:9" not in key_ids(backend)
    finally:
        backend.close()
