"""A conversation as a document the user can keep: JSON (everything, machine-readable) or
Markdown (for reading and sharing). Both are built from `conversation_export`, so they always
hold the same facts: messages in order, each reply's tool calls with their results, handoffs,
approvals, structured output, usage and status, and the user's own feedback.

`export_document` is what the chat page's download links (chat/views.py) and the HTTP API's
`GET /api/conversations/<id>/export` (chat/api.py) both send.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Prefetch
from django.utils import timezone
from django.utils.text import slugify

from chat.models import Approval, Conversation, Feedback, Message

FORMAT_VERSION = 1
_USAGE_FIELDS = (
    "requests", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens",
)


def _when(value) -> str | None:
    return value.isoformat() if value else None


def _usage(message: Message) -> dict[str, Any]:
    usage: dict[str, Any] = {"model": message.model, **{f: getattr(message, f) for f in _USAGE_FIELDS}}
    usage["cost_usd"] = None if message.cost is None else str(message.cost)
    usage["time_to_first_token_ms"] = message.time_to_first_token_ms
    usage["duration_ms"] = message.duration_ms
    return usage


def _activity(entry: dict[str, Any]) -> dict[str, Any]:
    if entry.get("kind") == "handoff":
        return {"kind": "handoff", "agent": entry.get("agent", "")}
    return {
        "kind": "tool",
        "call_id": entry.get("call_id", ""),
        "name": entry.get("name", ""),
        "agent": entry.get("agent", ""),
        "arguments": entry.get("arguments"),
        "status": entry.get("status", ""),
        "output": entry.get("output"),
    }


def conversation_export(*, conversation: Conversation, user) -> dict[str, Any]:
    """Everything about the conversation, as plain JSON-able data (a fixed number of queries)."""
    from agents_app.registry import all_specs

    titles = {spec.key: spec.title for spec in all_specs()}
    messages = (
        conversation.messages.select_related("run")
        .prefetch_related(
            Prefetch("run__approvals", queryset=Approval.objects.order_by("created_at", "id")),
            Prefetch("feedback", queryset=Feedback.objects.filter(user=user), to_attr="own_feedback"),
        )
        .order_by("created_at", "id")
    )
    rows = []
    totals = dict.fromkeys(_USAGE_FIELDS, 0)
    cost = Decimal(0)
    unknown_cost = 0
    for message in messages:
        row: dict[str, Any] = {
            "id": str(message.public_id),
            "role": message.role,
            "created_at": _when(message.created_at),
            "content": message.content,
        }
        if message.role == Message.Role.ASSISTANT:
            run = message.run
            feedback = message.own_feedback[0] if message.own_feedback else None
            row.update({
                "agent": message.agent_name,
                "status": message.status,
                "error": message.error,
                "activity": [_activity(entry) for entry in message.activity or []],
                "approvals": [
                    {
                        "call_id": a.call_id, "tool": a.tool_name, "arguments": a.arguments, "status": a.status,
                        "reason": a.reason, "requested_at": _when(a.created_at), "decided_at": _when(a.decided_at),
                    }
                    for a in (run.approvals.all() if run else [])
                ],
                "structured": message.structured,
                "usage": _usage(message),
                "run": {
                    "id": str(run.public_id), "status": run.status, "error": run.error,
                    "started_at": _when(run.started_at), "finished_at": _when(run.finished_at),
                } if run else None,
                "feedback": {"rating": feedback.rating, "comment": feedback.comment, "updated_at": _when(feedback.updated_at)}
                if feedback else None,
            })
            for field in _USAGE_FIELDS:
                totals[field] += getattr(message, field)
            if message.cost is None:
                unknown_cost += bool(message.total_tokens)
            else:
                cost += message.cost
        rows.append(row)
    return {
        "format": "agents-chat.conversation",
        "version": FORMAT_VERSION,
        "exported_at": _when(timezone.now()),
        "conversation": {
            "id": str(conversation.public_id),
            "title": conversation.title,
            "agent": conversation.agent_key,
            "agent_title": titles.get(conversation.agent_key, conversation.agent_key),
            "current_agent": conversation.current_agent_name,
            "created_at": _when(conversation.created_at),
            "updated_at": _when(conversation.updated_at),
        },
        "messages": rows,
        # The replies listed here; a regenerated reply's tokens were spent too, but it is gone.
        "usage": {**totals, "cost_usd": str(cost), "replies_with_unknown_cost": unknown_cost},
    }


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _fence(text: str, info: str = "") -> str:
    """A fenced block that nothing inside `text` can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text.rstrip()}\n{ticks}"


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def _stamp(value: str | None) -> str:
    return value.replace("T", " ")[:16] + " UTC" if value else ""


def _usage_line(usage: dict[str, Any]) -> str:
    cost = "cost unknown" if usage["cost_usd"] is None else f"${Decimal(usage['cost_usd']).normalize():f}"
    parts = [
        f"{usage['total_tokens']:,} tokens ({usage['input_tokens']:,} in, {usage['output_tokens']:,} out"
        + (f", {usage['cached_tokens']:,} cached" if usage["cached_tokens"] else "") + ")",
        cost,
    ]
    if usage["model"]:
        parts.append(usage["model"])
    return " · ".join(parts)


def to_markdown(data: dict[str, Any]) -> str:
    meta = data["conversation"]
    lines = [
        f"# {meta['title'] or 'New conversation'}",
        "",
        f"Agent: {meta['agent_title']} · started {_stamp(meta['created_at'])} · exported {_stamp(data['exported_at'])}",
    ]
    for message in data["messages"]:
        lines += ["", "---", ""]
        if message["role"] == Message.Role.USER:
            lines += [f"## You · {_stamp(message['created_at'])}", "", message["content"]]
            continue
        status = "" if message["status"] == Message.Status.COMPLETED else f" · {message['status'].replace('_', ' ')}"
        lines += [f"## {message['agent'] or 'Assistant'} · {_stamp(message['created_at'])}{status}", ""]
        decisions = {a["call_id"]: a for a in message["approvals"]}
        for entry in message["activity"]:
            if entry["kind"] == "handoff":
                lines += [f"*Handed off to {entry['agent']}.*", ""]
                continue
            lines += [f"**Tool `{entry['name']}`** ({entry['status'].replace('_', ' ')})", ""]
            lines += [_fence(_pretty(entry["arguments"] if entry["arguments"] is not None else {}), "json"), ""]
            approval = decisions.get(entry["call_id"])
            if approval and approval["status"] != "pending":
                reason = f": {approval['reason']}" if approval["reason"] else ""
                lines += [f"Approval: {approval['status']}{reason}", ""]
            if entry["output"] not in (None, ""):
                lines += ["Result:", "", _fence(str(entry["output"])), ""]
        if message["content"]:
            lines += [message["content"], ""]
        if message["structured"]:
            lines += [f"**{message['structured'].get('type', 'Output')}**", "",
                      _fence(_pretty(message["structured"].get("data")), "json"), ""]
        if message["error"]:
            lines += [f"> Error: {message['error']}", ""]
        lines.append(f"*{_usage_line(message['usage'])}*")
        if message["feedback"]:
            verdict = "👍" if message["feedback"]["rating"] == "up" else "👎"
            comment = f" {message['feedback']['comment']}" if message["feedback"]["comment"] else ""
            lines += ["", f"Your feedback: {verdict}{comment}"]
    usage = data["usage"]
    lines += ["", "---", "", f"Total: {usage['total_tokens']:,} tokens · ${Decimal(usage['cost_usd']).normalize():f}"
              + (" (some costs unknown)" if usage["replies_with_unknown_cost"] else "")]
    return "\n".join(lines).rstrip() + "\n"


def filename(conversation: Conversation, extension: str) -> str:
    stem = slugify(conversation.title)[:60] or "conversation"
    return f"{stem}-{str(conversation.public_id)[:8]}.{extension}"


@dataclass(frozen=True)
class Document:
    body: str
    content_type: str
    filename: str


def export_document(*, conversation: Conversation, user, fmt: str) -> Document:
    """The conversation as a file to download: `fmt` "json" or "markdown"."""
    data = conversation_export(conversation=conversation, user=user)
    if fmt == "json":
        return Document(to_json(data), "application/json; charset=utf-8", filename(conversation, "json"))
    return Document(to_markdown(data), "text/markdown; charset=utf-8", filename(conversation, "md"))
