"""The `ApiKey` value: a secret that can be passed around, logged and displayed without leaking.

A full key never leaves this object except through `ApiKey.secret`, which only the provider adapters read
when they build a request header. Everything else (repr, str, ids, hints, fingerprints) is safe to show.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True)
class ApiKey:
    """One API key of one provider, numbered like its environment variable (`GROQ_API_KEY_2` → `groq:2`).

    `group` names the account / organization / project the key belongs to: providers count rate limits per
    account, so keys of one group share one limit.
    """

    provider: str
    number: int
    secret: str = field(repr=False, compare=False)
    group: str | None = field(default=None, compare=False)
    fingerprint: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.secret.encode()).hexdigest()[:16]
        object.__setattr__(self, "fingerprint", digest)

    @property
    def key_id(self) -> str:
        return f"{self.provider}:{self.number}"

    @property
    def hint(self) -> str:
        """First and last four characters: enough to recognise a key in a provider console, useless to an attacker."""
        return key_hint(self.secret)

    @property
    def label(self) -> str:
        return f"{self.key_id} · {self.hint}"

    def __repr__(self) -> str:
        return f"ApiKey({self.label})"

    __str__ = __repr__


def key_hint(secret: str) -> str:
    if len(secret) <= 12:
        return "…" + secret[-2:] if len(secret) > 4 else "…"
    return f"{secret[:4]}…{secret[-4:]}"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a known secret (and any bearer token) in `text` by its hint."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, key_hint(secret))
    return _BEARER.sub("Bearer ***", text)


_BEARER = re.compile(r"Bearer\s+[A-Za-z0-9_\-\.]{8,}")


def redacted_url(url: str) -> str:
    """The URL without its password, for messages and the status page."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url.split("@")[-1]
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
