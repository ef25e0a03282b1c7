"""The one exception type for mistakes a user can fix.

Every reader and checker raises :class:`InputError` with a message that names the file, says
what is wrong and what to do. The CLI prints it as one line and exits non-zero; library users
catch it like any ``ValueError``.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """A problem with a user's file, option or request, explained in one sentence."""


def describe(path: str | os.PathLike) -> str:
    """Return ``'name'`` quoted for messages (the path as the user gave it)."""
    return f"'{os.fspath(path)}'"
