"""Operator dashboard for the LLM key rotation client: `streamlit run streamlit_app.py`.

Shared set-up runs here, once per run for every page (`dashboard.shell.main`): page config, the optional password
gate (before navigation, so no page runs while locked), the process-wide client, the demo banner, then the page,
routed explicitly with `st.navigation`. Pages are thin; their logic lives in the `dashboard` package.
"""

from dashboard import shell

shell.main()
