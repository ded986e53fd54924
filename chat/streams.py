"""Publishing a run's events: numbered, buffered for replay, then fanned out.

Every event of a run gets a `seq` (1, 2, 3, ...). It is appended to a short-lived buffer
(Redis when `REDIS_URL` is set, so any daphne process can replay it; process memory
otherwise) and then sent to the conversation's channel-layer group. A socket that opens the
conversation late, or reconnects, first joins the group, then replays the buffer, and drops
live events whose seq it has already sent: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

log = logging.getLogger(__name__)

# Long enough for a reconnect after a run ends; the database has everything after that.
FINISHED_TTL_SECONDS = 120
ACTIVE_TTL_SECONDS = 3600
# Queued events beyond which consecutive text deltas are merged before sending.
MERGE_BACKLOG = 16


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
        # A run resumed after an approval appends again: it is live, not finished.
        self._expires.pop(run_id, None)
        self._events.setdefault(run_id, []).append(event)

    async def read(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        self._sweep()
        return [e for e in self._events.get(run_id, []) if e["seq"] > after]

    async def finish(self, run_id: str) -> None:
        self._expires[run_id] = time.monotonic() + FINISHED_TTL_SECONDS

    async def send_stop(self, run_id: str) -> None:
        """Without Redis there is one process, and the run service stops its runs directly."""

    async def wait_for_stop(self, run_id: str) -> None:
        await asyncio.Event().wait()


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
            client = self._clients[loop] = redis.Redis.from_url(self.url, **settings.REDIS_ASYNC_OPTIONS)
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
        # The list is in seq order but need not start at 1: a run resumed after its buffer
        # expired (a long approval wait) starts a new list. Skip by the first stored seq.
        key = self._key(run_id)
        first = await self._client().lindex(key, 0)
        if first is None:
            return []
        start = max(after - json.loads(first)["seq"] + 1, 0)
        events = [json.loads(item) for item in await self._client().lrange(key, start, -1)]
        return [event for event in events if event["seq"] > after]

    async def finish(self, run_id: str) -> None:
        await self._client().expire(self._key(run_id), FINISHED_TTL_SECONDS)


    def _stop_channel(self, run_id: str) -> str:
        return f"agents-chat:run-stop:{run_id}"

    async def send_stop(self, run_id: str) -> None:
        await self._client().publish(self._stop_channel(run_id), "stop")

    async def wait_for_stop(self, run_id: str) -> None:
        """Return when another process asks this run to stop. A dedicated pub/sub
        connection: channels-redis multiplexes one receive loop per process, and a second
        long receiver on it delays the chat sockets' events."""
        while True:
            pubsub = self._client().pubsub()
            try:
                await pubsub.subscribe(self._stop_channel(run_id))
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: the heartbeat's DB flag covers the gap
                log.info("run %s: stop channel unavailable (%r); retrying", run_id, exc)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


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

    def __init__(self, *, conversation_id: str, run_id: str, group: str, last_seq: int = 0) -> None:
        self.conversation_id = conversation_id
        self.run_id = run_id
        self.group = group
        self.seq = last_seq
        self._buffer = event_buffer()
        self._failing = False
        self._pending: list[dict[str, Any]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task | None = None

    async def publish(self, event: dict[str, Any]) -> dict[str, Any]:
        """Queue `event` to be sent, in order, by this stream's sender task.

        The run never waits for Redis: it queues and goes on. One sender keeps the order even
        when tools publish progress while the run loop publishes its own events. When the
        sender falls more than MERGE_BACKLOG events behind, the text deltas queued meanwhile go
        out merged, so under load a socket gets fewer, larger deltas instead of an ever-growing
        delay (a normal stream never falls that far behind and goes out token by token). The
        returned dict gets its `seq` once sent."""
        event = {**event, "conversation": self.conversation_id, "run": self.run_id}
        self._pending.append(event)
        if self._idle.is_set():
            self._idle.clear()
            self._sender = asyncio.create_task(self._send_pending())
        return event

    async def flush(self) -> None:
        """Wait until every queued event is sent (before anything depends on `seq`)."""
        await self._idle.wait()

    async def _send_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                if len(batch) > MERGE_BACKLOG:
                    batch = _merge_deltas(batch)
                for item in batch:
                    self.seq += 1
                    item["seq"] = self.seq
                    await self._send(item)
        finally:
            self._idle.set()

    async def _send(self, event: dict[str, Any]) -> None:
        try:
            # Buffer first: a socket that joins between these two lines replays it from the buffer.
            await self._buffer.append(self.run_id, event)
            await send_to_conversation(self.group, event)
        except Exception as exc:
            # Redis down or restarting: live viewers miss events, but the run goes on and its
            # outcome is stored in the database, where a reload finds it.
            if not self._failing:
                log.warning("run %s: could not publish events (%r); continuing", self.run_id, exc)
            self._failing = True
        else:
            self._failing = False

    async def close(self) -> None:
        await self.flush()
        try:
            await self._buffer.finish(self.run_id)
        except Exception as exc:
            log.warning("run %s: could not expire its event buffer (%r)", self.run_id, exc)


def _merge_deltas(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for event in events:
        if event["type"] == "message.delta" and merged and merged[-1]["type"] == "message.delta":
            merged[-1] = {**merged[-1], "delta": merged[-1]["delta"] + event["delta"]}
        else:
            merged.append(event)
    return merged
