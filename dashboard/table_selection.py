"""The status table's selection, kept by key id across refreshes, in the session.

Its own module because the browser's grid keeps a selection of its own, by row position, which it never takes
from Python: the ids are read from the grid before the table is drawn, and a grid whose rows moved is replaced by
a fresh one that starts from the chosen keys (`table_widget`). The page (`pages/status.py`) reads and clears the
selection here; the key table itself is `dashboard.status`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dashboard.status import Row


class SessionState(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def __setitem__(self, key: str, value: Any) -> None: ...


TABLE_KEY = "status_keys"
"""The key table's widget key is this and a generation, `status_keys_3`: see `table_widget`."""
_SELECTED = "status_selected_ids"
_SHOWN = "status_shown_ids"
_HELD = "status_grid_rows"
_GENERATION = "status_table_generation"


def table_key(state: SessionState) -> str:
    """The key table's widget key now. A new one is a new grid in the browser, holding nothing of its own."""
    return f"{TABLE_KEY}_{state.get(_GENERATION, 0)}"


def selected_ids(state: SessionState) -> list[str]:
    """The key ids selected, read before the table is drawn. The selection is kept by id; the grid reports row
    positions in the table as it last drew it, which are turned into ids at once (the next refresh may show
    other rows: a key recovered, the filter changed)."""
    value = state.get(table_key(state))
    if value is None:  # a grid not drawn yet under this key (new, or the page was left): it holds nothing
        state[_HELD] = None
        return list(state.get(_SELECTED) or [])
    shown: list[str] = state.get(_SHOWN) or []
    held = sorted(i for i in (value.get("selection") or {}).get("rows") or () if 0 <= i < len(shown))
    state[_HELD] = held
    state[_SELECTED] = [shown[i] for i in held]
    return state[_SELECTED]


def table_widget(state: SessionState, rows: Sequence[Row], chosen: Sequence[str]) -> tuple[str, dict[str, Any] | None]:
    """The key and the initial selection to draw the table with, so that the grid ticks exactly the chosen keys.

    The browser's grid keeps its own selection by row position and never takes one set from Python as its own
    (Streamlit draws such a selection, but the grid sends back what it held before with the next rerun). So
    the selection is never set on a drawn grid: when the chosen keys would sit at other positions than the grid
    holds (rows moved, or the page cleared the selection), the table gets a fresh key, a grid of its own that
    starts from `selection_default`. Otherwise the key stays, and with it the grid's scroll and sort.
    """
    ids = [r.key.key_id for r in rows]
    where = {key_id: i for i, key_id in enumerate(ids)}
    positions = sorted(where[k] for k in chosen if k in where)
    held = state.get(_HELD)
    if held is not None and held != positions:
        state[_GENERATION] = state.get(_GENERATION, 0) + 1
        held = None
    state[_HELD] = positions
    state[_SHOWN] = ids
    state[_SELECTED] = [ids[i] for i in positions]
    default = {"selection": {"rows": positions, "columns": [], "cells": []}} if held is None and positions else None
    return table_key(state), default


def clear_selection(state: SessionState) -> None:
    """After a bulk action: nothing selected, and a fresh grid, so a second click cannot repeat the action."""
    state[_SELECTED] = []
    state[_HELD] = None
    state[_GENERATION] = state.get(_GENERATION, 0) + 1
