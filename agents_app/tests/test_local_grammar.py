"""The local model's output grammar, checked with llama.cpp's own grammar engine and the real
tokenizer (the model file's vocabulary only: no weights, no generation, about a second): what
it accepts is what the model can write, token by token, and where it may stop."""

from __future__ import annotations

import ctypes

import pytest

from agents_app.local.grammar import OutputConstraint, ToolGrammar, to_gbnf

# The model file's vocabulary (conftest.py skips these where the model is not installed).
pytestmark = pytest.mark.local_model

LOOKUP = ToolGrammar(
    "lookup_order",
    {
        "type": "object",
        "properties": {"order_number": {"type": "string", "description": "The number."}},
        "required": ["order_number"],
        "additionalProperties": False,
    },
)
HANDOFF = ToolGrammar("transfer_to_math_tutor", {"type": "object", "properties": {}, "required": [], "additionalProperties": False})
SCHEMA = {
    "type": "object",
    "properties": {"found": {"type": "boolean"}, "summary": {"type": "string"}},
    "required": ["found", "summary"],
    "additionalProperties": False,
}


def call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


@pytest.fixture(scope="module")
def vocab():
    import llama_cpp

    from agents_app.local.assembly import require_verified
    from agents_app.local.specs import get_spec

    llm = llama_cpp.Llama(model_path=str(require_verified(get_spec("1.5b"))), vocab_only=True, verbose=False)
    yield llama_cpp, llm
    llm.close()


def accepts(vocab, constraint: OutputConstraint, text: str) -> bool:
    """Whether the grammar lets the model write exactly `text` and then stop."""
    llama_cpp, llm = vocab
    model_vocab = llama_cpp.llama_model_get_vocab(llm.model)
    sampler = llama_cpp.llama_sampler_init_grammar(model_vocab, to_gbnf(constraint).encode(), b"root")
    assert sampler, "llama.cpp could not parse the grammar"
    candidate = (llama_cpp.llama_token_data * 1)()

    def allowed(token: int) -> bool:
        candidate[0].id, candidate[0].logit, candidate[0].p = token, 0.0, 0.0
        array = llama_cpp.llama_token_data_array(data=candidate, size=1, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        return candidate[0].logit != float("-inf")

    try:
        for token in llm.tokenize(text.encode(), add_bos=False, special=True):
            if not allowed(token):
                return False
            llama_cpp.llama_sampler_accept(sampler, token)
        return allowed(llama_cpp.llama_vocab_eos(model_vocab))
    finally:
        llama_cpp.llama_sampler_free(sampler)


AUTO = OutputConstraint(calls=(LOOKUP, HANDOFF), text=True, max_calls=3)  # parallel calls allowed


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        (call("lookup_order", '{"order_number": "QM-51207"}'), True),
        (call("lookup_order", '{\n  "order_number": "QM-51207"\n}'), True),  # pretty-printed JSON
        (call("transfer_to_math_tutor", "{}"), True),
        (call("lookup_order", '{"order_number": "QM-1"}') + "\n" + call("transfer_to_math_tutor", "{}"), True),
        (call("refund_order", '{"order_number": "QM-1"}'), False),  # not an offered tool
        (call("lookup_order", "{}"), False),  # a required argument is missing
        (call("lookup_order", '{"order_number": 51207}'), False),  # the wrong type
        (call("lookup_order", '{"order_number": "QM-1", "colour": "red"}'), False),  # not declared
        (call("lookup_order", '{"order_number": "QM-1"}') + "\nAnd some text.", False),  # nothing after a call
        ("Your order has shipped. Anything else?", True),
        ("Use `a < b` and <b>bold</b> here.", True),
        ("", False),  # never an empty answer
        ("   ", False),
        ("<tools>\n\n</tools>", False),  # markup-only replies of the issue
        ("Sure.\n<tool_call>\n{}", False),
        ('```json\n{"name": "lookup_order", "arguments": {}}\n```', False),  # a call written as text
        ('Call {"name": "lookup_order"} now', False),
        ('{"name": "lookup_order", "arguments": {"order_number": "QM-1"}}', True),  # a bare call is a call
        ('{"name": "refund_order", "arguments": {"order_number": "QM-1"}}', False),
    ],
)
def test_with_tools_offered_the_output_is_a_valid_call_or_a_plain_answer(vocab, text, allowed):
    assert accepts(vocab, AUTO, text) is allowed


def test_one_call_per_reply_unless_parallel_calls_are_allowed(vocab):
    single = OutputConstraint(calls=(LOOKUP, HANDOFF), text=True)
    one = call("lookup_order", '{"order_number": "QM-1"}')
    assert accepts(vocab, single, one)
    assert not accepts(vocab, single, one + "\n" + one)  # the small model's habit of repeating itself


def test_a_required_tool_choice_allows_calls_only(vocab):
    required = OutputConstraint(calls=(LOOKUP, HANDOFF), text=False)
    assert accepts(vocab, required, call("lookup_order", '{"order_number": "QM-1"}'))
    assert not accepts(vocab, required, "I will look it up.")
    assert required.forced_prefix() == '<tool_call>\n{"name": "'


def test_a_named_tool_choice_allows_that_tool_only(vocab):
    named = OutputConstraint(calls=(HANDOFF,), text=False)
    assert accepts(vocab, named, call("transfer_to_math_tutor", "{}"))
    assert not accepts(vocab, named, call("lookup_order", '{"order_number": "QM-1"}'))
    assert named.forced_prefix() == '<tool_call>\n{"name": "transfer_to_math_tutor", "arguments": '


def test_a_structured_answer_follows_its_schema_or_is_a_call(vocab):
    structured = OutputConstraint(calls=(LOOKUP,), text=False, output_schema=SCHEMA)
    assert accepts(vocab, structured, '{"found": false, "summary": "No such order."}')
    assert accepts(vocab, structured, call("lookup_order", '{"order_number": "QM-1"}'))
    assert not accepts(vocab, structured, "No such order.")
    assert not accepts(vocab, structured, '{"found": "no"}')


def test_without_tools_an_answer_may_open_with_code_but_never_holds_markup(vocab):
    plain = OutputConstraint(text=True)
    assert accepts(vocab, plain, "```python\nprint('hi')\n```")
    assert accepts(vocab, plain, 'A JSON key: "name".')
    assert not accepts(vocab, plain, "Sure <tool_response>")
    assert not accepts(vocab, plain, "")


def test_an_answer_never_names_a_tool_nor_gives_the_canned_refusal(vocab):
    assert not accepts(vocab, AUTO, "You can use the lookup_order function for that.")
    assert not accepts(vocab, AUTO, "I'm sorry, but I can't assist with that.")
    assert accepts(vocab, AUTO, "I'm sorry, but I could not find that order.")
    assert not accepts(vocab, OutputConstraint(text=True), "I'm sorry, but I can't help with that.")
