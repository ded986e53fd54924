"""The JSON API for non-browser clients (`/api/`), with replies streamed as Server-Sent Events.

Authenticated only by an API token (`Authorization: Bearer ac_…`, see `accounts.services`):
session cookies are ignored, so there is no ambient credential for another site to ride on and
`csrf_exempt` is correct. Every lookup goes through the token owner's querysets; someone else's
conversation is "not found", like a missing one.

Input is validated by `chat.protocol`, the socket's own checks (same codes, limits and
messages); runs start through `chat.runs`, the one run service; streams carry the socket's own
event dicts (`chat.sse`). Errors are `{"error": {"code", "message"}}` with an HTTP status.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from accounts.services import api_token_authenticate, bearer_token
from agents_app import providers
from agents_app.registry import UnknownAgent, all_specs
from chat import protocol, quotas, runs, services
from chat.consumers import run_state
from chat.models import Conversation, Message, Run
from chat.protocol import FrameError
from chat.sse import END_OF_RUN, RunFollower, buffered_events, sse_message
from config.logging import current_request_id

STATUS_OF = {
    "bad_json": 400,
    "bad_frame": 400,
    "missing_field": 400,
    "invalid_field": 400,
    "empty_content": 400,
    "too_long": 400,
    "unknown_agent": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "busy": 409,
    "approval_pending": 409,
    "not_running": 409,
    "already_decided": 409,
    "events_expired": 410,
    "too_large": 413,
    "quota_exceeded": 429,
    "provider_not_configured": 503,
}
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 50, 200


class ApiError(Exception):
    def __init__(self, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(code: str, message: str, *, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=STATUS_OF.get(code, 400))
    for name, value in (headers or {}).items():
        response[name] = value
    return response


View = Callable[..., Awaitable[HttpResponse]]


def api_view(*methods: str) -> Callable[[View], View]:
    """Bearer-token authentication (→ `request.api_user`), allowed methods, JSON errors."""

    def decorate(view: View) -> View:
        @csrf_exempt  # no cookie authenticates here, so there is nothing to forge
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            raw = bearer_token(request.headers.get("Authorization"))
            user = await sync_to_async(api_token_authenticate)(raw=raw) if raw else None
            if user is None:
                challenge = 'Bearer realm="api"' + (', error="invalid_token"' if raw else "")
                return error_response(
                    "unauthorized",
                    "A valid API token is required: Authorization: Bearer <token>.",
                    headers={"WWW-Authenticate": challenge},
                )
            if request.method not in methods:
                return error_response(
                    "method_not_allowed", f"{request.method} is not allowed here.", headers={"Allow": ", ".join(methods)}
                )
            request.api_user = user
            try:
                return await view(request, *args, **kwargs)
            except FrameError as exc:
                return error_response(exc.code, exc.message)
            except ApiError as exc:
                return error_response(exc.code, exc.message, headers=exc.headers)

        return wrapper

    return decorate


# --- helpers -----------------------------------------------------------------------
def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request body as a frame, checked like a socket frame."""
    limit = settings.CHAT_MAX_FRAME_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit or len(request.body) > limit:
        raise FrameError("too_large", f"Frames are limited to {limit} bytes.")
    if not request.body:
        return {}
    try:
        frame = json.loads(request.body)
    except ValueError:
        raise FrameError("bad_json", "The frame is not valid JSON.") from None
    if not isinstance(frame, dict):
        raise FrameError("bad_frame", "A frame must be a JSON object.")
    return frame


async def own_conversation(request: HttpRequest, public_id: uuid.UUID) -> Conversation:
    conversation = await Conversation.objects.for_user(request.api_user).filter(public_id=public_id).afirst()
    if conversation is None:
        # The same answer for someone else's conversation and a missing one.
        raise ApiError("not_found", "No such conversation.")
    return conversation


def require_provider() -> None:
    try:
        providers.provider_name()
    except providers.ProviderNotConfigured as exc:
        raise ApiError("provider_not_configured", str(exc)) from None


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.public_id),
        "agent": conversation.agent_key,
        "title": conversation.title,
        "current_agent": conversation.current_agent_name,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }


def message_json(message: Message) -> dict[str, Any]:
    reply = message.role == Message.Role.ASSISTANT
    return {
        "id": str(message.public_id),
        "role": message.role,
        "status": message.status,
        "content": message.content,
        "agent": message.agent_name,
        "error": message.error,
        "run": str(message.run.public_id) if message.run_id else None,
        "activity": message.activity if reply else [],
        "structured": message.structured,
        "usage": runs.message_usage(message) if reply else None,
        "created_at": message.created_at.isoformat(),
    }


def _int_param(request: HttpRequest, name: str, default: int) -> int:
    value = request.GET.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise FrameError("invalid_field", f"'{name}' must be a non-negative integer.")
    return int(value)


def event_stream(chunks: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through as they come
    return response


# --- endpoints ---------------------------------------------------------------------
@api_view("GET")
async def agent_list(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {"agents": [{"key": spec.key, "title": spec.title, "description": spec.description} for spec in all_specs()]}
    )


@api_view("GET", "POST")
async def conversations(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        frame = json_body(request)
        agent_key = protocol.required_str(frame, "agent")
        try:
            conversation = await sync_to_async(services.conversation_create)(owner=request.api_user, agent_key=agent_key)
        except UnknownAgent:
            known = ", ".join(spec.key for spec in all_specs())
            raise FrameError("unknown_agent", f"There is no agent {agent_key!r}. Available: {known}.") from None
        return JsonResponse({"conversation": conversation_json(conversation)}, status=201)

    limit = min(_int_param(request, "limit", LIST_LIMIT_DEFAULT), LIST_LIMIT_MAX)
    offset = _int_param(request, "offset", 0)
    page = [c async for c in Conversation.objects.for_user(request.api_user)[offset : offset + limit + 1]]
    return JsonResponse({
        "conversations": [conversation_json(c) for c in page[:limit]],
        "next_offset": offset + limit if len(page) > limit else None,
    })


@api_view("GET")
async def conversation_detail(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    conversation = await own_conversation(request, public_id)
    active = await Run.objects.for_user(request.api_user).active().filter(conversation=conversation).afirst()
    messages = [m async for m in Message.objects.for_user(request.api_user).filter(conversation=conversation).select_related("run")]
    return JsonResponse({
        "conversation": {**conversation_json(conversation), "run": await run_state(active)},
        "messages": [message_json(m) for m in messages],
    })


@api_view("POST")
async def message_send(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """Store the message, start the run, stream its events until it finishes or pauses."""
    conversation = await own_conversation(request, public_id)
    frame = json_body(request)
    content = protocol.message_content(frame)
    require_provider()
    # Subscribe before the run exists: its first events cannot be missed (and the buffer
    # replay covers the rest).
    follower = RunFollower(conversation.group_name)
    await follower.subscribe()
    try:
        started = await runs.start_run(
            user=request.api_user,
            conversation=conversation,
            content=content,
            request_id=protocol.request_id_of(frame) or current_request_id(),
        )
    except quotas.QuotaExceeded as exc:
        await follower.close()
        seconds = max(int((exc.status.resets_at - timezone.now()).total_seconds()), 1)
        raise ApiError(exc.code, exc.message, headers={"Retry-After": str(seconds)}) from None
    except services.ConversationBusy as exc:
        await follower.close()
        raise ApiError(exc.code, exc.message) from None
    except BaseException:
        await follower.close()
        raise
    run_id = str(started.run.public_id)
    follower.follow(run_id)
    return event_stream(follower.stream(run_id=run_id, after=0))


@api_view("GET")
async def run_events(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """Resume following a run: its buffered events after `after` (or `Last-Event-ID`), then
    live ones. Without `run`, the conversation's active run from its first event."""
    conversation = await own_conversation(request, public_id)
    run_param = request.GET.get("run")
    after = _int_param(request, "after", 0)
    # An EventSource reconnects to the same URL with the id it saw last: the header is newer.
    last_event_id = request.headers.get("Last-Event-ID", "").strip()
    if last_event_id:
        if not last_event_id.isdigit():
            raise FrameError("invalid_field", "'Last-Event-ID' must be a non-negative integer.")
        after = int(last_event_id)
    await sync_to_async(services.release_dead_runs)(conversation=conversation)

    follower = RunFollower(conversation.group_name)
    await follower.subscribe()  # before looking at the run: nothing it publishes from now is missed
    try:
        runs_here = Run.objects.for_user(request.api_user).filter(conversation=conversation)
        if run_param:
            try:
                run = await runs_here.filter(public_id=uuid.UUID(run_param)).afirst()
            except ValueError:
                run = None
            if run is None:
                raise ApiError("not_found", "No such run in this conversation.")
        else:
            run = await runs_here.active().afirst()
            after = 0
            if run is None:
                await follower.close()
                return HttpResponse(status=204)  # nothing to follow; tells an EventSource to stop
        run_id = str(run.public_id)
        follower.follow(run_id)
        if not run.is_active:
            await follower.close()
            return await _finished_run_events(run, after=after)
    except BaseException:
        await follower.close()
        raise
    return event_stream(follower.stream(run_id=run_id, after=after))


async def _finished_run_events(run: Run, *, after: int) -> HttpResponse:
    if after >= run.last_seq:
        return HttpResponse(status=204)  # the client has it all
    events = await buffered_events(str(run.public_id), after=after)
    complete = bool(events) and events[0]["seq"] == after + 1 and events[-1]["type"] in END_OF_RUN
    if not complete:
        raise ApiError(
            "events_expired",
            "This run has ended and its events are no longer buffered; "
            "GET the conversation for the stored reply.",
        )

    async def replay() -> AsyncIterator[str]:
        for event in events:
            yield sse_message(event)

    return event_stream(replay())


@api_view("POST")
async def run_cancel(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    conversation = await own_conversation(request, public_id)
    run = await runs.stop_run(conversation=conversation)
    if run is None:
        raise ApiError("not_running", "Nothing is running in this conversation.")
    # Stopping is asynchronous: the stream (or GET of the conversation) shows the outcome.
    return JsonResponse({"run": str(run.public_id)}, status=202)


@api_view("POST")
async def approval_decide(request: HttpRequest, public_id: uuid.UUID, call_id: str) -> HttpResponse:
    conversation = await own_conversation(request, public_id)
    frame = json_body(request)
    approve, reason = protocol.approval_decision(frame)
    if len(call_id) > 128:  # longer than any stored call id
        raise ApiError("not_found", "No such tool call is waiting for approval.")
    try:
        approval = await runs.decide_approval(
            user=request.api_user, conversation=conversation, call_id=call_id, approve=approve, reason=reason
        )
    except runs.ApprovalError as exc:
        raise ApiError(exc.code, exc.message) from None
    run = await Run.objects.aget(pk=approval.run_id)
    pending = [a.call_id async for a in run.approvals.pending()]
    return JsonResponse({
        "approval": {"call_id": approval.call_id, "status": approval.status, "reason": approval.reason},
        "run": str(run.public_id),
        # Empty: the run has resumed; follow it with GET …/events?run=<run>&after=<last seq seen>.
        "pending": pending,
    })


@api_view("GET", "POST", "PUT", "PATCH", "DELETE")
async def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    raise ApiError("not_found", "No such endpoint.")
