"""How a chat turn is drawn: its text made safe as it streams, then the tool calls, badges, errors and attempts
under an answer.

The chat page draws a turn twice, once while it streams and once from the history on the next run, in the same
places (`answer_slots`), so nothing of it shows twice. Kept apart from `dashboard.chat`, which holds the turns and
gets the answer: what is kept and sent back to the model is decided there, how it looks here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.chat import Turn
from dashboard.text import kind_word, md_escape, safe_markdown
from llms import Attempt, client_time


def write_safely(pieces: Iterator[str], placeholder: Any = None) -> str:
    """Like `st.write_stream`, but the text so far is made safe (`safe_markdown`) each time it is redrawn, so an
    image or link split across pieces is caught as well. `placeholder`: the `st.empty()` to write into (the
    text slot of `answer_slots`); a new one by default."""
    placeholder = placeholder if placeholder is not None else st.empty()
    text = ""
    for piece in pieces:
        text += piece
        placeholder.markdown(safe_markdown(text) + " ▌")
    placeholder.markdown(safe_markdown(text))
    return text


def attempts_frame(attempts: Iterable[Attempt]) -> pd.DataFrame:
    rows = [
        {"Key": a.key_id, "Outcome": kind_word(a.kind, a.status), "HTTP": a.status, "Message": a.message}
        for a in attempts
    ]
    frame = pd.DataFrame(rows, columns=["Key", "Outcome", "HTTP", "Message"])
    return frame.astype({"HTTP": "Int64"})


def render_tool_calls(calls: Sequence[dict[str, Any]]) -> None:
    """Each tool call an answer asked for: the function's name and its arguments as JSON."""
    for call in calls:
        function = call.get("function") or {}
        st.markdown(f":blue-badge[:material/build: tool call] **{md_escape(str(function.get('name', '?')))}**")
        try:
            arguments = json.dumps(json.loads(function.get("arguments") or "{}"), indent=2, ensure_ascii=False)
        except ValueError:
            arguments = str(function.get("arguments"))
        st.code(arguments, language="json")


BADGE_STYLE = """<style>
[data-testid="stChatMessage"] span.stMarkdownBadge { white-space: normal !important; text-overflow: clip !important; }
</style>"""
"""Streamlit draws a badge on one line and cuts it with "…" at the bubble's edge: on a phone that hid the fallback
badge's cause and countdown. Under an answer, a badge wraps to the bubble's width instead."""


def fit_badges() -> None:
    """Once per run of the chat page: `st.html` with only a style draws nothing and takes no space."""
    st.html(BADGE_STYLE)


def render_details(turn: Turn) -> None:
    """Tool calls, fallback badge, caption, warnings and the attempts expander (more than one attempt) under an
    answer."""
    if turn.tool_calls:
        render_tool_calls(turn.tool_calls)
    badges = []
    if turn.fallback is not None:
        badges.append(f":orange-badge[:material/alt_route: {md_escape(turn.fallback.label(client_time()))}]")
    if turn.answered_by:
        badges.append(f":blue-badge[:material/key: {md_escape(turn.answered_by)}]")
    if badges:
        st.markdown(" ".join(badges))
    if turn.error:
        icon = ":material/hourglass_top:" if "cooling" in turn.error else ":material/error:"
        st.error(safe_markdown(turn.error), icon=icon)
    if turn.warning:
        st.warning(safe_markdown(turn.warning), icon=":material/warning:")
    if turn.caption:
        st.caption(md_escape(turn.caption))
    if len(turn.attempts) > 1:
        label = f"{len(turn.attempts)} attempt{'s' if len(turn.attempts) != 1 else ''}"
        with st.expander(label, icon=":material/route:"):
            st.dataframe(attempts_frame(turn.attempts), hide_index=True, width="stretch")


def answer_slots() -> tuple[Any, Any, Any]:
    """The places of an answer's parts in its bubble: the live trail, the text, and what goes under it.

    While a run draws, the elements of the last run that it has not drawn over yet stay on screen, faded, until
    it ends. An answer streamed in one run is drawn from the history in the next, while the next answer streams:
    both draw it in these same places, so nothing of it is left over to show twice (its caption, or the error box
    while a retry waits). Call inside the bubble; the trail's slot stays empty when redrawn from the history.
    """
    return st.empty(), st.empty(), st.container()


def render_turn(turn: Turn) -> None:
    with st.chat_message(turn.role):
        if turn.role == "assistant":
            _trail, text, details = answer_slots()
            if turn.text:
                text.markdown(safe_markdown(turn.text))
            with details:
                render_details(turn)
            return
        if turn.images:
            st.image([image.data for image in turn.images], width=240)
        if turn.text:
            st.markdown(safe_markdown(turn.text))
        if turn.warning:
            st.caption(f":material/broken_image: {md_escape(turn.warning)}")
