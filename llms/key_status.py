"""One key as people read it (`KeyStatus`: the status page, `get_status_summary`), made from what the store keeps
of it; and a provider's daily totals. Pure: the key manager reads the store, these shape what it read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from config.api_keys import ApiKey
from llms.key_states import KeyState
from llms.learned_pacing import Pacing
from llms.quota_left import QuotaLeft
from llms.state import KeyRecord
from llms.state.base import Document


@dataclass(frozen=True)
class KeyStatus:
    """One key as the status page and `get_status_summary` show it. Never holds the secret."""

    key_id: str
    hint: str
    provider: str
    group: str | None
    available: bool
    reason: KeyState | None
    """Why it is out of rotation (None: available); a `str`, so `reason == "spend_cap"` still reads."""
    cooldown_remaining: float
    cooldown_until: float | None
    consecutive_failures: int
    successes: int
    failures: int
    last_error: str | None
    last_used: float | None
    backoff_step: int = 0
    learned_rest: float | None = None
    disabled: bool = False
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Every model the key rests for (a limit its provider counts per model), as plain data: model →
    {"reason", "until", "remaining"}. A key resting for its provider's default model is not `available`."""
    quota: QuotaLeft = field(default_factory=QuotaLeft)
    """Requests left in the current window and today, where anything says (for the model the status speaks for;
    a shared-limit group's, for a key in one)."""
    disabled_by: str | None = None
    """Who took a disabled key out (an operator's name, or "an operator"); None for a key in rotation."""


def state_of(key: KeyStatus, paused: bool = False) -> KeyState:
    """The one state a key is in: disabled, its cooldown reason (parked by hand when it gives none), waiting on its
    provider's pause, or available."""
    if key.disabled:
        return KeyState.DISABLED
    if not key.available:
        return KeyState.of(key.reason) or KeyState.MANUAL
    return KeyState.PAUSED if paused else KeyState.AVAILABLE


def daily_totals(documents: Iterable[Document], now: float) -> dict[str, int] | None:
    """Requests left today and the daily limit summed over the accounts' probe readings still current (each
    account once); None when none is."""
    current = [d for d in documents if d.get("until", 0) > now]
    if not current:
        return None
    return {
        "remaining": sum(int(d.get("remaining") or 0) for d in current),
        "limit": sum(int(d.get("limit") or 0) for d in current),
        "accounts": len(current),
    }


def key_status(
    key: ApiKey,
    record: KeyRecord,
    pacing: Pacing,
    now: float,
    rests: Mapping[str, tuple[float, str]],
    default_model: str | None,
    quota: QuotaLeft,
    disabled_by: str | None = None,
) -> KeyStatus:
    until = min(record.cooldown_until, now + record.rest) if record.rest > 0 else record.cooldown_until
    record = replace(record, cooldown_until=until)  # never longer than its own length from now (clock steps)
    resting = rests.get(default_model or "")
    if resting is not None and resting[0] > record.cooldown_until:  # resting longer for the default model
        record = replace(record, cooldown_until=resting[0], reason=resting[1])
    cooling = record.cooldown_until > now
    return KeyStatus(
        key_id=key.key_id,
        hint=key.hint,
        provider=key.provider,
        group=key.group,
        available=not cooling and not record.disabled,
        reason=KeyState.DISABLED if record.disabled else KeyState(record.reason) if cooling and record.reason else None,
        cooldown_remaining=max(0.0, record.cooldown_until - now) if cooling else 0.0,
        cooldown_until=record.cooldown_until if cooling else None,
        consecutive_failures=record.consecutive_failures,
        successes=record.successes,
        failures=record.failures,
        last_error=record.last_error,
        last_used=record.last_used,
        backoff_step=pacing.backoff.step,
        learned_rest=pacing.backoff.learned,
        disabled=record.disabled,
        models={
            model: {"reason": reason, "until": until, "remaining": until - now}
            for model, (until, reason) in sorted(rests.items())
        },
        quota=quota,
        disabled_by=(disabled_by or "an operator") if record.disabled else None,
    )
