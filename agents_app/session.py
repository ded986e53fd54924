"""The SDK's conversation memory, stored through the Django ORM.

`DjangoSession` keeps every rule of the SDK's own sessions (see `agents.memory.SQLiteSession`):
latest-N reads in chronological order, batches appended atomically and in order, duplicates
kept, items returned exactly as given, and mutations that finish (commit or roll back) even
when the awaiting task is cancelled. Writers to one session are serialised by a row lock on
its `AgentSession`, so batches from two processes never interleave and two concurrent
`pop_item` calls never return the same item.

During a run whose model input is bounded (`agents_app.context_window`), `get_items()` without
a limit reads only the newest items the model could still receive, newest first and page by
page, so a turn of a 1,000-turn conversation reads what a short one does; every item stays
stored, and every explicit `limit` reads exactly as before.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from agents.items import TResponseInputItem
from agents.memory import SessionABC, SessionSettings
from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from agents_app import context_window
from agents_app.models import AgentSession, SessionItem

T = TypeVar("T")


async def finish_even_if_cancelled(awaitable: Awaitable[T]) -> T:
    """Await a database mutation; if the caller is cancelled meanwhile, let it commit or roll
    back first and then re-raise the cancellation. A thread cannot be interrupted, so this is
    what keeps a batch from being half-written from the caller's point of view."""
    task = asyncio.ensure_future(awaitable)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as unhandled
        raise cancelled
    return task.result()


class DjangoSession(SessionABC):
    def __init__(self, session_id: str, *, session_settings: SessionSettings | None = None) -> None:
        self.session_id = session_id
        self.session_settings = session_settings or SessionSettings()
        self._pk: int | None = None  # the AgentSession row, once this instance has written to it

    # --- SessionABC -------------------------------------------------------------
    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        if limit is None:
            limit = self.session_settings.limit if self.session_settings else None
        if limit is not None and limit <= 0:
            return []
        window = context_window.history_window() if limit is None else None
        if window is not None:
            return await window.read_history(self._read_page)
        return await sync_to_async(self._get_items)(limit)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        if not items:
            return
        # Serialise now: the caller may mutate its dicts after we return.
        payloads = [json.dumps(item) for item in items]
        await finish_even_if_cancelled(sync_to_async(self._add_payloads)(payloads))

    async def pop_item(self) -> TResponseInputItem | None:
        return await finish_even_if_cancelled(sync_to_async(self._pop_item)())

    async def clear_session(self) -> None:
        await finish_even_if_cancelled(sync_to_async(self._clear)())

    # --- Extras used by the run service -------------------------------------------
    async def last_item_id(self) -> int:
        """A mark to roll back to: the id of the newest stored item (0 when empty)."""
        return await sync_to_async(self.last_item_id_sync)()

    async def _read_page(self, before: int | None, size: int) -> list[tuple[int, str]]:
        return await sync_to_async(self._page)(before, size)

    async def truncate_after(self, mark: int) -> int:
        """Remove every item stored after `mark`; returns how many were removed."""
        return await finish_even_if_cancelled(sync_to_async(self.truncate_after_sync)(mark))

    # --- Synchronous ORM work (runs on Django's sync thread) ---------------------
    def _items(self):
        return SessionItem.objects.filter(session__session_id=self.session_id)

    def _get_items(self, limit: int | None) -> list[TResponseInputItem]:
        rows = self._items().order_by("-id").values_list("payload", flat=True)
        if limit is not None:
            rows = rows[:limit]
        return [json.loads(payload) for payload in reversed(list(rows))]

    def _page(self, before: int | None, size: int) -> list[tuple[int, str]]:
        """Up to `size` stored rows `(id, payload)` older than `before`, newest first."""
        rows = self._items().order_by("-id")
        if before is not None:
            rows = rows.filter(id__lt=before)
        return list(rows.values_list("id", "payload")[:size])

    def _lock_session(self) -> AgentSession | None:
        # The row lock (FOR UPDATE on Postgres; SQLite's IMMEDIATE transactions lock the whole
        # file) serialises every writer of this session until commit.
        return AgentSession.objects.select_for_update().filter(session_id=self.session_id).first()

    @transaction.atomic
    def _add_payloads(self, payloads: list[str]) -> None:
        # Touching the row locks it until commit (like FOR UPDATE): writers of one session go
        # one at a time. Two statements per batch once the session's row is known.
        now = timezone.now()
        if self._pk is None or not AgentSession.objects.filter(pk=self._pk).update(updated_at=now):
            session, created = AgentSession.objects.get_or_create(session_id=self.session_id)
            self._pk = session.pk
            if not created:  # the insert holds a new row's lock; an existing one is locked by touching it
                AgentSession.objects.filter(pk=self._pk).update(updated_at=now)
        SessionItem.objects.bulk_create([SessionItem(session_id=self._pk, payload=p) for p in payloads])

    @transaction.atomic
    def _pop_item(self) -> TResponseInputItem | None:
        session = self._lock_session()
        if session is None:
            return None
        newest = session.items.order_by("-id").first()
        if newest is None:
            return None
        newest.delete()
        return json.loads(newest.payload)

    @transaction.atomic
    def _clear(self) -> None:
        AgentSession.objects.filter(session_id=self.session_id).delete()

    def last_item_id_sync(self) -> int:
        """`last_item_id` for synchronous callers."""
        return self._items().order_by("-id").values_list("id", flat=True).first() or 0

    @transaction.atomic
    def truncate_after_sync(self, mark: int) -> int:
        """`truncate_after` for synchronous callers (inside a service's transaction)."""
        if self._lock_session() is None:
            return 0
        deleted, _ = self._items().filter(id__gt=mark).delete()
        return deleted


def session_for(conversation: Any) -> DjangoSession:
    return DjangoSession(conversation.session_id)
