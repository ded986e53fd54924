"""Selectors for the chat page's sidebar: the user's conversations a page at a time, and search
over their titles and messages.

Pages are keyset-paginated on (updated_at, id): every page costs the same two queries however
many conversations the user has, and a conversation that becomes active while the user scrolls
moves to the top instead of shifting every later page.

Search: PostgreSQL full-text search (`english` configuration, ranked, excerpts from
`ts_headline`), as `agents_app/knowledge.py` does, plus a substring match on titles so a
half-typed word still finds a conversation by name. SQLite (the zero-configuration dev box): every
word must occur (case-insensitive substring), newest first. Only the user's own conversations are
ever searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet

from chat.models import Conversation, Message, Run

PAGE_SIZE = 30
MAX_QUERY_CHARS = 200
_WORD = re.compile(r"\w+", re.UNICODE)
# ts_headline's markers: control characters never appear in the text, and are replaced by <mark>
# only after the excerpt has been escaped (see `Excerpt`).
_START, _STOP = "\x02", "\x03"


class BadCursor(ValueError):
    pass


@dataclass(frozen=True)
class ConversationPage:
    conversations: list[Conversation]
    next_cursor: str  # "" on the last page


def _sidebar_queryset(user) -> QuerySet:
    running = Run.objects.active().filter(conversation=OuterRef("pk"))
    waiting = running.filter(status=Run.Status.AWAITING_APPROVAL)
    return (
        Conversation.objects.for_user(user)
        .annotate(is_running=Exists(running), is_waiting=Exists(waiting))
        .only("public_id", "title", "agent_key", "updated_at")
        .order_by("-updated_at", "-id")
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(conversation: Conversation) -> str:
    """The position after `conversation`: its activity time in microseconds and its id (URL-safe)."""
    return f"{(conversation.updated_at - _EPOCH) // timedelta(microseconds=1)}-{conversation.pk}"


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        micros, pk = cursor.split("-")
        return _EPOCH + timedelta(microseconds=int(micros)), int(pk)
    except (ValueError, OverflowError):
        raise BadCursor(cursor) from None


def conversation_item(*, user, public_id) -> ConversationPage:
    """One of the user's conversations as a sidebar page of its own (empty when it is not
    theirs): the entry a tab inserts when another tab's activity brings it to the top."""
    return ConversationPage(list(_sidebar_queryset(user).filter(public_id=public_id)[:1]), "")


def conversation_page(*, user, cursor: str = "", size: int = PAGE_SIZE) -> ConversationPage:
    """The user's conversations, newest activity first, `size` at a time after `cursor`."""
    conversations = _sidebar_queryset(user)
    if cursor:
        when, pk = _decode_cursor(cursor)
        conversations = conversations.filter(Q(updated_at__lt=when) | Q(updated_at=when, id__lt=pk))
    rows = list(conversations[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return ConversationPage(rows, encode_cursor(rows[-1]) if more and rows else "")


@dataclass(frozen=True)
class Excerpt:
    """A piece of a message around what matched, split so a template can mark the matches while
    escaping everything (message text is model output)."""

    parts: tuple[tuple[str, bool], ...]  # (text, is_match)

    @classmethod
    def from_markers(cls, text: str) -> Excerpt:
        parts: list[tuple[str, bool]] = []
        for index, piece in enumerate(re.split(f"[{_START}{_STOP}]", text)):
            if piece:
                parts.append((piece, index % 2 == 1))
        return cls(tuple(parts))

    @classmethod
    def around(cls, text: str, terms: list[str], *, chars: int = 140) -> Excerpt:
        """Substring fallback: a window around the first match, every term marked."""
        flat = " ".join(text.split())
        lower = flat.lower()
        first = min((lower.find(t) for t in terms if t in lower), default=0)
        start = max(0, first - chars // 3)
        window = flat[start : start + chars]
        if start:
            window = "…" + window
        if start + chars < len(flat):
            window += "…"
        pattern = re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)), re.I)
        return cls.from_markers(pattern.sub(lambda m: f"{_START}{m.group(0)}{_STOP}", window))

    def __str__(self) -> str:
        return "".join(text for text, _ in self.parts)


@dataclass(frozen=True)
class SearchHit:
    conversation: Conversation
    message: Message | None  # None: the title matched
    excerpt: Excerpt | None

    @property
    def anchor(self) -> str:
        return f"m-{self.message.public_id}" if self.message else ""


def _terms(query: str) -> list[str]:
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(query[:MAX_QUERY_CHARS])))


def search_conversations(*, user, query: str, limit: int = 20) -> list[SearchHit]:
    """The user's conversations whose title, and messages whose text, match `query`: title
    matches first, then messages (best first on PostgreSQL, newest first elsewhere)."""
    query = " ".join(query.split())[:MAX_QUERY_CHARS]
    terms = _terms(query)
    if not terms:
        return []
    conversations = _sidebar_queryset(user)
    messages = (
        Message.objects.for_user(user)
        .select_related("conversation")
        .only("public_id", "content", "role", "created_at", "conversation__public_id", "conversation__title",
              "conversation__agent_key", "conversation__updated_at")
    )
    if connection.vendor == "postgresql":
        titled, found = _search_postgres(conversations, messages, query, limit)
    else:
        titled, found = _search_terms(conversations, messages, terms, limit)
    hits = [SearchHit(c, None, None) for c in titled]
    hits += found
    return hits[:limit]


def _search_postgres(conversations, messages, query: str, limit: int):
    from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank, SearchVector

    search = SearchQuery(query, search_type="websearch", config="english")
    titled = list(
        conversations.annotate(match=SearchVector("title", config="english"))
        .filter(Q(match=search) | Q(title__icontains=query))[:limit]
    )
    vector = SearchVector("content", config="english")
    rows = (
        messages.annotate(
            document=vector,
            rank=SearchRank(vector, search),
            headline=SearchHeadline(
                "content", search, config="english", start_sel=_START, stop_sel=_STOP,
                max_words=24, min_words=8, max_fragments=1,
            ),
        )
        .filter(document=search)  # @@: ts_rank is never exactly 0, so "rank > 0" is no match test
        .order_by("-rank", "-created_at")[:limit]
    )
    found = [SearchHit(m.conversation, m, Excerpt.from_markers(" ".join(m.headline.split()))) for m in rows]
    return titled, found


def _search_terms(conversations, messages, terms: list[str], limit: int):
    title_match = Q()
    content_match = Q()
    for term in terms:
        title_match &= Q(title__icontains=term)
        content_match &= Q(content__icontains=term)
    titled = list(conversations.filter(title_match)[:limit])
    rows = messages.filter(content_match).order_by("-created_at", "-id")[:limit]
    found = [SearchHit(m.conversation, m, Excerpt.around(m.content, terms)) for m in rows]
    return titled, found
