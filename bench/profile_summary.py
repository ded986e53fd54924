"""Where the CPU goes, from a py-spy recording (`--format raw --threads`, collapsed stacks).

    .venv/bin/python bench/profile_summary.py var/bench/…/profile.collapsed.txt

Prints, and bench/load.py --profile writes next to the recording:
* samples by thread (the event loop is MainThread; ORM work runs on asgiref's executor threads);
* by layer: each sample goes to the innermost frame that is not generic standard library
  (json, copy, re, typing, …), so `json.dumps` called from the SDK counts as SDK and one called
  from chat/sse.py as the project; the event loop's own frames are "asyncio";
* self time by function (the innermost Python frame: time in C code counts to its caller)
  and total time by function (a function anywhere on the stack, counted once per sample).

Also converts the recording to a speedscope file (https://www.speedscope.app, "Import").
py-spy samples threads that are on the CPU, so shares approximate CPU time.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

LAYERS = {
    "SDK (agents)": ("agents",),
    "OpenAI client (openai, httpx2, httpcore2, h11, anyio)": ("openai", "httpx2", "httpcore2", "h11", "anyio", "sniffio",
                                                            "httpx", "httpcore", "jiter", "distro"),
    "pydantic": ("pydantic", "pydantic_core"),
    "channels (layer, consumers)": ("channels", "channels_redis", "msgpack"),
    "daphne / Twisted / autobahn": ("daphne", "twisted", "autobahn", "txaio", "zope", "hyperlink", "automat"),
    "Django (ORM, HTTP, middleware)": ("django", "whitenoise", "allauth", "environ"),
    "asgiref (sync_to_async)": ("asgiref",),
    "redis-py": ("redis",),
    "psycopg / sqlite3": ("psycopg", "psycopg_binary", "sqlite3"),
    "project (chat, agents_app, accounts, config)": ("chat", "agents_app", "accounts", "config", "bench"),
    "markdown / nh3": ("markdown_it", "nh3", "mdurl"),
    "logging": ("logging",),
    "asyncio event loop": ("asyncio", "selectors"),
    "threading / queue": ("threading", "queue", "concurrent"),
}
GENERIC = {
    "json", "copy", "re", "enum", "typing", "typing_extensions", "functools", "contextlib", "abc", "dataclasses",
    "collections", "uuid", "datetime", "weakref", "_weakrefset", "inspect", "base64", "hashlib", "hmac", "email",
    "http", "urllib", "contextvars", "random", "string", "types", "warnings", "decimal", "_collections_abc",
    "operator", "traceback", "linecache", "posixpath", "os", "genericpath", "copyreg", "ipaddress", "zoneinfo",
    "textwrap", "html", "encodings", "codecs", "io", "struct", "socket", "ssl", "secrets", "reprlib", "heapq",
    "bisect", "numbers", "annotationlib", "dis", "tokenize", "ast",
}
_PACKAGE_LAYER = {pkg: layer for layer, pkgs in LAYERS.items() for pkg in pkgs}
# Frames every sample passes through (the process's entry, the event loop, thread and executor
# trampolines, the benchmark's own query counter): left out of "total time by function".
PLUMBING = (
    "<frozen runpy>", "daphne/cli.py", "daphne/__main__.py", "daphne/server.py", "twisted/internet/asyncioreactor.py",
    "asyncio/base_events.py", "asyncio/events.py", "threading.py", "concurrent/futures/thread.py", "asgiref/sync.py",
    "asgiref/current_thread_executor.py", "instrument.py", "bench/instrument.py",
)


def parse_frame(text: str) -> tuple[str, str]:
    match = FRAME.match(text)
    if not match:
        return text, ""
    return match["func"], match["file"]


def package_of(file: str) -> str:
    file = file.replace("\\", "/")
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    head = file.split("/", 1)[0] if "/" in file else file.removesuffix(".py")
    return head.lstrip("<").rstrip(">")


def read_collapsed(path: Path) -> list[tuple[str, list[tuple[str, str]], int]]:
    samples = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        thread = parts[0]
        if thread.startswith("thread ("):
            thread = thread.split(": ", 1)[-1] or thread
            parts = parts[1:]
        else:
            thread = "?"
        samples.append((thread, [parse_frame(p) for p in parts], int(count)))
    return samples


def _thread_group(name: str) -> str:
    # asgiref runs sync code on executor threads: `ThreadPoolExecutor-0_0` is the shared one
    # (thread-sensitive calls outside a request), the others are one per request (Django's ASGI
    # handler gives every request its own thread-sensitive context).
    match = re.match(r"ThreadPoolExecutor-(\d+)_\d+$", name)
    if match:
        return "ThreadPoolExecutor-0 (shared)" if match[1] == "0" else "ThreadPoolExecutor-N (one per request)"
    return re.sub(r"[_-]?\d+$", "", name) or "?"


def summarise_collapsed(path: Path, *, top: int = 40) -> dict[str, Any]:
    samples = read_collapsed(path)
    total = sum(n for _, _, n in samples) or 1
    threads: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    leaf_packages: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    for thread, frames, n in samples:
        threads[_thread_group(thread)] += n
        if not frames:
            continue
        func, file = frames[-1]
        leaf_packages[package_of(file)] += n
        self_time[f"{func} ({file})"] += n
        for key in {f"{f} ({fl})" for f, fl in frames if fl not in PLUMBING}:
            total_time[key] += n
        layer = None
        for _func, fl in reversed(frames):
            pkg = package_of(fl)
            if pkg in GENERIC:
                continue
            layer = _PACKAGE_LAYER.get(pkg, f"other ({pkg})")
            break
        layers[layer or "generic stdlib"] += n

    def share(counter: Counter[str], limit: int | None = None) -> list[dict[str, Any]]:
        return [{"name": k, "samples": v, "percent": round(100 * v / total, 1)} for k, v in counter.most_common(limit)]

    summary = {
        "samples": total,
        "threads": share(threads),
        "layers": share(layers),
        "leaf_packages": share(leaf_packages, top),
        "self": share(self_time, top),
        "total": share(total_time, top),
    }
    summary["text"] = render(summary)
    return summary


def render(summary: dict[str, Any]) -> str:
    lines = [f"{summary['samples']} samples (on-CPU, all threads)", "", "by thread:"]
    lines += [f"  {e['percent']:5.1f}%  {e['name']}" for e in summary["threads"]]
    lines += ["", "by layer (innermost non-generic frame):"]
    lines += [f"  {e['percent']:5.1f}%  {e['name']}" for e in summary["layers"]]
    lines += ["", "self time by package (innermost frame):"]
    lines += [f"  {e['percent']:5.1f}%  {e['name']}" for e in summary["leaf_packages"][:15]]
    lines += ["", "self time by function:"]
    lines += [f"  {e['percent']:5.1f}%  {e['name']}" for e in summary["self"]]
    lines += ["", "total time by function (anywhere on the stack; event-loop, thread and executor frames left out):"]
    lines += [f"  {e['percent']:5.1f}%  {e['name']}" for e in summary["total"]]
    return "\n".join(lines) + "\n"


def write_speedscope(path: Path, out: Path) -> None:
    frames: dict[tuple[str, str], int] = {}
    by_thread: dict[str, tuple[list[list[int]], list[int]]] = {}
    for thread, stack, n in read_collapsed(path):
        indexes = []
        for func, file in stack:
            key = (func, file)
            if key not in frames:
                frames[key] = len(frames)
            indexes.append(frames[key])
        stacks, weights = by_thread.setdefault(_thread_group(thread), ([], []))
        stacks.append(indexes)
        weights.append(n)
    profiles = [
        {"type": "sampled", "name": thread, "unit": "none", "startValue": 0, "endValue": sum(weights),
         "samples": stacks, "weights": weights}
        for thread, (stacks, weights) in sorted(by_thread.items(), key=lambda kv: -sum(kv[1][1]))
    ]
    out.write_text(json.dumps({
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": func, "file": file} for (func, file) in frames]},
        "profiles": profiles,
        "name": path.name,
        "exporter": "bench/profile_summary.py",
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("collapsed", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--speedscope", type=Path, help="also write a speedscope file here")
    args = parser.parse_args()
    summary = summarise_collapsed(args.collapsed, top=args.top)
    print(summary["text"])
    if args.speedscope:
        write_speedscope(args.collapsed, args.speedscope)


if __name__ == "__main__":
    main()
