"""Research planner: turns a topic into a few searches (structured `WebSearchPlan`)."""

from __future__ import annotations

from agents import Agent
from pydantic import BaseModel, Field

from agents_app.context import ChatContext


class WebSearchItem(BaseModel):
    reason: str = Field(description="Why this search helps answer the query.")
    query: str = Field(description="A short keyword query.")


class WebSearchPlan(BaseModel):
    searches: list[WebSearchItem] = Field(description="Between 2 and 5 searches.")


planner_agent = Agent[ChatContext](
    name="Research planner",
    instructions=(
        "You are a research planner. Given a query, come up with 2 to 5 searches that together "
        "answer it best. Each search is a short keyword query (3 to 6 words) with the reason "
        "for it. Cover different aspects; do not repeat the same search in other words."
    ),
    output_type=WebSearchPlan,
)
