"""The demo's "Simulate" panel: make the fake providers misbehave on demand, so a presenter can show each
rotation behaviour when it fits the talk instead of waiting for it.

Every action scripts the simulator (what a provider will answer), never the client or its store: the client
finds out the way it would in production, from the next answer it gets. Only "Recover" may also end the
client's cooldowns, through `SmartClient.reset_all()` (the Status page's "Reset all"), when asked to, and "Send a
test request now" makes the client call the chosen key once (`client.admin.check_key`, the Status page's Test), so
a revoked key is parked in front of the audience even when round-robin sends the next chat message elsewhere.
Each action says what it did next to its buttons and, on the Status page, as a toast.
The simulator is imported only inside these functions, as in `dashboard.client`: outside demo mode the fake
providers are never loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING

import streamlit as st

from dashboard import auth
from dashboard.text import provider_title, reason_words, verdict
from llms import ProviderStatus
from llms.key_status import state_of

if TYPE_CHECKING:
    from dashboard.client import Backend
    from llms import SmartClient
    from simulator import Simulator

STRIP_SECONDS = 2.0
"""How often the demo's key strip redraws: keys change colour as they answer and rest."""

OUTAGE_STEP = "overloaded"
"""What every key of a provider in an outage answers (`Step.OVERLOADED`): 502/503, each provider's own shape."""


def demo_secret(key_id: str, added: Mapping[str, str] | None = None) -> str:
    """The fake secret behind a demo key id (`openrouter:2` is `OPENROUTER_API_KEY_2`, the second demo key), or
    behind a key the Keys panel added to the demo (`added`: the demo client's environment)."""
    from simulator import DEMO_KEYS

    provider, _, number = key_id.partition(":")
    if added and (secret := added.get(f"{provider.upper()}_API_KEY_{number}")):
        return secret
    secrets = DEMO_KEYS.get(provider, [])
    if not number.isdigit() or not 1 <= int(number) <= len(secrets):
        raise KeyError(f"not a demo key: {key_id!r}")
    return secrets[int(number) - 1]


def _demo_secrets() -> set[str]:
    from simulator import DEMO_KEYS

    return {secret for secrets in DEMO_KEYS.values() for secret in secrets}


def rate_limit(simulator: Simulator, key_id: str, added: Mapping[str, str] | None = None) -> str:
    """The key's next request answers 429 with a retry hint (the rest of its limit window); then it is fine."""
    simulator.set_steps(demo_secret(key_id, added), "rate_limit", then="ok")
    return f"{key_id} will answer its next request with 429 (rate-limited), then recover."


def revoke(simulator: Simulator, key_id: str, added: Mapping[str, str] | None = None) -> str:
    """The key answers 401 "invalid key" from now on, as a revoked key does, until "Recover"."""
    simulator.set_steps(demo_secret(key_id, added), then="invalid_key")
    return (
        f"{key_id} is revoked: it answers 401 invalid key until you recover it. The client finds out on {key_id}'s "
        "next request: press “Send a test request now” to see it parked at once."
    )


def test_request(client: SmartClient, key_id: str) -> str:
    """One real call with the key through the client, as the Status page's Test: the client learns what the
    simulator was told at once, and the message says where the key stands after it."""
    outcome = client.admin.check_key(key_id, by=auth.acting())
    key = next(k for s in client.admin.provider_statuses() for k in s.keys if k.key_id == key_id)
    after = (
        f"the client now rests it ({reason_words(key.reason or 'manual')}): see the Status table and alerts."
        if not key.available
        else "it stays in rotation."
    )
    return f"Sent a test request: {verdict(key_id, outcome)}; {after}"


def outage(simulator: Simulator, provider: str, added: Mapping[str, str] | None = None) -> str:
    """Every key of the provider (the demo's, and any added to it) answers "overloaded" (5xx) until "Recover"."""
    from simulator import DEMO_KEYS

    extra = [v for n, v in (added or {}).items() if n.startswith(f"{provider.upper()}_API_KEY_")]
    for secret in dict.fromkeys([*DEMO_KEYS[provider], *extra]):
        simulator.set_steps(secret, then=OUTAGE_STEP)
    return f"{provider_title(provider)} is down: every key answers {OUTAGE_STEP} (5xx) until you recover."


def recover(simulator: Simulator, limits: dict[str, tuple[int, float]], added: Mapping[str, str] | None = None) -> str:
    """Every demo key (and any the Keys panel added) answers normally again, with a fresh limit window
    (registering them again does both)."""
    from config.keys_file import provider_of_name

    simulator.add_demo_keys(limits=limits)
    for name, secret in (added or {}).items():
        named = provider_of_name(name)
        if named and secret not in _demo_secrets():
            simulator.add_key(named[0], secret, limit=limits.get(named[0]))
    return "Every simulated key answers normally again, with a fresh limit window."


def simulate_panel(backend: Backend, notify: Callable[[str], None] | None = None) -> None:
    """Buttons that script the demo simulator; draws nothing outside demo mode. `notify`: also say what each
    action did there (the Status page toasts it), besides the line under the buttons."""
    simulator = backend.simulator
    if simulator is None:
        return
    from simulator import DEMO_LIMITS

    client = backend.client
    statuses = [s for s in client.admin.provider_statuses() if s.total]
    key_ids = [k.key_id for s in statuses for k in s.keys]
    providers = [s.provider for s in statuses]

    def act(action: Callable[[Simulator, str, Mapping[str, str]], str], widget: str) -> None:
        """Read the target from the widget's state: a callback's args are those of the run that drew it."""
        message = action(simulator, st.session_state[widget], backend.demo_env)
        upcoming = next_key(client.admin.provider_statuses())
        said(message + (f" The next chat message goes to {upcoming}." if upcoming else ""))

    def said(message: str) -> None:
        st.session_state["simulate_last"] = message
        if notify is not None:
            notify(message)

    def send_test() -> None:
        said(test_request(client, st.session_state["simulate_key"]))

    def recover_all() -> None:
        message = recover(simulator, DEMO_LIMITS, backend.demo_env)
        if st.session_state.get("simulate_reset", True):
            client.reset_all(by=auth.operator())  # the reset events name who pressed it, as Reset all's do
            message += " The client's cooldowns were reset too."
        said(message)

    with st.container():
        st.caption(
            "Demo only: make the fake providers misbehave, then chat to see how the client copes. "
            "The client is not told: it finds out from the next answer, as it would in production."
        )
        left, right = st.columns(2)
        with left:
            st.selectbox("Key", key_ids, key="simulate_key")
            one, two = st.columns(2)
            one.button(
                "Rate-limit key",
                icon=":material/speed:",
                width="stretch",
                on_click=act,
                args=(rate_limit, "simulate_key"),
                help="Its next request gets 429 with a retry hint; the client rests it and moves on.",
            )
            two.button(
                "Revoke key",
                icon=":material/key_off:",
                width="stretch",
                on_click=act,
                args=(revoke, "simulate_key"),
                help="It answers 401 from now on; the client parks it as invalid.",
            )
            st.button(
                "Send a test request now",
                icon=":material/send:",
                width="stretch",
                on_click=send_test,
                help="The client calls this key once (as Test on the Status page): a revoked key is parked at once, "
                "whichever key the next chat message goes to.",
            )
        with right:
            st.selectbox("Provider", providers, format_func=provider_title, key="simulate_provider")
            st.button(
                "Provider outage",
                icon=":material/cloud_off:",
                width="stretch",
                on_click=act,
                args=(outage, "simulate_provider"),
                help="Every key of the provider answers 5xx overloaded; the client falls back to the next provider.",
            )
        recover_col, toggle_col = st.columns([1, 2], vertical_alignment="center")
        recover_col.button("Recover", icon=":material/healing:", type="primary", width="stretch", on_click=recover_all)
        toggle_col.toggle(
            "Also end the client's cooldowns (as Reset all)",
            value=True,
            key="simulate_reset",
            help="Off: the client finds the keys healthy again only as their cooldowns end.",
        )
        if last := st.session_state.get("simulate_last"):
            st.caption(last)


# --- the key strip ------------------------------------------------------------------------------------------------


def next_key(statuses: Sequence[ProviderStatus]) -> str | None:
    """The key round-robin gives the next chat message (the demo's one client): the first provider in order with
    a key available, and there the first available key after the one it used last (None: every key rests)."""
    for provider in statuses:
        if provider.paused_until:
            continue
        keys = list(provider.keys)
        free = [i for i, key in enumerate(keys) if key.available]
        if not free:
            continue
        used = [i for i, key in enumerate(keys) if key.last_used is not None]
        last = max(used, key=lambda i: keys[i].last_used or 0.0) if used else -1
        return keys[next((i for i in free if i > last), free[0])].key_id
    return None


def key_strip(statuses: Sequence[ProviderStatus]) -> str:
    """Every demo key as a pill in its state's colour, by provider: the key that answered last is ringed, the one
    the next message goes to is marked ▸ (HTML; key ids and words only, never a secret)."""
    answered = max(
        (k for s in statuses for k in s.keys if k.last_used is not None), key=lambda k: k.last_used or 0.0, default=None
    )
    upcoming = next_key(statuses)
    groups = []
    for status in statuses:
        pills = []
        for key in status.keys:
            state, number = state_of(key, status.paused_until is not None), key.key_id.rsplit(":", 1)[-1]
            last = answered is not None and key.key_id == answered.key_id
            mark = "▸ " if key.key_id == upcoming else ""
            tip = f"{key.key_id}: {state.facts.label}" + (" · answered last" if last else "")
            tip += " · the next message goes here" if mark else ""
            style = (
                f"background:{state.facts.color};color:#fff;border-radius:0.6rem;padding:0.05rem 0.45rem;"
                "margin:0 0.15rem;font-size:0.8rem;"
                # a ring of its own colour a gap away: white text's colour vanished on a light page
                + (f"outline:2px solid {state.facts.color};outline-offset:2px;" if last else "")
            )
            pills.append(f'<span title="{escape(tip)}" style="{style}">{mark}{escape(number)}</span>')
        groups.append(f"<span style='white-space:nowrap'>{escape(status.title)} {''.join(pills)}</span>")
    return "<div style='line-height:1.9'>" + " &nbsp; ".join(groups) + "</div>"


def strip_caption(statuses: Sequence[ProviderStatus]) -> str:
    upcoming = next_key(statuses)
    return f"Next message goes to {upcoming}" if upcoming else "Every key rests: the next message waits or falls back"


def demo_strip(client: SmartClient) -> None:
    """The demo's keys, redrawn every `STRIP_SECONDS`: a presenter's audience sees keys answer, rest and come back,
    and which key the next message will use."""

    @st.fragment(run_every=STRIP_SECONDS)
    def strip() -> None:
        statuses = [s for s in client.admin.provider_statuses() if s.total]
        st.html(key_strip(statuses))
        st.caption(strip_caption(statuses))

    strip()
