"""Counters for benchmark runs, installed by `bench.settings` inside the server process.

* Database: every statement the process executes, on every connection and thread (an
  `execute_wrapper` added to each connection as it is created), by kind: select, insert,
  update, delete, other (savepoints, PRAGMA, ...). Transaction BEGIN/COMMIT are not
  statements on a cursor and are not counted.
* Redis: every command this process packs for the wire, asyncio (channels-redis, the replay
  buffer, stop pub/sub) and sync (Django's Redis cache), by command name. An exact,
  per-process count that the system-wide `INFO commandstats` cross-checks.

On SIGUSR1 the counters are written as JSON to `$BENCH_STATS_DIR/stats-<pid>.json` (atomic
rename; `seq` counts the dumps), so the benchmark can read them before and after a scenario
without an HTTP endpoint or any change to the app.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from pathlib import Path

_lock = threading.Lock()
queries: Counter[str] = Counter()
redis_commands: Counter[str] = Counter()
_dumps = 0

_KINDS = {"SELECT": "select", "INSERT": "insert", "UPDATE": "update", "DELETE": "delete", "WITH": "select"}


def _count_query(execute, sql, params, many, context):
    head = sql.lstrip()[:6].upper() if isinstance(sql, str) else ""
    kind = _KINDS.get(head.rstrip(), "other")
    if kind == "other" and head.startswith("WITH"):
        kind = "select"
    with _lock:
        queries[kind] += 1
    return execute(sql, params, many, context)


def _on_connection_created(sender, connection, **kwargs) -> None:
    if _count_query not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_query)


def _count_redis(name) -> None:
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    with _lock:
        redis_commands[str(name).split(" ")[0].upper()] += 1


def _patch_redis() -> None:
    try:
        import redis.asyncio.connection as async_connection
        import redis.connection as sync_connection
    except ImportError:
        return
    original_async = async_connection.AbstractConnection.pack_command

    def pack_command(self, *args):
        if args:
            _count_redis(args[0])
        return original_async(self, *args)

    async_connection.AbstractConnection.pack_command = pack_command
    for name in ("PythonRespSerializer", "HiredisRespSerializer"):
        serializer = getattr(sync_connection, name, None)
        if serializer is None:
            continue
        original = serializer.pack

        def pack(self, *args, _original=original):
            if args:
                _count_redis(args[0])
            return _original(self, *args)

        serializer.pack = pack


def snapshot() -> dict:
    with _lock:
        return {
            "pid": os.getpid(),
            "seq": _dumps,
            "queries": dict(queries),
            "queries_total": sum(queries.values()),
            "redis": dict(redis_commands),
            "redis_total": sum(redis_commands.values()),
        }


def _dump(signum=None, frame=None) -> None:
    # A signal handler: no lock may be held here that the interrupted code could hold, so the
    # counters are copied without one (a torn read is at worst one statement off).
    global _dumps
    _dumps += 1
    data = {
        "pid": os.getpid(),
        "seq": _dumps,
        "queries": dict(queries),
        "queries_total": sum(queries.values()),
        "redis": dict(redis_commands),
        "redis_total": sum(redis_commands.values()),
    }
    directory = Path(os.environ.get("BENCH_STATS_DIR", "/tmp"))
    target = directory / f"stats-{os.getpid()}.json"
    tmp = directory / f".stats-{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data))
    tmp.replace(target)


_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    from django.db.backends.signals import connection_created

    connection_created.connect(_on_connection_created, weak=False, dispatch_uid="bench-count-queries")
    _patch_redis()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, _dump)
