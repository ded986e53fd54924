"""The load generator of bench/load.py: C clients in a closed loop, in a process of their own.

Transports:
* `sse`: `POST /api/conversations/<id>/messages` with an API token, the reply read as
  Server-Sent Events (a small asyncio HTTP/1.1 client with keep-alive: it costs the machine far
  less CPU per event than a general-purpose client, and the server is what is measured);
* `ws`: one socket per client on `/ws/chat/` (`Authorization: Bearer`), `message.send`, then
  frames until `run.finished`;
* `sdk`: no server at all: `Runner.run_streamed` of an `Agent` against the mock, in this
  process (the raw SDK floor; bench/load.py then measures this process's CPU).

Each client has its own conversation. After `--warmup` requests (spread over the first ten
clients), the client prints `{"phase": "ready"}` and waits for a line on stdin; then every client
sends, reads the whole reply, and sends again until `--duration` seconds have passed; requests
in flight then finish (or hit `--request-timeout`). It prints `{"phase": "done"}`, waits for another line on stdin
(the benchmark reads this process's CPU and memory meanwhile), and writes the summary to `--out`.

A request is OK when the text of its deltas is exactly the mock's reply and it ends with
`run.finished` status `completed` (for `sdk`: the run's final output is the reply too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.mock_openai import reply_text  # noqa: E402

FAILURE_PAUSE = 0.1  # after a failed request, so a server answering 500 at once is not hammered


class RequestFailed(Exception):
    pass


class Record:
    __slots__ = ("client", "start", "end", "first", "marks", "parts", "ok", "error", "status")

    def __init__(self, client: int) -> None:
        self.client = client
        self.start = time.perf_counter()
        self.end = 0.0
        self.first: float | None = None
        self.marks: list[tuple[float, int]] = []  # (arrival, tokens) per delta event
        self.parts: list[str] = []
        self.ok = False
        self.error = ""
        self.status = ""

    def delta(self, text: str) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.marks.append((now, text.count("w")))  # every token of the mock's reply has one "w"
        self.parts.append(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.marks)


# --- transports -----------------------------------------------------------------------------
class SseClient:
    def __init__(self, url: str, token: str, conversation: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.token = token
        self.path = f"/api/conversations/{conversation}/messages"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        pass

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, record: Record, content: str, expected: str) -> None:
        body = json.dumps({"content": content}).encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        for attempt in (1, 2):
            reused = self.writer is not None
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(head + body)
            status_line = await self.reader.readline()
            if status_line:
                break
            self.close()
            if not reused or attempt == 2:
                raise RequestFailed("connection closed before the response")
            # A kept-alive connection the server had closed meanwhile: once more on a new one.
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        keep = headers.get("connection", "").lower() != "close"
        if status != 200:
            data = b"".join([c async for c in self._body(chunked, headers)])
            self.close()
            try:
                code = json.loads(data)["error"]["code"]
            except Exception:
                code = data[:80].decode(errors="replace")
            raise RequestFailed(f"http {status} {code}")
        buffer = b""
        finished = False
        async for chunk in self._body(chunked, headers):
            buffer += chunk
            while (cut := buffer.find(b"\n\n")) >= 0:
                block, buffer = buffer[:cut], buffer[cut + 2:]
                data = None
                for line in block.split(b"\n"):
                    if line.startswith(b"data: "):
                        data = line[6:]
                if data is None:
                    continue  # a keep-alive comment
                event = json.loads(data)
                kind = event.get("type")
                if kind == "message.delta":
                    record.delta(event["delta"])
                elif kind == "run.finished":
                    record.status = event.get("status", "")
                    if record.status != "completed":
                        record.error = f"run.finished {record.status}: {event.get('error') or ''}"[:120]
                    finished = True
                elif kind == "run.paused":
                    record.error = "run.paused"
                    finished = True
        if not keep or not chunked:
            self.close()
        if not finished:
            raise RequestFailed(f"stream ended without run.finished ({record.tokens} tokens)")

    async def _body(self, chunked: bool, headers: dict[str, str]):
        reader = self.reader
        if chunked:
            while True:
                size_line = await reader.readline()
                if not size_line:
                    self.close()
                    raise RequestFailed("connection closed mid-stream")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await reader.readline()  # the blank line after the last chunk
                    return
                data = await reader.readexactly(size + 2)
                yield data[:-2]
        elif "content-length" in headers:
            yield await reader.readexactly(int(headers["content-length"]))
        else:
            while data := await reader.read(65536):
                yield data


class WsClient:
    def __init__(self, url: str, token: str, conversation: str) -> None:
        parts = urlsplit(url)
        self.url = f"ws://{parts.hostname}:{parts.port}/ws/chat/"
        self.token = token
        self.conversation = conversation
        self.ws = None

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        if self.ws is None:
            self.ws = await connect(
                self.url, additional_headers={"Authorization": f"Bearer {self.token}"},
                ping_interval=None, compression=None, max_size=None, open_timeout=60,
            )

    def close(self) -> None:
        if self.ws is not None:
            asyncio.ensure_future(self.ws.close())
        self.ws = None

    async def request(self, record: Record, content: str, expected: str) -> None:
        from websockets.exceptions import ConnectionClosed

        await self.connect()
        ws = self.ws
        await ws.send(json.dumps({"type": "message.send", "conversation": self.conversation, "content": content}))
        try:
            async for raw in ws:
                event = json.loads(raw)
                kind = event.get("type")
                if kind == "message.delta":
                    record.delta(event["delta"])
                elif kind == "run.finished":
                    record.status = event.get("status", "")
                    if record.status != "completed":
                        record.error = f"run.finished {record.status}: {event.get('error') or ''}"[:120]
                    return
                elif kind == "error":
                    raise RequestFailed(f"error {event.get('code')}")
                elif kind == "run.paused":
                    raise RequestFailed("run.paused")
        except ConnectionClosed as exc:
            self.ws = None
            raise RequestFailed(f"socket closed {exc.rcvd.code if exc.rcvd else ''} ({record.tokens} tokens)") from None
        self.ws = None
        raise RequestFailed(f"socket closed ({record.tokens} tokens)")


class SdkClient:
    """The raw SDK: no web layer, no session, tracing on with no processor (nothing stored or
    exported), the same model class the app's `openai` provider uses."""

    agent = None

    def __init__(self, base_url: str, api: str) -> None:
        if SdkClient.agent is None:
            from agents import Agent, ModelSettings, OpenAIProvider, set_trace_processors

            set_trace_processors([])
            provider = OpenAIProvider(api_key="x", base_url=base_url, use_responses=api == "responses")
            SdkClient.agent = Agent(
                name="Assistant",
                instructions="You are a helpful assistant.",
                model=provider.get_model("gpt-4.1-mini"),
                model_settings=ModelSettings(include_usage=True if api == "chat_completions" else None),
            )

    async def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def request(self, record: Record, content: str, expected: str) -> None:
        from agents import Runner

        result = Runner.run_streamed(SdkClient.agent, content)
        async for event in result.stream_events():
            if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                record.delta(event.data.delta)
        record.status = "completed" if result.final_output == expected else "wrong final output"


# --- the closed loop --------------------------------------------------------------------------
async def one(client, index: int, content: str, expected: str, timeout: float) -> Record:
    record = Record(index)
    try:
        async with asyncio.timeout(timeout):
            await client.request(record, content, expected)
    except TimeoutError:
        record.error = f"timeout after {timeout:.0f} s ({record.tokens} tokens)"
        client.close()
    except RequestFailed as exc:
        record.error = str(exc)
    except Exception as exc:  # refused connections, resets: results, not crashes
        record.error = f"{type(exc).__name__}: {exc}"[:120]
        client.close()
    record.end = time.perf_counter()
    if not record.error:
        if record.text != expected:
            record.error = f"wrong text ({record.tokens} of {expected.count('w')} tokens)"
        elif record.status != "completed":
            record.error = f"status {record.status}"
    record.ok = not record.error
    return record


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def failure_kind(error: str) -> str:
    # "… (3 tokens)" and "… (7 tokens)" are one kind; so are the same error on two conversations.
    kind = UUID.sub("<id>", error.split(" (")[0])
    return kind[:100]


def summarise(records: list[Record], *, t0: float, duration: float, t_done: float, expected_tokens: int) -> dict[str, Any]:
    window_end = t0 + duration
    ttft = [r.first - r.start for r in records if r.first is not None]
    gaps: list[float] = []
    in_window = 0
    per_second = [0] * (int(math.ceil(t_done - t0)) + 1)
    for r in records:
        previous = None
        for at, n in r.marks:
            if previous is not None:
                gaps.append(at - previous)
            previous = at
            if at <= window_end:
                in_window += n
            per_second[min(int(at - t0), len(per_second) - 1)] += n
    ok = [r for r in records if r.ok]
    failures = Counter(failure_kind(r.error) for r in records if not r.ok)
    examples = {}
    for r in records:
        if not r.ok and failure_kind(r.error) not in examples:
            examples[failure_kind(r.error)] = r.error
    zero_token_failures = sum(1 for r in records if not r.ok and r.tokens == 0)
    return {
        "requests": len(records),
        "ok": len(ok),
        "failed": len(records) - len(ok),
        "failures": dict(failures.most_common()),
        "failure_examples": examples,
        "failed_with_zero_tokens": zero_token_failures,
        "ttft_p50_ms": _ms(percentile(ttft, 50)),
        "ttft_p99_ms": _ms(percentile(ttft, 99)),
        "gap_p50_ms": _ms(percentile(gaps, 50)),
        "gap_p99_ms": _ms(percentile(gaps, 99)),
        "duration_p50_ms": _ms(percentile([r.end - r.start for r in ok], 50)),
        "tokens_delivered": sum(r.tokens for r in records),
        "tokens_ok": len(ok) * expected_tokens,
        "tokens_in_window": in_window,
        # Every token the measured requests delivered, over the time until the last one ended
        # (at C=500 a request can outlast the 10-s window; the window alone would miss it).
        "tokens_per_s": round(sum(r.tokens for r in records) / max(t_done - t0, 1e-9), 1),
        "tokens_per_s_window": round(in_window / duration, 1),
        "deltas_per_request": round(sum(len(r.marks) for r in records) / max(len(records), 1), 1),
        "tokens_per_second_timeline": per_second,
        "window_s": duration,
        "drain_s": round(max(0.0, t_done - window_end), 2),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


async def main_async(args: argparse.Namespace) -> None:
    expected = reply_text(args.tokens)
    if args.transport == "sdk":
        clients = [SdkClient(args.base_url, args.api) for _ in range(args.clients)]
    else:
        specs = json.loads(Path(args.clients_file).read_text())[: args.clients]
        if len(specs) < args.clients:
            raise SystemExit(f"{args.clients_file} has {len(specs)} clients, {args.clients} asked for")
        cls = SseClient if args.transport == "sse" else WsClient
        clients = [cls(spec["url"], spec["token"], spec["conversation"]) for spec in specs]

    # Sockets open before anything is measured (at most 50 handshakes at a time).
    connect_errors = Counter()
    gate = asyncio.Semaphore(50)

    async def connect(client) -> None:
        async with gate:
            try:
                await client.connect()
            except Exception as exc:
                connect_errors[f"{type(exc).__name__}: {exc}"[:100]] += 1

    await asyncio.gather(*(connect(c) for c in clients))

    warm_clients = clients[: min(10, len(clients))]
    warm_records: list[Record] = []

    async def warm(k: int, client) -> None:
        for _ in range(k):
            warm_records.append(await one(client, -1, args.prompt, expected, args.request_timeout))

    shares = [args.warmup // len(warm_clients) + (1 if i < args.warmup % len(warm_clients) else 0)
              for i in range(len(warm_clients))]
    await asyncio.gather(*(warm(k, c) for k, c in zip(shares, warm_clients, strict=True)))

    print(json.dumps({"phase": "ready", "warmup_ok": sum(r.ok for r in warm_records), "warmup": len(warm_records)}),
          flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    cpu0 = _cpu()
    records: list[Record] = []
    t0 = time.perf_counter()
    deadline = t0 + args.duration

    async def loop(index: int, client) -> None:
        while time.perf_counter() < deadline:
            record = await one(client, index, args.prompt, expected, args.request_timeout)
            records.append(record)
            if not record.ok:
                await asyncio.sleep(FAILURE_PAUSE)

    await asyncio.gather(*(loop(i, c) for i, c in enumerate(clients)))
    t_done = time.perf_counter()
    cpu1 = _cpu()
    print(json.dumps({"phase": "done"}), flush=True)
    # Stay alive until the benchmark has read this process's CPU and memory (the `sdk` floor).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for client in clients:
        client.close()

    summary = summarise(records, t0=t0, duration=args.duration, t_done=t_done, expected_tokens=args.tokens)
    summary.update({
        "transport": args.transport,
        "clients": args.clients,
        "connect_errors": dict(connect_errors),
        "warmup": len(warm_records),
        "warmup_ok": sum(r.ok for r in warm_records),
        "warmup_failures": dict(Counter(failure_kind(r.error) for r in warm_records if not r.ok)),
        "client_cpu_s": round(cpu1 - cpu0, 2),
    })
    Path(args.out).write_text(json.dumps(summary))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=["sse", "ws", "sdk"], required=True)
    parser.add_argument("--clients", type=int, required=True, help="concurrent clients (C)")
    parser.add_argument("--clients-file", help="JSON [{url, token, conversation}] (sse, ws)")
    parser.add_argument("--base-url", help="the mock's /v1 URL (sdk)")
    parser.add_argument("--api", choices=["responses", "chat_completions"], default="responses")
    parser.add_argument("--tokens", type=int, required=True, help="tokens in the mock's reply")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument("--prompt", default="Tell me something.")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args))
    os._exit(0)  # do not wait for sockets the server never closes


if __name__ == "__main__":
    main()
