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
from typing import Any
from urllib.parse import quote, unquote


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


def secret_problem(secret: str) -> str | None:
    """Why `secret` cannot be an API key, in words that follow its name (never quoting it); None when it can."""
    if any(ch.isspace() for ch in secret):
        return "contains whitespace; an API key is a single token"
    odd = next(((i, ch) for i, ch in enumerate(secret) if not (ch.isascii() and ch.isprintable())), None)
    if odd is not None:
        return (
            f"contains an invisible or non-ASCII character (U+{ord(odd[1]):04X} at position {odd[0] + 1});"
            " API keys are printable ASCII, so it was probably pasted with the key"
        )
    return None


def key_order(key_id: str) -> tuple[str, int, str]:
    """Sort key for key ids in numeric order: `groq:2` before `groq:10` (text order puts `:10` before `:2`)."""
    provider, _, number = key_id.rpartition(":")
    return (provider, int(number), "") if number.isdigit() else (key_id, 0, key_id)


def key_hint(secret: str) -> str:
    if len(secret) <= 12:
        return "…" + secret[-2:] if len(secret) > 4 else "…"
    return f"{secret[:4]}…{secret[-4:]}"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every recognisable part of a known secret in `text` by the secret's hint, and any bearer token.

    Recognisable: any run of 8 or more characters found anywhere in the secret — its start, its end or its middle
    — in any letter case (a provider quoting "the first 22 characters of your key", or `key[6:-6]`, must not leak
    them either).
    """
    if text:
        text = _redactor(tuple(secrets)).apply(text)
    return _BEARER.sub("Bearer ***", text)


_FRAGMENT = 8
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
"""Lower-cases ASCII only, so positions in the lowered text are positions in the text (keys are ASCII)."""


class _Redactor:
    """Every `_FRAGMENT`-character window of every secret, lower-cased, mapped to its secret. A text's windows are
    looked up one by one and the hits merged into runs: O(length of the text), whatever the number of keys."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._windows: dict[str, str] = {}
        short = []
        for secret in secrets:
            lowered = secret.translate(_ASCII_LOWER)
            if 0 < len(secret) < _FRAGMENT:
                short.append(secret)
            for i in range(len(lowered) - _FRAGMENT + 1):
                self._windows.setdefault(lowered[i : i + _FRAGMENT], secret)
        self._short = re.compile("|".join(map(re.escape, short)), re.IGNORECASE) if short else None

    def apply(self, text: str) -> str:
        spans = self._runs(text.translate(_ASCII_LOWER)) if self._windows else []
        if self._short is not None:
            spans += [[m.start(), m.end(), m.group()] for m in self._short.finditer(text)]
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

    def _runs(self, lowered: str) -> list[list[Any]]:
        """[start, end, secret] of each run of text made of overlapping windows of secrets."""
        runs: list[list[Any]] = []
        windows = self._windows
        for i in range(len(lowered) - _FRAGMENT + 1):
            secret = windows.get(lowered[i : i + _FRAGMENT])
            if secret is None:
                continue
            if runs and i <= runs[-1][1]:
                runs[-1][1] = i + _FRAGMENT
            else:
                runs.append([i, i + _FRAGMENT, secret])
        return runs


@functools.lru_cache(maxsize=64)
def _redactor(secrets: tuple[str, ...]) -> _Redactor:
    return _Redactor(secrets)


_BEARER = re.compile(r"Bearer\s+[A-Za-z0-9_\-\.]{8,}")


def redacted_url(url: str) -> str:
    """The URL without its credentials, for messages and the status page.

    Read by hand, not by `urlsplit`: a password holding an unencoded '#', '/', '?' or '@' ends `urlsplit`'s host
    early, and the rest of the password would be printed as part of the host or path. Everything before the last
    '@' is credentials; only a user name before a ':' is kept."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    return f"{scheme}{sep}{user}:***@{host}"


def with_encoded_credentials(url: str) -> str:
    """`url` with its user name and password percent-encoded, so a password holding '#', '/', '?' or '@' reaches
    the server whole instead of being cut at that character by every URL parser (already encoded ones stay as
    they are)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    encode = functools.partial(quote, safe="")
    return f"{scheme}{sep}{encode(unquote(user))}{colon}{encode(unquote(password))}@{host}"
