"""The chat socket (`/ws/chat/`): validates frames and calls the run service.

Frames are JSON objects dispatched on `type`. A refused frame (any `AppError`) gets an `error`
event and the socket stays usable. Events of the conversations it watches come through the
channel layer and go out in order through the socket's `EventOrder`; so do the events about
all of the user's conversations (renamed, run activity, feedback: `chat.activity`), which
every socket of the user hears through the group `user.<id>`. The socket lives only as
long as what authenticated it (`accounts.credentials`): a revoked or expired token, a signed-out
session, a new password or a deactivated user closes it with 4401. The protocol is documented
in docs/protocol.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import OperationalError

from accounts.credentials import Credential
from chat import activity, engine, protocol, selectors, services, wire
from chat.conversations import conversation_rename
from chat.feedback import feedback_give
from chat.models import Conversation
from config import metrics, ratelimits
from config.errors import AppError, overloaded
from config.logging import current_request_id, new_request_id, request_id_bound

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FLOODING = 4429
# Frames that act for the user: the credential is checked again before each of them.
ACTING_FRAMES = {
    "conversation.create", "conversation.rename", "message.send", "message.regenerate", "message.edit",
    "approval.decide", "feedback.give",
}


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.user = self.scope["user"]
        self.credential: Credential | None = None
        self.watching: dict[str, Conversation] = {}
        self.order = engine.EventOrder()
        self.guard: asyncio.Task | None = None
        self.slot: str | None = None
        self.user_group: str | None = None
        self.credential_ended = False
        # Accept first so the close code reaches the client (a refused handshake has none).
        await self.accept()
        if not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED, reason="Sign in required.")
            return
        try:
            self.slot = await ratelimits.from_the_loop(ratelimits.socket_slots.take, user_id=self.user.pk)
        except AppError as exc:  # too many sockets open for this user
            await self.send_json(wire.error(exc))
            await self.close(code=CLOSE_FLOODING, reason="Too many connections.")
            return
        metrics.sockets_open.inc()
        self.credential = self.scope.get("credential") or Credential.of_session(self.user, self.scope.get("session"))
        if self.credential is not None:
            for group in self.credential.groups:
                await self.channel_layer.group_add(group, self.channel_name)
        # Renames, run activity and feedback in any of the user's conversations, from any tab.
        self.user_group = activity.user_group(self.user.pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        self.guard = asyncio.create_task(self._guard())

    async def disconnect(self, code: int) -> None:
        if self.guard is not None:
            self.guard.cancel()
        if self.slot is not None:
            metrics.sockets_open.dec()
            await ratelimits.from_the_loop(ratelimits.socket_slots.give_back, user_id=self.user.pk, slot=self.slot)
        groups = [conversation.group_name for conversation in self.watching.values()]
        groups += self.credential.groups if self.credential is not None else []
        groups += [self.user_group] if self.user_group is not None else []
        for group in groups:
            await self.channel_layer.group_discard(group, self.channel_name)

    # --- the credential that opened the socket ----------------------------------
    async def auth_revoked(self, message: dict[str, Any]) -> None:
        """Its token was revoked, its session signed out, its user's password changed or the
        user deactivated (`accounts.credentials.revoke`, from any process)."""
        await self._end()

    async def _guard(self) -> None:
        """While the socket lives: close it at its token's expiry, recheck its credential every
        AUTH_RECHECK_SECONDS (a revocation message can be lost with the channel layer, or come
        from a process it does not reach), keep its connection slot, and end the runs it
        follows whose process died (silent for RUN_KEEPALIVE_SECONDS, then not alive) with their
        outcome as stored."""
        checked = refreshed = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                left = self.credential.seconds_left() if self.credential is not None else None
                await asyncio.sleep(min(
                    settings.AUTH_RECHECK_SECONDS, ratelimits.SLOT_TTL_SECONDS / 3, settings.RUN_KEEPALIVE_SECONDS,
                    left if left is not None else float("inf"),
                ))
                await self._end_dead_runs(self.order.quiet(settings.RUN_KEEPALIVE_SECONDS))
                now = time.monotonic()
                if self.credential is not None and (
                    self.credential.seconds_left() == 0 or now - checked >= settings.AUTH_RECHECK_SECONDS
                ):
                    checked = now
                    if not await sync_to_async(self.credential.is_valid)():
                        await self._end()
                        return
                if now - refreshed >= ratelimits.SLOT_TTL_SECONDS / 3:
                    refreshed = now
                    await ratelimits.from_the_loop(ratelimits.socket_slots.refresh, user_id=self.user.pk, slot=self.slot)

    async def _end_dead_runs(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            for event in await self.order.ending_if_over(run_id) or ():
                await self.send_json(event)

    async def _end(self) -> None:
        self.credential_ended = True
        await self.close(code=CLOSE_UNAUTHENTICATED, reason="Signed out, or access was revoked.")

    # --- incoming frames ------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if not self.user.is_authenticated or self.slot is None:
            return
        try:
            await ratelimits.acheck_frame(user_id=self.user.pk)
        except AppError as exc:
            # Closing is per socket: the one that keeps sending goes, the user's others stay.
            if ratelimits.flooding(socket=self.channel_name):
                await self.close(code=CLOSE_FLOODING, reason="Too many frames.")
            else:
                await self.send_json(wire.error(exc))
            return
        try:
            if text_data is None:
                raise AppError("bad_frame", "Frames must be JSON text, not binary.")
            frame = protocol.parse_frame(text_data)
        except AppError as exc:
            await self.send_json(wire.error(exc))
            return
        await self.receive_json(frame)

    async def receive_json(self, frame: dict[str, Any], **kwargs: Any) -> None:
        kind = frame.get("type")
        handler = self.handlers.get(kind) if isinstance(kind, str) else None
        request_id = protocol.request_id_of(frame)
        if self.credential_ended or (
            handler is not None and kind in ACTING_FRAMES and self.credential is not None and not await sync_to_async(self.credential.is_valid)()
        ):
            # A frame that arrives after the credential ended is refused, and the socket closes.
            refused = AppError("unauthorized", "Your session ended or your API token was revoked. Sign in again.")
            await self.send_json(wire.error(refused, request_id=request_id))
            await self._end()
            return
        if handler is None:
            unknown = AppError("unknown_type", f"Unknown frame type {protocol.shown(kind)}.")
            await self.send_json(wire.error(unknown, request_id=request_id))
            return
        # Log lines caused by this frame carry its request id (or a generated one).
        with request_id_bound(request_id or new_request_id()):
            try:
                await handler(self, frame, request_id)
            except AppError as exc:
                await self.send_json(wire.error(exc, request_id=request_id, conversation=_echoed_conversation(frame)))
            except OperationalError as exc:  # no database connection free in time: nothing was done
                log.warning("Frame %s refused: %r", kind, exc)
                await self.send_json(wire.error(overloaded(), request_id=request_id, conversation=_echoed_conversation(frame)))
            except Exception:
                # A bug must not cost the user their socket (and every other conversation on
                # it): log it, answer the frame, keep going. The fuzz tests expect none.
                log.exception("Frame %s failed", kind)
                failed = AppError("internal_error", "The server failed to handle this frame; please try again.")
                await self.send_json(wire.error(failed, request_id=request_id, conversation=_echoed_conversation(frame)))

    async def on_ping(self, frame: dict[str, Any], request_id: str | None) -> None:
        await self.send_json(wire.pong(request_id=request_id))

    async def on_conversation_create(self, frame: dict[str, Any], request_id: str | None) -> None:
        agent_key = protocol.agent_key(frame)
        model = protocol.model_choice(frame)
        conversation = await sync_to_async(services.conversation_create)(
            owner=self.user, agent_key=agent_key, model_key=model
        )
        await self.watch(conversation)
        await self.send_json(wire.conversation_created(conversation, request_id=request_id))

    async def on_conversation_open(self, frame: dict[str, Any], request_id: str | None) -> None:
        conversation = await self.own_conversation(frame)
        after = protocol.optional_seq(frame)
        await self.watch(conversation)  # before looking at the run: nothing it publishes from now is missed
        named = frame.get("run") if isinstance(frame.get("run"), str) else None
        resume = await engine.resume_point(conversation, run=named, after=after)
        state = await selectors.arun_state(resume.active)
        await self.send_json(wire.conversation_state(conversation, run=state, request_id=request_id))
        if resume.run is not None:
            for event in await self.order.replay(str(resume.run.public_id), after=resume.after):
                await self.send_json(event)
        if resume.active is not None:  # its events may never come (its process died): watch it
            self.order.watch_open(str(resume.active.public_id), conversation=str(conversation.public_id))

    async def on_conversation_rename(self, frame: dict[str, Any], request_id: str | None) -> None:
        """Answered, like every other tab of the user, by `conversation.renamed`."""
        conversation = await self.own_conversation(frame)
        title = protocol.title(frame)
        await sync_to_async(conversation_rename)(conversation=conversation, title=title, request_id=request_id)

    async def on_message_send(self, frame: dict[str, Any], request_id: str | None) -> None:
        conversation = await self.own_conversation(frame)
        content = protocol.message_content(frame)
        model = protocol.model_choice(frame)
        await self.watch(conversation)
        await engine.start(
            user=self.user, conversation=conversation, content=content, model=model,
            request_id=request_id or current_request_id(),
        )

    async def on_message_regenerate(self, frame: dict[str, Any], request_id: str | None) -> None:
        await self.replace_last_turn(frame, request_id)

    async def on_message_edit(self, frame: dict[str, Any], request_id: str | None) -> None:
        message_id = protocol.uuid_field(frame, "message")
        content = protocol.message_content(frame)
        await self.replace_last_turn(frame, request_id, edited_message_id=message_id, content=content)

    async def replace_last_turn(self, frame: dict[str, Any], request_id: str | None, **change: Any) -> None:
        conversation = await self.own_conversation(frame)
        model = protocol.model_choice(frame)
        await self.watch(conversation)
        await engine.replace(
            user=self.user, conversation=conversation, model=model, request_id=request_id or current_request_id(),
            **change,
        )

    async def on_approval_decide(self, frame: dict[str, Any], request_id: str | None) -> None:
        conversation = await self.own_conversation(frame)
        call_id = protocol.call_id(frame)
        approve, reason = protocol.approval_decision(frame)
        await self.watch(conversation)
        await engine.decide(user=self.user, conversation=conversation, call_id=call_id, approve=approve, reason=reason)

    async def on_run_cancel(self, frame: dict[str, Any], request_id: str | None) -> None:
        conversation = await self.own_conversation(frame)
        await engine.stop(conversation=conversation)

    async def on_feedback_give(self, frame: dict[str, Any], request_id: str | None) -> None:
        """Answered, like every other tab of the user, by `feedback.updated`."""
        message_id = protocol.uuid_field(frame, "message")
        rating, comment = protocol.feedback(frame)
        message = await selectors.amessage_for(self.user, message_id)
        await sync_to_async(feedback_give)(user=self.user, message=message, rating=rating, comment=comment, request_id=request_id)

    handlers = {
        "ping": on_ping,
        "conversation.create": on_conversation_create,
        "conversation.open": on_conversation_open,
        "conversation.rename": on_conversation_rename,
        "message.send": on_message_send,
        "message.regenerate": on_message_regenerate,
        "message.edit": on_message_edit,
        "approval.decide": on_approval_decide,
        "run.cancel": on_run_cancel,
        "feedback.give": on_feedback_give,
    }

    # --- events from the channel layer ---------------------------------------
    async def chat_events(self, message: dict[str, Any]) -> None:
        for incoming in message["events"]:
            if incoming.get("type") == wire.CONVERSATION_ACTIVITY and incoming.get("conversation") in self.watching:
                # This socket follows that conversation: its run's own events say it all, unless
                # the run ended with nobody to say so (the sweeper's notice): then the stored end.
                if not incoming.get("running"):
                    await self._end_dead_runs(self.order.quiet(0, conversation=incoming["conversation"]))
                continue
            for event in await self.order.accept(incoming):
                await self.send_json(event)

    # --- helpers -------------------------------------------------------------
    async def own_conversation(self, frame: dict[str, Any]) -> Conversation:
        return await selectors.aconversation_for(self.user, protocol.conversation_id(frame))

    async def watch(self, conversation: Conversation) -> None:
        key = str(conversation.public_id)
        if key not in self.watching:
            await self.channel_layer.group_add(conversation.group_name, self.channel_name)
        self.watching[key] = conversation


def _echoed_conversation(frame: dict[str, Any]) -> str | None:
    """The frame's `conversation` to echo on an `error`, when it is an id at all."""
    value = frame.get("conversation")
    return value if isinstance(value, str) and _uuid_or_none(value) is not None else None


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
