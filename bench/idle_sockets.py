"""Benchmark: what an idle chat socket costs the server in memory.

Starts a real daphne (SQLite + in-memory layer, or Postgres + Redis with --postgres/--redis as
bench/load.py takes them), opens N signed-in sockets with API tokens that each open a
conversation and then stay idle, and prints the server's RSS before and after, per socket.

    .venv/bin/python bench/idle_sockets.py                 # 500 sockets, SQLite + in-memory
    .venv/bin/python bench/idle_sockets.py --sockets 1000

Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def seed(database_url: str, count: int) -> list[tuple[str, str]]:
    """Users with a token and a conversation each: [(token, conversation id)]."""
    code = f"""
import json, os, django
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from accounts.services import api_token_create
from chat.models import Conversation
out = []
User = get_user_model()
for n in range({count}):
    user, _ = User.objects.get_or_create(username=f"idle-{{n}}", defaults={{"email": f"idle-{{n}}@example.com"}})
    token = api_token_create(owner=user, name="idle").secret
    conversation = Conversation.objects.create(owner=user, agent_key="assistant", current_agent_name="Assistant")
    out.append((token, str(conversation.public_id)))
print(json.dumps(out))
"""
    env = {**os.environ, "DATABASE_URL": database_url, "DEBUG": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


async def open_idle(port: int, pairs: list[tuple[str, str]]):
    from websockets.asyncio.client import connect

    sockets = []
    for token, conversation in pairs:
        ws = await connect(f"ws://127.0.0.1:{port}/ws/chat/", additional_headers={"Authorization": f"Bearer {token}"})
        await ws.send(json.dumps({"type": "conversation.open", "conversation": conversation}))
        await ws.recv()  # conversation.state
        sockets.append(ws)
    return sockets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=500)
    args = parser.parse_args()
    from tests.servers import free_port

    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'idle.sqlite3'}"
        pairs = seed(database_url, args.sockets)
        port = free_port()
        env = {
            **os.environ, "DATABASE_URL": database_url, "DEBUG": "1", "AGENTS_MODEL_PROVIDER": "scripted",
            "RATE_LIMIT_SOCKETS_PER_USER": "0", "LOG_LEVEL": "WARNING",
        }
        env.pop("REDIS_URL", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port)
            asyncio.run(_measure(server.pid, port, pairs))
        finally:
            server.terminate()
            server.wait(15)


def _wait_for_port(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("daphne did not start")


async def _measure(pid: int, port: int, pairs) -> None:
    # Warm up the process (first socket, imports, caches) before the baseline.
    warm = await open_idle(port, pairs[:5])
    await asyncio.sleep(1)
    before = rss_kib(pid)
    sockets = await open_idle(port, pairs[5:])
    await asyncio.sleep(2)
    after = rss_kib(pid)
    count = len(sockets)
    print(f"{count} idle sockets: server RSS {before / 1024:.0f} MB → {after / 1024:.0f} MB, {(after - before) / count:.1f} KiB per socket")
    for ws in [*warm, *sockets]:
        await ws.close()


if __name__ == "__main__":
    main()
