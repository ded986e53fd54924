"""The in-memory channel layer, made to scale with the number of sockets of one process.

Channels' `InMemoryChannelLayer` scans every channel and group for expired entries on every
`receive` and `group_send`, starts a task per member for each `group_send`, and deep-copies
every message: with a few hundred sockets each streaming tokens, that is quadratic work on the
event loop (the largest single cost in the load benchmark). This subclass keeps its semantics
(capacity, expiry, groups) but cleans expired entries at most once per `CLEAN_EVERY_SECONDS`,
delivers a group message inline (sends never block: the queue is full or it is not), and
shares one copy of a message between its receivers (messages are never mutated after sending
in this project; a receiver that wants to change one copies it).

Production (several processes) uses channels-redis; this is the development and test layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

CLEAN_EVERY_SECONDS = 1.0


class LocalChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._cleaned_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < CLEAN_EVERY_SECONDS:
            return
        self._cleaned_at = now
        super()._clean_expired()

    def _put(self, channel: str, message: dict) -> None:
        queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        try:
            queue.put_nowait((time.time() + self.expiry, message))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def send(self, channel: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        self._put(channel, dict(message))

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        shared = dict(message)
        for channel in list(self.groups.get(group, {})):
            # Like channels': a full receiver misses it (our followers refill from the buffer).
            with contextlib.suppress(ChannelFull):
                self._put(channel, shared)
