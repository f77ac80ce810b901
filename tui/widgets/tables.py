"""Filling a DataTable in one go, with column widths taken from the data; a metric's cell.

Tables here are filled from worker results. Setting each column's width from its cells (instead of
leaving DataTable to measure them when it next goes idle) makes the first frame after the data
arrives right, whatever the timing.
"""
from __future__ import annotations

from typing import Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable

from pipeline.estimates import Estimate
from pipeline.metric_facts import DASH, metric_cell

MAX_COLUMN_WIDTH = 160


def estimate_text(metric: str, estimate: Estimate | None, spread: bool = True) -> Text:
    """``0.433 ±0.08``: the value and (``spread``) half the width of its interval, in the metric's decimals."""
    cell = metric_cell(metric, estimate)
    if cell is None:
        return Text(DASH, style="dim")
    text = Text(cell.value)
    if spread and cell.spread:
        text.append(f" {cell.spread}", style="dim")
    return text


def _width(cell: object) -> int:
    if isinstance(cell, Text):
        return cell.cell_len
    return max((cell_len(line) for line in str(cell).splitlines()), default=0)


def fill_table(table: DataTable, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[object]],
               keys: Sequence[str] | None = None, *, keep_cursor: bool = True) -> None:
    """Replace ``table``'s columns (``(key, label)`` pairs) and rows; ``keys`` name the rows."""
    widths = [_width(label) for _, label in columns]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], _width(cell))
    row = table.cursor_row
    table.clear(columns=True)
    for (key, label), width in zip(columns, widths):
        table.add_column(label, key=key, width=min(width, MAX_COLUMN_WIDTH))
    if keys is None:
        table.add_rows(rows)
    else:
        for cells, key in zip(rows, keys):
            table.add_row(*cells, key=key)
    if keep_cursor and rows:
        table.move_cursor(row=min(max(row, 0), len(rows) - 1))
