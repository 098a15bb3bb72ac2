"""The history page's data: totals per provider and per key, requests per hour, the request log, CSV exports.

Everything comes from `client.admin.history()` (per key and hour) and `client.admin.request_log()` (per request), as
plain dicts without message content or keys; these functions only reshape them, so they are tested without
Streamlit. Charts aggregate per provider or per outcome and tables cut to the top keys, so ten thousand keys still
draw a readable page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import pandas as pd
import streamlit as st

from config.api_keys import key_order
from dashboard.text import provider_title
from llms import ABANDONED, OutcomeKind, SmartClient, latency_quantile

RANGES: dict[str, float] = {"Last hour": 1.0, "Last day": 24.0, "Last 30 days": 720.0}
"""Range label → hours handed to `client.admin.history(hours=…)`."""
DEFAULT_RANGE = "Last day"
LOG_LIMIT = 500
TOP_KEYS = 200
"""Keys shown in the per-key table: the busiest first, so a pool of 10,000 keys stays a readable table."""
P95 = 0.95

HOUR_FIELDS = (
    "hour",
    "provider",
    "key_id",
    "requests",
    "successes",
    "rate_limits",
    "errors",
    "tokens_in",
    "tokens_out",
    "latency_mean_s",
    "latency_p95_s",
    "latency_buckets",
)
LOG_FIELDS = ("at", "provider", "model", "key_id", "outcome", "status", "latency_s", "tokens_in", "tokens_out")
COUNTS = ("requests", "successes", "rate_limits", "errors", "tokens_in", "tokens_out")

OUTCOME_WORDS: dict[str, str] = {kind.value: kind.logged for kind in OutcomeKind} | {
    ABANDONED: "abandoned by the caller"
}
"""Outcome value (as the request log stores it) → what the log and its filter show."""

_TOTAL_NAMES = {
    "requests": "Requests",
    "successes": "OK",
    "rate_limits": "429s",
    "errors": "Errors",
    "tokens_in": "Tokens in",
    "tokens_out": "Tokens out",
    "latency_mean_s": "Mean latency",
    "latency_p95_s": "p95 latency",
}
_SECONDS = "%.3f s"
_P95_HELP = (
    "Over every request counted in the row; latencies are kept in buckets (50 ms, 100 ms, 200 ms, …), so 0.050 s "
    "means at most 50 ms."
)
_COUNT_COLUMNS: dict[str, Any] = {
    "Requests": st.column_config.NumberColumn("Requests", format="localized"),
    "OK": st.column_config.NumberColumn("OK", format="localized", help="Answered successfully."),
    "429s": st.column_config.NumberColumn("429s", format="localized", help="Rate-limited."),
    "Errors": st.column_config.NumberColumn("Errors", format="localized", help="Any other failure."),
    "Tokens in": st.column_config.NumberColumn("Tokens in", format="localized"),
    "Tokens out": st.column_config.NumberColumn("Tokens out", format="localized"),
    "Mean latency": st.column_config.NumberColumn("Mean latency", format=_SECONDS),
    "p95 latency": st.column_config.NumberColumn("p95 latency", format=_SECONDS, help=_P95_HELP),
}
TOTAL_COLUMNS: dict[str, Any] = {"Provider": st.column_config.TextColumn("Provider", pinned=True), **_COUNT_COLUMNS}
KEY_COLUMNS: dict[str, Any] = {
    "Key": st.column_config.TextColumn("Key", pinned=True),
    "Hint": st.column_config.TextColumn("Hint", help="First and last four characters; the key is never shown."),
    "Provider": st.column_config.TextColumn("Provider"),
    "Success rate": st.column_config.ProgressColumn("Success rate", format="percent", min_value=0.0, max_value=1.0),
    **_COUNT_COLUMNS,
}
LOG_COLUMNS: dict[str, Any] = {
    "Time": st.column_config.DatetimeColumn("Time", format="YYYY-MM-DD HH:mm:ss"),
    "Provider": st.column_config.TextColumn("Provider"),
    "Model": st.column_config.TextColumn("Model"),
    "Key": st.column_config.TextColumn("Key"),
    "Outcome": st.column_config.TextColumn("Outcome"),
    "Status": st.column_config.NumberColumn("HTTP", format="%d", help="HTTP status; empty when none came back."),
    "Latency": st.column_config.NumberColumn("Latency", format=_SECONDS),
    "Tokens in": st.column_config.NumberColumn("Tokens in", format="localized"),
    "Tokens out": st.column_config.NumberColumn("Tokens out", format="localized"),
}
OUTCOME_COLORS = ["#16a34a", "#f59e0b", "#dc2626"]
"""OK, 429s, Errors: the bar colours of the per-outcome chart, in its column order."""


def empty_text(range_label: str) -> str:
    """What the page says instead of empty tables: "No requests in the last hour yet."."""
    return f"No requests in the {range_label.lower()} yet."


# --- the hourly history ---------------------------------------------------------------------------------------


def hours_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """`client.admin.history()` rows as one frame (built once per run; every view below derives from it)."""
    return pd.DataFrame(list(rows), columns=list(HOUR_FIELDS))


def _summarise(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sums per group, the request-weighted mean latency (exact: each row's mean times its requests is its
    total) and the p95 of the group's summed latency buckets (exact to the bucket, not an average of p95s)."""
    busy = frame[frame["requests"] > 0].assign(latency_total=lambda f: f["latency_mean_s"] * f["requests"])
    grouped = busy.groupby(by, sort=False)
    sums = grouped[[*COUNTS, "latency_total"]].sum()
    sums["latency_mean_s"] = sums.pop("latency_total") / sums["requests"]
    sums["latency_p95_s"] = bucket_quantile(busy, by, P95)
    return sums.reset_index()


def bucket_quantile(frame: pd.DataFrame, by: list[str], share: float) -> pd.Series:
    """Per group, the `share` quantile of latency over the group's rows: their bucket counts summed, then read as
    `SmartClient` reads one row's (`llms.latency_quantile`). Rows without buckets count for nothing here."""
    counts = pd.DataFrame(
        [b if isinstance(b, list) else [] for b in frame["latency_buckets"]], index=frame.index
    ).fillna(0)
    summed = counts.groupby([frame[column] for column in by], sort=False).sum()
    return pd.Series([latency_quantile(row, share) for row in summed.to_numpy()], index=summed.index)


def provider_totals(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per provider, busiest first: the compact table at the top of the page."""
    if frame.empty:
        return pd.DataFrame(columns=list(TOTAL_COLUMNS))
    totals = _summarise(frame, ["provider"]).sort_values("requests", ascending=False, kind="stable")
    totals.insert(0, "Provider", totals.pop("provider").map(provider_title))
    return totals.rename(columns=_TOTAL_NAMES)[list(TOTAL_COLUMNS)].reset_index(drop=True)


def key_totals(
    frame: pd.DataFrame, hints: Mapping[str, str], search: str = "", top: int = TOP_KEYS
) -> tuple[pd.DataFrame, int]:
    """The `top` busiest keys matching `search` (part of a key id or hint, any case), and how many matched; keys
    as busy as each other in numeric order (`groq:2` before `groq:10`)."""
    if frame.empty:
        return pd.DataFrame(columns=list(KEY_COLUMNS)), 0
    keys = _summarise(frame, ["provider", "key_id"])
    keys["Hint"] = keys["key_id"].map(lambda key_id: hints.get(key_id, ""))
    if needle := search.strip().lower():
        found = keys["key_id"].str.lower().str.contains(needle, regex=False)
        keys = keys[found | keys["Hint"].str.lower().str.contains(needle, regex=False)]
    keys = keys.assign(order=keys["key_id"].map(key_order))  # groq:2 before groq:10 (text puts :10 first)
    keys = keys.sort_values(["requests", "order"], ascending=[False, True], kind="stable")
    keys["Success rate"] = keys["successes"] / keys["requests"]
    keys["Provider"] = keys["provider"].map(provider_title)
    shown = keys.head(top).rename(columns={"key_id": "Key", **_TOTAL_NAMES})
    return shown[list(KEY_COLUMNS)].reset_index(drop=True), len(keys)


def hour_start(at: float) -> float:
    return at - at % 3600


def timeline(
    frame: pd.DataFrame, hours: float, now: float, by: Literal["Outcome", "Provider"] = "Outcome"
) -> pd.DataFrame:
    """Requests per hour for a stacked bar chart, every hour of the range present (quiet hours are zeros, so the
    time axis is honest): split into OK / 429s / Errors, or into providers. A few columns whatever the key count."""
    start = hour_start(now - hours * 3600)
    slots = [start + 3600 * i for i in range(int((hour_start(now) - start) // 3600) + 1)]
    if by == "Outcome":
        names = {"successes": "OK", "rate_limits": "429s", "errors": "Errors"}
        per_hour = frame.groupby("hour")[list(names)].sum().rename(columns=names)
    else:
        titled = frame.assign(provider=frame["provider"].map(provider_title))
        per_hour = titled.pivot_table(index="hour", columns="provider", values="requests", aggfunc="sum")
    per_hour = per_hour.reindex(slots, fill_value=0).fillna(0).astype("int64")
    per_hour.index = local_times(per_hour.index.to_series()).rename("Hour")
    per_hour.columns.name = None
    return per_hour


def local_times(epochs: pd.Series) -> pd.Series:
    """Epoch seconds → naive local datetimes, as the Status page shows times."""
    zone = datetime.now().astimezone().tzinfo
    return pd.to_datetime(epochs.astype("float64"), unit="s", utc=True).dt.tz_convert(zone).dt.tz_localize(None)


def _utc_text(epochs: pd.Series) -> pd.Series:
    moments = pd.to_datetime(epochs.astype("float64"), unit="s", utc=True).dt.round("us")
    return moments.map(lambda t: t.isoformat())


def history_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """One line per key and hour, with the hour's start in UTC (ISO 8601) first: what the CSV export serves."""
    frame = hours_frame(rows).drop(columns="latency_buckets")  # the p95 column says what they add up to
    frame.insert(0, "hour_utc", _utc_text(frame.pop("hour")))
    return frame.to_csv(index=False).encode()


# --- the request log ------------------------------------------------------------------------------------------


def log_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """`client.admin.request_log()` rows for the table: datetime and numeric columns, words for outcomes."""
    raw = pd.DataFrame(list(rows), columns=list(LOG_FIELDS))
    return pd.DataFrame(
        {
            "Time": local_times(raw["at"]),
            "Provider": raw["provider"].map(provider_title),
            "Model": raw["model"],
            "Key": raw["key_id"],
            "Outcome": raw["outcome"].map(lambda o: OUTCOME_WORDS.get(o, o)),
            "Status": raw["status"].astype("Int64"),
            "Latency": raw["latency_s"].astype("float64"),
            "Tokens in": raw["tokens_in"].astype("int64"),
            "Tokens out": raw["tokens_out"].astype("int64"),
        },
        columns=list(LOG_COLUMNS),
    )


def log_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The request log as served by its CSV export: UTC ISO time first, then the plain fields."""
    frame = pd.DataFrame(list(rows), columns=list(LOG_FIELDS))
    frame.insert(0, "time_utc", _utc_text(frame.pop("at")))
    frame["status"] = frame["status"].astype("Int64")
    return frame.to_csv(index=False).encode()


def key_hints(client: SmartClient) -> dict[str, str]:
    """Key id → hint for every configured key (keys gone from the configuration keep their history, hintless)."""
    return {k.key_id: k.hint for status in client.admin.provider_statuses() for k in status.keys}


def providers(client: SmartClient) -> list[str]:
    return [status.provider for status in client.admin.provider_statuses()]


LOG_FILE_NAME = "llm-requests.csv"


def history_file_name(range_label: str) -> str:
    """`llm-history-last-day.csv`: named by range, not by moment, so the same data is the same download."""
    return f"llm-history-{range_label.lower().replace(' ', '-')}.csv"
