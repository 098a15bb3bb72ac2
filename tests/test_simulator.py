"""Wire-format tests for the simulator: raw HTTP against a live simulator, plus the google-genai SDK.

The client's classification is only as good as the simulator's fidelity, so these pin each provider's status
codes, headers, error bodies and SSE framing (see docs in DESIGN.md §3–§4).
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ctrl_c_raises

from simulator import DEMO_KEYS, SimRequest, Simulator, Step
from simulator.core import go_duration, wire_examples
from simulator.registry import WIRE_STEPS
from simulator.remote import SimulatorProcess

ROOT = Path(__file__).resolve().parents[1]
PROVIDERS = ("openrouter", "groq", "gemini")
PROMPT = "Hello simulator, please answer"
HANG = 0.3
REGISTERED: list[str] = []  # every secret this module registers, for the leak check


@pytest.fixture(scope="module")
def simulator() -> Iterator[Simulator]:
    with Simulator(hang_seconds=HANG) as sim:
        yield sim


def new_secret(provider: str) -> str:
    tag = uuid.uuid4().hex
    secret = {
        "openrouter": f"sk-or-v1-{tag}{tag}",
        "groq": f"gsk_{tag}{tag[:20]}",
        "gemini": f"AIza{tag}{tag[:3]}",
    }[provider]
    REGISTERED.append(secret)
    return secret


def scripted(sim: Simulator, provider: str, *steps: Step | str, **kwargs: Any) -> str:
    secret = new_secret(provider)
    sim.add_key(provider, secret, *steps, **kwargs)
    return secret


def send(
    sim: Simulator,
    provider: str,
    secret: str | None,
    *,
    stream: bool = False,
    body: dict[str, Any] | None = None,
    text: str = PROMPT,
    timeout: float = 5.0,
    session: requests.Session | None = None,
) -> requests.Response:
    """One chat request in the provider's own wire format."""
    headers: dict[str, str] = {}
    if provider == "gemini":
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        url = f"{sim.base_urls['gemini']}/v1/models/gemini-2.5-flash:{action}"
        payload = body or {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        if secret:
            headers["x-goog-api-key"] = secret
    else:
        url = f"{sim.base_urls[provider]}/chat/completions"
        payload = body or {"model": "test/model", "messages": [{"role": "user", "content": text}]}
        payload = {**payload, "stream": stream}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
    return (session or requests).post(url, json=payload, headers=headers, timeout=timeout, stream=stream)


def expected_reply(provider: str, text: str = PROMPT) -> str:
    return f"Simulated {provider} reply to: {text}"


def sse_events(resp: requests.Response) -> list[str]:
    """The raw SSE events (blank-line separated) of a streamed answer."""
    raw = resp.content.decode().replace("\r\n", "\n")
    return [e for e in raw.split("\n\n") if e]


def data_events(resp: requests.Response) -> list[str]:
    return [e.removeprefix("data: ") for e in sse_events(resp) if e.startswith("data: ")]


# --------------------------------------------------------------------------------------------- success


@pytest.mark.parametrize("provider", PROVIDERS)
def test_success_shape(simulator: Simulator, provider: str) -> None:
    secret = scripted(simulator, provider)
    resp = send(simulator, provider, secret)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    reply = expected_reply(provider)
    prompt_tokens, completion_tokens = len(PROMPT.split()), len(reply.split())
    if provider == "gemini":
        candidate = body["candidates"][0]
        assert candidate["content"] == {"parts": [{"text": reply}], "role": "model"}
        assert candidate["finishReason"] == "STOP"
        assert body["usageMetadata"] == {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": completion_tokens,
            "totalTokenCount": prompt_tokens + completion_tokens,
        }
        assert body["modelVersion"] == "gemini-2.5-flash"
        assert body["responseId"]
    else:
        assert body["id"].startswith("gen-" if provider == "openrouter" else "chatcmpl-")
        assert body["object"] == "chat.completion"
        assert isinstance(body["created"], int)
        assert body["model"] == "test/model"
        assert body["choices"] == [
            {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        ]
        assert body["usage"] == {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        assert (body.get("provider") == "SimProvider") is (provider == "openrouter")
    last = simulator.requests[-1]
    assert (last.provider, last.status, last.step, last.stream, last.key_in_url) == (
        provider,
        200,
        "ok",
        False,
        False,
    )


def test_groq_sends_ratelimit_headers_on_success(simulator: Simulator) -> None:
    resp = send(simulator, "groq", scripted(simulator, "groq"))
    h = resp.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("14400", "14399")
    assert h["x-ratelimit-reset-requests"] == "6s"
    assert int(h["x-ratelimit-limit-tokens"]) >= int(h["x-ratelimit-remaining-tokens"]) > 0
    assert re.fullmatch(r"\d+(ms|s)", h["x-ratelimit-reset-tokens"])


def test_reply_uses_last_user_message_truncated(simulator: Simulator) -> None:
    long_text = "word " * 80
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": long_text},
    ]
    resp = send(simulator, "groq", scripted(simulator, "groq"), body={"model": "m", "messages": messages})
    body = resp.json()
    assert body["choices"][0]["message"]["content"] == f"Simulated groq reply to: {long_text[:200]}"
    assert body["usage"]["prompt_tokens"] == 2 + 2 + 2 + 80


@pytest.mark.parametrize("provider", ["openrouter", "groq"])
def test_openai_image_part_is_noticed(simulator: Simulator, provider: str) -> None:
    content = [
        {"type": "text", "text": "what is"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "this?"},
    ]
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    resp = send(simulator, provider, scripted(simulator, provider), body=body)
    assert resp.json()["choices"][0]["message"]["content"] == (
        f"Simulated {provider} reply to: what is this? [image received]"
    )


def test_gemini_inline_data_is_noticed(simulator: Simulator) -> None:
    parts = [{"text": "describe"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]
    body = {
        "contents": [{"role": "user", "parts": parts}],
        "systemInstruction": {"parts": [{"text": "be nice"}]},
    }
    resp = send(simulator, "gemini", scripted(simulator, "gemini"), body=body)
    out = resp.json()
    assert out["candidates"][0]["content"]["parts"][0]["text"] == "Simulated gemini reply to: describe [image received]"
    assert out["usageMetadata"]["promptTokenCount"] == 3


@pytest.mark.parametrize("provider", ["openrouter", "groq", "gemini"])
def test_malformed_body_is_bad_request(simulator: Simulator, provider: str) -> None:
    body = {"contents": []} if provider == "gemini" else {"model": "m", "messages": []}
    resp = send(simulator, provider, scripted(simulator, provider), body=body)
    assert resp.status_code == 400
    assert simulator.requests[-1].step == "bad_request"


# --------------------------------------------------------------------------------------------- errors

# step -> HTTP status for (openrouter, groq, gemini)
STATUS = {
    Step.RATE_LIMIT: (429, 429, 429),
    Step.RATE_LIMIT_NOHINT: (429, 429, 429),
    Step.RATE_LIMIT_DAILY: (429, 429, 429),
    Step.INVALID_KEY: (401, 401, 400),
    Step.PERMISSION_DENIED: (403, 403, 403),
    Step.NO_CREDITS: (402, 402, 429),
    Step.SERVER_ERROR: (500, 500, 500),
    Step.OVERLOADED: (502, 503, 503),
    Step.GARBAGE: (200, 200, 200),
    Step.ERROR_200: (200, 200, 200),
    Step.BAD_REQUEST: (400, 400, 400),
    Step.CONTEXT_LENGTH: (400, 400, 400),
    Step.TOO_LARGE: (413, 413, 400),
    Step.MODEL_NOT_FOUND: (404, 404, 404),
    Step.BLOCKED: (403, 400, 200),
    Step.MID_STREAM_ERROR: (500, 500, 500),  # non-streaming: behaves as server_error
}
GEMINI_STATUS = {
    Step.RATE_LIMIT: "RESOURCE_EXHAUSTED",
    Step.RATE_LIMIT_NOHINT: "RESOURCE_EXHAUSTED",
    Step.RATE_LIMIT_DAILY: "RESOURCE_EXHAUSTED",
    Step.INVALID_KEY: "INVALID_ARGUMENT",
    Step.PERMISSION_DENIED: "PERMISSION_DENIED",
    Step.NO_CREDITS: "RESOURCE_EXHAUSTED",
    Step.SERVER_ERROR: "INTERNAL",
    Step.OVERLOADED: "UNAVAILABLE",
    Step.BAD_REQUEST: "INVALID_ARGUMENT",
    Step.CONTEXT_LENGTH: "INVALID_ARGUMENT",
    Step.TOO_LARGE: "INVALID_ARGUMENT",
    Step.MODEL_NOT_FOUND: "NOT_FOUND",
    Step.MID_STREAM_ERROR: "INTERNAL",
}
GROQ_CODES = {
    Step.RATE_LIMIT: "rate_limit_exceeded",
    Step.INVALID_KEY: "invalid_api_key",
    Step.CONTEXT_LENGTH: "context_length_exceeded",
    Step.MODEL_NOT_FOUND: "model_not_found",
    Step.TOO_LARGE: "rate_limit_exceeded",
    Step.BAD_REQUEST: None,
}


@pytest.mark.parametrize("step", list(STATUS))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_error_step(simulator: Simulator, provider: str, step: Step) -> None:
    secret = scripted(simulator, provider, step)
    resp = send(simulator, provider, secret)
    wire = WIRE_STEPS[provider].get(step)
    status = wire_examples(provider)[wire]["status"] if wire else STATUS[step][PROVIDERS.index(provider)]
    assert resp.status_code == status
    last = simulator.requests[-1]
    assert (last.step, last.status, last.key_in_url) == (step.value, status, False)
    assert send(simulator, provider, secret).status_code == 200  # the script ran out: `then` (ok) applies

    if step is Step.GARBAGE:
        assert resp.headers["Content-Type"] == "text/html"
        assert resp.text == "<html><body>502 Bad Gateway</body></html>"
        return
    body = resp.json()
    assert "choices" not in body and "candidates" not in body
    if provider == "openrouter":
        error = body["error"]
        assert error["code"] == (502 if step is Step.ERROR_200 else status)
        assert isinstance(error["message"], str) and isinstance(error["metadata"], dict)
        if step is Step.ERROR_200:
            assert error["metadata"] == {"provider_name": "SimUpstream", "raw": "upstream overloaded"}
        if step is Step.BLOCKED:  # the recorded moderation answer, with this request's model in it
            assert error["metadata"]["reasons"] == ["violence"]
            assert error["message"].startswith("test/model requires moderation")
    elif provider == "groq":
        error = body["error"]
        assert isinstance(error["message"], str) and isinstance(error["type"], str)
        if step in GROQ_CODES:
            assert error["code"] == GROQ_CODES[step]
        if step is Step.TOO_LARGE:
            assert error["type"] == "tokens" and error["message"].startswith("Request too large for model `test/model`")
        if step is Step.MODEL_NOT_FOUND:
            assert error["message"] == "The model `test/model` does not exist or you do not have access to it."
    elif step is Step.BLOCKED:
        assert body["promptFeedback"]["blockReason"] == "SAFETY"
        assert "usageMetadata" in body
    elif step is Step.ERROR_200:
        assert "promptFeedback" not in body and "error" not in body
    else:
        error = body["error"]
        assert (error["code"], error["status"]) == (status, GEMINI_STATUS[step])
        reasons = [d.get("reason") for d in error.get("details", [])]
        assert ("API_KEY_INVALID" in reasons) is (step is Step.INVALID_KEY)
        if step is Step.MODEL_NOT_FOUND:
            assert error["message"].startswith("models/gemini-2.5-flash is not found for API version v1,")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_error_on_stream_request_is_plain_json(simulator: Simulator, provider: str) -> None:
    resp = send(simulator, provider, scripted(simulator, provider, Step.OVERLOADED), stream=True)
    assert resp.status_code == STATUS[Step.OVERLOADED][PROVIDERS.index(provider)]
    assert resp.headers["Content-Type"] == "application/json"
    assert "error" in resp.json()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_drop_closes_without_answer(simulator: Simulator, provider: str) -> None:
    secret = scripted(simulator, provider, Step.DROP)
    with pytest.raises(requests.ConnectionError):
        send(simulator, provider, secret)
    assert (simulator.requests[-1].step, simulator.requests[-1].status) == ("drop", 0)
    assert send(simulator, provider, secret).status_code == 200


def test_timeout_hangs_then_answers(simulator: Simulator) -> None:
    secret = scripted(simulator, "groq", Step.TIMEOUT, Step.TIMEOUT)
    with pytest.raises(requests.ReadTimeout):
        send(simulator, "groq", secret, timeout=0.1)
    started = time.monotonic()
    resp = send(simulator, "groq", secret, timeout=5)
    assert resp.status_code == 200 and time.monotonic() - started >= HANG * 0.9
    assert resp.json()["choices"][0]["message"]["content"] == expected_reply("groq")


# --------------------------------------------------------------------------------------------- rate limits


def test_groq_rate_limit_hints(simulator: Simulator) -> None:
    secret = scripted(simulator, "groq", Step.RATE_LIMIT, Step.RATE_LIMIT_DAILY, Step.RATE_LIMIT_NOHINT)
    minute, day, nohint = (send(simulator, "groq", secret) for _ in range(3))

    assert minute.headers["retry-after"] == "8"
    assert minute.headers["x-ratelimit-reset-requests"] == "7.66s"
    assert minute.headers["x-ratelimit-remaining-requests"] == "0"
    error = minute.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert re.fullmatch(
        r"Rate limit reached for model `test/model` in organization `org_\w+` on requests per minute "
        r"\(RPM\): Limit 30, Used 30, Requested 1\. Please try again in 7\.66s\. Visit https://console\.groq\.com/docs/"
        r"rate-limits for more information\.",
        error["message"],
    )

    assert day.headers["retry-after"] == "433"
    assert day.headers["x-ratelimit-reset-tokens"] == "7m12.5s"
    error = day.json()["error"]
    assert error["type"] == "tokens"
    assert (
        "on tokens per day (TPD): Limit 500000, Used 499990, Requested 40. Please try again in 7m12.5s."
        in (error["message"])
    )

    assert "retry-after" not in nohint.headers
    assert not [h for h in nohint.headers if h.lower().startswith("x-ratelimit-reset")]
    assert nohint.headers["x-ratelimit-remaining-requests"] == "0"
    assert "try again" not in nohint.json()["error"]["message"]
    assert nohint.json()["error"]["code"] == "rate_limit_exceeded"


def test_openrouter_rate_limit_hints(simulator: Simulator) -> None:
    secret = scripted(simulator, "openrouter", Step.RATE_LIMIT, Step.RATE_LIMIT_DAILY, Step.RATE_LIMIT_NOHINT)
    minute, day, nohint = (send(simulator, "openrouter", secret) for _ in range(3))
    now_ms = time.time() * 1000

    reset = int(minute.headers["X-RateLimit-Reset"])
    assert now_ms < reset <= now_ms + 61_000
    assert minute.headers["X-RateLimit-Remaining"] == "0" and "Retry-After" not in minute.headers
    error = minute.json()["error"]
    assert error["code"] == 429 and error["message"].startswith("Rate limit exceeded: free-models-per-min.")
    assert error["metadata"]["headers"] == {
        k: minute.headers[k] for k in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
    }

    midnight_ms = (int(time.time()) // 86400 + 1) * 86_400_000
    assert int(day.headers["X-RateLimit-Reset"]) == midnight_ms
    assert day.json()["error"]["message"].startswith("Rate limit exceeded: free-models-per-day.")

    assert not [h for h in nohint.headers if h.lower().startswith(("x-ratelimit", "retry-after"))]
    assert "headers" not in nohint.json()["error"]["metadata"]


def gemini_details(resp: requests.Response) -> dict[str, dict[str, Any]]:
    return {d["@type"].rsplit(".", 1)[-1]: d for d in resp.json()["error"]["details"]}


def test_gemini_rate_limit_hints(simulator: Simulator) -> None:
    secret = scripted(simulator, "gemini", Step.RATE_LIMIT, Step.RATE_LIMIT_DAILY, Step.RATE_LIMIT_NOHINT)
    minute, day, nohint = (send(simulator, "gemini", secret) for _ in range(3))

    details = gemini_details(minute)
    assert set(details) == {"QuotaFailure", "Help", "RetryInfo"}
    assert details["RetryInfo"]["retryDelay"] == "36s"
    violation = details["QuotaFailure"]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert violation["quotaMetric"] == "generativelanguage.googleapis.com/generate_content_free_tier_requests"
    assert minute.json()["error"]["message"].startswith("You exceeded your current quota")

    details = gemini_details(day)  # several violations, one per day, and a short RetryInfo all the same
    assert details["RetryInfo"]["retryDelay"] == "51s"
    quota_ids = [v["quotaId"] for v in details["QuotaFailure"]["violations"]]
    assert "GenerateRequestsPerDayPerProjectPerModel-FreeTier" in quota_ids and len(quota_ids) == 3

    details = gemini_details(nohint)
    assert "RetryInfo" not in details
    assert "PerMinute" in details["QuotaFailure"]["violations"][0]["quotaId"]


@pytest.mark.slow
@pytest.mark.parametrize("provider", PROVIDERS)
def test_limit_window_then_recovers(simulator: Simulator, provider: str) -> None:
    window = 0.5
    secret = scripted(simulator, provider, limit=(2, window))
    assert [send(simulator, provider, secret).status_code for _ in range(2)] == [200, 200]
    limited = send(simulator, provider, secret)
    assert limited.status_code == 429
    assert simulator.requests[-1].step == "rate_limit"
    if provider == "groq":
        assert limited.headers["retry-after"] == "1"
        assert limited.headers["x-ratelimit-limit-requests"] == "2"
        assert re.fullmatch(r"\d{1,3}ms", limited.headers["x-ratelimit-reset-requests"])
        assert "Limit 2, Used 2" in limited.json()["error"]["message"]
    elif provider == "openrouter":
        reset = int(limited.headers["X-RateLimit-Reset"])
        assert time.time() * 1000 < reset <= time.time() * 1000 + window * 1000
        assert limited.headers["X-RateLimit-Limit"] == "2"
    else:
        delay = gemini_details(limited)["RetryInfo"]["retryDelay"]
        assert 0 < float(delay.removesuffix("s")) <= window
        assert gemini_details(limited)["QuotaFailure"]["violations"][0]["quotaValue"] == "2"
    time.sleep(window + 0.02)
    assert send(simulator, provider, secret).status_code == 200


@pytest.mark.slow
def test_a_sliding_window_frees_each_slot_when_its_request_ages_out(simulator: Simulator) -> None:
    """At most n requests in any window: a slot frees `seconds` after the request that took it, not all at once,
    and a 429's hint points at the oldest slot (OpenRouter's `X-RateLimit-Reset`)."""
    # A 1 s window, its two slots taken 0.5 s apart: each step below has half a second of slack on a busy machine
    # (with 0.6 s and 0.3 s it had 0.3 s, and 0.04 s before the last send).
    secret = scripted(simulator, "openrouter", limit=(2, 1.0), sliding=True)
    assert send(simulator, "openrouter", secret).status_code == 200
    time.sleep(0.5)
    assert send(simulator, "openrouter", secret).status_code == 200
    second_taken_by = time.monotonic()  # the second slot was taken before its answer came back
    limited = send(simulator, "openrouter", secret)
    assert limited.status_code == 429
    reset_in = int(limited.headers["X-RateLimit-Reset"]) / 1000 - time.time()
    assert 0 < reset_in <= 0.51  # the first request's slot, taken 0.5 s ago
    time.sleep(reset_in + 0.02)
    assert [send(simulator, "openrouter", secret).status_code for _ in range(2)] == [200, 429]  # one slot, not two
    time.sleep(max(0.0, second_taken_by + 1.0 + 0.02 - time.monotonic()))  # until the second slot has aged out
    assert send(simulator, "openrouter", secret).status_code == 200


def test_groq_remaining_counts_down(simulator: Simulator) -> None:
    secret = scripted(simulator, "groq", limit=(3, 30.0))
    remaining = [send(simulator, "groq", secret).headers["x-ratelimit-remaining-requests"] for _ in range(4)]
    assert remaining == ["2", "1", "0", "0"]


def test_a_limit_on_tokens_charges_what_each_request_asks_and_says_what_is_left(simulator: Simulator) -> None:
    """`window="tokens"`: a request costs its text at four characters a token plus `max_tokens` (its tools'
    definitions too), answers say the tokens left as OpenAI's and Groq's do, beside the day's requests; one that
    does not fit is refused, and the log keeps what each answered one was charged."""
    secret = scripted(simulator, "groq", limit=(300, 60.0), window="tokens", day_count=14400)
    ask = {"model": "qwen/qwen3.6-27b", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 90}
    first = send(simulator, "groq", secret, body=ask)
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-tokens"] == "300"
    assert first.headers["x-ratelimit-remaining-tokens"] == "200" and first.headers["x-ratelimit-reset-tokens"] == "20s"
    assert first.headers["x-ratelimit-remaining-requests"] == "14399"  # (the day's)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    second = send(simulator, "groq", secret, body={**ask, "max_tokens": 40, "tools": [tool]})
    charged = 10 + 40 + -(-len(json.dumps([tool])) // 4)
    assert int(second.headers["x-ratelimit-remaining-tokens"]) in (200 - charged, 201 - charged)  # (one may drip)
    assert send(simulator, "groq", secret, body={**ask, "max_tokens": 190}).status_code == 429
    assert [r.tokens for r in simulator.requests[-3:]] == [100, charged, 0]


def test_limit_without_hint(simulator: Simulator) -> None:
    groq = scripted(simulator, "groq", limit=(1, 30.0), limit_hint=False)
    gemini = scripted(simulator, "gemini", limit=(1, 30.0), limit_hint=False)
    assert send(simulator, "groq", groq).status_code == 200
    resp = send(simulator, "groq", groq)
    assert resp.status_code == 429 and "retry-after" not in resp.headers
    assert "x-ratelimit-reset-requests" not in resp.headers
    assert simulator.requests[-1].step == "rate_limit_nohint"
    assert send(simulator, "gemini", gemini).status_code == 200
    resp = send(simulator, "gemini", gemini)
    assert resp.status_code == 429 and "RetryInfo" not in gemini_details(resp)


def test_limit_counts_successes_and_keeps_steps(simulator: Simulator) -> None:
    secret = scripted(simulator, "openrouter", Step.SERVER_ERROR, Step.OK, Step.NO_CREDITS, limit=(1, 0.4))
    assert send(simulator, "openrouter", secret).status_code == 500  # errors do not use the window up
    assert send(simulator, "openrouter", secret).status_code == 200
    assert send(simulator, "openrouter", secret).status_code == 429  # over the limit: no step consumed
    time.sleep(0.42)
    assert send(simulator, "openrouter", secret).status_code == 402


def test_group_shares_one_limit(simulator: Simulator) -> None:
    group = f"acct-{uuid.uuid4().hex[:6]}"
    first = scripted(simulator, "groq", limit=(3, 30.0), group=group)
    second = scripted(simulator, "groq", group=group)  # joins the group's window
    other = scripted(simulator, "groq", limit=(3, 30.0), group=f"{group}-other")
    gemini_same_name = scripted(simulator, "gemini", limit=(3, 30.0), group=group)  # per provider
    codes = [send(simulator, "groq", key).status_code for key in (first, second, first, second, first)]
    assert codes == [200, 200, 200, 429, 429]
    assert send(simulator, "groq", other).status_code == 200
    assert send(simulator, "gemini", gemini_same_name).status_code == 200


def test_concurrent_clients_respect_limit(simulator: Simulator) -> None:
    secret = new_secret("groq")
    key_name = simulator.add_key("groq", secret, limit=(50, 60.0), name=f"busy-{uuid.uuid4().hex[:6]}")

    def worker(_: int) -> list[int]:
        with requests.Session() as session:
            return [send(simulator, "groq", secret, session=session).status_code for _ in range(4)]

    with ThreadPoolExecutor(32) as pool:
        codes = [c for batch in pool.map(worker, range(32)) for c in batch]
    assert codes.count(200) == 50 and codes.count(429) == 78
    assert simulator.calls(key_name) == 128


# --------------------------------------------------------------------------------------------- streaming


def test_openrouter_stream(simulator: Simulator) -> None:
    resp = send(simulator, "openrouter", scripted(simulator, "openrouter"), stream=True)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/event-stream"
    events = sse_events(resp)
    assert events[0] == ": OPENROUTER PROCESSING"
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e) for e in data_events(resp)[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"]]
    assert len(content) >= 2 and "".join(content) == expected_reply("openrouter")
    stop, usage = chunks[-2], chunks[-1]
    assert stop["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(expected_reply("openrouter").split())
    assert simulator.requests[-1].stream is True


def test_groq_stream(simulator: Simulator) -> None:
    resp = send(simulator, "groq", scripted(simulator, "groq"), stream=True)
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert "x-ratelimit-remaining-requests" in resp.headers
    events = sse_events(resp)
    assert all(e.startswith("data: ") for e in events)  # no comment lines
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e) for e in data_events(resp)[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert content == expected_reply("groq")
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["x_groq"]["usage"]["total_tokens"] == len(PROMPT.split()) + len(expected_reply("groq").split())


def test_gemini_stream_wire(simulator: Simulator) -> None:
    resp = send(simulator, "gemini", scripted(simulator, "gemini"), stream=True)
    assert resp.headers["Content-Type"] == "text/event-stream"
    raw = resp.content.decode()
    assert raw.endswith("\r\n\r\n") and "[DONE]" not in raw
    events = [json.loads(e.removeprefix("data: ")) for e in raw.split("\r\n\r\n") if e]
    assert len(events) >= 2
    text = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)
    assert text == expected_reply("gemini")
    assert all(e["modelVersion"] == "gemini-2.5-flash" for e in events)
    assert "finishReason" not in events[0]["candidates"][0]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == len(expected_reply("gemini").split())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_mid_stream_error(simulator: Simulator, provider: str) -> None:
    resp = send(simulator, provider, scripted(simulator, provider, Step.MID_STREAM_ERROR), stream=True)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/event-stream"
    data = data_events(resp)
    assert "[DONE]" not in data
    chunks = [json.loads(d) for d in data]
    assert 1 <= len(chunks) - 1 <= 2  # one or two pieces, then the error
    error = chunks[-1]
    if provider == "gemini":
        assert error == {
            "error": {
                "code": 503,
                "message": "The model is overloaded. Please try again later.",
                "status": "UNAVAILABLE",
            }
        }
    else:
        assert error["object"] == "chat.completion.chunk"
        assert error["error"] == {"code": 502, "message": "Upstream provider disconnected"}
        assert error["choices"] == [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]


def test_keep_alive_across_requests_and_streams(simulator: Simulator) -> None:
    secret = scripted(simulator, "openrouter")
    with requests.Session() as session:
        pools = set()
        for stream in (False, True, False, True):
            resp = send(simulator, "openrouter", secret, stream=stream, session=session)
            assert resp.content  # drained, so the connection goes back to the pool
            pools.add(resp.raw._pool)
        assert len(pools) == 1 and pools.pop().num_connections == 1


# ---------------------------------------------------------------------------------------- google-genai SDK


def test_gemini_through_google_genai_sdk(simulator: Simulator) -> None:
    from google import genai
    from google.genai import errors, types

    def client(key: str) -> genai.Client:
        options = types.HttpOptions(
            base_url=f"{simulator.url}/gemini",
            api_version="v1",
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        return genai.Client(api_key=key, http_options=options)

    secret = scripted(simulator, "gemini", Step.OK, Step.OK, Step.OK, Step.MID_STREAM_ERROR, Step.RATE_LIMIT)
    sdk = client(secret)
    assert sdk.models.generate_content(model="gemini-2.5-flash", contents="hi").text == expected_reply("gemini", "hi")

    pieces = [ch.text for ch in sdk.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT)]
    assert len(pieces) >= 2 and "".join(pieces) == expected_reply("gemini")

    image = types.Part.from_bytes(data=b"\x89PNG\r\n\x1a\n", mime_type="image/png")
    answer = sdk.models.generate_content(model="gemini-2.5-flash", contents=["look", image])
    assert answer.text == "Simulated gemini reply to: look [image received]"

    with pytest.raises(errors.ServerError) as mid:
        list(sdk.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT))
    assert mid.value.code == 503
    with pytest.raises(errors.ClientError) as limited:
        sdk.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"
    stranger = client("AIza-not-registered")  # keep a reference: a temporary Client closes itself in __del__
    with pytest.raises(errors.ClientError) as bad:
        stranger.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert bad.value.code == 400 and "API key not valid" in str(bad.value)

    sdk_calls = [r for r in simulator.requests if r.provider == "gemini"][-6:]
    assert [r.path.rsplit(":", 1)[-1] for r in sdk_calls] == [
        "generateContent",
        "streamGenerateContent",
        "generateContent",
        "streamGenerateContent",
        "generateContent",
        "generateContent",
    ]
    assert not any(r.key_in_url for r in sdk_calls)


# --------------------------------------------------------------------------------------------- keys and log


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_or_missing_key_is_invalid(simulator: Simulator, provider: str) -> None:
    for secret in (None, new_secret(provider)):  # never registered
        resp = send(simulator, provider, secret)
        assert resp.status_code == STATUS[Step.INVALID_KEY][PROVIDERS.index(provider)]
        last = simulator.requests[-1]
        assert (last.key_name, last.step) == ("unknown", "invalid_key")
    error = resp.json()["error"]
    if provider == "openrouter":
        assert error == {"code": 401, "message": "User not found.", "metadata": {}}
    elif provider == "groq":
        assert error == {
            "message": "Invalid API Key",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    else:
        assert error["details"][0]["reason"] == "API_KEY_INVALID"
        assert error["message"] == "API key not valid. Please pass a valid API key."


def test_key_of_another_provider_is_unknown(simulator: Simulator) -> None:
    groq = scripted(simulator, "groq")
    assert send(simulator, "openrouter", groq).status_code == 401


def test_key_in_url_is_flagged(simulator: Simulator) -> None:
    secret = scripted(simulator, "gemini")
    url = f"{simulator.base_urls['gemini']}/v1beta/models/gemini-2.5-flash:generateContent?key={secret}"
    resp = requests.post(url, json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=5)
    assert resp.status_code == 200  # Google accepts ?key=, but the client must never send it
    last = simulator.requests[-1]
    assert last.key_in_url is True and secret not in last.path


def test_probes_follow_steps(simulator: Simulator) -> None:
    urls = simulator.base_urls
    secret = scripted(simulator, "openrouter", Step.INVALID_KEY, limit=(5, 10.0))
    auth = {"Authorization": f"Bearer {secret}"}
    assert requests.get(f"{urls['openrouter']}/key", headers=auth, timeout=5).status_code == 401
    data = requests.get(f"{urls['openrouter']}/key", headers=auth, timeout=5).json()["data"]
    assert data["label"] == f"{secret[:12]}...{secret[-3:]}" and data["is_free_tier"] is True
    assert data["rate_limit"] == {"requests": 5, "interval": "10s"}

    groq = scripted(simulator, "groq")
    listing = requests.get(f"{urls['groq']}/models", headers={"Authorization": f"Bearer {groq}"}, timeout=5)
    assert listing.json()["object"] == "list" and listing.json()["data"][0]["id"]
    assert "x-ratelimit-limit-requests" in listing.headers
    assert requests.get(f"{urls['groq']}/models", timeout=5).status_code == 401

    gemini = scripted(simulator, "gemini", Step.PERMISSION_DENIED)
    headers = {"x-goog-api-key": gemini}
    assert requests.get(f"{urls['gemini']}/v1beta/models", headers=headers, timeout=5).status_code == 403
    models = requests.get(f"{urls['gemini']}/v1beta/models", headers=headers, timeout=5).json()["models"]
    assert models[0]["name"].startswith("models/gemini-")
    probes = [r for r in simulator.requests if r.model is None][-6:]
    assert [r.status for r in probes] == [401, 200, 200, 401, 403, 200]


def test_names_rescripting_and_counts() -> None:
    sim = Simulator()  # scripting works before start
    assert sim.add_key("groq", "gsk_one") == "groq#1"
    assert sim.add_key("groq", "gsk_two", name="team-b") == "team-b"
    assert sim.add_key("groq", "gsk_three") == "groq#2"
    assert sim.add_key("gemini", "AIza_one") == "gemini#1"
    assert sim.add_key("groq", "gsk_one", Step.SERVER_ERROR) == "groq#1"  # re-adding keeps the name
    with pytest.raises(ValueError):
        sim.add_key("anthropic", "sk-x")
    with pytest.raises(ValueError):
        sim.add_key("groq", "gsk_bad", "no_such_step")
    with pytest.raises(KeyError) as missing:
        sim.set_steps("gsk_never_added", Step.OK)
    assert "gsk_never_added" not in str(missing.value)
    with pytest.raises(RuntimeError):
        _ = sim.url

    with sim:
        assert send(sim, "groq", "gsk_one").status_code == 500
        sim.set_steps("gsk_one", Step.OVERLOADED, then=Step.INVALID_KEY)
        assert [send(sim, "groq", "gsk_one").status_code for _ in range(3)] == [503, 401, 401]
        send(sim, "groq", "gsk_two")
        assert (sim.calls("groq#1"), sim.calls("team-b"), sim.calls("nobody"), sim.calls()) == (4, 1, 0, 5)
        assert all(isinstance(r, SimRequest) for r in sim.requests)
        sim.clear_log()
        assert sim.calls() == 0 and sim.requests == []
        assert sim.base_urls["groq"] == f"{sim.url}/groq/openai/v1"
        assert sim.env() == {
            "OPENROUTER_BASE_URL": f"{sim.url}/openrouter/api/v1",
            "GROQ_BASE_URL": f"{sim.url}/groq/openai/v1",
            "GEMINI_BASE_URL": f"{sim.url}/gemini",
            "COMPAT_BASE_URL": f"{sim.url}/compat/v1",
        }
    sim.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = sim.url


def test_per_key_latency(simulator: Simulator) -> None:
    secret = scripted(simulator, "groq", latency=0.15)
    started = time.monotonic()
    assert send(simulator, "groq", secret).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_control_api() -> None:
    with Simulator() as sim:
        control = f"{sim.url}/_sim"
        secret = "sk-or-v1-" + "c0ffee" * 10 + "beef"
        spec = {
            "provider": "openrouter",
            "secret": secret,
            "steps": ["rate_limit"],
            "limit": [5, 60],
            "name": "ctl",
        }
        assert requests.post(f"{control}/keys", json=spec, timeout=5).json() == {"name": "ctl"}
        assert send(sim, "openrouter", secret).status_code == 429
        assert send(sim, "openrouter", secret).status_code == 200
        steps = {"secret": secret, "steps": ["server_error"], "then": "no_credits"}
        assert requests.post(f"{control}/steps", json=steps, timeout=5).status_code == 200
        assert [send(sim, "openrouter", secret).status_code for _ in range(2)] == [500, 402]
        log = requests.get(f"{control}/requests", timeout=5).json()
        assert [(r["key_name"], r["status"], r["step"]) for r in log] == [
            ("ctl", 429, "rate_limit"),
            ("ctl", 200, "ok"),
            ("ctl", 500, "server_error"),
            ("ctl", 402, "no_credits"),
        ]
        assert secret not in json.dumps(log)
        assert requests.post(f"{control}/clear", timeout=5).json() == {"ok": True}
        assert requests.get(f"{control}/requests", timeout=5).json() == []
        bad = requests.post(f"{control}/keys", json={"provider": "nope", "secret": secret}, timeout=5)
        assert bad.status_code == 400 and secret not in bad.text
        assert requests.get(f"{control}/nothing", timeout=5).status_code == 404


def test_demo_keys() -> None:
    assert {p: len(v) for p, v in DEMO_KEYS.items()} == {"openrouter": 4, "groq": 3, "gemini": 1, "compat": 2}
    assert all(re.fullmatch(r"sk-or-v1-[0-9a-f]{64}", k) for k in DEMO_KEYS["openrouter"])
    assert all(re.fullmatch(r"gsk_[A-Za-z0-9]{52}", k) for k in DEMO_KEYS["groq"])
    assert all(re.fullmatch(r"AIza[\w-]{35}", k) for k in DEMO_KEYS["gemini"])
    assert all("demo" in k.lower() or "dec0de" in k for keys in DEMO_KEYS.values() for k in keys)
    assert len({k[-4:] for keys in DEMO_KEYS.values() for k in keys}) == 10  # distinct hints
    with Simulator() as sim:
        env = sim.add_demo_keys(per_minute=2)
        assert set(env) == {
            *sim.env(),
            *(f"OPENROUTER_API_KEY_{i}" for i in range(1, 5)),
            *(f"GROQ_API_KEY_{i}" for i in range(1, 4)),
            "GEMINI_API_KEY_1",
            "COMPAT_API_KEY_1",
            "COMPAT_API_KEY_2",
            "COMPAT_CHAT_MODEL",
        }
        codes = [send(sim, "groq", env["GROQ_API_KEY_2"]).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert sim.requests[-1].key_name == "groq#2"


def test_cli_prints_exports_and_serves() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "simulator",
        "--port",
        "0",
        "--demo",
        "--per-minute",
        "2",
        "--latency",
        "0",
    ]
    with ctrl_c_raises():  # the CLI stops on Ctrl-C: not one that inherited it ignored
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        exports: dict[str, str] = {}
        while "GEMINI_API_KEY_1" not in exports:
            line = proc.stdout.readline()
            assert line, "simulator CLI exited early"
            if line.startswith("export "):
                var, _, value = line.removeprefix("export ").strip().partition("=")
                exports[var] = value
        assert exports["GROQ_API_KEY_1"] == DEMO_KEYS["groq"][0]
        resp = requests.post(
            f"{exports['GROQ_BASE_URL']}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {exports['GROQ_API_KEY_1']}"},
            timeout=5,
        )
        assert resp.status_code == 200 and resp.headers["x-ratelimit-limit-requests"] == "2"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=5) == 0
        finally:
            proc.kill()  # a no-op once it has exited; if it outlived the SIGINT, it must not outlive the test
            proc.wait()


def test_a_simulator_in_a_process_of_its_own_is_scripted_as_one_in_ours() -> None:
    """`SimulatorProcess` (the quota benchmarks' provider) over the control API: a key's limit shape, the clock skew
    and the log all reach the other process and come back."""
    with SimulatorProcess.start(skew=30.0) as sim:
        assert sim.first() is None
        name = sim.add_key("groq", "gsk_remote", limit=(2, 60.0), window="sliding", retry_after=True, jitter=0.0)
        before = time.time()
        answers = [send(sim, "groq", "gsk_remote") for _ in range(3)]  # type: ignore[arg-type]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].headers["retry-after"] == "60"
        served = email.utils.parsedate_to_datetime(answers[0].headers["Date"]).timestamp()
        assert served - before > 25  # the provider's clock runs 30 s ahead
        log = sim.requests
        assert [(r.key_name, r.status) for r in log] == [(name, 200), (name, 200), (name, 429)]
        assert isinstance(log[0], SimRequest) and sim.first() == log[0].at
    assert sim.process.returncode is not None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(179.56, "2m59.56s"), (7.66, "7.66s"), (0.84, "840ms"), (432.5, "7m12.5s"), (3600, "1h0m0s"), (6, "6s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_log_and_repr_never_hold_a_secret(simulator: Simulator) -> None:
    """Every secret this module registered so far, and a request with each kind of step from each provider here
    (so the check stands alone, whatever else ran in this process)."""
    steps = (Step.OK, Step.INVALID_KEY, Step.RATE_LIMIT, Step.SERVER_ERROR, Step.BAD_REQUEST, Step.GARBAGE)
    for provider in PROVIDERS:
        for step in steps:
            send(simulator, provider, scripted(simulator, provider, step))
            send(simulator, provider, scripted(simulator, provider, step), stream=True).close()
    dumped = repr(simulator.requests) + repr(simulator)
    dumped += requests.get(f"{simulator.url}/_sim/requests", timeout=5).text
    assert len(REGISTERED) >= 2 * len(steps) * len(PROVIDERS)
    leaked = [s for s in REGISTERED if s in dumped]
    assert leaked == []
