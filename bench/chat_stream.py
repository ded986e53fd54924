"""Benchmark: how fast the chat path streams, end to end, on this machine.

Starts a real daphne on loopback with the rule-based scripted model (no inference cost, so
the figures are the app's own overhead: run service, event mapper, replay buffer, channel
layer, socket; the model produces text far faster than any real one, so this is a worst case),
opens N signed-in WebSocket clients that each ask for a long reply at the same time, and
prints time to first token, delta throughput and the server's peak memory.

    .venv/bin/python bench/chat_stream.py                      # SQLite + in-memory layer
    .venv/bin/python bench/chat_stream.py --clients 20 --words 400
    .venv/bin/python bench/chat_stream.py --provider local     # the local model through the app
                                                               # (compare: bench/local_model.py)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/3 \\
        .venv/bin/python bench/chat_stream.py                  # PostgreSQL + Redis

With DATABASE_URL set, a database named `<name>_bench` is created next to it and dropped after.
Figures only; no targets are asserted here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepare_database(tmp: Path) -> tuple[str, callable]:
    base = os.environ.get("DATABASE_URL", "")
    if not base:
        return f"sqlite:///{tmp / 'bench.sqlite3'}", lambda: None
    import psycopg

    head, _, name = base.rpartition("/")
    bench_name = f"{name}_bench"
    admin = psycopg.connect(base, autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{bench_name}"')
    admin.execute(f'CREATE DATABASE "{bench_name}"')

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{bench_name}" WITH (FORCE)')
        admin.close()

    return f"{head}/{bench_name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10, help="concurrent conversations (default 10)")
    parser.add_argument("--words", type=int, default=200, help="words per reply (default 200)")
    parser.add_argument("--rounds", type=int, default=2, help="messages per client (default 2)")
    parser.add_argument("--provider", choices=["scripted", "local"], default="scripted")
    args = parser.parse_args()
    if args.provider == "local":
        # One generation at a time per process: concurrent clients would only measure the queue.
        args.clients, args.rounds = 1, 2

    tmp = Path(tempfile.mkdtemp(prefix="agents-bench-"))
    database_url, drop_database = prepare_database(tmp)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url,
        "AGENTS_MODEL_PROVIDER": args.provider,
        "AGENTS_SCRIPTED_DELAY": "0",
        "AGENTS_DAILY_TOKEN_BUDGET": "0",
        "AGENTS_TRACE_LOCAL": "0",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    cookies = []
    for n in range(args.clients):
        user = get_user_model().objects.create_user(f"bench{n}", f"bench{n}@example.com", "x")
        client = Client()
        client.force_login(user)
        cookies.append(f"sessionid={client.cookies['sessionid'].value}")

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=(tmp / "daphne.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        results = asyncio.run(run_clients(port, cookies, args))
        rss = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        drop_database()

    ttft = [r["ttft"] for r in results]
    total_deltas = sum(r["deltas"] for r in results)
    total_chars = sum(r["chars"] for r in results)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    layer = "Redis" if os.environ.get("REDIS_URL") else "in-memory"
    database = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
    print(f"chat stream benchmark: {database} + {layer} layer, one daphne, {args.provider} model")
    size = f"{args.words} words per reply" if args.provider == "scripted" else "one question, asked twice"
    print(f"  clients x rounds          {args.clients} x {args.rounds}, {size}")
    print(f"  time to first token       median {statistics.median(ttft) * 1000:.0f} ms, "
          f"p95 {sorted(ttft)[math.ceil(0.95 * len(ttft)) - 1] * 1000:.0f} ms, max {max(ttft) * 1000:.0f} ms")
    print(f"  reply duration            median {statistics.median(r['end'] - r['start'] for r in results):.2f} s")
    print(f"  text delivered            {total_chars} chars in {wall:.2f} s = {total_chars / wall:.0f} chars/s overall")
    print(f"  deltas                    {total_deltas} ({total_chars / total_deltas:.0f} chars each on average; "
          "merged only when the sender falls behind)")
    if args.provider == "local":
        for n, r in enumerate(results, 1):
            decode = r["output_tokens"] / max(r["end"] - r["start"] - r["ttft"], 1e-9)
            print(f"  local reply {n}             first token {r['ttft']:.2f} s, {r['output_tokens']} tokens, "
                  f"{decode:.1f} tokens/s after it (the socket's view, all overheads included)")
    print(f"  server peak RSS           {rss:.0f} MB")


async def run_clients(port: int, cookies: list[str], args) -> list[dict]:
    from websockets.asyncio.client import connect

    if args.provider == "local":
        prompt = "Explain how a hash map works, in about 150 words."
    else:
        prompt = " ".join(f"w{n}" for n in range(args.words))

    async def one(cookie: str) -> list[dict]:
        results = []
        origin = f"http://127.0.0.1:{port}"
        async with connect(f"ws://127.0.0.1:{port}/ws/chat/", additional_headers={"Cookie": cookie}, origin=origin) as ws:
            await ws.send(json.dumps({"type": "conversation.create", "agent": "assistant"}))
            conversation = json.loads(await ws.recv())["conversation"]
            for _ in range(args.rounds):
                start = time.perf_counter()
                await ws.send(json.dumps({"type": "message.send", "conversation": conversation, "content": prompt}))
                first, deltas, chars, output_tokens = None, 0, 0, 0
                while True:
                    event = json.loads(await ws.recv())
                    if event["type"] == "message.delta":
                        deltas += 1
                        chars += len(event["delta"])
                        first = first or time.perf_counter()
                    elif event["type"] == "usage":
                        output_tokens = event["output_tokens"]
                    elif event["type"] == "error":
                        raise RuntimeError(event)
                    elif event["type"] == "run.finished":
                        break
                results.append(
                    {
                        "start": start,
                        "end": time.perf_counter(),
                        "ttft": first - start,
                        "deltas": deltas,
                        "chars": chars,
                        "output_tokens": output_tokens,
                    }
                )
        return results

    batches = await asyncio.gather(*(one(cookie) for cookie in cookies))
    return [result for batch in batches for result in batch]


if __name__ == "__main__":
    main()
