"""Rate limits, with the `limits` library: counted in Redis when `REDIS_URL` is set (so every
process shares them), in process memory otherwise. Each limit is a setting in `limits`'
notation ("20/second", "100/hour"); an empty setting switches that limit off.

Over a limit, callers raise `AppError("rate_limited", …, retry_after=…)`: the socket answers
with an `error` (and stays open unless the client keeps flooding), HTTP with 429 and
`Retry-After`. Sign-ups per IP are allauth's own limit (`ACCOUNT_RATE_LIMITS`, in settings),
keyed by `client_ip` like every limit per address.

Concurrent sockets and event streams per user are not a rate: `Slots` counts them in a Redis sorted set per
user and kind (or a dict), each entry refreshed while its connection lives, so a crashed
process's connections drop out after `SLOT_TTL_SECONDS`.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import threading
import time
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from config.errors import AppError

SLOT_TTL_SECONDS = 90.0


@functools.cache
def _shared_limiter() -> MovingWindowRateLimiter:
    """Limits that must hold across processes (per user, per token)."""
    storage = storage_from_string(settings.REDIS_URL, key_prefix="agents-chat-limits") if settings.REDIS_URL else MemoryStorage()
    return MovingWindowRateLimiter(storage)


@functools.cache
def _local_limiter() -> MovingWindowRateLimiter:
    """Limits of something that lives in one process (a socket): never a network round trip."""
    return MovingWindowRateLimiter(MemoryStorage())


@functools.cache
def _item(rate: str) -> RateLimitItem:
    return parse(rate)


def _hit(limiter: MovingWindowRateLimiter, rate: str, key: str) -> float | None:
    """Count one; None when allowed, else the seconds until it would be."""
    if not rate:
        return None
    item = _item(rate)
    if limiter.hit(item, key):
        return None
    reset_at = limiter.get_window_stats(item, key).reset_time
    return max(reset_at - time.time(), 0.0)


def client_ip(request) -> str:
    """The address a request came from, for every limit per client address.

    daphne runs without `--proxy-headers` (Dockerfile), so `REMOTE_ADDR` is the peer that
    connected: the client itself, or the nearest proxy. Each of the `TRUSTED_PROXY_COUNT`
    proxies in front appends the address it saw to `X-Forwarded-For`, so the client is the
    Nth entry from the right; everything left of it was written by the client and proves
    nothing. With no proxy trusted (the default), the header is ignored. A header shorter than
    the proxy chain or holding no address did not come through the chain: the peer is used."""
    peer = request.META.get("REMOTE_ADDR", "")
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return peer
    entries = [e.strip() for e in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if e.strip()]
    if len(entries) < count:
        return peer
    try:
        return str(ipaddress.ip_address(entries[-count]))
    except ValueError:
        return peer


def refuse_over(retry_after: float | None, what: str) -> None:
    if retry_after is not None:
        seconds = max(math.ceil(retry_after), 1)
        raise AppError("rate_limited", f"Too many {what}; try again in {seconds} s.", retry_after=seconds)


def check_conversation_create(*, user_id: int) -> None:
    """New conversations per user (RATE_LIMIT_CONVERSATIONS)."""
    refuse_over(_hit(_shared_limiter(), settings.RATE_LIMIT_CONVERSATIONS, f"conversations:{user_id}"), "new conversations")


def check_api_request(*, user_id: int) -> None:
    """HTTP API requests per user (RATE_LIMIT_API_REQUESTS), whichever of their tokens sends
    them: counted per token, minting more tokens would multiply the limit."""
    refuse_over(_hit(_shared_limiter(), settings.RATE_LIMIT_API_REQUESTS, f"api:user:{user_id}"), "API requests")


def check_frame(*, user_id: int) -> None:
    """Socket frames per user (RATE_LIMIT_SOCKET_FRAMES), all their sockets together and across
    processes: counted per socket, opening more sockets would multiply the limit. Sockets call
    `acheck_frame`."""
    refuse_over(
        _hit(_shared_limiter(), settings.RATE_LIMIT_SOCKET_FRAMES, f"frames:user:{user_id}"),
        "frames (all your connections together)",
    )


async def from_the_loop(call, /, **kwargs):
    """A count of this module, from the event loop. With Redis it is a network round trip,
    made in a thread; in memory it takes microseconds and runs in place: no thread hop, and
    one thread only (`limits`' MemoryStorage can hand two threads two locks for a key they
    both use for the first time, and then count one too many)."""
    if settings.REDIS_URL:
        return await sync_to_async(call, thread_sensitive=False)(**kwargs)
    return call(**kwargs)


async def acheck_frame(*, user_id: int) -> None:
    """`check_frame` from the event loop."""
    await from_the_loop(check_frame, user_id=user_id)


def flooding(*, socket: str) -> bool:
    """A socket that keeps sending after being told to slow down (RATE_LIMIT_SOCKET_REFUSALS
    refused frames) is closed."""
    return _hit(_local_limiter(), settings.RATE_LIMIT_SOCKET_REFUSALS, f"refused:{socket}") is not None


@functools.cache
def _redis():
    """The client of every slot count (None without REDIS_URL: counted in this process)."""
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5) if settings.REDIS_URL else None


class Slots:
    """How many of one kind of long-lived connection each user has open, across processes
    (at most the setting `setting`; 0 = no cap). Over the cap, `take` raises `AppError(code)`."""

    def __init__(self, kind: str, *, setting: str, code: str, what: str) -> None:
        self.kind, self.setting, self.code, self.what = kind, setting, code, what
        self._memory: dict[int, dict[str, float]] = {}
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        return getattr(settings, self.setting)

    def _key(self, user_id: int) -> str:
        return f"agents-chat-limits:{self.kind}:{user_id}"

    def take(self, *, user_id: int) -> str:
        """A slot for a new connection of this user, or AppError(self.code)."""
        limit = self.limit
        slot = uuid.uuid4().hex
        if not limit:
            return slot
        now = time.time()
        client = _redis()
        if client is None:
            with self._lock:
                held = {s: at for s, at in self._memory.get(user_id, {}).items() if at > now}
                taken = len(held) < limit
                if taken:
                    held[slot] = now + SLOT_TTL_SECONDS
                self._memory[user_id] = held
        else:
            key = self._key(user_id)
            pipe = client.pipeline()
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {slot: now + SLOT_TTL_SECONDS})
            pipe.zcard(key)
            pipe.expire(key, int(SLOT_TTL_SECONDS) + 1)
            count = pipe.execute()[2]
            taken = count <= limit
            if not taken:
                client.zrem(key, slot)
        if not taken:
            raise AppError(self.code, f"You have {limit} {self.what} open already; close one first.", retry_after=10)
        return slot

    def refresh(self, *, user_id: int, slot: str) -> None:
        if not self.limit:
            return
        until = time.time() + SLOT_TTL_SECONDS
        client = _redis()
        if client is None:
            with self._lock:
                self._memory.setdefault(user_id, {})[slot] = until
        else:
            client.zadd(self._key(user_id), {slot: until}, xx=True)

    def give_back(self, *, user_id: int, slot: str) -> None:
        client = _redis()
        if client is None:
            with self._lock:
                self._memory.get(user_id, {}).pop(slot, None)
        else:
            client.zrem(self._key(user_id), slot)


socket_slots = Slots("sockets", setting="RATE_LIMIT_SOCKETS_PER_USER", code="rate_limited", what="connections")
# A stream the cap refuses is answered before it opens: a client told `too_many_streams` knows
# to close one of its streams rather than to slow down.
stream_slots = Slots("streams", setting="RATE_LIMIT_STREAMS_PER_USER", code="too_many_streams", what="event streams")


def reset() -> None:
    """Forget every count (tests change the settings), Redis' too: the counts there outlive the
    process, and the next test run's users get the same ids."""
    if settings.REDIS_URL:
        _shared_limiter().storage.reset()  # every key under the prefix, the slots' included
    _shared_limiter.cache_clear()
    _local_limiter.cache_clear()
    _item.cache_clear()
    _redis.cache_clear()
    socket_slots._memory.clear()
    stream_slots._memory.clear()
