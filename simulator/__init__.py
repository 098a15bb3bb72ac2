"""Loopback HTTP server that fakes OpenRouter, Groq and Gemini on the wire, for tests, benchmarks and the demo.

Outside the client package on purpose: the client path never imports it; the dashboard does only in demo mode.

    with Simulator() as sim:
        sim.add_key("groq", "gsk_test", Step.RATE_LIMIT, then=Step.OK)
        requests.post(f"{sim.base_urls['groq']}/chat/completions", ...)
"""

from simulator.core import SimRequest, Step
from simulator.registry import DEMO_KEYS, PROVIDERS
from simulator.server import DEMO_LIMITS, FREE_TIER_LIMITS, Simulator, main, start_demo

__all__ = [
    "DEMO_KEYS",
    "DEMO_LIMITS",
    "FREE_TIER_LIMITS",
    "PROVIDERS",
    "SimRequest",
    "Simulator",
    "Step",
    "main",
    "start_demo",
]
