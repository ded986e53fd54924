from agents.usage import Usage


def usage_summary(usage: Usage) -> dict[str, int]:
    """The counts stored on a message. Read from `result.context_wrapper.usage`: streamed
    results have no `.usage` of their own."""
    return {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.input_tokens_details.cached_tokens or 0,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.output_tokens_details.reasoning_tokens or 0,
        "total_tokens": usage.total_tokens,
    }
