"""Operator dashboard for the LLM key rotation client: `streamlit run streamlit_app.py`.

Shared setup lives here, once per run for every page: page config, the optional password gate (before
navigation, so no page runs while locked), the process-wide client, and the demo-mode banner. Pages are routed
explicitly with `st.navigation`; their logic lives in the `dashboard` package.
"""

import streamlit as st

from dashboard import auth, shell

shell.configure_page()

if not auth.is_unlocked():
    st.navigation([st.Page(auth.login_page, title="Log in", icon=":material/lock:")], position="hidden").run()
    st.stop()

shell.banner(shell.start())
auth.logout_button()

with shell.routed():
    st.navigation(
        [
            st.Page("pages/chat.py", title="Chat", icon=":material/chat:", default=True),
            st.Page("pages/status.py", title="Status", icon=":material/monitor_heart:"),
        ]
    ).run()
