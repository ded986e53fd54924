"""A real local model as the offline default: Qwen2.5-Coder-Instruct (GGUF) on llama.cpp.

The rest of the app uses three functions:

- `is_installed()`: llama-cpp-python is importable and the configured model file
  (`settings.AGENTS_LOCAL_MODEL`) is assembled and verified. Cheap: it reads the marker
  written after the sha256 check, it does not re-hash the file.
- `get_model()`: the process-wide `LocalModel` (an SDK `Model`); the weights load on first use.
- `model_label()`: the short name stored on messages.

Install with `python manage.py local_model install` (see "The local model" in README.md).
"""

from __future__ import annotations

import importlib.util
import threading
from typing import TYPE_CHECKING

from agents_app.local.specs import ModelSpec, get_spec

if TYPE_CHECKING:
    from agents.models.interface import Model

__all__ = ["get_model", "is_installed", "model_label"]

_model: Model | None = None
_model_key: str | None = None
_lock = threading.Lock()


def llama_cpp_available() -> bool:
    # find_spec does not import it: importing loads the native library.
    return importlib.util.find_spec("llama_cpp") is not None


def is_installed(spec: ModelSpec | None = None) -> bool:
    from agents_app.local.assembly import is_verified

    return llama_cpp_available() and is_verified(spec or get_spec())


def model_label() -> str:
    return get_spec().label


def get_model() -> Model:
    """The local model, one per process. Raises `LocalModelError` when not installed."""
    global _model, _model_key
    spec = get_spec()
    with _lock:
        if _model is None or _model_key != spec.key:
            from django.conf import settings

            from agents_app.local.assembly import LocalModelError, require_verified
            from agents_app.local.backend import LlamaBackend
            from agents_app.local.model import LocalModel

            if not llama_cpp_available():
                raise LocalModelError("llama-cpp-python is not installed. Run `python manage.py local_model install`.")
            backend = LlamaBackend(
                require_verified(spec),
                n_ctx=settings.AGENTS_LOCAL_CONTEXT,
                n_threads=settings.AGENTS_LOCAL_THREADS,
                before_load=lambda: require_verified(spec),
            )
            _model, _model_key = LocalModel(backend, label=spec.label), spec.key
        return _model
