"""The run engine: the only way into an agent run, for every transport.

Consumers, the HTTP API, pages, admin, commands and the evaluation call these and nothing else
of the run (`tests/test_layout.py` checks it):

* `start`, `replace` (edit / regenerate the last turn), `decide` (an approval), `stop`,
  `delete` (a conversation, its run stopped first), `release_dead_runs` (the sweeper);
* `RunFollower` and `EventOrder`: following a run's events, exactly once and in order
  (`chat.engine.follow`), `resume_point` (where a client that opens a conversation picks up,
  for every transport), `buffered_events` for a run that is over;
* `wait_for_run`, `is_executing_here`: for callers that wait for a run of this process;
* `install_shutdown_hook`: the server's drain on SIGTERM.

Inside: `runs` (the executor), `transitions` (every state change of a run, one transaction
each), `streams` (numbering, replay buffer, fan-out, cross-process stop), `follow`, and
`process` (the process's state as one object: executors, heartbeat, drain, stop control,
buffer).
"""

from __future__ import annotations

from asgiref.sync import async_to_sync

from chat.engine.follow import EventOrder, ResumePoint, RunFollower, buffered_events, resume_point
from chat.engine.process import engine as _engine
from chat.engine.runs import (
    SHUTDOWN_ERROR,
    wait_for_run,
)
from chat.engine.runs import (
    decide_approval as decide,
)
from chat.engine.runs import (
    delete_conversation as delete,
)
from chat.engine.runs import (
    replace_last_turn as replace,
)
from chat.engine.runs import (
    start_run as start,
)
from chat.engine.runs import (
    stop_run as stop,
)
from chat.engine.transitions import (
    APPROVAL_NOT_FOUND,
    ApprovalPending,
    ConversationBusy,
    NothingToReplace,
    StartedRun,
    release_dead_runs,
)

__all__ = [
    "APPROVAL_NOT_FOUND",
    "SHUTDOWN_ERROR",
    "ApprovalPending",
    "ConversationBusy",
    "EventOrder",
    "NothingToReplace",
    "ResumePoint",
    "RunFollower",
    "StartedRun",
    "buffered_events",
    "decide",
    "delete",
    "delete_now",
    "install_shutdown_hook",
    "is_executing_here",
    "release_dead_runs",
    "replace",
    "resume_point",
    "start",
    "stop",
    "wait_for_run",
]


def delete_now(*, conversation) -> None:
    """`delete` for synchronous callers (a page's view, the admin, `cleanup_sessions`)."""
    async_to_sync(delete)(conversation=conversation)


def is_executing_here(run_id: str) -> bool:
    return _engine.executor(run_id) is not None


def install_shutdown_hook() -> None:
    _engine.install_shutdown_hook()
