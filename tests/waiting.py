"""Waiting for a condition instead of sleeping: tests pass on a loaded 2-core machine."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(condition: Callable[[], Any | Awaitable[Any]], *, timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll `condition` (sync or async) until it returns something truthy; return that. Fails
    the test after `timeout` seconds, naming what it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await asyncio.sleep(interval)
