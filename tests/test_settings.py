"""Settings parsing: numbered keys, legacy single keys, defaults, and clear errors for malformed values."""

from __future__ import annotations

import logging
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import ConfigError, default_state_url, load_settings

ROOT = Path(__file__).resolve().parents[1]


def load(**env: str):
    return load_settings(env, dotenv_path=None)


def test_defaults_without_any_variable() -> None:
    s = load()
    assert not s.has_keys
    assert s.provider_order == ("openrouter", "groq", "gemini")
    assert (s.cooldowns.rate_limit, s.cooldowns.invalid_key, s.cooldowns.errors) == (3600, 86400, 600)
    assert s.cooldowns.error_threshold == 3
    assert s.request_timeout == 60
    assert s.state_url == default_state_url()
    assert default_state_url().startswith("sqlite://") and default_state_url().endswith("/llm-key-rotation/state.db")
    assert s.providers["groq"].model == "openai/gpt-oss-20b"
    assert s.providers["gemini"].base_url == "https://generativelanguage.googleapis.com"
    assert s.providers["openrouter"].base_url == "https://openrouter.ai/api/v1"


def test_numbered_keys_any_number_with_gaps_in_numeric_order() -> None:
    s = load(
        OPENROUTER_API_KEY_12="sk-or-twelve-aaaa",
        OPENROUTER_API_KEY_2="sk-or-two-bbbbbbb",
        OPENROUTER_API_KEY_5="sk-or-five-cccccc",
    )
    assert [k.key_id for k in s.openrouter_api_keys] == ["openrouter:2", "openrouter:5", "openrouter:12"]
    assert [k.secret for k in s.openrouter_api_keys] == ["sk-or-two-bbbbbbb", "sk-or-five-cccccc", "sk-or-twelve-aaaa"]


def test_blanks_ignored_and_duplicates_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = load(GROQ_API_KEY_1="gsk_same_key_123456", GROQ_API_KEY_2="  ", GROQ_API_KEY_3="gsk_same_key_123456")
    assert [k.key_id for k in s.groq_api_keys] == ["groq:1"]
    assert "GROQ_API_KEY_3" in caplog.text and "GROQ_API_KEY_1" in caplog.text
    assert "gsk_same_key_123456" not in caplog.text


def test_legacy_single_key_form() -> None:
    s = load(GEMINI_API_KEY="AIza-single-legacy-key")
    assert [k.key_id for k in s.gemini_api_keys] == ["gemini:1"]
    both = load(GEMINI_API_KEY="AIza-single-legacy-key", GEMINI_API_KEY_1="AIza-numbered-one-key")
    assert [k.key_id for k in both.gemini_api_keys] == ["gemini:1", "gemini:0"]


def test_overrides() -> None:
    s = load(
        GROQ_CHAT_MODEL="qwen/qwen3.6-27b",
        GROQ_BASE_URL="http://127.0.0.1:9999/groq/openai/v1/",
        LLM_PROVIDER_ORDER="gemini, groq",
        LLM_RATE_LIMIT_COOLDOWN="1.5",
        LLM_ERROR_THRESHOLD="5",
        LLM_STATE_URL="redis://127.0.0.1:6379/0",
        LLM_DEMO="yes",
    )
    assert s.providers["groq"].model == "qwen/qwen3.6-27b"
    assert s.providers["groq"].base_url == "http://127.0.0.1:9999/groq/openai/v1"
    assert s.provider_order == ("gemini", "groq")
    assert s.cooldowns.rate_limit == 1.5 and s.cooldowns.error_threshold == 5
    assert s.state_url.startswith("redis://") and s.demo


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LLM_ERROR_COOLDOWN", "ten"),
        ("LLM_RATE_LIMIT_COOLDOWN", "-5"),
        ("LLM_INVALID_KEY_COOLDOWN", "nan"),
        ("LLM_REQUEST_TIMEOUT", "0"),
        ("LLM_ERROR_THRESHOLD", "2.5"),
        ("LLM_ERROR_THRESHOLD", "0"),
        ("LLM_PROVIDER_ORDER", "openrouter,anthropic"),
        ("LLM_PROVIDER_ORDER", "groq,groq"),
        ("GROQ_BASE_URL", "api.groq.com"),
        ("LLM_STATE_URL", "localhost:6379"),
        ("LLM_DEMO", "maybe"),
        ("GROQ_API_KEY_1", "gsk_two words"),
    ],
)
def test_malformed_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load(**{variable: value})


def test_malformed_key_error_does_not_echo_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load(GROQ_API_KEY_1="gsk_secret part")
    assert "gsk_secret part" not in str(info.value)


def test_dotenv_file_is_read_but_never_overrides_the_environment(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("GROQ_API_KEY_1=gsk_from_dotenv_file_1\nGROQ_CHAT_MODEL=from-dotenv\nLLM_ERROR_THRESHOLD=7\n")
    s = load_settings({"GROQ_CHAT_MODEL": "from-env"}, dotenv_path=str(env_file))
    assert [k.secret for k in s.groq_api_keys] == ["gsk_from_dotenv_file_1"]
    assert s.providers["groq"].model == "from-env"
    assert s.cooldowns.error_threshold == 7


def test_feature_description_snippet_counts_keys(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "OPENROUTER_API_KEY_1": "sk-or-a-1234567890",
        "OPENROUTER_API_KEY_3": "sk-or-b-1234567890",
        "GROQ_API_KEY": "gsk_legacy_1234567890",
    }
    code = (
        "from config.settings import SETTINGS; "
        "print(len(SETTINGS.openrouter_api_keys), len(SETTINGS.groq_api_keys), len(SETTINGS.gemini_api_keys))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["2", "1", "0"]


def test_a_malformed_environment_fails_at_import_naming_the_variable(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from config.settings import SETTINGS"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LLM_ERROR_COOLDOWN": "ten"},
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "LLM_ERROR_COOLDOWN" in out.stderr and "ConfigError" in out.stderr


_token = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=8, max_size=40)


@given(st.dictionaries(st.integers(min_value=0, max_value=200), _token, max_size=12))
def test_any_numbering_yields_each_distinct_key_once_in_numeric_order(numbered: dict[int, str]) -> None:
    s = load(**{f"OPENROUTER_API_KEY_{n}": secret for n, secret in numbered.items()})
    expected: list[str] = []
    for _, secret in sorted(numbered.items()):
        if secret not in expected:
            expected.append(secret)
    assert [k.secret for k in s.openrouter_api_keys] == expected
    assert len({k.key_id for k in s.openrouter_api_keys}) == len(expected)


@given(st.text(max_size=12))
def test_any_cooldown_text_either_parses_positive_or_names_the_variable(raw: str) -> None:
    try:
        s = load(LLM_ERROR_COOLDOWN=raw)
    except ConfigError as exc:
        assert "LLM_ERROR_COOLDOWN" in str(exc)
    else:
        assert s.cooldowns.errors > 0
