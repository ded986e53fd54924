"""The one translation from SDK stream events to the product's wire events (`chat.wire`).

Every transport (the WebSocket, SSE, the terminal chat) streams what `StreamEventMapper`
produces, and `Transcript` folds the same events into what gets stored, so what a user saw
live and what they see after a reload cannot drift apart.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agents import StreamEvent
from pydantic import BaseModel

from agents_app.tooling import TOOL_FAILURE_PREFIX
from chat import wire

TOOL_OUTPUT_PREVIEW_CHARS = 4000


class ToolStatus(StrEnum):
    """A tool entry's status in a reply's activity: what its chip on the page says."""

    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # the run was stopped while the call waited for approval
    EXPIRED = "expired"  # nobody answered the approval in time


UNFINISHED_TOOL = frozenset({ToolStatus.RUNNING, ToolStatus.AWAITING_APPROVAL})


def settle_tools(entries: list[dict[str, Any]], *, status: ToolStatus, outputs: dict[str, str] | None = None) -> None:
    """Close the tool entries of a reply whose run ended before they did: with what the tool
    really returned where the SDK history has it (`outputs`, by call id), else as `status`.
    The one place an ended run's tools get their final status, however the run ended."""
    for entry in entries:
        if entry.get("kind") != "tool" or entry.get("status") not in UNFINISHED_TOOL:
            continue
        output = (outputs or {}).get(entry.get("call_id"))
        if output is None:
            entry["status"] = status
        else:
            entry["output"] = preview(output)
            entry["status"] = ToolStatus.FAILED if output.startswith(TOOL_FAILURE_PREFIX) else ToolStatus.COMPLETED


def field_of(raw: Any, name: str, default: Any = None) -> Any:
    return raw.get(name, default) if isinstance(raw, dict) else getattr(raw, name, default)


def parse_arguments(arguments: Any) -> Any:
    """Tool-call arguments as JSON when they parse, else the text the model wrote."""
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments) if arguments else {}
    except json.JSONDecodeError:
        return arguments


def preview(output: Any) -> str:
    """A tool's output as text for the wire and the stored reply, capped."""
    if isinstance(output, BaseModel):
        text = output.model_dump_json()
    else:
        text = output if isinstance(output, str) else json.dumps(output, default=str)
    if len(text) > TOOL_OUTPUT_PREVIEW_CHARS:
        return text[:TOOL_OUTPUT_PREVIEW_CHARS] + "…"
    return text


class StreamEventMapper:
    """Stateful: it remembers the current agent and separates the texts of successive model
    responses with a blank line, inside the deltas themselves, so every client renders the
    same text."""

    def __init__(self, *, agent: str, text_so_far: bool = False) -> None:
        self.agent = agent
        self._text_so_far = text_so_far
        self._new_response = False

    def map(self, event: StreamEvent) -> list[dict[str, Any]]:
        if event.type == "raw_response_event":
            data = event.data
            if data.type == "response.created":
                self._new_response = True
            elif data.type == "response.output_text.delta" and data.delta:
                delta = data.delta
                if self._new_response and self._text_so_far:
                    delta = "\n\n" + delta.lstrip("\n")
                self._new_response = False
                self._text_so_far = True
                return [wire.message_delta(delta)]
            return []
        if event.type == "agent_updated_stream_event":
            if event.new_agent.name == self.agent:
                return []
            self.agent = event.new_agent.name
            return [wire.agent_updated(self.agent)]
        if event.type == "run_item_stream_event":
            raw = event.item.raw_item
            if event.name == "tool_called":
                return [
                    wire.tool_called(
                        # Correlate by call_id, never by item id (not unique across providers).
                        call_id=field_of(raw, "call_id") or field_of(raw, "id", ""),
                        name=field_of(raw, "name") or field_of(raw, "type", "tool"),
                        arguments=parse_arguments(field_of(raw, "arguments", {})),
                        agent=event.item.agent.name,
                    )
                ]
            if event.name == "tool_output":
                output = preview(event.item.output)
                return [
                    wire.tool_output(
                        call_id=field_of(raw, "call_id", ""), output=output, failed=output.startswith(TOOL_FAILURE_PREFIX)
                    )
                ]
        return []


@dataclass
class Transcript:
    """What a run has said and done so far, built from wire events."""

    agent: str
    started: float = field(default_factory=time.monotonic)
    text_parts: list[str] = field(default_factory=list)
    activity: list[dict[str, Any]] = field(default_factory=list)
    first_token_at: float | None = None

    @property
    def content(self) -> str:
        return "".join(self.text_parts)

    @property
    def time_to_first_token_ms(self) -> int | None:
        return None if self.first_token_at is None else int((self.first_token_at - self.started) * 1000)

    @property
    def duration_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "message.delta":
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            self.text_parts.append(event["delta"])
        elif kind == "tool.called":
            self.activity.append(
                {
                    "kind": "tool",
                    "call_id": event["call_id"],
                    "name": event["name"],
                    "arguments": event["arguments"],
                    "agent": event["agent"],
                    "status": ToolStatus.RUNNING,
                    "output": None,
                }
            )
        elif kind == "tool.output":
            for entry in self.activity:
                if entry.get("call_id") == event["call_id"]:
                    entry["output"] = event["output"]
                    entry["status"] = ToolStatus.FAILED if event.get("failed") else ToolStatus.COMPLETED
        elif kind == "agent.updated":
            self.agent = event["agent"]
            self.activity.append({"kind": "handoff", "agent": event["agent"]})

    def settle_activity(self, status: ToolStatus) -> None:
        """Tools still running when the run ended did not finish: say how they ended."""
        settle_tools(self.activity, status=status)
