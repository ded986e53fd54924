"""Real daphne processes on loopback, sharing the test database (and Redis, when the suite
runs on it) with the test process."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The URL of the database the tests are using right now (the test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def dockerfile_daphne_options() -> tuple[str, ...]:
    """The flags the image's CMD gives daphne, but the address, port and application."""
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    args = json.loads(cmd.removeprefix("CMD "))
    assert args[0] == "daphne" and args[-1] == "config.asgi:application", args
    options, rest = [], iter(args[1:-1])
    for arg in rest:
        if arg in ("-b", "--bind", "-p", "--port"):
            next(rest)
        else:
            options.append(arg)
    return tuple(options)


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """Die like a crashed process: no cleanup, no goodbye."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_daphne(
    tmp_path: Path, *, name: str = "daphne", extra_env: dict[str, str] | None = None, options: tuple[str, ...] = ()
) -> Server:
    """`options`: more daphne flags (the Dockerfile's, for tests of the image's command)."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "1",
        "SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": database_url(),
        "AGENTS_MODEL_PROVIDER": "scripted",
        "AGENTS_SCRIPTED_DELAY": "0.02",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    else:
        env.pop("REDIS_URL", None)
    log = tmp_path / f"{name}-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *options, "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    server = Server(process, port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited early:\n{server.output()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"daphne did not start:\n{server.output()}")


@contextlib.contextmanager
def running_daphne(tmp_path: Path, **kwargs) -> Iterator[Server]:
    server = start_daphne(tmp_path, **kwargs)
    try:
        yield server
    finally:
        server.stop()
