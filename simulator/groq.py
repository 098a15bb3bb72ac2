"""Groq as the simulator renders it: answers, errors and rate limits in its exact wire format."""

from __future__ import annotations

import math
from typing import Any

from simulator.core import (
    OKISH,
    Call,
    Plan,
    Reply,
    Step,
    go_duration,
    json_reply,
    openai_answer,
    render_wire,
)
from simulator.provider import SimProvider, openai_route

MODELS = ("openai/gpt-oss-20b", "openai/gpt-oss-120b", "qwen/qwen3.6-27b")
DECOMMISSIONED = frozenset(
    {"llama-3.3-70b-versatile", "llama-3.1-8b-instant", "qwen/qwen3-32b", "meta-llama/llama-4-scout-17b-16e-instruct"}
)
"""Retired on Groq's free and developer tiers (console.groq.com/docs/deprecations: Llama 4 Scout on 17 Jul 2026, the
Llama 3.x defaults on 16 Aug 2026; ITSpecialist111/ai_automation_suggester#187 shows the 404 users then got)."""

WIRE_STEPS: dict[Step, str] = {
    Step.SPEND_CAP: "spend_cap",
    Step.FLEX_CAPACITY: "flex_capacity",
    Step.NETWORK_BLOCKED: "network_blocked",
    Step.OUTPUT_TOO_LARGE: "output_too_large",
}
"""Steps answered with a recorded example from simulator/wire/groq.json."""

_GROQ_ERRORS: dict[Step, dict[str, Any]] = {
    Step.INVALID_KEY: {
        "message": "Invalid API Key",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    },
    Step.PERMISSION_DENIED: {
        "message": "Organization has been restricted. Please reach out to support if you believe this was in error.",
        "type": "invalid_request_error",
        "code": "organization_restricted",
    },
    Step.NO_CREDITS: {
        "message": "Your organization has reached its spending limit. Please review your billing settings.",
        "type": "invalid_request_error",
        "code": "spend_limit_reached",
    },
    Step.SERVER_ERROR: {"message": "Internal Server Error", "type": "internal_server_error"},
    Step.OVERLOADED: {"message": "Service Unavailable", "type": "internal_server_error"},
    Step.ERROR_200: {"message": "Internal Server Error", "type": "internal_server_error"},
    Step.BAD_REQUEST: {
        "message": "'messages' must contain at least one message",
        "type": "invalid_request_error",
        "code": None,
    },
    Step.CONTEXT_LENGTH: {
        "message": "Please reduce the length of the messages or completion.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    },
    Step.TOO_LARGE: {
        "message": "Request too large for model `{model}` in organization `{org}` on tokens per minute "
        "(TPM): Limit 6000, Requested 9000, please reduce your message size and try again.",
        "type": "tokens",
        "code": "rate_limit_exceeded",
    },
    Step.MODEL_NOT_FOUND: {
        "message": "The model `{model}` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "code": "model_not_found",
    },
    Step.BLOCKED: {
        "message": "Input was flagged by moderation",
        "type": "invalid_request_error",
        "code": "content_filter",
    },
}
_GROQ_TOKENS_PER_MINUTE = 6000
_GROQ_RATE_TEXT = (
    "Rate limit reached for model `{model}` in organization `{org}` on {what}: Limit {limit}, Used {used}, "
    "Requested {requested}.{retry} Visit https://console.groq.com/docs/rate-limits for more information."
)


def render_groq(call: Call, plan: Plan, step: Step, label: str) -> Reply:
    if step in WIRE_STEPS:
        return render_wire(call, WIRE_STEPS[step], {"model": call.shown_model, "org": plan.org})
    quota, is429 = plan.quota, plan.status == 429
    limit, remaining, reset = (quota.limit, quota.remaining, quota.reset_in) if quota else (14400, 14399, 6.0)
    if step in (Step.RATE_LIMIT, Step.RATE_LIMIT_NOHINT) and not quota:
        limit, reset = 30, 7.66  # Groq's free-tier RPM and a typical hint
    tokens = call.prompt_tokens + call.completion_tokens
    token_reset = tokens * 60.0 / _GROQ_TOKENS_PER_MINUTE
    token_remaining = max(0, _GROQ_TOKENS_PER_MINUTE - tokens)
    if step is Step.RATE_LIMIT_DAILY:
        token_remaining, token_reset = 0, 432.5
    if step is Step.TOKENS_SPENT:  # the minute's bucket drained: whole again a minute on, refilling as it goes
        token_remaining, token_reset = 0, 60.0
    headers = {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(0 if step in (Step.RATE_LIMIT, Step.RATE_LIMIT_NOHINT) else remaining),
        "x-ratelimit-reset-requests": go_duration(reset),
        "x-ratelimit-limit-tokens": str(_GROQ_TOKENS_PER_MINUTE),
        "x-ratelimit-remaining-tokens": str(token_remaining),
        "x-ratelimit-reset-tokens": go_duration(token_reset),
    }
    model = call.shown_model
    if is429:
        if step is Step.RATE_LIMIT_DAILY:
            what, nums, retry = "tokens per day (TPD)", (500000, 499990, 40), 432.5
        elif plan.tokens is not None:  # a limit on tokens refused it
            spent = plan.tokens.limit - plan.tokens.remaining
            what, nums, retry = "tokens per minute (TPM)", (plan.tokens.limit, spent, call.tokens), reset
        else:
            what, nums, retry = "requests per minute (RPM)", (limit, limit, 1), reset
        hint = step is not Step.RATE_LIMIT_NOHINT
        if hint:
            headers["retry-after"] = str(max(1, math.ceil(retry)))
        else:
            del headers["x-ratelimit-reset-requests"], headers["x-ratelimit-reset-tokens"]
        message = _GROQ_RATE_TEXT.format(
            model=model,
            org=plan.org,
            what=what,
            limit=nums[0],
            used=nums[1],
            requested=nums[2],
            retry=f" Please try again in {go_duration(retry)}." if hint else "",
        )
        kind = "tokens" if step is Step.RATE_LIMIT_DAILY or plan.tokens is not None else "requests"
        return json_reply(429, {"error": {"message": message, "type": kind, "code": "rate_limit_exceeded"}}, headers)
    if step in OKISH or step in (Step.MID_STREAM_ERROR, Step.EMPTY_ANSWER):
        if call.probe:
            data = [{"id": m, "object": "model", "owned_by": "Sim", "active": True} for m in MODELS]
            reply = json_reply(200, {"object": "list", "data": data})
        else:
            reply = openai_answer(call, step)
        reply.headers.update(headers)
        return reply
    error = {k: v.format(model=model, org=plan.org) if isinstance(v, str) else v for k, v in _GROQ_ERRORS[step].items()}
    return json_reply(plan.status, {"error": error}, headers)


PROVIDER = SimProvider(
    name="groq",
    base_path="/groq/openai/v1",
    default_model=MODELS[0],
    demo_keys=tuple(f"gsk_demo{'0' * 44}b{i:03d}" for i in range(1, 4)),
    route=openai_route("groq", MODELS[0], probe="models"),
    render=render_groq,
    wire_steps=WIRE_STEPS,
    own_steps=frozenset({Step.TOKENS_SPENT}),
    serves=lambda call: call.model not in DECOMMISSIONED,
)
