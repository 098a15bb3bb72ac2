"""The Streamlit operator dashboard's logic, kept out of the page scripts so it can be imported and tested.

`shell` is the setup every page needs (page config, gate, client, demo banner), `client` holds the one
`SmartClient` per process (and the demo simulator), `auth` the optional password gate, `chat` the chat history
and streaming, `status` the key table and provider summaries (`key_actions` what its buttons do,
`table_selection` which rows are ticked), `text` the shared wording.
"""
