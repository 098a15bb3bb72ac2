"""OpenAI's chat request in Gemini's terms, and the text and usage of Gemini's answer back in OpenAI's.

Messages become `contents` (system → `system_instruction`, assistant → `model`, images inline or by URL, tool calls
and results as function parts) and the request's settings a `GenerateContentConfig`, with the model's lowest
thinking and its allowance on top of `max_tokens` (thoughts count as output: without it a small `max_tokens` buys
no text). What a model is documented to refuse is refused here, before any call, so another provider may take the
request. Apart from the adapter (`gemini.py`: the calls, one SDK client per key) so that the request's shape is one
place, read without clients, keys or budgets; the agent fields within it are `gemini_agents.py`'s. The SDK's
types are imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import base64
import functools
import re
from typing import Any

import llms.providers.gemini_agents as agents
from llms.exceptions import ProviderError
from llms.outcomes import rejected
from llms.types import ChatRequest, Usage, message_text

_STRICT_SAMPLING = re.compile(r"^gemini-3\.5-flash-lite")
"""Models that ignore a custom temperature / top_p / top_k, refuse custom presence / frequency penalties, and refuse
a conversation whose last turn is the model's (Google's model page for Gemini 3.5 Flash-Lite)."""


@functools.lru_cache(maxsize=256)
def thinking(model: str) -> tuple[dict[str, Any], int]:
    """The lowest thinking the model allows, and how many output tokens to add for it.

    2.5 Flash and Flash-Lite turn thinking off with a budget of 0; 2.5 Pro cannot (its minimum is 128). Gemini 3
    and later take a level instead of a budget (a budget of 0 is refused): `MINIMAL` for Flash models, `LOW` for
    Pro, whose thinking cannot be turned off.
    """
    name = model.removeprefix("models/").lower()
    if name.startswith("gemini-2.5-pro"):
        return {"thinking_budget": 128}, 128
    if name.startswith("gemini-2.5"):
        return {"thinking_budget": 0}, 0
    if generation(model) >= 3:
        return ({"thinking_level": "LOW"}, 1024) if "pro" in name else ({"thinking_level": "MINIMAL"}, 256)
    return {}, 0


def generation(model: str) -> int:
    """The model's major version (`gemini-3.5-flash` → 3); 0 when the name does not say."""
    found = re.match(r"gemini-(\d+)", model.removeprefix("models/").lower())
    return int(found.group(1)) if found else 0


def translate(request: ChatRequest, model: str) -> tuple[list[Any], Any]:
    """The request as Gemini's `contents` and `GenerateContentConfig` for `model`; what Gemini cannot take is
    refused (`rejected`, no key at fault) before any call: another provider may take it."""
    try:
        return _contents_and_config(request, model)
    except agents.Refused as exc:
        raise ProviderError(rejected(f"Gemini cannot take this request: {exc}", None)) from None


def _contents_and_config(request: ChatRequest, model: str) -> tuple[list[Any], Any]:
    from google.genai import types

    _refuse_what_the_model_refuses(request, model)
    system: list[str] = []
    contents: list[types.Content] = []
    names = agents.call_names(request.messages)
    for message in request.messages:
        role = message["role"]
        if role == "system":
            system.append(message_text(message["content"]))
            continue
        if role == "tool":
            part = agents.function_response_part(message, names)
            if (
                contents
                and contents[-1].role == "user"
                and contents[-1].parts
                and contents[-1].parts[-1].function_response
            ):
                contents[-1].parts.append(part)  # parallel calls answered in one turn
            else:
                contents.append(types.Content(role="user", parts=[part]))
            continue
        parts = _parts(message["content"]) if message.get("content") else []
        if role == "assistant" and message.get("tool_calls"):
            parts += agents.function_call_parts(message["tool_calls"], signed=generation(model) >= 3)
        contents.append(types.Content(role="model" if role == "assistant" else "user", parts=parts))
    lowest, allowance = thinking(model)
    max_output = request.max_tokens + allowance if request.max_tokens else None
    config = types.GenerateContentConfig(
        temperature=request.temperature,
        max_output_tokens=max_output,
        system_instruction="\n\n".join(system) if system else None,
        thinking_config=types.ThinkingConfig(**lowest) if lowest else None,
        **agents.generation_options(request.options),
    )
    return contents, config


def _refuse_what_the_model_refuses(request: ChatRequest, model: str) -> None:
    """What Google documents a model answers with an error is refused before the call (the error's text is not
    documented, so it could not be told from a malformed request afterwards), so another provider may take it."""
    if not _STRICT_SAMPLING.match(model.removeprefix("models/")):
        return
    for name in ("presence_penalty", "frequency_penalty"):
        if request.options.get(name):
            raise agents.Refused(f"{model} refuses a custom {name}")
    turns = [m for m in request.messages if m["role"] != "system"]
    if turns and turns[-1]["role"] == "assistant":
        raise agents.Refused(f"{model} refuses a conversation whose last turn is the model's (an assistant prefill)")


def _parts(content: Any) -> list[Any]:
    from google.genai import types

    if isinstance(content, str):
        return [types.Part(text=content)]
    parts = []
    for part in content:
        if part["type"] == "text":
            parts.append(types.Part(text=part["text"]))
            continue
        url = part["image_url"]["url"]
        if url.startswith("data:"):
            header, _, data = url.partition(",")
            mime = header[5:].split(";")[0] or "image/png"
            parts.append(types.Part.from_bytes(data=base64.b64decode(data), mime_type=mime))
        else:
            mime = "image/png" if url.lower().endswith(".png") else "image/jpeg"
            parts.append(types.Part.from_uri(file_uri=url, mime_type=mime))
    return parts


def text_of(response: Any) -> str:
    """An answer's (or a stream chunk's) text: its thoughts are not the answer."""
    texts = []
    for candidate in response.candidates or []:
        for part in (candidate.content.parts if candidate.content else None) or []:
            if part.text and not part.thought:
                texts.append(part.text)
    return "".join(texts)


def usage_of(response: Any) -> Usage:
    """Token counts in OpenAI's terms (thoughts are in Gemini's total)."""
    meta = response.usage_metadata
    if meta is None:
        return Usage()
    prompt = meta.prompt_token_count or 0
    completion = meta.candidates_token_count or 0
    return Usage(prompt, completion, meta.total_token_count or prompt + completion)
