"""What the installer's modules share: the error they raise and how they print progress."""

from __future__ import annotations

from collections.abc import Callable

Echo = Callable[[str], None]


class LocalModelError(RuntimeError):
    """The local model cannot be installed or loaded; the message says what to do."""


def print_line(message: str) -> None:
    print(message, flush=True)
