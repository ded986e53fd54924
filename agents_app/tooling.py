"""Defaults every catalog tool gets, and nested runs that count toward the chat run.

* `catalog_tool`: `function_tool` with a friendly failure message, a timeout that shows as a
  failed tool call, and `is_enabled`. One decorator, so no tool forgets them; `agent_tool`
  gives an agent-as-tool the same.
* `run_nested`: run a helper agent (a guardrail's classifier, a research planner) on the app's
  model, inside the chat run's trace, with its tokens added to the chat run's usage. Its input
  is built by our code from tool, knowledge-base or conversation text, so it goes through the
  secret redactor first: a credential in the help centre never reaches the model provider.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from agents import (
    Agent,
    FunctionTool,
    RunConfig,
    RunContextWrapper,
    Runner,
    RunResult,
    function_tool,
)
from agents.exceptions import ModelBehaviorError, ToolTimeoutError
from django.conf import settings

from agents_app import providers
from agents_app.context import ChatContext
from agents_app.secret_formats import redacted

log = logging.getLogger(__name__)

# Tool outputs that start with this are failures: the chat marks their `tool.output` as failed.
TOOL_FAILURE_PREFIX = "Tool failed:"

DEFAULT_TOOL_TIMEOUT = 20.0

F = TypeVar("F", bound=Callable[..., Any])


class ToolError(Exception):
    """A failure whose message is written for the user and the model (e.g. "subject is
    empty"). Anything else a tool raises is logged and replaced by a generic text."""


def _tool_name(ctx: RunContextWrapper[Any]) -> str:
    return getattr(ctx, "tool_name", "") or "tool"


def friendly_failure(ctx: RunContextWrapper[Any], error: Exception) -> str:
    """What the model (and the chat's tool entry) sees when a tool raises.

    The real exception goes to the log only: its text can hold SQL, paths or other users'
    data. The prefix marks the `tool.output` event as failed (see chat.transcript)."""
    name = _tool_name(ctx)
    if isinstance(error, ToolError):
        return f"{TOOL_FAILURE_PREFIX} {error}"
    if isinstance(error, ModelBehaviorError):
        # Arguments that do not match the schema: the model can fix those itself.
        log.info("tool %s called with invalid arguments: %s", name, error)
        return f"{TOOL_FAILURE_PREFIX} the arguments for {name} were invalid. Check them and try once more."
    log.warning("tool %s failed", name, exc_info=error)
    return f"{TOOL_FAILURE_PREFIX} {name} is not working right now. Tell the user; do not guess its result."


def timeout_failure(ctx: RunContextWrapper[Any], error: Exception) -> str:
    """The SDK's own timeout text ("Tool 'x' timed out after 5 seconds.") would look like a
    successful result in the chat; this one is marked failed."""
    seconds = error.timeout_seconds if isinstance(error, ToolTimeoutError) else None
    log.warning("tool %s timed out after %ss", _tool_name(ctx), seconds)
    limit = f" (over {seconds:g} s)" if seconds else ""
    return f"{TOOL_FAILURE_PREFIX} {_tool_name(ctx)} took too long{limit} and was stopped."


def catalog_tool(
    func: F | None = None,
    *,
    timeout: float = DEFAULT_TOOL_TIMEOUT,
    is_enabled: bool | Callable[[RunContextWrapper[Any], Any], Any] = True,
    **options: Any,
) -> FunctionTool | Callable[[F], FunctionTool]:
    """`@function_tool` with the catalog's defaults; use it bare or with keyword arguments.

    Tools must be `async def`: the SDK can only enforce timeouts on coroutines (a sync tool runs
    in a thread nobody can stop), and the ORM is reached through its async API.
    """

    def build(f: F) -> FunctionTool:
        if not inspect.iscoroutinefunction(f):
            raise TypeError(f"catalog tool {f.__name__} must be `async def` so its timeout can apply")
        return function_tool(
            f,
            failure_error_function=friendly_failure,
            timeout=timeout,
            timeout_error_function=timeout_failure,
            is_enabled=is_enabled,
            **options,
        )

    return build(func) if func is not None else build


def agent_tool(
    agent: Agent[ChatContext],
    *,
    tool_name: str,
    tool_description: str,
    timeout: float = 60.0,
    **options: Any,
) -> FunctionTool:
    """`agent.as_tool(...)` with the same defaults as `catalog_tool`. The nested run uses the
    parent's RunConfig (the app's model) and Usage object: the SDK does that by itself."""
    tool = agent.as_tool(
        tool_name=tool_name, tool_description=tool_description, failure_error_function=friendly_failure, **options
    )
    # `as_tool` has no timeout parameter; the SDK applies these fields to any function tool.
    tool.timeout_seconds = timeout
    tool.timeout_error_function = timeout_failure
    return tool


def nested_run_config(model_key: str = "") -> RunConfig:
    """The chat run's model (`model_key`, "" = the default) for runs started from inside it.
    No workflow name or trace metadata: the chat run's trace is already open and the nested
    run joins it."""
    resolved = providers.model_for_run(model_key)
    return RunConfig(
        model=resolved.model,
        model_settings=resolved.settings,
        trace_include_sensitive_data=settings.AGENTS_TRACE_SENSITIVE_DATA,
    )


async def run_nested(
    agent: Agent[ChatContext],
    input: str | list[Any],
    *,
    ctx: RunContextWrapper[ChatContext],
    max_turns: int = 4,
) -> RunResult:
    """Run `agent` to completion for the chat run that `ctx` belongs to.

    The nested run gets its own wrapper (approvals and turn state must not mix with the
    parent's) sharing the parent's `Usage` object, so every token it spends is on the stored
    reply. `Agent.as_tool` already does the same; this is for nested runs we start ourselves.
    """
    wrapper = RunContextWrapper(context=ctx.context, usage=ctx.usage)
    return await Runner.run(
        agent,
        redacted_input(input),
        context=wrapper,
        max_turns=max_turns,
        run_config=nested_run_config(ctx.context.model_key),
    )


def redacted_input(value: Any) -> Any:
    """A model input (a string, or SDK items) with every credential in its texts withheld."""
    if isinstance(value, str):
        return redacted(value)
    if isinstance(value, list):
        return [redacted_input(item) for item in value]
    if isinstance(value, dict):
        return {key: redacted_input(item) for key, item in value.items()}
    return value
