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
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

PASSWORD_VAR = "DASHBOARD_PASSWORD"
_UNLOCKED = "auth_unlocked"
_FAILED = "auth_failed"
_ENTERED = "auth_password"


def configured_password() -> str | None:
    """The password from the environment, else from `st.secrets`; None when the dashboard is open."""
    value = os.environ.get(PASSWORD_VAR, "").strip()
    # load_if_toml_exists: a missing secrets file is normal here and must not print an error on the page.
    if not value and st.secrets.load_if_toml_exists():
        value = str(st.secrets.get(PASSWORD_VAR, "") or "").strip()
    return value or None


def is_unlocked() -> bool:
    return configured_password() is None or bool(st.session_state.get(_UNLOCKED))


def _check() -> None:
    entered = str(st.session_state.pop(_ENTERED, "") or "")
    password = configured_password() or ""
    ok = bool(password) and hmac.compare_digest(entered.encode(), password.encode())
    st.session_state[_UNLOCKED] = ok
    st.session_state[_FAILED] = not ok


def login_page() -> None:
    """The only page a locked session can reach."""
    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        st.title("LLM key dashboard", anchor=False)
        with st.form("login", border=True):
            st.text_input("Password", type="password", key=_ENTERED)
            st.form_submit_button("Unlock", icon=":material/lock_open:", on_click=_check, type="primary")
        if st.session_state.get(_FAILED):
            st.error("Wrong password.", icon=":material/lock:")
