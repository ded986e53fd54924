"""A signed-in WebSocket client for tests against real daphne processes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from django.test import Client
from websockets.asyncio.client import connect


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


class ChatClient:
    def __init__(self, server, cookie: str) -> None:
        self.server = server
        self.cookie = cookie
        self.ws = None
        self.seen: list[dict[str, Any]] = []

    async def __aenter__(self) -> ChatClient:
        self.ws = await connect(self.server.ws, additional_headers={"Cookie": self.cookie}, origin=self.server.http)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def receive(self, *, timeout: float = 20) -> dict[str, Any]:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.seen.append(event)
        return event

    async def until(self, kind: str, *, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
        """Events up to and including the `count`-th event of type `kind`."""
        events = []
        while True:
            event = await self.receive(timeout=timeout)
            events.append(event)
            if event["type"] == "error" and kind != "error":
                raise AssertionError(f"server error while waiting for {kind}: {event}; seen: {self.seen}")
            if event["type"] == kind:
                count -= 1
                if count == 0:
                    return events

    async def create(self, agent: str = "diagnostics") -> str:
        await self.send({"type": "conversation.create", "agent": agent})
        return (await self.until("conversation.created"))[-1]["conversation"]

    async def say(self, conversation: str, content: str, request_id: str = "r") -> None:
        await self.send({"type": "message.send", "conversation": conversation, "content": content, "request_id": request_id})


def deltas(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "message.delta")


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]
