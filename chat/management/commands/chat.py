"""Chat with an agent in the terminal, as a given user, through the same run service and the
same wire events as the web socket.

    python manage.py chat --user demo@example.com --agent assistant
    python manage.py chat --user demo@example.com --conversation 3f1c…   # continue one

The command follows the conversation with `chat.engine.RunFollower` (like the SSE transport:
replayed, deduplicated and in order), starts each run with `chat.engine.start` and renders
the events: text streams as it comes, tool calls, tool results and handoffs get their own
lines, usage ends the reply.
The reply is stored like any other, so the conversation continues on the web page.

Ctrl+C during a reply stops the run (`chat.engine.stop`); a second Ctrl+C, Ctrl+C at the
prompt, or end of input (Ctrl+D) exits. Lines are read from stdin, so it can be scripted:
`printf 'What time is it?\\n' | python manage.py chat --user …`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import threading
import uuid
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError

from accounts.selectors import user_for_command
from agents_app import providers
from agents_app.registry import UnknownAgent, get_spec
from chat import engine, selectors, services
from chat.models import Conversation
from config.errors import AppError
from usage.formatting import format_cost

TOOL_OUTPUT_CHARS = 500


class Command(BaseCommand):
    help = "Chat with an agent in the terminal as a given user (same run service and events as the web socket)."
    # call_command(..., stdin=StringIO(...)) in tests.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="Email or username of the user to chat as.")
        parser.add_argument("--agent", help="Agent key for a new conversation (default: assistant).")
        parser.add_argument("--conversation", help="Continue this conversation (its id, as in the page's URL).")
        parser.add_argument("--model", help="Run on this model from now on (a key of GET /api/models).")

    def handle(self, *args, user, agent, conversation, model=None, **options):
        owner = user_for_command(user)
        try:
            if model is not None:
                providers.pickable(model)
            providers.require_provider(model or "")
            chat = self._conversation(owner, agent_key=agent, public_id=conversation)
        except AppError as exc:
            raise CommandError(exc.message) from None
        stdin = options.get("stdin") or sys.stdin
        try:
            title = get_spec(chat.agent_key).title
        except UnknownAgent:
            title = chat.agent_key
        self.stdout.write(
            f"Chatting with {title} as {owner.email or owner} — conversation {chat.public_id}\n"
            "Ctrl+C stops a reply; Ctrl+C again (or at the prompt) or Ctrl+D exits."
        )
        asyncio.run(TerminalChat(out=self.stdout, stdin=stdin, user=owner, conversation=chat, model=model).run())


    def _conversation(self, owner, *, agent_key: str | None, public_id: str | None) -> Conversation:
        if public_id:
            try:
                key = uuid.UUID(public_id)
            except ValueError:
                raise CommandError(f"{public_id!r} is not a conversation id.") from None
            # Only the user's own conversations, like everywhere else.
            try:
                found = selectors.conversation_for(owner, key)
            except AppError:
                raise CommandError(f"{owner} has no conversation {public_id}.") from None
            if agent_key and agent_key != found.agent_key:
                raise CommandError(f"Conversation {public_id} is with {found.agent_key!r}, not {agent_key!r}.")
            return found
        return services.conversation_create(owner=owner, agent_key=agent_key or "assistant")


class TerminalChat:
    def __init__(self, *, out, stdin: TextIO, user, conversation: Conversation, model: str | None = None) -> None:
        self.out = out
        self.model = model  # sent with the next message; the conversation keeps it from then on
        self.stdin = stdin
        self.user = user
        self.conversation = conversation
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.replying: str | None = None  # the run we are showing
        self.stop_sent = False
        self.exiting = False
        self.follow_task: asyncio.Task | None = None
        self.view = EventView(self.write)
        isatty = getattr(stdin, "isatty", None)
        self.interactive = bool(isatty and isatty())

    # --- output ------------------------------------------------------------------
    def write(self, text: str) -> None:
        self.out.write(text, ending="")
        self.out.flush()

    # --- main loop ---------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._start_reader(loop)
        self.follower = engine.RunFollower(self.conversation.group_name)
        await self.follower.subscribe()
        handles_signals = threading.current_thread() is threading.main_thread()
        if handles_signals:
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
        try:
            while not self.exiting:
                self.write("\nyou> ")
                line = await self.lines.get()
                if line is None:
                    self.write("\n")
                    break
                content = line.rstrip("\r\n")
                if not self.interactive:
                    self.write(content + "\n")  # a terminal echoes what was typed; a pipe does not
                if content.strip():
                    await self._send(content)
        finally:
            if handles_signals:
                loop.remove_signal_handler(signal.SIGINT)
            await self._settle()
            await self.follower.close()

    def _start_reader(self, loop: asyncio.AbstractEventLoop) -> None:
        # A daemon thread: a blocking readline must never keep the process from exiting.
        def read() -> None:
            try:
                for line in iter(self.stdin.readline, ""):
                    loop.call_soon_threadsafe(self.lines.put_nowait, line)
            finally:
                loop.call_soon_threadsafe(self.lines.put_nowait, None)

        threading.Thread(target=read, name="terminal-chat-stdin", daemon=True).start()

    async def _send(self, content: str) -> None:
        try:
            started = await engine.start(
                user=self.user, conversation=self.conversation, content=content, model=self.model,
                request_id=f"cli-{uuid.uuid4().hex[:12]}",
            )
        except AppError as exc:
            self.write(f"! {exc.message}\n")
            return
        self.model = None
        self.replying, self.stop_sent = str(started.run.public_id), False
        self.view.begin()
        self.follow_task = asyncio.create_task(self._follow(self.replying))
        try:
            await self.follow_task
        except asyncio.CancelledError:
            if not self.exiting:
                raise
        finally:
            self.follow_task = None
            if not self.exiting:
                self.replying = None  # when exiting, _settle still needs it

    async def _follow(self, run_id: str) -> None:
        """Render this run's events, in order, until it ends or pauses."""
        async for event in self.follower.events(run_id):
            if event is not None:
                self.view.show(event)

    def _interrupt(self) -> None:
        if self.replying and not self.stop_sent:
            self.stop_sent = True
            self.write("\n^C stopping the reply… (Ctrl+C again to exit)\n")
            asyncio.get_running_loop().create_task(self._stop())
            return
        self.exiting = True
        self.write("\n^C\n")
        if self.follow_task is not None:
            self.follow_task.cancel()
        else:
            self.lines.put_nowait(None)

    async def _stop(self) -> None:
        with contextlib.suppress(AppError):  # it ended meanwhile
            await engine.stop(conversation=self.conversation)

    async def _settle(self) -> None:
        """Leave nothing half-done: a run this process still executes ends before we exit."""
        run_id = self.replying
        if run_id and engine.is_executing_here(run_id):
            if not self.stop_sent:
                await self._stop()
            try:
                await asyncio.wait_for(engine.wait_for_run(run_id), timeout=15)
            except TimeoutError:
                self.write("! The run did not stop in time; recover_runs will release it.\n")
        from agents_app import tracing

        await asyncio.to_thread(tracing.flush, 10)


class EventView:
    """Renders wire events (what the socket sends) as terminal lines."""

    def __init__(self, write) -> None:
        self.write = write
        self.begin()

    def begin(self) -> None:
        self.agent = "Agent"
        self.at_line_start = True
        self.needs_prefix = True  # "Agent: " before text, again after tool and handoff lines
        self.text_shown = False
        self.tools: dict[str, str] = {}
        self.stage = ""

    def line(self, text: str) -> None:
        if not self.at_line_start:
            self.write("\n")
        self.write(text + "\n")
        self.at_line_start = True
        self.needs_prefix = True

    def text(self, text: str) -> None:
        if self.needs_prefix:
            text = text.lstrip("\n")
            if not text:
                return
            if not self.at_line_start:
                self.write("\n")
            self.write(f"{self.agent}: ")
            self.needs_prefix = False
        self.write(text)
        self.text_shown = True
        self.at_line_start = text.endswith("\n")

    def show(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "run.started":
            self.agent = event.get("agent") or self.agent
        elif kind == "message.delta":
            self.text(event["delta"])
        elif kind == "tool.called":
            self.tools[event["call_id"]] = event["name"]
            arguments = event["arguments"] if isinstance(event["arguments"], str) else json.dumps(event["arguments"])
            self.line(f"  → {event['name']}({arguments})")
        elif kind == "tool.output":
            name = self.tools.get(event["call_id"], "tool")
            output = event["output"] if len(event["output"]) <= TOOL_OUTPUT_CHARS else event["output"][:TOOL_OUTPUT_CHARS] + "…"
            self.line(f"  {'✗' if event.get('failed') else '←'} {name}: {output}")
        elif kind == "agent.updated":
            self.agent = event["agent"]
            self.line(f"  ⇢ handed off to {event['agent']}")
        elif kind == "guardrail.tripped":
            self.line(f"  ⚠ blocked by the {event['guardrail']} check: {event['message']}")
        elif kind == "run.progress":
            if event.get("stage") != self.stage:
                self.stage = event.get("stage", "")
                detail = f" ({event['position']} ahead)" if "position" in event else ""
                self.line(f"  … {self.stage}{detail}")
        elif kind == "approval.requested":
            self.line(f"  ? {event.get('name')} needs your approval: answer it on the web page")
        elif kind == "message.completed":
            if not self.text_shown and event.get("content") and event.get("status") != "blocked":
                self.text(event["content"])
            if event.get("structured"):
                self.line(json.dumps(event["structured"].get("data", event["structured"]), indent=2, ensure_ascii=False))
        elif kind == "usage":
            cost = format_cost(None if event.get("cost") is None else _decimal(event["cost"]))
            model = f" · {event['model']}" if event.get("model") else ""
            self.line(f"  [{event['total_tokens']:,} tokens · {cost}{model}]")
        elif kind == "run.finished":
            if event["status"] != "completed":
                self.line(f"  [{event['status']}{': ' + event['error'] if event.get('error') else ''}]")
        elif kind == "run.paused":
            self.line("  [paused: waiting for approval on the web page]")
        elif kind == "error":
            self.line(f"! {event.get('message')}")


def _decimal(value: str):
    from decimal import Decimal

    return Decimal(value)
