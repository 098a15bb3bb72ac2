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
from dataclasses import dataclass, field, replace

import platformdirs
from dotenv import dotenv_values, find_dotenv

from config.api_keys import ApiKey, redacted_url, secret_problem
from llms.providers import DEFAULT_ORDER, PROVIDERS, ProviderSpec, spec
from llms.state import check_url

log = logging.getLogger("llms.config")


class ConfigError(ValueError):
    """A configuration value is malformed; the message names the variable."""


@dataclass(frozen=True)
class ProviderSettings:
    provider: str
    keys: tuple[ApiKey, ...]
    model: str
    """The default model (`<PROVIDER>_CHAT_MODEL`): what `auto` and the bare provider name ask for."""
    base_url: str
    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    models: tuple[str, ...] = ()
    """The catalogue: the default model first, then `<PROVIDER>_MODELS`. A bare model id is served by the
    providers whose catalogue has it; `provider/model` reaches any model, listed or not."""
    api_version: str | None = None
    """`<PROVIDER>_API_VERSION` for a provider with API versions (Gemini); None: the adapter picks per model."""
    embedding_model: str | None = None
    """The model `embed` asks this provider for (`<PROVIDER>_EMBEDDING_MODEL`); None: it serves no embeddings."""
    spec: ProviderSpec = field(default_factory=lambda: spec("generic"), repr=False, compare=False)
    """The provider's facts (`llms.providers`): its own module's, or what OpenAI-compatible servers share."""

    def __post_init__(self) -> None:
        if not self.models or self.models[0] != self.model:
            object.__setattr__(self, "models", tuple(dict.fromkeys((self.model, *self.models))))


@dataclass(frozen=True)
class CooldownSettings:
    """How long a key rests after each kind of failure, in seconds."""

    rate_limit: float = 3600.0
    invalid_key: float = 86400.0
    errors: float = 600.0
    error_threshold: int = 3
    storm: float = 10.0
    policy: str = "adaptive"
    maximum: float = 31 * 86400.0
    """The longest rest any hint may impose (`LLM_MAX_COOLDOWN`): provider hints are clamped to it."""


@dataclass(frozen=True)
class Settings:
    providers: Mapping[str, ProviderSettings]
    provider_order: tuple[str, ...]
    cooldowns: CooldownSettings
    request_timeout: float
    stream_max_seconds: float
    max_response_bytes: int
    max_wait: float
    probe_interval: float
    probe_timeout: float
    alert_webhook: str | None = field(repr=False)  # its path is often its secret
    history_days: float
    request_log_size: int
    state_url: str = field(repr=False)  # may hold a password
    state_prefix: str
    demo: bool
    aliases: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    """`LLM_ALIAS_<NAME>=provider/model,provider,...`: a name (lower case) for targets tried in order."""
    keys_file: str | None = None
    """The file keys added from the dashboard are written to, and that clients watch (`LLM_KEYS_FILE`, default
    the `.env` in use, or `.env` in the working directory); None when settings were read without `.env`."""
    source: tuple[Mapping[str, str] | None, str | None] = field(default=(None, ""), repr=False, compare=False)
    """What `load_settings` was given, so `reread()` reads the same sources again (a reload, a watch)."""

    def reread(self) -> Settings:
        """Settings read again from the same environment and files as these."""
        return load_settings(*self.source)

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
    path = None
    if dotenv_path is not None:
        path = dotenv_path or find_dotenv(usecwd=True)
        if path:
            merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    given = os.environ if env is None else env
    named = given.get("LLM_KEYS_FILE", "").strip() or merged.get("LLM_KEYS_FILE", "").strip()
    keys_file = named or path or (os.path.join(os.getcwd(), ".env") if dotenv_path == "" else None)
    keys_file = os.path.abspath(keys_file) if keys_file else None
    if keys_file and keys_file != (os.path.abspath(path) if path else None) and os.path.isfile(keys_file):
        merged.update({k: v for k, v in dotenv_values(keys_file).items() if v is not None})  # over .env, under env
    merged.update(given)
    return replace(_parse(merged), keys_file=keys_file, source=(env, dotenv_path))


def _parse(env: Mapping[str, str]) -> Settings:
    order = _order(env)
    providers = {name: _provider(env, name, name in order) for name in dict.fromkeys([*PROVIDERS, *order])}
    rate_limit = _seconds(env, "LLM_RATE_LIMIT_COOLDOWN", CooldownSettings.rate_limit, most=MONTH)
    invalid_key = _seconds(env, "LLM_INVALID_KEY_COOLDOWN", CooldownSettings.invalid_key, most=MONTH)
    errors = _seconds(env, "LLM_ERROR_COOLDOWN", CooldownSettings.errors, most=MONTH)
    cooldowns = CooldownSettings(
        rate_limit=rate_limit,
        invalid_key=invalid_key,
        errors=errors,
        error_threshold=_count(env, "LLM_ERROR_THRESHOLD", CooldownSettings.error_threshold, most=1000),
        storm=_seconds(env, "LLM_STORM_COOLDOWN", CooldownSettings.storm, most=DAY),
        policy=_choice(env, "LLM_COOLDOWN_POLICY", ("adaptive", "fixed")),
        maximum=_seconds(env, "LLM_MAX_COOLDOWN", max(rate_limit, invalid_key, errors), most=MONTH),
    )
    return Settings(
        providers=providers,
        provider_order=_order(env),
        cooldowns=cooldowns,
        request_timeout=_seconds(env, "LLM_REQUEST_TIMEOUT", 60.0, most=HOUR),
        stream_max_seconds=_seconds(env, "LLM_STREAM_MAX_SECONDS", 600.0, most=DAY),
        max_response_bytes=_count(env, "LLM_MAX_RESPONSE_BYTES", 10 * 1024 * 1024, least=1024, most=1 << 30),
        max_wait=_seconds(env, "LLM_MAX_WAIT", 0.0, allow_zero=True, most=DAY),
        probe_interval=_seconds(env, "LLM_PROBE_INTERVAL", 0.0, allow_zero=True, most=7 * DAY),
        probe_timeout=_seconds(env, "LLM_PROBE_TIMEOUT", 10.0, most=HOUR),
        alert_webhook=_webhook(env, "LLM_ALERT_WEBHOOK"),
        history_days=float(_count(env, "LLM_HISTORY_DAYS", 30, most=366)),
        request_log_size=_count(env, "LLM_REQUEST_LOG_SIZE", 5000, least=10, most=1_000_000),
        state_url=_state_url(env, "LLM_STATE_URL"),
        state_prefix=_text(env, "LLM_STATE_PREFIX", "llmkeys"),
        demo=_flag(env, "LLM_DEMO"),
        aliases=_aliases(env, providers),
    )


def _provider(env: Mapping[str, str], name: str, used: bool) -> ProviderSettings:
    """One provider's settings. One in use must have a base URL and a default model: from its module, or for a
    provider known only by its configuration (or a local server, whose models are whatever was pulled) from
    `<NAME>_BASE_URL` and `<NAME>_CHAT_MODEL`."""
    facts = spec(name)
    prefix = facts.env_prefix
    for variable, default, example in (
        (f"{prefix}_BASE_URL", facts.default_base_url, "https://api.example.com/v1"),
        (f"{prefix}_CHAT_MODEL", facts.default_model, "the model id its /models lists"),
    ):
        if used and not default and not env.get(variable, "").strip():
            raise ConfigError(
                f"{variable} is required: LLM_PROVIDER_ORDER names {name!r}, an OpenAI-compatible provider with "
                f"no default for it ({example})"
            )
    keys = _keys(name, env)
    if used and not keys and facts.keyless:  # a local server: one placeholder, so it rotates like the others
        keys = (ApiKey(provider=name, number=1, secret=f"no-key-needed-{name}"),)
    return ProviderSettings(
        provider=name,
        keys=keys,
        model=_text(env, f"{prefix}_CHAT_MODEL", facts.default_model),
        base_url=_url(env, f"{prefix}_BASE_URL", facts.default_base_url or "http://unset.invalid"),
        requests_per_minute=_optional_count(env, f"{prefix}_REQUESTS_PER_MINUTE"),
        requests_per_day=_optional_count(env, f"{prefix}_REQUESTS_PER_DAY"),
        models=_list(env, f"{prefix}_MODELS"),
        api_version=_api_version(env, prefix, facts.api_versions),
        embedding_model=_model_id(env, f"{prefix}_EMBEDDING_MODEL", facts.default_embedding_model),
        spec=facts,
    )


def _api_version(env: Mapping[str, str], prefix: str, versions: tuple[str, ...]) -> str | None:
    """`GEMINI_API_VERSION`, else google-genai's own `GOOGLE_GENAI_API_VERSION` (whose `beta` means `v1beta`), which
    Gemini users already know; None lets the adapter choose per model."""
    if not versions:
        return None
    for name in (f"{prefix}_API_VERSION", "GOOGLE_GENAI_API_VERSION" if prefix == "GEMINI" else ""):
        raw = env.get(name, "").strip() if name else ""
        if not raw:
            continue
        value = "v1beta" if raw == "beta" else raw
        if value not in versions:
            raise ConfigError(f"{name} must be one of {', '.join(versions)}, got {raw!r}")
        return value
    return None


_NUMBERED = re.compile(r"^([A-Z0-9]+)_API_KEY_(\d+)$")


def _keys(provider: str, env: Mapping[str, str]) -> tuple[ApiKey, ...]:
    """Numbered keys in numeric order (gaps allowed), then the legacy single form; blanks and duplicates dropped."""
    prefix = spec(provider).env_prefix
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
        if (problem := secret_problem(secret)) is not None:
            raise ConfigError(f"{name} {problem}")
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


_OFF = ("none", "off")


def _model_id(env: Mapping[str, str], name: str, default: str) -> str | None:
    """One model id, or None for "none"/"off" (or no default): a list or a stray space is a typo, not a model."""
    value = _text(env, name, default)
    if not value or value.lower() in _OFF:
        return None
    if any(ch.isspace() or ch == "," for ch in value):
        raise ConfigError(f"{name} must be one model id (no spaces or commas), or 'none', got {value!r}")
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = _text(env, name, default).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value


def _webhook(env: Mapping[str, str], name: str) -> str | None:
    """A webhook URL often carries its secret in the path (Slack's do), so an error never repeats the value."""
    value = env.get(name, "").strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")) or " " in value:
        raise ConfigError(f"{name} must be an http:// or https:// URL (value not shown: it may hold a secret)")
    return value


HOUR = 3600.0
DAY = 86400.0
MONTH = 31 * DAY
"""Upper bounds: every duration must fit every store (Redis TTLs in milliseconds, SQLite reals) and every timer."""


def _seconds(
    env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False, most: float = MONTH
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return min(default, most)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not (0 <= value <= most) or (value == 0 and not allow_zero):
        low = "0" if allow_zero else "more than 0"
        raise ConfigError(f"{name} must be between {low} and {most:g} seconds, got {raw!r}")
    return value


def _optional_count(env: Mapping[str, str], name: str) -> int | None:
    return _count(env, name, 0) or None


def _count(env: Mapping[str, str], name: str, default: int, *, least: int = 1, most: int = 10**9) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not least <= value <= most:
        raise ConfigError(f"{name} must be between {least} and {most}, got {raw!r}")
    return value


def default_state_url() -> str:
    """A SQLite file in the per-user data directory: state survives restarts and is shared by every process of
    this user on this machine."""
    return f"sqlite://{platformdirs.user_data_path('llm-key-rotation') / 'state.db'}"


def _state_url(env: Mapping[str, str], name: str) -> str:
    """The store's URL, checked here by its backend (`llms.state` registry) so that a typo names the variable."""
    url = _text(env, name, "") or default_state_url()
    try:
        return check_url(url)
    except ValueError as exc:
        raise ConfigError(f"{name} {exc}: {redacted_url(url)!r}") from None


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list; blanks dropped, each entry once."""
    return tuple(dict.fromkeys(part.strip() for part in env.get(name, "").split(",") if part.strip()))


_ALIAS = re.compile(r"^LLM_ALIAS_([A-Z0-9_]+)$")


def _aliases(
    env: Mapping[str, str], providers: Mapping[str, ProviderSettings]
) -> dict[str, tuple[tuple[str, str], ...]]:
    """`LLM_ALIAS_FAST=groq/qwen/qwen3.6-27b,gemini` → {"fast": (("groq", "qwen/qwen3.6-27b"), ("gemini",
    its default model))}. A name that is also a provider's would hide it, so it is refused."""
    aliases: dict[str, tuple[tuple[str, str], ...]] = {}
    for variable in sorted(env):
        match = _ALIAS.match(variable)
        if not match:
            continue
        name = match.group(1).lower()
        if name in providers or name == "auto":
            raise ConfigError(f"{variable}: the alias {name!r} is already the name of a provider or of 'auto'")
        targets: list[tuple[str, str]] = []
        for entry in _list(env, variable):
            provider, _, model = entry.partition("/")
            if provider.lower() not in providers:
                raise ConfigError(f"{variable}: {entry!r} does not start with a provider name ({', '.join(providers)})")
            targets.append((provider.lower(), model.strip() or providers[provider.lower()].model))
        if not targets:
            raise ConfigError(f"{variable} names no model: give provider/model entries, comma-separated")
        aliases[name] = tuple(dict.fromkeys(targets))
    return aliases


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


_PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def _order(env: Mapping[str, str]) -> tuple[str, ...]:
    """The providers in fallback order: built-in ones, presets, or any other name (an OpenAI-compatible provider
    configured by `<NAME>_BASE_URL`, `<NAME>_CHAT_MODEL`, `<NAME>_API_KEY_N`)."""
    raw = env.get("LLM_PROVIDER_ORDER", "").strip()
    if not raw:
        return DEFAULT_ORDER
    names = [part.strip().lower() for part in raw.split(",") if part.strip()]
    odd = [n for n in names if not _PROVIDER_NAME.match(n)]
    if odd or not names:
        raise ConfigError(
            f"LLM_PROVIDER_ORDER has a name that is not a provider name {', '.join(map(repr, odd)) or '(none given)'}:"
            f" letters, digits and underscores, starting with a letter (built in: {', '.join(PROVIDERS)})"
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
