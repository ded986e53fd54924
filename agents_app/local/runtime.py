"""Installing llama-cpp-python, which has no binary wheel on PyPI and builds from source.

A build takes about 3.5 minutes on 2 cores, so its wheel is kept in the cache folder
(`<AGENTS_LOCAL_CACHE_DIR>/wheels`) and reused by every later install. The build is
portable (`-DGGML_NATIVE=OFF`): a wheel tuned to one CPU can crash on another.
"""

from __future__ import annotations

import collections
import importlib.metadata
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from agents_app.local.assembly import wheels_dir
from agents_app.local.errors import Echo, LocalModelError, print_line
from agents_app.local.specs import LLAMA_CPP_CMAKE_ARGS, LLAMA_CPP_REQUIREMENT

LLAMA_CPP_VERSION = LLAMA_CPP_REQUIREMENT.split("==")[1]
# llama-cpp-python's own dependencies, pinned like the rest of the project.
LLAMA_CPP_DEPENDENCIES = ["numpy==2.4.6", "diskcache==5.6.3", "Jinja2==3.1.6", "MarkupSafe==3.0.4"]
BUILD_PROGRESS_EVERY_SECONDS = 10.0
_NINJA_STEP = re.compile(r"\[(\d+)/(\d+)\]")
_MAKE_STEP = re.compile(r"\[\s*(\d+)%\]")
_SOURCE = re.compile(r"\s-c\s+(\S+)")
_TARGET = re.compile(r"\s-o\s+(\S+)")


def build_step(line: str) -> str | None:
    """A short description of a build-log line that starts a build step, else None."""
    ninja = _NINJA_STEP.search(line)
    make = _MAKE_STEP.search(line)
    if not ninja and not make:
        return None
    file = _SOURCE.search(line) or _TARGET.search(line)  # the file compiled, else the one linked
    what = Path(file.group(1)).name if file else line[(ninja or make).end() :].strip()[:60]
    if ninja:
        done, total = int(ninja.group(1)), int(ninja.group(2))
        return f"step {done}/{total} ({100 * done // total}%): {what}"
    return f"{make.group(1)}%: {what}"


def installed_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def cached_wheel() -> Path | None:
    wheels = sorted(wheels_dir().glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"))
    return wheels[-1] if wheels else None


def _pump(stream: Iterable[str] | None, lines: queue.Queue[str | None]) -> None:
    try:
        for line in stream or ():
            lines.put(line)
    finally:
        lines.put(None)


def build_wheel(*, echo: Echo = print_line) -> Path:
    """`pip wheel` llama-cpp-python into the cache, printing a progress line now and then."""
    wheels_dir().mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CMAKE_ARGS": LLAMA_CPP_CMAKE_ARGS}
    command = [
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-v",
        LLAMA_CPP_REQUIREMENT, "-w", str(wheels_dir()),
    ]  # fmt: skip
    echo(
        f"Building {LLAMA_CPP_REQUIREMENT} from source (CMAKE_ARGS={LLAMA_CPP_CMAKE_ARGS}); about 3-4 minutes on 2 cores..."
    )
    started = last = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=40)
    step = "starting"
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        # Read on a thread so that a progress line appears on time even while one big file
        # compiles for a minute without printing anything.
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                tail.append(line.rstrip())
                step = build_step(line) or step
            now = time.monotonic()
            if now - last >= BUILD_PROGRESS_EVERY_SECONDS:
                last = now
                echo(f"  {int(now - started) // 60}m{int(now - started) % 60:02d}s  {step}")
        returncode = proc.wait()
    if returncode != 0:
        echo("\n".join(tail))
        raise LocalModelError(f"Building llama-cpp-python failed (exit {returncode}); it needs gcc, g++ and cmake.")
    wheel = cached_wheel()
    if wheel is None:
        raise LocalModelError(f"pip reported success but left no wheel in {wheels_dir()}.")
    echo(f"Built {wheel.name} in {time.monotonic() - started:.0f}s (kept in {wheels_dir()}).")
    return wheel


def ensure_llama_cpp(*, echo: Echo = print_line, allow_build: bool = True) -> None:
    """Install llama-cpp-python from the cached wheel, building that wheel first if needed."""
    version = installed_version()
    if version == LLAMA_CPP_VERSION:
        echo(f"llama-cpp-python {version} is installed.")
        return
    wheel = cached_wheel()
    if wheel is None:
        if not allow_build:
            raise LocalModelError(f"llama-cpp-python is not installed and no wheel is cached in {wheels_dir()}.")
        wheel = build_wheel(echo=echo)
    echo(f"Installing {wheel.name} and its pinned dependencies...")
    command = [
        sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
        "--find-links", str(wheels_dir()), "--only-binary", "llama-cpp-python",
        LLAMA_CPP_REQUIREMENT, *LLAMA_CPP_DEPENDENCIES,
    ]  # fmt: skip
    if subprocess.run(command, check=False).returncode != 0:
        raise LocalModelError("pip could not install llama-cpp-python from the cached wheel.")
    importlib.invalidate_caches()
