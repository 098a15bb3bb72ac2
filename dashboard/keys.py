"""The Status page's Keys panel: add keys (pasted, or a `.env` block or file), each tested before it joins, and
remove ticked keys, without a restart.

Secrets go to one place only, the keys file (`config.keys_file`): never to the state store, the session state
(the paste box is emptied as soon as it is read) or the page, which names keys by provider and hint. The process
that wrote the file reloads at once; every other process reading the same file picks it up through
`SmartClient.watch_keys_file` within seconds. In demo mode nothing is written: a new key becomes a fake key of
the simulator, and joins the demo client's own environment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from config import keys_file
from config.api_keys import redact
from config.keys_file import Candidate
from config.settings import Settings, load_settings
from dashboard import auth
from dashboard.text import provider_title
from llms import SmartClient
from llms.outcomes import Outcome, OutcomeKind

if TYPE_CHECKING:
    from dashboard.client import Backend

PASTE = "keys_paste"
UPLOADS = "keys_uploads"
"""A counter in the uploader's key: bumping it after Add empties the uploader (it cannot be emptied otherwise)."""
VERDICTS = "keys_verdicts"
REFUSED = frozenset({OutcomeKind.INVALID_KEY})
"""Test results that keep a key out: the provider says it does not exist. Anything else (a rate limit, an
outage, no credit) is a working key having a bad minute, so it joins and rests like any other."""


@dataclass(frozen=True)
class Verdict:
    """What became of one pasted key, in words safe to show (provider and hint, never the key)."""

    provider: str
    hint: str
    where: str
    verdict: str
    key_id: str | None = None

    def row(self) -> dict[str, str]:
        return {
            "Provider": provider_title(self.provider) if self.provider else "?",
            "Key": self.hint,
            "From": self.where,
            "Verdict": self.verdict,
            "Joined as": self.key_id or "",
        }


def configured(client: SmartClient) -> dict[str, str]:
    """Every secret in rotation → its key id (what a paste is deduplicated against)."""
    manager = client.key_manager
    return {k.secret: k.key_id for p in client.settings.provider_order for k in manager.keys(p)}


def preview(client: SmartClient, text: str) -> pd.DataFrame:
    """What Add would do with `text`, before anything is tested or written: provider and hint per key found."""
    rows = [
        {
            "Provider": provider_title(c.provider) if c.provider else "?",
            "Key": c.hint,
            "From": c.where,
            "Note": _refusal(client.settings, c) or "will be tested, then added",
        }
        for c in keys_file.parse_block(text, configured(client))
    ]
    return pd.DataFrame(rows, columns=["Provider", "Key", "From", "Note"])


def _refusal(settings: Settings, candidate: Candidate, demo: bool = False) -> str | None:
    if candidate.problem:
        return candidate.problem
    if candidate.provider not in settings.provider_order:
        return f"{candidate.provider} is not in LLM_PROVIDER_ORDER; add it there first"
    if demo:
        from simulator import PROVIDERS

        if candidate.provider not in PROVIDERS:
            return f"the demo simulates {', '.join(PROVIDERS)} only"
    return None


def _said(outcome: Outcome) -> str:
    status = f"HTTP {outcome.status}" if outcome.status else outcome.kind.value.replace("_", " ")
    message = " ".join(outcome.message.split())[:120]
    return f"{status}: {message}" if message else status


def add(backend: Backend, text: str) -> list[Verdict]:
    """Test each new key found in `text` (one at a time per provider, providers side by side) and write those
    the provider did not refuse to the keys file (demo: to the simulator), then reload. One verdict per key."""
    client, demo = backend.client, backend.demo
    settings = client.settings
    candidates = keys_file.parse_block(text, configured(client))
    verdicts: dict[int, Verdict] = {}
    queue: dict[str, list[tuple[int, Candidate]]] = defaultdict(list)
    for i, candidate in enumerate(candidates):
        refusal = _refusal(settings, candidate, demo)
        if refusal:
            verdicts[i] = Verdict(candidate.provider or "", candidate.hint, candidate.where, f"not added: {refusal}")
        else:
            queue[candidate.provider or ""].append((i, candidate))
    if demo and backend.simulator is not None:
        from simulator import DEMO_LIMITS

        for provider, items in queue.items():
            for _, candidate in items:
                backend.simulator.add_key(provider, candidate.secret, limit=DEMO_LIMITS.get(provider))

    def test(provider: str) -> list[tuple[int, Candidate, Outcome]]:
        return [(i, c, client.admin.check_new_key(provider, c.secret)) for i, c in queue[provider]]

    with ThreadPoolExecutor(max_workers=max(1, len(queue))) as pool:
        tested = [row for rows in pool.map(test, list(queue)) for row in rows]
    joining = [(i, c, o) for i, c, o in tested if o.kind not in REFUSED]
    for i, c, outcome in tested:
        if outcome.kind in REFUSED:
            verdicts[i] = Verdict(
                c.provider or "", c.hint, c.where, f"not added: the provider refused it ({_said(outcome)})"
            )
    ids = _join(backend, [(c.provider or "", c.secret) for _, c, _ in joining]) if joining else []
    for (i, c, outcome), key_id in zip(joining, ids, strict=True):
        said = "works" if outcome.kind is OutcomeKind.OK else f"joined, resting until it works ({_said(outcome)})"
        verdicts[i] = Verdict(c.provider or "", c.hint, c.where, said, key_id)
    return [verdicts[i] for i in sorted(verdicts)]


def _join(backend: Backend, keys: Sequence[tuple[str, str]]) -> list[str]:
    """Write the keys (demo: into the demo's environment), reload the client; the key id each was given."""
    client = backend.client
    taken = {p: [k.number for k in client.key_manager.keys(p)] for p in client.settings.provider_order}
    if backend.demo:
        highest = {provider: max(numbers, default=0) for provider, numbers in taken.items()}
        ids = []
        for name, secret, key_id in keys_file.numbered(keys, highest):
            backend.demo_env[name] = secret
            ids.append(key_id)
        client.reload_keys(load_settings(backend.demo_env, dotenv_path=None), by=auth.acting())
        return ids
    path = _keys_path(client)
    given = keys_file.add_keys(path, keys, taken)
    client.reload_keys(by=auth.acting())
    return given


def _keys_path(client: SmartClient) -> str:
    path = client.settings.keys_file
    if path is None:
        raise keys_file.KeysFileError("no keys file: set LLM_KEYS_FILE")
    return path


def remove(backend: Backend, key_ids: Sequence[str]) -> str:
    """Take the keys out of the keys file (demo: out of the demo's environment) and out of rotation. A key set
    in the environment cannot be removed from here; the message says which and where to remove it."""
    if not key_ids:
        return "No key selected."
    client = backend.client
    secrets = {client.key_manager.key(key_id).secret: key_id for key_id in key_ids}
    if backend.demo:
        for name in [n for n, v in backend.demo_env.items() if v in secrets]:
            del backend.demo_env[name]
        client.reload_keys(load_settings(backend.demo_env, dotenv_path=None), by=auth.acting())
    else:
        keys_file.remove_keys(_keys_path(client), secrets)
        client.reload_keys(by=auth.acting())
    left = set(configured(client).values()) & set(key_ids)
    gone = [k for k in key_ids if k not in left]
    where = "the demo" if backend.demo else client.settings.keys_file
    text = f"Removed {', '.join(gone)} from {where}." if gone else "No key removed."
    if left:
        text += f" Still set in the environment, not in the keys file (remove them there): {', '.join(sorted(left))}."
    return redact(text, secrets)


def add_clicked(backend: Backend, notify: Callable[[str], None]) -> None:
    """The Add button: read the paste box and any uploaded file, empty the box (the keys leave the session at
    once), keep only the verdicts (hints) for the panel."""
    text = _pasted()
    st.session_state[PASTE] = ""
    st.session_state[UPLOADS] = st.session_state.get(UPLOADS, 0) + 1
    try:
        verdicts = add(backend, text)
    except keys_file.KeysFileError as exc:
        notify(f"Keys not added: {exc}")
        return
    if not verdicts:
        notify("No key found: paste keys or .env lines first.")
        return
    st.session_state[VERDICTS] = [v.row() for v in verdicts]
    joined = [v.key_id for v in verdicts if v.key_id]
    refused = len(verdicts) - len(joined)
    notify(
        (f"Added {', '.join(joined)}." if joined else "No key added.")
        + (f" {refused} not added: see the Keys panel." if refused else "")
    )


def _upload_key() -> str:
    return f"keys_upload_{st.session_state.get(UPLOADS, 0)}"


def _pasted() -> str:
    """The paste box and the uploaded file, as one block."""
    text = st.session_state.get(PASTE) or ""
    upload = st.session_state.get(_upload_key())
    if upload is not None:
        text += "\n" + upload.getvalue().decode("utf-8", "replace")
    return text


def keys_panel(backend: Backend, notify: Callable[[str], None]) -> None:
    """Paste box, a preview of what was recognised (provider and hint), Add, and the last Add's verdicts."""
    client = backend.client
    where = "the demo's simulator (nothing is written)" if backend.demo else f"`{client.settings.keys_file}`"
    st.caption(
        f"Keys are tested, then written to {where}. Paste keys (one or many: OpenRouter `sk-or-…`, Groq `gsk_…`, "
        "Gemini `AIza…`) or `.env` lines (`MISTRAL_API_KEY_1=…`). Other processes reading the same file pick "
        "them up within seconds. To remove keys, tick their rows above and use Remove."
    )
    st.text_area("Keys or .env lines", key=PASTE, height=100, placeholder="gsk_…\nOPENROUTER_API_KEY_7=sk-or-…")
    st.file_uploader("or import a .env file", key=_upload_key())
    text = _pasted()
    found = preview(client, text) if text.strip() else None
    if found is not None and not found.empty:
        st.dataframe(found, hide_index=True, width="stretch")
    elif found is not None:
        st.caption("No key recognised (bare keys need a known prefix; other providers: NAME_API_KEY=key).")
    st.button(
        "Add",
        icon=":material/add:",
        type="primary",
        on_click=add_clicked,
        args=(backend, notify),
        help="A key typed in the box counts once you click here; nothing is written until it has been tested.",
    )
    if verdicts := st.session_state.get(VERDICTS):
        st.dataframe(pd.DataFrame(verdicts), hide_index=True, width="stretch")


def remove_text(backend: Backend, key_ids: Sequence[str]) -> str:
    """What Remove will do, said before it is done (it deletes the keys' lines: there is no undo)."""
    where = "the demo" if backend.demo else f"`{backend.client.settings.keys_file}`"
    shown = ", ".join(key_ids[:5]) + (f" and {len(key_ids) - 5} more" if len(key_ids) > 5 else "")
    return f"Delete {shown} from {where} and take them out of rotation? There is no undo."


def remove_action(backend: Backend) -> Callable[[SmartClient, Sequence[str]], str]:
    """`remove` shaped like the Status page's other bulk actions (client, key ids) → message."""

    def action(_client: SmartClient, key_ids: Sequence[str]) -> str:
        try:
            return remove(backend, key_ids)
        except keys_file.KeysFileError as exc:
            return f"Keys not removed: {exc}"

    return action
