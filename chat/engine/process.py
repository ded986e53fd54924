"""The engine's process state, in one object: the runs this process executes, the heartbeat
that proves them alive, the drain that ends them on shutdown, the receiver of stop requests
from other processes, and the replay buffer.

Like Django's `connections` or channels' `channel_layers`, there is one `engine` per process;
it is started by the first run (or explicitly, `engine.start()`), stopped by the server's
shutdown hook (`install_shutdown_hook`, daphne's Twisted reactor) and reset as one thing by
the tests (`engine.reset()`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings

from chat.engine import transitions
from chat.engine.streams import MemoryBuffer, RedisBuffer, RunControl
from config import metrics
from config.errors import AppError

log = logging.getLogger(__name__)


class Executing(Protocol):
    """What the engine needs of a run it executes (`chat.engine.runs.RunExecutor`)."""

    run: Any  # chat.models.Run
    run_id: str
    task: asyncio.Task | None
    stop_requested: bool

    def beat(self) -> transitions.Beat: ...
    def request_stop(self) -> None: ...
    def interrupt_for_shutdown(self) -> None: ...


class Engine:
    def __init__(self) -> None:
        self.executors: dict[str, Executing] = {}
        self.control = RunControl()
        self.draining = False
        self._buffer: MemoryBuffer | RedisBuffer | None = None
        self._heartbeat: asyncio.Task | None = None

    # --- the replay buffer -------------------------------------------------------
    @property
    def buffer(self) -> MemoryBuffer | RedisBuffer:
        """Redis when `REDIS_URL` is set (any process can replay a run), else this process's memory."""
        if self._buffer is None:
            self._buffer = RedisBuffer(settings.REDIS_URL) if settings.REDIS_URL else MemoryBuffer()
        return self._buffer

    # --- runs executing here -----------------------------------------------------
    def launch(self, executor: Executing, work) -> None:
        """Execute `work` (the executor's coroutine) as a task of this process."""
        self.executors[executor.run_id] = executor
        metrics.runs_started.inc()
        metrics.runs_in_flight.set(len(self.executors))
        self.start()
        # A fresh context: the run outlives the request or socket that started it, and must not
        # inherit its per-request ORM thread (asgiref's ThreadSensitiveContext), which ends with it.
        executor.task = asyncio.create_task(work, name=f"agent-run-{executor.run_id}", context=contextvars.Context())

    def ended(self, executor: Executing) -> None:
        self.executors.pop(executor.run_id, None)
        metrics.runs_in_flight.set(len(self.executors))

    def executor(self, run_id: str) -> Executing | None:
        return self.executors.get(str(run_id))

    # --- heartbeat ---------------------------------------------------------------
    def start(self) -> None:
        """Start the heartbeat on the running loop (a no-op while it runs)."""
        loop = asyncio.get_running_loop()
        if self._heartbeat is None or self._heartbeat.done() or self._heartbeat.get_loop() is not loop:
            self._heartbeat = loop.create_task(self._beat_while_running(), context=contextvars.Context())

    async def _beat_while_running(self) -> None:
        """One task per process proves every run it executes alive, every RUN_HEARTBEAT_SECONDS,
        in a few queries for all of them (not a task and three queries per run): it saves the
        partial replies that changed since the last beat (so a crash keeps them) and stops the
        runs someone asked, through the database, to stop."""
        while self.executors:
            await asyncio.sleep(settings.RUN_HEARTBEAT_SECONDS)
            # Every run this process holds beats, also one still waiting for its turn on a busy
            # loop: a silent run is declared dead by other processes and by its followers.
            beating = list(self.executors.values())
            if not beating:
                continue
            beats = [executor.beat() for executor in beating]
            try:
                to_stop = await sync_to_async(transitions.runs_heartbeat)(beats=beats)
            except Exception:
                log.exception("heartbeat of %d runs failed", len(beats))
                continue
            for executor in beating:
                if executor.run.pk in to_stop and not executor.stop_requested:
                    executor.request_stop()

    # --- drain -------------------------------------------------------------------
    def refuse_new_runs(self) -> None:
        if self.draining:
            raise AppError("shutting_down", "This server is restarting. Send again: another one will answer.", retry_after=1)

    async def drain(self, timeout: float) -> None:
        """A process that is shutting down (SIGTERM: a deploy, a scale-down) starts no new run,
        lets the runs in flight finish for up to `timeout` seconds, then ends the rest as
        interrupted at once (turn closed, conversation freed, true status) instead of leaving
        them to the 30-second stale mark."""
        self.draining = True
        running = [executor.task for executor in list(self.executors.values()) if executor.task is not None]
        log.info("shutting down: waiting up to %.0f s for %d runs in flight", timeout, len(running))
        if running:
            await asyncio.wait(running, timeout=timeout)
        leftover = [e for e in list(self.executors.values()) if e.task is not None and not e.task.done()]
        for executor in leftover:
            executor.interrupt_for_shutdown()
        if leftover:
            log.warning("shutting down: %d runs did not finish in time; ending them as interrupted", len(leftover))
            await asyncio.wait([executor.task for executor in leftover], timeout=10)

    def install_shutdown_hook(self) -> None:
        """Under daphne (Twisted), drain before the reactor stops: a "before shutdown" trigger
        that returns a Deferred holds the shutdown until the drain is over (daphne itself closes
        the sockets meanwhile; their clients reconnect to another process and follow the runs
        there)."""
        if "twisted.internet.reactor" not in sys.modules:
            return  # not under daphne (which installs its reactor before loading the application)
        from twisted.internet import defer, reactor

        def before_shutdown():
            return defer.Deferred.fromFuture(asyncio.ensure_future(self.drain(settings.RUN_DRAIN_SECONDS)))

        reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)

    # --- tests ---------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (between tests: each has its own event loop and settings)."""
        if self._heartbeat is not None and not self._heartbeat.done():
            self._heartbeat.cancel()
        self.__init__()


engine = Engine()
