"""Progress notes from deep inside a run (a queued local model, a research manager's
phases) to whoever is streaming that run, without threading a callback through the SDK.

The run service installs a reporter for the duration of a run; the SDK copies the context
into its tasks, so code called by the Runner (models, tools, guardrails) can call `report`.
Outside a run, `report` does nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

Reporter = Callable[[str, dict[str, Any]], Awaitable[None]]

_reporter: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("agents_progress_reporter", default=None)


async def report(stage: str, **data: Any) -> None:
    """Tell the user what the run is doing now, e.g. `report("queued", position=2)`."""
    reporter = _reporter.get()
    if reporter is not None:
        await reporter(stage, data)


@contextlib.contextmanager
def reporting_to(reporter: Reporter) -> Iterator[None]:
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)
