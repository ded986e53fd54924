"""How much of a long conversation each model call receives: at most a token budget.

The stored history stays complete (`DjangoSession` keeps every item, the page shows every
message); only what goes to the model is bounded, in two places that share one `InputWindow`:

- `InputWindow.__call__` is the run's `RunConfig.call_model_input_filter`. Before every model
  call it cuts the input into turns (a user message and everything after it up to the next user
  message: the replies, function calls and their outputs, handoff calls and their results) and
  drops whole turns from the oldest until the rest fits. The instructions and the latest turn
  (the message being answered, with this run's calls so far) are always kept, even when they
  alone exceed the budget; a call and its output always stay together (a turn boundary never
  falls between them). When anything was left out, a short system note says so, so the model
  does not pretend to remember it. Nothing is summarised: see docs/agents.md.
- `InputWindow.read_history` is how `DjangoSession.get_items()` reads the history during such a
  run: newest first, page by page, and only until what it read exceeds the budget (nothing
  older could be sent), so reading the history of a 1,000-turn conversation costs what a short
  one does.

The budget of a run is `AgentSpec.max_input_tokens`, else `settings.AGENTS_MAX_INPUT_TOKENS`
(0 = unbounded), and never more than the model's own window when the model has one (the local
model: its context minus what it keeps free for the answer). It covers everything a request
sends: instructions, tool, handoff and output schemas, and every input item.

Tokens are counted with the model's own tokenizer where one is available offline:
- a model that counts its own tokens (`count_tokens`): the local llama.cpp model (its GGUF
  vocabulary), the scripted demo model (its 4-characters-a-token rule);
- OpenAI model names: `o200k_base` / `cl100k_base` (`toktok`, which has them compiled in and
  gives tiktoken's counts);
- anything else (another OpenAI-compatible server's model): an estimate, `cl100k_base` tokens
  plus one per digit, plus 20% (`EstimateCounter`).
Each item also costs `ITEM_OVERHEAD` tokens (role and framing) and each request
`REQUEST_OVERHEAD` (more with tools), measured against the local model's rendered prompt.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agents import Agent, Handoff
from agents.agent_output import AgentOutputSchema, AgentOutputSchemaBase
from agents.handoffs import handoff
from agents.run_config import CallModelData, ModelInputData
from agents.tool import FunctionTool
from django.conf import settings

from agents_app.model_guards import unguarded

if TYPE_CHECKING:
    from agents_app.providers import ResolvedModel
    from agents_app.registry import AgentSpec

log = logging.getLogger(__name__)

# Per input item: role and separators (chat formats spend 3-5 tokens; the local model's chatml
# `<|im_start|>role\n…<|im_end|>\n` is 5, a `<tool_call>` block about 10).
ITEM_OVERHEAD = 10
# Per request: reply priming and system framing; with tools, the framing of the tool list (the
# local model's "# Tools" preamble and postamble are ~110 tokens).
REQUEST_OVERHEAD = 16
TOOLS_OVERHEAD = 128
PER_TOOL_OVERHEAD = 8
# What stands in for the turns that were left out.
DROPPED_NOTE = (
    "[Earlier turns of this conversation are not included here: they do not fit the model's input "
    "limit. The user still sees them. If the user refers to something you cannot see, say so.]"
)

# Pages of the stored history read while looking for what fits (newest first).
FIRST_PAGE = 64
MAX_PAGE = 1024

Item = Any  # an SDK input item: a dict, as stored and as sent


# --- counting tokens ---------------------------------------------------------------------
class TokenCounter(Protocol):
    name: str

    async def ready(self) -> None:
        """Load what counting needs, off the event loop (call before `count`)."""

    def count(self, text: str) -> int: ...


def _count(texts: list[str], encoding: str) -> list[int]:
    import toktok  # the vocabularies are compiled in: nothing to download

    return toktok.batch_count(texts, encoding, threads=1)


@functools.cache
def _load(encoding: str) -> None:
    _count([""], encoding)  # ~1 s and ~60 MB the first time in a process


@dataclass
class EncodingCounter:
    """An OpenAI model's tokenizer (`toktok`: the same token ids as tiktoken, offline)."""

    encoding: str

    @property
    def name(self) -> str:
        return self.encoding

    async def ready(self) -> None:
        await asyncio.to_thread(_load, self.encoding)

    def count(self, text: str) -> int:
        return _count([text], self.encoding)[0]


@dataclass
class EstimateCounter:
    """For models without a tokenizer here: `cl100k_base` tokens, plus one per digit (many
    open models split numbers into single digits), plus `margin`. Measured on English, code,
    JSON, German, Russian, Chinese, Japanese, Hindi, emoji, digits and random ASCII, it is at
    least the count of o200k_base, cl100k_base and Qwen2.5's tokenizer on every sample (English
    prose: 1.2x the real count, digits 1.6x); a tokenizer that needs more than 1.2x cl100k_base's tokens
    for some text (some older 32k-vocabulary models on non-Latin scripts) can exceed it."""

    margin: float = 1.2
    name: str = "estimate"

    async def ready(self) -> None:
        await asyncio.to_thread(_load, "cl100k_base")

    def count(self, text: str) -> int:
        base = EncodingCounter("cl100k_base").count(text)
        return math.ceil((base + sum(char.isdigit() for char in text)) * self.margin)


@dataclass
class ModelCounter:
    """A model that counts its own tokens (`count_tokens(text)`; the local model may load its
    weights to do so, hence `ready` runs it once on a worker thread)."""

    model: Any
    name: str
    _ready: bool = False

    async def ready(self) -> None:
        if not self._ready:
            await asyncio.to_thread(self.model.count_tokens, "")
            self._ready = True

    def count(self, text: str) -> int:
        return self.model.count_tokens(text)


# Prefixes of OpenAI model names, most specific first ("gpt-4o" before "gpt-4").
_OPENAI_ENCODINGS = (
    (("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss", "codex-"), "o200k_base"),
    (("gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada"), "cl100k_base"),
)


def encoding_for_model(name: str) -> str | None:
    """tiktoken's encoding for an OpenAI model name ("openai/gpt-4.1-mini" too), else None."""
    bare = name.lower().rsplit("/", 1)[-1]
    for prefixes, encoding in _OPENAI_ENCODINGS:
        if bare.startswith(prefixes):
            return encoding
    return None


def counter_for(model: Any, label: str) -> TokenCounter:
    """The most exact counter available offline for `model` (called `label` on messages)."""
    inner = unguarded(model)
    if callable(getattr(inner, "count_tokens", None)):
        return ModelCounter(inner, name=label)
    encoding = encoding_for_model(label)
    return EncodingCounter(encoding) if encoding else EstimateCounter()


# --- reading items -------------------------------------------------------------------------
def _get(item: Item, name: str, default: Any = None) -> Any:
    return item.get(name, default) if isinstance(item, dict) else getattr(item, name, default)


def _dumps(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump(exclude_unset=True)
    return json.dumps(value, ensure_ascii=False, default=str)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content if isinstance(content, list) else [content]:
        text = _get(part, "text")
        refusal = _get(part, "refusal")
        parts.append(text if isinstance(text, str) else refusal if isinstance(refusal, str) else _dumps(part))
    return "\n".join(parts)


def model_text(item: Item) -> str:
    """What the model reads of an item (the text of a message, a call's name and arguments, a
    tool's output); the whole item as JSON for kinds it may read differently."""
    kind = _get(item, "type") or ("message" if _get(item, "role") else None)
    if kind == "message":
        return _content_text(_get(item, "content"))
    if kind == "function_call":
        return f"{_get(item, 'name', '')} {_get(item, 'arguments', '')}"
    if kind == "function_call_output":
        output = _get(item, "output")
        return output if isinstance(output, str) else _content_text(output)
    return _dumps(item)


def is_user_message(item: Item) -> bool:
    return _get(item, "role") == "user" and _get(item, "type") in (None, "message")


def _call_id(item: Item) -> str | None:
    call_id = _get(item, "call_id")
    return call_id if isinstance(call_id, str) and call_id else None


def turn_starts(items: Sequence[Item]) -> list[int]:
    """Indexes where a turn starts: a user message with no call before it whose output comes
    after it. (An output whose call is not in `items` at all pins everything before it.)"""
    calls: dict[str, int] = {}
    blocked = [0] * (len(items) + 1)  # difference array of the boundaries each pair forbids
    for index, item in enumerate(items):
        call_id = _call_id(item)
        if call_id is None:
            continue
        if str(_get(item, "type", "")).endswith("_output"):
            start = calls.get(call_id, -1)
            blocked[start + 1] += 1  # a boundary in (call, output] would split them
            blocked[index + 1] -= 1
        else:
            calls.setdefault(call_id, index)
    starts, open_pairs = [], 0
    for index, item in enumerate(items):
        open_pairs += blocked[index]
        if is_user_message(item) and open_pairs == 0:
            starts.append(index)
    return starts


def split_turns(items: Sequence[Item]) -> list[list[Item]]:
    """`items` cut at every turn start; anything before the first is a turn of its own."""
    cuts = [0, *(start for start in turn_starts(items) if start > 0), len(items)]
    return [list(items[a:b]) for a, b in itertools.pairwise(cuts) if b > a]


# --- the window ----------------------------------------------------------------------------
@dataclass
class InputWindow:
    """One run's bound on model input (`budget` tokens; None = unbounded)."""

    budget: int | None
    counter: TokenCounter
    # The history read stopped before the oldest stored item (the filter's note says so).
    history_cut: bool = False
    _schemas: dict[int, int] = field(default_factory=dict)

    # counting
    def item_tokens(self, item: Item) -> int:
        return self.counter.count(model_text(item)) + ITEM_OVERHEAD

    def turn_tokens(self, turn: Sequence[Item]) -> int:
        return sum(self.item_tokens(item) for item in turn)

    def fixed_tokens(self, agent: Agent[Any] | None, instructions: str | None) -> int:
        """What a request costs before any input item: instructions and schemas."""
        tokens = REQUEST_OVERHEAD + (self.counter.count(instructions) if instructions else 0)
        if agent is not None:
            if id(agent) not in self._schemas:
                self._schemas[id(agent)] = self._schema_tokens(agent)
            tokens += self._schemas[id(agent)]
        return tokens

    def _schema_tokens(self, agent: Agent[Any]) -> int:
        schemas: list[Any] = []
        for tool in agent.tools:
            if isinstance(tool, FunctionTool):
                schemas.append({"name": tool.name, "description": tool.description, "parameters": tool.params_json_schema})
            else:  # a hosted tool: the provider describes it; its name is what we know
                schemas.append({"type": getattr(tool, "name", type(tool).__name__)})
        for target in agent.handoffs:
            described = target if isinstance(target, Handoff) else handoff(target)
            schemas.append(
                {
                    "name": described.tool_name,
                    "description": described.tool_description,
                    "parameters": described.input_json_schema,
                }
            )
        tokens = sum(self.counter.count(_dumps(schema)) + PER_TOOL_OVERHEAD for schema in schemas)
        if schemas:
            tokens += TOOLS_OVERHEAD
        output = agent.output_type
        if output is not None and output is not str:
            try:
                schema = output if isinstance(output, AgentOutputSchemaBase) else AgentOutputSchema(output)
                if not schema.is_plain_text():
                    tokens += self.counter.count(_dumps(schema.json_schema())) + TOOLS_OVERHEAD
            except Exception:  # a schema the SDK itself will refuse with a clear error
                log.debug("No JSON schema for %r", output, exc_info=True)
        return tokens

    def note(self) -> dict[str, str]:
        return {"role": "system", "content": DROPPED_NOTE}

    def input_tokens(self, agent: Agent[Any] | None, instructions: str | None, items: Sequence[Item]) -> int:
        """Tokens of one request as this window counts them."""
        return self.fixed_tokens(agent, instructions) + self.turn_tokens(items)

    # the call_model_input_filter
    async def __call__(self, data: CallModelData[Any]) -> ModelInputData:
        model_data = data.model_data
        if self.budget is None or not model_data.input:
            return model_data
        await self.counter.ready()
        kept, dropped = self.fit(model_data.input, agent=data.agent, instructions=model_data.instructions)
        if not dropped and not self.history_cut:
            return model_data
        log.debug(
            "Model input for %s: %s turns left out (%s), %s tokens of %s (%s)",
            data.agent.name, dropped, "and older history" if self.history_cut else "all read",
            self.input_tokens(data.agent, model_data.instructions, kept), self.budget, self.counter.name,
        )  # fmt: skip
        return ModelInputData(input=[self.note(), *kept], instructions=model_data.instructions)

    def fit(
        self, items: Sequence[Item], *, agent: Agent[Any] | None = None, instructions: str | None = None
    ) -> tuple[list[Item], int]:
        """The newest whole turns of `items` that fit the budget (the latest one always), and
        how many turns were left out."""
        turns = split_turns(items)
        if self.budget is None or not turns:
            return list(items), 0
        room = self.budget - self.fixed_tokens(agent, instructions) - self.item_tokens(self.note())
        kept = [turns[-1]]
        used = self.turn_tokens(turns[-1])
        if used > room:
            log.warning(
                "The latest turn alone (%s tokens) and the instructions exceed the input budget of %s tokens; sent anyway.",
                used, self.budget,
            )  # fmt: skip
        for turn in reversed(turns[:-1]):
            cost = self.turn_tokens(turn)
            if used + cost > room:
                break
            kept.append(turn)
            used += cost
        return [item for turn in reversed(kept) for item in turn], len(turns) - len(kept)

    # reading the stored history
    async def read_history(self, fetch: Callable[[int | None, int], Awaitable[list[tuple[int, str]]]]) -> list[Item]:
        """The stored items the model could still receive, oldest first, read newest first with
        `fetch(before_id, size)` (rows `(id, payload)`, newest first) until they exceed the
        budget; then the partial oldest turn is dropped (it could not have been sent whole)."""
        if self.budget is None:
            raise ValueError("An unbounded window reads the whole history.")
        await self.counter.ready()
        newest_first: list[Item] = []
        tokens, before, size = 0, None, FIRST_PAGE
        while True:
            rows = await fetch(before, size)
            for _, payload in rows:
                item = json.loads(payload)
                newest_first.append(item)
                tokens += self.item_tokens(item)
                if tokens > self.budget:
                    self.history_cut = True
                    items = newest_first[::-1]
                    later = [start for start in turn_starts(items) if start > 0]
                    return items[later[0] :] if later else []
            if len(rows) < size:
                return newest_first[::-1]
            before, size = rows[-1][0], min(size * 2, MAX_PAGE)


# --- one run's window ----------------------------------------------------------------------
_history_window: contextvars.ContextVar[InputWindow | None] = contextvars.ContextVar(
    "agents_history_window", default=None
)


def window_for(spec: AgentSpec, resolved: ResolvedModel) -> InputWindow:
    """The input window of a run of `spec` on `resolved`."""
    configured = spec.max_input_tokens if spec.max_input_tokens is not None else settings.AGENTS_MAX_INPUT_TOKENS
    limits = [configured] if configured else []
    own = getattr(unguarded(resolved.model), "input_token_budget", None)
    if callable(own):
        limits.append(own(resolved.settings.max_tokens))
    return InputWindow(budget=min(limits) if limits else None, counter=counter_for(resolved.model, resolved.label))


def use_for_history(window: InputWindow) -> None:
    """Make `DjangoSession.get_items()` read through `window` for the rest of the current
    context. The run service calls it for each run, which executes in a context of its own
    (`chat.engine.runs._launch`), and the SDK's tasks inherit it; like `agents_app.progress`."""
    _history_window.set(window if window.budget is not None else None)


def history_window() -> InputWindow | None:
    return _history_window.get()
