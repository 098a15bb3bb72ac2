"""Every simulated provider, once: the server routes by it, the demo registers its keys, the harness renders by it.

A fifth provider is its module (a `SimProvider` named `PROVIDER`: see `simulator.provider`) and one line here.
"""

from __future__ import annotations

from typing import Any

from simulator.compat import PROVIDER as COMPAT
from simulator.core import GARBAGE, Call, Plan, Reply, Step, render_wire
from simulator.gemini import PROVIDER as GEMINI
from simulator.groq import PROVIDER as GROQ
from simulator.openrouter import PROVIDER as OPENROUTER
from simulator.provider import SimProvider

SIM_PROVIDERS: dict[str, SimProvider] = {p.name: p for p in (OPENROUTER, GROQ, GEMINI, COMPAT)}
"""`compat`: a generic OpenAI-compatible provider, for providers known by configuration."""

PROVIDERS: tuple[str, ...] = tuple(SIM_PROVIDERS)
DEMO_KEYS: dict[str, list[str]] = {name: list(p.demo_keys) for name, p in SIM_PROVIDERS.items()}
WIRE_STEPS: dict[str, dict[Step, str]] = {name: dict(p.wire_steps) for name, p in SIM_PROVIDERS.items()}


def sim_provider(name: str) -> SimProvider:
    provider = SIM_PROVIDERS.get(name)
    if provider is None:
        raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(SIM_PROVIDERS)}")
    return provider


def status_for(provider: str, step: Step, stream: bool) -> int:
    """The status `provider` answers `step` with (a recorded example's own status aside)."""
    return SIM_PROVIDERS[provider].status_of(step, stream)


def route(method: str, path: str, query: str, data: Any) -> Call | None:
    """The call a request to the server is (`data`: its body as JSON, None when it has none or is not JSON), or
    None: no provider serves that route."""
    for provider in SIM_PROVIDERS.values():
        base = provider.base_path + "/"
        if path.startswith(base):
            return provider.route(method, path[len(base) :], query, data)
    return None


def render_reply(call: Call, plan: Plan, label: str) -> Reply:
    """The provider's answer for a planned step (the HTTP server writes it; `simulator.virtual_time` reads it)."""
    provider, step = SIM_PROVIDERS[call.provider], plan.step
    if step is Step.MID_STREAM_ERROR and not call.stream:
        step = Step.SERVER_ERROR
    if step is Step.GARBAGE:
        return Reply(200, {"Content-Type": "text/html"}, GARBAGE)
    if step is Step.BAD_REQUEST and call.refusal:  # refused for what it asked: the provider's recorded words
        return render_wire(call, *call.refusal, indent=provider.json_indent)
    return provider.render(call, plan, step, label)
