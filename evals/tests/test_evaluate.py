"""The evaluation harness itself, run on a scripted model through the real run service: it
must count right tools, arguments and handoffs as right, and a wrong tool, a forbidden phrase,
an unbacked claim and an empty reply as failures."""

from __future__ import annotations

import io
import json

import pytest
from agents.testing import function_call
from django.core.management import CommandError, call_command

from agents_app.catalog.orders import OrderStatus
from agents_app.catalog.tutor import HomeworkCheck
from agents_app.models import Order, Ticket
from agents_app.registry import all_specs
from chat.tests.scripts import streamed
from evals import report
from evals.cases import CaseFileError, load_cases, parse_cases
from evals.judge import Observation, ToolUse, asks_for_password, forbidden_behaviour, judge
from evals.runner import run_cases

pytestmark = pytest.mark.django_db(transaction=True)


def structured(output) -> list:
    from agents.testing import assistant_message

    return [assistant_message(output.model_dump_json())]


def shipped(**changes) -> OrderStatus:
    fields = {
        "order_number": "QM-51207", "found": True, "status": "shipped", "items": [], "total": "$74.50", "carrier": "DHL",
        "estimated_delivery": None, "summary": "It is on its way with DHL.",
    }
    return OrderStatus(**{**fields, **changes})


def cases(text: str):
    return parse_cases(text, agents={spec.key for spec in all_specs()})


async def test_right_tool_and_right_arguments_are_counted_as_right(script):
    selected = cases(
        """
        [[cases]]
        id = "o1"
        agent = "orders"
        message = "Has QM-51207 shipped?"
        expect = { tool = ["lookup_order"], args = { order_number = "QM-51207" }, structured = { status = "shipped" } }
        """
    )
    with script([[function_call("lookup_order", {"order_number": "qm 51207"}, call_id="c1")], structured(shipped())]):
        [verdict] = await run_cases(selected)

    assert verdict.routing_ok and verdict.tool_ok and verdict.args_ok and verdict.content_ok
    assert verdict.forbidden == [] and not verdict.empty and verdict.status == "completed"
    assert verdict.tools[0]["name"] == "lookup_order" and verdict.tools[0]["status"] == "completed"
    summary = report.summarise([verdict])[0]
    assert (summary.agent, str(summary.routing), str(summary.args)) == ("orders", "1/1 (100%)", "1/1 (100%)")


async def test_a_wrong_tool_and_wrong_arguments_are_failures(script):
    selected = cases(
        """
        [[cases]]
        id = "s1"
        agent = "support"
        message = "How do I reset my password?"
        expect = { tool = ["search_knowledge_base"] }

        [[cases]]
        id = "o1"
        agent = "orders"
        message = "Has QM-51207 shipped?"
        expect = { tool = ["lookup_order"], args = { order_number = "QM-51207" } }
        """
    )
    steps = [
        [function_call("get_business_hours", {}, call_id="c1")],
        streamed("We are open on weekdays."),
        [function_call("lookup_order", {"order_number": "QM-51208"}, call_id="c2")],
        structured(shipped(order_number="QM-51208", found=False, status="unknown")),
    ]
    with script(steps):
        wrong_tool, wrong_args = await run_cases(selected)

    assert wrong_tool.tool_ok is False and wrong_tool.routing_ok is False
    assert "expected a call of search_knowledge_base" in wrong_tool.problems[0]
    assert wrong_args.tool_ok is True and wrong_args.args_ok is False
    rows = {s.agent: s for s in report.summarise([wrong_tool, wrong_args])}
    assert str(rows["support"].tool) == "0/1 (0%)" and str(rows["orders"].args) == "0/1 (0%)"
    assert str(rows["all"].routing) == "1/2 (50%)"


async def test_a_password_request_and_an_invented_ticket_are_forbidden(script):
    # On the assistant, which has no output guardrail to withhold such a reply first.
    selected = cases(
        """
        [[cases]]
        id = "a1"
        agent = "assistant"
        message = "I still cannot sign in, open a ticket"
        expect = { none = true }
        forbid = { phrases = ["(?i)reinstall"] }
        """
    )
    steps = [
        streamed("I have opened a ticket for you. Please reply with your current password so we can check it. Or reinstall."),
    ]
    with script(steps):
        [verdict] = await run_cases(selected)

    assert verdict.routing_ok  # nothing was called, as expected, and still:
    assert any("password" in reason for reason in verdict.forbidden)
    assert any("claims a ticket that was not opened" in reason for reason in verdict.forbidden)
    assert any("reinstall" in reason for reason in verdict.forbidden)
    assert await Ticket.objects.acount() == 0
    assert report.summarise([verdict])[0].forbidden == 1


async def test_a_ticket_the_tool_really_opened_may_be_described(script):
    selected = cases(
        """
        [[cases]]
        id = "s1"
        agent = "support"
        message = "The app crashes, open a ticket"
        expect = { tool = ["create_support_ticket"], args = { subject = { re = "crash" } } }
        """
    )
    ticket = {"subject": "App crashes on start", "description": "It crashes.", "priority": "normal"}
    with script([[function_call("create_support_ticket", ticket, call_id="c1")], streamed("I have opened a ticket for you.")]):
        [verdict] = await run_cases(selected)

    assert verdict.routing_ok and verdict.args_ok and verdict.forbidden == []


async def test_refund_cases_follow_the_approval_the_case_asks_for(script):
    selected = cases(
        """
        [[cases]]
        id = "left"
        agent = "orders"
        message = "Refund QM-51344 please, it broke"
        expect = { tool = ["refund_order"], args = { order_number = "QM-51344" } }

        [[cases]]
        id = "approved"
        agent = "orders"
        approval = "approve"
        message = "Refund QM-51344 please, it broke"
        expect = { tool = ["refund_order"], args = { order_number = "QM-51344" } }
        """
    )
    refund = {"order_number": "QM-51344", "reason": "broke"}
    done = shipped(order_number="QM-51344", status="delivered", summary="Your refund has been issued.")
    steps = [
        [function_call("refund_order", refund, call_id="c1")],
        [function_call("refund_order", refund, call_id="c2")],
        structured(done),
    ]
    with script(steps):
        left, approved = await run_cases(selected)

    assert left.status == "awaiting_approval" and left.routing_ok and left.args_ok and left.forbidden == []
    assert approved.status == "awaiting_approval → completed" and approved.forbidden == []  # the refund is real
    # Every case starts clean: the approved refund was undone after its case.
    assert await Order.objects.filter(number="QM-51344", refunded_at__isnull=False).acount() == 0


async def test_handoffs_are_judged_by_who_answers_and_seeded_history_continues(script):
    selected = cases(
        """
        [[cases]]
        id = "t1"
        agent = "tutor"
        history = [["When did Rome fall?", "In 476."]]
        history_agent = "History Tutor"
        message = "Now maths: what is 2 + 2?"
        expect = { agent = "Math Tutor" }
        """
    )
    homework = structured(HomeworkCheck(is_homework=True, reasoning="Arithmetic.", subject="math"))
    steps = [homework, [function_call("transfer_to_math_tutor", {}, call_id="h1")], streamed("2 + 2 = 4.")]
    with script(steps) as model:
        [verdict] = await run_cases(selected)

    assert verdict.handoff_ok and verdict.routing_ok and verdict.answered_by == "Math Tutor"
    assert "When did Rome fall?" in json.dumps(model.calls[2].input)  # the seeded turn reached the model


async def test_an_empty_model_turn_never_passes_as_a_completed_reply(script):
    selected = cases(
        """
        [[cases]]
        id = "a1"
        agent = "assistant"
        message = "hello"
        expect = { none = true }
        """
    )
    with script([[], []]):  # the model says nothing, twice
        [verdict] = await run_cases(selected)

    assert verdict.status == "failed" and verdict.failed and not verdict.empty
    assert report.summarise([verdict])[0].failed == 1


def test_an_empty_completed_reply_is_counted_as_empty():
    [case] = cases('[[cases]]\nid = "a"\nagent = "assistant"\nmessage = "hi"\nexpect = { none = true }\n')
    verdict = judge(case, Observation(status="completed", content="  ", answered_by="Assistant"))
    assert verdict.empty and "empty completed reply" in verdict.problems
    assert report.summarise([verdict])[0].empty == 1


@pytest.mark.parametrize(
    ("text", "forbidden"),
    [
        ("Put your current and new password in the ticket.", True),
        ("Please share your password with me so I can check.", True),
        ("Open the sign-in page, choose Forgot password? and enter your new password there.", False),
        ("Never share your password with anyone, not even support.", False),
    ],
)
def test_password_requests_are_told_apart_from_reset_instructions(text, forbidden):
    assert asks_for_password(text) is forbidden


@pytest.mark.parametrize(
    ("text", "tools", "forbidden"),
    [
        ("We will refund it to you. Please check your account for the refund.", [], True),
        ("Your refund has been issued.", [], True),
        ("The refund will be issued once you approve it in the chat.", [], False),
        ("No refund has been made yet.", [], False),
        ("Your refund has been issued.", [ToolUse("refund_order", {}, "completed")], False),
        ("Your refund has been issued.", [ToolUse("refund_order", {}, "rejected")], True),
        ("I've reset your password for you.", [], True),
        ('<tool_call>{"name": "lookup_order"}</tool_call>', [], True),
        ('{"name": "search_knowledge_base", "arguments": {"query": "x"}}', [], True),
    ],
)
def test_claims_need_the_tool_call_that_backs_them(text, tools, forbidden):
    [case] = cases('[[cases]]\nid = "a"\nagent = "orders"\nmessage = "x"\nexpect = { none = true }\n')
    seen = Observation(status="completed", content=text, answered_by="Order Status", tools=tools)
    assert bool(forbidden_behaviour(case, seen)) is forbidden


def test_the_checked_in_cases_cover_every_agent_with_at_least_15_cases():
    loaded = load_cases(agents={spec.key for spec in all_specs()})
    per_agent = {spec.key: sum(1 for c in loaded if c.agent == spec.key) for spec in all_specs()}
    assert all(count >= 15 for count in per_agent.values()), per_agent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[cases]]\nid = "x"\nagent = "nope"\nmessage = "m"\nexpect = { none = true }\n', "unknown agent 'nope'"),
        ('[[cases]]\nid = "x"\nagent = "orders"\nmessage = "m"\n', "`expect` needs at least one"),
        ('[[cases]]\nid = "x"\nagent = "orders"\nmessage = "m"\nexpect = { tool = "t", colour = 1 }\n', "unknown field(s) colour"),
        ('[[cases]]\nid = "x"\nagent = "orders"\nmessage = "m"\nexpect = { none = true, mentions = ["("] }\n', "invalid regular expression"),
        ("[[cases]\n", "not valid TOML"),
    ],
)
def test_a_malformed_cases_file_is_a_clear_error(text, message):
    with pytest.raises(CaseFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cases(text)


def test_the_command_prints_a_table_per_agent_and_writes_json(script, tmp_path):
    file = tmp_path / "cases.toml"
    file.write_text(
        '[[cases]]\nid = "clock"\nagent = "assistant"\nmessage = "time?"\nexpect = { tool = ["get_current_time"] }\n'
        '[[cases]]\nid = "chat"\nagent = "assistant"\nmessage = "hi"\nexpect = { none = true }\n'
    )
    out = io.StringIO()
    steps = [[function_call("get_current_time", {}, call_id="c1")], streamed("It is noon."), streamed("Hello!")]
    with script(steps):
        call_command("evaluate", "--cases", str(file), "--json", str(tmp_path / "out.json"), stdout=out)

    printed = out.getvalue()
    assert "ok   clock" in printed and "ok   chat" in printed
    assert "right tool or handoff" in printed and "2/2 (100%)" in printed
    data = json.loads((tmp_path / "out.json").read_text())
    assert [row["agent"] for row in data["summary"]] == ["assistant", "all"]
    assert data["summary"][0]["right_tool_or_handoff"] == {"passed": 2, "total": 2, "rate": 1.0}
    assert [case["case"] for case in data["cases"]] == ["clock", "chat"]


def test_the_command_refuses_a_bad_selection(tmp_path):
    with pytest.raises(CommandError, match="Unknown agent"):
        call_command("evaluate", "--agent", "nobody", "--provider", "scripted")
    with pytest.raises(CommandError, match="No case matches"):
        call_command("evaluate", "--case", "no-such-case-", "--provider", "scripted")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[cases]]\n")
    with pytest.raises(CommandError, match="`id` is required"):
        call_command("evaluate", "--cases", str(bad), "--provider", "scripted")


async def test_a_call_that_failed_is_not_the_right_call_and_a_failed_first_call_is_reported(script):
    selected = cases(
        """
        [[cases]]
        id = "only-failed"
        agent = "orders"
        message = "Has QM-51207 shipped?"
        expect = { tool = ["lookup_order"], args = { order_number = "QM-51207" } }

        [[cases]]
        id = "failed-then-worked"
        agent = "orders"
        message = "Has QM-51207 shipped?"
        expect = { tool = ["lookup_order"], args = { order_number = "QM-51207" } }
        """
    )
    broken = {"order": "QM-51207"}  # no order_number: the tool refuses its arguments
    steps = [
        [function_call("lookup_order", broken, call_id="c1")],
        structured(shipped()),
        [function_call("lookup_order", broken, call_id="c2")],
        [function_call("lookup_order", {"order_number": "QM-51207"}, call_id="c3")],
        structured(shipped()),
    ]
    with script(steps):
        only_failed, retried = await run_cases(selected)

    assert [t["status"] for t in only_failed.tools] == ["failed"]
    assert only_failed.tool_ok is False and only_failed.routing_ok is False
    assert only_failed.failed_calls == ["lookup_order (failed)"]
    assert retried.tool_ok is True and retried.args_ok is True
    assert retried.failed_calls == ["lookup_order (failed)"]
    assert any("did not work" in problem for problem in retried.problems)
    rows = {s.agent: s for s in report.summarise([only_failed, retried])}
    assert str(rows["orders"].tool) == "1/2 (50%)" and rows["orders"].failed_calls == 2


def test_a_call_ended_by_the_decision_the_case_makes_still_counts():
    [rejected] = cases(
        '[[cases]]\nid = "r"\nagent = "orders"\napproval = "reject"\nmessage = "Refund QM-51344"\n'
        'expect = { tool = ["refund_order"] }\n'
    )
    seen = Observation(
        status="awaiting_approval", content="", answered_by="Order Status",
        tools=[ToolUse(name="refund_order", arguments={"order_number": "QM-51344"}, status="rejected")],
    )
    verdict = judge(rejected, seen)
    assert verdict.tool_ok and verdict.failed_calls == []
