"""A provider's keys as a status page shows them, from one read of every store document they need.

The statuses and the provider's daily totals need the same documents (what answers reported, a probe's reading of
each account's day, the windows learned from 429s, who disabled a key): one list of names, read once, serves both
(a status page refreshing every 2 s over 1,000 keys read each account's day twice, and each key's window twice).
This module only reads; the key manager and the probes write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from config.api_keys import ApiKey
from llms.key_status import KeyStatus, daily_totals, key_status
from llms.learned_pacing import Pacing
from llms.learned_windows import SlotLog
from llms.operator_actions import DISABLED_BY
from llms.quota import ConfiguredLimits, limit_subject
from llms.quota_left import QuotaLeft, quota_left
from llms.state import StateStore
from llms.state.base import Document


def read_provider_state(
    store: StateStore,
    provider: str,
    keys: Sequence[ApiKey],
    now: float,
    part: str,
    default_model: str | None,
    learned_about: Callable[[float], set[str]],
    limits: ConfiguredLimits | None,
) -> tuple[list[KeyStatus], dict[str, int] | None]:
    """Every key of the provider as `KeyManager.statuses` says it, speaking for `default_model` (limits counted for
    `part`), and the provider's daily totals. `learned_about`: the documents that hold what was learned about
    hidden limits (`LearnedLimits.about`); `limits`: the provider's configured limits."""
    fingerprints = [k.fingerprint for k in keys]
    records = store.records(fingerprints)
    rests = store.model_rests(fingerprints, now)
    learned = learned_about(now)
    subjects = [limit_subject(k, part) for k in keys]
    accounts = [limit_subject(k, "") for k in keys]
    names = list(
        dict.fromkeys(
            [
                *(f"reported/{s}" for s in subjects),
                *(f"daily/{a}" for a in accounts),
                *(f"pace/{a}" for a in accounts),
                *(f"{kind}/{s}" for s in subjects for kind in ("pace", "slots") if f"{kind}/{s}" in learned),
                *([DISABLED_BY] if any(r.disabled for r in records) else []),
            ]
        )
    )
    found = dict(zip(names, store.documents(names), strict=True))
    quotas = _quotas(keys, subjects, found, now, _configured_today(store, provider, keys, limits, now))
    disabled_by = found.get(DISABLED_BY, {})
    statuses = [
        key_status(key, record, Pacing.of(found[f"pace/{account}"]), now, rest, default_model, quota,
                disabled_by.get(key.fingerprint))
        for key, account, record, rest, quota in zip(keys, accounts, records, rests, quotas, strict=True)
    ]  # fmt: skip
    return statuses, daily_totals([found[f"daily/{a}"] for a in dict.fromkeys(accounts)], now)


def _quotas(
    keys: Sequence[ApiKey],
    subjects: Sequence[str],
    found: Mapping[str, Document],
    now: float,
    configured: Mapping[str, tuple[int, float]],
) -> list[QuotaLeft]:
    """What each key has left (`QuotaLeft`), from the documents that say it (`found`, read once): the quota its
    answers reported, a probe's reading of its account's day, the windows learned from 429s, and what is left of
    a configured daily limit (`configured`)."""
    quotas = []
    for key, subject in zip(keys, subjects, strict=True):
        windows = [
            Pacing.of(found[f"pace/{subject}"]).quota(now) if f"pace/{subject}" in found else None,
            SlotLog.of(found[f"slots/{subject}"]).quota(now) if f"slots/{subject}" in found else None,
        ]
        tightest = min((w for w in windows if w is not None), key=lambda w: w.remaining or 0, default=None)
        reported, probed = found[f"reported/{subject}"], found[f"daily/{limit_subject(key, '')}"]
        quotas.append(quota_left(now, reported, probed, tightest, configured.get(key.fingerprint)))
    return quotas


def _configured_today(
    store: StateStore, provider: str, keys: Sequence[ApiKey], limits: ConfiguredLimits | None, now: float
) -> dict[str, tuple[int, float]]:
    """Per key, requests left today of a configured daily limit (`<PROVIDER>_REQUESTS_PER_DAY`) and seconds
    until the provider's day ends: the limit less the requests the history counts since the day began."""
    if limits is None or not limits.per_day:
        return {}
    ends_in = limits.day_ends_in(now)
    began = now + ends_in - 86400.0
    used: Counter[str] = Counter()
    for hour in store.history(began):
        if hour.provider == provider and hour.hour >= began - 1.0:
            used[hour.key] += hour.requests
    return {k.fingerprint: (max(0, limits.per_day - used[k.fingerprint]), ends_in) for k in keys}
