"""A toolbar whose groups of controls wrap onto another row where the window is too narrow for one.

Tk's ``pack`` squeezes what does not fit and cuts it off: at Tk scaling 2.0 on a 1280-pixel screen
the toolbar asked 1526 pixels and *Model card…* was gone. Here each group keeps its requested size;
a group that would pass the right edge starts a new row, and the bar grows to hold its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tkinter as tk

__all__ = ["flow", "flow_rows"]


def flow_rows(widths: Sequence[int], room: int, gap: int) -> list[list[int]]:
    """The indices of ``widths`` on each row, in order, a row as full as ``room`` allows (a group
    wider than ``room`` has a row of its own)."""
    rows: list[list[int]] = []
    used = 0
    for i, width in enumerate(widths):
        if rows and used + gap + width <= room:
            rows[-1].append(i)
            used += gap + width
        else:
            rows.append([i])
            used = width
    return rows


def flow(bar: tk.Misc, groups: Sequence[tk.Misc], *, gap: int = 12, pad: tuple[int, int] = (6, 4)) -> None:
    """Place ``groups`` (children of ``bar``, made in the order Tab visits them) left to right in
    rows, the last group at the right edge of its row, and keep ``bar`` as tall as its rows."""
    placed: list[object] = []

    def layout(_event: object = None) -> None:
        room = bar.winfo_width() - 2 * pad[0]
        if room <= 1:
            return
        widths = [g.winfo_reqwidth() for g in groups]
        heights = [g.winfo_reqheight() for g in groups]
        rows = flow_rows(widths, room, gap)
        plan = []
        y = pad[1]
        for row in rows:
            x = pad[0]
            for i in row:
                right = i == len(groups) - 1
                plan.append((i, pad[0] + room - widths[i] if right else x, y))
                x += widths[i] + gap
            y += max(heights[i] for i in row) + pad[1]
        key = (tuple(plan), y)
        if placed and placed[0] == key:  # unchanged: placing again would only fire <Configure> again
            return
        placed[:] = [key]
        for i, x, top in plan:
            groups[i].place(x=x, y=top)
        bar.configure(height=y)

    bar.bind("<Configure>", layout, add="+")
    for group in groups:  # a group's size changes (the operating point's, once the model is loaded)
        group.bind("<Configure>", layout, add="+")
