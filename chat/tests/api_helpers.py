"""Helpers for tests of the HTTP API: a token-authenticated async client and an SSE reader."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.services import api_token_create


@dataclass
class Sse:
    """One parsed SSE message (comments are kept as `comment`)."""

    id: str | None = None
    event: str | None = None
    data: dict[str, Any] | None = None
    comment: str | None = None


def parse_sse(text: str) -> list[Sse]:
    messages = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        message = Sse()
        for line in block.split("\n"):
            if line.startswith(":"):
                message.comment = line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                if name == "data":
                    message.data = json.loads(value)
                elif name in ("id", "event"):
                    setattr(message, name, value)
        messages.append(message)
    return messages


class SseReader:
    """Reads an SSE response chunk by chunk (a streaming response of the async test client,
    or any async iterator of bytes)."""

    def __init__(self, chunks) -> None:
        self.chunks = chunks.__aiter__()
        self.pending = ""
        self.messages: list[Sse] = []

    async def next(self, *, timeout: float = 10) -> Sse:
        while "\n\n" not in self.pending:
            chunk = await asyncio.wait_for(self.chunks.__anext__(), timeout)
            self.pending += chunk.decode() if isinstance(chunk, bytes) else chunk
        block, self.pending = self.pending.split("\n\n", 1)
        message = parse_sse(block + "\n\n")[0]
        self.messages.append(message)
        return message

    async def until(self, kind: str, *, timeout: float = 10) -> list[Sse]:
        """Messages up to and including the first event of type `kind`."""
        seen = []
        while True:
            message = await self.next(timeout=timeout)
            seen.append(message)
            if message.event == kind:
                return seen

    async def rest(self, *, timeout: float = 10) -> list[Sse]:
        """Every remaining message, until the stream ends."""
        seen = []
        while True:
            try:
                seen.append(await self.next(timeout=timeout))
            except StopAsyncIteration:
                return seen


def events(messages: list[Sse]) -> list[dict[str, Any]]:
    return [m.data for m in messages if m.data is not None]


async def token_for(user, name: str = "tests") -> str:
    return (await sync_to_async(api_token_create)(owner=user, name=name)).secret


class TokenClient(AsyncClient):
    """An async test client that sends `Authorization: Bearer <token>` on every request.
    (Headers given to AsyncClient's constructor reach the scope as `http-authorization` in
    this Django version, so they are added per request.)"""

    def __init__(self, token: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.token = token

    def generic(self, method, path, *args, headers=None, **kwargs):
        if self.token is not None:
            headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        return super().generic(method, path, *args, headers=headers, **kwargs)


def api_client(token: str, **kwargs) -> TokenClient:
    return TokenClient(token, **kwargs)
