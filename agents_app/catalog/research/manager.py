"""Orchestrates one research: plan → searches in parallel → report, in the style of the SDK's
examples/research_bot/manager.py. It runs inside the chat run's trace (the `research` tool
is called by the chat run), so it opens `custom_span`s only, never a trace of its own; the
nested agent runs join that trace and add their tokens to the chat run's usage.

The writer's input holds help-centre excerpts and web summaries: `run_nested` withholds every
credential in it (`agents_app.secret_formats`) before the model provider or the traces see it."""

from __future__ import annotations

import asyncio
import logging

from agents import RunContextWrapper, custom_span
from asgiref.sync import sync_to_async
from django.conf import settings

from agents_app import progress, providers
from agents_app.context import ChatContext
from agents_app.knowledge import search_articles
from agents_app.model_guards import unguarded
from agents_app.tooling import run_nested

from .planner import WebSearchItem, WebSearchPlan, planner_agent
from .searcher import search_agent
from .writer import ReportData, writer_agent

log = logging.getLogger(__name__)

MAX_SEARCHES = 5


def web_search_available(model_key: str = "") -> bool:
    """The hosted WebSearchTool runs only on OpenAI's Responses API (the run's model)."""
    from agents import OpenAIResponsesModel

    try:
        return isinstance(unguarded(providers.model_for_run(model_key).model), OpenAIResponsesModel)
    except providers.ProviderNotConfigured:
        return False


class ResearchManager:
    def __init__(self, ctx: RunContextWrapper[ChatContext], *, use_web: bool | None = None) -> None:
        self.ctx = ctx
        self.use_web = web_search_available(ctx.context.model_key) if use_web is None else use_web

    async def run(self, topic: str) -> ReportData:
        data = {"topic": topic} if settings.AGENTS_TRACE_SENSITIVE_DATA else {}
        with custom_span("Research", data={**data, "web": self.use_web}):
            await progress.report("planning")
            plan = await self._plan(topic)
            results = await self._perform_searches(plan)
            await progress.report("writing")
            return await self._write(topic, results)

    async def _plan(self, topic: str) -> WebSearchPlan:
        with custom_span("Plan searches"):
            result = await run_nested(planner_agent, f"Query: {topic}", ctx=self.ctx, max_turns=1)
            return result.final_output_as(WebSearchPlan)

    async def _perform_searches(self, plan: WebSearchPlan) -> list[str]:
        searches = plan.searches[:MAX_SEARCHES]
        total, done = len(searches), 0

        async def search(item: WebSearchItem) -> str | None:
            nonlocal done
            try:
                return await self._search(item)
            except Exception:
                # One failed search should not sink the report; the writer works with the rest.
                log.warning("research search %r failed", item.query, exc_info=True)
                return None
            finally:
                done += 1
                await progress.report("searching", done=done, total=total)

        with custom_span("Searches", data={"searches": total}):
            results = await asyncio.gather(*(search(item) for item in searches))
        return [result for result in results if result]

    async def _search(self, item: WebSearchItem) -> str | None:
        with custom_span("Search", data={"query": item.query} if settings.AGENTS_TRACE_SENSITIVE_DATA else {}):
            sections = []
            hits = await sync_to_async(search_articles)(item.query, limit=3)
            if hits:
                sections.append(
                    "From the help centre:\n"
                    + "\n".join(f"- {hit.article.title} [{hit.article.slug}]: {hit.excerpt(500)}" for hit in hits)
                )
            if self.use_web:
                result = await run_nested(
                    search_agent, f"Search term: {item.query}\nReason for searching: {item.reason}", ctx=self.ctx
                )
                sections.append(f"From the web:\n{result.final_output}")
            if not sections:
                return None
            return f"### Search: {item.query}\n" + "\n\n".join(sections)

    async def _write(self, topic: str, results: list[str]) -> ReportData:
        with custom_span("Write report"):
            found = "\n\n".join(results) if results else "(The searches found nothing.)"
            result = await run_nested(
                writer_agent, f"Original query: {topic}\n\nSearch results:\n{found}", ctx=self.ctx, max_turns=1
            )
            return result.final_output_as(ReportData)
