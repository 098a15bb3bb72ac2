"""Optional password gate for the whole dashboard.

Set `DASHBOARD_PASSWORD` in the environment or in `.streamlit/secrets.toml`; when it is set, every session must
enter it once (compared with `hmac.compare_digest`) before any page runs. Without it the dashboard is open, which
is fine on localhost.

For teams, prefer single sign-on with Streamlit's built-in OIDC login instead of a shared password. Put an
`[auth]` section in `.streamlit/secrets.toml` and install `Authlib>=1.3.2`:

    [auth]
    redirect_uri = "https://dashboard.example.com/oauth2callback"
    cookie_secret = "a long random string"
    client_id = "…"
    client_secret = "…"
    server_metadata_url = "https://accounts.google.com/.well-known/openid-configuration"

then, in `streamlit_app.py` in place of the password gate:

    if not st.user.is_logged_in:
        st.button("Log in", on_click=st.login)
        st.stop()
    # optionally: if st.user.email not in ALLOWED: st.error("Not allowed"); st.stop()

Who acted (`operator()`): the OIDC user's name or email, or the optional name typed at the password prompt; the
Status page's buttons pass it to the client (`by=`), so events and incidents name the operator.
"""

from __future__ import annotations

import hmac
import math
import os
import threading
import time

import streamlit as st

PASSWORD_VAR = "DASHBOARD_PASSWORD"
_UNLOCKED = "auth_unlocked"
_FAILED = "auth_failed"
_ENTERED = "auth_password"
_SESSION = "auth_session_id"
_NAME_ENTERED = "auth_name"
_NAME = "auth_operator"
NAME_LENGTH = 40
MAX_DELAY = 60.0


class Throttle:
    """Wrong passwords make the next attempt wait: 1 s, 2 s, 4 s … up to a minute, per session and per client
    address (so opening new sessions does not reset it). Attempts during the wait are refused unchecked."""

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait(self, *who: str) -> float:
        """Seconds before `who` may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            return max([0.0, *(self._failures.get(w, (0, 0.0))[1] - now for w in who)])

    def failed(self, *who: str) -> None:
        now = time.monotonic()
        with self._lock:
            for w in who:
                count = self._failures.get(w, (0, 0.0))[0] + 1
                self._failures[w] = (count, now + min(MAX_DELAY, 2.0 ** (count - 1)))

    def passed(self, *who: str) -> None:
        with self._lock:
            for w in who:
                self._failures.pop(w, None)


THROTTLE = Throttle()


def configured_password() -> str | None:
    """The password from the environment, else from `st.secrets`; None when the dashboard is open."""
    value = os.environ.get(PASSWORD_VAR, "").strip()
    # load_if_toml_exists: a missing secrets file is normal here and must not print an error on the page.
    if not value and st.secrets.load_if_toml_exists():
        value = str(st.secrets.get(PASSWORD_VAR, "") or "").strip()
    return value or None


def is_unlocked() -> bool:
    return configured_password() is None or bool(st.session_state.get(_UNLOCKED))


def _who() -> tuple[str, ...]:
    session = st.session_state.setdefault(_SESSION, os.urandom(8).hex())
    address = getattr(st.context, "ip_address", None)
    return (f"session:{session}", f"address:{address}") if address else (f"session:{session}",)


def _check() -> None:
    entered = str(st.session_state.pop(_ENTERED, "") or "")
    who = _who()
    if THROTTLE.wait(*who) > 0:
        st.session_state[_FAILED] = "wait"
        return
    password = configured_password() or ""
    ok = bool(password) and hmac.compare_digest(entered.encode(), password.encode())
    st.session_state[_UNLOCKED] = ok
    st.session_state[_FAILED] = "" if ok else "wrong"
    if ok:
        THROTTLE.passed(*who)
        st.session_state[_NAME] = clean_name(st.session_state.pop(_NAME_ENTERED, ""))
    else:
        THROTTLE.failed(*who)


def clean_name(value: object) -> str:
    """A typed name as events and alerts show it: printable, one line, at most `NAME_LENGTH` characters."""
    return " ".join("".join(c for c in str(value or "") if c.isprintable()).split())[:NAME_LENGTH]


def operator() -> str | None:
    """Who acts from this session, for events and incidents ("disabled by alice" rather than "by an operator"):
    the OIDC user's name or email when Streamlit's login is configured and used, else the name typed at the
    password prompt; None on an open dashboard or when no name was given."""
    try:
        user = st.user
        if user.get("is_logged_in"):
            return clean_name(user.get("name") or user.get("email")) or None
    except Exception:  # no [auth] section, or a Streamlit without st.user: fall back to the typed name
        pass
    if configured_password() is None:
        return None
    return st.session_state.get(_NAME) or None


def acting() -> str:
    """Who acts from this session, for an action a person took even on an open dashboard: `operator()`, else
    "an operator" (so the client does not read it as the keys file changing by itself)."""
    return operator() or "an operator"


def log_out() -> None:
    st.session_state[_UNLOCKED] = False
    st.session_state[_FAILED] = ""


def logout_button() -> None:
    """In the sidebar, when a password protects the dashboard."""
    if configured_password() is not None:
        st.sidebar.button("Log out", icon=":material/logout:", on_click=log_out, width="stretch")


def login_page() -> None:
    """The only page a locked session can reach."""
    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        st.title("LLM key dashboard", anchor=False)
        with st.form("login", border=True):
            st.text_input("Password", type="password", key=_ENTERED)
            st.text_input(
                "Your name (optional)",
                key=_NAME_ENTERED,
                max_chars=NAME_LENGTH,
                help="Named in events and alerts as who acted (“disabled by alice”) instead of “an operator”.",
            )
            st.form_submit_button("Unlock", icon=":material/lock_open:", on_click=_check, type="primary")
        failed = st.session_state.get(_FAILED)
        wait = THROTTLE.wait(*_who())
        if failed == "wrong":
            later = f" Try again in {math.ceil(wait)} s." if wait > 0 else ""
            st.error(f"Wrong password.{later}", icon=":material/lock:")
        elif failed == "wait":
            st.error(f"Too many wrong passwords: try again in {max(1, math.ceil(wait))} s.", icon=":material/timer:")
