"""The `ApiKey` value: a secret that can be passed around, logged and displayed without leaking.

A full key never leaves this object except through `ApiKey.secret`, which only the provider adapters read
when they build a request header. Everything else (repr, str, ids, hints, fingerprints) is safe to show.
"""

from __future__ import annotations

import functools
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
    """Replace every recognisable part of a known secret in `text` by the secret's hint, and any bearer token.

    Recognisable: any run of 8 or more characters that starts or ends the secret, in any letter case (a provider
    quoting "the first 22 characters of your key" must not leak them either).
    """
    if text:
        text = _redactor(tuple(secrets)).apply(text)
    return _BEARER.sub("Bearer ***", text)


_FRAGMENT = 8


class _Redactor:
    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._starts: dict[str, list[str]] = {}
        self._ends: dict[str, list[str]] = {}
        for secret in secrets:
            if secret:
                self._starts.setdefault(secret[:_FRAGMENT].lower(), []).append(secret)
                self._ends.setdefault(secret[-_FRAGMENT:].lower(), []).append(secret)
        fragments = sorted({*self._starts, *self._ends}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, fragments)), re.IGNORECASE) if fragments else None

    def apply(self, text: str) -> str:
        if self._pattern is None:
            return text
        lowered = text.lower()
        spans = self._find(lowered)
        if not spans:
            return text
        spans.sort()
        out, last = [], 0
        for start, end, secret in spans:
            if start < last:
                continue
            out += [text[last:start], key_hint(secret)]
            last = end
        out.append(text[last:])
        return "".join(out)

    def _find(self, lowered: str) -> list[tuple[int, int, str]]:
        """Every place a secret's start or end appears, widened to as much of that secret as matches there."""
        assert self._pattern is not None
        found = []
        position = 0
        while (match := self._pattern.search(lowered, position)) is not None:
            fragment, start = match.group(), match.start()
            best = (start, match.end(), "")
            for secret in self._starts.get(fragment, ()):
                length = _common_prefix(lowered[start:], secret.lower())
                if start + length > best[1] or not best[2]:
                    best = (start, start + length, secret)
            for secret in self._ends.get(fragment, ()):
                length = _common_prefix(lowered[: match.end()][::-1], secret.lower()[::-1])
                if match.end() - length < best[0] or not best[2]:
                    best = (match.end() - length, match.end(), secret)
            found.append(best)
            position = start + 1
        return found


def _common_prefix(a: str, b: str) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


@functools.lru_cache(maxsize=64)
def _redactor(secrets: tuple[str, ...]) -> _Redactor:
    return _Redactor(secrets)


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
