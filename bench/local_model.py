"""Local model speed: the SDK adapter (Runner.run_streamed) versus llama.cpp called directly.

    .venv/bin/python bench/local_model.py [--runs 3] [--max-tokens 128] [--size 1.5b]

Both paths run the same chatml prompt on the same `llama_cpp.Llama` instance at temperature 0,
each from a cold KV cache (so the prompt is evaluated in full), then once more with the
prompt already cached (a chat's next turn). Prints time to first token, decode tokens/s,
prompt tokens/s and the process's peak RSS. No assertions: figures only. Other processes
on the machine skew the figures; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from agents import Agent, ModelSettings, RunConfig, Runner, function_tool
from django.conf import settings

from agents_app import local
from agents_app.local import chatml

INSTRUCTIONS = "You are a helpful assistant."
QUESTION = "Explain how a hash map works, in about 150 words."
# A chat with some history: what the prompt of a later turn looks like (~700 tokens).
HISTORY_TOPICS = ["binary search", "a linked list", "recursion", "big-O notation", "a stack", "a queue"]
HISTORY = [
    item
    for topic in HISTORY_TOPICS
    for item in (
        {"role": "user", "content": f"Explain {topic} briefly."},
        {
            "role": "assistant",
            "content": f"Here is a short explanation of {topic}. It is a basic idea in computer science: "
            "it describes how data or steps are organised so that a program can do its work efficiently, "
            "and it comes up in interviews, in textbooks and in everyday code. A typical example is shown "
            "in most introductory courses, together with its cost in time and memory.",
        },
    )
]


@function_tool
def get_current_time(timezone: str) -> str:
    """Get the current time.

    Args:
        timezone: IANA timezone name.
    """
    return f"2031-07-04 09:41 ({timezone})"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cold(model) -> None:
    """Forget every cached prompt so the next request evaluates its prompt in full."""
    llm = model.backend._llm
    llm.reset()
    model.backend.snapshots = type(model.backend.snapshots)()


def direct(llm, prompt: str, max_tokens: int) -> dict[str, float]:
    """llama.cpp's own streaming completion on the same prompt."""
    started = time.monotonic()
    first = last = None
    pieces = 0
    for chunk in llm.create_completion(
        prompt, max_tokens=max_tokens, temperature=0.0, stream=True, stop=["<|im_end|>"]
    ):
        now = time.monotonic()
        if chunk["choices"][0]["text"]:
            first = first or now
            last = now
            pieces += 1
    prompt_tokens = len(llm.tokenize(prompt.encode(), add_bos=False, special=True))
    return figures(started, first, last, pieces, prompt_tokens)


async def through_sdk(model, max_tokens: int, input=QUESTION) -> dict[str, float]:
    agent = Agent(
        name="Bench", instructions=INSTRUCTIONS, model=model, model_settings=ModelSettings(max_tokens=max_tokens)
    )
    started = time.monotonic()
    first = last = None
    result = Runner.run_streamed(agent, input, run_config=RunConfig(tracing_disabled=True))
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            now = time.monotonic()
            first = first or now
            last = now
    usage = result.context_wrapper.usage
    return figures(
        started, first, last, usage.output_tokens, usage.input_tokens, cached=usage.input_tokens_details.cached_tokens
    )


async def tool_round_trip(model, max_tokens: int) -> dict[str, float]:
    agent = Agent(
        name="Bench",
        instructions=INSTRUCTIONS + " Use the tools when they help.",
        tools=[get_current_time],
        model=model,
        model_settings=ModelSettings(max_tokens=max_tokens),
    )
    started = time.monotonic()
    first = None
    called = False
    result = Runner.run_streamed(agent, "What time is it in UTC?", run_config=RunConfig(tracing_disabled=True))
    async for event in result.stream_events():
        if event.type == "run_item_stream_event" and event.name == "tool_called":
            called = True
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            first = first or time.monotonic()
    return {
        "called": called,
        "first_text_s": (first or time.monotonic()) - started,
        "total_s": time.monotonic() - started,
        "answer": result.final_output,
    }


def figures(started, first, last, output_tokens, prompt_tokens, cached=0) -> dict[str, float]:
    ttft = (first or started) - started
    decode = (output_tokens - 1) / (last - first) if first and last and last > first else 0.0
    evaluated = max(prompt_tokens - cached, 1)
    return {
        "ttft": ttft,
        "decode": decode,
        "prefill": evaluated / ttft if ttft else 0.0,
        "out": output_tokens,
        "in": prompt_tokens,
    }


def show(label: str, rows: list[dict[str, float]], *, prefill: bool = True) -> None:
    med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    prompt_rate = f"prompt {med['prefill']:5.0f} tok/s" if prefill else "prompt cached     "
    print(
        f"  {label:<34} TTFT {med['ttft']:6.2f}s   decode {med['decode']:5.1f} tok/s   {prompt_rate}   "
        f"({med['in']:.0f} prompt / {med['out']:.0f} output tokens, median of {len(rows)})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--size", choices=["1.5b", "0.5b"], default=None)
    args = parser.parse_args()
    if args.size:
        settings.AGENTS_LOCAL_MODEL = args.size
    if not local.is_installed():
        sys.exit("The local model is not installed: python manage.py local_model install")

    print(
        f"{local.model_label()}: {settings.AGENTS_LOCAL_THREADS} threads, context {settings.AGENTS_LOCAL_CONTEXT}, temperature 0"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    rss_before = current_rss_mb()
    model = local.get_model()
    started = time.monotonic()
    model.load()  # on the model's worker thread, where every generation runs
    print(f"load: {time.monotonic() - started:.2f}s, RSS {rss_before:.0f} -> {current_rss_mb():.0f} MB")

    llm = model.backend._llm
    prompt = chatml.render_prompt(chatml.items_to_messages(INSTRUCTIONS, QUESTION))
    direct(llm, prompt, 8)  # warm-up (first-use allocations)

    long_input = [*HISTORY, {"role": "user", "content": "And a hash map?"}]
    long_prompt = chatml.render_prompt(chatml.items_to_messages(INSTRUCTIONS, long_input))
    results: dict[str, list[dict[str, float]]] = {
        key: [] for key in ("direct", "sdk", "direct_warm", "sdk_warm", "direct_long", "sdk_long")
    }
    for _ in range(args.runs):
        cold(model)
        results["direct"].append(direct(llm, prompt, args.max_tokens))
        results["direct_warm"].append(direct(llm, prompt, args.max_tokens))
        cold(model)
        results["sdk"].append(await through_sdk(model, args.max_tokens))
        results["sdk_warm"].append(await through_sdk(model, args.max_tokens))
        cold(model)
        results["direct_long"].append(direct(llm, long_prompt, 32))
        cold(model)
        results["sdk_long"].append(await through_sdk(model, 32, long_input))

    print("\nShort prompt, cold KV cache (the whole prompt is evaluated):")
    show("llama.cpp create_completion", results["direct"])
    show("SDK adapter (Runner.run_streamed)", results["sdk"])
    print("Same prompt again (already in the KV cache):")
    show("llama.cpp create_completion", results["direct_warm"], prefill=False)
    show("SDK adapter (Runner.run_streamed)", results["sdk_warm"], prefill=False)
    print("A turn with 12 messages of history, cold KV cache:")
    show("llama.cpp create_completion", results["direct_long"])
    show("SDK adapter (Runner.run_streamed)", results["sdk_long"])

    cold(model)
    trip = await tool_round_trip(model, args.max_tokens)
    print("\nTool round trip through the SDK (cold cache: call turn + answer turn without tools):")
    print(
        f"  tool called: {trip['called']}, first answer text after {trip['first_text_s']:.2f}s, done after {trip['total_s']:.2f}s"
    )
    print(f"  answer: {trip['answer']!r}")
    trip = await tool_round_trip(model, args.max_tokens)
    print(
        f"  again with both prompt variants cached: first answer text after {trip['first_text_s']:.2f}s, done after {trip['total_s']:.2f}s"
    )

    print(f"\npeak RSS: {peak_rss_mb():.0f} MB (current {current_rss_mb():.0f} MB)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
