"""Which model answers: OpenAI (or any OpenAI-compatible endpoint), the local GGUF, or the
rule-based scripted model. Chosen by `AGENTS_MODEL_PROVIDER`, or automatically (see
`provider_name`). Every run gets its model from `model_for_run()`, so tests can swap in an
`agents.testing.ScriptedModel` with `use_model(...)` and nothing else changes."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

from agents import ModelSettings
from agents.models.interface import Model
from agents.retry import ModelRetryBackoffSettings, ModelRetrySettings, retry_policies
from django.conf import settings

from agents_app.model_guards import guarded  # an empty model turn is retried once, then fails the run
from config.errors import AppError

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"


class ProviderNotConfigured(AppError):
    """No model provider can be used; the message says how to configure one."""

    code = "provider_not_configured"

    def __init__(self) -> None:
        super().__init__(
            message="No model is configured. Set OPENAI_API_KEY (and optionally OPENAI_BASE_URL for an "
            "OpenAI-compatible server), or install the local model with "
            "`python manage.py local_model install` (the README's first command does it), or set "
            "AGENTS_MODEL_PROVIDER=scripted for the rule-based demo model."
        )


@dataclass(frozen=True)
class ResolvedModel:
    model: Model
    label: str  # stored on messages and used to look up prices
    settings: ModelSettings


_override: ResolvedModel | None = None


def provider_name() -> str:
    """The provider runs use: a model installed with `use_model` (tests, benchmarks) wins, then
    `AGENTS_MODEL_PROVIDER`, then whatever is configured. Raises ProviderNotConfigured."""
    if _override is not None:
        return "override"
    if settings.AGENTS_MODEL_PROVIDER:
        return settings.AGENTS_MODEL_PROVIDER
    if settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL:
        return "openai"
    from agents_app import local

    if local.is_installed():
        return "local"
    raise ProviderNotConfigured()


def retry_settings() -> ModelRetrySettings:
    """Retry rate limits, server errors and dropped connections with backoff, then give up."""
    return ModelRetrySettings(
        max_retries=settings.AGENTS_MODEL_MAX_RETRIES,
        backoff=ModelRetryBackoffSettings(
            initial_delay=settings.AGENTS_MODEL_RETRY_DELAY, max_delay=8.0, multiplier=2.0, jitter=True
        ),
        policy=retry_policies.any(
            retry_policies.provider_suggested(),
            retry_policies.retry_after(),
            retry_policies.network_error(),
            retry_policies.http_status([408, 409, 429, 500, 502, 503, 504]),
        ),
    )


def _model_settings(*, include_usage: bool = False, timeout: float | None = None) -> ModelSettings:
    return ModelSettings(include_usage=include_usage or None, retry=retry_settings(), timeout=timeout)


def openai_client():
    """The client of the `openai` provider: the SDK's own `AsyncOpenAI` on its shared HTTP
    client, or (the default, `AGENTS_OPENAI_FAST_EVENTS`) the same client building streamed
    Responses events without per-event union validation (`agents_app.openai_client`)."""
    from agents.models.openai_provider import shared_http_client
    from openai import AsyncOpenAI

    from agents_app.openai_client import StreamingOpenAI

    client_class = StreamingOpenAI if settings.AGENTS_OPENAI_FAST_EVENTS else AsyncOpenAI
    return client_class(
        api_key=settings.OPENAI_API_KEY or "not-needed",
        base_url=settings.OPENAI_BASE_URL or None,
        http_client=shared_http_client(),
    )


@functools.cache
def _openai() -> ResolvedModel:
    from agents import OpenAIProvider

    name = settings.AGENTS_MODEL or DEFAULT_OPENAI_MODEL
    chat_completions = settings.AGENTS_OPENAI_API == "chat_completions"
    provider = OpenAIProvider(openai_client=openai_client(), use_responses=not chat_completions)
    # Chat Completions streams report usage only when asked; without it every count is zero.
    model_settings = _model_settings(include_usage=chat_completions, timeout=settings.AGENTS_MODEL_TIMEOUT)
    return ResolvedModel(guarded(provider.get_model(name)), name, model_settings)


@functools.cache
def _local() -> ResolvedModel:
    from agents_app import local

    # No deadline: a request may wait in the local model's queue behind other users.
    return ResolvedModel(guarded(local.get_model()), local.model_label(), _model_settings())


@functools.cache
def _scripted() -> ResolvedModel:
    from agents_app.scripted import RuleBasedModel

    model = RuleBasedModel(word_delay=settings.AGENTS_SCRIPTED_DELAY)
    return ResolvedModel(guarded(model), "scripted", _model_settings())


def require_provider() -> None:
    """Refuse (ProviderNotConfigured, with instructions) when no model can answer: checked
    before a message is stored, by every transport."""
    provider_name()


def model_for_run() -> ResolvedModel:
    """The model every run uses. Raises ProviderNotConfigured with instructions."""
    if _override is not None:
        return _override
    return {"openai": _openai, "local": _local, "scripted": _scripted}[provider_name()]()


@contextlib.contextmanager
def use_model(model: Model, *, label: str = "scripted", model_settings: ModelSettings | None = None) -> Iterator[None]:
    """Run every agent on `model` inside this block (tests, benchmarks, the terminal chat)."""
    global _override
    previous = _override
    _override = ResolvedModel(guarded(model), label, model_settings or _model_settings())
    try:
        yield
    finally:
        _override = previous


def reset() -> None:
    """Forget cached providers (after settings change in tests)."""
    for cached in (_openai, _local, _scripted):
        cached.cache_clear()
