"""Where SDK traces go. By default they stay on this machine: OpenAI's exporter is replaced
unless `AGENTS_TRACE_EXPORT_OPENAI` is on (it defaults to on only with a real OpenAI key and
no custom base URL), so a dummy key never makes the SDK retry against an unreachable host."""

from __future__ import annotations

from agents import set_trace_processors
from agents.tracing import TracingProcessor
from django.conf import settings


def local_processors() -> list[TracingProcessor]:
    return []


def configure() -> None:
    processors = local_processors()
    if settings.AGENTS_TRACE_EXPORT_OPENAI:
        from agents.tracing.processors import default_processor

        processors.append(default_processor())
    set_trace_processors(processors)
