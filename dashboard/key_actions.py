"""What the status page's buttons do to keys and providers: disable, enable, reset, test, and "Reset all".

Plain functions over `SmartClient`'s public methods that return the sentence the page shows, so the buttons and
the tests call the same thing; kept apart from `dashboard.status`, which only reads key state for the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dashboard.alerts import listed
from llms import PARKED_REASONS, SmartClient, client_time

PARKED = PARKED_REASONS
"""Reasons that park a key until someone acts (or a long cooldown ends): "Reset all" leaves these alone unless
the operator asks, since resetting a revoked key only earns another 401."""


def _plural(count: int, word: str = "key") -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def disable_keys(client: SmartClient, key_ids: Sequence[str], by: str | None = None) -> str:
    if not key_ids:
        return "No key selected."
    client.admin.disable_key(*key_ids, by=by)
    return f"Disabled {_plural(len(key_ids))}: {listed(list(key_ids))}. They stay out of rotation until Enable."


def enable_keys(client: SmartClient, key_ids: Sequence[str], by: str | None = None) -> str:
    if not key_ids:
        return "No key selected."
    client.admin.enable_key(*key_ids, by=by)
    return f"Enabled {_plural(len(key_ids))}: {listed(list(key_ids))}."


def reset_keys(client: SmartClient, key_ids: Sequence[str], by: str | None = None) -> str:
    """Reset the chosen keys, whatever parked them (the operator picked them); disabled keys stay disabled."""
    if not key_ids:
        return "No key selected."
    for key_id in key_ids:
        client.reset_key(key_id, by=by)
    return f"Reset {_plural(len(key_ids))}: {listed(list(key_ids))}."


def test_keys(client: SmartClient, key_ids: Sequence[str] | None, by: str | None = None) -> str:
    """Start background checks (None: every key). Never waits for a provider, so the page never freezes."""
    if key_ids is not None and not key_ids:
        return "No key selected."
    if not client.admin.start_checks(key_ids, by=by):
        return "A check run is still going; its results appear in the table as they come."
    which = "every key" if key_ids is None else _plural(len(key_ids))
    return f"Checking {which} in the background, one at a time per provider; see “Last check”."


def reset_all(
    client: SmartClient,
    include_parked: bool = False,
    providers: Iterable[str] | None = None,
    now: float | None = None,
    by: str | None = None,
) -> str:
    """Put cooling keys back in rotation and lift provider pauses. Keys parked as invalid, out of credit, at a
    spend cap or without access stay parked unless `include_parked`; disabled keys stay disabled (and keep
    whatever parked them underneath, for when they are enabled).

    A provider whose keys all may be reset is reset as a whole; otherwise its resettable keys are reset together
    and its pause is lifted on its own. The message says what reset did, never that a provider recovered: only
    an answer shows that (a reset Groq may still answer 503).
    """
    moment = client_time() if now is None else now
    only = set(providers) if providers is not None else None
    reset, kept, titles = 0, 0, []
    for status in client.admin.provider_statuses():
        if only is not None and status.provider not in only:
            continue
        titles.append(status.title)
        keep = [k for k in status.keys if k.disabled or (k.reason in PARKED and not include_parked)]
        kept_ids = {k.key_id for k in keep}
        due = [k for k in status.keys if k.key_id not in kept_ids and (not k.available or k.consecutive_failures)]
        kept += sum(1 for k in keep if not k.disabled)
        is_paused = bool(status.paused_until and status.paused_until > moment)
        if not keep:
            if due or is_paused:
                client.reset_provider(status.provider, by=by)
            reset += len(due)
            continue
        if due:
            client.reset_key(*(key.key_id for key in due), by=by)
        reset += len(due)
        if is_paused:
            client.admin.resume_provider(status.provider)
    names = " and ".join(titles) if only is not None else ""
    if not reset:
        parts = ["Nothing was cooling."]
    elif names:
        parts = [
            f"{names}'s keys were reset by you: {_plural(reset)} back in rotation. Recovery is declared when "
            f"{names} answers again."
        ]
    else:
        parts = [f"Reset {_plural(reset)}: back in rotation. Recovery is declared when a provider answers again."]
    if kept:
        parts.append(
            f"Left {_plural(kept)} parked (invalid, no credit, spend cap or no access): "
            "tick “include invalid keys” to reset them too."
        )
    return " ".join(parts)
