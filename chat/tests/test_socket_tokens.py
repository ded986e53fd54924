"""The chat socket through the project's real ASGI stack (`config.asgi.application`): an API
token authenticates a handshake without Origin; a session cookie still needs an Origin that
Django's CSRF check would accept (scheme, host and port)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from accounts.services import api_token_create, api_token_revoke
from chat.models import Conversation, Message
from chat.tests.helpers import of_type, receive_until
from chat.tests.scripts import streamed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _scripted(settings):
    settings.AGENTS_MODEL_PROVIDER = "scripted"


def socket(headers: list[tuple[bytes, bytes]], host: bytes = b"127.0.0.1") -> WebsocketCommunicator:
    from config.asgi import application

    return WebsocketCommunicator(application, "/ws/chat/", headers=[(b"host", host), *headers])


def bearer(secret: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {secret}".encode())


@sync_to_async
def session_cookie(user) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def test_bearer_token_socket_without_origin_chats_as_the_tokens_owner(user, script):
    secret = (await sync_to_async(api_token_create)(owner=user, name="cli")).secret
    ws = socket([bearer(secret)])
    connected, _ = await ws.connect()
    assert connected
    with script([streamed("Hi ", "there.")]):
        await ws.send_json_to({"type": "conversation.create", "agent": "assistant"})
        created = await ws.receive_json_from()
        await ws.send_json_to({"type": "message.send", "conversation": created["conversation"], "content": "Hello"})
        events = await receive_until(ws, "run.finished")
    await ws.disconnect()

    assert await Conversation.objects.filter(public_id=created["conversation"], owner=user).aexists()
    assert of_type(events, "message.completed")[0]["content"] == "Hi there."
    assert await Message.objects.filter(conversation__owner=user, role="assistant", status="completed").acount() == 1


async def test_bearer_token_decides_even_when_a_session_cookie_of_someone_else_is_sent(user, other_user):
    secret = (await sync_to_async(api_token_create)(owner=user, name="cli")).secret
    ws = socket([bearer(secret), await session_cookie(other_user)])
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "conversation.create", "agent": "assistant"})
    created = await ws.receive_json_from()
    await ws.disconnect()
    assert await Conversation.objects.filter(public_id=created["conversation"], owner=user).aexists()


@pytest.mark.parametrize("kind", ["revoked", "unknown", "garbage", "empty-user-cookie"])
async def test_invalid_token_gets_the_same_4401_close_as_an_anonymous_socket(user, kind):
    created = await sync_to_async(api_token_create)(owner=user, name="cli")
    await sync_to_async(api_token_revoke)(token=created.token)
    secret = {
        "revoked": created.secret,
        "unknown": "ac_0123456789_" + "x" * 43,
        "garbage": "not-a-token",
        "empty-user-cookie": created.secret,
    }[kind]
    headers = [bearer(secret)]
    if kind == "empty-user-cookie":  # a valid session does not rescue an invalid token
        headers.append(await session_cookie(user))
    ws = socket(headers)
    connected, _ = await ws.connect()
    assert connected  # accepted, so the close code reaches the client
    closed = await ws.receive_output(5)
    assert closed == {**closed, "type": "websocket.close", "code": 4401}


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer \xc3\xa9", b"Bearer ac_0123456789_\xff\xfe", b"Bearer ac_\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9_x",
     b"Bearer \x00", b"Bearer " + b"\xff" * 20000],
)
async def test_a_malformed_token_socket_gets_the_same_4401_close(user, authorization):
    ws = socket([(b"authorization", authorization)])
    connected, _ = await ws.connect()
    assert connected
    closed = await ws.receive_output(5)
    assert closed == {**closed, "type": "websocket.close", "code": 4401}


async def test_cookie_socket_needs_an_allowed_origin(user):
    cookie = await session_cookie(user)

    for headers in ([cookie], [cookie, (b"origin", b"http://evil.example")]):
        ws = socket(headers)
        connected, _ = await ws.connect()
        assert not connected, headers  # refused at the handshake: 403

    ws = socket([cookie, (b"origin", b"http://127.0.0.1:8000")], host=b"127.0.0.1:8000")
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "ping", "request_id": "p"})
    assert await ws.receive_json_from() == {"type": "pong", "request_id": "p"}
    await ws.disconnect()


async def test_anonymous_socket_with_allowed_origin_is_still_closed_with_4401():
    ws = socket([(b"origin", b"http://localhost")], host=b"localhost")
    connected, _ = await ws.connect()
    assert connected
    closed = await ws.receive_output(5)
    assert closed["type"] == "websocket.close" and closed["code"] == 4401


@pytest.mark.parametrize(
    ("host", "origin", "allowed_hosts"),
    [
        (b"127.0.0.1:8000", b"http://127.0.0.1:9000", None),  # another port of the host
        (b"127.0.0.1:8000", b"https://127.0.0.1:8000", None),  # another scheme
        (b"127.0.0.1", b"http://127.0.0.1:8000", None),
        (b"chat.example.com", b"http://evil.example.com", [".example.com"]),  # a sibling subdomain
        (b"chat.example.com", b"http://example.com", [".example.com"]),
        (b"evil.example", b"http://evil.example", None),  # a host not in ALLOWED_HOSTS
        (b"127.0.0.1", b"null", None),
    ],
)
async def test_cookie_socket_from_an_origin_csrf_refuses_is_refused(user, settings, host, origin, allowed_hosts):
    if allowed_hosts is not None:
        settings.ALLOWED_HOSTS = allowed_hosts
    settings.CSRF_TRUSTED_ORIGINS = []
    ws = socket([await session_cookie(user), (b"origin", origin)], host=host)
    connected, _ = await ws.connect()
    assert not connected  # refused at the handshake: 403, so no frame could create anything
    assert not await Conversation.objects.aexists()


@pytest.mark.parametrize(
    ("host", "origin", "trusted", "extra"),
    [
        (b"127.0.0.1:8000", b"http://127.0.0.1:8000", [], []),  # the request's own origin
        # nginx forwards `Host: localhost`; the page was served on port 8080 (the compose file)
        (b"localhost", b"http://localhost:8080", ["http://localhost:8080"], []),
        (b"chat.example.com", b"https://app.example.com", ["https://*.example.com"], []),
        # behind TLS: the proxy's X-Forwarded-Proto makes the request's own origin https
        (b"chat.example.com", b"https://chat.example.com", [], [(b"x-forwarded-proto", b"https")]),
    ],
)
async def test_cookie_socket_from_an_origin_csrf_accepts_chats_as_the_user(user, settings, host, origin, trusted, extra):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", ".example.com"]
    settings.CSRF_TRUSTED_ORIGINS = trusted
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    ws = socket([await session_cookie(user), (b"origin", origin), *extra], host=host)
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "conversation.create", "agent": "assistant"})
    created = await ws.receive_json_from()
    await ws.disconnect()
    assert await Conversation.objects.filter(public_id=created["conversation"], owner=user).aexists()
