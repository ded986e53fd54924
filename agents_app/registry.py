"""The agents users can pick. Adding one is a module in `agents_app/catalog/` plus one line
in `_MODULES` below."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from dataclasses import dataclass

from agents import Agent, Handoff

_MODULES = [
    "agents_app.catalog.assistant",
    "agents_app.catalog.support",
    "agents_app.catalog.tutor",
    "agents_app.catalog.research",
    "agents_app.catalog.translator",
    "agents_app.catalog.orders",
]


class UnknownAgent(LookupError):
    pass


@dataclass(frozen=True)
class AgentSpec:
    key: str  # stored on conversations; never change it once users have conversations
    title: str  # shown in the picker
    description: str
    agent: Agent
    max_turns: int = 8
    workflow_name: str = ""
    # Only staff may pick it, create conversations with it and run it (the diagnostics agent).
    staff_only: bool = False
    # Tokens one model call may receive (instructions, schemas, history): older turns are left
    # out to fit (`agents_app.context_window`). None = settings.AGENTS_MAX_INPUT_TOKENS; 0 = no bound.
    max_input_tokens: int | None = None
    # The key of the model (AGENTS_MODELS) its conversations run on unless the user picks
    # another; "" = AGENTS_DEFAULT_MODEL. A key the deployment does not list falls back too.
    model: str = ""

    def available_to(self, user) -> bool:
        return not self.staff_only or bool(getattr(user, "is_staff", False))

    def agents(self) -> Iterator[Agent]:
        """Every agent reachable from the starting one through handoffs."""
        seen: set[int] = set()
        pending = [self.agent]
        while pending:
            current = pending.pop(0)
            if id(current) in seen:
                continue
            seen.add(id(current))
            yield current
            for handoff in current.handoffs:
                # `handoff(agent)` objects keep only a weak reference to their target.
                ref = getattr(handoff, "_agent_ref", None)
                target = handoff if isinstance(handoff, Agent) else (ref() if ref else None)
                if isinstance(target, Agent):
                    pending.append(target)

    def agent_named(self, name: str) -> Agent:
        """The agent a conversation continues with (the one that answered last)."""
        return next((candidate for candidate in self.agents() if candidate.name == name), self.agent)


@functools.cache
def _specs() -> dict[str, AgentSpec]:
    from django.conf import settings

    modules = [*_MODULES, *(["agents_app.catalog.diagnostics"] if settings.AGENTS_DIAGNOSTICS else [])]
    specs = [importlib.import_module(module).spec for module in modules]
    from agents_app.guardrails import guard_tool_outputs

    for spec in specs:
        for agent in spec.agents():
            guard_tool_outputs(agent)  # what the reply may not show, its tools may not pass on
    return {spec.key: spec for spec in specs}


def all_specs() -> list[AgentSpec]:
    return list(_specs().values())


def available_specs(user) -> list[AgentSpec]:
    """The agents `user` may pick and run (staff-only ones for staff alone)."""
    return [spec for spec in _specs().values() if spec.available_to(user)]


def get_spec(key: str) -> AgentSpec:
    try:
        return _specs()[key]
    except KeyError:
        raise UnknownAgent(key) from None


__all__ = ["AgentSpec", "Handoff", "UnknownAgent", "all_specs", "available_specs", "get_spec"]
