"""Stacked bar charts whose legend always fits: on the History page, a key's page and the Status page.

`st.bar_chart` lays its legend out in one row under the plot, starting at the plot's left edge: on a phone, and in
the Status page's narrow columns, "Other errors" (or the fourth provider) was cut off at the chart's edge. Here the
legend wraps into as many columns as the chart's width holds (a Vega expression on the live width, so it follows a
resize or a rotated phone), and the rest is what `st.bar_chart` drew: stacked bars, the series' colours in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

LEGEND_COLUMN = 120
"""Pixels one legend entry may take ("Rate-limited" or "OpenRouter" with its swatch, and a gap): the legend has
as many columns as the chart's width holds of these, at least one."""
VALUE = "Requests"
SERIES = "Series"


def legend() -> alt.Legend:
    """Under the plot, wrapping: `columns` is recomputed from the chart's width (`width` signal) on every resize."""
    return alt.Legend(
        title=None,
        orient="bottom",
        direction="horizontal",
        columns=alt.ExprRef(f"max(1, floor(width / {LEGEND_COLUMN}))"),
        labelLimit=LEGEND_COLUMN,
    )


def stacked_bars(
    frame: pd.DataFrame,
    *,
    colors: Sequence[str] | None = None,
    horizontal: bool = False,
    y_label: str | None = None,
    height: int = 280,
) -> alt.Chart:
    """`frame`: one row per bar (its index: hours as datetimes, or key ids), one column per stacked series, in
    the order stacked and listed. Hours get one bar per clock hour; key ids keep the frame's order (busiest
    first). `colors`: one per series (None: the theme's)."""
    index = frame.index.name or "index"
    series = [str(column) for column in frame.columns]
    long = frame.reset_index().melt(id_vars=index, var_name=SERIES, value_name=VALUE)
    long["order"] = long[SERIES].map({name: i for i, name in enumerate(series)})
    scale = alt.Scale(domain=series, range=list(colors)) if colors else alt.Scale(domain=series)
    color = alt.Color(f"{SERIES}:N", scale=scale, sort=series, legend=legend())
    bars: dict[str, Any] = {"title": None}
    if pd.api.types.is_datetime64_any_dtype(long[index]):
        field = f"yearmonthdatehours({index}):T"  # a bar as wide as its hour
        days = len(frame) > 0 and frame.index.max() - frame.index.min() > pd.Timedelta(hours=36)
        bars["axis"] = alt.Axis(format="%b %d" if days else "%H:%M", labelOverlap=True)
    else:
        field = f"{index}:N"
        bars["sort"] = [str(i) for i in frame.index]
        bars["axis"] = alt.Axis(labelOverlap=False)  # every key named: the theme thinned them to every other
    amount = {"stack": True, "title": y_label, "axis": alt.Axis(tickMinStep=1, format="d")}  # requests are whole
    if horizontal:
        encoding = {"y": alt.Y(field, **bars), "x": alt.X(f"{VALUE}:Q", **amount)}
    else:
        encoding = {"x": alt.X(field, **bars), "y": alt.Y(f"{VALUE}:Q", **amount)}
    tip = alt.Tooltip(field, title=index)
    return (
        alt.Chart(long, height=height)
        .mark_bar()
        .encode(
            color=color,
            order=alt.Order("order:Q"),
            tooltip=[tip, alt.Tooltip(f"{SERIES}:N"), alt.Tooltip(f"{VALUE}:Q")],
            **encoding,
        )
    )


def show(chart: alt.Chart) -> None:
    """Drawn at the container's width, in the app's theme (light or dark, as `st.bar_chart` is)."""
    st.altair_chart(chart, width="stretch")
