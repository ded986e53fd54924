"""Web search agent: summarises the results of one search. Only used on the OpenAI Responses
API, the one provider that runs the SDK's hosted `WebSearchTool`."""

from __future__ import annotations

from agents import Agent, ModelSettings, WebSearchTool

from agents_app.context import ChatContext

search_agent = Agent[ChatContext](
    name="Web searcher",
    instructions=(
        "You are a research assistant. Given a search term, search the web for it and produce a "
        "concise summary of the results: 2 to 3 paragraphs, under 300 words. Capture the main "
        "points and name your sources. Write tersely; no need for complete sentences. Add no "
        "commentary of your own."
    ),
    tools=[WebSearchTool()],
    model_settings=ModelSettings(tool_choice="required"),
)
