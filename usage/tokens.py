"""Token counts as the product stores them, read from what the SDK reports."""

from __future__ import annotations

from agents.usage import Usage

from usage.models import TOKEN_FIELDS


def counts_from_sdk(usage: Usage) -> dict[str, int]:
    """The counts of a run. Read from `result.context_wrapper.usage`: streamed results have no
    `.usage` of their own."""
    return {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.input_tokens_details.cached_tokens or 0,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.output_tokens_details.reasoning_tokens or 0,
        "total_tokens": usage.total_tokens,
    }


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(TOKEN_FIELDS, 0)
