"""Following a run: the one place that puts a run's events in order for a client.

Events of a run are numbered (`seq` 1, 2, 3…), kept in a replay buffer (`chat.engine.streams`) and
sent to the conversation's channel-layer group. A client may start following late (it opens
the conversation mid-run, reconnects, or resumes after an approval), hear an event both from
the buffer and live, or miss live events (a full channel drops them). `EventOrder` turns all of
that into each event exactly once, in seq order: replay what was missed, drop what was already
delivered, fill a gap from the buffer before going on.

The socket consumer gets live events on its own channel and feeds them to its `EventOrder`.
The HTTP (SSE) transport and the terminal chat use `RunFollower`, which also owns the
subscription and knows when a run is over. All of them only format what comes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from accounts.credentials import REVOKED, Credential
from chat import wire
from chat.engine import transitions
from chat.engine.process import engine
from chat.models import Conversation, Message, Run
from chat.wire import EVENTS_MESSAGE
from config.errors import AppError

log = logging.getLogger(__name__)

CLOSE_MESSAGE = "follower.close"


@dataclass(frozen=True)
class ResumePoint:
    """Where a client that (re)opens a conversation picks up its events."""

    active: Run | None  # the conversation's active run, if any
    run: Run | None  # the run to replay and follow (None: nothing to follow)
    after: int  # replay `run`'s events after this seq
    unknown: bool = False  # the client named a run this conversation does not have


async def resume_point(conversation: Conversation, *, run: str | None, after: int) -> ResumePoint:
    """The one "resume from" decision, for the socket's `conversation.open` and for
    `GET …/events` alike. Call it once subscribed, so nothing published after it is missed.

    * No run named: the active run (none, once dead runs are released) from its first event.
    * The run the client was following, active or ended: its events after `after`, so a
      reconnecting client finishes the run it saw, with no gap and no duplicate.
    * A run this conversation does not have (or not a run id at all): `unknown`; the active
      run from its first event for a transport that carries on (the socket), `not_found` for
      one that asked for that run alone (the HTTP API).
    """
    await database_sync_to_async(transitions.release_dead_runs)(conversation=conversation)
    active = await Run.objects.active_in(conversation).afirst()
    if run is None:
        return ResumePoint(active=active, run=active, after=0)
    if active is not None and str(active.public_id) == run:
        return ResumePoint(active=active, run=active, after=after)
    try:
        named = await Run.objects.filter(conversation=conversation, public_id=uuid.UUID(run)).afirst()
    except ValueError:
        named = None
    if named is None:
        return ResumePoint(active=active, run=active, after=0, unknown=True)
    return ResumePoint(active=active, run=named, after=after)


async def buffered_events(run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
    """The run's buffered events with seq > after, in seq order."""
    return await engine.buffer.read(run_id, after=after)


class EventOrder:
    """Exactly once, in order, per run: the seq last delivered of each run followed. It also
    knows which runs it followed have not ended yet (`open`), and ends one whose process died
    with the outcome as stored (`ending_if_over`): every transport, the socket included, hears
    how each run it followed really ended."""

    def __init__(self) -> None:
        self.delivered: dict[str, int] = {}
        # Runs followed that have not ended: run id → (conversation id, when an event last came).
        self.open: dict[str, tuple[str, float]] = {}

    def follow(self, run_id: str, *, after: int = 0) -> None:
        """Deliver `run_id`'s events after `after`; a gap before the first live one is filled."""
        self.delivered[run_id] = max(self.delivered.get(run_id, 0), after)

    async def replay(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        """What the buffer holds after `after` (and after what was already delivered)."""
        self.follow(run_id, after=after)
        return self.take(await buffered_events(run_id, after=self.delivered[run_id]))

    async def accept(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The events to deliver now that `event` arrived live: none (a duplicate), the event,
        or the missed events from the buffer followed by it."""
        run_id, seq = event.get("run"), event.get("seq")
        if not run_id or not isinstance(seq, int):
            return [event]  # not numbered (approval.decided): never replayed, never duplicated
        if run_id not in self.delivered:
            # A run this follower did not ask for (another tab started it): from here on.
            self.delivered[run_id] = seq
            return self._note([event])
        last = self.delivered[run_id]
        if seq <= last:
            return []  # already delivered from the buffer
        if seq == last + 1:
            self.delivered[run_id] = seq
            return self._note([event])
        # The layer dropped events for this follower: the buffer has them (and this one).
        missed = self.take(await buffered_events(run_id, after=last))
        if self.delivered[run_id] < seq:
            self.delivered[run_id] = seq
            missed.append(event)
        return self._note(missed)

    def take(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Those of `events` not delivered yet, in order, marking them delivered."""
        fresh = []
        for event in events:
            run_id = event["run"]
            if event["seq"] > self.delivered.get(run_id, 0):
                self.delivered[run_id] = event["seq"]
                fresh.append(event)
        return self._note(fresh)

    def _note(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Track which runs are open after delivering `events` (a pause ends a run's stream
        until a decision resumes it)."""
        for event in events:
            run_id = event.get("run")
            if not run_id or not isinstance(event.get("seq"), int):
                continue
            if event["type"] in wire.END_OF_RUN:
                self.open.pop(run_id, None)
            else:
                self.open[run_id] = (event.get("conversation", ""), time.monotonic())
        return events

    def watch_open(self, run_id: str, *, conversation: str) -> None:
        """A run known to be active (seen in the database) whose events may never come."""
        self.open.setdefault(run_id, (conversation, time.monotonic()))

    def quiet(self, seconds: float, *, conversation: str | None = None) -> list[str]:
        """Open runs without an event for `seconds` (of `conversation`, when given)."""
        now = time.monotonic()
        return [
            run_id for run_id, (of, at) in list(self.open.items())
            if now - at >= seconds and (conversation is None or of == conversation)
        ]

    async def ending_if_over(self, run_id: str) -> list[dict[str, Any]] | None:
        """None while the run is alive. Once it is not: what the buffer still has and, when
        that does not end the run, its end as stored. Its own end events may not be published
        yet (the outcome is committed first), or never will be (its process died): either way
        the follower hears how the run really ended, never a stream that just stops."""
        if await run_is_alive(run_id):
            if run_id in self.open:
                self.open[run_id] = (self.open[run_id][0], time.monotonic())
            return None
        tail = await self.replay(run_id)
        if _ends(tail):
            return tail
        ending = await stored_ending(run_id, after=self.delivered.get(run_id, 0))
        self.open.pop(run_id, None)  # also a run that is gone: nothing more will come
        return tail + self.take(ending)


@database_sync_to_async  # a follower lives long: it gives its database connection back each time
def run_is_alive(run_id: str) -> bool:
    """Active, and (unless parked for an approval) still beating."""
    run = Run.objects.filter(public_id=run_id).only("status", "heartbeat_at").first()
    if run is None or not run.is_active:
        return False
    if run.status == Run.Status.AWAITING_APPROVAL:
        return True
    return run.heartbeat_at >= timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS)


@database_sync_to_async
def stored_ending(run_id: str, *, after: int) -> list[dict[str, Any]]:
    """The end-of-run events of a run that is over, built from what is stored (the reply, its
    usage, the run's status) and numbered after `after`. A run still marked active whose
    heartbeat went stale is first ended as interrupted, as any process may do. Empty while
    the run is alive."""
    run = Run.objects.filter(public_id=run_id).select_related("conversation").first()
    if run is not None and run.is_active:
        transitions.interrupt_stale_runs(conversation=run.conversation)
        run.refresh_from_db()
    if run is None or run.is_active:
        return []
    reply = Message.objects.filter(run=run, role=Message.Role.ASSISTANT).first()
    if reply is None:
        events = [wire.run_finished(status=run.status, error=run.error)]
    else:
        events = wire.end_of_run(reply, status=run.status, error=run.error)
    run_fields = {"conversation": str(run.conversation.public_id), "run": str(run.public_id)}
    return [{**event, **run_fields, "seq": after + n} for n, event in enumerate(events, start=1)]


class RunFollower:
    """A subscription to a conversation's events, for transports that follow one run at a time.

    Subscribe first (before starting the run, or before looking at it), then iterate
    `events(run_id)`. With `until_run_ends=True` the subscription also ends by itself once the
    followed run ends, even if nobody ever iterates (an HTTP client that left before its
    stream started). With a `credential`, the iteration stops with `AppError("unauthorized")`
    when it ends (revoked, expired, signed out: see `accounts.credentials`).

    Following never owns the run: when the client goes away the run goes on."""

    def __init__(self, group: str, *, until_run_ends: bool = False, credential: Credential | None = None) -> None:
        self.group = group
        self.until_run_ends = until_run_ends
        self.credential = credential
        self.revoked = False
        self._checked_at = time.monotonic()
        self.order = EventOrder()
        self.run_id: str | None = None
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.channel: str | None = None
        self._pump: asyncio.Task | None = None

    async def subscribe(self) -> None:
        layer = get_channel_layer()
        self.channel = await layer.new_channel("follow.")
        for group in self._groups():
            await layer.group_add(group, self.channel)
        # One receiver for the follower's whole life: cancelling a pending `receive` on every
        # keep-alive could lose a message; cancelling an `asyncio.Queue.get` cannot.
        self._pump = asyncio.create_task(self._receive(layer), name=f"follow-{self.channel}")

    async def _receive(self, layer) -> None:
        try:
            while True:
                message = await layer.receive(self.channel)
                if message.get("type") == CLOSE_MESSAGE:
                    return
                if message.get("type") == REVOKED:
                    self.revoked = True
                    self.queue.put_nowait({"type": REVOKED})
                    return
                if message.get("type") != EVENTS_MESSAGE:
                    continue
                for event in message["events"]:
                    self.queue.put_nowait(event)
                if self.until_run_ends and any(self._ends_followed_run(event) for event in message["events"]):
                    return
        except Exception as exc:
            # The layer failed (Redis restarting): the liveness check still ends the stream
            # from the buffer and the database when the run ends.
            log.warning("follower of %s lost the channel layer (%r)", self.group, exc)
        finally:
            await self._leave(layer)

    def _groups(self) -> list[str]:
        return [self.group, *(self.credential.groups if self.credential is not None else [])]

    async def _leave(self, layer) -> None:
        for group in self._groups():
            with contextlib.suppress(Exception):
                await layer.group_discard(group, self.channel)

    def _ends_followed_run(self, event: dict[str, Any]) -> bool:
        return self.run_id is not None and event.get("run") == self.run_id and event.get("type") in wire.END_OF_RUN

    async def close(self) -> None:
        if self._pump is None or self._pump.done():
            return  # it left the group itself
        layer = get_channel_layer()
        await self._leave(layer)
        # Wake the receiver with a message instead of cancelling it: a channels-redis receive
        # cancelled in the middle of its blocking read took up to ~10 s to unwind in tests, and
        # channels-redis shares one receive loop between all the process's receivers.
        try:
            await layer.send(self.channel, {"type": CLOSE_MESSAGE})
        except Exception:
            self._pump.cancel()

    def follow(self, run_id: str, *, after: int = 0) -> None:
        """Name the run before any of its events can arrive (right after starting it)."""
        self.run_id = run_id
        self.order.follow(run_id, after=after)

    async def events(self, run_id: str, *, after: int = 0) -> AsyncIterator[dict[str, Any] | None]:
        """The run's events after `after`, in order, until it ends or pauses; `None` after
        every RUN_KEEPALIVE_SECONDS without one (the run is checked meanwhile: one that died with
        its process ends the iteration after what the buffer still has)."""
        self.follow(run_id, after=after)
        replayed = await self.order.replay(run_id, after=after)
        for event in replayed:
            yield event
        if _ends(replayed):
            return
        while True:
            try:
                incoming = await asyncio.wait_for(self.queue.get(), self._wait_seconds())
            except TimeoutError:
                await self._check_credential()
                yield None
                ending = await self.order.ending_if_over(run_id)
                if ending is not None:
                    for event in ending:
                        yield event
                    return
                continue
            if incoming.get("type") == REVOKED:
                raise AppError("unauthorized", "Your API token was revoked or your session ended.")
            if incoming.get("run") != run_id:
                continue
            batch = await self.order.accept(incoming)
            for event in batch:
                yield event
            if _ends(batch):
                return

    def _wait_seconds(self) -> float:
        left = self.credential.seconds_left() if self.credential is not None else None
        return settings.RUN_KEEPALIVE_SECONDS if left is None else max(min(settings.RUN_KEEPALIVE_SECONDS, left), 0.01)

    async def _check_credential(self) -> None:
        """Expired, or (every AUTH_RECHECK_SECONDS) no longer valid: stop following."""
        if self.credential is None:
            return
        due = time.monotonic() - self._checked_at >= settings.AUTH_RECHECK_SECONDS
        if self.credential.seconds_left() == 0 or (due and not await database_sync_to_async(self.credential.is_valid)()):
            raise AppError("unauthorized", "Your API token expired or was revoked.")
        if due:
            self._checked_at = time.monotonic()


def _ends(events: list[dict[str, Any]]) -> bool:
    """Whether the last numbered event ends the run (a pause followed by more events is a run
    that resumed)."""
    numbered = [event for event in events if isinstance(event.get("seq"), int)]
    return bool(numbered) and numbered[-1]["type"] in wire.END_OF_RUN
