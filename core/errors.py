"""The one exception type for problems a user can fix.

Raised anywhere in ``core``; caught at the edges: the CLI prints one line and exits with
code 2, a page shows ``st.error``. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class TenureError(Exception):
    """A problem with the user's input, named precisely, with what to do about it.

    Args:
        message: what is wrong, naming the file, row, column or parameter.
        hint: what the user can do about it (optional).
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
