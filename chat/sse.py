"""Following one run over Server-Sent Events, with the socket's own event dicts.

There is no second mapper: `RunFollower` joins the conversation's channel-layer group (like a
socket or the terminal chat), replays the run's buffered events (`chat.streams.event_buffer`),
then forwards live ones, dropping any seq it already sent: no gap, no duplicate. A seq that
skips ahead (a live event lost by the channel layer) is filled from the buffer first.

The stream ends after `run.finished`, or `run.paused` (a tool call waits for approval), or
when the run is found to have ended without telling anyone (its process died). Every
`KEEPALIVE_SECONDS` without an event a comment line keeps proxies from closing the connection,
and the run's state is checked in the database.

Following never owns the run: when the client goes away the generator is closed (Django's ASGI
handler cancels and `aclose`s it), the follower leaves the group, and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from chat.models import Run
from chat.streams import event_buffer

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
KEEPALIVE = ": keep-alive\n\n"
END_OF_RUN = ("run.finished", "run.paused")
CLOSE_MESSAGE = "sse.close"


def sse_message(event: dict[str, Any]) -> str:
    """One SSE message: `id` is the event's seq (numbered events only), `event` its type,
    `data` the event itself as one line of JSON (JSON escapes every newline)."""
    lines = [f"id: {event['seq']}"] if isinstance(event.get("seq"), int) else []
    lines.append(f"event: {event['type']}")
    lines.append("data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


async def buffered_events(run_id: str, *, after: int) -> list[dict[str, Any]]:
    """The run's buffered events with seq > after, in seq order. Reads the whole buffer and
    filters by seq instead of trusting list positions (a run resumed after its buffer expired
    starts a new list whose first seq is not 1)."""
    events = await event_buffer().read(run_id)
    return sorted((e for e in events if isinstance(e.get("seq"), int) and e["seq"] > after), key=lambda e: e["seq"])


async def run_is_alive(run_id: str) -> bool:
    """Active, and (unless parked for an approval) still beating."""
    run = await Run.objects.filter(public_id=run_id).only("status", "heartbeat_at").afirst()
    if run is None or not run.is_active:
        return False
    if run.status == Run.Status.AWAITING_APPROVAL:
        return True
    return run.heartbeat_at >= timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS)


class RunFollower:
    """Subscribe (before the run starts, or before replaying), then `stream()` one run."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.run_id: str | None = None
        self.sent = 0
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.channel: str | None = None
        self._pump: asyncio.Task | None = None

    async def subscribe(self) -> None:
        layer = get_channel_layer()
        self.channel = await layer.new_channel("api-sse.")
        await layer.group_add(self.group, self.channel)
        # One receiver for the follower's whole life: cancelling a pending `receive` on every
        # keep-alive could lose a message; cancelling an `asyncio.Queue.get` cannot.
        self._pump = asyncio.create_task(self._receive(layer), name=f"sse-follow-{self.channel}")

    async def _receive(self, layer) -> None:
        try:
            while True:
                message = await layer.receive(self.channel)
                if message.get("type") == CLOSE_MESSAGE:
                    return
                event = message.get("event") if message.get("type") == "chat.event" else None
                if not event:
                    continue
                self.queue.put_nowait(event)
                if self.run_id is not None and event.get("run") == self.run_id and event.get("type") in END_OF_RUN:
                    # Nothing more to hear, even if nobody ever reads the stream (a client that
                    # left before it started): leave the group now.
                    return
        except Exception as exc:
            # The layer failed (Redis restarting): the keep-alive check still ends the stream
            # from the buffer and the database when the run ends.
            log.warning("SSE follower of %s lost the channel layer (%r)", self.group, exc)
        finally:
            with contextlib.suppress(Exception):
                await layer.group_discard(self.group, self.channel)

    async def close(self) -> None:
        if self._pump is None or self._pump.done():
            return  # it left the group itself
        layer = get_channel_layer()
        with contextlib.suppress(Exception):
            await layer.group_discard(self.group, self.channel)
        # Wake the receiver with a message instead of cancelling it: a channels-redis receive
        # cancelled in the middle of its blocking read took up to ~10 s to unwind in tests, and
        # channels-redis shares one receive loop between all the process's receivers.
        try:
            await layer.send(self.channel, {"type": CLOSE_MESSAGE})
        except Exception:
            self._pump.cancel()

    def follow(self, run_id: str) -> None:
        """Name the run before any of its events can arrive (right after `start_run`)."""
        self.run_id = run_id

    async def stream(self, *, run_id: str, after: int = 0) -> AsyncIterator[str]:
        self.run_id, self.sent = run_id, after
        try:
            chunks, done = await self._catch_up()
            for chunk in chunks:
                yield chunk
            while not done:
                try:
                    event = await asyncio.wait_for(self.queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield KEEPALIVE
                    if not await run_is_alive(run_id):
                        # Ended without a live event reaching us (or died): what the buffer
                        # still has, then the end.
                        chunks, _ = await self._catch_up()
                        for chunk in chunks:
                            yield chunk
                        done = True
                    continue
                if event.get("run") != run_id:
                    continue
                seq = event.get("seq")
                if not isinstance(seq, int):
                    yield sse_message(event)  # not numbered (approval.decided): never replayed
                    continue
                if seq <= self.sent:
                    continue  # already sent from the buffer
                if seq > self.sent + 1:
                    chunks, _ = await self._catch_up(until=seq - 1)
                    for chunk in chunks:
                        yield chunk
                self.sent = seq
                yield sse_message(event)
                done = event["type"] in END_OF_RUN
        finally:
            await self.close()

    async def _catch_up(self, *, until: int | None = None) -> tuple[list[str], bool]:
        """Buffered events after the last one sent (up to `until`); whether they end the run
        (the last one is `run.finished`, or `run.paused` with nothing after it)."""
        chunks, last_type = [], None
        for event in await buffered_events(self.run_id, after=self.sent):
            if until is not None and event["seq"] > until:
                break
            self.sent = event["seq"]
            chunks.append(sse_message(event))
            last_type = event["type"]
        return chunks, last_type in END_OF_RUN
