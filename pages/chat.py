"""Chat page: talk to whichever key of whichever provider can answer, and see who answered and what was skipped."""

import streamlit as st

from dashboard import chat, chat_view, fallback, shell
from dashboard.client import get_client
from dashboard.text import md_escape

shell.ensure()
client = get_client()
options = chat.options_sidebar([name for name, _ in client.models()])

st.title("Chat")
chat_view.fit_badges()
st.caption("Each answer names the provider, model and key that produced it, and the keys skipped on the way.")

turns = chat.history()
for turn in turns:
    chat_view.render_turn(turn)

prompt, rejected = chat.user_turn(st.chat_input("Message", accept_file=True, file_type=chat.IMAGE_TYPES))
if rejected:
    names = md_escape(", ".join(rejected))
    st.warning(f"Not a readable image, left out: {names}", icon=":material/broken_image:")
wait = chat.take_retry(turns)
if prompt is not None:
    turns.append(prompt)
    chat_view.render_turn(prompt)
    wait = None  # a new message answers the new message, not the retry
if prompt is not None or wait is not None:
    messages = chat.build_messages(turns, options.system_prompt)
    with st.chat_message("assistant"):
        trail_slot, text_slot, details = chat_view.answer_slots()  # where the history draws it on the next run
        trail = fallback.Trail(client, wait, holder=trail_slot)
        answer = chat.stream_answer(
            client,
            messages,
            options,
            lambda pieces: chat_view.write_safely(pieces, text_slot),
            keep=turns.append,
            wait=wait,
            trail=trail,
        )
        with details:
            chat_view.render_details(answer)
chat.retry_button(turns)
