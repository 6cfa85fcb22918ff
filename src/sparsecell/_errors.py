"""The one exception type users see, and the formatting rule for it."""

from __future__ import annotations


class SparsecellError(ValueError):
    """A problem with the user's input or settings, explained for a human.

    The message follows ``<what is wrong> (<how to fix>)``; the CLI prints it as
    ``sparsecell: error: <message>`` and exits with code 2.
    """

    def __init__(self, what: str, fix: str | None = None) -> None:
        msg = what if fix is None else f"{what} ({fix})"
        super().__init__(msg)
