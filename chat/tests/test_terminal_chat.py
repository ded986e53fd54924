"""`manage.py chat`: the terminal client, driven with call_command and scripted stdin. Runs go
through the run service and the rendered lines come from the same wire events as the socket."""

from __future__ import annotations

import asyncio
import io
import os
import signal

import pytest
from agents.testing import function_call
from django.core.management import CommandError, call_command

from chat.models import Conversation, Message, Run
from chat.tests import review_agents
from chat.tests.factories import ConversationFactory, finished_reply
from chat.tests.scripts import streamed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _scripted(settings):
    settings.AGENTS_MODEL_PROVIDER = "scripted"  # a provider is configured; the model itself is the script


def chat(*args: str, stdin: str) -> str:
    out = io.StringIO()
    call_command("chat", *args, stdin=io.StringIO(stdin), stdout=out)
    return out.getvalue()


class CtrlC(asyncio.Event):
    """A gate that presses Ctrl+C (`times` times) when the model stream reaches it, then waits
    forever: only a stop can end the reply."""

    def __init__(self, times: int = 1) -> None:
        super().__init__()
        self.times = times

    async def wait(self) -> bool:
        for _ in range(self.times):  # back to back: each press reaches the handler
            os.kill(os.getpid(), signal.SIGINT)
        return await super().wait()


def test_reply_streams_with_tool_calls_results_and_handoffs_on_their_own_lines(user, script, monkeypatch):
    review_agents.install(monkeypatch)
    with script(review_agents.tool_then_handoff_steps()) as model:
        output = chat("--user", user.email, "--agent", "review-test", stdin="Tell me about it\n")

    conversation = Conversation.objects.get(owner=user)
    assert len(model.calls) == 3
    lines = output.splitlines()
    assert f"conversation {conversation.public_id}" in lines[0]
    assert '  → lookup({"topic": "secret-topic"})' in lines
    assert "  ← lookup: Two notes about secret-topic." in lines
    assert "  ⇢ handed off to Specialist" in lines
    assert "Specialist: All done." in lines
    assert "  [147 tokens · $0.0000840 · gpt-4.1-mini]" in lines or any(line.startswith("  [147 tokens · $0.000084") for line in lines)
    reply = Message.objects.get(conversation=conversation, role="assistant")
    assert reply.content == "All done." and reply.agent_name == "Specialist"
    assert Run.objects.get(conversation=conversation).request_id.startswith("cli-")


def test_continues_an_existing_conversation_with_the_agent_that_answered_last(user, script):
    conversation = ConversationFactory(owner=user)
    steps = [[function_call("get_current_time", {}, call_id="call_t")], streamed("It is ", "noon."), streamed("Bye.")]
    with script(steps):
        output = chat("--user", user.email, "--conversation", str(conversation.public_id), stdin="Time?\nThanks\n")

    assert "  → get_current_time({})" in output.splitlines()
    assert "Assistant: It is noon." in output.splitlines() and "Assistant: Bye." in output.splitlines()
    assert list(Message.objects.filter(conversation=conversation).values_list("content", flat=True)) == [
        "Time?", "It is noon.", "Thanks", "Bye.",
    ]


def test_ctrl_c_stops_the_reply_and_the_chat_goes_on(user, script):
    with script([streamed("Hel", "lo", gate=CtrlC(1)), streamed("Still here.")]):
        output = chat("--user", user.email, "--agent", "assistant", stdin="Talk forever\nAnd now?\n")

    conversation = Conversation.objects.get(owner=user)
    first, second = Run.objects.filter(conversation=conversation).order_by("created_at")
    assert first.status == Run.Status.CANCELLED and second.status == Run.Status.COMPLETED
    assert "^C stopping the reply" in output and "  [cancelled]" in output.splitlines()
    assert "Assistant: Still here." in output.splitlines()


def test_second_ctrl_c_exits_after_stopping_the_run(user, script):
    with script([streamed("Hel", "lo", gate=CtrlC(2))]) as model:
        output = chat("--user", user.email, "--agent", "assistant", stdin="Talk forever\nnever sent\n")

    run = Run.objects.get(conversation__owner=user)
    assert run.status == Run.Status.CANCELLED  # stopped and stored before the command returned
    assert len(model.calls) == 1
    assert not Message.objects.filter(content="never sent").exists()
    assert output.rstrip().endswith("^C")


def test_end_of_input_exits_cleanly(user, script):
    with script([]) as model:
        output = chat("--user", user.email, "--agent", "assistant", stdin="")
    assert len(model.calls) == 0 and "you> " in output
    assert not Run.objects.exists()


def test_over_budget_user_is_told_and_nothing_runs(user, script, settings):
    settings.AGENTS_DAILY_TOKEN_BUDGET = 10
    conversation = finished_reply(owner=user, total_tokens=10).conversation
    with script([]) as model:
        output = chat("--user", user.email, "--conversation", str(conversation.public_id), stdin="Hi\n")
    assert "! You have used your 10 tokens for today" in output
    assert len(model.calls) == 0 and Run.objects.count() == 1  # only the earlier one


def test_someone_elses_conversation_is_refused(user, other_user):
    theirs = ConversationFactory(owner=other_user)
    with pytest.raises(CommandError, match="has no conversation"):
        chat("--user", user.email, "--conversation", str(theirs.public_id), stdin="")
    with pytest.raises(CommandError, match="No user"):
        chat("--user", "ghost@example.com", stdin="")
    with pytest.raises(CommandError, match="no agent"):
        chat("--user", user.email, "--agent", "nope", stdin="")


def test_a_model_picked_on_the_command_line_answers_and_stays_with_the_conversation(user, settings):
    from agents_app import providers

    settings.AGENTS_MODELS = [
        {"key": "quick", "provider": "scripted", "name": "scripted-quick"},
        {"key": "careful", "provider": "scripted", "name": "scripted-careful"},
    ]
    providers.reset()
    try:
        chat("--user", user.email, "--model", "careful", stdin="Hello\n")
        conversation = Conversation.objects.get(owner=user)
        chat("--user", user.email, "--conversation", str(conversation.public_id), stdin="Again\n")
        with pytest.raises(CommandError, match="no model 'gpt-9'"):
            chat("--user", user.email, "--model", "gpt-9", stdin="")
    finally:
        providers.reset()

    replies = Message.objects.filter(conversation=conversation, role="assistant").order_by("created_at")
    assert [m.model for m in replies] == ["scripted-careful", "scripted-careful"]
    assert Conversation.objects.count() == 1
