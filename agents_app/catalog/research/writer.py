"""Research writer: turns the search results into a structured `ReportData`."""

from __future__ import annotations

from agents import Agent
from pydantic import BaseModel, Field

from agents_app.context import ChatContext


class ReportData(BaseModel):
    short_summary: str = Field(description="A 2-3 sentence summary of the findings.")
    markdown_report: str = Field(description="The full report, in Markdown.")
    follow_up_questions: list[str] = Field(description="2 to 4 suggested topics to research further.")

    def __str__(self) -> str:
        # What the SDK stores as the `research` tool's output in the conversation history,
        # which the model reads on the next turn: JSON, not Python's repr.
        return self.model_dump_json()


writer_agent = Agent[ChatContext](
    name="Research writer",
    instructions=(
        "You are a senior researcher writing a report for a query, given the results of several "
        "searches. Use only facts found in those results, and say which source each comes from. "
        "If the results are empty or do not answer the query, say so plainly in the summary and "
        "keep the report short: never fill gaps with invented facts. First outline the report, "
        "then write it in Markdown with headings; aim for 300 to 800 words when there is enough "
        "material. End with follow-up questions worth researching."
    ),
    output_type=ReportData,
)
