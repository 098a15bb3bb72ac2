"""OpenAI's request fields beyond messages that agents send, validated once, in OpenAI's own shapes.

`tools`, `tool_choice`, `response_format`, `stop`, `top_p`, `seed`, `presence_penalty`, `frequency_penalty`.
OpenAI-format providers receive them as given; Gemini's adapter translates them. A malformed one is a `ValueError`
naming the field, before any key is taken; the shapes are checked, not every JSON-schema rule inside a tool's
`parameters` (the provider reads those, and one that refuses them refuses the request, not the key).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NAMES = ("tools", "tool_choice", "response_format", "stop", "top_p", "seed", "presence_penalty", "frequency_penalty")
"""The fields a call may carry beside messages, temperature, max_tokens and model."""

_FORMATS = ("text", "json_object", "json_schema")


def validate(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that were given (None means not given), checked; an unknown name is a `TypeError`, as for any
    keyword argument."""
    unknown = [name for name in options if name not in NAMES]
    if unknown:
        raise TypeError(f"unexpected option(s) {', '.join(unknown)}; the client takes {', '.join(NAMES)}")
    given = {name: value for name, value in options.items() if value is not None}
    checked: dict[str, Any] = {}
    if "tools" in given:
        checked["tools"] = _tools(given["tools"])
    if "tool_choice" in given:
        checked["tool_choice"] = _tool_choice(given["tool_choice"], checked.get("tools", []))
    if "response_format" in given:
        checked["response_format"] = _response_format(given["response_format"])
    if "stop" in given:
        checked["stop"] = _stop(given["stop"])
    for name, low, high in (("top_p", 0.0, 1.0), ("presence_penalty", -2.0, 2.0), ("frequency_penalty", -2.0, 2.0)):
        if name in given:
            checked[name] = _number(name, given[name], low, high)
    if "seed" in given:
        seed = given["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be a whole number, got {seed!r}")
        checked["seed"] = seed
    return checked


def tool_names(tools: list[dict[str, Any]]) -> list[str]:
    return [tool["function"]["name"] for tool in tools]


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list) or not tools:
        raise ValueError("tools must be a non-empty list of {'type': 'function', 'function': {...}}")
    checked = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or tool.get("type") != "function":
            raise ValueError(f"{where} must be {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}}")
        name = function.get("name")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ValueError(f"{where}['function']['name'] must be a name of 1 to 64 characters")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ValueError(f"{where}['function']['parameters'] must be a JSON schema object")
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise ValueError(f"{where}['function']['description'] must be text")
        checked.append({"type": "function", "function": dict(function)})
    names = tool_names(checked)
    if len(set(names)) != len(names):
        raise ValueError("tools has two functions of the same name")
    return checked


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), Mapping) else None
        if name in tool_names(tools):
            return {"type": "function", "function": {"name": name}}
        raise ValueError(f"tool_choice names a function that is not among the tools: {name!r}")
    raise ValueError(
        "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}"
    )


def _response_format(response_format: Any) -> dict[str, Any]:
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind not in _FORMATS:
        raise ValueError(f"response_format must be {{'type': one of {', '.join(_FORMATS)}}}, got {response_format!r}")
    if kind == "json_schema":
        schema = response_format.get("json_schema")
        if not isinstance(schema, Mapping) or not isinstance(schema.get("name"), str):
            raise ValueError("response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}")
        if not isinstance(schema.get("schema", {}), Mapping):
            raise ValueError("response_format['json_schema']['schema'] must be a JSON schema object")
    return dict(response_format)


def _stop(stop: Any) -> list[str]:
    sequences = [stop] if isinstance(stop, str) else stop
    if not isinstance(sequences, list) or not 1 <= len(sequences) <= 4:
        raise ValueError("stop must be a string or a list of 1 to 4 strings")
    if not all(isinstance(s, str) and s for s in sequences):
        raise ValueError("stop must hold non-empty strings")
    return list(sequences)


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number between {low:g} and {high:g}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return float(value)
