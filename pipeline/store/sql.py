"""Small SQL helpers the store's repositories share: id lists as one JSON parameter, optional filters, float
lists as exact JSON, estimates and paired differences as columns, and a rollback that never hides the error that caused it."""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Sequence

from pipeline.estimates import Difference, Estimate


def rollback(conn: sqlite3.Connection, *statements: str) -> None:
    """Undo an open transaction; a failure here (the disk is gone) must not hide the error that caused it."""
    try:
        for statement in statements:
            if conn.in_transaction:
                conn.execute(statement)
    except sqlite3.Error:
        pass


def json_list(values: Sequence[float] | None) -> str | None:
    """A list of floats as JSON text (exact: Python writes the shortest repr that reads back the same)."""
    return None if values is None else json.dumps([float(v) for v in values])


def from_json_list(text: str | None) -> tuple[float, ...] | None:
    return None if text is None else tuple(json.loads(text))     # written as floats, read back as floats


def in_list(column: str, values: Sequence[str]) -> tuple[str, str]:
    """(``column IN (...)`` over one JSON parameter, the parameter): SQLite looks the values up in the column's
    index, so reading a batch's rows costs the batch, not the table (any number of values, one parameter)."""
    return f"{column} IN (SELECT value FROM json_each(?))", json.dumps(list(values))


def and_in(sql: str, args: list[Any], column: str, values: Sequence[str] | None) -> tuple[str, list[Any]]:
    """``sql`` with `` AND column IN (...)`` (``in_list``) when ``values`` is not None."""
    if values is not None:
        clause, arg = in_list(column, values)
        sql += f" AND {clause}"
        args.append(arg)
    return sql, args


def and_equal(sql: str, args: list[Any], **filters: Any) -> tuple[str, list[Any]]:
    """``sql`` with `` AND column=?`` for each filter that is not None (column names are the keywords)."""
    for column, value in filters.items():
        if value is not None:
            sql += f" AND {column}=?"
            args.append(value)
    return sql, args


def estimate_columns(e: Estimate) -> tuple[float | None, float | None, float | None]:
    """value, ci_low, ci_high (NaN as NULL)."""
    e = e.stored()
    return e.value, e.low, e.high


def difference_columns(d: Difference | None) -> tuple[float | None, float | None, float | None, float | None]:
    """diff, diff_ci_low, diff_ci_high, p_value (NULL: no paired test)."""
    d = d.stored() if d is not None else Difference(None, None, None, None)
    return d.diff, d.low, d.high, d.p


def stored_difference(baseline: str | None, columns: Sequence[Any]) -> Difference | None:
    """The paired test of a stored metric: None where there is no baseline."""
    return Difference(*columns) if baseline is not None else None
