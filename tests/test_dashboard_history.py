"""The History page: its aggregations over real history from a client talking HTTP to the simulator, and the page
itself through AppTest (totals after a few chats, request-log filters, CSV exports, no secrets anywhere)."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from streamlit.runtime.memory_media_file_storage import _calculate_file_id
from streamlit.testing.v1 import AppTest

from dashboard import charts, history
from dashboard.client import get_client
from dashboard.text import provider_title
from llms import SmartClient
from llms.state.base import LATENCY_BOUNDS
from simulator import Simulator
from tests.conftest import ALL_SECRETS, MakeClient
from tests.test_dashboard import app, chat, env, use_keys  # noqa: F401  (env is a fixture)

HISTORY = "pages/history.py"
HELLO = [{"role": "user", "content": "the secret plans for tuesday"}]


@pytest.fixture
def busy_client(make_client: MakeClient) -> SmartClient:
    """Seven real requests: a 429 on openrouter:1, a timeout on groq:1 (an error taking ~1.5 s), five answers."""
    client = make_client({"openrouter": 1, "groq": 2}, steps={"openrouter:1": ["rate_limit"], "groq:1": ["timeout"]})
    for _ in range(5):
        client.complete(HELLO)
    return client


def slowest_bound(log: list[dict], provider: str, key_id: str | None = None) -> float:
    """The latency bucket's bound that holds the slowest of the provider's (or the key's) requests in the log."""
    slowest = max(r["latency_s"] for r in log if r["provider"] == provider and key_id in (None, r["key_id"]))
    return next(b for b in LATENCY_BOUNDS if slowest <= b)


@pytest.mark.slow
def test_totals_add_up_exactly_to_the_request_log(busy_client: SmartClient) -> None:
    log = busy_client.admin.request_log(1000)
    frame = history.hours_frame(busy_client.admin.history(hours=24))
    totals = history.provider_totals(frame).set_index("Provider")

    for provider in ("openrouter", "groq"):
        mine = [r for r in log if r["provider"] == provider]
        outcomes = Counter(r["outcome"] for r in mine)
        row = totals.loc[provider_title(provider)]
        assert row["Requests"] == len(mine)
        assert row["OK"] == outcomes["ok"]
        assert row["429s"] == outcomes["rate_limit"]
        assert row["Errors"] == len(mine) - outcomes["ok"] - outcomes["rate_limit"]
        assert row["Tokens in"] == sum(r["tokens_in"] for r in mine)
        assert row["Tokens out"] == sum(r["tokens_out"] for r in mine)
        assert row["Mean latency"] == pytest.approx(sum(r["latency_s"] for r in mine) / len(mine), abs=1e-5)
    assert totals["Requests"].sum() == len(log) == 7
    assert (totals.loc["OpenRouter", "429s"], totals.loc["Groq", "Errors"]) == (1, 1)
    # p95 at the bucket bounds: the one slow groq request (timed out at the 1.5 s deadline, which counts from
    # before its connection was made; its latency counts from when it left: on a loaded machine a little under
    # 1.5 s) is in its top 5 %; OpenRouter's answers come at once, so their p95 is the bound of the slowest of
    # them, which a loaded machine may push past the first bucket (the log's own latencies say which)
    assert max(r["latency_s"] for r in log if r["provider"] == "groq") > 1.0
    p95 = (totals.loc["Groq", "p95 latency"], totals.loc["OpenRouter", "p95 latency"])
    assert p95 == (slowest_bound(log, "groq"), slowest_bound(log, "openrouter"))
    busiest_first = sorted(totals.index, key=lambda title: -totals.loc[title, "Requests"])
    assert list(totals.index) == busiest_first  # (how many each served depends on when openrouter:1 frees)


@pytest.mark.slow
def test_key_table_matches_the_log_and_searches_ids_and_hints(busy_client: SmartClient) -> None:
    log = busy_client.admin.request_log(1000)
    frame = history.hours_frame(busy_client.admin.history(hours=24))
    hints = history.key_hints(busy_client)
    keys, matched = history.key_totals(frame, hints)

    assert matched == len(keys) == 3
    assert dict(zip(keys["Key"], keys["Requests"], strict=True)) == Counter(r["key_id"] for r in log)
    assert keys["Requests"].is_monotonic_decreasing
    assert list(keys["Hint"]) == [hints[k] for k in keys["Key"]]
    slow = keys.set_index("Key").loc["groq:1"]
    assert (slow["Errors"], slow["p95 latency"]) == (1, slowest_bound(log, "groq", "groq:1"))
    assert slow["Success rate"] == pytest.approx(slow["OK"] / slow["Requests"])

    assert list(history.key_totals(frame, hints, " GROQ:2 ")[0]["Key"]) == ["groq:2"]
    assert list(history.key_totals(frame, hints, hints["openrouter:1"].upper())[0]["Key"]) == ["openrouter:1"]
    assert history.key_totals(frame, hints, "nothing-like-this")[1] == 0
    top, matched = history.key_totals(frame, hints, "groq", top=1)
    assert (len(top), matched) == (1, 2)


@pytest.mark.slow
def test_hourly_chart_covers_every_hour_and_sums_to_the_totals(busy_client: SmartClient) -> None:
    now = time.time()
    frame = history.hours_frame(busy_client.admin.history(hours=24))
    by_outcome = history.timeline(frame, 24, now)
    assert len(by_outcome) == 25 and by_outcome.index.is_monotonic_increasing  # quiet hours are zeros, not gaps
    assert list(by_outcome.columns) == ["OK", "429s", "Errors"]
    assert by_outcome.sum().to_dict() == {"OK": 5, "429s": 1, "Errors": 1}
    by_provider = history.timeline(frame, 1, now, "Provider")
    assert len(by_provider) == 2  # the current and the previous clock hour
    served = Counter(provider_title(r["provider"]) for r in busy_client.admin.request_log(1000))
    assert by_provider.sum().to_dict() == dict(served) and sum(served.values()) == 7


@pytest.mark.slow
def test_csv_exports_hold_every_row_and_no_secret_or_content(busy_client: SmartClient) -> None:
    rows = busy_client.admin.history(hours=24)
    parsed = list(csv.DictReader(io.StringIO(history.history_csv(rows).decode())))
    assert [(r["key_id"], int(r["requests"]), int(r["errors"])) for r in parsed] == [
        (r["key_id"], r["requests"], r["errors"]) for r in rows
    ]
    assert all(r["hour_utc"].endswith(":00:00+00:00") for r in parsed)

    log = busy_client.admin.request_log(1000)
    lines = list(csv.DictReader(io.StringIO(history.log_csv(log).decode())))
    assert [(r["key_id"], r["outcome"], r["status"]) for r in lines] == [
        (r["key_id"], r["outcome"], "" if r["status"] is None else str(r["status"])) for r in log
    ]
    assert [float(r["latency_s"]) for r in lines] == [r["latency_s"] for r in log]
    dumped = history.history_csv(rows) + history.log_csv(log)
    assert b"tuesday" not in dumped and not any(s.encode() in dumped for s in ALL_SECRETS)


def test_the_p95_of_several_rows_comes_from_their_summed_latency_buckets() -> None:
    """groq:1 answered 94 requests within 100 ms, groq:2 six within 5 s: 95 % of Groq's 100 requests are reached
    only in the 5 s bucket. Each row's own p95 (0.1 s, 5.0 s) would not say so if averaged."""

    def buckets(bound: float, count: int) -> list[int]:
        row = [0] * (len(LATENCY_BOUNDS) + 1)
        row[LATENCY_BOUNDS.index(bound)] = count
        return row

    rows = [
        {"provider": "groq", "key_id": "groq:1", "requests": 94, "latency_buckets": buckets(0.1, 94)},
        {"provider": "groq", "key_id": "groq:2", "requests": 6, "latency_buckets": buckets(5.0, 6)},
        {"provider": "gemini", "key_id": "gemini:1", "requests": 96, "latency_buckets": buckets(0.2, 96)},
        {"provider": "gemini", "key_id": "gemini:2", "requests": 4, "latency_buckets": buckets(7.5, 4)},
    ]
    p95 = history.bucket_quantile(pd.DataFrame(rows), ["provider"], 0.95)
    assert p95.to_dict() == {"groq": 5.0, "gemini": 0.2}


def test_ten_thousand_keys_stay_a_top_n_table_and_a_few_chart_columns() -> None:
    hour = history.hour_start(time.time())
    rows = [
        {"hour": hour, "provider": "groq", "key_id": f"groq:{i}", "requests": i % 7 + 1, "successes": i % 7 + 1}
        | {"rate_limits": 0, "errors": 0, "tokens_in": 1, "tokens_out": 2, "latency_mean_s": 0.1}
        | {"latency_p95_s": 0.1}
        for i in range(10_000)
    ]
    frame = history.hours_frame(rows)
    keys, matched = history.key_totals(frame, {})
    assert (len(keys), matched) == (history.TOP_KEYS, 10_000)
    assert set(keys["Requests"]) == {7}
    assert list(keys["Key"][:3]) == ["groq:6", "groq:13", "groq:20"], "as busy: in numeric order, not :13, :20, :6"
    assert history.provider_totals(frame)["Requests"].item() == sum(r["requests"] for r in rows)
    assert history.timeline(frame, 24, time.time(), "Provider").shape[1] == 1


# --- the page -------------------------------------------------------------------------------------------------


def rendered(at: AppTest) -> str:
    """Everything the page sent to the browser, as text: every element's message, tables included."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        if proto := getattr(node, "proto", None):
            parts.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    parts.extend(frame.value.to_csv() for frame in at.dataframe)
    return "\n".join(parts)


def downloads(at: AppTest) -> dict[str, str]:
    return {button.label: button.proto.url for button in at.download_button}


def serves(url: str, data: bytes, file_name: str) -> bool:
    """Whether a download button's URL is for exactly these bytes: Streamlit names media files by their hash."""
    return url.rsplit("/", 1)[-1] == f"{_calculate_file_id(data, 'text/csv', file_name)}.csv"


@pytest.fixture
def page(env: pytest.MonkeyPatch, sim: Simulator) -> Iterator[AppTest]:  # noqa: F811
    """Three chats over real HTTP: openrouter:1 answers 429, openrouter:2 fails once with a 500, groq:1 stands in."""
    use_keys(
        env,
        sim,
        {"openrouter": 2, "groq": 1},
        steps={"openrouter:2": ["ok", "server_error"]},
        limits={"openrouter:1": (0, 60.0)},
    )
    at = app().run()
    for text in ("Hello", "Hello again", "And once more"):
        chat(at, text)
    at.switch_page(HISTORY).run()
    assert not at.exception, at.exception
    yield at


@pytest.mark.slow
def test_page_shows_totals_filters_the_log_and_serves_csv(page: AppTest) -> None:
    at, client = page, get_client()
    log = client.admin.request_log(1000)
    assert Counter(r["outcome"] for r in log) == {"ok": 3, "rate_limit": 1, "transient": 1}

    totals = at.dataframe[0].value.set_index("Provider")
    assert totals["Requests"].sum() == len(log) == 5
    assert (totals.loc["OpenRouter", "429s"], totals.loc["OpenRouter", "Errors"], totals.loc["Groq", "OK"]) == (1, 1, 1)
    keys = at.dataframe[1].value
    assert dict(zip(keys["Key"], keys["Requests"], strict=True)) == Counter(r["key_id"] for r in log)
    assert at.segmented_control(key="history_range").value == "Last day"

    history_csv = history.history_csv(client.admin.history(hours=24))
    log_csv = history.log_csv(log)
    urls = downloads(at)
    assert serves(urls["Hourly history (CSV)"], history_csv, "llm-history-last-day.csv")
    assert serves(urls["Request log (CSV)"], log_csv, history.LOG_FILE_NAME)
    assert sum(int(r["requests"]) for r in csv.DictReader(io.StringIO(history_csv.decode()))) == 5

    shown = at.dataframe[-1].value
    assert list(shown["Key"]) == [r["key_id"] for r in log]  # newest first, all five
    assert shown["Latency"].dtype == "float64" and str(shown["Time"].dtype).startswith("datetime64")

    at.selectbox(key="log_outcome").set_value("rate_limit").run()
    assert list(at.dataframe[-1].value["Key"]) == ["openrouter:1"]
    assert serves(
        downloads(at)["Request log (CSV)"],
        history.log_csv(client.admin.request_log(outcome="rate_limit")),
        history.LOG_FILE_NAME,
    )
    at.selectbox(key="log_outcome").set_value(None).run()
    at.selectbox(key="log_provider").set_value("groq").run()
    assert list(at.dataframe[-1].value["Provider"]) == ["Groq"]
    at.selectbox(key="log_provider").set_value(None).run()
    at.selectbox(key="log_key").set_value("openrouter:2").run()
    assert list(at.dataframe[-1].value["Outcome"]) == ["ok", "error", "ok"]  # newest first
    at.selectbox(key="log_outcome").set_value("invalid_key").run()
    assert [i.value for i in at.info] == ["No logged request matches these filters."]

    at.text_input(key="history_search").input("groq").run()
    assert list(at.dataframe[1].value["Key"]) == ["groq:1"]
    at.segmented_control(key="history_range").set_value("Last hour").run()
    assert at.dataframe[0].value["Requests"].sum() == 5
    assert serves(downloads(at)["Hourly history (CSV)"], history_csv, "llm-history-last-hour.csv")

    page_text = rendered(at)
    assert "gsk_" in page_text  # hints are shown, so the check below looks at the right text
    assert not any(secret in page_text for secret in ALL_SECRETS)
    assert "tuesday" not in page_text and "Hello again" not in page_text


def test_page_says_so_when_nothing_happened_yet(env: pytest.MonkeyPatch, sim: Simulator) -> None:  # noqa: F811
    use_keys(env, sim, {"groq": 1})
    at = app().run()
    at.switch_page(HISTORY).run()
    assert not at.exception
    assert [i.value for i in at.info] == ["No requests in the last day yet.", "No requests logged yet."]
    assert not at.dataframe and not at.download_button
    at.segmented_control(key="history_range").set_value("Last hour").run()
    assert at.info[0].value == "No requests in the last hour yet."


def test_chart_legends_wrap_to_the_charts_width_and_keep_the_series_order_and_colours() -> None:
    """`st.bar_chart` laid its legend out in one row, cut off at a phone's edge ("Other erro"): the legend's
    columns now follow the chart's live width (checked drawn in tests/test_browser.py)."""
    now = time.time()
    hours = pd.DataFrame(
        [
            {
                "hour": history.hour_start(now - 3 * 3600),
                "provider": "groq",
                "successes": 4,
                "rate_limits": 1,
                "errors": 2,
                "requests": 7,
            }
        ]
    )
    timeline = history.timeline(hours, 24, now)
    spec = charts.stacked_bars(timeline, colors=history.OUTCOME_COLORS, y_label="Requests").to_dict()
    color = spec["encoding"]["color"]
    assert color["legend"]["columns"] == {"expr": f"max(1, floor(width / {charts.LEGEND_COLUMN}))"}
    assert (color["legend"]["orient"], color["legend"]["direction"]) == ("bottom", "horizontal")
    assert color["scale"] == {"domain": ["OK", "429s", "Errors"], "range": history.OUTCOME_COLORS}
    assert spec["encoding"]["x"]["field"] == "Hour" and spec["encoding"]["x"]["timeUnit"] == "yearmonthdatehours"
    assert spec["encoding"]["y"]["axis"]["tickMinStep"] == 1, "requests are whole: no 0.5 ticks"
    drawn = pd.DataFrame(spec["datasets"][spec["data"]["name"]])
    assert drawn.groupby("Series")["Requests"].sum().to_dict() == {"OK": 4, "429s": 1, "Errors": 2}

    keys = pd.DataFrame({"Succeeded": [5, 1], "Rate-limited": [0, 3], "Other errors": [0, 0]}, index=["g:2", "g:10"])
    keys.index.name = "Key"
    bars = charts.stacked_bars(keys, horizontal=True).to_dict()["encoding"]
    assert bars["y"]["sort"] == ["g:2", "g:10"], "busiest first, as ranked, not in text order"
    assert bars["x"]["stack"] is True and bars["x"]["field"] == "Requests"
