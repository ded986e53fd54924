"""A deterministic model for demos, benchmarks and cross-process tests.

`AGENTS_MODEL_PROVIDER=scripted` answers every request by rule instead of by inference, and
streams its reply word by word through the SDK's own `agents.testing.ScriptedModel` (so the
event stream is exactly what the SDK produces for a real model). It calls tools when asked
about the time or the date, summarises tool results, hands off on request, fills structured
outputs from their JSON schema, and can be told to misbehave, for fault tests across real
processes, by putting a directive in the user's message:

    [[stall]]        stop streaming after two words, until the run is stopped
    [[stall:turn]]   after a tool result, never start the next answer (stop between turns)
    [[slow]]         0.2 s between words
    [[fail:429]]     raise a rate-limit error (also 500, 503)
    [[timeout]]      raise a request timeout
    [[drop]]         stream a few words, then lose the connection
    [[tool:NAME {json args}]]  call a tool with these arguments
    [[handoff:NAME]] hand off to the agent NAME
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.tool import FunctionTool, Tool
from agents.usage import Usage

from agents_app.items import text_of

DIRECTIVE = re.compile(r"\[\[(\w+)(?::([^\s\]]+))?(?:\s+(.*?))?\]\]", re.S)
_REQUEST = httpx2.Request("POST", "http://scripted.invalid/v1/responses")


def _user_texts(items: list[TResponseInputItem]) -> list[str]:
    return [text_of(item.get("content")) for item in items if item.get("role") == "user"]


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _fill_schema(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A small, valid instance of a JSON schema (strict SDK schemas only use these shapes)."""
    if "$ref" in schema:
        return _fill_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return _fill_schema(schema["anyOf"][0], defs)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        return {name: _fill_schema(sub, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_fill_schema(schema.get("items", {}), defs)]
    return {"integer": 1, "number": 1.0, "boolean": True, "null": None}.get(kind, "scripted")


class RuleBasedModel(Model):
    """One rule-based reply per request; see the module docstring."""

    def __init__(self, *, word_delay: float = 0.0) -> None:
        self.word_delay = word_delay

    def count_tokens(self, text: str) -> int:
        """Its own measure of text, as in the usage it reports (for `agents_app.context_window`)."""
        return _estimate_tokens(text)

    def plan(
        self,
        input: str | list[TResponseInputItem],
        tools: list[Tool],
        handoffs: list[Handoff],
        output_schema: AgentOutputSchemaBase | None,
    ) -> tuple[ModelStep, dict[str, str]]:
        items: list[TResponseInputItem] = [{"role": "user", "content": input}] if isinstance(input, str) else input
        users = _user_texts(items)
        latest = users[-1] if users else ""
        directives = {m.group(1): (m.group(2) or m.group(3) or "") for m in DIRECTIVE.finditer(latest)}
        if m := next((m for m in DIRECTIVE.finditer(latest) if m.group(1) == "tool"), None):
            directives["tool"] = m.group(2) or ""
            directives["tool_args"] = m.group(3) or "{}"
        if m := next((m for m in DIRECTIVE.finditer(latest) if m.group(1) == "handoff"), None):
            directives["handoff"] = " ".join(part for part in (m.group(2), m.group(3)) if part)  # "Math Tutor"
        usage = Usage(
            requests=1,
            input_tokens=sum(_estimate_tokens(json.dumps(i)) for i in items),
        )
        last = items[-1] if items else {}
        output: list[Any]
        tool_names = {t.name for t in tools if isinstance(t, FunctionTool)}
        answered_tool = last.get("type") == "function_call_output"
        if answered_tool:
            directives["after_tool"] = "yes"

        if "fail" in directives:
            return ModelStep.raise_error(self._status_error(int(directives["fail"] or 500))), directives
        if "timeout" in directives:
            return ModelStep.raise_error(openai.APITimeoutError(request=_REQUEST)), directives
        if "handoff" in directives and not answered_tool and len(items) and last.get("role") == "user":
            target = next((h for h in handoffs if h.agent_name == directives["handoff"]), None)
            if target:
                output = [function_call(target.tool_name, {}, call_id=self._call_id())]
                return self._step(output, usage), directives
        if not answered_tool and directives.get("tool") in tool_names:
            output = [function_call(directives["tool"], directives["tool_args"], call_id=self._call_id())]
            return self._step(output, usage), directives
        if not answered_tool:
            wanted = next(
                (
                    name
                    for word, name in (("time", "get_current_time"), ("date", "get_current_date"))
                    if re.search(rf"\b{word}\b", latest, re.I) and name in tool_names
                ),
                None,
            )
            if wanted:
                return self._step([function_call(wanted, {}, call_id=self._call_id())], usage), directives

        if output_schema is not None and not output_schema.is_plain_text():
            schema = output_schema.json_schema()
            text = json.dumps(_fill_schema(schema, schema.get("$defs", {})))
        elif answered_tool:
            text = f"The tool answered: {last.get('output')}"
        else:
            clean = DIRECTIVE.sub("", latest).strip()
            text = f"You said: “{clean}”."
            if len(users) > 1:
                text += f" Before that you said: “{DIRECTIVE.sub('', users[-2]).strip()}”."
        return self._step([assistant_message(text, item_id=f"msg_{uuid.uuid4().hex}")], usage), directives

    @staticmethod
    def _call_id() -> str:
        # Unique across a run lineage: the SDK refuses a reused completed call id.
        return f"call_{uuid.uuid4().hex}"

    @staticmethod
    def _status_error(status: int) -> openai.APIStatusError:
        response = httpx2.Response(status, request=_REQUEST, json={"error": {"message": f"scripted {status}"}})
        cls = openai.RateLimitError if status == 429 else openai.InternalServerError
        return cls(f"Error code: {status}", response=response, body=None)

    @staticmethod
    def _step(output: list[Any], usage: Usage) -> ModelStep:
        out_tokens = sum(_estimate_tokens(item.model_dump_json()) for item in output)
        usage.output_tokens = out_tokens
        usage.total_tokens = usage.input_tokens + out_tokens
        return ModelStep(output=output, usage=usage)

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        **kwargs: Any,
    ) -> ModelResponse:
        step, directives = self.plan(input, tools, handoffs, output_schema)
        if "stall" in directives and (directives["stall"] != "turn" or "after_tool" in directives):
            await asyncio.Event().wait()
        delegate = ScriptedModel([step])
        return await delegate.get_response(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **kwargs
        )

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        **kwargs: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        step, directives = self.plan(input, tools, handoffs, output_schema)
        if directives.get("stall") == "turn" and "after_tool" in directives:
            await asyncio.Event().wait()
        delay = 0.2 if "slow" in directives else self.word_delay
        delegate = ScriptedModel([step])
        sent_words = 0
        async for event in delegate.stream_response(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **kwargs
        ):
            if event.type != "response.output_text.delta":
                yield event
                continue
            # Word by word, the way a real model streams.
            for piece in re.findall(r"\S+\s*|\s+", event.delta):
                if directives.get("stall") == "" and sent_words == 2:
                    await asyncio.Event().wait()
                if "drop" in directives and sent_words == 3:
                    raise openai.APIConnectionError(request=_REQUEST)
                if delay:
                    await asyncio.sleep(delay)
                sent_words += 1
                yield event.model_copy(update={"delta": piece})


class RuleBasedProvider(ModelProvider):
    def __init__(self, *, word_delay: float = 0.0) -> None:
        self.model = RuleBasedModel(word_delay=word_delay)

    def get_model(self, model_name: str | None) -> Model:
        return self.model
