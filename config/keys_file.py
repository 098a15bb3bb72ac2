"""The keys file (`LLM_KEYS_FILE`, default the `.env` in use): the one place the dashboard writes secrets.

Edits are read-modify-write under an exclusive lock on the file's directory, written to a temporary file and
renamed over the old one, so a reader (another process, python-dotenv) sees the old file or the new one, never half
of one. Every other line — settings, comments, blank lines, their order and line endings — is kept byte for byte.
A new file is created 0600; an existing file keeps its mode. Nothing here logs, returns or raises a secret: keys
are named by variable, key id and hint only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from dotenv import dotenv_values

from config.api_keys import key_hint, secret_problem
from llms.providers import PROVIDERS

PREFIXES: tuple[tuple[str, str], ...] = tuple((s.key_prefix, s.name) for s in PROVIDERS.values() if s.key_prefix)
"""How a bare pasted key names its provider (`ProviderSpec.key_prefix`: `gsk_` is Groq's)."""

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
_KEY_NAME = re.compile(r"^([A-Z][A-Z0-9_]*?)_API_KEY(?:_(\d+))?$")


class KeysFileError(OSError):
    """The keys file cannot be read or written; the message names the file, never a key."""


@dataclass(frozen=True)
class Candidate:
    """One key found in a pasted block: its provider (None: not recognised), where it was, and why it cannot
    join (None: it may). `secret` is never shown; `hint` is."""

    provider: str | None
    secret: str = field(repr=False)
    where: str
    problem: str | None = None

    @property
    def hint(self) -> str:
        return key_hint(self.secret)


def provider_of_name(name: str) -> tuple[str, int | None] | None:
    """`GROQ_API_KEY_3` → ("groq", 3); `GROQ_API_KEY` → ("groq", None); anything else → None."""
    match = _KEY_NAME.match(name)
    if not match or match.group(1).endswith("_API_KEY") or name.endswith("_GROUP"):
        return None
    return match.group(1).lower(), int(match.group(2)) if match.group(2) else None


def provider_of_secret(secret: str) -> str | None:
    return next((provider for prefix, provider in PREFIXES if secret.startswith(prefix)), None)


def _value(raw: str) -> str:
    """A `.env` value without its quotes or its inline comment (what python-dotenv would read)."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw.split(" #", 1)[0].strip()


def _problem(secret: str) -> str | None:
    """Why `secret` cannot be a key (what loading the keys would refuse, and a paste too short to be one)."""
    return secret_problem(secret) or ("too short to be an API key" if len(secret) < 8 else None)


def parse_block(text: str, existing: Mapping[str, str] | None = None) -> list[Candidate]:
    """The keys in a pasted block: bare keys (several per line allowed, recognised by their prefix) or `.env`
    lines `NAME_API_KEY[_N]=value` (`export` and quotes allowed; other variables are skipped, not imported).
    `existing` maps secrets already configured to their key id, so a key pasted twice, or already there, is
    flagged once instead of joining twice."""
    existing = existing or {}
    found: list[Candidate] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        assignment = _ASSIGNMENT.match(stripped)
        if assignment:
            name, secret = assignment.group(1), _value(assignment.group(2))
            named = provider_of_name(name)
            if named is None or not secret:
                continue  # a setting, a group name or an empty key: not a key to add
            pairs = [(named[0], secret, f"line {number} ({name})")]
        else:
            pairs = [
                (provider_of_secret(token), token, f"line {number}")
                for token in re.split(r"[\s,;]+", stripped)
                if token
            ]
        for provider, secret, where in pairs:
            problem = _problem(secret)
            if problem is None and provider is None:
                problem = "provider not recognised: paste it as NAME_API_KEY=key (e.g. MISTRAL_API_KEY=…)"
            if problem is None and secret in existing:
                problem = f"already configured as {existing[secret]}"
            if problem is None and secret in seen:
                problem = "repeated in what you pasted"
            seen.add(secret)
            found.append(Candidate(provider, secret, where, problem))
    return found


def key_entries(path: str) -> dict[str, str]:
    """The file's key variables (`*_API_KEY[_N]`) and their values; {} when the file does not exist."""
    if not os.path.exists(path):
        return {}
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"cannot read the keys file {path}: {type(exc).__name__}") from None
    return {name: value for name, value in values.items() if value and provider_of_name(name)}


def add_keys(
    path: str, keys: Sequence[tuple[str, str]], taken: Mapping[str, Collection[int]] | None = None
) -> list[str]:
    """Append `(provider, secret)` keys to the file as `<PREFIX>_API_KEY_<N>`, each N one past the highest
    number of that provider in the file or in `taken` (numbers in use elsewhere, e.g. the environment): a number
    is never reused, so a new key never inherits a removed key's state. Keys already in the file are skipped.
    Returns the key ids given, in order."""
    given: list[str] = []
    with _locked(path):
        lines = _read_lines(path)
        entries = key_entries(path)
        present = set(entries.values())
        highest: dict[str, int] = {p: max(numbers, default=0) for p, numbers in (taken or {}).items()}
        for name in entries:
            provider, number = provider_of_name(name) or ("", None)
            highest[provider] = max(highest.get(provider, 0), number or 1)
        newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        fresh = []
        for provider, secret in keys:
            if secret not in present:
                present.add(secret)
                fresh.append((provider, secret))
        for name, secret, key_id in numbered(fresh, highest):
            lines.append(f"{name}={secret}{newline}")
            given.append(key_id)
        if given:
            _write(path, lines)
    return given


def numbered(keys: Iterable[tuple[str, str]], highest: dict[str, int]) -> list[tuple[str, str, str]]:
    """(variable, secret, key id) for each `(provider, secret)`: `<PREFIX>_API_KEY_<N>`, N one past the provider's
    highest number so far (`highest`, which it raises): a number is never reused."""
    found = []
    for provider, secret in keys:
        highest[provider] = highest.get(provider, 0) + 1
        found.append((f"{provider.upper()}_API_KEY_{highest[provider]}", secret, f"{provider}:{highest[provider]}"))
    return found


def remove_keys(path: str, secrets: Iterable[str]) -> list[str]:
    """Delete the lines that set any of `secrets` (and their `_GROUP` lines). Returns the variables removed;
    a secret that is not in the file (it comes from the environment) is simply not there to remove."""
    with _locked(path):
        wanted = set(secrets)
        names = {name for name, value in key_entries(path).items() if value in wanted}
        if not names:
            return []
        doomed = names | {f"{name}_GROUP" for name in names}
        lines = _read_lines(path)
        kept = [line for line in lines if not ((m := _ASSIGNMENT.match(line)) and m.group(1) in doomed)]
        _write(path, kept)
    return sorted(names)


def file_stamp(path: str | None) -> tuple[int, int, int] | None:
    """What changes whenever the file is rewritten (inode, size, mtime): one `stat`, cheap enough to call on
    every refresh. None when there is no file."""
    if not path:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read().splitlines(keepends=True)
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"cannot read the keys file {path}: {type(exc).__name__}") from None


def _write(path: str, lines: Sequence[str]) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`: readers never see half a file."""
    target = os.path.realpath(path)  # a symlinked .env stays a symlink; its target is replaced
    directory = os.path.dirname(target) or "."
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o600
    try:
        fd, temporary = tempfile.mkstemp(prefix=".keys-", dir=directory)  # created 0600
    except OSError as exc:
        raise KeysFileError(f"cannot write beside the keys file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise KeysFileError(f"cannot write the keys file {path}: {exc.strerror}") from None


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive lock on the file's directory (the file itself is replaced on every write, so it cannot hold
    the lock): two tabs adding keys at once each see the other's lines."""
    directory = os.path.dirname(os.path.realpath(path)) or "."
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        raise KeysFileError(f"cannot open the keys file's directory {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
