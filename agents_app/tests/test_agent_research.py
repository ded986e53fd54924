"""Research through the chat: planner → parallel knowledge-base searches → writer, run by a
manager inside the `research` tool; progress events along the way, a report card at the end,
every nested token on the reply, and everything in the chat run's one trace."""

from __future__ import annotations

import pytest
from agents import add_trace_processor
from agents.testing import function_call
from agents.tracing import TracingProcessor
from asgiref.sync import sync_to_async

from agents_app import history, providers, tracing
from agents_app.catalog.research.manager import web_search_available
from agents_app.catalog.research.planner import WebSearchItem, WebSearchPlan
from agents_app.catalog.research.writer import ReportData
from agents_app.models import SpanRecord
from agents_app.tests.chatting import (
    fast_password_hashing,  # noqa: F401 (autouse fixture)
    new_conversation,
    one,
    reply_of,
    structured,
    turn,
)
from agents_app.tests.factories import KnowledgeArticleFactory
from chat.tests.helpers import of_type, stored_history

# Socket tests: the run executes in another task, so the data must be committed.
chat_db = pytest.mark.django_db(transaction=True)

TOPIC = "How does Quillmate handle notes edited offline?"
PLAN = WebSearchPlan(
    searches=[
        WebSearchItem(reason="Core behaviour", query="offline editing"),
        WebSearchItem(reason="What happens on reconnect", query="sync conflict"),
        WebSearchItem(reason="Mobile specifics", query="mobile available offline"),
    ]
)
REPORT = ReportData(
    short_summary="Edits made offline are kept locally and synced on reconnect; <b>conflicts</b> keep both versions.",
    markdown_report="## Findings\n\nOffline edits sync later.<script>alert(1)</script> [more](javascript:alert(1))",
    follow_up_questions=["How are conflicts merged?", "Does the web app work offline?"],
)


@pytest.fixture
async def articles(db):
    await sync_to_async(KnowledgeArticleFactory)(
        title="Working offline", tags="offline, sync", body="The apps work fully offline; changes sync on reconnect."
    )
    await sync_to_async(KnowledgeArticleFactory)(
        title="Notes are not syncing", tags="sync, conflict", body="Edited on two offline devices: both versions are kept."
    )


def research_steps(report: ReportData = REPORT) -> list:
    return [
        [function_call("research", {"topic": TOPIC}, call_id="call_research")],
        structured(PLAN),  # the planner
        structured(report),  # the writer
    ]


@chat_db
async def test_research_reports_progress_and_answers_with_a_report_card(user, script, articles):
    conversation = await new_conversation(user, "research")
    with script(research_steps()) as model:
        events = await turn(user, conversation, "What happens to notes I edit offline?")

    stages = [(e["stage"], e.get("done"), e.get("total")) for e in of_type(events, "run.progress")]
    assert stages == [
        ("planning", None, None),
        ("searching", 1, 3),
        ("searching", 2, 3),
        ("searching", 3, 3),
        ("writing", None, None),
    ]
    kinds = [e["type"] for e in events]
    assert kinds.index("tool.called") < kinds.index("run.progress") < kinds.index("tool.output")

    completed = one(events, "message.completed")
    assert completed["status"] == "completed"
    assert completed["structured"] == {"type": "ReportData", "data": REPORT.model_dump(mode="json")}
    card = completed["card"]
    assert "Research report" in card and "<h2>Findings</h2>" in card  # Markdown rendered
    assert "&lt;b&gt;conflicts&lt;/b&gt;" in card  # the summary is escaped
    assert "<script" not in card and 'href="javascript:' not in card  # the report is sanitised
    assert "&lt;script&gt;" in card  # shown as text, not run
    assert "<li>How are conflicts merged?</li>" in card

    # The searches ran over the knowledge base and their results reached the writer.
    planner_call, writer_call = model.calls[1], model.calls[2]
    assert planner_call.input[-1]["content"] == f"Query: {TOPIC}"
    assert "Working offline" in writer_call.input[-1]["content"]
    assert "both versions are kept" in writer_call.input[-1]["content"]
    # The report is the answer: the research assistant was not asked to paraphrase it.
    assert len(model.calls) == 3
    reply = await reply_of(events)
    assert (reply.requests, reply.total_tokens) == (3, 3 * 49)
    assert history.problems(await stored_history(conversation)) == []


@chat_db
async def test_failed_research_is_reported_instead_of_an_empty_reply(user, script, articles):
    conversation = await new_conversation(user, "research")
    apology = ReportData(short_summary="The research failed; please try again.", markdown_report="", follow_up_questions=[])
    steps = [
        [function_call("research", {"topic": TOPIC}, call_id="call_research")],
        [],  # the planner answers nothing usable,
        [],  # twice (an empty turn is asked for once more before it counts as a failure)
        structured(apology),  # the research assistant, told that the tool failed
    ]
    with script(steps) as model:
        events = await turn(user, conversation, "Research offline editing")

    assert one(events, "tool.output")["failed"] is True
    assert "Tool failed:" in str(model.last_call.input[-1])
    completed = one(events, "message.completed")
    assert completed["status"] == "completed"
    assert completed["structured"]["data"]["short_summary"] == apology.short_summary
    assert "The research failed; please try again." in completed["card"]


@chat_db
async def test_the_whole_research_runs_inside_the_chat_runs_trace(user, script, articles):
    class Recorder(TracingProcessor):
        def __init__(self) -> None:
            self.traces: list[str] = []
            self.spans: list[tuple[str, str, str]] = []

        def on_trace_start(self, trace) -> None:
            self.traces.append(trace.trace_id)

        def on_trace_end(self, trace) -> None:
            pass

        def on_span_start(self, span) -> None:
            pass

        def on_span_end(self, span) -> None:
            data = span.span_data
            self.spans.append((span.trace_id, data.type, getattr(data, "name", "") or ""))

        def shutdown(self) -> None:
            pass

        def force_flush(self) -> None:
            pass

    recorder = Recorder()
    add_trace_processor(recorder)
    try:
        conversation = await new_conversation(user, "research")
        with script(research_steps()):
            await turn(user, conversation, "What happens to notes I edit offline?")
    finally:
        tracing.configure()

    assert len(recorder.traces) == 1
    assert {trace_id for trace_id, _, _ in recorder.spans} == {recorder.traces[0]}
    names = {(kind, name) for _, kind, name in recorder.spans}
    assert {("custom", "Research"), ("custom", "Plan searches"), ("custom", "Searches"), ("custom", "Write report")} <= names
    assert {("agent", "Research planner"), ("agent", "Research writer"), ("function", "research")} <= names


@chat_db
async def test_credentials_in_the_help_centre_never_reach_the_research_writers_model(user, script, settings):
    settings.AGENTS_TRACE_SENSITIVE_DATA, settings.AGENTS_TRACE_LOCAL = True, True
    stripe = "sk_live_" + "51HxQ2eL4kT9vB7mN3pR8sW1yZ6cD0fG5hJ2kL9qX4tV7bN1mC3"
    google = "AIza" + "SyD3k9Q2xV7mL4nB8pR1tW6yZ0cF5hJ2gK9"
    await sync_to_async(KnowledgeArticleFactory)(
        title="Working offline", tags="offline, sync",
        body=f"Offline edits sync on reconnect. Billing uses {stripe}; maps use {google}.",
    )
    conversation = await new_conversation(user, "research")
    with script(research_steps()) as model:
        events = await turn(user, conversation, "What happens to notes I edit offline?")
    assert await sync_to_async(tracing.flush)(10)

    writer_input = str(model.calls[2].input)
    assert "Offline edits sync on reconnect" in writer_input  # the excerpt reached the writer,
    assert "[withheld: a Stripe key]" in writer_input and "[withheld: a Google API key]" in writer_input
    for call in model.calls:  # and no model call held a credential
        assert stripe[8:30] not in str(call.input) and google[4:30] not in str(call.input)
    reply = await reply_of(events)
    spans = [s.data async for s in SpanRecord.objects.filter(trace__run_id=reply.run_id)]
    assert spans and stripe[8:30] not in str(spans) and google[4:30] not in str(spans)


def test_web_search_joins_only_on_openais_responses_api(settings):
    settings.OPENAI_API_KEY = "sk-test"
    try:
        for provider, api, expected in [
            ("openai", "responses", True),
            ("openai", "chat_completions", False),
            ("scripted", "responses", False),
        ]:
            settings.AGENTS_MODEL_PROVIDER, settings.AGENTS_OPENAI_API = provider, api
            providers.reset()
            assert web_search_available() is expected, (provider, api)
    finally:
        providers.reset()
