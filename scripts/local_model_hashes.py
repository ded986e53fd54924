#!/usr/bin/env python3
"""Record the sha256 of every file the local-model installer may fetch, in requirements-local*.txt.

    python scripts/local_model_hashes.py            # rewrite the --hash lines of bumped pins
    python scripts/local_model_hashes.py --check    # exit 1 if a recorded hash is missing or stale

For each `name==version` in the files it asks the index (PEP 691 JSON, what pip reads) for
that release's files and records: the sdist only for projects built from source here
(llama-cpp-python); otherwise the universal wheel, or the CPython 3.11 wheels for Linux and
macOS on x86_64 and arm64 (the installer is POSIX-only; it installs with --only-binary).

A release whose version did not change but whose files did (a file added to or removed from
a pinned version: exactly what hash pinning is there to catch) is refused unless
--accept-changed-release is given; find out why it changed first. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ["requirements-local.txt", "requirements-local-build.txt", "requirements-local-0.5b.txt"]
SOURCE_ONLY = {"llama-cpp-python"}  # built from source with our CMAKE_ARGS; its wheels are not used
PYTHON = (3, 11)
PLATFORM = re.compile(
    r"(manylinux\w*|musllinux_\d+_\d+)_(x86_64|aarch64)|macosx_\d+_\d+_(x86_64|arm64|universal2)"
)
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release_files(index: str, name: str, version: str) -> list[dict]:
    request = urllib.request.Request(
        f"{index.rstrip('/')}/{canonical(name)}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    project = "[-_.]".join(re.escape(part) for part in canonical(name).split("-"))
    prefix = re.compile(rf"^{project}-{re.escape(version)}(-|\.tar\.gz$|\.zip$)", re.I)
    return [f for f in files if prefix.match(f["filename"]) and not f.get("yanked")]


def _wheel_tags(filename: str) -> tuple[set[str], set[str], set[str]]:
    python, abi, platform = filename[: -len(".whl")].split("-")[-3:]
    return set(python.split(".")), set(abi.split(".")), set(platform.split("."))


def _fits(filename: str) -> bool:
    """A CPython 3.11 wheel the installer may pick on Linux or macOS."""
    pythons, abis, platforms = _wheel_tags(filename)
    cp = f"cp{PYTHON[0]}{PYTHON[1]}"
    abi3 = "abi3" in abis and any(re.fullmatch(r"cp3(\d+)", p) and int(p[3:]) <= PYTHON[1] for p in pythons)
    if not ((cp in pythons and cp in abis) or abi3):
        return False
    return any(PLATFORM.fullmatch(p) for p in platforms)


def select(name: str, files: list[dict]) -> list[dict]:
    if canonical(name) in SOURCE_ONLY:
        return [f for f in files if f["filename"].endswith(".tar.gz")]
    wheels = [f for f in files if f["filename"].endswith(".whl")]
    universal = [f for f in wheels if {"none"} == _wheel_tags(f["filename"])[1] and "any" in _wheel_tags(f["filename"])[2]]
    return universal or [f for f in wheels if _fits(f["filename"])]


def blocks(text: str) -> list[tuple[str, list[str]]]:
    """The file as ("text", lines) and ("pin", lines) blocks, a pin with its continuation lines."""
    out: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if PIN.match(lines[i]):
            block = [lines[i]]
            while block[-1].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                block.append(lines[i])
            out.append(("pin", block))
        else:
            out.append(("text", [lines[i]]))
        i += 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    parser.add_argument("--index-url", default="https://pypi.org/simple")
    parser.add_argument("--accept-changed-release", action="store_true", help="record a pinned release whose files changed")
    args = parser.parse_args()
    stale = refused = False
    for filename in FILES:
        path = ROOT / filename
        text = path.read_text()
        out: list[str] = []
        for kind, lines in blocks(text):
            if kind == "text":
                out.extend(lines)
                continue
            joined = " ".join(line.rstrip("\\ ") for line in lines)
            match = PIN.match(joined)
            name, version = match["name"], match["version"]
            recorded = HASH.findall(joined)
            chosen = select(name, release_files(args.index_url, name, version))
            if not chosen:
                sys.exit(f"{filename}: {name}=={version} has no file the installer could use on {args.index_url}")
            digests = [f["hashes"]["sha256"] for f in chosen]
            if recorded and set(recorded) != set(digests):
                stale = True
                print(f"{filename}: {name}=={version}: the release's files differ from the recorded hashes:")
                for f in chosen:
                    if f["hashes"]["sha256"] not in recorded:
                        print(f"    new:  {f['filename']} {f['hashes']['sha256']} (uploaded {f.get('upload-time', '?')})")
                for digest in sorted(set(recorded) - set(digests)):
                    print(f"    gone: {digest}")
                if not args.accept_changed_release:
                    refused = True
                    out.extend(lines)
                    continue
            elif not recorded:
                stale = True
                print(f"{filename}: {name}=={version}: recording {len(digests)} file(s)")
            hashes = [f"    --hash=sha256:{digest}" for digest in digests]
            out.extend(line + " \\" for line in [f"{name}=={version}", *hashes[:-1]])
            out.append(hashes[-1])
        new_text = "\n".join(out) + "\n"
        if not args.check and new_text != text:
            path.write_text(new_text)
    if refused:
        print("Refused: a pinned release changed. Find out why before recording it (--accept-changed-release).")
        return 1
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
