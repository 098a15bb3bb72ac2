"""Settings read once from the environment and `.env`, validated, and frozen.

`SETTINGS` is built on first access (`from config.settings import SETTINGS`). A malformed value raises
`ConfigError` naming the variable, so a typo fails at start-up instead of on the first request. Real environment
variables always win over `.env` (python-dotenv never overrides them).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from dotenv import dotenv_values, find_dotenv

from config.api_keys import ApiKey
from llms.providers import PROVIDERS

log = logging.getLogger("llms.config")


class ConfigError(ValueError):
    """A configuration value is malformed; the message names the variable."""


@dataclass(frozen=True)
class ProviderSettings:
    provider: str
    keys: tuple[ApiKey, ...]
    model: str
    base_url: str
    requests_per_minute: int | None = None
    requests_per_day: int | None = None


@dataclass(frozen=True)
class CooldownSettings:
    """How long a key rests after each kind of failure, in seconds."""

    rate_limit: float = 3600.0
    invalid_key: float = 86400.0
    errors: float = 600.0
    error_threshold: int = 3
    storm: float = 10.0
    policy: str = "adaptive"


@dataclass(frozen=True)
class Settings:
    providers: Mapping[str, ProviderSettings]
    provider_order: tuple[str, ...]
    cooldowns: CooldownSettings
    request_timeout: float
    max_wait: float
    probe_interval: float
    state_url: str
    state_prefix: str
    demo: bool

    @property
    def openrouter_api_keys(self) -> tuple[ApiKey, ...]:
        return self.providers["openrouter"].keys

    @property
    def groq_api_keys(self) -> tuple[ApiKey, ...]:
        return self.providers["groq"].keys

    @property
    def gemini_api_keys(self) -> tuple[ApiKey, ...]:
        return self.providers["gemini"].keys

    @property
    def has_keys(self) -> bool:
        return any(p.keys for p in self.providers.values())

    def ordered(self) -> list[ProviderSettings]:
        return [self.providers[p] for p in self.provider_order]


def load_settings(env: Mapping[str, str] | None = None, dotenv_path: str | None = "") -> Settings:
    """Build settings from `env` (default: `os.environ`) layered over a `.env` file.

    `dotenv_path=""` looks for `.env` from the current directory upwards; `None` skips `.env` entirely.
    """
    merged: dict[str, str] = {}
    if dotenv_path is not None:
        path = dotenv_path or find_dotenv(usecwd=True)
        if path:
            merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ if env is None else env)
    return _parse(merged)


def _parse(env: Mapping[str, str]) -> Settings:
    providers = {
        name: ProviderSettings(
            provider=name,
            keys=_keys(name, env),
            model=_text(env, f"{spec.env_prefix}_CHAT_MODEL", spec.default_model),
            base_url=_url(env, f"{spec.env_prefix}_BASE_URL", spec.default_base_url),
            requests_per_minute=_optional_count(env, f"{spec.env_prefix}_REQUESTS_PER_MINUTE"),
            requests_per_day=_optional_count(env, f"{spec.env_prefix}_REQUESTS_PER_DAY"),
        )
        for name, spec in PROVIDERS.items()
    }
    cooldowns = CooldownSettings(
        rate_limit=_seconds(env, "LLM_RATE_LIMIT_COOLDOWN", CooldownSettings.rate_limit),
        invalid_key=_seconds(env, "LLM_INVALID_KEY_COOLDOWN", CooldownSettings.invalid_key),
        errors=_seconds(env, "LLM_ERROR_COOLDOWN", CooldownSettings.errors),
        error_threshold=_count(env, "LLM_ERROR_THRESHOLD", CooldownSettings.error_threshold),
        storm=_seconds(env, "LLM_STORM_COOLDOWN", CooldownSettings.storm),
        policy=_choice(env, "LLM_COOLDOWN_POLICY", ("adaptive", "fixed")),
    )
    state_url = _text(env, "LLM_STATE_URL", "memory://")
    if "://" not in state_url:
        raise ConfigError(f"LLM_STATE_URL must look like memory:// or redis://host:port/db, got {state_url!r}")
    return Settings(
        providers=providers,
        provider_order=_order(env),
        cooldowns=cooldowns,
        request_timeout=_seconds(env, "LLM_REQUEST_TIMEOUT", 60.0),
        max_wait=_seconds(env, "LLM_MAX_WAIT", 0.0, allow_zero=True),
        probe_interval=_seconds(env, "LLM_PROBE_INTERVAL", 0.0, allow_zero=True),
        state_url=state_url,
        state_prefix=_text(env, "LLM_STATE_PREFIX", "llmkeys"),
        demo=_flag(env, "LLM_DEMO"),
    )


_NUMBERED = re.compile(r"^([A-Z0-9]+)_API_KEY_(\d+)$")


def _keys(provider: str, env: Mapping[str, str]) -> tuple[ApiKey, ...]:
    """Numbered keys in numeric order (gaps allowed), then the legacy single form; blanks and duplicates dropped."""
    prefix = PROVIDERS[provider].env_prefix
    numbered = sorted((int(m.group(2)), name) for name in env if (m := _NUMBERED.match(name)) and m.group(1) == prefix)
    candidates = [(number, name) for number, name in numbered]
    single = f"{prefix}_API_KEY"
    if single in env:
        taken = {number for number, _ in numbered}
        candidates.append((0 if 1 in taken else 1, single))

    keys: list[ApiKey] = []
    seen: dict[str, str] = {}
    for number, name in candidates:
        secret = env[name].strip().strip("'\"")
        if not secret:
            continue
        if any(ch.isspace() for ch in secret):
            raise ConfigError(f"{name} contains whitespace; an API key is a single token")
        if secret in seen:
            log.warning("%s repeats the key already given in %s; using it once", name, seen[secret])
            continue
        seen[secret] = name
        group = env.get(f"{name}_GROUP", "").strip() or None
        keys.append(ApiKey(provider=provider, number=number, secret=secret, group=group))
    return tuple(keys)


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = _text(env, name, default).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        kind = "zero or a positive" if allow_zero else "a positive"
        raise ConfigError(f"{name} must be {kind} number of seconds, got {raw!r}")
    return value


def _optional_count(env: Mapping[str, str], name: str) -> int | None:
    return _count(env, name, 0) or None


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1/0, true/false, yes/no or on/off, got {raw!r}")


def _order(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("LLM_PROVIDER_ORDER", "").strip()
    if not raw:
        return tuple(PROVIDERS)
    names = [part.strip().lower() for part in raw.split(",") if part.strip()]
    known = set(PROVIDERS)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(
            f"LLM_PROVIDER_ORDER has unknown provider(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(sorted(known))}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"LLM_PROVIDER_ORDER names a provider twice: {raw!r}")
    return tuple(names)


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read from the environment and `.env` on first use."""
    return load_settings()


def __getattr__(name: str) -> Settings:
    """`from config.settings import SETTINGS` loads (and validates) the settings on first access, so a malformed
    value fails there with a `ConfigError` naming the variable, while `ConfigError` itself stays importable."""
    if name == "SETTINGS":
        return get_settings()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
