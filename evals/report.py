"""Per-agent figures from verdicts: the table the command prints and the JSON it writes."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from evals.judge import Verdict


@dataclass
class Score:
    passed: int
    total: int

    @property
    def rate(self) -> float | None:
        return self.passed / self.total if self.total else None

    def __str__(self) -> str:
        if not self.total:
            return "—"
        return f"{self.passed}/{self.total} ({100 * self.passed / self.total:.0f}%)"

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "total": self.total, "rate": self.rate}


def _score(values: Iterable[bool | None]) -> Score:
    judged = [v for v in values if v is not None]
    return Score(sum(1 for v in judged if v), len(judged))


def _median(values: Iterable[int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass
class AgentSummary:
    agent: str
    cases: int
    routing: Score  # right tool or handoff (every routing expectation of the case)
    tool: Score
    args: Score
    handoff: Score
    content: Score
    forbidden: int
    empty: int
    failed: int
    failed_calls: int  # cases with a tool call that did not work, even if a retry did
    blocked: int
    median_ttft_ms: float | None
    median_duration_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "cases": self.cases,
            "right_tool_or_handoff": self.routing.as_dict(),
            "right_tool": self.tool.as_dict(),
            "right_arguments": self.args.as_dict(),
            "right_handoff": self.handoff.as_dict(),
            "right_content": self.content.as_dict(),
            "forbidden": self.forbidden,
            "empty_replies": self.empty,
            "failed": self.failed,
            "cases_with_failed_calls": self.failed_calls,
            "blocked": self.blocked,
            "median_time_to_first_token_ms": self.median_ttft_ms,
            "median_duration_ms": self.median_duration_ms,
        }


def summarise(verdicts: list[Verdict]) -> list[AgentSummary]:
    agents = list(dict.fromkeys(v.agent for v in verdicts))
    summaries = []
    for agent in [*agents, "all"]:
        mine = verdicts if agent == "all" else [v for v in verdicts if v.agent == agent]
        summaries.append(
            AgentSummary(
                agent=agent,
                cases=len(mine),
                routing=_score(v.routing_ok for v in mine),
                tool=_score(v.tool_ok for v in mine),
                args=_score(v.args_ok for v in mine),
                handoff=_score(v.handoff_ok for v in mine),
                content=_score(v.content_ok for v in mine),
                forbidden=sum(1 for v in mine if v.forbidden),
                empty=sum(1 for v in mine if v.empty),
                failed=sum(1 for v in mine if v.failed),
                failed_calls=sum(1 for v in mine if v.failed_calls),
                blocked=sum(1 for v in mine if v.blocked),
                median_ttft_ms=_median(v.time_to_first_token_ms for v in mine),
                median_duration_ms=_median(v.duration_ms for v in mine),
            )
        )
    return summaries


COLUMNS = [
    "agent",
    "cases",
    "right tool or handoff",
    "right tool",
    "right arguments",
    "right handoff",
    "right content",
    "forbidden",
    "empty",
    "failed",
    "failed calls",
    "blocked",
    "median first token",
    "median duration",
]


def _seconds(ms: float | None) -> str:
    return "—" if ms is None else f"{ms / 1000:.1f} s"


def rows(summaries: list[AgentSummary]) -> list[list[str]]:
    return [
        [
            s.agent,
            str(s.cases),
            str(s.routing),
            str(s.tool),
            str(s.args),
            str(s.handoff),
            str(s.content),
            str(s.forbidden),
            str(s.empty),
            str(s.failed),
            str(s.failed_calls),
            str(s.blocked),
            _seconds(s.median_ttft_ms),
            _seconds(s.median_duration_ms),
        ]
        for s in summaries
    ]


def table(summaries: list[AgentSummary], *, markdown: bool = False) -> str:
    body = rows(summaries)
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(COLUMNS[i]), *(len(row[i]) for row in body)) for i in range(len(COLUMNS))]
    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(cells))
    return "\n".join([line(COLUMNS), line(["-" * w for w in widths]), *(line(row) for row in body)])


def as_json(verdicts: list[Verdict], *, provider: str, model: str, started: str, seconds: float) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": model,
        "started": started,
        "seconds": round(seconds, 1),
        "summary": [s.as_dict() for s in summarise(verdicts)],
        "cases": [v.as_dict() for v in verdicts],
    }
