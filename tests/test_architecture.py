"""The layout's promises, checked: no import circles, light imports, one module per provider."""

from __future__ import annotations

import ast
import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import pytest
import requests
from conftest import PYTHON, ROOT, USER_HELLO, python_env

from config.settings import ConfigError, load_settings
from dashboard.status import store_text
from llms import SmartClient
from llms.outcomes import Outcome
from llms.providers import PROVIDERS, ProviderSpec
from llms.providers.groq import classify as groq_classify
from llms.providers.openai_compat import OpenAICompatAdapter
from llms.state import MODULES, StoreHealth
from llms.state.memory import MemoryStore
from llms.wire import seconds_until_midnight
from simulator import Simulator
from simulator.compat import render_compat
from simulator.core import Call, Plan, Reply, Step
from simulator.provider import SimProvider, openai_route
from simulator.registry import SIM_PROVIDERS

PACKAGES = ("config", "llms", "simulator", "dashboard", "gateway")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, known: Mapping[str, Path]) -> Iterator[str]:
    """Project modules `path` imports at run time (imports under `if TYPE_CHECKING:` are for type checkers)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for stmt in branch.body
        for node in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name in known:
                yield name


def test_no_module_imports_another_in_a_circle() -> None:
    known = _modules()
    graph = {name: set(_imports(path, known)) - {name} for name, path in known.items()}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for dep in graph[node]:
            if dep in trail:
                cycles.append([*trail[trail.index(dep) :], dep])
            elif dep not in done:
                visit(dep, [*trail, dep])
        done.add(node)

    done: set[str] = set()
    for name in graph:
        if name not in done:
            visit(name, [name])
    assert cycles == []


def test_no_module_is_over_500_lines() -> None:
    """A module a reader takes in at a sitting (issue 25): past 500 lines, find the seam and split it."""
    scripts = [ROOT / "streamlit_app.py", *(ROOT / "pages").glob("*.py"), *(ROOT / "bench").glob("*.py")]
    lines = {
        path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
        for path in [*_modules().values(), *scripts]
    }
    assert len(lines) > 100 and max(lines.values()) > 300  # the walk found the code
    assert {path: n for path, n in lines.items() if n > 500} == {}


def test_importing_the_client_loads_no_web_stack_no_sdk_no_backend_and_no_simulator() -> None:
    code = (
        "import json, sys; import llms, llms.__main__; from llms import get_smart_client, SmartClient; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('streamlit', 'redis', 'google', 'simulator', 'pandas', 'starlette', 'uvicorn', 'anyio', "
        "'prometheus_client', 'gateway', 'httpx2', 'httpcore2') or m in ('llms.state.redis', 'llms.transport_httpx'))))"
    )
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=python_env(), cwd=ROOT, check=True)
    assert json.loads(out.stdout) == []


def test_the_gateway_uses_the_client_package_and_never_the_dashboard() -> None:
    known = _modules()
    imported = {dep for name, path in known.items() if name.startswith("gateway") for dep in _imports(path, known)}
    assert not any(dep.startswith("dashboard") for dep in imported)
    assert not any(dep.startswith("llms.") and dep.split(".")[1] in ("key_manager", "providers") for dep in imported)


def test_the_state_base_module_imports_no_backend() -> None:
    known = _modules()
    assert set(_imports(known["llms.state.base"], known)) == set()


def test_the_stores_keep_reasons_as_strings_and_know_nothing_of_their_meaning() -> None:
    """`KeyState` (`llms.key_states`, importing nothing) is the one enum of reasons; no store module reads it."""
    known = _modules()
    assert set(_imports(known["llms.key_states"], known)) == set()
    stores = [name for name in known if name == "llms.state" or name.startswith("llms.state.")]
    assert stores and not [name for name in stores if "llms.key_states" in set(_imports(known[name], known))]


class _TogetherAdapter(OpenAICompatAdapter):
    provider = "together"
    classify: ClassVar = staticmethod(groq_classify)


def test_a_fourth_openai_compatible_provider_is_one_module_and_one_registry_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a new provider module declares; the registry line is the `setitem` below. It speaks the OpenAI wire
    format, so the simulator's Groq endpoint stands in for it."""
    spec = ProviderSpec(
        name="together",
        title="Together",
        default_model="meta-llama/Llama-3.3-70B-Instruct-Turbo-Free",
        default_base_url="https://api.together.xyz/v1",
        day_zone=PROVIDERS["groq"].day_zone,
        classify=groq_classify,
        adapter=_TogetherAdapter,
    )
    monkeypatch.setitem(PROVIDERS, "together", spec)  # type: ignore[index]
    with Simulator() as sim:
        sim.add_key("groq", "tg-secret-key-0001", "rate_limit", name="together:1")
        sim.add_key("groq", "tg-secret-key-0002", name="together:2")
        env = {
            "TOGETHER_API_KEY_1": "tg-secret-key-0001",
            "TOGETHER_API_KEY_2": "tg-secret-key-0002",
            "TOGETHER_BASE_URL": sim.base_urls["groq"],
            "LLM_PROVIDER_ORDER": "together",
        }
        with SmartClient(load_settings(env, dotenv_path=None), store=MemoryStore()) as client:
            result = client.complete(USER_HELLO)
            assert (result.provider, result.key_id) == ("together", "together:2")
            assert client.get_status_summary()["together"]["title"] == "Together"
            assert seconds_until_midnight(spec.day_zone, 0.0) > 0
            assert isinstance(client.admin.check_key("together:2"), Outcome)


def _render_together(call: Call, plan: Plan, step: Step, label: str) -> Reply:
    """Its renderer: OpenAI's wire format, with its own header to prove it, not a copy's, answered."""
    reply = render_compat(call, plan, step, label)
    reply.headers["x-together-request-id"] = "sim-0001"
    return reply


def test_a_fifth_simulated_provider_is_one_module_and_one_registry_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a simulated provider's module declares (routes, key reading, statuses, renderer, demo keys); the
    registry line is the `setitem` below. The server, the demo and the harness ask the registry, never a name."""
    together = SimProvider(
        name="together",
        base_path="/together/v1",
        default_model="sim-together",
        demo_keys=("tg-demo-not-a-real-key-0001",),
        route=openai_route("together", "sim-together", probe="models"),
        render=_render_together,
        statuses={Step.OVERLOADED: 529},
    )
    monkeypatch.setitem(SIM_PROVIDERS, "together", together)
    with Simulator() as sim:
        sim.add_key("together", "tg-secret-key-0001", "overloaded", "rate_limit", name="together:1")
        url = sim.base_urls["together"] + "/chat/completions"
        headers = {"Authorization": "Bearer tg-secret-key-0001"}
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        statuses = [requests.post(url, json=body, headers=headers, timeout=5).status_code for _ in range(3)]
        answer = requests.post(url, json=body, headers=headers, timeout=5)
        probe = requests.get(sim.base_urls["together"] + "/models", headers=headers, timeout=5)
    assert statuses == [529, 429, 200]
    assert answer.headers["x-together-request-id"] == "sim-0001" and "Simulated together reply" in answer.text
    assert probe.status_code == 200
    assert [(r.provider, r.key_name, r.status) for r in sim.requests][:2] == [
        ("together", "together:1", 529),
        ("together", "together:1", 429),
    ]


class _ScratchStore(MemoryStore):
    """A new backend: its schemes, its URL's rule and its words; registered by its class, found by scheme."""

    SCHEMES = ("scratch",)

    @classmethod
    def check_url(cls, url: str) -> str:
        if not url.endswith("/db"):
            raise ValueError("names no database (scratch://host/db)")
        return url

    @staticmethod
    def describe(health: StoreHealth) -> str:
        return "in scratch space"

    @classmethod
    def from_url(cls, url: str, prefix: str) -> _ScratchStore:
        return cls()


def test_a_new_store_is_one_module_and_one_registry_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend above is the module; the registry line is the `setitem` below. Settings check its URL, the
    client builds it, the status page describes it: all through `llms.state`'s registry."""
    monkeypatch.setitem(MODULES, "scratch", __name__)
    with pytest.raises(ConfigError, match=r"LLM_STATE_URL names no database"):
        load_settings({"LLM_STATE_URL": "scratch://host"}, dotenv_path=None)
    with pytest.raises(
        ConfigError, match=r"LLM_STATE_URL has unknown scheme 'postgres': it must start with one of .*scratch://"
    ):
        load_settings({"LLM_STATE_URL": "postgres://host/db"}, dotenv_path=None)
    settings = load_settings({"LLM_STATE_URL": "scratch://host/db", "GROQ_API_KEY_1": "gsk_x"}, dotenv_path=None)
    with SmartClient(settings) as client:
        store = client.key_manager.store_health()
        assert store.backend == "scratch"
        assert store_text(store) == "Key state is kept in scratch space."
