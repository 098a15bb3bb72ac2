"""Providers beyond the three built in: presets (Cerebras, Mistral, DeepSeek, Ollama, vLLM) and any OpenAI-compatible
provider named in LLM_PROVIDER_ORDER, served here by the simulator's generic OpenAI-compatible provider (`compat`)."""

from __future__ import annotations

import pytest
from conftest import USER_HELLO, Clock

from config.settings import ConfigError, load_settings
from llms import AllKeysExhaustedError, SmartClient
from llms.state.memory import MemoryStore
from simulator import Simulator, start_demo

SECRET = {
    name: f"sk-{name}-LEAKCHECK-{'x7Y8z9' * 5}-{{}}"
    for name in ("together", "cerebras", "deepseek", "mistral", "ollama", "vllm")
}


def _env(sim: Simulator, keys: dict[str, int], steps: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Each provider pointed at the simulator's generic OpenAI-compatible endpoint, with `keys[name]` keys there."""
    openai_format = sim.base_urls["compat"]
    env = {"LLM_PROVIDER_ORDER": ",".join(keys), "LLM_REQUEST_TIMEOUT": "2"}
    for name, count in keys.items():
        env[f"{name.upper()}_BASE_URL"] = openai_format
        for i in range(1, count + 1):
            secret = SECRET.get(name, f"sk-{name}-{{}}").format(i)
            env[f"{name.upper()}_API_KEY_{i}"] = secret
            sim.add_key("compat", secret, *(steps or {}).get(f"{name}:{i}", ()), name=f"{name}:{i}")
    return env


def test_a_provider_known_only_by_its_configuration_rotates_and_falls_back(sim: Simulator) -> None:
    env = _env(sim, {"together": 2, "cerebras": 1}, steps={"together:1": ["rate_limit"], "together:2": ["invalid_key"]})
    env |= {"TOGETHER_CHAT_MODEL": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "TOGETHER_MODELS": "small-model"}
    with SmartClient(load_settings(env, dotenv_path=None), store=MemoryStore()) as client:
        result = client.complete(USER_HELLO)
        assert (result.provider, result.model) == ("cerebras", "gpt-oss-120b")  # the preset's default model
        assert [a.describe() for a in result.skipped] == ["together:1 rate_limit 429", "together:2 invalid_key 401"]
        statuses = {s.provider: s for s in client.admin.provider_statuses()}
        assert statuses["together"].title == "Together" and statuses["together"].available == 0
        assert [k.reason for k in statuses["together"].keys] == ["rate_limit", "invalid_key"]
        summary = client.get_status_summary()
        assert set(summary) == {"together", "cerebras", "timestamp"}
        assert client.route("small-model")[0].provider == "together"


def test_a_local_server_needs_no_key(sim: Simulator) -> None:
    """Ollama (and vLLM without --api-key) take a placeholder key: the provider rotates and rests like the others."""
    sim.add_key("compat", "no-key-needed-ollama", "server_error", name="ollama")
    env = {
        "LLM_PROVIDER_ORDER": "ollama",
        "OLLAMA_BASE_URL": sim.base_urls["compat"],
        "OLLAMA_CHAT_MODEL": "llama3.2",
        "LLM_REQUEST_TIMEOUT": "2",
    }
    settings = load_settings(env, dotenv_path=None)
    assert [k.key_id for k in settings.providers["ollama"].keys] == ["ollama:1"]
    with SmartClient(settings, store=MemoryStore(), clock=Clock()) as client:
        with pytest.raises(AllKeysExhaustedError):
            client.complete(USER_HELLO)  # a 500: a transient error, like any provider's
        result = client.complete(USER_HELLO)
        assert (result.provider, result.model, result.key_id) == ("ollama", "llama3.2", "ollama:1")


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"LLM_PROVIDER_ORDER": "together"}, "TOGETHER_BASE_URL is required"),
        ({"LLM_PROVIDER_ORDER": "together", "TOGETHER_BASE_URL": "https://api.together.xyz/v1"}, "TOGETHER_CHAT_MODEL"),
        ({"LLM_PROVIDER_ORDER": "ollama"}, "OLLAMA_CHAT_MODEL is required"),
        ({"LLM_PROVIDER_ORDER": "groq,my-llm"}, "LLM_PROVIDER_ORDER has a name that is not a provider name 'my-llm'"),
        (
            {"LLM_PROVIDER_ORDER": "together", "TOGETHER_BASE_URL": "api.together.xyz", "TOGETHER_CHAT_MODEL": "m"},
            "TOGETHER_BASE_URL must be",
        ),
        ({"LLM_PROVIDER_ORDER": "groq,groq"}, "names a provider twice"),
    ],
)
def test_a_configured_provider_missing_a_setting_is_a_start_up_error_naming_it(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings(env, dotenv_path=None)


def test_presets_need_only_keys() -> None:
    env = {"LLM_PROVIDER_ORDER": "cerebras,mistral,deepseek", "CEREBRAS_API_KEY": "csk-abc", "MISTRAL_API_KEY_1": "m1"}
    env |= {"DEEPSEEK_API_KEY_1": "sk-d1"}
    settings = load_settings(env, dotenv_path=None)
    assert [(p.provider, p.base_url, p.model) for p in settings.ordered()] == [
        ("cerebras", "https://api.cerebras.ai/v1", "gpt-oss-120b"),
        ("mistral", "https://api.mistral.ai/v1", "mistral-small-latest"),
        ("deepseek", "https://api.deepseek.com", "deepseek-v4-flash"),
    ]
    assert (
        settings.providers["cerebras"].spec.limits_per_model and not settings.providers["mistral"].spec.limits_per_model
    )


@pytest.mark.parametrize("preset", ["cerebras", "mistral", "deepseek", "ollama", "vllm"])
def test_each_preset_rotates_rests_and_falls_back_over_http(sim: Simulator, preset: str) -> None:
    """Each preset against the simulator's OpenAI-compatible endpoint: a revoked key parks, a rate-limited one rests,
    the next key answers, and with every key out the next provider does."""
    env = _env(sim, {preset: 3}, steps={f"{preset}:1": ["invalid_key"], f"{preset}:2": ["rate_limit"]})
    env |= {"LLM_PROVIDER_ORDER": f"{preset},groq", "GROQ_API_KEY_1": "gsk_fallback_key_0123456789abcdef"}
    env |= {"GROQ_BASE_URL": sim.base_urls["groq"], f"{preset.upper()}_CHAT_MODEL": "sim-chat-small"}
    sim.add_key("groq", "gsk_fallback_key_0123456789abcdef", name="groq:1")
    with SmartClient(load_settings(env, dotenv_path=None), store=MemoryStore()) as client:
        result = client.complete(USER_HELLO)
        assert (result.provider, result.key_id, result.model) == (preset, f"{preset}:3", "sim-chat-small")
        reasons = [k.reason for k in client.key_manager.statuses(preset)]
        assert reasons[:2] == ["invalid_key", "rate_limit"] and reasons[2] is None
        client.admin.disable_key(f"{preset}:3")
        assert client.complete(USER_HELLO).provider == "groq"


def test_the_demo_serves_a_generic_provider_once_the_order_names_it() -> None:
    """The demo's fake providers include a generic OpenAI-compatible one, `compat`: left out of the default order
    (the demo's story is OpenRouter → Groq → Gemini), one variable puts it in."""
    simulator, env = start_demo({"LLM_PROVIDER_ORDER": "compat,groq"})
    try:
        settings = load_settings(env, dotenv_path=None)
        assert [k.key_id for k in settings.providers["compat"].keys] == ["compat:1", "compat:2"]
        with SmartClient(settings, store=MemoryStore()) as client:
            result = client.complete(USER_HELLO)
            assert (result.provider, result.model) == ("compat", "sim-chat-small")
            assert client.complete(USER_HELLO).key_id == "compat:2"
        default = load_settings({k: v for k, v in env.items() if k != "LLM_PROVIDER_ORDER"}, dotenv_path=None)
        assert "compat" not in default.provider_order
    finally:
        simulator.stop()
