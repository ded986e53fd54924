"""Keeping the stored SDK history valid input for the next run, whatever ended this one.

The Runner saves a turn only when it completes, so a stop, an error or a dead process can
leave the session ending with the user's message (the next run would send user, user) or,
with approvals, with a function call that never got its output ("No tool output found for
function call ..." on the next request). `close_turn` rewrites what the run added after its
mark into a valid turn: every function call gets an output, stray outputs go, and the turn
ends with an assistant message that says what the user saw and how the reply ended.
"""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction

from agents_app.models import AgentSession, SessionItem

CANCELLED_TOOL_OUTPUT = "[No result: the run ended before this tool finished.]"


def _kind(item: dict[str, Any]) -> str:
    return item.get("type") or ("message" if "role" in item else "unknown")


def problems(items: list[dict[str, Any]]) -> list[str]:
    """Why `items` would be refused (or misread) as model input; empty when valid."""
    found: list[str] = []
    open_calls: dict[str, int] = {}
    answered: set[str] = set()
    previous_role: str | None = None
    for index, item in enumerate(items):
        kind = _kind(item)
        if kind == "function_call":
            open_calls[item.get("call_id", "")] = index
        elif kind == "function_call_output":
            call_id = item.get("call_id", "")
            if call_id not in open_calls:
                found.append(f"item {index}: output for call {call_id!r} without its call")
            answered.add(call_id)
        if kind == "message":
            role = item.get("role")
            if role == "user" and previous_role == "user":
                found.append(f"item {index}: user message right after another user message")
            previous_role = role
        else:
            previous_role = None
    for call_id, index in open_calls.items():
        if call_id not in answered:
            found.append(f"item {index}: function call {call_id!r} without output")
    return found


def closed_turn(items: list[dict[str, Any]], *, ending: str) -> list[dict[str, Any]]:
    """`items` (one run's additions) made valid and ended by an assistant message."""
    answered = {item.get("call_id") for item in items if _kind(item) == "function_call_output"}
    called = {item.get("call_id") for item in items if _kind(item) == "function_call"}
    result: list[dict[str, Any]] = []
    for item in items:
        kind = _kind(item)
        if kind == "function_call_output" and item.get("call_id") not in called:
            continue
        result.append(item)
        if kind == "function_call" and item.get("call_id") not in answered:
            result.append(
                {"type": "function_call_output", "call_id": item.get("call_id"), "output": CANCELLED_TOOL_OUTPUT}
            )
    if result and not (_kind(result[-1]) == "message" and result[-1].get("role") == "assistant"):
        result.append({"role": "assistant", "content": ending})
    return result


def tool_outputs_after(session_id: str, *, mark: int) -> dict[str, str]:
    """The outputs stored for function calls after `mark`, by call id: what a run's tools
    really returned, whatever became of the run."""
    payloads = SessionItem.objects.filter(session__session_id=session_id, id__gt=mark).values_list("payload", flat=True)
    outputs = {}
    for item in map(json.loads, payloads):
        if _kind(item) == "function_call_output":
            output = item.get("output")
            outputs[item.get("call_id", "")] = output if isinstance(output, str) else json.dumps(output)
    return outputs


@transaction.atomic
def close_turn_sync(session_id: str, *, mark: int, ending: str) -> bool:
    """Rewrite the items stored after `mark` into a closed turn. Returns whether it changed."""
    if not AgentSession.objects.select_for_update().filter(session_id=session_id).exists():
        return False
    rows = list(
        SessionItem.objects.filter(session__session_id=session_id, id__gt=mark).order_by("id").values_list("id", "payload")
    )
    if not rows:
        return False
    items = [json.loads(payload) for _, payload in rows]
    repaired = closed_turn(items, ending=ending)
    if repaired == items:
        return False
    session = AgentSession.objects.get(session_id=session_id)
    SessionItem.objects.filter(session=session, id__gt=mark).delete()
    SessionItem.objects.bulk_create([SessionItem(session=session, payload=json.dumps(item)) for item in repaired])
    return True


close_turn = sync_to_async(close_turn_sync)


def ending_for(status: str, partial: str, detail: str = "") -> str:
    """The assistant message that closes a turn that did not complete."""
    partial = partial.strip()
    reason = {
        "cancelled": "[Stopped by the user before the reply was finished.]",
        "failed": f"[The reply failed: {detail}]" if detail else "[The reply failed.]",
        "interrupted": "[The reply was interrupted by a server restart.]",
    }.get(status, f"[Reply ended: {status}.]")
    return f"{partial}\n\n{reason}" if partial else reason
