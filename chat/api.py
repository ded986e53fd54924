"""The JSON API for non-browser clients (`/api/`), with replies streamed as Server-Sent Events.

Authenticated only by an API token (`Authorization: Bearer ac_…`, see `accounts.services`):
session cookies are ignored, so there is no ambient credential for another site to ride on and
`csrf_exempt` is correct. Every lookup goes through the token owner's querysets; someone else's
conversation is "not found", like a missing one.

Input is validated by `chat.protocol`, the socket's own checks (same codes, limits and
messages); runs start through `chat.engine`, the one way into a run; bodies and streams carry the
socket's own shapes and events (`chat.wire`), followed by `chat.engine.RunFollower`. Every
refusal is an `AppError`, answered in one place (`api_view`) as
`{"error": {"code", "message"}}` with its HTTP status.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import OperationalError, close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables

from accounts.credentials import Credential
from accounts.models import ApiToken
from accounts.services import api_token_for, bearer_token
from agents_app import providers
from agents_app.registry import available_specs
from chat import engine, export, protocol, selectors, services, wire
from chat.conversations import conversation_rename
from chat.feedback import feedback_give
from chat.models import Conversation, Message, Run
from config import metrics, ratelimits
from config.errors import AppError, overloaded
from config.logging import current_request_id

log = logging.getLogger(__name__)

LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 50, 200
KEEPALIVE = ": keep-alive\n\n"


def error_response(exc: AppError, *, headers: dict[str, str] | None = None) -> JsonResponse:
    metrics.errors.labels(exc.code).inc()
    response = JsonResponse({"error": {"code": exc.code, "message": exc.message}}, status=exc.http_status)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


View = Callable[..., Awaitable[HttpResponse]]


def api_view(*methods: str) -> Callable[[View], View]:
    """Bearer-token authentication (→ `request.api_user`), allowed methods, JSON errors."""

    def decorate(view: View) -> View:
        @csrf_exempt  # no cookie authenticates here, so there is nothing to forge
        @wraps(view)
        @sensitive_variables("raw")  # the caller's token never shows on an error page
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            raw = bearer_token(request.headers.get("Authorization"))
            try:
                # The connection goes back to the pool at once: a request may wait long on a
                # busy event loop before its next step, and must not hold one meanwhile.
                token = await database_sync_to_async(_authenticate)(raw) if raw else None
            except AppError as exc:  # over the owner's request rate
                return error_response(exc)
            except OperationalError as exc:  # no database connection free in time (pool exhausted)
                log.warning("%s %s refused: %r", request.method, request.path, exc)
                return error_response(overloaded())
            if token is None:
                challenge = 'Bearer realm="api"' + (', error="invalid_token"' if raw else "")
                refused = AppError("unauthorized", "A valid API token is required: Authorization: Bearer <token>.")
                return error_response(refused, headers={"WWW-Authenticate": challenge})
            if request.method not in methods:
                refused = AppError("method_not_allowed", f"{request.method} is not allowed here.")
                return error_response(refused, headers={"Allow": ", ".join(methods)})
            request.api_user = token.owner
            # What authenticated the request: a stream it opens ends when the token does.
            request.api_credential = Credential.of_token(token)
            try:
                return await view(request, *args, **kwargs)
            except AppError as exc:
                return error_response(exc)
            except OperationalError as exc:  # no database connection free in time (pool exhausted)
                log.warning("%s %s refused: %r", request.method, request.path, exc)
                return error_response(overloaded())

        wrapper.allowed_methods = methods  # read by the OpenAPI schema's sync test
        return wrapper

    return decorate


def _authenticate(raw: str) -> ApiToken | None:
    """The usable token, counted against its owner's request rate (one thread hop for both)."""
    token = api_token_for(raw=raw)
    if token is not None:
        ratelimits.check_api_request(user_id=token.owner_id)
    return token


# --- helpers -----------------------------------------------------------------------
def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request body as a frame, checked like a socket frame."""
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > settings.CHAT_MAX_FRAME_BYTES:
        raise AppError("too_large", f"Frames are limited to {settings.CHAT_MAX_FRAME_BYTES} bytes.")
    return protocol.parse_frame(request.body) if request.body else {}


def _int_param(request: HttpRequest, name: str, default: int, *, minimum: int = 0) -> int:
    return protocol.bounded_int(request.GET.get(name), name, default=default, minimum=minimum)


def sse_message(event: dict[str, Any]) -> str:
    """One SSE message: `id` is the event's seq (numbered events only), `event` its type,
    `data` the event itself as one line of JSON."""
    lines = [f"id: {event['seq']}"] if isinstance(event.get("seq"), int) else []
    lines.append(f"event: {event['type']}")
    lines.append("data: " + wire.encode(event))
    return "\n".join(lines) + "\n\n"


class StreamSlot:
    """One of the user's RATE_LIMIT_STREAMS_PER_USER open streams (`ratelimits.stream_slots`,
    counted across processes). Taken before anything of the stream exists, so a refusal is a
    plain JSON 429; given back when the stream's body ends, however it ends (run over, client
    gone, token revoked, error), or by the view if it fails before the body starts. Refreshed
    while the stream lives: the slot of a stream whose process died, or whose body never
    started (the client left between the headers and the first event), lapses after
    `ratelimits.SLOT_TTL_SECONDS`."""

    def __init__(self, user_id: int, slot: str) -> None:
        self.user_id, self.slot = user_id, slot
        self.refreshed = time.monotonic()
        self.held = True

    @classmethod
    async def take(cls, *, user_id: int) -> StreamSlot:
        return cls(user_id, await ratelimits.from_the_loop(ratelimits.stream_slots.take, user_id=user_id))

    async def keep(self) -> None:
        if time.monotonic() - self.refreshed >= ratelimits.SLOT_TTL_SECONDS / 3:
            self.refreshed = time.monotonic()
            await ratelimits.from_the_loop(ratelimits.stream_slots.refresh, user_id=self.user_id, slot=self.slot)

    async def give_back(self) -> None:
        if self.held:
            self.held = False
            await ratelimits.from_the_loop(ratelimits.stream_slots.give_back, user_id=self.user_id, slot=self.slot)


async def sse_follow(follower: engine.RunFollower, run_id: str, *, after: int, slot: StreamSlot) -> AsyncIterator[str]:
    """A run's events as SSE messages, with a keep-alive comment while the model is silent.
    When the client goes away Django closes this generator; the run goes on. When the token
    is revoked or expires, the stream ends with an `error` event (`unauthorized`)."""
    metrics.streams_open.inc()
    try:
        async for event in follower.events(run_id, after=after):
            yield KEEPALIVE if event is None else sse_message(event)
            await slot.keep()  # at least every RUN_KEEPALIVE_SECONDS
    except AppError as exc:
        yield sse_message(wire.error(exc))
    finally:
        metrics.streams_open.dec()
        try:
            await follower.close()
        finally:
            await slot.give_back()


async def event_stream(chunks: AsyncIterator[str]) -> StreamingHttpResponse:
    """A streaming response. The request's database connection goes back to the pool first: a
    stream can last minutes, and holding one connection per open stream is what exhausted the
    database under load (the follower borrows one briefly when it needs it)."""
    await sync_to_async(close_old_connections)()
    response = StreamingHttpResponse(chunks, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through as they come
    return response


async def own_conversation(request: HttpRequest, public_id: uuid.UUID) -> Conversation:
    return await database_sync_to_async(selectors.conversation_for)(request.api_user, public_id)


# --- endpoints ---------------------------------------------------------------------
OPENAPI_DOCUMENT = settings.BASE_DIR / "docs" / "openapi.json"


@csrf_exempt  # no cookie authenticates here either; other methods get a JSON 405
async def schema(request: HttpRequest) -> HttpResponse:
    """The OpenAPI document of `/api/`, exactly as checked in (docs/openapi.json). Public: it
    describes the API and holds nothing secret, so clients and tools can read it before they
    have a token."""
    if request.method not in ("GET", "HEAD"):
        refused = AppError("method_not_allowed", f"{request.method} is not allowed here.")
        return error_response(refused, headers={"Allow": "GET, HEAD"})
    return HttpResponse(OPENAPI_DOCUMENT.read_bytes(), content_type="application/json")


@api_view("GET")
async def agent_list(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"agents": [wire.agent_json(spec) for spec in available_specs(request.api_user)]})


@api_view("GET")
async def model_list(request: HttpRequest) -> HttpResponse:
    """The models a conversation may run on (`model` of a message or a new conversation)."""
    default = providers.default_key()
    return JsonResponse({
        "models": [
            {"key": m.key, "label": providers.label_of(m.key), "default": m.key == default}
            for m in providers.selectable()
        ]
    })


@api_view("GET", "POST")
async def conversations(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        frame = json_body(request)
        agent_key = protocol.agent_key(frame)
        model = protocol.model_choice(frame)
        conversation = await sync_to_async(services.conversation_create)(
            owner=request.api_user, agent_key=agent_key, model_key=model
        )
        return JsonResponse({"conversation": wire.conversation_json(conversation)}, status=201)

    limit = min(_int_param(request, "limit", LIST_LIMIT_DEFAULT, minimum=1), LIST_LIMIT_MAX)
    offset = _int_param(request, "offset", 0)
    page = [c async for c in Conversation.objects.for_user(request.api_user)[offset : offset + limit + 1]]
    return JsonResponse({
        "conversations": [wire.conversation_json(c) for c in page[:limit]],
        "next_offset": offset + limit if len(page) > limit else None,
    })


@api_view("GET", "PATCH", "DELETE")
async def conversation_detail(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    conversation = await own_conversation(request, public_id)
    if request.method == "DELETE":  # a reply being written is stopped first, on any process
        await engine.delete(conversation=conversation)
        return HttpResponse(status=204)
    if request.method == "PATCH":  # rename: every open tab of the user follows
        frame = json_body(request)
        title = protocol.title(frame)
        await sync_to_async(conversation_rename)(
            conversation=conversation, title=title, request_id=protocol.request_id_of(frame) or current_request_id()
        )
        return JsonResponse({"conversation": wire.conversation_json(conversation)})
    active = await Run.objects.active_in(conversation).afirst()
    messages = [m async for m in Message.objects.for_user(request.api_user).filter(conversation=conversation).select_related("run")]
    return JsonResponse({
        "conversation": {**wire.conversation_json(conversation), "run": await selectors.arun_state(active)},
        "messages": [wire.message_json(m) for m in messages],
    })


@api_view("GET")
async def conversation_export(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """The conversation as the page's export: `?format=json` (default) or `markdown`."""
    conversation = await own_conversation(request, public_id)
    fmt = protocol.export_format(request.GET.get("format"))
    document = await sync_to_async(export.export_document)(conversation=conversation, user=request.api_user, fmt=fmt)
    response = HttpResponse(document.body, content_type=document.content_type)
    response["Content-Disposition"] = f'attachment; filename="{document.filename}"'
    return response


@api_view("PUT")
async def message_feedback(request: HttpRequest, message_id: uuid.UUID) -> HttpResponse:
    """Rate one of your replies up or down with an optional comment, or take it back
    (`"rating": "none"`); every open tab of the user follows."""
    message = await selectors.amessage_for(request.api_user, message_id)
    frame = json_body(request)
    rating, comment = protocol.feedback(frame)
    feedback = await sync_to_async(feedback_give)(
        user=request.api_user, message=message, rating=rating, comment=comment,
        request_id=protocol.request_id_of(frame) or current_request_id(),
    )
    return JsonResponse({"feedback": wire.feedback_json(message, feedback)})


STREAM_PARAM = {"0": False, "false": False, "1": True, "true": True}


def wants_json(request: HttpRequest) -> bool:
    """A non-streamed run: `?stream=0`, or an Accept that asks for JSON and not for events."""
    stream = request.GET.get("stream")
    if stream is not None:
        if stream not in STREAM_PARAM:
            raise AppError("invalid_field", "'stream' must be 0, false, 1 or true.")
        return not STREAM_PARAM[stream]
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/event-stream" not in accept


@api_view("POST")
async def message_send(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """Store the message, start the run, stream its events until it finishes or pauses; or,
    non-streamed (`wants_json`), wait for that and answer the stored reply."""
    conversation = await own_conversation(request, public_id)
    frame = json_body(request)
    content = protocol.message_content(frame)
    model = protocol.model_choice(frame)
    streamed = not wants_json(request)
    # Before the run starts: a message refused for too many streams stores nothing. A
    # non-streamed run holds a follower as long, so it takes a place too.
    slot = await StreamSlot.take(user_id=request.api_user.pk)
    # Subscribe before the run exists: its first events cannot be missed (and the buffer
    # replay covers the rest).
    follower = engine.RunFollower(conversation.group_name, until_run_ends=True, credential=request.api_credential)
    try:
        await follower.subscribe()
        started = await engine.start(
            user=request.api_user,
            conversation=conversation,
            content=content,
            model=model,
            request_id=protocol.request_id_of(frame) or current_request_id(),
        )
    except BaseException:
        await follower.close()
        await slot.give_back()
        raise
    run_id = str(started.run.public_id)
    follower.follow(run_id)
    if not streamed:
        return await _reply_when_over(follower, started, slot=slot)
    return await event_stream(sse_follow(follower, run_id, after=0, slot=slot))


async def _reply_when_over(follower: engine.RunFollower, started: engine.StartedRun, *, slot: StreamSlot) -> HttpResponse:
    """Follow the run to its end (or its pause for approval) without streaming, then answer
    what is stored: `200 {message, run}`, or `202` with the approvals it waits for. The client
    going away does not stop the run, as with a stream."""
    await sync_to_async(close_old_connections)()  # as a stream: no connection held while waiting
    try:
        async for _event in follower.events(str(started.run.public_id), after=0):
            await slot.keep()
    finally:
        await follower.close()
        await slot.give_back()
    run = await Run.objects.aget(pk=started.run.pk)
    reply = await Message.objects.select_related("run").aget(pk=started.reply.pk)
    paused = run.status == Run.Status.AWAITING_APPROVAL
    return JsonResponse(
        {"message": wire.message_json(reply), "run": await selectors.arun_state(run)}, status=202 if paused else 200
    )


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
        after = protocol.bounded_int(last_event_id, "Last-Event-ID", default=after)
    follower = engine.RunFollower(conversation.group_name, until_run_ends=True, credential=request.api_credential)
    await follower.subscribe()  # before looking at the run: nothing it publishes from now is missed
    try:
        resume = await engine.resume_point(conversation, run=run_param or None, after=after)
        if resume.unknown:
            raise AppError("not_found", "No such run in this conversation.")
        if resume.run is None:
            await follower.close()
            return HttpResponse(status=204)  # nothing to follow; tells an EventSource to stop
        run, after = resume.run, resume.after
        run_id = str(run.public_id)
        follower.follow(run_id, after=after)
        if not run.is_active:
            await follower.close()
            return await _finished_run_events(run, after=after)
        # Only a stream that stays open takes a slot: a finished run's replay is written at once.
        slot = await StreamSlot.take(user_id=request.api_user.pk)
    except BaseException:
        await follower.close()
        raise
    return await event_stream(sse_follow(follower, run_id, after=after, slot=slot))


async def _finished_run_events(run: Run, *, after: int) -> HttpResponse:
    if after >= run.last_seq:
        return HttpResponse(status=204)  # the client has it all
    events = await engine.buffered_events(str(run.public_id), after=after)
    complete = bool(events) and events[0]["seq"] == after + 1 and events[-1]["type"] in wire.END_OF_RUN
    if not complete:
        raise AppError(
            "events_expired",
            "This run has ended and its events are no longer buffered; GET the conversation for the stored reply.",
        )

    async def replay() -> AsyncIterator[str]:
        for event in events:
            yield sse_message(event)

    return await event_stream(replay())


@api_view("POST")
async def run_cancel(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    conversation = await own_conversation(request, public_id)
    run = await engine.stop(conversation=conversation)
    # Stopping is asynchronous: the stream (or GET of the conversation) shows the outcome.
    return JsonResponse({"run": str(run.public_id)}, status=202)


@api_view("POST")
async def approval_decide(request: HttpRequest, public_id: uuid.UUID, call_id: str) -> HttpResponse:
    conversation = await own_conversation(request, public_id)
    approve, reason = protocol.approval_decision(json_body(request))
    if not protocol.known_call_id(call_id):  # too long, or text no stored call id has
        raise AppError("not_found", engine.APPROVAL_NOT_FOUND)
    approval = await engine.decide(
        user=request.api_user, conversation=conversation, call_id=call_id, approve=approve, reason=reason
    )
    run = await Run.objects.aget(pk=approval.run_id)
    pending = [a.call_id async for a in run.approvals.pending()]
    return JsonResponse({
        "approval": {"call_id": approval.call_id, "status": approval.status, "reason": approval.reason},
        "run": str(run.public_id),
        # Empty: the run has resumed; follow it with GET …/events?run=<run>&after=<last seq seen>.
        "pending": pending,
    })


@api_view("GET", "POST", "PUT", "PATCH", "DELETE")
async def not_found(request: HttpRequest) -> HttpResponse:
    raise AppError("not_found", "No such endpoint.")
