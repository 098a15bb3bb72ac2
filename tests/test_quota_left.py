"""Quota left and a forecast: what each key has left in its window and today, and when a provider runs out at its
recent pace — in `get_status_summary()`, `/metrics` and as an alert, on every store."""

from __future__ import annotations

import math

import pytest
from conftest import USER_HELLO, Clock, MakeClient

from llms import AllKeysExhaustedError, ProviderStatus
from llms.alerts import incidents
from llms.learned_limits import NOTE_QUOTA_EVERY
from llms.quota_left import Forecast, QuotaLeft, forecast, quota_left
from simulator import Simulator

NOW = 1_900_000_000.0  # 2030-03-17 17:46:40 UTC: 2,800 s into its clock hour, 64,000 s into its UTC day


def test_answers_that_count_the_day_give_each_key_its_requests_left_today_and_the_provider_a_forecast(
    make_client: MakeClient,
) -> None:
    """Groq's `x-ratelimit-remaining-requests` counts the day: after two answers each key has 8 of 10 left, and
    at the pace of 4 requests in the last (1 h 47 min) the provider's 16 last 7 h 8 min."""
    clock = Clock(NOW)
    client = make_client({"groq": 2}, limits={"groq:1": (10, 3600.0), "groq:2": (10, 3600.0)}, clock=clock)
    for _ in range(4):
        client.complete(USER_HELLO)
        clock.advance(NOTE_QUOTA_EVERY)  # (a quota is noted in the store at most this often per key)
    summary = client.get_status_summary()["groq"]
    for key in summary["keys"]:
        assert key["quota"]["today_left"] == 8 and key["quota"]["window_left"] is None
        assert key["quota"]["today_resets_in"] == pytest.approx(3600.0, abs=30.0)
    pace = 4 / (3600.0 + 2800.0 + 4 * NOTE_QUOTA_EVERY)  # the previous clock hour and this one, so far
    assert summary["forecast"]["runs_out_in"] == pytest.approx(16 / pace, rel=0.01)
    assert summary["forecast"]["frees_in"] == pytest.approx(3600.0, abs=30.0)


def test_a_configured_daily_limit_counts_down_to_the_provider_s_midnight(make_client: MakeClient) -> None:
    clock = Clock(NOW)
    client = make_client({"openrouter": 1}, clock=clock, OPENROUTER_REQUESTS_PER_DAY="5")
    client.complete(USER_HELLO)
    client.complete(USER_HELLO)
    quota = client.get_status_summary()["openrouter"]["keys"][0]["quota"]
    assert quota == {
        "window_left": None,
        "window_resets_in": None,
        "today_left": 3,
        "today_resets_in": pytest.approx(86400.0 - 64000.0),
        "tokens_left": None,
        "tokens_resets_in": None,
    }


def test_a_window_learned_from_a_429_says_what_it_has_left(make_client: MakeClient, sim: Simulator) -> None:
    """OpenRouter says nothing on a success; its 429's reset hint teaches the window (2 per 30 s here), whose
    slots left show until they free."""
    client = make_client({"openrouter": 1}, limits={"openrouter:1": (2, 30.0)})
    client.complete(USER_HELLO)
    client.complete(USER_HELLO)
    with pytest.raises(AllKeysExhaustedError):
        client.complete(USER_HELLO, wait=False)
    quota = client.get_status_summary()["openrouter"]["keys"][0]["quota"]
    assert quota["window_left"] == 0 and 20.0 < quota["window_resets_in"] <= 30.1
    assert quota["today_left"] is None


def test_nothing_said_is_nothing_shown(make_client: MakeClient) -> None:
    client = make_client({"openrouter": 1})
    client.complete(USER_HELLO)
    summary = client.get_status_summary()["openrouter"]
    fields = ("window_left", "window_resets_in", "today_left", "today_resets_in", "tokens_left", "tokens_resets_in")
    assert summary["keys"][0]["quota"] == dict.fromkeys(fields)
    assert summary["forecast"] == {"runs_out_in": None, "frees_in": None, "today_left": None}


def test_the_tighter_count_wins_and_an_expired_one_is_forgotten() -> None:
    reported = {"remaining": 900, "until": NOW + 600.0, "per_day": True}
    assert quota_left(NOW, reported, {}, configured_today=(40, 3000.0)) == QuotaLeft(None, None, 40, 3000.0)
    assert quota_left(NOW + 601.0, reported, {"remaining": 7, "until": NOW + 900.0}).today_left == 7
    assert forecast([QuotaLeft(today_left=0, today_resets_in=50.0)], 0.0) == Forecast(0.0, 50.0, 0)
    assert forecast([QuotaLeft(today_left=10, today_resets_in=50.0)], 0.0) == Forecast(None, 50.0, 10)


def test_a_provider_about_to_run_dry_is_an_incident() -> None:
    def groq(runs_out_in: float, frees_in: float) -> ProviderStatus:
        return ProviderStatus("groq", "Groq", "m", 1, 1, None, None, None, (), None, Forecast(runs_out_in, frees_in))

    found = incidents([groq(1200.0, 7200.0)])
    text = "Groq runs out of today's requests in 20 min at the last hour's pace; they free in 2.0 h"
    assert found["dry:Groq"].text == text
    assert "dry:Groq" not in incidents([groq(7200.0, 9000.0)])  # not within the hour
    assert "dry:Groq" not in incidents([groq(1200.0, 600.0)])  # frees before it runs out


def test_the_status_page_shows_what_is_left(make_client: MakeClient) -> None:
    from dashboard import key_table, status

    clock = Clock(NOW)
    client = make_client({"groq": 1}, limits={"groq:1": (10, 3600.0)}, clock=clock)
    client.complete(USER_HELLO)
    groq = next(p for p in client.admin.provider_statuses() if p.provider == "groq")
    ahead = status.summarize(groq, NOW).forecast
    assert ahead is not None and ahead.startswith("9 requests left today · they free at ")  # before it runs out
    frame = key_table.key_frame(status.rows_of([groq], NOW), NOW)
    assert frame.loc[0, "Left today"] == 9 and math.isnan(frame.loc[0, "Left in window"])
    assert frame.loc[0, "Tokens left"] == groq.keys[0].quota.tokens_left


def test_the_tokens_an_answer_says_are_left_show_until_the_window_is_whole(make_client: MakeClient) -> None:
    """Groq's answers say the minute's tokens left (`x-ratelimit-remaining-tokens`, the simulator's 6,000 less
    what the call spent) and when they are whole again: the key's status shows them until then."""
    clock = Clock(NOW)
    client = make_client({"groq": 1}, clock=clock)
    client.complete(USER_HELLO)
    quota = client.get_status_summary()["groq"]["keys"][0]["quota"]
    assert 5900 < quota["tokens_left"] < 6000 and 0 < quota["tokens_resets_in"] <= 60.0
    clock.advance(61.0)
    assert client.get_status_summary()["groq"]["keys"][0]["quota"]["tokens_left"] is None
