"""OpenRouter as the simulator renders it: answers, errors and rate limits in its exact wire format."""

from __future__ import annotations

import time
from typing import Any

from simulator.core import OKISH, Call, Plan, Reply, Step, json_reply, openai_answer, render_wire
from simulator.provider import SimProvider, openai_route

WIRE_STEPS: dict[Step, str] = {
    Step.UPSTREAM_RATE_LIMIT: "upstream_rate_limit",
    Step.RATE_LIMIT_IN_200: "rate_limit_in_200",
    Step.ERROR_IN_CHOICE: "error_in_choice",
    Step.NEEDS_FEWER_TOKENS: "needs_fewer_tokens",
    Step.KEY_LIMIT: "key_limit",
    Step.GUARDRAIL: "guardrail",
    Step.RATE_LIMIT_DAILY: "free_models_per_day",
    Step.NO_CREDITS: "insufficient_credits",
    Step.BLOCKED: "moderation",
    Step.PROVIDER_ERROR_429: "provider_error_429",
    Step.NO_PROVIDER: "no_available_provider",
    Step.OVER_BUDGET: "weight_exceeds_budget",
    Step.IN_FLIGHT_BUDGET: "in_flight_budget",
    Step.KEY_BUDGET: "key_budget_limit",
    Step.FREE_DAILY_SPENT: "free_models_per_day",
}
"""Steps answered with a recorded example from simulator/wire/openrouter.json."""
_STREAM_WIRE = {Step.RATE_LIMIT_IN_200: "stream_error_event", Step.ERROR_IN_CHOICE: "mid_stream_error"}

_UPSTREAM = {"provider_name": "SimUpstream", "raw": "upstream overloaded"}
_OR_ERRORS: dict[Step, tuple[int, str, dict[str, Any]]] = {
    Step.INVALID_KEY: (401, "User not found.", {}),
    Step.PERMISSION_DENIED: (403, "This API key has been disabled.", {}),
    Step.NO_CREDITS: (402, "Insufficient credits. Add more using https://openrouter.ai/credits", {}),
    Step.SERVER_ERROR: (500, "Internal Server Error", {}),
    Step.OVERLOADED: (502, "Provider returned error", _UPSTREAM),
    Step.ERROR_200: (502, "Provider returned error", _UPSTREAM),
    Step.BAD_REQUEST: (400, 'Input required: specify "prompt" or "messages"', {}),
    Step.CONTEXT_LENGTH: (
        400,
        "This endpoint's maximum context length is 131072 tokens. However, you requested about 200000 tokens "
        '(200000 of text input). Please reduce the length of either one, or use the "middle-out" transform '
        "to compress your prompt automatically.",
        {"provider_name": None},
    ),
    Step.TOO_LARGE: (413, "Request too large: the payload exceeds the provider's size limit.", {}),
    Step.MODEL_NOT_FOUND: (404, "No endpoints found for {model}.", {}),
    Step.BLOCKED: (403, "Input was flagged by moderation", {"reasons": ["violence"]}),
}


def _next_utc_midnight_ms() -> int:
    return (int(time.time()) // 86400 + 1) * 86400 * 1000


def render_openrouter(call: Call, plan: Plan, step: Step, label: str) -> Reply:
    if call.probe and step is Step.NO_CREDITS:  # GET /key answers 200 for a key that has no credit left
        return render_wire(call, "key_info_no_credit", {"label": label})
    if call.probe and step is Step.FREE_DAILY_SPENT:  # the account's free requests are spent for today
        return render_wire(call, "key_info_free_spent", {"label": label})
    if step in WIRE_STEPS:
        name = _STREAM_WIRE.get(step, WIRE_STEPS[step]) if call.stream else WIRE_STEPS[step]
        quota = plan.quota
        reset_in = quota.reset_in if quota else 60.0
        values = {
            "model": call.shown_model,
            "label": label,
            "midnight_ms": _next_utc_midnight_ms(),
            "reset_ms": round((plan.at + reset_in) * 1000),
            "limit": quota.limit if quota else 20,
        }
        return render_wire(call, name, values)
    if step in OKISH or step is Step.EMPTY_ANSWER:
        if not call.probe:
            return openai_answer(call, step)
        quota = plan.quota
        rate = {
            "requests": quota.limit if quota else 20,
            "interval": f"{quota.window:g}s" if quota else "10s",
        }
        data = {"label": label, "usage": 0, "limit": None, "limit_remaining": None, "is_free_tier": True}
        data["free_model_daily_requests"] = {"used": 0, "limit": 50, "remaining": 50}
        return json_reply(200, {"data": {**data, "rate_limit": rate}})
    if step is Step.MID_STREAM_ERROR:
        return openai_answer(call, step)
    if step in (Step.RATE_LIMIT, Step.RATE_LIMIT_DAILY, Step.RATE_LIMIT_NOHINT):
        daily = step is Step.RATE_LIMIT_DAILY
        message = (
            "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day"
            if daily
            else "Rate limit exceeded: free-models-per-min. "
        )
        if step is Step.RATE_LIMIT_NOHINT:
            return json_reply(429, {"error": {"code": 429, "message": message, "metadata": {}}})
        quota = plan.quota
        if daily:
            limit, reset_ms = 50, _next_utc_midnight_ms()
        elif quota:
            limit, reset_ms = quota.limit, round((plan.at + quota.reset_in) * 1000)
        else:
            limit, reset_ms = 20, (int(plan.at) // 60 + 1) * 60_000
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset_ms),
        }
        meta = {"headers": headers, "provider_name": None}
        return json_reply(429, {"error": {"code": 429, "message": message, "metadata": meta}}, headers)
    code, message, meta = _OR_ERRORS[step]
    error = {"code": code, "message": message.format(model=call.shown_model), "metadata": meta}
    return json_reply(plan.status, {"error": error})


PROVIDER = SimProvider(
    name="openrouter",
    base_path="/openrouter/api/v1",
    default_model="openrouter/auto",
    demo_keys=tuple(f"sk-or-v1-{'0' * 54}dec0dea{i:03d}" for i in range(1, 5)),
    route=openai_route("openrouter", "openrouter/auto", probe="key"),
    render=render_openrouter,
    statuses={Step.OVERLOADED: 502, Step.BLOCKED: 403},
    wire_steps=WIRE_STEPS,
    probe_succeeds=frozenset({Step.NO_CREDITS, Step.FREE_DAILY_SPENT}),  # GET /key reports them in its body
)
