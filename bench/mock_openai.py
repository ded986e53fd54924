"""A fast mock of the OpenAI API for load benchmarks: streamed Responses (and Chat Completions).

Plain asyncio (an `asyncio.Protocol` speaking HTTP/1.1 with keep-alive and chunked bodies, no
framework), so one process serves hundreds of concurrent streams on time and its own cost stays
small next to the server under test. Every request gets the same reply, `w0 w1 … w{n-1}`:

* `paced`: 100 tokens, the first after 100 ms, then one every 20 ms (a fast real model);
* `burst`: 200 tokens written at once, with no delay (the worst case for the server).

Pacing is by the clock (token i is due at start + first_delay + i * interval), so a late
callback catches up instead of drifting. Usage is reported like the real API: always in the
Responses stream's `response.completed`, and in a last Chat Completions chunk when the request
asked for it (`stream_options.include_usage`).

    .venv/bin/python bench/mock_openai.py --port 8765 --mode paced
    OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=x ...

Control and statistics (used by bench/load.py):

    GET /_control?mode=burst            switch mode (also tokens=, first_delay=, interval=)
    GET /_stats                         {"requests", "streams", "active", "max_active", ...}
    GET /_stats?reset=1                 the same, then zero the counters
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

MODES: dict[str, dict[str, float]] = {
    "paced": {"tokens": 100, "first_delay": 0.100, "interval": 0.020},
    "burst": {"tokens": 200, "first_delay": 0.0, "interval": 0.0},
}


def reply_tokens(n: int) -> list[str]:
    """The reply, token by token: `w0`, ` w1`, ` w2`, … (so the text splits into n words)."""
    return ["w0"] + [f" w{i}" for i in range(1, n)]


def reply_text(n: int) -> str:
    return "".join(reply_tokens(n))


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(event: dict[str, Any], *, typed: bool) -> bytes:
    data = json.dumps(event, separators=(",", ":")).encode()
    if typed:
        return b"event: " + event["type"].encode() + b"\ndata: " + data + b"\n\n"
    return b"data: " + data + b"\n\n"


class Config:
    def __init__(self, mode: str) -> None:
        self.set(mode=mode)

    def set(self, *, mode: str | None = None, tokens: int | None = None, first_delay: float | None = None,
            interval: float | None = None) -> None:
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}")
            self.mode = mode
            preset = MODES[mode]
            self.tokens, self.first_delay, self.interval = int(preset["tokens"]), preset["first_delay"], preset["interval"]
        if tokens is not None:
            self.tokens = int(tokens)
        if first_delay is not None:
            self.first_delay = float(first_delay)
        if interval is not None:
            self.interval = float(interval)
        self._templates()

    def _templates(self) -> None:
        # Per-token SSE bytes with a hole for the item id: a stream costs one bytes join per token.
        self.words = reply_tokens(self.tokens)
        self.text = "".join(self.words)
        self.responses_delta = []
        for i, word in enumerate(self.words):
            head = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"'
            tail = (
                '","output_index":0,"content_index":0,"delta":' + json.dumps(word)
                + ',"logprobs":[],"sequence_number":' + str(4 + i) + "}\n\n"
            ).encode()
            self.responses_delta.append((head, tail))
        self.chat_delta = []
        for word in self.words:
            head = b'data: {"id":"'
            tail = (
                '","object":"chat.completion.chunk","created":0,"model":"MODEL","choices":[{"index":0,"delta":'
                '{"content":' + json.dumps(word) + '},"finish_reason":null}]}\n\n'
            ).encode()
            self.chat_delta.append((head, tail))

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "tokens": self.tokens, "first_delay": self.first_delay, "interval": self.interval}


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.streams = 0
        self.completed = 0
        self.aborted = 0
        self.active = 0
        self.max_active = 0
        self.tokens_sent = 0
        self.late_ms_max = 0.0  # worst lateness of a token against its schedule

    def as_dict(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "requests": self.requests, "streams": self.streams, "completed": self.completed, "aborted": self.aborted,
            "active": self.active, "max_active": self.max_active, "tokens_sent": self.tokens_sent,
            "late_ms_max": round(self.late_ms_max, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        }


class Stream:
    """One streamed reply on one connection, driven by loop callbacks (no task per stream)."""

    def __init__(self, conn: HttpConnection, *, api: str, model: str, input_tokens: int, include_usage: bool) -> None:
        self.conn = conn
        self.config = conn.config
        self.api = api
        self.model = model
        self.input_tokens = input_tokens
        self.include_usage = include_usage
        conn.server.counter += 1
        self.n = conn.server.counter
        self.item_id = f"msg_{self.n}".encode()
        self.completion_id = f"chatcmpl-{self.n}".encode()
        self.i = 0
        self.handle: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()

    # --- shapes ---------------------------------------------------------------------------
    def _usage(self) -> dict[str, Any]:
        out = self.config.tokens
        return {
            "input_tokens": self.input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + out,
        }

    def _response(self, *, done: bool) -> dict[str, Any]:
        item = {
            "type": "message", "id": self.item_id.decode(), "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": self.config.text, "annotations": [], "logprobs": []}],
        }
        return {
            "id": f"resp_{self.n}", "object": "response", "created_at": int(time.time()), "model": self.model,
            "status": "completed" if done else "in_progress", "output": [item] if done else [],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None, "incomplete_details": None,
            "instructions": None, "metadata": {}, "temperature": 1.0, "top_p": 1.0,
            "usage": self._usage() if done else None,
        }

    def _head(self) -> bytes:
        if self.api == "chat":
            first = {"id": self.completion_id.decode(), "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": self.model,
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
            return _sse(first, typed=False)
        created = self._response(done=False)
        msg = {"type": "message", "id": self.item_id.decode(), "role": "assistant", "status": "in_progress", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return b"".join((
            _sse({"type": "response.created", "response": created, "sequence_number": 0}, typed=True),
            _sse({"type": "response.in_progress", "response": created, "sequence_number": 1}, typed=True),
            _sse({"type": "response.output_item.added", "output_index": 0, "item": msg, "sequence_number": 2}, typed=True),
            _sse({"type": "response.content_part.added", "item_id": self.item_id.decode(), "output_index": 0,
                  "content_index": 0, "part": part, "sequence_number": 3}, typed=True),
        ))

    def _token(self, i: int) -> bytes:
        if self.api == "chat":
            head, tail = self.config.chat_delta[i]
            return head + self.completion_id + tail.replace(b"MODEL", self.model.encode(), 1)
        head, tail = self.config.responses_delta[i]
        return head + self.item_id + tail

    def _tail(self) -> bytes:
        text = self.config.text
        if self.api == "chat":
            base = {"id": self.completion_id.decode(), "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": self.model}
            out = [_sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, typed=False)]
            if self.include_usage:
                usage = {"prompt_tokens": self.input_tokens, "completion_tokens": self.config.tokens,
                         "total_tokens": self.input_tokens + self.config.tokens,
                         "prompt_tokens_details": {"cached_tokens": 0},
                         "completion_tokens_details": {"reasoning_tokens": 0}}
                out.append(_sse({**base, "choices": [], "usage": usage}, typed=False))
            out.append(b"data: [DONE]\n\n")
            return b"".join(out)
        seq = 4 + self.config.tokens
        final = self._response(done=True)
        item = final["output"][0]
        part = item["content"][0]
        item_id = self.item_id.decode()
        return b"".join((
            _sse({"type": "response.output_text.done", "item_id": item_id, "output_index": 0, "content_index": 0,
                  "text": text, "logprobs": [], "sequence_number": seq}, typed=True),
            _sse({"type": "response.content_part.done", "item_id": item_id, "output_index": 0, "content_index": 0,
                  "part": part, "sequence_number": seq + 1}, typed=True),
            _sse({"type": "response.output_item.done", "output_index": 0, "item": item, "sequence_number": seq + 2},
                 typed=True),
            _sse({"type": "response.completed", "response": final, "sequence_number": seq + 3}, typed=True),
        ))

    # --- driving --------------------------------------------------------------------------
    def begin(self) -> None:
        stats = self.conn.server.stats
        stats.streams += 1
        stats.active += 1
        stats.max_active = max(stats.max_active, stats.active)
        self.conn.write_head(200, "text/event-stream", chunked=True)
        self.conn.write(_chunk(self._head()))
        if self.config.first_delay <= 0 and self.config.interval <= 0:
            # Burst: every token at once, then the end, in one write.
            body = b"".join(self._token(i) for i in range(self.config.tokens)) + self._tail()
            stats.tokens_sent += self.config.tokens
            self.conn.write(_chunk(body) + b"0\r\n\r\n")
            self._done(completed=True)
            return
        self.handle = self.loop.call_at(self.start + self.config.first_delay, self._tick)

    def _tick(self) -> None:
        self.handle = None
        if self.conn.closed:
            return
        now = self.loop.time()
        due_count = self.config.tokens
        if self.config.interval > 0:
            due_count = min(self.config.tokens, int((now - self.start - self.config.first_delay) / self.config.interval) + 1)
        due_count = max(due_count, self.i + 1)
        late = (now - (self.start + self.config.first_delay + self.i * self.config.interval)) * 1000
        stats = self.conn.server.stats
        stats.late_ms_max = max(stats.late_ms_max, late)
        parts = [self._token(i) for i in range(self.i, due_count)]
        stats.tokens_sent += due_count - self.i
        self.i = due_count
        if self.i >= self.config.tokens:
            self.conn.write(_chunk(b"".join(parts) + self._tail()) + b"0\r\n\r\n")
            self._done(completed=True)
            return
        self.conn.write(_chunk(b"".join(parts)))
        self.handle = self.loop.call_at(self.start + self.config.first_delay + self.i * self.config.interval, self._tick)

    def abort(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self._done(completed=False)

    def _done(self, *, completed: bool) -> None:
        if self.conn.stream is not self:
            return
        stats = self.conn.server.stats
        stats.active -= 1
        if completed:
            stats.completed += 1
        else:
            stats.aborted += 1
        self.conn.stream = None
        if completed:
            self.conn.finished()


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.config = server.config
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.stream: Stream | None = None
        self.closed = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.stream is not None:
            self.stream.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.stream is None:
            self._parse()

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def write_head(self, status: int, content_type: str, *, chunked: bool = False, length: int = 0) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
        lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", "Cache-Control: no-cache"]
        lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
        lines.append("Connection: keep-alive" if self.keep_alive else "Connection: close")
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def respond_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.write_head(status, "application/json", length=len(body))
        self.write(body)
        self.finished()

    def finished(self) -> None:
        if not self.keep_alive:
            self.transport.close()
            return
        if self.buffer:
            # A pipelined request may already be waiting.
            asyncio.get_running_loop().call_soon(self._parse)

    def _parse(self) -> None:
        while self.stream is None and not self.closed:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            method, target = head[0].split(" ")[:2]
            self.keep_alive = headers.get("connection", "").lower() != "close"
            try:
                self.handle(method, target, body)
            except Exception as exc:  # a bad request must not take the mock down
                self.respond_json(400, {"error": {"message": repr(exc), "type": "invalid_request_error"}})

    def handle(self, method: str, target: str, body: bytes) -> None:
        url = urlsplit(target)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        stats = self.server.stats
        if path == "/_stats":
            payload = {**stats.as_dict(), "config": self.config.as_dict()}
            if query.get("reset"):
                stats.reset()
            return self.respond_json(200, payload)
        if path == "/_control":
            self.config.set(
                mode=query.get("mode"),
                tokens=int(query["tokens"]) if "tokens" in query else None,
                first_delay=float(query["first_delay"]) if "first_delay" in query else None,
                interval=float(query["interval"]) if "interval" in query else None,
            )
            return self.respond_json(200, self.config.as_dict())
        if method != "POST" or not (path.endswith("/responses") or path.endswith("/chat/completions")):
            return self.respond_json(404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})
        stats.requests += 1
        request = json.loads(body or b"{}")
        model = str(request.get("model") or "gpt-4.1-mini")
        # A rough count, like a tokenizer would give: 4 characters per token.
        input_tokens = max(1, len(body) // 4)
        api = "chat" if path.endswith("/chat/completions") else "responses"
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        stream = Stream(self, api=api, model=model, input_tokens=input_tokens, include_usage=include_usage)
        if not request.get("stream"):
            return self.respond_json(200, self._complete_object(stream))
        self.stream = stream
        stream.begin()

    def _complete_object(self, stream: Stream) -> dict[str, Any]:
        if stream.api == "responses":
            return stream._response(done=True)
        return {
            "id": stream.completion_id.decode(), "object": "chat.completion", "created": int(time.time()),
            "model": stream.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.config.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": stream.input_tokens, "completion_tokens": self.config.tokens,
                      "total_tokens": stream.input_tokens + self.config.tokens},
        }


class MockServer:
    def __init__(self, mode: str = "paced") -> None:
        self.config = Config(mode)
        self.stats = Stats()
        self.counter = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: HttpConnection(self), host, port, backlog=2048, reuse_address=True)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def _main(args: argparse.Namespace) -> None:
    server = MockServer(args.mode)
    if args.tokens or args.first_delay is not None or args.interval is not None:
        server.config.set(tokens=args.tokens or None, first_delay=args.first_delay, interval=args.interval)
    port = await server.start(args.host, args.port)
    print(json.dumps({"ready": True, "port": port, "pid": os.getpid(), **server.config.as_dict()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed on the ready line)")
    parser.add_argument("--mode", choices=sorted(MODES), default="paced")
    parser.add_argument("--tokens", type=int, default=0, help="override the mode's reply length")
    parser.add_argument("--first-delay", type=float, default=None, help="override: seconds before the first token")
    parser.add_argument("--interval", type=float, default=None, help="override: seconds between tokens")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
