"""Guards around whichever model answers (OpenAI, local, scripted, a test's ScriptedModel).

`NonEmptyReplies`: a model turn with no text, no tool call and no structured output is asked
for once more; if the second turn is empty too, `EmptyModelReply` ends the run as failed, and
the run service closes the history like after any failure. A small model sometimes "answers"
with nothing (a few tokens of markup that parse to no text and no call); stored as a completed
reply, that is a blank answer and an SDK history that ends on the user's turn.

Streamed turns are checked the same way: text deltas go out as they come (they make the turn
non-empty), while the other events of a turn that has shown no text yet are held until its
`response.completed`, so the events of an empty turn never reach the Runner and the retry
starts clean.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from agents.exceptions import ModelBehaviorError
from agents.items import ModelResponse, TResponseStreamEvent
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import ResponseUsage

log = logging.getLogger(__name__)

EMPTY_REPLY_MESSAGE = (
    "The model returned an empty reply twice, so there is no answer to show. "
    "Please try again, or rephrase your message."
)


class EmptyModelReply(ModelBehaviorError):
    """The model produced no text, no tool call and no structured output, twice."""

    def __init__(self, message: str = EMPTY_REPLY_MESSAGE) -> None:
        super().__init__(message)


def _field(item: Any, name: str, default: Any = None) -> Any:
    return item.get(name, default) if isinstance(item, dict) else getattr(item, name, default)


def is_empty_output(output: list[Any]) -> bool:
    """True when nothing in a model turn reaches the user or the Runner: only messages whose
    text is blank (and reasoning, which is never shown)."""
    for item in output:
        kind = _field(item, "type")
        if kind == "reasoning":
            continue
        if kind != "message":
            return False  # a function call, a hosted tool call, a handoff...
        for part in _field(item, "content", None) or []:
            part_type = _field(part, "type")
            if part_type == "refusal" and (_field(part, "refusal") or "").strip():
                return False
            if (_field(part, "text") or "").strip():
                return False
    return True


def _add_usage(a: ResponseUsage | None, b: ResponseUsage | None) -> ResponseUsage | None:
    """`b` with `a`'s counts added (the turn that was asked for again cost tokens too)."""
    if a is None or b is None:
        return b or a
    # A fresh object from plain data: some models attach their own usage to the one they sent.
    data = b.model_dump()
    data["input_tokens"] += a.input_tokens
    data["output_tokens"] += a.output_tokens
    data["total_tokens"] += a.total_tokens
    data["input_tokens_details"]["cached_tokens"] = (data["input_tokens_details"].get("cached_tokens") or 0) + (
        a.input_tokens_details.cached_tokens or 0
    )
    data["output_tokens_details"]["reasoning_tokens"] = (
        data["output_tokens_details"].get("reasoning_tokens") or 0
    ) + (a.output_tokens_details.reasoning_tokens or 0)
    return ResponseUsage.model_validate(data)


class NonEmptyReplies(Model):
    """Wraps a model; everything but the two calls is the inner model's (`inner`)."""

    def __init__(self, inner: Model, *, attempts: int = 2) -> None:
        self.inner = inner
        self.attempts = attempts

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this wrapper lacks: a ScriptedModel's `calls`, an
        # OpenAI model's `_supports_default_prompt_cache_key`, ...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"NonEmptyReplies({self.inner!r})"

    async def close(self) -> None:
        await self.inner.close()

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.inner._cleanup_on_run_end(owner)

    def get_retry_advice(self, request: Any) -> Any:
        return self.inner.get_retry_advice(request)

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        spent = Usage()
        for attempt in range(1, self.attempts + 1):
            response = await self.inner.get_response(*args, **kwargs)
            if not is_empty_output(response.output):
                if attempt > 1:  # one request that took two turns, as in the streamed case
                    requests = response.usage.requests
                    spent.add(response.usage)
                    spent.requests = requests
                    response.usage = spent
                return response
            spent.add(response.usage)
            log.warning("The model returned an empty turn (attempt %s of %s).", attempt, self.attempts)
        raise EmptyModelReply()

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        spent: ResponseUsage | None = None
        for attempt in range(1, self.attempts + 1):
            held: list[TResponseStreamEvent] = []
            done_items: list[Any] = []
            shown = False  # a text delta with something in it went out: this turn is not empty
            completed = None
            async for event in self.inner.stream_response(*args, **kwargs):
                kind = getattr(event, "type", "")
                if kind == "response.completed":
                    completed = event  # held until the turn is judged; the stream runs to its end
                    continue
                if kind == "response.output_item.done":
                    done_items.append(event.item)
                if shown:
                    yield event
                    continue
                held.append(event)
                if kind == "response.output_text.delta" and (event.delta or "").strip():
                    shown = True
                    for waiting in held:
                        yield waiting
                    held.clear()
            if completed is None:
                # The inner stream ended without completing: pass on what it said, and let the
                # Runner report the missing final response as it always does.
                for waiting in held:
                    yield waiting
                return
            output = list(completed.response.output or []) or done_items
            if shown or not is_empty_output(output):
                for waiting in held:
                    yield waiting
                if spent is not None:
                    completed.response.usage = _add_usage(spent, completed.response.usage)
                yield completed
                return
            spent = _add_usage(spent, completed.response.usage)
            log.warning("The model returned an empty streamed turn (attempt %s of %s).", attempt, self.attempts)
        raise EmptyModelReply()


def guarded(model: Model) -> Model:
    """`model` behind the guards (never twice)."""
    return model if isinstance(model, NonEmptyReplies) else NonEmptyReplies(model)


def unguarded(model: Model) -> Model:
    """The model inside the guards, for checks of what kind of model it is."""
    while isinstance(model, NonEmptyReplies):
        model = model.inner
    return model
