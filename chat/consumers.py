"""The chat socket (`/ws/chat/`): validates frames and calls the run service.

Frames are JSON objects dispatched on `type`. A bad frame gets an `error` event and the
socket stays usable. The protocol is documented in the README."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from agents_app import providers
from agents_app.registry import UnknownAgent, all_specs
from chat import protocol, quotas, runs, services
from chat.models import Conversation, Run
from chat.protocol import FrameError
from chat.streams import event_buffer
from config.logging import current_request_id, new_request_id, request_id_bound

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.user = self.scope["user"]
        # Accept first so the close code reaches the client (a refused handshake has none).
        await self.accept()
        if not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED, reason="Sign in required.")
            return
        self.watching: dict[str, Conversation] = {}
        self.sent_seq: dict[str, int] = {}

    async def disconnect(self, code: int) -> None:
        for conversation in getattr(self, "watching", {}).values():
            await self.channel_layer.group_discard(conversation.group_name, self.channel_name)

    # --- incoming frames ------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if not self.user.is_authenticated:
            return
        if text_data is None:
            await self.send_error("bad_frame", "Frames must be JSON text, not binary.")
            return
        if len(text_data.encode()) > settings.CHAT_MAX_FRAME_BYTES:
            await self.send_error("too_large", f"Frames are limited to {settings.CHAT_MAX_FRAME_BYTES} bytes.")
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            await self.send_error("bad_json", "The frame is not valid JSON.")
            return
        if not isinstance(frame, dict):
            await self.send_error("bad_frame", "A frame must be a JSON object.")
            return
        await self.receive_json(frame)

    async def receive_json(self, frame: dict[str, Any], **kwargs: Any) -> None:
        handler = self.handlers.get(frame.get("type"))  # type: ignore[arg-type]
        request_id = protocol.request_id_of(frame)
        if handler is None:
            await self.send_error("unknown_type", f"Unknown frame type {frame.get('type')!r}.", request_id)
            return
        # Log lines caused by this frame carry its request id (or a generated one).
        with request_id_bound(request_id or new_request_id()):
            try:
                await handler(self, frame, request_id)
            except FrameError as exc:
                conversation = frame.get("conversation") if isinstance(frame.get("conversation"), str) else None
                await self.send_error(exc.code, exc.message, request_id, conversation=conversation)

    async def on_ping(self, frame: dict[str, Any], request_id: str | None) -> None:
        await self.send_json({"type": "pong", "request_id": request_id})

    async def on_conversation_create(self, frame: dict[str, Any], request_id: str | None) -> None:
        agent_key = protocol.required_str(frame, "agent")
        try:
            conversation = await sync_to_async(services.conversation_create)(owner=self.user, agent_key=agent_key)
        except UnknownAgent:
            known = ", ".join(spec.key for spec in all_specs())
            raise FrameError("unknown_agent", f"There is no agent {agent_key!r}. Available: {known}.") from None
        await self.watch(conversation)
        await self.send_json({
            "type": "conversation.created",
            "conversation": str(conversation.public_id),
            "agent": conversation.agent_key,
            "request_id": request_id,
        })

    async def on_conversation_open(self, frame: dict[str, Any], request_id: str | None) -> None:
        conversation = await self.own_conversation(frame)
        after = protocol.optional_seq(frame)
        await sync_to_async(services.release_dead_runs)(conversation=conversation)
        await self.watch(conversation)
        active = await Run.objects.active().filter(conversation=conversation).afirst()
        followed = active
        if isinstance(frame.get("run"), str) and (active is None or str(active.public_id) != frame["run"]):
            # A reconnecting client finishes the run it was following, if it is still buffered.
            followed = await Run.objects.filter(conversation=conversation, public_id=_uuid_or_none(frame["run"])).afirst()
            after = after if followed else 0
        elif not isinstance(frame.get("run"), str):
            after = 0
        await self.send_json({
            "type": "conversation.state",
            "conversation": str(conversation.public_id),
            "agent": conversation.current_agent_name,
            "run": await run_state(active),
            "request_id": request_id,
        })
        if followed is not None:
            await self.replay(str(followed.public_id), after=after)

    async def on_message_send(self, frame: dict[str, Any], request_id: str | None) -> None:
        conversation = await self.own_conversation(frame)
        content = protocol.message_content(frame)
        await self.require_provider()
        await self.watch(conversation)
        try:
            await runs.start_run(
                user=self.user, conversation=conversation, content=content, request_id=request_id or current_request_id()
            )
        except quotas.QuotaExceeded as exc:
            raise FrameError(exc.code, exc.message) from None
        except services.ConversationBusy as exc:
            raise FrameError(exc.code, exc.message) from None

    async def on_message_regenerate(self, frame: dict[str, Any], request_id: str | None) -> None:
        await self.replace_last_turn(frame, request_id)

    async def on_message_edit(self, frame: dict[str, Any], request_id: str | None) -> None:
        message_id = protocol.uuid_field(frame, "message")
        content = protocol.message_content(frame)
        await self.replace_last_turn(frame, request_id, edited_message_id=message_id, content=content)

    async def replace_last_turn(self, frame: dict[str, Any], request_id: str | None, **change: Any) -> None:
        conversation = await self.own_conversation(frame)
        await self.require_provider()
        await self.watch(conversation)
        try:
            await runs.replace_last_turn(
                user=self.user, conversation=conversation, request_id=request_id or current_request_id(), **change
            )
        except quotas.QuotaExceeded as exc:
            raise FrameError(exc.code, exc.message) from None
        except services.ConversationBusy as exc:
            raise FrameError(exc.code, exc.message) from None
        except services.NothingToReplace as exc:
            raise FrameError("not_editable", str(exc)) from None

    async def on_approval_decide(self, frame: dict[str, Any], request_id: str | None) -> None:
        conversation = await self.own_conversation(frame)
        call_id = protocol.required_str(frame, "call_id")
        approve, reason = protocol.approval_decision(frame)
        await self.watch(conversation)
        try:
            await runs.decide_approval(
                user=self.user, conversation=conversation, call_id=call_id, approve=approve, reason=reason
            )
        except runs.ApprovalError as exc:
            raise FrameError(exc.code, exc.message) from None

    async def on_run_cancel(self, frame: dict[str, Any], request_id: str | None) -> None:
        conversation = await self.own_conversation(frame)
        if await runs.stop_run(conversation=conversation) is None:
            raise FrameError("not_running", "Nothing is running in this conversation.")

    handlers = {
        "ping": on_ping,
        "conversation.create": on_conversation_create,
        "conversation.open": on_conversation_open,
        "message.send": on_message_send,
        "message.regenerate": on_message_regenerate,
        "message.edit": on_message_edit,
        "approval.decide": on_approval_decide,
        "run.cancel": on_run_cancel,
    }

    # --- events from the channel layer ---------------------------------------
    async def chat_event(self, message: dict[str, Any]) -> None:
        await self.forward(message["event"])

    async def forward(self, event: dict[str, Any], *, replaying: bool = False) -> None:
        run, seq = event.get("run"), event.get("seq")
        if run and seq:
            sent = self.sent_seq.get(run, 0)
            if seq <= sent:
                return  # already sent from the replay buffer
            if sent and seq > sent + 1 and not replaying:
                # The layer dropped events for this socket (a full channel): fill the gap from
                # the replay buffer, which sends this event too, in order.
                await self.replay(run, after=sent)
                return
            self.sent_seq[run] = seq
        await self.send_json(event)

    async def replay(self, run_id: str, *, after: int) -> None:
        self.sent_seq[run_id] = max(self.sent_seq.get(run_id, 0), after)
        for event in await event_buffer().read(run_id, after=after):
            await self.forward(event, replaying=True)

    # --- helpers -------------------------------------------------------------
    async def own_conversation(self, frame: dict[str, Any]) -> Conversation:
        public_id = protocol.conversation_id(frame)
        conversation = await Conversation.objects.for_user(self.user).filter(public_id=public_id).afirst()
        if conversation is None:
            # The same answer for someone else's conversation and a missing one.
            raise FrameError("not_found", "No such conversation.")
        return conversation

    async def require_provider(self) -> None:
        try:
            providers.provider_name()
        except providers.ProviderNotConfigured as exc:
            raise FrameError("provider_not_configured", str(exc)) from None

    async def watch(self, conversation: Conversation) -> None:
        key = str(conversation.public_id)
        if key not in self.watching:
            await self.channel_layer.group_add(conversation.group_name, self.channel_name)
        self.watching[key] = conversation

    async def send_error(
        self, code: str, message: str, request_id: str | None = None, *, conversation: str | None = None
    ) -> None:
        event = {"type": "error", "code": code, "message": message, "request_id": request_id}
        if conversation:
            event["conversation"] = conversation
        await self.send_json(event)


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def run_state(run: Run | None) -> dict[str, Any] | None:
    if run is None:
        return None
    reply = await run.messages.filter(role="assistant").afirst()
    return {
        "id": str(run.public_id),
        "status": run.status,
        "agent": run.agent_name,
        "message": str(reply.public_id) if reply else None,
        "approvals": [
            {
                "call_id": approval.call_id,
                "name": approval.tool_name,
                "arguments": approval.arguments,
                "agent": approval.agent_name,
                "expires_at": run.approval_expires_at.isoformat() if run.approval_expires_at else None,
            }
            async for approval in run.approvals.pending()
        ],
    }
