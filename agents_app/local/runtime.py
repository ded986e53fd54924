"""Installing llama-cpp-python, which has no binary wheel on PyPI and builds from source.

A build takes about 3.5 minutes on 2 cores, so its wheel is kept in the cache folder
(`<AGENTS_LOCAL_CACHE_DIR>/wheels`) and reused by every later install. The build is
portable (`-DGGML_NATIVE=OFF`): a wheel tuned to one CPU can crash on another.

Nothing unchecked goes into the build: the sdist must match its sha256 in
requirements-local.txt, and the build runs with --no-build-isolation in a throwaway
virtualenv holding the build dependencies of requirements-local-build.txt, installed
hash-checked (in the isolated build environment pip makes itself, it would fetch them
without checking any hash). The built wheel's sha256 is written next to it (`<wheel>.built`,
with the sdist's), and the wheel is installed with that hash and its dependencies' recorded
ones. A cached wheel without that record (built by an earlier, unchecked installer) or from
another sdist is not used: it is built again.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import json
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
import venv
from collections.abc import Iterable
from pathlib import Path

from agents_app.local import pins
from agents_app.local.assembly import wheels_dir
from agents_app.local.errors import Echo, LocalModelError, print_line
from agents_app.local.specs import LLAMA_CPP_CMAKE_ARGS, LLAMA_CPP_REQUIREMENT

LLAMA_CPP_VERSION = LLAMA_CPP_REQUIREMENT.split("==")[1]
# llama-cpp-python's own dependencies; their sha256s are in requirements-local.txt.
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


def _sdist_pin() -> pins.Pin:
    return pins.pins_for(pins.RUNTIME_REQUIREMENTS, [LLAMA_CPP_REQUIREMENT])[0]


def build_record_path(wheel: Path) -> Path:
    return wheel.with_name(wheel.name + ".built")


def build_record(wheel: Path) -> dict | None:
    """What `build_wheel` wrote about this wheel, if it was built from the recorded sdist."""
    try:
        record = json.loads(build_record_path(wheel).read_text())
    except (OSError, ValueError):
        return None
    built_from_recorded_sdist = record.get("source_sha256") == list(_sdist_pin().hashes)
    return record if built_from_recorded_sdist and re.fullmatch(r"[0-9a-f]{64}", record.get("sha256", "")) else None


def cached_wheel() -> Path | None:
    """The cached wheel built (hash-checked) from the recorded sdist, else None."""
    wheels = sorted(wheels_dir().glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"), reverse=True)
    return next((wheel for wheel in wheels if build_record(wheel)), None)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _build_environment(folder: Path, *, echo: Echo) -> Path:
    """A throwaway virtualenv with the hash-checked build dependencies; returns its python."""
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(folder)  # this pip installs into it
    python = folder / "bin" / "python"
    echo(f"Installing the build dependencies ({pins.BUILD_REQUIREMENTS}), each checked against its sha256...")
    pins.run_pip(
        ["install", "--require-hashes", "--only-binary", ":all:", "-r", str(pins.ROOT / pins.BUILD_REQUIREMENTS)],
        what="llama-cpp-python's build dependencies",
        source=pins.BUILD_REQUIREMENTS,
        echo=echo,
        python=python,
    )
    return python


def _pump(stream: Iterable[str] | None, lines: queue.Queue[str | None]) -> None:
    try:
        for line in stream or ():
            lines.put(line)
    finally:
        lines.put(None)


def build_wheel(*, echo: Echo = print_line) -> Path:
    """`pip wheel` the hash-checked sdist into the cache, printing a progress line now and then."""
    wheels_dir().mkdir(parents=True, exist_ok=True)
    sdist = _sdist_pin()
    with tempfile.TemporaryDirectory(prefix="llama-cpp-build-") as folder:
        python = _build_environment(Path(folder) / "env", echo=echo)
        requirements = Path(folder) / "requirements.txt"
        requirements.write_text(sdist.line() + "\n")
        command = pins.pip_command(
            "wheel", "--no-deps", "--require-hashes", "--no-build-isolation", "--no-binary", "llama-cpp-python",
            "--no-cache-dir", "-v", "-r", str(requirements), "-w", str(wheels_dir()),
            python=python,
        )  # fmt: skip
        started = time.monotonic()
        returncode, tail = _run_build(command, started=started, echo=echo)
    if returncode != 0:
        refusal = pins.hash_refusal("\n".join(tail), source=pins.RUNTIME_REQUIREMENTS)
        if refusal:
            raise LocalModelError(refusal)
        echo("\n".join(tail))
        raise LocalModelError(f"Building llama-cpp-python failed (exit {returncode}); it needs gcc, g++ and cmake.")
    built = sorted(
        wheels_dir().glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"), key=lambda path: path.stat().st_mtime_ns
    )
    if not built:
        raise LocalModelError(f"pip reported success but left no wheel in {wheels_dir()}.")
    wheel = built[-1]
    record = {
        "wheel": wheel.name,
        "sha256": _file_sha256(wheel),
        "source": f"{LLAMA_CPP_REQUIREMENT} ({pins.RUNTIME_REQUIREMENTS})",
        "source_sha256": list(sdist.hashes),
        "build_requirements": [pin.requirement for pin in pins.read_pins(pins.BUILD_REQUIREMENTS).values()],
    }
    build_record_path(wheel).write_text(json.dumps(record, indent=2) + "\n")
    echo(f"Built {wheel.name} in {time.monotonic() - started:.0f}s (kept in {wheels_dir()}).")
    return wheel


def _run_build(command: list[str], *, started: float, echo: Echo) -> tuple[int, collections.deque[str]]:
    env = {**os.environ, "CMAKE_ARGS": LLAMA_CPP_CMAKE_ARGS}
    echo(
        f"Building {LLAMA_CPP_REQUIREMENT} from its hash-checked sdist (CMAKE_ARGS={LLAMA_CPP_CMAKE_ARGS}); "
        "about 3-4 minutes on 2 cores..."
    )
    last = started
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
        return proc.wait(), tail


def ensure_llama_cpp(*, echo: Echo = print_line, allow_build: bool = True) -> None:
    """Install llama-cpp-python from the cached wheel, building that wheel first if needed.

    The wheel goes in with the sha256 its build recorded, its dependencies with those in
    requirements-local.txt, all in one hash-checking pip run: one mismatch installs nothing.
    """
    version = installed_version()
    if version == LLAMA_CPP_VERSION:
        echo(f"llama-cpp-python {version} is installed.")
        return
    wheel = cached_wheel()
    if wheel is None:
        if not allow_build:
            raise LocalModelError(
                f"llama-cpp-python is not installed and no hash-checked build of it is cached in {wheels_dir()}."
            )
        wheel = build_wheel(echo=echo)
    record = build_record(wheel) or {}
    dependencies = pins.pins_for(pins.RUNTIME_REQUIREMENTS, LLAMA_CPP_DEPENDENCIES)
    lines = [f"llama-cpp-python @ {wheel.as_uri()} --hash=sha256:{record.get('sha256')}"]
    echo(f"Installing {wheel.name} and its pinned dependencies, each checked against its sha256...")
    with pins.requirements_file([*lines, *(pin.line() for pin in dependencies)]) as requirements:
        pins.run_pip(
            ["install", "--require-hashes", "--only-binary", ":all:", "-r", str(requirements)],
            what="llama-cpp-python from the cached wheel",
            source=f"{pins.RUNTIME_REQUIREMENTS} (or {build_record_path(wheel).name} for the wheel)",
            echo=echo,
        )
    importlib.invalidate_caches()
