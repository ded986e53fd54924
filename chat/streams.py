"""Publishing a run's events: numbered, buffered for replay, then fanned out.

Every event of a run gets a `seq` (1, 2, 3, ...). It is appended to a short-lived buffer
(Redis when `REDIS_URL` is set, so any daphne process can replay it; process memory
otherwise) and then sent to the conversation's channel-layer group. A socket that opens the
conversation late, or reconnects, first joins the group, then replays the buffer, and drops
live events whose seq it has already sent: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

# Long enough for a reconnect after a run ends; the database has everything after that.
FINISHED_TTL_SECONDS = 120
ACTIVE_TTL_SECONDS = 3600


class MemoryBuffer:
    def __init__(self) -> None:
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._expires: dict[str, float] = {}

    def _sweep(self) -> None:
        now = time.monotonic()
        for run_id in [r for r, at in self._expires.items() if at < now]:
            self._events.pop(run_id, None)
            self._expires.pop(run_id, None)

    async def append(self, run_id: str, event: dict[str, Any]) -> None:
        self._events.setdefault(run_id, []).append(event)

    async def read(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        self._sweep()
        return [e for e in self._events.get(run_id, []) if e["seq"] > after]

    async def finish(self, run_id: str) -> None:
        self._expires[run_id] = time.monotonic() + FINISHED_TTL_SECONDS


class RedisBuffer:
    """A Redis list per run. Clients are per event loop: redis.asyncio binds to the loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _client(self):
        import redis.asyncio as redis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = redis.Redis.from_url(self.url)
        return client

    @staticmethod
    def _key(run_id: str) -> str:
        return f"agents-chat:run-events:{run_id}"

    async def append(self, run_id: str, event: dict[str, Any]) -> None:
        key = self._key(run_id)
        async with self._client().pipeline(transaction=False) as pipe:
            pipe.rpush(key, json.dumps(event))
            pipe.expire(key, ACTIVE_TTL_SECONDS)
            await pipe.execute()

    async def read(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        # seq n is stored at index n-1.
        raw = await self._client().lrange(self._key(run_id), after, -1)
        return [json.loads(item) for item in raw]

    async def finish(self, run_id: str) -> None:
        await self._client().expire(self._key(run_id), FINISHED_TTL_SECONDS)


_buffer: MemoryBuffer | RedisBuffer | None = None


def event_buffer() -> MemoryBuffer | RedisBuffer:
    global _buffer
    if _buffer is None:
        _buffer = RedisBuffer(settings.REDIS_URL) if settings.REDIS_URL else MemoryBuffer()
    return _buffer


async def send_to_conversation(group: str, event: dict[str, Any]) -> None:
    await get_channel_layer().group_send(group, {"type": "chat.event", "event": event})


class RunStream:
    """The publisher for one run. Only the process executing the run holds one."""

    def __init__(self, *, conversation_id: str, run_id: str, group: str) -> None:
        self.conversation_id = conversation_id
        self.run_id = run_id
        self.group = group
        self.seq = 0
        self._buffer = event_buffer()

    async def publish(self, event: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        event = {**event, "conversation": self.conversation_id, "run": self.run_id, "seq": self.seq}
        # Buffer first: a socket that joins between these two lines replays it from the buffer.
        await self._buffer.append(self.run_id, event)
        await send_to_conversation(self.group, event)
        return event

    async def close(self) -> None:
        await self._buffer.finish(self.run_id)
