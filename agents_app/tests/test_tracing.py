"""Local tracing: a real run (tool, custom span, handoff) through the run service ends up as a
trace with its span tree in the database, with or without inputs and outputs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents_app import tracing
from agents_app.models import SpanRecord, TraceRecord
from chat import engine
from chat.engine import runs
from chat.models import Conversation, Message, Run
from chat.tests import review_agents
from chat.tests.scripts import streamed
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def local_traces(settings):
    settings.AGENTS_TRACE_LOCAL = True
    yield
    assert tracing.flush(10)


async def traced_run(user, script, monkeypatch) -> Run:
    review_agents.install(monkeypatch)
    conversation = await Conversation.objects.acreate(
        owner=user, agent_key="review-test", current_agent_name="Triage"
    )
    with script(review_agents.tool_then_handoff_steps()):
        started = await runs.start_run(user=user, conversation=conversation, content="Tell me", request_id="r-trace")
        await runs.wait_for_run(started.run.public_id)
    assert await asyncio.to_thread(tracing.flush, 10)
    return await Run.objects.select_related("conversation").aget(pk=started.run.pk)


def spans_by_kind(trace: TraceRecord) -> dict[str, list[SpanRecord]]:
    grouped: dict[str, list[SpanRecord]] = {}
    for span in trace.spans.all():
        grouped.setdefault(span.kind, []).append(span)
    return grouped


async def test_a_run_is_stored_as_a_trace_linked_to_its_run_user_agent_and_conversation(
    user, script, monkeypatch, local_traces
):
    run = await traced_run(user, script, monkeypatch)

    trace = await TraceRecord.objects.aget(run=run)
    assert trace.workflow_name == "chat.review-test"
    assert trace.group_id == str(run.conversation.public_id)
    assert trace.user_id == user.pk and trace.agent_key == "review-test"
    assert trace.metadata["request_id"] == "r-trace" and trace.metadata["run_id"] == str(run.public_id)
    assert trace.started_at is not None and trace.ended_at is not None and trace.ended_at >= trace.started_at


async def test_span_tree_nests_tool_custom_span_and_handoff_under_their_agents(user, script, monkeypatch, local_traces):
    run = await traced_run(user, script, monkeypatch)
    trace = await TraceRecord.objects.aget(run=run)
    spans = await asyncio.to_thread(lambda: spans_by_kind(trace))
    by_id = {s.span_id: s for group in spans.values() for s in group}

    def ancestors(span: SpanRecord) -> list[str]:
        chain = []
        while span.parent_id:
            span = by_id[span.parent_id]
            chain.append(f"{span.kind}:{span.name}")
        return chain

    assert {"task", "agent", "turn", "function", "custom", "handoff"} <= set(spans)
    assert sorted(s.name for s in spans["agent"]) == ["Specialist", "Triage"]
    (tool,) = spans["function"]
    (lookup,) = [s for s in spans["custom"] if s.name == "lookup"]
    (handoff,) = spans["handoff"]
    assert tool.name == "lookup" and "agent:Triage" in ancestors(tool)
    assert ancestors(lookup)[0] == "function:lookup"
    assert handoff.name == "Triage → Specialist" and "agent:Triage" in ancestors(handoff)
    assert ancestors(next(s for s in spans["agent"] if s.name == "Specialist")) == ["task:chat.review-test"]
    assert all(s.started_at and s.ended_at and s.duration_ms is not None for s in by_id.values())


async def test_inputs_and_outputs_are_stored_when_sensitive_data_is_on(user, script, monkeypatch, local_traces, settings):
    settings.AGENTS_TRACE_SENSITIVE_DATA = True
    run = await traced_run(user, script, monkeypatch)

    tool = await SpanRecord.objects.aget(trace__run=run, kind="function")
    lookup = await SpanRecord.objects.aget(trace__run=run, kind="custom", name="lookup")
    assert json.loads(tool.data["input"]) == {"topic": review_agents.SECRET}
    assert tool.data["output"] == f"Two notes about {review_agents.SECRET}."
    assert lookup.data["data"] == {"query": review_agents.SECRET, "hits": 2}


async def test_no_inputs_or_outputs_are_stored_when_sensitive_data_is_off(user, script, monkeypatch, local_traces, settings):
    settings.AGENTS_TRACE_SENSITIVE_DATA = False
    run = await traced_run(user, script, monkeypatch)

    spans = [s async for s in SpanRecord.objects.filter(trace__run=run)]
    stored = json.dumps([s.data for s in spans] + [s.error for s in spans])
    assert review_agents.SECRET not in stored
    assert {"function", "custom", "handoff"} <= {s.kind for s in spans}  # the structure stays
    lookup = next(s for s in spans if s.kind == "custom" and s.name == "lookup")
    assert lookup.data["data"] == {"query": tracing.REDACTED, "hits": 2}  # numbers stay, text goes


async def test_nothing_is_stored_when_local_tracing_is_off(user, script, monkeypatch, settings):
    settings.AGENTS_TRACE_LOCAL = False
    run = await traced_run(user, script, monkeypatch)

    assert not await TraceRecord.objects.filter(run=run).aexists()


async def test_deleting_a_conversation_deletes_its_traces_and_spans_but_keeps_its_usage(
    user, script, monkeypatch, local_traces
):
    deleted, kept = await traced_run(user, script, monkeypatch), await traced_run(user, script, monkeypatch)
    assert await SpanRecord.objects.filter(trace__run=deleted, data__icontains=review_agents.SECRET).aexists()

    await engine.delete(conversation=deleted.conversation)

    assert not await TraceRecord.objects.filter(group_id=str(deleted.conversation.public_id)).aexists()
    assert not await SpanRecord.objects.filter(data__icontains=review_agents.SECRET).exclude(trace__run=kept).aexists()
    assert await TraceRecord.objects.filter(run=kept).aexists()  # another conversation keeps its own
    assert await UsageRecord.objects.filter(user=user).acount() == 2  # the ledger holds no content


async def test_a_conversation_deleted_mid_run_leaves_no_trace_behind(user, script, monkeypatch, local_traces):
    """The run's last spans end as it is stopped and reach the trace writer after the delete:
    they must not bring the trace (and the tool's output) back."""
    review_agents.install(monkeypatch)
    conversation = await Conversation.objects.acreate(owner=user, agent_key="review-test", current_agent_name="Triage")
    gate = asyncio.Event()
    steps = review_agents.tool_then_handoff_steps()
    steps[-1] = streamed("All ", "done.", gate=gate)
    with script(steps):
        started = await runs.start_run(user=user, conversation=conversation, content="Tell me", request_id="r-del")
        while not await Message.objects.filter(run=started.run, role="assistant", content__startswith="All").aexists():
            await asyncio.sleep(0.05)
        await engine.delete(conversation=conversation)
    assert await asyncio.to_thread(tracing.flush, 10)

    assert not await TraceRecord.objects.aexists()
    assert not await SpanRecord.objects.aexists()


def test_a_span_that_ends_after_its_trace_was_deleted_is_not_stored(settings):
    settings.AGENTS_TRACE_LOCAL = True
    processor = tracing.LocalTraceProcessor(linger_seconds=0.05)
    processor.on_trace_start(fake_trace("trace_deleted"))
    assert processor.force_flush(10)
    TraceRecord.objects.filter(trace_id="trace_deleted").delete()
    processor.on_span_end(fake_span("trace_deleted", "span_late"))
    processor.on_trace_end(fake_trace("trace_deleted"))
    assert processor.force_flush(10)
    processor.shutdown(5)

    assert not TraceRecord.objects.filter(trace_id="trace_deleted").exists()
    assert not SpanRecord.objects.filter(span_id="span_late").exists()


def fake_trace(trace_id: str, **metadata):
    return SimpleNamespace(
        trace_id=trace_id,
        name="wf",
        export=lambda: {"workflow_name": "wf", "group_id": "g", "metadata": metadata},
    )


def fake_span(trace_id: str, span_id: str, *, parent: str | None = None, data=None):
    from agents.tracing.span_data import CustomSpanData

    return SimpleNamespace(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent,
        span_data=data or CustomSpanData(name="step", data={"n": 1, "text": "a\x00b"}),
        started_at="2026-01-01T10:00:00.000000+00:00",
        ended_at="2026-01-01T10:00:00.250000+00:00",
        error=None,
    )


def test_callbacks_only_queue_and_the_writer_thread_stores_in_batches(settings):
    settings.AGENTS_TRACE_LOCAL = True
    processor = tracing.LocalTraceProcessor(linger_seconds=0.05)
    with CaptureQueriesContext(connection) as queries:
        processor.on_trace_start(fake_trace("trace_a", agent="assistant", user_id="999999"))
        processor.on_span_start(fake_span("trace_a", "span_1"))
        processor.on_span_end(fake_span("trace_a", "span_1"))
        processor.on_span_end(fake_span("trace_a", "span_2", parent="span_1"))
        processor.on_trace_end(fake_trace("trace_a"))
    assert len(queries) == 0  # nothing touched the database on the caller's thread

    assert processor.force_flush(10)
    trace = TraceRecord.objects.get(trace_id="trace_a")
    assert trace.agent_key == "assistant" and trace.user is None  # unknown user: no link, no error
    assert trace.ended_at is not None
    spans = {s.span_id: s for s in trace.spans.all()}
    assert spans["span_2"].parent_id == "span_1" and spans["span_1"].duration_ms == 250
    assert spans["span_1"].data["data"]["text"] == "ab"  # NUL removed: Postgres jsonb refuses it
    processor.shutdown(5)
    assert processor._thread is not None and not processor._thread.is_alive()


def test_a_span_whose_trace_was_never_seen_gets_a_stub_trace(settings):
    settings.AGENTS_TRACE_LOCAL = True
    processor = tracing.LocalTraceProcessor(linger_seconds=0.05)
    processor.on_span_end(fake_span("trace_orphan", "span_x"))
    assert processor.force_flush(10)
    processor.shutdown(5)

    assert SpanRecord.objects.get(span_id="span_x").trace.trace_id == "trace_orphan"


def test_records_that_come_in_bursts_are_written_in_one_transaction(settings, monkeypatch):
    """A run's spans end one after another over its life; written as they come, each burst
    was a transaction of its own."""
    settings.AGENTS_TRACE_LOCAL = True
    processor = tracing.LocalTraceProcessor(linger_seconds=5, gather_seconds=0.5)
    writes = []
    original = processor._write
    monkeypatch.setattr(processor, "_write", lambda records: (writes.append(len(records)), original(records)))
    processor.on_trace_start(fake_trace("trace_bursts"))
    for index in range(5):
        time.sleep(0.02)  # the writer is idle in between: nothing else is queued
        processor.on_span_end(fake_span("trace_bursts", f"span_burst_{index}"))
    processor.on_trace_end(fake_trace("trace_bursts"))
    assert processor.force_flush(10)
    processor.shutdown(5)

    assert writes == [7]
    assert SpanRecord.objects.filter(trace__trace_id="trace_bursts").count() == 5


def test_callbacks_return_at_once_even_while_the_writer_is_busy(settings, monkeypatch):
    settings.AGENTS_TRACE_LOCAL = True
    processor = tracing.LocalTraceProcessor(linger_seconds=0.05)
    release = threading.Event()
    original = processor._write

    def slow_write(records):
        release.wait(10)
        original(records)

    monkeypatch.setattr(processor, "_write", slow_write)
    processor.on_trace_start(fake_trace("trace_busy"))
    for index in range(200):
        processor.on_span_end(fake_span("trace_busy", f"span_busy_{index}"))  # must not wait for the writer
    release.set()
    assert processor.force_flush(10)
    processor.shutdown(5)

    assert SpanRecord.objects.filter(trace__trace_id="trace_busy").count() == 200
