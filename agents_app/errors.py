"""What a user is told when a run fails: short, true, and free of internals."""

from __future__ import annotations

import openai
from agents.exceptions import (
    MaxTurnsExceeded,
    ModelBehaviorError,
    ModelRefusalError,
    ModelTimeoutError,
    ToolTimeoutError,
    UserError,
)

from agents_app.model_guards import EmptyModelReply
from agents_app.providers import ProviderNotConfigured


def user_safe_message(exc: BaseException) -> str:
    if isinstance(exc, ProviderNotConfigured):
        return str(exc)
    if isinstance(exc, MaxTurnsExceeded):
        return "The agent needed more steps than it is allowed. Try a simpler or more specific request."
    if isinstance(exc, openai.RateLimitError):
        return "The model provider is rate-limiting requests right now. Please try again in a moment."
    if isinstance(exc, (openai.APITimeoutError, ModelTimeoutError)):
        return "The model took too long to answer. Please try again."
    if isinstance(exc, openai.AuthenticationError):
        return "The model provider rejected the configured API key."
    if isinstance(exc, openai.APIStatusError):
        return f"The model provider returned an error (HTTP {exc.status_code}). Please try again."
    if isinstance(exc, openai.APIConnectionError):
        return "The connection to the model provider was lost. Please try again."
    if isinstance(exc, ModelRefusalError):
        return "The model refused to answer this request."
    if isinstance(exc, EmptyModelReply):
        return str(exc)
    if isinstance(exc, ModelBehaviorError):
        return "The model produced a response the agent could not use. Please try again."
    if isinstance(exc, ToolTimeoutError):
        return "A tool took too long to respond."
    if isinstance(exc, UserError):
        return "The agent is misconfigured; the operators have been notified in the logs."
    return "Something went wrong while generating the reply. Please try again."
