"""A generic OpenAI-compatible provider as the simulator renders it: what any server copying OpenAI's API answers.

It stands for every provider a user names in `LLM_PROVIDER_ORDER` without a module of its own (Together, a
company proxy, …): OpenAI's error shape `{"error": {"message", "type", "param", "code"}}`, `retry-after` on a
hinted 429, and OpenAI's request headers (`x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` as a Go
duration) on answers. Served at `/compat/v1/` (chat completions, `GET models`) as the provider `compat`, not
`openai`: an exported `OPENAI_BASE_URL` would point the official SDK of a shell at the simulator.
"""

from __future__ import annotations

import math
from typing import Any

from simulator.core import OKISH, Call, Plan, Reply, Step, go_duration, json_reply, openai_answer
from simulator.provider import SimProvider, openai_route

MODELS = ("sim-chat-small", "sim-chat-large")

_ERRORS: dict[Step, tuple[str, str, str | None]] = {  # message, type, code
    Step.INVALID_KEY: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    Step.PERMISSION_DENIED: ("You are not allowed to use this model.", "invalid_request_error", "permission_denied"),
    Step.NO_CREDITS: (
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    ),
    Step.SERVER_ERROR: ("The server had an error while processing your request.", "server_error", None),
    Step.OVERLOADED: ("The engine is currently overloaded, please try again later.", "server_error", None),
    Step.ERROR_200: ("The server had an error while processing your request.", "server_error", None),
    Step.BAD_REQUEST: ("'messages' is a required property", "invalid_request_error", None),
    Step.CONTEXT_LENGTH: (
        "This model's maximum context length is 8192 tokens.",
        "invalid_request_error",
        "context_length_exceeded",
    ),
    Step.TOO_LARGE: ("Request too large.", "invalid_request_error", None),
    Step.MODEL_NOT_FOUND: (
        "The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    Step.BLOCKED: ("Your request was rejected by the safety system.", "invalid_request_error", "content_filter"),
}


def render_compat(call: Call, plan: Plan, step: Step, label: str) -> Reply:
    quota = plan.quota
    limit, remaining, reset = (quota.limit, quota.remaining, quota.reset_in) if quota else (10000, 9999, 8.64)
    rate_limited = step in (Step.RATE_LIMIT, Step.RATE_LIMIT_NOHINT, Step.RATE_LIMIT_DAILY)
    headers = {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(0 if rate_limited else remaining),
        "x-ratelimit-reset-requests": go_duration(reset if step is not Step.RATE_LIMIT_DAILY else 43200),
    }
    if rate_limited:
        if step is Step.RATE_LIMIT_NOHINT:
            headers = {}
        else:
            headers["retry-after"] = str(max(1, math.ceil(reset if step is Step.RATE_LIMIT else 43200)))
        what = "tokens per min (TPM)" if plan.tokens is not None and step is not Step.RATE_LIMIT_DAILY else "requests"
        body = {  # OpenAI's words name the limit: "… on tokens per min (TPM): Limit …", `type: tokens`
            "message": f"Rate limit reached for {what}",
            "type": what.split()[0],
            "param": None,
            "code": "rate_limit_exceeded",
        }
        return json_reply(429, {"error": body}, headers)
    if step in OKISH or step in (Step.MID_STREAM_ERROR, Step.EMPTY_ANSWER):
        if call.probe:
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "sim"} for m in MODELS]
            reply = json_reply(200, {"object": "list", "data": data})
        else:
            reply = openai_answer(call, step)
        reply.headers.update(headers)
        return reply
    message, kind, code = _ERRORS[step]
    error: dict[str, Any] = {
        "message": message.format(model=call.shown_model),
        "type": kind,
        "param": None,
        "code": code,
    }
    return json_reply(plan.status, {"error": error}, headers)


PROVIDER = SimProvider(
    name="compat",
    base_path="/compat/v1",
    default_model=MODELS[0],
    demo_keys=tuple(f"sk-demo-compatible-not-real-d{i:03d}" for i in range(1, 3)),
    route=openai_route("compat", MODELS[0], probe="models"),
    render=render_compat,
)
