"""Which model answers: OpenAI (or any OpenAI-compatible endpoint), the local GGUF, or the
rule-based scripted model.

Without `AGENTS_MODELS` there is one model, the `default`: the provider of
`AGENTS_MODEL_PROVIDER`, or the one configured (see `provider_name`). `AGENTS_MODELS` lists the
models a deployment offers (`ModelChoice`): each conversation runs on the one its user picked,
else its agent's (`AgentSpec.model`), else `AGENTS_DEFAULT_MODEL`, else the first listed.
Every run gets its model from `model_for_run(key)`, so tests can swap in an
`agents.testing.ScriptedModel` with `use_model(...)` and nothing else changes."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields

from agents import ModelSettings
from agents.models.interface import Model
from agents.retry import ModelRetryBackoffSettings, ModelRetrySettings, retry_policies
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

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

DEFAULT_KEY = "default"
PROVIDERS = ("openai", "local", "scripted")
UNKNOWN_MODEL = "unknown_model"
MODEL_KEY = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class ModelChoice:
    """One entry of `AGENTS_MODELS`: a model users (or agents) may run on."""

    key: str  # stored on conversations and sent by clients; never change it once in use
    label: str = ""  # shown in the model picker; defaults to the key
    provider: str = "openai"  # openai (any OpenAI-compatible server) | local | scripted
    name: str = ""  # the provider's model name (openai: e.g. gpt-4.1-mini; "" = AGENTS_MODEL)
    api: str = ""  # openai: responses | chat_completions ("" = AGENTS_OPENAI_API)
    base_url: str = ""  # openai: this model's endpoint ("" = OPENAI_BASE_URL)
    api_key_env: str = ""  # openai: the environment variable holding its key ("" = OPENAI_API_KEY)
    selectable: bool = True  # users may pick it; False: only agents that name it run on it

    @property
    def title(self) -> str:
        return self.label or self.key


def _choice(entry: object, index: int) -> ModelChoice:
    where = f"AGENTS_MODELS[{index}]"
    if not isinstance(entry, dict):
        raise ImproperlyConfigured(f"{where} must be an object with at least a 'key'.")
    known = {f.name for f in fields(ModelChoice)}
    if unknown := sorted(set(entry) - known):
        raise ImproperlyConfigured(f"{where} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    key = entry.get("key")
    if not isinstance(key, str) or not MODEL_KEY.fullmatch(key):
        raise ImproperlyConfigured(f"{where} needs a 'key' of letters, digits, '.', '-' and '_' (at most 64).")
    if entry.get("provider", "openai") not in PROVIDERS:
        raise ImproperlyConfigured(f"{where} ({key}): 'provider' must be one of {', '.join(PROVIDERS)}.")
    if entry.get("api", "") not in ("", "responses", "chat_completions"):
        raise ImproperlyConfigured(f"{where} ({key}): 'api' must be 'responses' or 'chat_completions'.")
    for name in ("label", "name", "base_url", "api_key_env"):
        if not isinstance(entry.get(name, ""), str):
            raise ImproperlyConfigured(f"{where} ({key}): '{name}' must be a string.")
    if not isinstance(entry.get("selectable", True), bool):
        raise ImproperlyConfigured(f"{where} ({key}): 'selectable' must be true or false.")
    return ModelChoice(**entry)


def catalogue() -> dict[str, ModelChoice]:
    """The models this deployment offers, by key, in the order configured. Raises
    ImproperlyConfigured for a malformed `AGENTS_MODELS` (checked at start-up, `apps.py`)."""
    entries = settings.AGENTS_MODELS
    if not entries:
        return {DEFAULT_KEY: ModelChoice(key=DEFAULT_KEY, provider="")}
    if not isinstance(entries, list):
        raise ImproperlyConfigured("AGENTS_MODELS must be a JSON list of models.")
    choices = [_choice(entry, index) for index, entry in enumerate(entries)]
    by_key = {choice.key: choice for choice in choices}
    if len(by_key) != len(choices):
        raise ImproperlyConfigured("AGENTS_MODELS has two models with the same 'key'.")
    default = settings.AGENTS_DEFAULT_MODEL
    if default and default not in by_key:
        raise ImproperlyConfigured(f"AGENTS_DEFAULT_MODEL {default!r} is not a key of AGENTS_MODELS.")
    return by_key


def default_key() -> str:
    models = catalogue()
    return settings.AGENTS_DEFAULT_MODEL if settings.AGENTS_DEFAULT_MODEL in models else next(iter(models))


def selectable() -> list[ModelChoice]:
    """The models a user may pick for a conversation."""
    return [choice for choice in catalogue().values() if choice.selectable]


def pickable(key: str) -> str:
    """`key` if users may pick it; else an AppError `unknown_model` naming the choices."""
    choice = catalogue().get(key)
    if choice is None or not choice.selectable:
        keys = ", ".join(c.key for c in selectable())
        raise AppError(UNKNOWN_MODEL, f"There is no model {key!r} to pick; the models are: {keys}.")
    return key


def key_for(*, conversation_model: str, agent_model: str = "") -> str:
    """The model a conversation runs on: the user's pick, else its agent's, else the default.
    A pick no longer offered (removed from AGENTS_MODELS) falls back the same way."""
    models = catalogue()
    for key in (conversation_model, agent_model):
        if key and key in models:
            return key
    return default_key()


def label_of(key: str) -> str:
    """What the model picker shows for `key`: its label; for a model without one, the name
    its replies are stored with (`default`: the configured provider's model)."""
    choice = catalogue().get(key)
    if choice is None or choice.label:
        return choice.label if choice else key
    try:
        provider = choice.provider or provider_name()
    except ProviderNotConfigured:
        return choice.key
    if provider == "override":
        return _override.label
    return _stored_name(choice, provider)


def _stored_name(choice: ModelChoice, provider: str) -> str:
    """The name replies of `choice` are stored with (and priced by)."""
    if provider == "openai":
        return choice.name or settings.AGENTS_MODEL or DEFAULT_OPENAI_MODEL
    if provider == "local":
        from agents_app import local

        return local.model_label()
    return choice.name or "scripted"


def provider_name() -> str:
    """The provider of the `default` model: a model installed with `use_model` (tests,
    benchmarks) wins, then `AGENTS_MODEL_PROVIDER`, then whatever is configured. Raises
    ProviderNotConfigured."""
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


def openai_client(*, api_key: str | None = None, base_url: str | None = None):
    """The client of the `openai` provider (by default on OPENAI_API_KEY and OPENAI_BASE_URL):
    the SDK's own `AsyncOpenAI` on its shared HTTP client, or (the default,
    `AGENTS_OPENAI_FAST_EVENTS`) the same client building streamed Responses events without
    per-event union validation (`agents_app.openai_client`)."""
    from agents.models.openai_provider import shared_http_client
    from openai import AsyncOpenAI

    from agents_app.openai_client import StreamingOpenAI

    client_class = StreamingOpenAI if settings.AGENTS_OPENAI_FAST_EVENTS else AsyncOpenAI
    return client_class(
        api_key=api_key or settings.OPENAI_API_KEY or "not-needed",
        base_url=base_url or settings.OPENAI_BASE_URL or None,
        http_client=shared_http_client(),
    )


_resolved: dict[ModelChoice, ResolvedModel] = {}


def _openai(choice: ModelChoice) -> ResolvedModel:
    from agents import OpenAIProvider

    name = _stored_name(choice, "openai")
    chat_completions = (choice.api or settings.AGENTS_OPENAI_API) == "chat_completions"
    client = openai_client(
        api_key=os.environ.get(choice.api_key_env, "") if choice.api_key_env else None,
        base_url=choice.base_url or None,
    )
    provider = OpenAIProvider(openai_client=client, use_responses=not chat_completions)
    # Chat Completions streams report usage only when asked; without it every count is zero.
    model_settings = _model_settings(include_usage=chat_completions, timeout=settings.AGENTS_MODEL_TIMEOUT)
    return ResolvedModel(guarded(provider.get_model(name)), name, model_settings)


def _local(choice: ModelChoice) -> ResolvedModel:
    from agents_app import local

    # No deadline: a request may wait in the local model's queue behind other users.
    return ResolvedModel(guarded(local.get_model()), _stored_name(choice, "local"), _model_settings())


def _scripted(choice: ModelChoice) -> ResolvedModel:
    from agents_app.scripted import RuleBasedModel

    model = RuleBasedModel(word_delay=settings.AGENTS_SCRIPTED_DELAY)
    return ResolvedModel(guarded(model), _stored_name(choice, "scripted"), _model_settings())


def require_provider(key: str = "") -> None:
    """Refuse (ProviderNotConfigured, with instructions) when the model of `key` cannot
    answer: checked before a message is stored, by every transport."""
    if _override is not None:
        return
    choice = catalogue().get(key) or catalogue()[default_key()]
    if choice.provider == "":
        provider_name()
    elif choice.provider == "local":
        from agents_app import local

        if not local.is_installed():
            raise ProviderNotConfigured()


def model_for_run(key: str = "") -> ResolvedModel:
    """The model of `key` (a key of `catalogue()`; "" = the default). Raises
    ProviderNotConfigured with instructions."""
    if _override is not None:
        return _override
    choice = catalogue().get(key or default_key())
    if choice is None:
        choice = catalogue()[default_key()]
    if choice not in _resolved:
        provider = choice.provider or provider_name()
        _resolved[choice] = {"openai": _openai, "local": _local, "scripted": _scripted}[provider](choice)
    return _resolved[choice]


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
    """Forget resolved models (after settings change in tests)."""
    _resolved.clear()
