"""Long conversations: what each model call receives stays within the agent's input-token
budget, in whole turns, while the stored history and the page keep every turn.

Histories of 1,000 turns are written straight into the session store (the same rows the run
service writes); the next reply then goes through the real run service on SQLite or Postgres.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import toktok
from agents import Handoff
from agents.agent_output import AgentOutputSchema
from agents.handoffs import handoff
from agents.testing import assistant_message, function_call
from asgiref.sync import sync_to_async
from django.urls import reverse

from agents_app import context_window, history, providers, registry
from agents_app.context_window import (
    DROPPED_NOTE,
    FIRST_PAGE,
    EncodingCounter,
    EstimateCounter,
    InputWindow,
    encoding_for_model,
    split_turns,
)
from agents_app.local.model import LocalModel, answer_reserve
from agents_app.models import AgentSession, SessionItem
from agents_app.registry import get_spec
from agents_app.session import DjangoSession
from agents_app.tests.test_local_model import FakeBackend
from chat.engine import runs
from chat.models import Conversation, Message
from chat.tests.fake_openai import Turn, fake_openai_server

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = ["the", "refund", "for", "order", "QM-10421", "was", "approved", "on", "Tuesday", "and", "the", "parcel", "left", "our", "warehouse", "in", "Lyon", "with", "3", "notebooks", "2", "pens", "and", "a", "sketchbook", "priced", "42.50", "EUR"]


def long_text(seed: int, chars: int = 4000) -> str:
    """~`chars` characters of varied prose (so the tokenizer cannot compress it unrealistically)."""
    words, size, k = [], 0, seed
    while size < chars:
        word = WORDS[k % len(WORDS)]
        words.append(word)
        size += len(word) + 1
        k += 7
    return " ".join(words)[:chars]


def turn_items(i: int) -> list[dict]:
    """One stored turn: a ~4k-character question, every third turn a tool call with its output,
    every seventh a handoff with its result, then a ~2k-character answer (as the SDK stores it)."""
    items: list[dict] = [{"role": "user", "content": f"Question {i}: " + long_text(i)}]
    if i % 3 == 0:
        items += [
            {"type": "function_call", "call_id": f"hist_call_{i}", "name": "get_current_time", "arguments": "{}",
             "id": f"fc_{i}", "status": "completed"},
            {"type": "function_call_output", "call_id": f"hist_call_{i}", "output": f"14:{i % 60:02d} UTC " + long_text(i, 600)},
        ]  # fmt: skip
    if i % 7 == 0:
        items += [
            {"type": "function_call", "call_id": f"hist_handoff_{i}", "name": "transfer_to_math_tutor", "arguments": "{}",
             "id": f"fc_h{i}", "status": "completed"},
            {"type": "function_call_output", "call_id": f"hist_handoff_{i}", "output": json.dumps({"assistant": "Math Tutor"})},
        ]  # fmt: skip
    items.append(
        {"id": f"msg_{i}", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": f"Answer {i}: " + long_text(i + 1, 2000), "annotations": [], "logprobs": []}]}
    )  # fmt: skip
    return items


def store_history(conversation: Conversation, turns: int, *, messages: bool = False) -> int:
    """Write `turns` turns into the conversation's SDK session (and, with `messages`, the
    messages the page shows); the number of stored items."""
    session, _ = AgentSession.objects.get_or_create(session_id=conversation.session_id)
    rows = [SessionItem(session=session, payload=json.dumps(item)) for i in range(turns) for item in turn_items(i)]
    SessionItem.objects.bulk_create(rows, batch_size=500)
    if messages:
        Message.objects.bulk_create(
            [
                Message(conversation=conversation, role=role, content=f"{role} message of turn {i}", agent_name="Assistant")
                for i in range(turns)
                for role in (Message.Role.USER, Message.Role.ASSISTANT)
            ],
            batch_size=500,
        )
    return len(rows)


async def long_conversation(user, turns: int, *, agent_key: str = "assistant", messages: bool = False):
    conversation = await Conversation.objects.acreate(owner=user, agent_key=agent_key, current_agent_name="Assistant")
    stored = await sync_to_async(store_history)(conversation, turns, messages=messages)
    return conversation, stored


async def reply_to(user, conversation: Conversation, content: str) -> Message:
    started = await runs.start_run(user=user, conversation=conversation, content=content)
    await runs.wait_for_run(started.run.public_id)
    return await Message.objects.aget(pk=started.reply.pk)


def kinds(items) -> list[str]:
    return [item.get("type") or item.get("role") for item in items]


def assert_whole_turns(sent: list[dict]) -> None:
    """The input starts with the note and then a user message, and every call has its output."""
    assert sent[0] == {"role": "system", "content": DROPPED_NOTE}
    assert sent[1]["role"] == "user"
    assert history.problems(sent[1:]) == []


def window_tokens(call) -> int:
    """The tokens of one recorded model call to the assistant, as the run's window counts them."""
    spec = get_spec("assistant")
    window = context_window.window_for(spec, providers.model_for_run())
    return window.input_tokens(spec.agent, call.system_instructions, call.input)


@pytest.fixture(autouse=True)
def _no_daily_quota(settings):
    # Long conversations spend many tokens; the daily budget is not what these tests are about.
    settings.AGENTS_DAILY_TOKEN_BUDGET = 0


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- through the run service ----------------------------------------------------------------
async def test_the_next_reply_of_a_1000_turn_conversation_sends_only_what_fits_the_budget(user, script, settings):
    settings.AGENTS_MAX_INPUT_TOKENS = 16_000
    conversation, stored = await long_conversation(user, 1000)

    with script([[assistant_message("Still here.")]]) as model:
        reply = await reply_to(user, conversation, "What did we say last?")
        tokens = window_tokens(model.last_call)

    assert reply.status == Message.Status.COMPLETED and reply.content == "Still here."
    sent = model.last_call.input
    assert 8_000 < tokens <= 16_000  # as many whole turns as fit, and no more
    # Independent of the window's own rules: the text alone, in the model's tokenizer.
    text = "".join(context_window.model_text(item) for item in sent) + model.last_call.system_instructions
    assert toktok.batch_count([text], "o200k_base")[0] < 16_000
    assert model.last_call.system_instructions == get_spec("assistant").agent.instructions
    assert sent[-1] == {"role": "user", "content": "What did we say last?"}
    assert_whole_turns(sent)
    assert sent[1]["content"].startswith("Question 99")  # the newest turns, oldest first
    # The stored history keeps everything: the 1,000 turns and the new one.
    assert await SessionItem.objects.filter(session__session_id=conversation.session_id).acount() == stored + 2


@pytest.mark.parametrize("budget", [3_000, 5_555, 9_999])
async def test_calls_and_handoffs_stay_with_their_outputs_wherever_the_budget_cuts(user, script, settings, budget):
    settings.AGENTS_MAX_INPUT_TOKENS = budget
    conversation, _ = await long_conversation(user, 1000)

    with script([[assistant_message("ok")]]) as model:
        await reply_to(user, conversation, "And then?")
        tokens = window_tokens(model.last_call)

    sent = model.last_call.input
    assert tokens <= budget
    assert_whole_turns(sent)
    calls = {item["call_id"] for item in sent if item.get("type") == "function_call"}
    outputs = {item["call_id"] for item in sent if item.get("type") == "function_call_output"}
    assert calls == outputs


async def test_the_model_call_after_a_tool_call_keeps_the_whole_latest_turn(user, script, settings):
    # A budget smaller than the latest turn alone: that turn (question, call, output) is still
    # sent whole, and so are the instructions; everything older is left out.
    settings.AGENTS_MAX_INPUT_TOKENS = 1_500
    conversation, _ = await long_conversation(user, 1000)
    question = "What time is it? " + long_text(5, 3000)

    with script([[function_call("get_current_time", {}, call_id="call_now")], [assistant_message("Noon.")]]) as model:
        reply = await reply_to(user, conversation, question)

    assert reply.content == "Noon."
    first, second = model.calls
    assert first.input == [{"role": "system", "content": DROPPED_NOTE}, {"role": "user", "content": question}]
    assert kinds(second.input) == ["system", "user", "function_call", "function_call_output"]
    assert second.input[2]["call_id"] == second.input[3]["call_id"] == "call_now"
    assert second.system_instructions == get_spec("assistant").agent.instructions


async def test_a_conversation_keeps_answering_turn_after_turn_past_the_budget(user, script, settings):
    settings.AGENTS_MAX_INPUT_TOKENS = 6_000
    conversation, _ = await long_conversation(user, 1000)

    for n in range(3):
        with script([[assistant_message(f"Reply {n}. " + long_text(n, 3000))]]) as model:
            reply = await reply_to(user, conversation, f"Next question {n}")
        assert reply.status == Message.Status.COMPLETED
        assert window_tokens(model.last_call) <= 6_000
        assert_whole_turns(model.last_call.input)

    # Each turn sees the previous replies: the newest turns are the ones kept.
    sent = [context_window.model_text(item) for item in model.last_call.input]
    assert sent[-1] == "Next question 2"
    assert any(text.startswith("Reply 1.") for text in sent)


async def test_history_reads_stay_flat_from_10_to_1000_turns(user, script, settings, monkeypatch):
    settings.AGENTS_MAX_INPUT_TOKENS = 16_000
    reads: list[int] = []
    page = DjangoSession._page

    def counting_page(self, before, size):
        rows = page(self, before, size)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(DjangoSession, "_page", counting_page)
    short, short_stored = await long_conversation(user, 10)
    long, _ = await long_conversation(user, 1000)

    with script([[assistant_message("ok")], [assistant_message("ok")]]):
        await reply_to(user, short, "Hi")
        short_reads, reads[:] = list(reads), []
        await reply_to(user, long, "Hi")
        long_reads = list(reads)

    # One query each; the short one reads its whole history, the long one no more than a page.
    assert short_reads == [short_stored]
    assert len(long_reads) == 1 and long_reads[0] <= FIRST_PAGE


async def test_the_page_still_shows_every_turn_of_a_trimmed_conversation(user, script, settings, client):
    settings.AGENTS_MAX_INPUT_TOKENS = 4_000
    conversation, _ = await long_conversation(user, 300, messages=True)

    with script([[assistant_message("The newest reply.")]]) as model:
        await reply_to(user, conversation, "One more")

    assert model.last_call.input[0] == {"role": "system", "content": DROPPED_NOTE}
    await sync_to_async(client.force_login)(user)
    page = (await sync_to_async(client.get)(reverse("chat:conversation_detail", args=[conversation.public_id]))).content.decode()
    assert "user message of turn 0" in page and "assistant message of turn 299" in page
    assert "The newest reply." in page


async def test_without_a_budget_the_model_gets_the_whole_history(user, script, settings):
    settings.AGENTS_MAX_INPUT_TOKENS = 0
    conversation, stored = await long_conversation(user, 50)

    with script([[assistant_message("ok")]]) as model:
        await reply_to(user, conversation, "All of it?")

    assert len(model.last_call.input) == stored + 1
    assert DROPPED_NOTE not in json.dumps(model.last_call.input)


async def test_an_agent_budget_overrides_the_global_one(user, script, settings, monkeypatch):
    settings.AGENTS_MAX_INPUT_TOKENS = 50_000
    spec = get_spec("assistant")
    monkeypatch.setitem(registry._specs(), "assistant", dataclasses.replace(spec, max_input_tokens=2_500))
    conversation, _ = await long_conversation(user, 100)

    with script([[assistant_message("ok")]]) as model:
        await reply_to(user, conversation, "Short memory?")

    window = InputWindow(budget=2_500, counter=EncodingCounter("o200k_base"))
    assert window.input_tokens(spec.agent, model.last_call.system_instructions, model.last_call.input) <= 2_500
    assert_whole_turns(model.last_call.input)


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_a_real_openai_request_of_a_1000_turn_conversation_stays_within_the_budget(user, settings, api):
    """The SDK's own OpenAI models (only the HTTP server is fake): the request body itself is
    bounded, and the note is a plain system message either API accepts."""
    settings.AGENTS_MAX_INPUT_TOKENS = 8_000
    conversation, _ = await long_conversation(user, 1000)
    with fake_openai_server([Turn(text="Hello again.")]) as (base_url, fake):
        settings.AGENTS_MODEL_PROVIDER, settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = "openai", "sk-test-not-real", base_url
        settings.AGENTS_MODEL, settings.AGENTS_OPENAI_API, settings.AGENTS_MODEL_MAX_RETRIES = "gpt-4.1-mini", api, 0
        providers.reset()
        try:
            reply = await reply_to(user, conversation, "Are you there?")
        finally:
            providers.reset()

    assert reply.status == Message.Status.COMPLETED and reply.content == "Hello again."
    [(_, body)] = fake.requests
    messages = body["input"] if api == "responses" else body["messages"]
    texts = [m.get("content") or m.get("output") or m.get("arguments") or "" for m in messages]
    assert toktok.batch_count([json.dumps(texts, ensure_ascii=False)], "o200k_base")[0] < 8_000
    history_start = 0 if api == "responses" else 1  # Chat Completions sends the instructions first
    assert messages[history_start] == {"role": "system", "content": DROPPED_NOTE}
    assert messages[-1]["role"] == "user" and "Are you there?" in json.dumps(messages[-1])


async def test_the_local_model_gets_turns_that_fit_its_context_without_trimming_again(user, settings, monkeypatch):
    """The window counts with the local model's own tokenizer and stops at the budget of its
    context, so the adapter's own last check (`fit_prompt`) finds nothing more to drop."""
    settings.AGENTS_MAX_INPUT_TOKENS = 100_000  # the model's context is the smaller bound
    backend = FakeBackend([["Fine."]], n_ctx=24_000)  # tokens are bytes here
    model = LocalModel(backend, label="local/test")
    dropped: list[int] = []
    fit = LocalModel.fit_prompt

    def recording_fit(self, request):
        result = fit(self, request)
        dropped.append(request.trimmed_messages)
        return result

    monkeypatch.setattr(LocalModel, "fit_prompt", recording_fit)
    conversation, _ = await long_conversation(user, 1000)

    with providers.use_model(model, label="local/test"):
        reply = await reply_to(user, conversation, "Still with me?")

    assert reply.content == "Fine."
    assert dropped == [0]
    prompt = backend.prompts[0]
    assert len(prompt.encode()) <= 24_000 - answer_reserve(24_000, 1024)
    assert prompt.endswith("Still with me?<|im_end|>\n<|im_start|>assistant\n")
    assert "Question 999" in prompt and "Question 990" not in prompt and DROPPED_NOTE in prompt


# --- counting and cutting -------------------------------------------------------------------
@pytest.mark.local_model
@pytest.mark.timeout(300)
def test_the_window_never_counts_less_than_the_local_models_rendered_prompt():
    """With the real GGUF tokenizer, for every catalog agent: the window's count of a request
    is at least the tokens of the prompt the local adapter renders from it (tool list, chatml
    framing and all), so a request the window lets through always fits `fit_prompt`."""
    from agents import ModelSettings

    from agents_app import local
    from agents_app.local import chatml

    model = local.get_model()
    window = InputWindow(budget=None, counter=context_window.ModelCounter(model, "local"))
    history = [item for i in range(3) for item in turn_items(i * 21)] + [{"role": "user", "content": "And now?"}]
    for spec in registry.all_specs():
        for agent in spec.agents():
            instructions = agent.instructions if isinstance(agent.instructions, str) else "You help the user, Ada."
            handoffs = [target if isinstance(target, Handoff) else handoff(target) for target in agent.handoffs]
            output = AgentOutputSchema(agent.output_type) if agent.output_type not in (None, str) else None
            for items in (history, history[-1:]):
                request = model.prepare(instructions, items, ModelSettings(), agent.tools, output, handoffs)
                rendered = len(model.backend.tokenize(chatml.render_prompt(request.messages, request.prompt_tools)))
                assert window.input_tokens(agent, instructions, items) >= rendered, (agent.name, len(items))


def test_openai_models_are_counted_with_their_own_encoding_offline():
    assert encoding_for_model("gpt-4.1-mini") == "o200k_base"
    assert encoding_for_model("openai/gpt-4o") == "o200k_base"
    assert encoding_for_model("gpt-4") == "cl100k_base"
    assert encoding_for_model("llama3.1:8b") is None
    assert EncodingCounter("o200k_base").count("hello world") == 2
    assert EncodingCounter("cl100k_base").count("hello world") == 2


@pytest.mark.parametrize(
    "text", ["Der schnelle braune Fuchs " * 40, "长对话会无限增长，每个请求都携带完整的历史记录。" * 20, "3.14159265358979 " * 40, "🙂🚀🎉 " * 50]
)
def test_the_estimate_for_unknown_models_counts_at_least_the_real_tokenizers(text):
    estimate = EstimateCounter().count(text)
    assert estimate >= max(EncodingCounter(name).count(text) for name in ("o200k_base", "cl100k_base"))


def test_a_turn_boundary_never_falls_between_a_call_and_its_output():
    items = [
        {"role": "user", "content": "a"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        # A user message while a call waits for its output (never stored by the SDK, but
        # possible in hand-made input) does not start a turn.
        {"role": "user", "content": "b"},
        {"type": "function_call_output", "call_id": "c1", "output": "x"},
        {"role": "user", "content": "c"},
    ]
    assert [kinds(turn) for turn in split_turns(items)] == [
        ["user", "function_call", "user", "function_call_output"],
        ["user"],
    ]
    # An output whose call is not there at all keeps everything before it with it.
    assert len(split_turns(items[2:])) == 2 and kinds(split_turns(items[2:])[0]) == ["user", "function_call_output"]
