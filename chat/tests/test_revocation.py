"""A socket or an SSE stream lives only as long as what authenticated it: a revoked or expired
token, a signed-out session, a new password or a deactivated user closes it with 4401 within
seconds, and a frame that arrives meanwhile is refused. Through the real ASGI stack."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from accounts import credentials
from accounts.services import api_token_create, api_token_revoke
from chat.models import Conversation
from chat.tests.api_helpers import SseReader, api_client
from chat.tests.scripts import streamed

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED = {"type": "websocket.close", "code": 4401}


def socket(headers: list[tuple[bytes, bytes]]) -> WebsocketCommunicator:
    from config.asgi import application

    return WebsocketCommunicator(application, "/ws/chat/", headers=[(b"host", b"127.0.0.1"), *headers])


async def token_socket(user, **token_fields) -> tuple[WebsocketCommunicator, object]:
    created = await sync_to_async(api_token_create)(owner=user, name="cli", **token_fields)
    ws = socket([(b"authorization", f"Bearer {created.secret}".encode())])
    assert (await ws.connect())[0]
    return ws, created.token


async def browser_socket(client: Client) -> WebsocketCommunicator:
    ws = socket([(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()), (b"origin", b"http://127.0.0.1")])
    assert (await ws.connect())[0]
    return ws


@sync_to_async
def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def closed_with(ws: WebsocketCommunicator, *, timeout: float = 5) -> dict:
    """The close the server sent (the consumer is then shut down like a client that left)."""
    output = await ws.receive_output(timeout)
    while output["type"] != "websocket.close":
        output = await ws.receive_output(timeout)
    await ws.disconnect()
    return output


async def still_open(ws: WebsocketCommunicator) -> bool:
    await ws.send_json_to({"type": "ping", "request_id": "alive"})
    return (await ws.receive_json_from(timeout=5)) == {"type": "pong", "request_id": "alive"}


async def test_revoking_a_token_closes_the_sockets_it_opened(user):
    ws, token = await token_socket(user)
    other, _ = await token_socket(user)

    await sync_to_async(api_token_revoke)(token=token)

    assert await closed_with(ws) == {**CLOSED, "reason": "Signed out, or access was revoked."}
    assert await still_open(other)  # another token of the same user is not affected
    await other.disconnect()


async def test_an_expiring_token_closes_its_socket_when_it_expires(user):
    ws, _ = await token_socket(user, expires_at=timezone.now() + timedelta(seconds=1))
    assert await still_open(ws)
    assert (await closed_with(ws, timeout=5))["code"] == 4401


async def test_signing_out_closes_that_sessions_sockets_only(user):
    leaving, staying = await signed_in(user), await signed_in(user)
    ws, other = await browser_socket(leaving), await browser_socket(staying)

    response = await sync_to_async(leaving.post)("/accounts/logout/")

    assert response.status_code == 302
    assert (await closed_with(ws))["code"] == 4401
    assert await still_open(other)
    await other.disconnect()


async def test_a_new_password_closes_browser_sockets_and_revokes_api_tokens_closing_theirs(user, other_user):
    client = await signed_in(user)
    browser = await browser_socket(client)
    cli, token = await token_socket(user)
    bystander, _ = await token_socket(other_user)

    response = await sync_to_async(client.post)(
        "/accounts/password/change/",
        {"oldpassword": "correct horse battery staple", "password1": "a brand new passphrase 42", "password2": "a brand new passphrase 42"},
    )

    assert response.status_code == 302
    assert (await closed_with(browser))["code"] == 4401 and (await closed_with(cli))["code"] == 4401
    await token.arefresh_from_db()
    assert token.revoked_at is not None
    assert await still_open(bystander)
    await bystander.disconnect()


async def test_deactivating_a_user_closes_every_socket_of_theirs(user, other_user):
    browser = await browser_socket(await signed_in(user))
    cli, _ = await token_socket(user)
    bystander, _ = await token_socket(other_user)

    def deactivate() -> None:
        user.is_active = False
        user.save()

    await sync_to_async(deactivate)()

    assert (await closed_with(browser))["code"] == 4401 and (await closed_with(cli))["code"] == 4401
    assert await still_open(bystander)
    await bystander.disconnect()


async def test_a_frame_after_revocation_is_refused_even_if_the_message_was_lost(user, monkeypatch, script):
    ws, token = await token_socket(user)
    monkeypatch.setattr(credentials, "revoke", lambda *groups, reason: None)  # the push never arrives
    monkeypatch.setattr("accounts.services.revoke", lambda *groups, reason: None)
    await sync_to_async(api_token_revoke)(token=token)

    with script([streamed("never")]) as model:
        await ws.send_json_to({"type": "conversation.create", "agent": "assistant", "request_id": "late"})
        refused = await ws.receive_json_from(timeout=5)
        assert (await closed_with(ws))["code"] == 4401

    assert refused == {**refused, "type": "error", "code": "unauthorized", "request_id": "late"}
    assert not await Conversation.objects.filter(owner=user).aexists() and not model.calls


async def test_revoking_a_token_ends_its_sse_stream_with_an_error(user, script):
    created = await sync_to_async(api_token_create)(owner=user, name="cli")
    api = api_client(created.secret)
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    gate = asyncio.Event()
    with script([streamed("Once ", "upon ", "a time.", gate=gate)]):
        response = await api.post(
            f"/api/conversations/{conversation.public_id}/messages", {"content": "A story"}, content_type="application/json"
        )
        reader = SseReader(response.streaming_content)
        await reader.until("message.delta")
        await sync_to_async(api_token_revoke)(token=created.token)
        rest = await reader.rest()
        gate.set()

    assert rest[-1].event == "error" and rest[-1].data["code"] == "unauthorized"
    assert "run.finished" not in [message.event for message in rest]
