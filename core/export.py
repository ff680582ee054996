"""CSV export that a spreadsheet can open safely.

A cell starting with ``=``, ``+``, ``-``, ``@`` (or a tab / carriage return, which some
spreadsheets strip before looking) is read as a formula by Excel, LibreOffice and Google
Sheets: a user id like ``=HYPERLINK(...)`` would run on the analyst's machine (OWASP "CSV
Injection"). Text cells that start so get a leading apostrophe; numbers are left alone, so a
negative revenue stays a number.
"""

from __future__ import annotations

import pandas as pd

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and column names cannot start a formula."""
    safe = frame.copy()
    for column in safe.columns:
        series = safe[column]
        if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
            safe[column] = series.map(neutralise_cell).astype(object)
    safe.columns = [neutralise_cell(str(name)) for name in safe.columns]
    return safe


def to_safe_csv(frame: pd.DataFrame) -> str:
    """The CSV text of ``frame`` with formula injection neutralised (no index column)."""
    return neutralise_formulas(frame).to_csv(index=False)
