"""Load benchmark (issue 9): the raw SDK floor and the app under daphne, side by side in one run.

    .venv/bin/python bench/load.py --quick                 # a few minutes: C=10, paced, SDK/SQLite/Postgres
    .venv/bin/python bench/load.py                         # the full matrix (~45 min)
    .venv/bin/python bench/load.py --targets sdk,sqlite --transports sse --clients 100 --modes paced
    .venv/bin/python bench/load.py --profile               # + py-spy on daphne, paced C=100 SQLite SSE

Every scenario: the project's mock OpenAI server (bench/mock_openai.py) in its own process;
for the app, fresh daphne process(es) with `AGENTS_MODEL_PROVIDER=openai`, `OPENAI_BASE_URL` at
the mock, `OPENAI_API_KEY=x`, `AGENTS_DAILY_TOKEN_BUDGET=0` and every other setting at its
default, under `bench.settings` (the app's settings plus statement/command counters); C
clients with a conversation each in a separate process (bench/load_client.py), 10 warm-up
requests, then a closed loop for 10 s. CPU is user+system of the server's process tree (the
SDK floor's own process for `sdk`), read from /proc before and after the measured phase.

Targets: `sdk` (raw SDK, no web layer), `sqlite` (SQLite + in-memory layer, one daphne),
`pg` (PostgreSQL + Redis, one daphne), `pg2` (two daphnes on PostgreSQL + Redis, clients split).
PostgreSQL uses a database of its own (`bench_load_<pid>`, created, migrated and dropped), Redis
DB 9 (flushed before every scenario). Results: a table on stdout, JSON and the daphne logs
under var/bench/<time>/ (see bench/README.md for the columns).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
sys.path.insert(0, str(ROOT))

from bench.mock_openai import MODES  # noqa: E402

TARGET_LABELS = {
    "sdk": "raw SDK",
    "sqlite": "SQLite + in-memory",
    "pg": "Postgres + Redis",
    "pg2": "2 daphnes, Postgres + Redis",
    # Comparison rows, not in the default matrix: the openai library's own per-event union
    # validation (AGENTS_OPENAI_FAST_EVENTS=0), and uvicorn with uvloop instead of daphne.
    "sqlite-lib": "SQLite + in-memory, library event parsing",
    "uvicorn": "uvicorn + uvloop, SQLite + in-memory",
}
SQLITE_TARGETS = ("sqlite", "sqlite-lib", "uvicorn")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Per run, so two benchmarks never drop each other's database (Redis DB 9 is shared, though:
# it is flushed before every scenario, so run one benchmark at a time on a machine).
PG_DB = f"bench_load_{os.getpid()}"


@dataclass(frozen=True)
class Scenario:
    target: str
    transport: str  # sse | ws | sdk
    clients: int
    mode: str

    @property
    def name(self) -> str:
        transport = "" if self.target == "sdk" else f" {self.transport.upper()}"
        return f"{self.mode} C={self.clients} {self.target}{transport}"

    @property
    def label(self) -> str:
        if self.target == "sdk":
            return "raw SDK"
        return f"{TARGET_LABELS[self.target]}, {'SSE' if self.transport == 'sse' else 'WebSocket'}"


# --- processes ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """user + system seconds of these processes and all their descendants (threads included)."""
    total = 0
    for root in pids:
        for pid in process_tree(root):
            fields = _stat(pid)
            if fields:
                total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class LineReader:
    """A child's stdout, line by line, with timeouts."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, phase: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                return None
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if message.get("phase") == phase:
                return message
        return None


def http_json(url: str, *, token: str | None = None, timeout: float = 10) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


# --- the mock ---------------------------------------------------------------------------------
class Mock:
    def __init__(self, workdir: Path) -> None:
        self.proc = subprocess.Popen(
            [PY, str(BENCH / "mock_openai.py"), "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
            stderr=(workdir / "mock.log").open("w"),
        )
        ready = json.loads(self.proc.stdout.readline())
        self.port = ready["port"]
        self.url = f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        http_json(f"{self.url}/_control?mode={mode}")

    def stats(self, *, reset: bool = False) -> dict[str, Any]:
        return http_json(f"{self.url}/_stats{'?reset=1' if reset else ''}")[1]

    def close(self) -> None:
        stop_process(self.proc)


# --- databases ----------------------------------------------------------------------------------
class Database:
    """One database per target kind, migrated once per benchmark run; scenarios get fresh
    conversations (users and API tokens are reused)."""

    def __init__(self, kind: str, workdir: Path, args: argparse.Namespace) -> None:
        self.kind = kind
        self.args = args
        self.state = workdir / f"seed-{kind}.json"
        if kind == "sqlite":
            self.url = f"sqlite:///{workdir / 'bench.sqlite3'}"
            self.redis_url = ""
        else:
            import psycopg

            self.admin_url = f"{args.postgres}/postgres"
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
                admin.execute(f'CREATE DATABASE "{PG_DB}"')
            self.url = f"{args.postgres}/{PG_DB}"
            self.redis_url = args.redis
        started = time.monotonic()
        subprocess.run([PY, "manage.py", "migrate", "-v0", "--noinput"], cwd=ROOT, env=self.env("config.settings"),
                       check=True)
        print(f"  [{kind}] migrated in {time.monotonic() - started:.0f} s", flush=True)

    def env(self, settings_module: str = "bench.settings") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AGENTS_", "OPENAI_", "DJANGO_", "CHAT_", "RUN_", "LOG_"))
               and k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "CONN_MAX_AGE")}
        env.update({"DJANGO_SETTINGS_MODULE": settings_module, "DATABASE_URL": self.url, "PYTHONUNBUFFERED": "1"})
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def seed(self, clients: int, out: Path) -> list[dict[str, str]]:
        subprocess.run(
            [PY, str(BENCH / "seed.py"), "prepare", "--state", str(self.state), "--clients", str(clients), "--out", str(out)],
            cwd=ROOT, env=self.env("config.settings"), check=True,
        )
        return json.loads(out.read_text())

    def report(self, clients_file: Path, expected_tokens: int) -> dict[str, Any]:
        done = subprocess.run(
            [PY, str(BENCH / "seed.py"), "report", "--clients", str(clients_file), "--expected-tokens", str(expected_tokens)],
            cwd=ROOT, env=self.env("config.settings"), capture_output=True, text=True, timeout=120,
        )
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return {"error": done.stderr[-500:]}

    def drop(self) -> None:
        if self.kind == "sqlite" or self.args.keep_db:
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')


class Probe:
    """Redis and PostgreSQL from the outside: INFO commandstats, connections now."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.redis = self.pg = None
        self.args = args

    def connect(self, database: Database) -> None:
        if database.kind == "sqlite":
            self.redis = self.pg = None
            return
        import psycopg
        import redis

        self.redis = redis.Redis.from_url(self.args.redis)
        if self.pg is None:
            self.pg = psycopg.connect(f"{self.args.postgres}/postgres", autocommit=True)

    def identity(self) -> str | None:
        """Redis's run id: it changes when the server restarts (other suites on this machine
        restart the shared Redis in their fault tests)."""
        if self.redis is None:
            return None
        try:
            return self.redis.info("server")["run_id"]
        except Exception:
            return "unreachable"

    def flush(self) -> None:
        if self.redis is not None:
            self.redis.flushdb()

    def commandstats(self) -> dict[str, int]:
        if self.redis is None:
            return {}
        stats = self.redis.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}

    def connections(self) -> tuple[int, int]:
        """(PostgreSQL connections to the bench database, Redis clients on DB 9 other than ours)."""
        if self.redis is None:
            return 0, 0
        pg = self.pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (PG_DB,)).fetchone()[0]
        db = str(self.redis.connection_pool.connection_kwargs.get("db", 0))
        clients = sum(1 for c in self.redis.client_list() if str(c.get("db")) == db) - 1
        return pg, clients


def wait_for_redis(probe: Probe, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and probe.identity() in ("unreachable",):
        time.sleep(1)


def command_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    # Our own probes are not the app's.
    for ours in ("info", "client|list", "flushdb", "select", "ping"):
        delta.pop(ours, None)
    return {k: v for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}


# --- one scenario ---------------------------------------------------------------------------------
def dump_counters(procs: list[subprocess.Popen], stats_dir: Path) -> list[dict[str, Any]]:
    out = []
    for proc in procs:
        path = stats_dir / f"stats-{proc.pid}.json"
        previous = json.loads(path.read_text())["seq"] if path.exists() else 0
        if proc.poll() is not None:
            out.append({})
            continue
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        data: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                data = json.loads(path.read_text())
                if data["seq"] > previous:
                    break
            except (OSError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.05)
        out.append(data)
    return out


def counters_delta(before: list[dict], after: list[dict]) -> dict[str, Any]:
    queries: Counter[str] = Counter()
    redis: Counter[str] = Counter()
    for b, a in zip(before, after, strict=True):
        for kind, n in (a.get("queries") or {}).items():
            queries[kind] += n - (b.get("queries") or {}).get(kind, 0)
        for name, n in (a.get("redis") or {}).items():
            redis[name] += n - (b.get("redis") or {}).get(name, 0)
    return {"queries": dict(queries), "queries_total": sum(queries.values()),
            "redis": dict(redis.most_common()), "redis_total": sum(redis.values())}


LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<name>\S+) \[[^\]]*\] (?P<msg>.*)$")
EXCEPTION_LINE = re.compile(r"^(?P<exc>[A-Za-z_][\w.]*(?:Error|Exception|Exhausted|Timeout|Closed)\w*)(?::\s*(?P<msg>.*))?$")


def _normalise(text: str) -> str:
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    text = re.sub(r"0x[0-9a-f]+", "<addr>", text)
    text = re.sub(r"[0-9a-f]{12,}", "<hex>", text)
    text = re.sub(r"\d+(\.\d+)?", "#", text)
    return text[:200]


def summarise_log(path: Path) -> dict[str, Any]:
    levels: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    examples: dict[str, str] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        match = LOG_LINE.match(line)
        if match:
            levels[match["level"]] += 1
            if match["level"] in ("WARNING", "ERROR", "CRITICAL"):
                key = f"{match['level']} {match['name']}: {_normalise(match['msg'])}"
                messages[key] += 1
                examples.setdefault(key, line[:400])
            continue
        exc = EXCEPTION_LINE.match(line.strip())
        if exc and not line.startswith(" "):
            key = _normalise(line.strip())
            exceptions[key] += 1
            examples.setdefault(key, line.strip()[:400])
    return {
        "lines": len(lines),
        "levels": dict(levels),
        "warnings": [{"count": n, "message": k, "example": examples[k]} for k, n in messages.most_common(12)],
        "exceptions": [{"count": n, "exception": k, "example": examples[k]} for k, n in exceptions.most_common(12)],
    }


def run_scenario(sc: Scenario, *, args, mock: Mock, database: Database | None, probe: Probe, workdir: Path,
                 sdk_rows: dict, profile: bool = False) -> dict[str, Any]:
    tokens = int(MODES[sc.mode]["tokens"])
    tag = sc.name.replace(" ", "_").replace("=", "")
    if profile:
        tag += "_profiled"
    sdir = workdir / tag
    sdir.mkdir(parents=True, exist_ok=True)
    mock.set_mode(sc.mode)
    row: dict[str, Any] = {"scenario": sc.name, "mode": sc.mode, "clients": sc.clients, "target": sc.target,
                           "transport": sc.transport, "label": sc.label, "expected_tokens": tokens, "profiled": profile}
    servers: list[subprocess.Popen] = []
    logs: list[Path] = []
    client = None
    redis_before = probe.identity()
    try:
        client_cmd = [PY, str(BENCH / "load_client.py"), "--transport", sc.transport, "--clients", str(sc.clients),
                      "--tokens", str(tokens), "--duration", str(args.duration), "--warmup", str(args.warmup),
                      "--request-timeout", str(args.request_timeout), "--out", str(sdir / "client.json")]
        if sc.target == "sdk":
            client_cmd += ["--base-url", f"{mock.url}/v1", "--api", args.api]
            client_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        else:
            probe.flush()
            clients_file = sdir / "clients.json"
            specs = database.seed(sc.clients, clients_file)
            ports = [free_port() for _ in range(2 if sc.target == "pg2" else 1)]
            env = database.env()
            env.update({
                "AGENTS_MODEL_PROVIDER": "openai",
                "OPENAI_BASE_URL": f"{mock.url}/v1",
                "OPENAI_API_KEY": "x",
                "AGENTS_DAILY_TOKEN_BUDGET": "0",
                "BENCH_STATS_DIR": str(sdir),
            })
            if args.api != "responses":
                env["AGENTS_OPENAI_API"] = args.api
            if sc.target == "sqlite-lib":
                env["AGENTS_OPENAI_FAST_EVENTS"] = "0"
            for n, port in enumerate(ports):
                log = sdir / f"daphne-{n}.log"
                logs.append(log)
                server = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
                if sc.target == "uvicorn":
                    server = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
                              "--ws", "websockets", "--no-access-log", "config.asgi:application"]
                servers.append(subprocess.Popen(
                    [PY, *server],
                    cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                ))
            for port in ports:
                wait_port(port)
                deadline = time.monotonic() + 60
                while http_json(f"http://127.0.0.1:{port}/api/agents", token=specs[0]["token"])[0] != 200:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"daphne on {port} never answered /api/agents")
                    time.sleep(0.2)
            for i, spec in enumerate(specs):
                spec["url"] = f"http://127.0.0.1:{ports[i % len(ports)]}"
            clients_file.write_text(json.dumps(specs))
            client_cmd += ["--clients-file", str(clients_file)]
            client_env = os.environ.copy()

        client = subprocess.Popen(client_cmd, cwd=ROOT, env=client_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=(sdir / "client.log").open("w"), text=True)
        reader = LineReader(client)
        measured = [client] if sc.target == "sdk" else servers
        ready = reader.wait_for("ready", args.request_timeout + 120)
        if ready is None:
            row["error"] = "warm-up did not finish (client hung or crashed)"
            return row
        row["warmup_ok"] = ready.get("warmup_ok")

        counters0 = dump_counters(servers, sdir) if servers else []
        redis0 = probe.commandstats()
        mock.stats(reset=True)
        cpu0 = cpu_seconds([p.pid for p in measured])
        t0 = time.monotonic()
        spy = None
        if profile:
            spy = start_profiler(measured[0].pid, sdir, args)
        client.stdin.write("go\n")
        client.stdin.flush()
        peak_pg = peak_redis = peak_threads = 0
        done = None
        watchdog = args.duration + args.request_timeout + 30
        while time.monotonic() - t0 < watchdog:
            done = reader.wait_for("done", 0.5)
            if done is not None or client.poll() is not None:
                break
            pg, rc = probe.connections()
            peak_pg, peak_redis = max(peak_pg, pg), max(peak_redis, rc)
            peak_threads = max(peak_threads, sum(status_kb(p.pid, "Threads") for p in measured))
        cpu1 = cpu_seconds([p.pid for p in measured])
        elapsed = time.monotonic() - t0
        if spy is not None:
            row["profile"] = finish_profiler(spy, sdir)
        if done is None:
            row["error"] = f"client did not finish within {watchdog:.0f} s (hung)"
            stop_process(client, timeout=5)
        rss = [status_kb(p.pid, "VmHWM") for p in measured]
        threads = [status_kb(p.pid, "Threads") for p in measured]
        if done is not None:
            client.stdin.write("finish\n")
            client.stdin.flush()
        time.sleep(args.settle)  # background writes (tracing) of the last runs
        counters1 = dump_counters(servers, sdir) if servers else []
        redis1 = probe.commandstats()
        row["mock"] = mock.stats()
        row["cpu_s"] = round(cpu1 - cpu0, 3)
        row["measured_s"] = round(elapsed, 2)
        row["peak_rss_mb"] = round(sum(rss) / 1024, 1)
        row["rss_per_process_mb"] = [round(kb / 1024, 1) for kb in rss]
        row["threads"] = threads
        row["peak_threads"] = peak_threads
        row["peak_pg_connections"] = peak_pg
        row["peak_redis_clients"] = peak_redis
        if servers:
            row["counters"] = counters_delta(counters0, counters1)
            row["redis_commandstats"] = command_delta(redis0, redis1)
        if client.wait(timeout=60) is not None and (sdir / "client.json").exists():
            row.update(json.loads((sdir / "client.json").read_text()))
        elif "error" not in row:
            row["error"] = "client crashed: " + (sdir / "client.log").read_text()[-400:]
        if servers and "requests" in row:
            row["stored"] = database.report(clients_file, tokens)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if client is not None and client.poll() is None:
            stop_process(client, timeout=5)
        for proc in servers:
            stop_process(proc)
        if logs:
            row["logs"] = [str(p) for p in logs]
            row["log_summary"] = [summarise_log(p) for p in logs]
    redis_after = probe.identity()
    if redis_before != redis_after or redis_after == "unreachable":
        row["disrupted"] = "Redis restarted or was unreachable during the scenario (not the app's doing)"
    derive(row, sdk_rows)
    return row


def derive(row: dict[str, Any], sdk_rows: dict) -> None:
    """Per-1k-token CPU, × raw SDK, per-run database and Redis figures."""
    delivered = row.get("tokens_delivered") or 0
    if delivered and "cpu_s" in row:
        row["cpu_per_1k_tokens"] = round(row["cpu_s"] / delivered * 1000, 3)
    key = (row["mode"], row["clients"])
    if row["target"] == "sdk":
        sdk_rows[key] = row
    floor = sdk_rows.get(key, {}).get("cpu_per_1k_tokens")
    if floor and row.get("cpu_per_1k_tokens"):
        row["x_sdk"] = round(row["cpu_per_1k_tokens"] / floor, 2)
    runs = row.get("requests") or 0
    if runs and "counters" in row:
        row["queries_per_run"] = round(row["counters"]["queries_total"] / runs, 1)
        writes = sum(row["counters"]["queries"].get(k, 0) for k in ("insert", "update", "delete"))
        row["writes_per_run"] = round(writes / runs, 1)
        row["redis_per_run_inprocess"] = round(row["counters"]["redis_total"] / runs, 1)
    if runs and row.get("redis_commandstats") is not None and row["target"] not in SQLITE_TARGETS:
        row["redis_per_run"] = round(sum(row["redis_commandstats"].values()) / runs, 1)


# --- profiling ----------------------------------------------------------------------------------
def start_profiler(pid: int, sdir: Path, args) -> subprocess.Popen:
    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install -r requirements-dev.txt")
    out = sdir / "profile.collapsed.txt"
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--rate", str(args.profile_rate), "--duration", str(int(args.duration)),
         "--format", "raw", "--threads", "--output", str(out), "--nonblocking"],
        stdout=(sdir / "py-spy.log").open("w"), stderr=subprocess.STDOUT,
    )


def finish_profiler(spy: subprocess.Popen, sdir: Path) -> dict[str, Any]:
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)
    from bench.profile_summary import summarise_collapsed, write_speedscope

    collapsed = sdir / "profile.collapsed.txt"
    if not collapsed.exists():
        return {"error": (sdir / "py-spy.log").read_text()[-400:]}
    summary = summarise_collapsed(collapsed)
    write_speedscope(collapsed, sdir / "profile.speedscope.json")
    (sdir / "profile-summary.json").write_text(json.dumps(summary, indent=1))
    (sdir / "profile-summary.txt").write_text(summary["text"])
    return {"collapsed": str(collapsed), "speedscope": str(sdir / "profile.speedscope.json"),
            "summary": str(sdir / "profile-summary.txt"), "samples": summary["samples"]}


# --- output -----------------------------------------------------------------------------------------
def _t(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:,.0f} ms" if ms < 1000 else f"{ms / 1000:,.1f} s"


def _pair(a: float | None, b: float | None) -> str:
    if a is None:
        return "—"
    if a < 1000 and b is not None and b < 1000:
        return f"{a:,.0f} / {b:,.0f} ms"
    return f"{a / 1000:,.1f} / {(b or 0) / 1000:,.1f} s"


def _n(value: Any, fmt: str = "{:,.1f}") -> str:
    return "—" if value is None else fmt.format(value)


COLUMNS = ["scenario", "target", "ok / failed", "TTFT p50 / p99", "gap p99", "tokens/s", "CPU s / 1k tok",
           "× raw SDK", "peak RSS", "DB queries / run", "Redis cmds / run"]


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out, previous = [], None
    for row in rows:
        scenario = f"{row['mode']}, C={row['clients']}"
        ok = "error" if "requests" not in row else f"{row['ok']} / {row['failed']}"
        if row.get("error") and "requests" in row:
            ok += " (hung)"
        out.append([
            scenario if scenario != previous else "",
            row["label"],
            ok,
            _pair(row.get("ttft_p50_ms"), row.get("ttft_p99_ms")),
            _t(row.get("gap_p99_ms")),
            _n(row.get("tokens_per_s"), "{:,.0f}"),
            # Not a cost per token when nothing was delivered whole (a few stray tokens divide
            # a minute of CPU); the raw figure stays in the JSON.
            _n(row.get("cpu_per_1k_tokens"), "{:.3f}") if row.get("ok") else "—",
            "—" if not row.get("ok") else
            (_n(row.get("x_sdk"), "{:.2f}") if row["target"] != "sdk" else "1.00"),
            _n(row.get("peak_rss_mb"), "{:,.0f} MB"),
            _n(row.get("queries_per_run")) if row["target"] != "sdk" else "—",
            _n(row.get("redis_per_run")) if row["target"] not in ("sdk", *SQLITE_TARGETS) else "—",
        ])
        previous = scenario
    return out


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    return "\n".join(lines)


def failure_notes(rows: list[dict[str, Any]]) -> str:
    notes = []
    for row in rows:
        bits = []
        if row.get("disrupted"):
            bits.append(row["disrupted"])
        if row.get("error"):
            bits.append(f"error: {row['error']}")
        if row.get("failures"):
            bits.append("failures: " + ", ".join(f"{n}× {k}" for k, n in row["failures"].items()))
        if row.get("failed_with_zero_tokens"):
            bits.append(f"{row['failed_with_zero_tokens']} failed with 0 tokens")
        stored = row.get("stored") or {}
        if stored.get("runs") and row.get("failed"):
            bits.append("stored runs: " + ", ".join(f"{k} {v}" for k, v in stored["runs"].items()))
        for log in row.get("log_summary") or []:
            for warning in log.get("warnings", [])[:4]:
                bits.append(f"log {warning['count']}× {warning['message'][:140]}")
            for exc in log.get("exceptions", [])[:3]:
                bits.append(f"log {exc['count']}× {exc['exception'][:140]}")
        if bits:
            notes.append(f"* {row['scenario']}: " + "; ".join(bits))
    return "\n".join(notes)


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    packages = {}
    for name in ("Django", "channels", "channels-redis", "daphne", "Twisted", "openai-agents", "openai", "redis",
                 "psycopg", "pydantic"):
        with contextlib.suppress(Exception):
            packages[name] = version(name)
    # A tree exported with `git archive` (to measure a commit while others edit the checkout)
    # has no .git: BENCH_COMMIT names it.
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit = commit or os.environ.get("BENCH_COMMIT", "unknown")
    dirty = len(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.splitlines())
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "kernel": platform.release(), "loadavg_start": os.getloadavg(), "packages": packages,
            "commit": commit, "uncommitted_files": dirty}


# --- main ------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="sdk,sqlite,pg,pg2", help="sdk,sqlite,pg,pg2; also sqlite-lib, uvicorn (comma-separated)")
    parser.add_argument("--transports", default="sse,ws", help="sse,ws")
    parser.add_argument("--clients", default="10,100,500", help="C values, comma-separated")
    parser.add_argument("--modes", default="paced,burst", help="paced,burst")
    parser.add_argument("--duration", type=float, default=10.0, help="measured closed loop, seconds (10)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up requests before measuring (10)")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                        help="a request still unfinished after this many seconds fails as a timeout (120)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after the last reply before counters are read")
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes: C=10, paced, sdk/sqlite/pg, both transports, 5-s loop")
    parser.add_argument("--api", choices=["responses", "chat_completions"], default="responses",
                        help="which OpenAI API the SDK and the app use against the mock")
    parser.add_argument("--profile", nargs="?", const="paced,100,sqlite,sse", default=None,
                        metavar="MODE,C,TARGET,TRANSPORT",
                        help="also run this scenario once more with py-spy on daphne (default paced,100,sqlite,sse)")
    parser.add_argument("--profile-only", action="store_true", help="run only the --profile scenario")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (100)")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432",
                        help=f"PostgreSQL server (the database {PG_DB} is created and dropped)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9", help="Redis URL; its DB is flushed (9)")
    parser.add_argument("--keep-db", action="store_true", help=f"leave {PG_DB} in place afterwards")
    parser.add_argument("--no-run-cost", action="store_true",
                        help="skip the cost split per run and per token printed after the table (bench/run_cost.py, ~1 min)")
    parser.add_argument("--out", default="", help="output folder (default var/bench/load-<time>/)")
    parser.add_argument("--report", nargs="+", metavar="RESULTS_JSON",
                        help="print the table of saved results instead of running; a later file's app rows replace "
                             "an earlier file's (e.g. a scenario re-run after a disruption), each keeping its own "
                             "× raw SDK")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.modes, args.duration = "10", "paced", 5.0
        if args.targets == parser.get_default("targets"):
            args.targets = "sdk,sqlite,pg"
    for name, allowed in (("targets", TARGET_LABELS), ("transports", ("sse", "ws")), ("modes", MODES)):
        values = [v for v in getattr(args, name).split(",") if v]
        bad = [v for v in values if v not in allowed]
        if bad:
            parser.error(f"--{name}: unknown {', '.join(bad)} (choose from {', '.join(allowed)})")
        setattr(args, name, values)
    args.clients = [int(c) for c in str(args.clients).split(",") if c]
    if not args.redis.rstrip("/").rsplit("/", 1)[-1].isdigit():
        parser.error("--redis must name a DB number, e.g. redis://127.0.0.1:6379/9")
    return args


def print_report(rows: list[dict[str, Any]]) -> str:
    order = {t: i for i, t in enumerate(TARGET_LABELS)}
    rows.sort(key=lambda r: (list(MODES).index(r["mode"]), r["clients"], order[r["target"]], r["transport"]))
    table = markdown_table(rows)
    notes = failure_notes(rows)
    print()
    print(table)
    if notes:
        print()
        print(notes)
    return table + "\n\n" + notes + "\n"


def report_files(paths: list[str]) -> None:
    merged: dict[str, dict[str, Any]] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text())["scenarios"]:
            if row["target"] == "sdk" and row["scenario"] in merged:
                continue
            merged[row["scenario"]] = row
    print_report(list(merged.values()))


def main() -> None:
    args = parse_args()
    if args.report:
        report_files(args.report)
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(args.out) if args.out else ROOT / "var" / "bench" / f"load-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    scenarios: list[Scenario] = []
    if not args.profile_only:
        # Side by side: every target at one (mode, C) before the next, so the ratios to the raw
        # SDK compare runs made minutes apart, not an hour apart, on this shared machine.
        for mode in args.modes:
            for clients in args.clients:
                for target in args.targets:
                    for transport in (["sdk"] if target == "sdk" else args.transports):
                        scenarios.append(Scenario(target, transport, clients, mode))
    profiled = None
    if args.profile:
        mode, clients, target, transport = args.profile.split(",")
        profiled = Scenario(target, transport, int(clients), mode)
        if not any(s.target == "sdk" and s.mode == mode and s.clients == int(clients) for s in scenarios):
            scenarios.insert(0, Scenario("sdk", "sdk", int(clients), mode))
    info = machine()
    print(f"load benchmark: {len(scenarios)} scenarios{' + 1 profiled' if profiled else ''}, output {workdir}")
    print(f"  machine: {info['nproc']} cores, {info['cpu_model']}, Python {info['python']}, commit {info['commit']}"
          f" ({info['uncommitted_files']} uncommitted files)", flush=True)

    mock = Mock(workdir)
    probe = Probe(args)
    databases: dict[str, Database] = {}
    sdk_rows: dict = {}
    rows: list[dict[str, Any]] = []
    profile_row = None
    started = time.monotonic()
    results_path = workdir / "results.json"

    def save() -> None:
        results_path.write_text(json.dumps({
            "machine": {**info, "loadavg_end": os.getloadavg()},
            "args": dict(vars(args)),
            "elapsed_s": round(time.monotonic() - started, 1),
            "scenarios": rows,
            "profiled": profile_row,
        }, indent=1, default=str))

    def database_for(target: str) -> Database | None:
        if target == "sdk":
            return None
        kind = "sqlite" if target in SQLITE_TARGETS else "pg"
        if kind not in databases:
            databases[kind] = Database(kind, workdir, args)
        probe.connect(databases[kind])
        return databases[kind]

    try:
        for sc in scenarios:
            print(f"- {sc.name} …", end=" ", flush=True)
            t = time.monotonic()
            row = run_scenario(sc, args=args, mock=mock, database=database_for(sc.target), probe=probe,
                               workdir=workdir, sdk_rows=sdk_rows)
            if row.get("disrupted"):
                print(f"{row['disrupted']}; once more …", end=" ", flush=True)
                wait_for_redis(probe)
                row = run_scenario(sc, args=args, mock=mock, database=database_for(sc.target), probe=probe,
                                   workdir=workdir / "retry", sdk_rows=sdk_rows)
            rows.append(row)
            save()
            status = row.get("error") or f"{row.get('ok')} ok / {row.get('failed')} failed"
            print(f"{status} ({time.monotonic() - t:.0f} s)", flush=True)
        if profiled is not None:
            print(f"- {profiled.name} with py-spy …", end=" ", flush=True)
            profile_row = run_scenario(profiled, args=args, mock=mock, database=database_for(profiled.target),
                                       probe=probe, workdir=workdir, sdk_rows=dict(sdk_rows), profile=True)
            save()
            print(profile_row.get("error") or f"{profile_row.get('ok')} ok / {profile_row.get('failed')} failed",
                  flush=True)
    finally:
        mock.close()
        for database in databases.values():
            database.drop()
        save()

    (workdir / "table.md").write_text(print_report(rows))
    if not args.no_run_cost:
        # Beside the table: one run's cost split into per run and per token, with SQL
        # statements and thread hops per run (bench/run_cost.py, in a process of its own).
        cost = subprocess.run([PY, str(Path(__file__).with_name("run_cost.py")), "--json", str(workdir / "run-cost.json")],
                              capture_output=True, text=True)
        print(cost.stdout[cost.stdout.find("One run"):] if cost.returncode == 0 else f"run_cost.py failed: {cost.stderr[-400:]}")
    if profile_row and profile_row.get("profile", {}).get("summary"):
        print()
        print(f"profile ({profiled.name}): {profile_row['profile']['summary']}")
        print(Path(profile_row["profile"]["summary"]).read_text()[:3000])
    print(f"\nresults: {results_path}  (elapsed {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
