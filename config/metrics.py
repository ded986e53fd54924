"""Prometheus metrics of this process (`prometheus-client`), served at `/metrics`.

Each daphne process has its own: scrape every replica (see docs/operations.md for what to
alert on). The endpoint answers to `Authorization: Bearer <METRICS_TOKEN>` when that setting
is set, and to signed-in staff; everyone else gets 404, so its existence is not revealed.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.debug import sensitive_variables
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

registry = CollectorRegistry()

runs_in_flight = Gauge(
    "agents_runs_in_flight", "Runs this process is executing now.", registry=registry
)
runs_started = Counter("agents_runs_started", "Runs started or resumed by this process.", registry=registry)
runs_finished = Counter("agents_runs_finished", "Runs this process ended, by status.", ["status"], registry=registry)
time_to_first_token = Histogram(
    "agents_time_to_first_token_seconds", "From the run's start to its first streamed text.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64), registry=registry,
)
run_duration = Histogram(
    "agents_run_duration_seconds", "From the run's start to its end.",
    buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 300), registry=registry,
)
tokens = Counter("agents_tokens", "Tokens used by runs, by model and direction (input/output).", ["model", "direction"], registry=registry)
errors = Counter("agents_errors", "Refusals sent to clients (socket `error`, HTTP errors), by code.", ["code"], registry=registry)
sockets_open = Gauge("agents_sockets_open", "Chat sockets open on this process.", registry=registry)
streams_open = Gauge("agents_sse_streams_open", "SSE streams open on this process.", registry=registry)
replay_buffer_runs = Gauge("agents_replay_buffer_runs", "Runs whose events this process buffers in memory (no Redis).", registry=registry)


class _PoolCollector:
    """Database and Redis pool use, read when scraped."""

    def __init__(self) -> None:
        self.redis_pools: list = []

    def describe(self):
        return []  # nothing to read at registration: the database pool opens on first use

    def collect(self):
        from django.db import connections

        db = GaugeMetricFamily("agents_db_pool", "Database pool of this process (psycopg_pool statistics).", labels=["stat"])
        # The pool if it is open; asking the connection for `.pool` would open one.
        pool = getattr(connections["default"], "_connection_pools", {}).get("default")
        if pool is not None:
            stats = pool.get_stats()
            for name in ("pool_size", "pool_available", "requests_waiting", "pool_max"):
                db.add_metric([name], stats.get(name, pool.max_size if name == "pool_max" else 0))
        yield db
        redis = GaugeMetricFamily("agents_redis_pool", "Redis connections of this process's buffer pools.", labels=["stat"])
        redis.add_metric(["in_use"], sum(len(getattr(p, "_in_use_connections", ())) for p in self.redis_pools))
        redis.add_metric(["idle"], sum(len(getattr(p, "_available_connections", ())) for p in self.redis_pools))
        redis.add_metric(["max"], sum(getattr(p, "max_connections", 0) for p in self.redis_pools))
        yield redis


pools = _PoolCollector()
registry.register(pools)


@sensitive_variables("token", "presented")
def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    scheme, _, presented = request.headers.get("Authorization", "").strip().partition(" ")
    presented = presented.strip() if scheme.lower() == "bearer" else ""
    # Bytes: `compare_digest` refuses str with non-ASCII characters (TypeError: a 500 whose
    # DEBUG page listed the token). Header values arrive latin-1 decoded, so any of them encodes.
    allowed = (token and presented and hmac.compare_digest(presented.encode(), token.encode())) or (
        request.user.is_authenticated and request.user.is_active and request.user.is_staff
    )
    if not allowed:
        raise Http404
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
