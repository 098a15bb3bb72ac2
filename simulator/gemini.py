"""Gemini as the simulator renders it: answers, errors and rate limits in its exact wire format."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from simulator.agents import Answer, gemini_request, unable
from simulator.core import (
    IDS,
    OKISH,
    SSE_HEADERS,
    Call,
    Plan,
    Reply,
    Step,
    embedding_vector,
    json_reply,
    pb_duration,
    render_wire,
    split_pieces,
    sse_event,
)
from simulator.provider import SimProvider, reply_text
from simulator.shapes import admission_tokens

MODELS = ("gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro")

_GEMINI_ERRORS: dict[Step, tuple[str, str]] = {
    Step.INVALID_KEY: ("INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
    Step.PERMISSION_DENIED: (
        "PERMISSION_DENIED",
        "Your API key was reported as leaked. Please use another API key.",
    ),
    Step.NO_CREDITS: (
        "RESOURCE_EXHAUSTED",
        "Your prepayment credits are depleted. Please go to AI Studio at https://ai.studio/projects "
        "to manage your project and billing.",
    ),
    Step.SERVER_ERROR: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    Step.OVERLOADED: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    Step.BAD_REQUEST: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    Step.CONTEXT_LENGTH: (
        "INVALID_ARGUMENT",
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    ),
    Step.TOO_LARGE: ("INVALID_ARGUMENT", "Request payload size exceeds the limit: 20971520 bytes."),
    Step.MODEL_NOT_FOUND: (
        "NOT_FOUND",
        "models/{model} is not found for API version {version}, or is not supported for generateContent. "
        "Call ListModels to see the list of available models and their supported methods.",
    ),
}
_API_KEY_INVALID = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    },
    {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": "API key not valid. Please pass a valid API key.",
    },
]
_GEMINI_HELP = {
    "@type": "type.googleapis.com/google.rpc.Help",
    "links": [
        {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
        }
    ],
}


def _gemini_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> Reply:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return json_reply(code, {"error": error}, indent=2)  # Google pretty-prints JSON bodies


def _gemini_rate_limit(call: Call, plan: Plan, step: Step) -> Reply:
    daily, quota = step is Step.RATE_LIMIT_DAILY, plan.quota
    value = "250" if daily else str(quota.limit if quota else 10)
    period = "Day" if daily else "Minute"
    counted = "requests"
    if plan.tokens is not None and not daily:  # its limit on input tokens (browserbase/stagehand#1256)
        value, counted = str(plan.tokens.limit), "input_token_count"
    metric = f"generativelanguage.googleapis.com/generate_content_free_tier_{counted}"
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
        "To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \n"
        f"* Quota exceeded for metric: {metric}, limit: {value}, model: {call.shown_model}"
    )
    violation = {
        "quotaMetric": metric,
        "quotaId": (
            f"GenerateContentInputTokensPerModelPer{period}-FreeTier"
            if counted != "requests"
            else f"GenerateRequestsPer{period}PerProjectPerModel-FreeTier"
        ),
        "quotaDimensions": {"location": "global", "model": call.shown_model},
        "quotaValue": value,
    }
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
        _GEMINI_HELP,
    ]
    if step is Step.RATE_LIMIT:
        delay = pb_duration(quota.reset_in if quota else 36.0)
        message += f"\nPlease retry in {delay}."
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    return _gemini_error(429, "RESOURCE_EXHAUSTED", message, details)


WIRE_STEPS: dict[Step, str] = {
    Step.NO_QUOTA: "no_quota",
    Step.NO_ACCESS: "location_unsupported",
    Step.EMPTY_ANSWER: "max_tokens_no_text",
    Step.RATE_LIMIT_DAILY: "rate_limit_daily",
    Step.NO_CREDITS: "prepay_depleted",
    Step.MALFORMED_CALL: "malformed_function_call",
    Step.QUOTA_NO_DETAILS: "quota_no_details",
    Step.EXHAUSTED_BARE: "exhausted_bare",
}
"""Steps answered with a recorded example from simulator/wire/gemini.json."""


def render_gemini(call: Call, plan: Plan, step: Step, label: str) -> Reply:
    if step in WIRE_STEPS:
        return render_wire(call, WIRE_STEPS[step], {"model": call.shown_model}, indent=2)
    model, rid = call.shown_model, f"sim{next(IDS):012d}"
    prompt = {"promptTokenCount": call.prompt_tokens, "totalTokenCount": call.prompt_tokens}
    if step in (Step.RATE_LIMIT, Step.RATE_LIMIT_DAILY, Step.RATE_LIMIT_NOHINT):
        return _gemini_rate_limit(call, plan, step)
    if step in OKISH and call.probe:

        def describe(name: str) -> dict[str, Any]:
            methods = ["generateContent", "countTokens"]
            return {"name": f"models/{name}", "displayName": name, "supportedGenerationMethods": methods}

        listing = describe(call.model) if call.model else {"models": [describe(m) for m in MODELS]}
        return json_reply(200, listing, indent=2)
    if step in (Step.BLOCKED, Step.ERROR_200):
        body: dict[str, Any] = {"usageMetadata": prompt, "modelVersion": model, "responseId": rid}
        if step is Step.BLOCKED:
            body = {"promptFeedback": {"blockReason": "SAFETY"}, **body}
        if call.stream and call.sse:
            return Reply(200, dict(SSE_HEADERS), events=[sse_event(body, b"\r\n\r\n")])
        return json_reply(200, body, indent=2)
    if step not in OKISH and step is not Step.MID_STREAM_ERROR:
        status, message = _GEMINI_ERRORS[step]
        details = _API_KEY_INVALID if step is Step.INVALID_KEY else None
        return _gemini_error(plan.status, status, message.format(model=model, version=call.version), details)

    if call.inputs is not None:  # `:batchEmbedContents` (or `:embedContent`, one text)
        vectors = [{"values": embedding_vector(t, call.dimensions)} for t in call.inputs]
        body = {"embedding": vectors[0]} if call.one_embedding else {"embeddings": vectors}
        return json_reply(200, body, indent=2)
    usage = {**prompt, "candidatesTokenCount": call.completion_tokens}
    usage["totalTokenCount"] = call.prompt_tokens + call.completion_tokens

    calls = [_call_part(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in call.tool_calls]
    if calls and generation(model) >= 3:
        calls[0]["thoughtSignature"] = signature(calls[0]["functionCall"])

    def answer(text: str, final: bool) -> dict[str, Any]:
        parts = ([{"text": text}] if text or not calls else []) + (calls if final else [])
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if final:
            candidate["finishReason"] = "MAX_TOKENS" if call.finish == "length" else "STOP"
        meta = usage if final else prompt
        return {"candidates": [candidate], "usageMetadata": meta, "modelVersion": model, "responseId": rid}

    if not call.stream:
        return json_reply(200, answer(call.reply, True), indent=2)
    pieces = split_pieces(call.reply) if call.reply else [""]
    if step is Step.MID_STREAM_ERROR:
        chunks = [answer(p, False) for p in pieces[:2]]
        status, message = _GEMINI_ERRORS[Step.OVERLOADED]
        chunks.append({"error": {"code": 503, "message": message, "status": status}})
    else:
        chunks = [answer(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]
    if not call.sse:  # without alt=sse Gemini streams one JSON array
        return json_reply(200, chunks, indent=2)
    return Reply(200, dict(SSE_HEADERS), events=[sse_event(c, b"\r\n\r\n") for c in chunks])


def _call_part(name: str, args: Any) -> dict[str, Any]:
    """A `functionCall` part as the Developer API sends it: no `id` (microsoft/agent-framework-go#597)."""
    return {"functionCall": {"name": name, "args": args}}


_BETA_ONLY = re.compile(r"preview|-exp\b|experimental|-latest$", re.I)


def served_on(version: str | None, model: str | None) -> bool:
    """Previews, experiments and `-latest` aliases exist only on `v1beta` (and `v1alpha`), as on Google's API:
    asked on `v1`, they are a 404 NOT_FOUND "is not found for API version v1"."""
    return version != "v1" or not _BETA_ONLY.search(model or "")


def generation(model: str) -> int:
    found = re.match(r"(?:models/)?gemini-(\d+)", model)
    return int(found.group(1)) if found else 0


def signature(function_call: dict[str, Any]) -> str:
    """The thought signature Gemini 3 puts on the first call of a step: opaque bytes (base64 on the wire), made
    here from the call so that the simulator can tell its own signatures from forged ones without keeping any."""
    return base64.b64encode(_signature_bytes(function_call)).decode()


def _signature_bytes(function_call: dict[str, Any]) -> bytes:
    call = {"name": function_call.get("name"), "args": function_call.get("args") or {}}
    return b"sim-thought:" + hashlib.sha256(json.dumps(call, sort_keys=True).encode()).digest()[:24]


def _signed_by(given: Any, function_call: dict[str, Any]) -> bool:
    """Bytes travel as base64 of either alphabet (`google-genai` sends the URL-safe one), as proto JSON allows."""
    if not isinstance(given, str):
        return False
    try:
        raw = base64.urlsafe_b64decode(given.replace("+", "-").replace("/", "_") + "=" * (-len(given) % 4))
    except ValueError:
        return False
    return raw in (_signature_bytes(function_call), b"skip_thought_signature_validator")


def refusal(data: Any, model: str) -> tuple[str, dict[str, str]] | None:
    """Why Gemini refuses a request's history, as a recorded example: an `id` in a function call or response, or
    (Gemini 3) a step whose first function call lacks a valid thought signature."""
    contents = data.get("contents") if isinstance(data, dict) else None
    for i, content in enumerate(contents if isinstance(contents, list) else []):
        parts = content.get("parts") if isinstance(content, dict) else None
        first_call = True
        for j, part in enumerate(parts if isinstance(parts, list) else []):
            if not isinstance(part, dict):
                continue
            for field in ("functionCall", "functionResponse"):
                if isinstance(part.get(field), dict) and "id" in part[field]:
                    snake = "function_call" if field == "functionCall" else "function_response"
                    return "unknown_call_id", {"field": f"contents[{i}].parts[{j}].{snake}"}
            call = part.get("functionCall")
            if not isinstance(call, dict):
                continue
            if first_call and generation(model) >= 3:
                given = part.get("thoughtSignature") or part.get("thought_signature")
                if not _signed_by(given, call):
                    return "missing_thought_signature", {"function": str(call.get("name")), "position": str(i + 1)}
            first_call = False
    return None


# --- requests ---------------------------------------------------------------------------------------------------


def _parts(content: Any) -> tuple[str, bool]:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return "", False
    texts = [str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p]
    image = any(isinstance(p, dict) and ("inlineData" in p or "inline_data" in p) for p in parts)
    return " ".join(texts), image


def _parse(data: Any) -> tuple[str, int, bool, bool]:
    """(last user text, prompt words, has image, valid) from a generateContent body."""
    contents = data.get("contents") if isinstance(data, dict) else None
    if not isinstance(contents, list) or not contents:
        return "", 0, False, False
    system = data.get("systemInstruction") or data.get("system_instruction")
    words = len(_parts(system)[0].split()) if system else 0
    last, image = "", False
    for content in contents:
        text, has_image = _parts(content)
        words += len(text.split())
        image = image or has_image
        if isinstance(content, dict) and content.get("role", "user") == "user":
            last = text
    return last, words, image, True


def _embeddings(model: str | None, version: str, action: str, data: Any) -> Call:
    """`:batchEmbedContents` ({"requests": [{"content": {"parts": [{"text"}]}, "outputDimensionality"}]}) or
    `:embedContent` (one such request as the body)."""
    data = data if isinstance(data, dict) else {}
    one = action == "embedContent"
    requests = [data] if one else data.get("requests")
    texts: list[str] = []
    dimensions = None
    for request in requests if isinstance(requests, list) else []:
        text = _parts(request.get("content") if isinstance(request, dict) else None)[0]
        texts.append(text)
        if isinstance(request, dict) and isinstance(request.get("outputDimensionality"), int):
            dimensions = request["outputDimensionality"]
    valid = bool(texts) and all(texts) and (not one or len(texts) == 1)
    words = sum(len(t.split()) for t in texts)
    return Call(
        "gemini", False, model, False, "", words, valid, version, inputs=tuple(texts), dimensions=dimensions,
        one_embedding=one, default_model=MODELS[0],
    )  # fmt: skip


_PATH = re.compile(
    r"(v1|v1beta|v1alpha)/models(?:/([^/:]+))?"
    r"(?::(generateContent|streamGenerateContent|batchEmbedContents|embedContent))?"
)


def route(method: str, rest: str, query: str, data: Any) -> Call | None:
    """`POST <version>/models/<model>:<action>` (generate, stream, embed) and the probe `GET <version>/models[/m]`."""
    match = _PATH.fullmatch(rest)
    if match is None:
        return None
    version, model, action = match.groups()
    if action in ("batchEmbedContents", "embedContent") and method == "POST":
        return _embeddings(model, version, action, data)
    if action and method == "POST":
        last, words, image, valid = _parse(data)
        refused = None
        if valid:
            config = data.get("generationConfig") or {}
            schema = bool(config.get("responseJsonSchema") or config.get("responseSchema"))
            refused = unable("gemini", model, tools=bool(data.get("tools")), json_schema=schema)
            refused = refused or refusal(data, model or "")
        said = gemini_request(data, reply_text("gemini", last, image)) if valid else Answer("")
        characters = sum(len(_parts(c)[0]) for c in data.get("contents", ())) if valid else 0
        return Call(
            "gemini",
            False,
            model,
            action == "streamGenerateContent",
            said.text,
            words,
            valid and refused is None,
            version,
            "alt=sse" in query,
            said.tool_calls,
            said.finish,
            refused,
            default_model=MODELS[0],
            tokens=admission_tokens(characters, 0),  # its limits on tokens count the input only
        )
    if not action and method == "GET":
        return Call("gemini", True, model, False, "", 0, True, version, default_model=MODELS[0])
    return None


def secret(headers: Mapping[str, str], query: str) -> str | None:
    """`x-goog-api-key`, or `?key=` (Google accepts it; the log flags it as `key_in_url`)."""
    key = headers.get("x-goog-api-key")
    if not key and "key=" in query:
        key = parse_qs(query).get("key", [""])[0]
    return key or None


PROVIDER = SimProvider(
    name="gemini",
    base_path="/gemini",
    default_model=MODELS[0],
    demo_keys=tuple(f"AIzaSyDEMO-not-a-real-key-c{i:012d}" for i in range(1, 2)),
    route=route,
    render=render_gemini,
    secret=secret,
    statuses={Step.INVALID_KEY: 400, Step.NO_CREDITS: 429, Step.TOO_LARGE: 400, Step.BLOCKED: 200},
    wire_steps=WIRE_STEPS,
    serves=lambda call: served_on(call.version, call.model),
    json_indent=2,
)
