"""What one run costs the server, in process, beside the raw SDK: the fixed cost per run and the
cost per token, SQL statements and thread hops per run.

No daphne, no network, no mock server: both sides stream from the same scripted model (the
SDK's `agents.testing.ScriptedModel`, a text reply of N deltas), in one process, one run after
another, so the only difference is what the app does around the SDK:

* **raw SDK**: `Runner.run_streamed` of a plain `Agent`, its events consumed;
* **app, engine**: `chat.engine.start` + a `RunFollower` reading the run's events until it ends
  (what every transport does, minus formatting);
* **app, HTTP (SSE)**: `POST /api/conversations/<id>/messages` with an API token through
  Django's ASGI handler (`django.test.AsyncClient`), the stream read to its end.

Replies of 10 and 1,000 deltas; CPU time (this process, all threads, the trace writer
included) is solved for `a + b·tokens`. SQLite + in-memory channel layer in a temporary
folder, `DEBUG=0`, the per-user cap and the budget off. Figures only; nothing is asserted.

    .venv/bin/python bench/run_cost.py                # ~1 min
    .venv/bin/python bench/run_cost.py --runs 100 --profile var/bench/run-cost.prof
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_tmp = tempfile.mkdtemp(prefix="run-cost-")
for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGENTS_MODEL_PROVIDER", "REDIS_URL"):
    os.environ.pop(name, None)
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{_tmp}/db.sqlite3",
        "DEBUG": "0",
        "ALLOW_CONSOLE_EMAIL": "1",  # production mode without a mail server: the benchmark sends none
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "testserver",
        "SECURE_COOKIES": "0",
        "SECURE_SSL_REDIRECT": "0",
        "AGENTS_DAILY_TOKEN_BUDGET": "0",
        "AGENTS_MAX_ACTIVE_RUNS_PER_USER": "0",
        "RATE_LIMIT_API_REQUESTS": "1000000/minute",
        "RATE_LIMIT_CONVERSATIONS": "1000000/hour",
        "LOG_LEVEL": "WARNING",
    }
)

import django  # noqa: E402

django.setup()

from agents import Agent, Runner, set_trace_processors  # noqa: E402
from agents.testing import ScriptedModel  # noqa: E402
from asgiref import sync as asgiref_sync  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402

from chat.tests.scripts import streamed  # noqa: E402

queries: Counter[str] = Counter()
hops = Counter()
_lock = threading.Lock()


statements: list[str] | None = None  # --sql: every statement of one run, in order


def _count_query(execute, sql, params, many, context):
    with _lock:
        queries["all"] += 1
        if statements is not None:
            statements.append(f"[{threading.current_thread().name}] {sql[:160]}")
    return execute(sql, params, many, context)


def _on_connection(sender, connection, **kwargs):
    if _count_query not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_query)


connection_created.connect(_on_connection)
_original_call = asgiref_sync.SyncToAsync.__call__


hop_names: Counter[str] = Counter()  # --sql: what each hop ran


async def _counted_call(self, *args, **kwargs):
    hops["sync_to_async"] += 1
    if statements is not None:
        func = getattr(self.func, "__func__", self.func)
        hop_names[getattr(func, "__qualname__", type(func).__name__)] += 1
    return await _original_call(self, *args, **kwargs)


asgiref_sync.SyncToAsync.__call__ = _counted_call


def steps(tokens: int, runs: int) -> list:
    pieces = [f"w{i} " for i in range(tokens)]
    return [streamed(*pieces) for _ in range(runs)]


async def raw_sdk(tokens: int, runs: int) -> None:
    # As in bench/load.py's SDK floor: spans are made, nothing stores them.
    set_trace_processors([])
    model = ScriptedModel(steps(tokens, runs))
    agent = Agent(name="Assistant", instructions="You are helpful.", model=model)
    for _ in range(runs):
        result = Runner.run_streamed(agent, "Hello")
        async for _event in result.stream_events():
            pass
    from agents_app import tracing

    tracing.configure()


def has_engine() -> bool:
    """The engine's façade exists (not in trees before it, measured for the "before" row)."""
    try:
        from chat import engine

        return hasattr(engine, "RunFollower")
    except ImportError:
        return False


async def wait_for_run(run_id: str) -> None:
    if has_engine():
        from chat import engine

        await engine.wait_for_run(run_id)
    else:
        from chat import runs

        await runs.wait_for_run(run_id)


async def app_engine(tokens: int, runs: int, *, user, conversations) -> None:
    from agents_app import providers
    from chat import engine

    with providers.use_model(ScriptedModel(steps(tokens, runs)), label="gpt-4.1-mini"):
        for conversation in conversations[:runs]:
            follower = engine.RunFollower(conversation.group_name, until_run_ends=True)
            await follower.subscribe()
            started = await engine.start(user=user, conversation=conversation, content="Hello", request_id="bench")
            run_id = str(started.run.public_id)
            follower.follow(run_id)
            async for _event in follower.events(run_id, after=0):
                pass
            await follower.close()
            await engine.wait_for_run(run_id)


async def app_http(tokens: int, runs: int, *, token: str, conversations) -> None:
    from django.test import AsyncClient

    from agents_app import providers

    client = AsyncClient()
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    with providers.use_model(ScriptedModel(steps(tokens, runs)), label="gpt-4.1-mini"):
        for conversation in conversations[:runs]:
            response = await client.post(
                f"/api/conversations/{conversation.public_id}/messages",
                data=json.dumps({"content": "Hello"}),
                content_type="application/json",
                headers=headers,
            )
            assert response.streaming, (response.status_code, response.content[:300])
            body = b"".join([chunk async for chunk in response.streaming_content])
            assert b"run.finished" in body and response.status_code == 200, (response.status_code, body[-300:])
            run = await conversation.runs.alatest("created_at")
            await wait_for_run(str(run.public_id))


async def fresh_conversations(user, count: int):
    from chat import services

    return [
        await asyncio.to_thread(services.conversation_create, owner=user, agent_key="assistant") for _ in range(count)
    ]


def thread_cpu_seconds(name: str) -> float:
    """CPU time so far of this process's threads called `name` (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for thread in threading.enumerate():
        if thread.name != name or thread.native_id is None:
            continue
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def measure(label: str, tokens: int, runs: int, make) -> dict:
    """CPU and wall time of `runs` runs, after two warm-up runs of the same shape."""
    warm, body = make(2), make(runs)
    asyncio.run(warm)
    queries.clear()
    hops.clear()
    from agents_app import tracing

    tracing.flush(30)
    cpu, wall, traces = time.process_time(), time.perf_counter(), thread_cpu_seconds("trace-writer")
    asyncio.run(body)
    tracing.flush(30)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    traces = thread_cpu_seconds("trace-writer") - traces
    return {
        "target": label,
        "tokens": tokens,
        "runs": runs,
        "cpu_ms_per_run": 1000 * cpu / runs,
        "wall_ms_per_run": 1000 * wall / runs,
        "trace_writer_ms_per_run": 1000 * traces / runs,
        "sql_per_run": queries["all"] / runs,
        "hops_per_run": hops["sync_to_async"] / runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="runs per target and reply length (40)")
    parser.add_argument("--tokens", default="10,1000", help="two reply lengths, in deltas (10,1000)")
    parser.add_argument("--profile", default="", help="write a cProfile of the app's HTTP runs of the short reply here")
    parser.add_argument("--json", default="", help="write the figures as JSON here")
    parser.add_argument("--sql", action="store_true", help="print every SQL statement of one HTTP run and stop")
    parser.add_argument("--app-only", action="store_true",
                        help="only the app's HTTP runs of the short reply: to record with py-spy (--runs 1000 makes start-up negligible)")
    args = parser.parse_args()
    short, long = (int(n) for n in args.tokens.split(","))

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from accounts.services import api_token_create
    from agents_app import tracing

    user = get_user_model().objects.create_user("bench", "bench@example.com", "x")
    token = api_token_create(owner=user, name="bench").secret
    need = 2 * (args.runs + 2) * 2

    if args.sql:
        global statements
        pool = asyncio.run(fresh_conversations(user, 3))
        asyncio.run(app_http(short, 2, token=token, conversations=pool[:2]))
        tracing.flush(30)
        statements = []
        asyncio.run(app_http(short, 1, token=token, conversations=pool[2:]))
        tracing.flush(30)
        print("\n".join(statements))
        print(f"{len(statements)} statements")
        print("\n".join(f"{count:3} × {name}" for name, count in hop_names.most_common()))
        print(f"{sum(hop_names.values())} thread hops")
        return

    if args.app_only:
        pool = asyncio.run(fresh_conversations(user, args.runs + 2))
        asyncio.run(app_http(short, 2, token=token, conversations=pool[:2]))
        asyncio.run(app_http(short, args.runs, token=token, conversations=pool[2:]))
        tracing.flush(30)
        return

    rows = []
    for tokens in (short, long):
        rows.append(measure("raw SDK", tokens, args.runs, lambda n, t=tokens: raw_sdk(t, n)))

        pool = asyncio.run(fresh_conversations(user, need))

        def take(n, pool=pool):
            taken, pool[:] = pool[:n], pool[n:]
            return taken

        if has_engine():
            rows.append(
                measure("app, engine", tokens, args.runs, lambda n, t=tokens: app_engine(t, n, user=user, conversations=take(n)))
            )
        rows.append(
            measure("app, HTTP (SSE)", tokens, args.runs, lambda n, t=tokens: app_http(t, n, token=token, conversations=take(n)))
        )
        tracing.flush(30)

    if args.profile:
        pool = asyncio.run(fresh_conversations(user, args.runs))
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(app_http(short, args.runs, token=token, conversations=pool))
        profiler.disable()
        profiler.dump_stats(args.profile)

    commit = os.environ.get("BENCH_COMMIT") or subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"\nOne run, in process ({commit or 'unknown commit'}, {time.strftime('%Y-%m-%d')}; SQLite + in-memory, "
        f"DEBUG=0, {args.runs} runs each, replies of {short} and {long} deltas)\n"
    )
    print("| target | fixed CPU per run | CPU per token | × SDK fixed | × SDK per token | SQL / run | thread hops / run |")
    print("|---|---|---|---|---|---|---|")
    by = {(r["target"], r["tokens"]): r for r in rows}
    fits = {}
    for target in dict.fromkeys(r["target"] for r in rows):
        a_short, a_long = by[(target, short)]["cpu_ms_per_run"], by[(target, long)]["cpu_ms_per_run"]
        per_token = (a_long - a_short) / (long - short)
        fixed = a_short - per_token * short
        fits[target] = (fixed, per_token)
    for target, (fixed, per_token) in fits.items():
        sdk_fixed, sdk_token = fits["raw SDK"]
        row = by[(target, short)]
        print(
            f"| {target} | {fixed:.1f} ms | {1000 * per_token:.0f} µs | {fixed / sdk_fixed:.1f}× | "
            f"{per_token / sdk_token:.2f}× | {row['sql_per_run']:.0f} | {row['hops_per_run']:.0f} |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "fits": fits}, indent=2))


if __name__ == "__main__":
    main()
