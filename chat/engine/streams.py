"""Publishing a run's events: numbered, buffered for replay, then fanned out; and reaching a
run, wherever it executes, to stop it.

Every event of a run gets a `seq` (1, 2, 3, ...). It is appended to a short-lived buffer
(Redis when `REDIS_URL` is set, so any daphne process can replay it; process memory
otherwise) and then sent to the conversation's channel-layer group. A follower
(`chat.engine.follow`) that opens the conversation late, or reconnects, first joins the group, then
replays the buffer, and drops live events whose seq it already delivered: no gap, no duplicate.

The run never waits for any of this: `RunStream.publish` queues the event and one sender task
per run sends what has queued, in order, as one buffer write and one layer message however
many events it holds (under load a batch carries several; normally one).

Stop requests go through the channel layer too (`RunControl`): each process has one receiver
for the runs it executes, so no run holds a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from chat.wire import EVENTS_MESSAGE
from config import metrics

log = logging.getLogger(__name__)

# Long enough for a reconnect after a run ends; the database has everything after that.
FINISHED_TTL_SECONDS = 120
ACTIVE_TTL_SECONDS = 3600
# Queued events beyond which consecutive text deltas are merged before sending.
MERGE_BACKLOG = 16
# The channel-layer message carrying a batch of a run's events (consumers: `chat_events`).
STOP_MESSAGE = "run.stop"


class MemoryBuffer:
    def __init__(self) -> None:
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._expires: dict[str, float] = {}
        self._swept_at = 0.0

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < 1.0:
            return
        self._swept_at = now
        for run_id in [r for r, at in self._expires.items() if at < now]:
            self._events.pop(run_id, None)
            self._expires.pop(run_id, None)

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        # A run resumed after an approval appends again: it is live, not finished.
        self._expires.pop(run_id, None)
        self._events.setdefault(run_id, []).extend(events)
        metrics.replay_buffer_runs.set(len(self._events))

    async def read(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        """The run's events with seq > after, in seq order."""
        self._sweep()
        return [e for e in self._events.get(run_id, []) if e["seq"] > after]

    async def finish(self, run_id: str) -> None:
        self._expires[run_id] = time.monotonic() + FINISHED_TTL_SECONDS


class RedisBuffer:
    """A Redis list per run. Clients are per event loop (redis.asyncio binds to the loop), each
    with a bounded pool that waits for a free connection instead of failing (REDIS_POOL_*)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _client(self):
        import redis.asyncio as redis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            pool = redis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=settings.REDIS_POOL_SIZE,
                timeout=settings.REDIS_POOL_TIMEOUT,
                **settings.REDIS_ASYNC_OPTIONS,
            )
            client = self._clients[loop] = redis.Redis(connection_pool=pool)
            metrics.pools.redis_pools.append(pool)
        return client

    @staticmethod
    def _key(run_id: str) -> str:
        return f"agents-chat:run-events:{run_id}"

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        key = self._key(run_id)
        async with self._client().pipeline(transaction=False) as pipe:
            pipe.rpush(key, *(json.dumps(event) for event in events))
            pipe.expire(key, ACTIVE_TTL_SECONDS)
            await pipe.execute()

    async def read(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        """The run's events with seq > after, in seq order. The list need not start at seq 1: a
        run resumed after its buffer expired (a long approval wait) starts a new list."""
        key = self._key(run_id)
        first = await self._client().lindex(key, 0)
        if first is None:
            return []
        start = max(after - json.loads(first)["seq"] + 1, 0)
        events = [json.loads(item) for item in await self._client().lrange(key, start, -1)]
        return [event for event in events if event["seq"] > after]

    async def finish(self, run_id: str) -> None:
        await self._client().expire(self._key(run_id), FINISHED_TTL_SECONDS)


async def send_to_conversation(group: str, events: list[dict[str, Any]]) -> None:
    """Events to every follower of a conversation, in one layer message."""
    await get_channel_layer().group_send(group, {"type": EVENTS_MESSAGE, "events": events})


class RunStream:
    """The publisher for one run. Only the process executing the run holds one."""

    def __init__(self, *, conversation_id: str, run_id: str, group: str, buffer: MemoryBuffer | RedisBuffer, last_seq: int = 0) -> None:
        self.conversation_id = conversation_id
        self.run_id = run_id
        self.group = group
        self.seq = last_seq
        self._buffer = buffer
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
        out merged, so under load a follower gets fewer, larger deltas instead of an
        ever-growing delay (a normal stream never falls that far behind and goes out token by
        token). The returned dict gets its `seq` once sent."""
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
                await self._send(batch)
        finally:
            self._idle.set()

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        try:
            # Buffer first: a follower that joins between these two lines replays it from the buffer.
            await self._buffer.append(self.run_id, batch)
            await send_to_conversation(self.group, batch)
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


# --- Stopping a run from any process --------------------------------------------------------
def _stop_group(run_id: str) -> str:
    return f"run-stop.{run_id}"


class RunControl:
    """One channel-layer receiver per process for the runs it executes: `watch` a run while it
    executes here, `send_stop` from anywhere. With Redis pub/sub that is one subscription per
    run and one PUBLISH per stop, and no connection held per run."""

    def __init__(self) -> None:
        self._stops: dict[str, Callable[[], Awaitable[None] | None]] = {}
        self._channel: str | None = None
        self._receiver: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _ensure_receiver(self) -> None:
        loop = asyncio.get_running_loop()
        if self._receiver is not None and not self._receiver.done() and self._loop is loop:
            return
        self._loop = loop
        self._channel = await get_channel_layer().new_channel("run-control.")
        self._receiver = asyncio.create_task(self._receive(self._channel), name="run-control")

    async def _receive(self, channel: str) -> None:
        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the layer is down: the heartbeat's database flag covers it
                log.info("run control lost the channel layer (%r); retrying", exc)
                await asyncio.sleep(1)
                continue
            if message.get("type") != STOP_MESSAGE:
                continue
            stop = self._stops.get(message.get("run", ""))
            if stop is not None:
                result = stop()
                if asyncio.iscoroutine(result):
                    await result

    async def watch(self, run_id: str, stop: Callable[[], Awaitable[None] | None]) -> None:
        self._stops[run_id] = stop
        try:
            await self._ensure_receiver()
            await get_channel_layer().group_add(_stop_group(run_id), self._channel)
        except Exception as exc:
            log.warning("run %s: stop requests from other processes will come through the database (%r)", run_id, exc)

    async def unwatch(self, run_id: str) -> None:
        self._stops.pop(run_id, None)
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await get_channel_layer().group_discard(_stop_group(run_id), self._channel)

    async def send_stop(self, run_id: str) -> None:
        await get_channel_layer().group_send(_stop_group(run_id), {"type": STOP_MESSAGE, "run": run_id})

