"""The project's layout holds: imports between apps point one way, and each concept has one home.

    chat ──→ usage ──→ accounts
      │        │
      └──→ agents_app ←┘        (and every app may use config's shared modules)

`accounts` and `agents_app` import nothing from the apps above them; `agents_app` refers to a
chat row only through a lazy foreign key ("chat.Run"). Tests and migrations are not checked:
tests may reach anywhere, and migrations use historical models by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "agents_app", "usage", "chat", "evals")
# The modules of config that apps use; they import no app themselves.
SHARED_CONFIG = {"config.errors", "config.logging", "config.durations", "config.ratelimits", "config.metrics", "config.layers"}
ALLOWED = {
    "accounts": {"accounts"},
    "agents_app": {"agents_app"},
    "usage": {"usage", "accounts", "agents_app"},
    "chat": {"chat", "usage", "accounts", "agents_app"},
    "evals": {"evals", "chat", "usage", "accounts", "agents_app"},
}


def _source_files(package: str, root: Path):
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).parts
        if "tests" in parts or "migrations" in parts:
            continue
        yield path


def _imports(path: Path):
    """Every module imported anywhere in the file (functions and TYPE_CHECKING blocks too)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from config import errors`
                yield node.lineno, f"{node.module}.{alias.name}"


def _violations(package: str, root: Path = ROOT) -> list[str]:
    found = []
    for path in _source_files(package, root):
        where = path.relative_to(root)
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top == "config" and module != "config" and not module.startswith(tuple(SHARED_CONFIG)):
                found.append(f"{where}:{line} imports {module} (apps use only {sorted(SHARED_CONFIG)})")
            elif top in APPS and top not in ALLOWED[package]:
                found.append(f"{where}:{line} imports {module}")
    return found


def test_apps_import_only_the_apps_below_them():
    problems = [problem for package in APPS if (ROOT / package).exists() for problem in _violations(package)]
    assert problems == []


def test_shared_config_modules_import_no_app():
    problems = []
    for module in SHARED_CONFIG:
        path = ROOT / (module.replace(".", "/") + ".py")
        problems += [f"{module}:{line} imports {name}" for line, name in _imports(path) if name.split(".")[0] in APPS]
    assert problems == []


def test_the_layout_check_catches_a_forbidden_import(tmp_path):
    # The check itself must be able to fail: an agents_app module importing chat is reported.
    (tmp_path / "agents_app").mkdir()
    (tmp_path / "agents_app" / "bad.py").write_text("from chat.models import Run\n\ndef f():\n    import usage.quotas\n")
    reported = [problem.split(" imports ")[1] for problem in _violations("agents_app", tmp_path)]
    assert reported == ["chat.models", "chat.models.Run", "usage.quotas"]


def _engine_reach(root: Path = ROOT) -> list[str]:
    """Modules outside `chat/engine/` that reach past its façade (`chat.engine`)."""
    found = []
    for package in APPS + ("config",):
        for path in _source_files(package, root):
            where = path.relative_to(root)
            if where.parts[:2] == ("chat", "engine"):
                continue
            for line, module in _imports(path):
                if module.startswith("chat.engine.") and module.count(".") >= 2 and module.split(".")[2] not in _FACADE:
                    found.append(f"{where}:{line} imports {module}")
    return found


# What `from chat.engine import X` may name (the façade's own names, not its modules).
_FACADE = set(__import__("chat.engine", fromlist=["__all__"]).__all__)


def test_the_run_is_reached_only_through_the_engine_facade():
    assert _engine_reach() == []


def test_the_facade_check_catches_a_reach_past_it(tmp_path):
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "bad.py").write_text(
        "from chat.engine import start\nfrom chat.engine.runs import RunExecutor\nimport chat.engine.transitions\n"
    )
    assert [problem.split(" imports ")[1] for problem in _engine_reach(tmp_path)] == [
        "chat.engine.runs", "chat.engine.runs.RunExecutor", "chat.engine.transitions"
    ]
