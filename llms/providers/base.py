"""What every provider module declares: its facts (`ProviderSpec`) and an adapter that makes one call.

An adapter sends one request with one key and reports what happened; it never retries and never picks keys.
It raises `ProviderError(outcome)` for anything that is not a usable answer, so the failover loop needs no
provider knowledge.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Protocol, runtime_checkable

from config.api_keys import ApiKey
from llms.outcomes import Outcome, OutcomeKind
from llms.types import ChatRequest, Completion, Embedded, EmbeddingRequest, StreamReply


@dataclass(frozen=True)
class Endpoint:
    """What an adapter needs to reach its provider: no settings object, so provider modules stay leaves."""

    model: str
    base_url: str
    timeout: float
    secrets: tuple[str, ...]
    max_bytes: int = 10 * 1024 * 1024
    stream_max_seconds: float = 600.0
    api_version: str | None = None
    """An attempt gets `timeout` seconds to a complete answer (a stream: to its first text piece, then between
    text pieces, within `stream_max_seconds`), and `max_bytes` of answer. `api_version`: the one the operator
    set (`<PROVIDER>_API_VERSION`, for providers with versions); None lets the adapter choose per model."""


class ProviderAdapter(Protocol):
    provider: str
    model: str

    def send(self, request: ChatRequest, key: ApiKey) -> Completion: ...
    def open_stream(self, request: ChatRequest, key: ApiKey) -> StreamReply: ...
    def embed(self, request: EmbeddingRequest, key: ApiKey) -> Embedded: ...
    def probe(self, key: ApiKey, timeout: float | None = None) -> Outcome: ...
    def close(self) -> None: ...
    def counted_tokens(self, request: ChatRequest, model: str) -> int:
        """What the provider counts of the request to `model` against a limit on tokens, as this adapter sends it
        (the caller's `max_tokens` and what the adapter adds to it for a reasoning model: `ChatRequest.tokens`)."""
        ...

    def ready(self, key: ApiKey) -> None:
        """Make what a call with this key needs before the call's clock starts (Gemini: the key's SDK client,
        ~0.15 s of CPU): a request's time counts from when it left, and what is learned of the key's window
        counts from that too."""
        ...


@runtime_checkable
class AwaitedAdapter(ProviderAdapter, Protocol):
    """An adapter that also has awaited calls (the OpenAI wire format over aiohttp): a caller on an event loop
    awaits them; any other adapter's blocking calls run in the loop's default executor (`awaited`)."""

    async def asend(self, request: ChatRequest, key: ApiKey) -> Completion: ...
    async def aopen_stream(self, request: ChatRequest, key: ApiKey) -> StreamReply: ...
    async def aembed(self, request: EmbeddingRequest, key: ApiKey) -> Embedded: ...
    async def aclose(self) -> None: ...


@functools.cache
def _awaited_type(kind: type) -> bool:
    return all(callable(getattr(kind, name, None)) for name in ("asend", "aopen_stream", "aembed", "aclose"))


def awaited(adapter: ProviderAdapter) -> bool:
    """Whether `adapter` is an `AwaitedAdapter` (decided once per class: `isinstance` on a protocol reads every
    method each time, on the gateway's path)."""
    return _awaited_type(type(adapter))


Classifier = Callable[[int, Mapping[str, str], Any, float], Outcome]


@dataclass(frozen=True)
class ProviderSpec:
    """One provider's facts, read by settings (env names, defaults), the key manager and the dashboard.

    `day_zone`: where its per-day quotas reset at midnight. `classify(status, headers, body, now)` reads one
    answer. `probe_vouches_for`: parking reasons a passing probe disproves (a call that spends no tokens says
    nothing about a rate limit, and on most providers nothing about credit either).
    """

    name: str
    title: str
    default_model: str
    default_base_url: str
    day_zone: tzinfo
    classify: Classifier
    adapter: Callable[[Endpoint], ProviderAdapter]
    probe_vouches_for: frozenset[OutcomeKind] = frozenset({OutcomeKind.INVALID_KEY})
    default_embedding_model: str = ""
    """The model `embed` uses unless `<PROVIDER>_EMBEDDING_MODEL` says otherwise; "": none (the provider has no
    embeddings, or only paid ones a free key would be parked for trying)."""
    probe_revives_credit: Callable[[str], bool] | None = None
    """Where the probe vouches for credit: which no-credit parkings (by the message that parked the key) it can
    disprove. OpenRouter's `GET /key` sees the key's own credit cap, never the account's balance, so a key
    parked for the account's credit stays parked until its cooldown ends. None: every one."""
    probe_at_start: bool = False
    """Probe one key of each account at start-up (with background probes on): the probe reads quota the
    provider reports nowhere else (OpenRouter's free-model requests left today)."""
    keyless: bool = False
    """A local server that needs no key (Ollama, vLLM without `--api-key`): with none configured, it gets one
    placeholder key, so it rotates and rests like any other provider."""
    limits_per_model: bool = False
    """The provider counts rate limits per model (Groq: per model per organization; Gemini: per model per
    project): what is learned about a key's window, its requests in flight and the quota its answers report
    belong to (key, model), and a 429 rests the key for that model only."""
    key_prefix: str = ""
    """How the provider's keys begin (`gsk_`), so a bare key pasted into the dashboard names its provider; "" where
    its keys have no form of their own."""
    api_versions: tuple[str, ...] = ()
    """The API versions `<PROVIDER>_API_VERSION` may name (Gemini's `v1`, `v1beta`, `v1alpha`); none: not settable."""

    @property
    def env_prefix(self) -> str:
        return self.name.upper()
