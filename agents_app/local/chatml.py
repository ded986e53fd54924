"""SDK input items -> chat messages -> the Qwen2.5 chatml prompt (pure, no llama import).

`render_prompt` reproduces the GGUF's own chat template (`tokenizer.chat_template` of
Qwen2.5-Coder-Instruct): a `# Tools` section with one JSON signature per line inside
`<tools></tools>` in the system message, assistant calls as `<tool_call>` blocks, tool
results as `<tool_response>` blocks in a user turn. One deliberate difference: the
template's example call is written with doubled braces (`{{"name": ...}}`, a Jinja escape
that the template then prints literally) and the model copies them; here it has single braces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

TOOLS_PREAMBLE = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\n</tool_call>'
)


@dataclass
class ToolCall:
    call_id: str
    name: str
    arguments: Any  # a dict when the SDK's JSON parses, else the raw string


@dataclass
class Message:
    role: str  # system | user | assistant | tool
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    call_id: str | None = None  # for role == "tool"


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    if hasattr(item, "model_dump"):
        return item.model_dump(exclude_unset=True)
    return dict(item)


def content_text(content: Any) -> str:
    """The text of a message content: a string, None, or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        part = part if isinstance(part, str) else _as_dict(part)
        if isinstance(part, str):
            texts.append(part)
        elif "text" in part and part.get("text") is not None:
            texts.append(str(part["text"]))
        elif part.get("type") == "refusal":
            texts.append(str(part.get("refusal") or ""))
        elif part.get("type") in ("input_image", "image_url"):
            texts.append("[image omitted: this model reads text only]")
        elif part.get("type") in ("input_file", "file"):
            texts.append(f"[file omitted: {part.get('filename') or 'attachment'}]")
        elif part.get("type") == "input_audio":
            texts.append("[audio omitted]")
    return "".join(texts)


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            return raw
    return raw if raw is not None else {}


def items_to_messages(system_instructions: str | None, input: str | list[Any]) -> list[Message]:
    """Convert SDK (Responses-format) input into chat messages, system first.

    Handles user/system/developer/assistant messages (string, list-of-parts or null
    content), function_call and function_call_output items; reasoning and other hosted
    items are skipped since this model cannot use them.
    """
    messages: list[Message] = []
    system_parts = [system_instructions] if system_instructions else []
    items: list[Any] = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)

    for raw in items:
        item = _as_dict(raw)
        kind = item.get("type")
        role = item.get("role")
        if kind == "function_call":
            call = ToolCall(
                call_id=str(item.get("call_id") or item.get("id") or ""),
                name=str(item.get("name") or ""),
                arguments=_arguments(item.get("arguments")),
            )
            # Calls of one response attach to the assistant message that precedes them.
            if messages and messages[-1].role == "assistant":
                messages[-1].tool_calls.append(call)
            else:
                messages.append(Message(role="assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            output = item.get("output")
            text = (
                output
                if isinstance(output, str)
                else content_text(output)
                if isinstance(output, list)
                else json.dumps(output)
            )
            messages.append(Message(role="tool", content=text, call_id=item.get("call_id")))
        elif role in ("system", "developer"):
            text = content_text(item.get("content"))
            if not messages:  # leading instructions join the system prompt
                system_parts.append(text)
            else:
                messages.append(Message(role="system", content=text))
        elif role == "assistant":
            text = content_text(item.get("content"))
            if messages and messages[-1].role == "assistant" and not messages[-1].tool_calls:
                messages[-1].content += text
            else:
                messages.append(Message(role="assistant", content=text))
        elif role == "user" or (kind == "message" and role is None):
            messages.append(Message(role="user", content=content_text(item.get("content"))))
        # else: reasoning, item_reference, hosted tool calls: nothing this model can read.

    system = "\n\n".join(part for part in system_parts if part) or DEFAULT_SYSTEM
    return [Message(role="system", content=system), *messages]


def tool_signature(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """One entry of the `<tools>` block, in the shape Qwen2.5 was trained on."""
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def render_prompt(messages: list[Message], tools: list[dict[str, Any]] | None = None) -> str:
    """The chatml prompt, ending with the open assistant turn."""
    system, rest = messages[0], messages[1:]
    out = ["<|im_start|>system\n", system.content]
    if tools:
        out.append(TOOLS_PREAMBLE)
        for tool in tools:
            out.append("\n" + _dumps(tool))
        out.append(TOOLS_POSTAMBLE)
    out.append("<|im_end|>\n")
    for index, message in enumerate(rest):
        if message.role == "tool":
            if index == 0 or rest[index - 1].role != "tool":
                out.append("<|im_start|>user")
            out.append("\n<tool_response>\n" + message.content + "\n</tool_response>")
            if index == len(rest) - 1 or rest[index + 1].role != "tool":
                out.append("<|im_end|>\n")
        elif message.role == "assistant" and message.tool_calls:
            out.append("<|im_start|>assistant")
            if message.content:
                out.append("\n" + message.content)
            for call in message.tool_calls:
                out.append(
                    '\n<tool_call>\n{"name": "'
                    + call.name
                    + '", "arguments": '
                    + _dumps(call.arguments)
                    + "}\n</tool_call>"
                )
            out.append("<|im_end|>\n")
        else:
            out.append(f"<|im_start|>{message.role}\n{message.content}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


def last_turn_is_tool_result(messages: list[Message]) -> bool:
    return len(messages) > 1 and messages[-1].role == "tool"


def answered_calls(messages: list[Message]) -> set[tuple[str, str]]:
    """(name, canonical arguments) of the calls made since the last user message that
    already have their result. (Earlier turns do not count: asking the time again later
    is a new question.)"""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=0)
    current = messages[last_user:]
    answered_ids = {m.call_id for m in current if m.role == "tool"}
    return {
        (call.name, canonical_arguments(call.arguments))
        for m in current
        if m.role == "assistant"
        for call in m.tool_calls
        if call.call_id in answered_ids
    }


def canonical_arguments(arguments: Any) -> str:
    return json.dumps(arguments, sort_keys=True, ensure_ascii=False)


def flatten_tool_exchanges(messages: list[Message]) -> list[Message]:
    """The history with every call and result rewritten as plain text: with no call syntax
    left to imitate, a small model that keeps repeating a call answers instead."""
    calls = {call.call_id: call for m in messages if m.role == "assistant" for call in m.tool_calls}
    flat: list[Message] = []
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            if message.content:
                flat.append(Message(role="assistant", content=message.content))
        elif message.role == "tool":
            call = calls.get(message.call_id or "")
            label = f"{call.name}({_dumps(call.arguments)})" if call else "A tool"
            line = f"{label} returned: {message.content}"
            if flat and flat[-1].role == "user" and flat[-1].content.startswith("Tool results:"):
                flat[-1] = Message(role="user", content=flat[-1].content + "\n" + line)
            else:
                flat.append(Message(role="user", content="Tool results:\n" + line))
        else:
            flat.append(message)
    return flat


def _is_handoff_output(content: str) -> bool:
    """The SDK's handoff result, `{"assistant": "<agent name>"}`."""
    try:
        value = json.loads(content)
    except ValueError:
        return False
    return isinstance(value, dict) and set(value) == {"assistant"} and isinstance(value["assistant"], str)


def drop_handoff_exchanges(messages: list[Message]) -> list[Message]:
    """The history without handoff calls and their results. To the agent that took over, a
    transfer call followed by `{"assistant": "Math Tutor"}` reads as a tool result to answer
    from (the small model then apologises that it cannot help); without it, the user's
    question is simply the last message, as it would be had they asked this agent directly."""
    handoff_ids = {m.call_id for m in messages if m.role == "tool" and _is_handoff_output(m.content)}
    if not handoff_ids:
        return messages
    kept: list[Message] = []
    for message in messages:
        if message.role == "tool" and message.call_id in handoff_ids:
            continue
        if message.role == "assistant" and message.tool_calls:
            calls = [call for call in message.tool_calls if call.call_id not in handoff_ids]
            if len(calls) != len(message.tool_calls):
                if not calls and not message.content:
                    continue
                message = Message(role="assistant", content=message.content, tool_calls=calls)
        kept.append(message)
    return kept


def drop_earlier_tool_exchanges(messages: list[Message]) -> list[Message]:
    """The history without the calls and results of turns before the last user message: their
    answers say what came of them. A small model otherwise answers the new message from an old
    tool result (a help-centre article it already used), and the prompt stays shorter."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=0)
    kept: list[Message] = []
    for index, message in enumerate(messages):
        if index < last_user and message.role == "tool":
            continue
        if index < last_user and message.role == "assistant" and message.tool_calls:
            if not message.content:
                continue
            message = Message(role="assistant", content=message.content)
        kept.append(message)
    return kept


def drop_oldest_turns(messages: list[Message]) -> list[Message] | None:
    """The history without its oldest exchange (up to the next user message), or None
    when only the latest user turn is left. Never leaves a tool result without its call."""
    system, rest = messages[0], messages[1:]
    user_indexes = [i for i, m in enumerate(rest) if m.role == "user"]
    later = [i for i in user_indexes if i > 0]
    if not later:
        return None
    return [system, *rest[later[0] :]]
