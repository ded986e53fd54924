"""A small agent family for tests that need a tool (with a custom span and a log line) and a
handoff, registered next to the catalog's agents for the duration of a test."""

from __future__ import annotations

import logging

from agents import Agent, RunContextWrapper, custom_span, function_tool
from agents.testing import function_call

from agents_app import registry
from agents_app.context import ChatContext
from agents_app.registry import AgentSpec
from chat.tests.scripts import streamed

log = logging.getLogger("chat.tests.review_agents")

SECRET = "secret-topic"


@function_tool
def lookup(ctx: RunContextWrapper[ChatContext], topic: str) -> str:
    """Look a topic up in the notes.

    Args:
        topic: What to look up.
    """
    with custom_span("lookup", data={"query": topic, "hits": 2}):
        log.info("looked up %s", topic)
    return f"Two notes about {topic}."


specialist = Agent[ChatContext](name="Specialist", instructions="Answer in detail.")
triage = Agent[ChatContext](
    name="Triage", instructions="Look things up, then hand off.", tools=[lookup], handoffs=[specialist]
)
SPEC = AgentSpec(key="review-test", title="Review test", description="Tool, custom span, handoff.", agent=triage)


def install(monkeypatch) -> AgentSpec:
    specs = {**registry._specs(), SPEC.key: SPEC}
    monkeypatch.setattr(registry, "_specs", lambda: specs)
    return SPEC


def tool_then_handoff_steps() -> list:
    """Model steps: call `lookup`, hand off to the specialist, who answers "All done."."""
    return [
        [function_call("lookup", {"topic": SECRET}, call_id="call_lookup")],
        [function_call("transfer_to_specialist", {}, call_id="call_handoff")],
        streamed("All ", "done."),
    ]
