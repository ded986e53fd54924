"""`LocalModel`: the SDK `Model` that runs a local GGUF through llama.cpp.

- Input items become a Qwen2.5 chatml prompt (`chatml`); the tools are described in the
  system prompt, and the model's text is turned into real function calls (`toolcalls`).
- What the model may write is constrained by a llama.cpp grammar (`grammar`): with tools
  offered, a valid call of an offered tool (arguments matching its schema) or a final answer
  (the agent's structured output, or text with no tool-call markup); `tool_choice` is
  honoured (`required` or a tool's name: calls only; `none`: no call). Malformed calls, unknown
  tools, markup-only and empty replies cannot be generated.
- Tools are withheld on the turn right after a tool result (and the grammar allows only the
  answer there): the 1.5B otherwise tends to call the same tool again instead of answering.
  A repeat of an answered call is dropped (and a reply made only of repeats is generated
  again, with the tool exchange as plain text).
- Inference runs on one long-lived worker thread per process, never on the event loop;
  requests queue first come first served and report `queued` (with their position) and
  then `generating` through `agents_app.progress`. Cancelling the awaiting task (or closing
  the stream) stops generation at the next token and frees the model for the next request.
- The stream is Responses-shaped: created, in_progress, a message item whose text arrives
  as `response.output_text.delta` events (the first token at once, then chunks of the
  tokens generated in each `emit_interval`), function-call items, and always a final
  `response.completed` carrying the usage.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import logging
import queue
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from agents import FunctionTool, Handoff
from agents.agent_output import AgentOutputSchemaBase
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelTracing
from agents.tracing import generation_span
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_prompt_param import ResponsePromptParam
from openai.types.responses.response_usage import (
    InputTokensDetails,
    OutputTokensDetails,
)

from agents_app import progress
from agents_app.local import chatml
from agents_app.local.backend import GenerationStats
from agents_app.local.grammar import MAX_CALLS as MAX_PARALLEL_CALLS
from agents_app.local.grammar import OutputConstraint, ToolGrammar
from agents_app.local.toolcalls import (
    ParsedCall,
    StopFilter,
    ToolCallStream,
    declared_parameters,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 1024
EMIT_INTERVAL = 0.1  # seconds between text deltas at most (~3 tokens at 30 tokens/s)
# Said in place of the tool list on the turn right after a tool result.
WITHHELD_NOTE = (
    "\n\nThe results of the functions you called are in <tool_response></tool_response> tags. "
    "Answer the user's request using them."
)
ANSWER_ONLY_NOTE = "\n\nAnswer the user in plain words using the tool results you were given; do not call tools."
# Text that ends a turn. The special tokens end generation by themselves; a model that
# starts writing the tool's answer itself must be cut off.
STOP_SEQUENCES = ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<tool_response>")


class Backend(Protocol):
    """What `LocalModel` needs from an inference engine (`LlamaBackend`, or a test fake)."""

    n_ctx: int

    def load(self) -> None: ...

    def tokenize(self, text: str) -> list[int]: ...

    def generate(
        self,
        tokens: list[int],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float | None,
        constraint: OutputConstraint | None,
        cancel: threading.Event,
    ) -> Iterator[str]:
        """Yield text pieces; may return a `GenerationStats` (a generator's return value)."""
        ...


@dataclass
class GenerationRequest:
    messages: list[chatml.Message]
    prompt_tools: list[dict[str, Any]]  # signatures written into the prompt; [] = withheld
    parser_tools: dict[str, frozenset[str] | None]  # the calls recognised in the output
    answered: set[tuple[str, str]]  # (name, arguments) of calls that already have a result
    withheld: bool
    max_tokens: int
    temperature: float
    top_p: float | None
    constraint: OutputConstraint | None  # what the output may be (a grammar); None = anything
    stops: tuple[str, ...] = STOP_SEQUENCES
    trimmed_messages: int = 0  # history messages dropped to fit the context

    def answer_only(self) -> GenerationRequest:
        """The same request with no tools, calls and results as plain text, and a call tag
        ending generation: for a model that only repeated an answered call."""
        messages = chatml.flatten_tool_exchanges(self.messages)
        system = messages[0].content.replace(WITHHELD_NOTE, "") + ANSWER_ONLY_NOTE
        messages[0] = chatml.Message(role="system", content=system)
        constraint = None
        if self.constraint is not None:
            constraint = OutputConstraint(text=True, output_schema=self.constraint.output_schema)
        return replace(
            self,
            messages=messages,
            prompt_tools=[],
            parser_tools={},
            withheld=True,
            constraint=constraint,
            stops=(*self.stops, "<tool_call>"),
        )


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# --- the queue -----------------------------------------------------------------------


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    granted: bool = False

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # its loop is gone: nobody is waiting any more
            self.loop.call_soon_threadsafe(self.event.set)


class GenerationSlot:
    """One generation at a time, first come first served, usable from any event loop and
    released from the worker thread once generation has really stopped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = False
        self._waiting: list[_Waiter] = []

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    async def acquire(self) -> None:
        with self._lock:
            if not self._busy and not self._waiting:
                self._busy = True
                return
            waiter = _Waiter(asyncio.get_running_loop())
            self._waiting.append(waiter)
        reported = None
        try:
            while True:
                with self._lock:
                    if waiter.granted:
                        return
                    position = self._waiting.index(waiter) + 1
                if position != reported:
                    reported = position
                    await progress.report("queued", position=position)
                    continue  # the queue may have moved while reporting
                await waiter.event.wait()
                waiter.event.clear()
        except BaseException:
            with self._lock:
                granted = waiter.granted
                if not granted:
                    self._waiting.remove(waiter)
                others = list(self._waiting)
            if granted:
                self.release()
            else:
                for other in others:
                    other.wake()
            raise

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                nxt = self._waiting.pop(0)
                nxt.granted = True  # the slot passes straight to it: busy stays True
                to_wake = [nxt, *self._waiting]
            else:
                self._busy = False
                to_wake = []
        for waiter in to_wake:
            waiter.wake()


# --- Responses events ------------------------------------------------------------------


class ResponseBuilder:
    """Builds the Responses stream events of one model call, numbering them in order."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.response_id = new_id("resp")
        self.created_at = time.time()
        self.sequence = 0
        self.message_id: str | None = None
        self.text = ""
        self.output: list[Any] = []

    def _seq(self) -> int:
        self.sequence += 1
        return self.sequence - 1

    def response(self, *, status: str, usage: ResponseUsage | None = None) -> Response:
        return Response(
            id=self.response_id,
            created_at=self.created_at,
            model=self.model,
            object="response",
            output=list(self.output) if status == "completed" else [],
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=True,
            status=status,  # type: ignore[arg-type]
            usage=usage,
        )

    def start(self) -> list[TResponseStreamEvent]:
        return [
            ResponseCreatedEvent(
                type="response.created", response=self.response(status="in_progress"), sequence_number=self._seq()
            ),
            ResponseInProgressEvent(
                type="response.in_progress", response=self.response(status="in_progress"), sequence_number=self._seq()
            ),
        ]

    def text_delta(self, delta: str) -> list[TResponseStreamEvent]:
        if not delta:
            return []
        events: list[TResponseStreamEvent] = []
        if self.message_id is None:
            self.message_id = new_id("msg")
            events.append(
                ResponseOutputItemAddedEvent(
                    type="response.output_item.added",
                    item=ResponseOutputMessage(
                        id=self.message_id, type="message", role="assistant", status="in_progress", content=[]
                    ),
                    output_index=0,
                    sequence_number=self._seq(),
                )
            )
            events.append(
                ResponseContentPartAddedEvent(
                    type="response.content_part.added",
                    item_id=self.message_id,
                    output_index=0,
                    content_index=0,
                    part=ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[]),
                    sequence_number=self._seq(),
                )
            )
        self.text += delta
        events.append(
            ResponseTextDeltaEvent(
                type="response.output_text.delta",
                item_id=self.message_id,
                output_index=0,
                content_index=0,
                delta=delta,
                logprobs=[],
                sequence_number=self._seq(),
            )
        )
        return events

    def finish(self, calls: list[ParsedCall], usage: ResponseUsage) -> list[TResponseStreamEvent]:
        events: list[TResponseStreamEvent] = []
        if self.message_id is not None:
            part = ResponseOutputText(type="output_text", text=self.text, annotations=[], logprobs=[])
            message = ResponseOutputMessage(
                id=self.message_id, type="message", role="assistant", status="completed", content=[part]
            )
            events += [
                ResponseTextDoneEvent(
                    type="response.output_text.done",
                    item_id=self.message_id,
                    output_index=0,
                    content_index=0,
                    text=self.text,
                    logprobs=[],
                    sequence_number=self._seq(),
                ),
                ResponseContentPartDoneEvent(
                    type="response.content_part.done",
                    item_id=self.message_id,
                    output_index=0,
                    content_index=0,
                    part=part,
                    sequence_number=self._seq(),
                ),
                ResponseOutputItemDoneEvent(
                    type="response.output_item.done", item=message, output_index=0, sequence_number=self._seq()
                ),
            ]
            self.output.append(message)
        for call in calls:
            index = len(self.output)
            call_id = new_id("call")  # unique across the whole run lineage
            item = ResponseFunctionToolCall(
                id=new_id("fc"),
                call_id=call_id,
                type="function_call",
                name=call.name,
                arguments=call.arguments_json,
                status="completed",
            )
            events += [
                ResponseOutputItemAddedEvent(
                    type="response.output_item.added",
                    item=item.model_copy(update={"arguments": "", "status": "in_progress"}),
                    output_index=index,
                    sequence_number=self._seq(),
                ),
                ResponseFunctionCallArgumentsDeltaEvent(
                    type="response.function_call_arguments.delta",
                    item_id=item.id or call_id,
                    output_index=index,
                    delta=item.arguments,
                    sequence_number=self._seq(),
                ),
                ResponseFunctionCallArgumentsDoneEvent.model_validate(
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": item.id,
                        "output_index": index,
                        "name": item.name,
                        "arguments": item.arguments,
                        "sequence_number": self._seq(),
                    }
                ),
                ResponseOutputItemDoneEvent(
                    type="response.output_item.done", item=item, output_index=index, sequence_number=self._seq()
                ),
            ]
            self.output.append(item)
        events.append(
            ResponseCompletedEvent(
                type="response.completed",
                response=self.response(status="completed", usage=usage),
                sequence_number=self._seq(),
            )
        )
        return events


def response_usage(stats: GenerationStats) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=stats.prompt_tokens,
        output_tokens=stats.completion_tokens,
        total_tokens=stats.prompt_tokens + stats.completion_tokens,
        input_tokens_details=InputTokensDetails.model_validate(
            {"cached_tokens": stats.cached_tokens, "cache_write_tokens": 0}
        ),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
    )


# --- the model -------------------------------------------------------------------------


class LocalModel(Model):
    def __init__(
        self,
        backend: Backend,
        *,
        label: str,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        emit_interval: float = EMIT_INTERVAL,
    ) -> None:
        self.backend = backend
        self.label = label
        self.default_max_tokens = default_max_tokens
        self.emit_interval = emit_interval
        self.slot = GenerationSlot()
        # One long-lived worker thread runs every generation (and the load): llama.cpp's
        # OpenMP threads then form one team for the whole process. A daemon thread, so an
        # unfinished generation never holds up the process's exit (`shutdown` stops it).
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._current_cancel: threading.Event | None = None
        self._pending = 0
        self._idle = threading.Event()
        self._idle.set()
        _instances.add(self)
        self._loaded = False

    # SDK entry points

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: ResponsePromptParam | None = None,
    ) -> ModelResponse:
        final: Response | None = None
        async for event in self.stream_response(
            system_instructions,
            input,
            model_settings,
            tools,
            output_schema,
            handoffs,
            tracing,
            previous_response_id=previous_response_id,
            conversation_id=conversation_id,
            prompt=prompt,
        ):
            if isinstance(event, ResponseCompletedEvent):
                final = event.response
        assert final is not None and final.usage is not None
        usage = Usage(
            requests=1,
            input_tokens=final.usage.input_tokens,
            output_tokens=final.usage.output_tokens,
            total_tokens=final.usage.total_tokens,
            input_tokens_details=final.usage.input_tokens_details,
            output_tokens_details=final.usage.output_tokens_details,
        )
        return ModelResponse(output=final.output, usage=usage, response_id=final.id)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: ResponsePromptParam | None = None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        request = self.prepare(system_instructions, input, model_settings, tools, output_schema, handoffs)
        builder = ResponseBuilder(self.label)
        stats = GenerationStats(prompt_tokens=0)
        with generation_span(
            model=self.label,
            model_config={
                "temperature": request.temperature,
                "max_tokens": request.max_tokens,
                "tools_withheld": request.withheld,
                "constraint": request.constraint.describe() if request.constraint else None,
            },
            disabled=tracing.is_disabled(),
        ) as span:
            if tracing.include_data():
                span.span_data.input = [{"role": m.role, "content": m.content} for m in request.messages]
            for event in builder.start():
                yield event
            calls: list[ParsedCall] = []
            attempt: GenerationRequest | None = request
            while attempt is not None:
                parser = ToolCallStream(attempt.parser_tools)
                enough = threading.Event()  # set to end generation early; its stats still arrive
                # aclosing: when the Runner stops reading (Stop, error), the worker is told at once.
                async with contextlib.aclosing(self._generate(attempt, enough)) as generated:
                    async for kind, payload in generated:
                        if kind == "stats":
                            stats = stats.plus(payload)
                        elif not enough.is_set():
                            for event in builder.text_delta(parser.feed(payload)):
                                yield event
                            if self._repeating(parser.calls, attempt):
                                enough.set()  # a small model in a loop: more of it is useless
                for event in builder.text_delta(parser.finish()):
                    yield event
                calls = self._keep_calls(parser.calls, attempt)
                logger.debug(
                    "Local model output (tools %s): %r", "withheld" if attempt.withheld else "offered", parser.buffer
                )
                # Only repeats of answered calls and no text: ask once more, calls impossible.
                dropped_everything = bool(parser.calls) and not calls and not builder.text
                attempt = attempt.answer_only() if dropped_everything and attempt.parser_tools else None
            usage = response_usage(stats)
            span.span_data.usage = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
            if tracing.include_data():
                span.span_data.output = [
                    {
                        "role": "assistant",
                        "content": builder.text,
                        "tool_calls": [{"name": c.name, "arguments": c.arguments_json} for c in calls],
                    }
                ]
            for event in builder.finish(calls, usage):
                yield event

    # building the request

    def prepare(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
    ) -> GenerationRequest:
        messages = chatml.items_to_messages(system_instructions, input)
        messages = chatml.drop_earlier_tool_exchanges(chatml.drop_handoff_exchanges(messages))
        signatures: list[dict[str, Any]] = []
        parser_tools: dict[str, frozenset[str] | None] = {}
        callable_tools: list[ToolGrammar] = []
        for tool in tools:
            if isinstance(tool, FunctionTool):
                signatures.append(chatml.tool_signature(tool.name, tool.description, tool.params_json_schema))
                parser_tools[tool.name] = declared_parameters(tool.params_json_schema)
                callable_tools.append(ToolGrammar(tool.name, tool.params_json_schema))
            else:
                logger.debug("The local model cannot use the hosted tool %s; skipped.", type(tool).__name__)
        for handoff in handoffs:
            signatures.append(
                chatml.tool_signature(handoff.tool_name, handoff.tool_description, handoff.input_json_schema)
            )
            parser_tools[handoff.tool_name] = declared_parameters(handoff.input_json_schema)
            callable_tools.append(ToolGrammar(handoff.tool_name, handoff.input_json_schema))

        # tool_choice: "required" -> a call of one of the tools; a tool's name -> that one;
        # "none" -> no call; "auto" (or unset) -> a call or an answer.
        choice = model_settings.tool_choice if isinstance(model_settings.tool_choice, str) else None
        forced = choice == "required" or (choice not in (None, "auto", "none", "required"))
        if choice == "none":
            parser_tools = {}
        elif forced and choice != "required":
            named = [tool for tool in callable_tools if tool.name == choice]
            if named:
                callable_tools = named
                parser_tools = {choice: parser_tools[choice]}
            else:
                logger.warning("tool_choice names %r, which this request does not offer; any tool may be called.", choice)
        # Right after a tool result the tools are not listed (the 1.5B would call the same
        # tool again), and the grammar allows only the answer; a tool choice never holds there
        # (the SDK resets it after a call).
        after_result = chatml.last_turn_is_tool_result(messages)
        withheld = bool(signatures) and (not parser_tools or after_result)
        if withheld and after_result:
            messages[0].content += WITHHELD_NOTE
            forced = False
        json_schema = None
        if output_schema is not None and not output_schema.is_plain_text():
            json_schema = output_schema.json_schema()
        offered = tuple(callable_tools) if parser_tools and not withheld else ()
        forced = forced and bool(offered)
        if json_schema is not None and not forced:  # a forced call is not the answer: no need to describe it
            messages[0].content += (
                "\n\nWhen you give your final answer, reply with only a JSON object that matches this JSON schema:\n"
                + json.dumps(json_schema, ensure_ascii=False)
            )
        # One call per reply unless the agent allows parallel calls: a small model otherwise
        # writes the same call two or three times over.
        max_calls = MAX_PARALLEL_CALLS if model_settings.parallel_tool_calls else 1
        if forced:
            constraint = OutputConstraint(calls=offered, text=False, max_calls=max_calls)
        else:
            constraint = OutputConstraint(
                calls=offered, text=json_schema is None, output_schema=json_schema, max_calls=max_calls
            )
        temperature = model_settings.temperature if model_settings.temperature is not None else 0.0
        return GenerationRequest(
            messages=messages,
            prompt_tools=[] if withheld else signatures,
            parser_tools=parser_tools,
            answered=chatml.answered_calls(messages),
            withheld=withheld,
            max_tokens=model_settings.max_tokens or self.default_max_tokens,
            temperature=max(0.0, float(temperature)),
            top_p=model_settings.top_p,
            constraint=constraint,
        )

    @staticmethod
    def _keep_calls(calls: list[ParsedCall], request: GenerationRequest, *, log: bool = True) -> list[ParsedCall]:
        """Drop repeats: of calls that already have their result, and within one reply."""
        kept, seen = [], set(request.answered)
        for call in calls:
            key = (call.name, chatml.canonical_arguments(call.arguments))
            if key in seen:
                if log:
                    logger.info("The local model repeated the call %s; dropped.", call.name)
                continue
            seen.add(key)
            kept.append(call)
        return kept

    @classmethod
    def _repeating(cls, calls: list[ParsedCall], request: GenerationRequest) -> bool:
        return len(cls._keep_calls(calls, request, log=False)) < len(calls)

    # running it

    async def _generate(self, request: GenerationRequest, cancel: threading.Event) -> AsyncIterator[tuple[str, Any]]:
        """("text", piece)... then ("stats", GenerationStats), generated on the worker thread.
        Setting `cancel` ends generation at the next token; so does leaving early."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def emit(kind: str, payload: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the consumer is gone
                loop.call_soon_threadsafe(events.put_nowait, (kind, payload))

        await self.slot.acquire()
        submitted = False
        try:
            await progress.report("generating", loading=not self._loaded)
            self._current_cancel = cancel
            self._submit(lambda: self._work(request, cancel, emit))
            submitted = True
            while True:
                kind, payload = await events.get()
                if kind == "error":
                    raise payload
                yield kind, payload
                if kind == "stats":
                    return
        finally:
            cancel.set()  # cancelled, closed early or failed: stop the worker at its next step
            if not submitted:
                self.slot.release()

    def _work(self, request: GenerationRequest, cancel: threading.Event, emit: Callable[[str, Any], None]) -> None:
        """On the worker thread: fit the prompt, generate, report; always free the slot."""
        try:
            self._ensure_loaded()
            tokens, max_tokens = self.fit_prompt(request)
            stopper = StopFilter(request.stops)
            stats: GenerationStats | None = None
            pieces = 0
            # Tokens are sent to the event loop at most every `emit_interval` (the first at
            # once): on a 2-core machine every wake-up of the loop competes with llama.cpp's
            # threads, and ~10 updates a second read as smoothly as one per token.
            pending: list[str] = []
            last_emit = 0.0
            generator = self.backend.generate(
                tokens,
                max_tokens=max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                constraint=request.constraint,
                cancel=cancel,
            )
            try:
                while True:
                    try:
                        piece = next(generator)  # the backend itself checks `cancel` between tokens
                    except StopIteration as done:
                        stats = done.value
                        break
                    if cancel.is_set():
                        break
                    pieces += 1
                    pending.append(stopper.feed(piece))
                    now = time.monotonic()
                    if now - last_emit >= self.emit_interval and any(pending):
                        emit("text", "".join(pending))
                        pending.clear()
                        last_emit = now
                    if stopper.stopped:
                        break
            finally:
                if isinstance(generator, Generator):
                    generator.close()
            pending.append(stopper.finish())
            if any(pending):
                emit("text", "".join(pending))
            if stats is None:
                stats = GenerationStats(
                    completion_tokens=pieces, finish_reason="cancelled" if cancel.is_set() else "stop"
                )
            stats.prompt_tokens = len(tokens)
            emit("stats", stats)
            remember = getattr(self.backend, "remember", None)
            if remember is not None:
                try:
                    remember()  # after the reply went out: it only speeds up later prompts
                except Exception:
                    logger.exception("Could not snapshot the local model's KV cache")
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
            emit("error", error)
        finally:
            self.slot.release()

    def fit_prompt(self, request: GenerationRequest) -> tuple[list[int], int]:
        """Tokens of the prompt, dropping the oldest exchanges (then clipping the longest
        message) until the prompt leaves room for the answer; and the answer's token budget.
        In the app's runs the input already fits: the run's context window
        (`agents_app.context_window`) keeps whole turns within `input_token_budget()`, counted
        with `count_tokens`; this is the exact last check of the rendered prompt."""
        n_ctx = self.backend.n_ctx
        reserve = answer_reserve(n_ctx, request.max_tokens)
        messages = request.messages
        while True:
            tokens = self.backend.tokenize(chatml.render_prompt(messages, request.prompt_tools))
            if len(tokens) <= n_ctx - reserve:
                break
            shorter = chatml.drop_oldest_turns(messages)
            if shorter is None:
                shorter = _clip_longest(messages, excess_tokens=len(tokens) - (n_ctx - reserve))
                if shorter is None:
                    raise ValueError(f"The prompt ({len(tokens)} tokens) does not fit the context of {n_ctx} tokens.")
            request.trimmed_messages += len(messages) - len(shorter)
            messages = shorter
        return tokens, max(1, min(request.max_tokens, n_ctx - len(tokens) - 1))

    # what the run's context window asks (agents_app.context_window)

    def input_token_budget(self, max_tokens: int | None = None) -> int:
        """The most prompt tokens `fit_prompt` keeps whole for an answer of `max_tokens`."""
        n_ctx = self.backend.n_ctx
        return n_ctx - answer_reserve(n_ctx, max_tokens or self.default_max_tokens)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's own vocabulary. Loads the model first when needed
        (on its worker thread, waiting for it): call it off the event loop until then."""
        if not self._loaded:
            self.load()
        return len(self.backend.tokenize(text))

    def load(self, timeout: float | None = None) -> None:
        """Load the weights now, on the worker thread (e.g. at startup or in a benchmark),
        instead of during the first request."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def job() -> None:
            try:
                self._ensure_loaded()
                done.set_result(None)
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                done.set_exception(error)

        self._submit(job)
        done.result(timeout)

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            started = time.monotonic()
            self.backend.load()
            self._loaded = True
            logger.info("Loaded %s in %.1fs", self.label, time.monotonic() - started)

    def _submit(self, job: Callable[[], None]) -> None:
        with self._worker_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name="local-model", daemon=True)
                self._worker.start()
            self._pending += 1
            self._idle.clear()
        self._jobs.put(job)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            finally:
                with self._worker_lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()

    async def close(self) -> None:
        """Stop the generation in progress, if any; the model stays usable."""
        if self._current_cancel is not None:
            self._current_cancel.set()

    def shutdown(self, timeout: float = 5.0) -> None:
        """At process exit: stop generating, wait for the worker, free the weights."""
        if self._current_cancel is not None:
            self._current_cancel.set()
        if self._idle.wait(timeout):
            self._jobs.put(None)
            close = getattr(self.backend, "close", None)
            if close is not None:
                close()


_instances: weakref.WeakSet[LocalModel] = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    for model in list(_instances):
        model.shutdown()


def answer_reserve(n_ctx: int, max_tokens: int) -> int:
    """Tokens of the context kept free for the answer."""
    return min(max_tokens, max(256, n_ctx // 4))


def _clip_longest(messages: list[chatml.Message], *, excess_tokens: int) -> list[chatml.Message] | None:
    """Shorten the longest non-system message in its middle by about `excess_tokens`."""
    candidates = [i for i, m in enumerate(messages) if i > 0 and len(m.content) > 200]
    if not candidates:
        return None
    index = max(candidates, key=lambda i: len(messages[i].content))
    content = messages[index].content
    cut = min(len(content) - 100, max(excess_tokens * 4, 200))  # ~4 characters per token
    keep = (len(content) - cut) // 2
    clipped = content[:keep] + "\n[… clipped to fit the context …]\n" + content[len(content) - keep :]
    copy = list(messages)
    copy[index] = chatml.Message(
        role=messages[index].role,
        content=clipped,
        tool_calls=messages[index].tool_calls,
        call_id=messages[index].call_id,
    )
    return copy
