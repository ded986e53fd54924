"""A tiny OpenAI-compatible HTTP server on loopback, for tests that drive the SDK's real
`OpenAIResponsesModel` / `OpenAIChatCompletionsModel` (through our provider) end to end.

It answers `POST /v1/responses` and `POST /v1/chat/completions`, streamed (SSE) or not, with
scripted turns: a text reply or one function call. Usage is reported like the real API does:
always for Responses, and for Chat Completions streams only when the request asked for it
(`stream_options.include_usage`). Every request body is kept in `.requests`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Turn:
    text: str = ""
    tool: str | None = None  # a function call instead of text
    arguments: dict[str, Any] = field(default_factory=dict)
    input_tokens: int = 120
    cached_tokens: int = 20
    output_tokens: int = 30
    reasoning_tokens: int = 5

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class FakeOpenAI:
    def __init__(self, turns: list[Turn]) -> None:
        self.turns = list(turns)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._counter = 0

    def next_turn(self) -> tuple[int, Turn]:
        self._counter += 1
        if not self.turns:
            return self._counter, Turn(text="(no more scripted turns)")
        return self._counter, self.turns.pop(0)

    # --- Responses API ---------------------------------------------------------------
    def response_object(self, n: int, turn: Turn, model: str) -> dict[str, Any]:
        if turn.tool:
            output = [{
                "type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}", "name": turn.tool,
                "arguments": json.dumps(turn.arguments), "status": "completed",
            }]
        else:
            output = [{
                "type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": turn.text, "annotations": [], "logprobs": []}],
            }]
        return {
            "id": f"resp_{n}", "object": "response", "created_at": int(time.time()), "model": model,
            "status": "completed", "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {
                "input_tokens": turn.input_tokens,
                "input_tokens_details": {"cached_tokens": turn.cached_tokens},
                "output_tokens": turn.output_tokens,
                "output_tokens_details": {"reasoning_tokens": turn.reasoning_tokens},
                "total_tokens": turn.total_tokens,
            },
        }

    def responses_events(self, n: int, turn: Turn, model: str) -> Iterator[dict[str, Any]]:
        final = self.response_object(n, turn, model)
        created = {**final, "status": "in_progress", "output": [], "usage": None}
        seq = iter(range(1, 1000))
        yield {"type": "response.created", "response": created, "sequence_number": next(seq)}
        item = final["output"][0]
        if turn.tool:
            yield {"type": "response.output_item.added", "output_index": 0, "item": item, "sequence_number": next(seq)}
            yield {"type": "response.output_item.done", "output_index": 0, "item": item, "sequence_number": next(seq)}
        else:
            partial = {**item, "status": "in_progress", "content": []}
            yield {"type": "response.output_item.added", "output_index": 0, "item": partial, "sequence_number": next(seq)}
            for word in _pieces(turn.text):
                yield {
                    "type": "response.output_text.delta", "item_id": item["id"], "output_index": 0, "content_index": 0,
                    "delta": word, "logprobs": [], "sequence_number": next(seq),
                }
            yield {"type": "response.output_item.done", "output_index": 0, "item": item, "sequence_number": next(seq)}
        yield {"type": "response.completed", "response": final, "sequence_number": next(seq)}

    # --- Chat Completions ----------------------------------------------------------------
    def completion_usage(self, turn: Turn) -> dict[str, Any]:
        return {
            "prompt_tokens": turn.input_tokens,
            "completion_tokens": turn.output_tokens,
            "total_tokens": turn.total_tokens,
            "prompt_tokens_details": {"cached_tokens": turn.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": turn.reasoning_tokens},
        }

    def completion_object(self, n: int, turn: Turn, model: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
        if turn.tool:
            message["tool_calls"] = [{
                "id": f"call_{n}", "type": "function",
                "function": {"name": turn.tool, "arguments": json.dumps(turn.arguments)},
            }]
        return {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if turn.tool else "stop"}],
            "usage": self.completion_usage(turn),
        }

    def completion_chunks(self, n: int, turn: Turn, model: str, *, include_usage: bool) -> Iterator[dict[str, Any]]:
        base = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        if turn.tool:
            delta = {"role": "assistant", "tool_calls": [{
                "index": 0, "id": f"call_{n}", "type": "function",
                "function": {"name": turn.tool, "arguments": json.dumps(turn.arguments)},
            }]}
            yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        else:
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
            for word in _pieces(turn.text):
                yield {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        if include_usage:
            # Like the real API: usage comes in a last chunk without choices, only when asked.
            yield {**base, "choices": [], "usage": self.completion_usage(turn)}


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [word + (" " if i < len(words) - 1 else "") for i, word in enumerate(words)]


def _handler(fake: FakeOpenAI):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            fake.requests.append((self.path, body))
            n, turn = fake.next_turn()
            model = body.get("model", "gpt-4.1-mini")
            if self.path.endswith("/responses"):
                if body.get("stream"):
                    return self._sse(fake.responses_events(n, turn, model), typed=True)
                return self._json(fake.response_object(n, turn, model))
            if self.path.endswith("/chat/completions"):
                if body.get("stream"):
                    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    return self._sse(fake.completion_chunks(n, turn, model, include_usage=include_usage), typed=False)
                return self._json(fake.completion_object(n, turn, model))
            self.send_error(404)

        def _json(self, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _sse(self, events: Iterator[dict[str, Any]], *, typed: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for event in events:
                prefix = f"event: {event['type']}\n" if typed else ""
                self.wfile.write(f"{prefix}data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            if not typed:
                self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler


@contextmanager
def fake_openai_server(turns: list[Turn]) -> Iterator[tuple[str, FakeOpenAI]]:
    """Yields (base_url, fake). The server runs in a thread and stops when the block ends."""
    fake = FakeOpenAI(turns)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-openai", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
