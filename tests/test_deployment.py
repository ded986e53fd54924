"""The compose stack and the settings agree: every variable the app containers get is one
the settings read, and production settings fail fast instead of guessing."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def settings_env_names() -> set[str]:
    source = (ROOT / "config" / "settings.py").read_text()
    return set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"', source))


def test_compose_app_environment_uses_only_settings_the_app_reads():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    known = settings_env_names()
    for name in ("web", "migrate"):
        service = compose["services"][name]
        environment = set(service["environment"])
        assert environment <= known, f"{name} sets variables the settings never read: {environment - known}"
        assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS"} <= environment
        assert service["environment"]["DEBUG"] == "0"
    assert compose["services"]["web"]["deploy"]["replicas"] >= 2
    assert {"postgres", "redis", "web", "proxy"} <= set(compose["services"])


def test_env_example_lists_only_real_settings():
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert names and names <= settings_env_names()


def _settings_with(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "ALLOWED_HOSTS", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_without_a_secret_key_refuses_to_start():
    result = _settings_with({"DEBUG": "0", "ALLOWED_HOSTS": "chat.example.com"})
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_production_without_allowed_hosts_refuses_to_start():
    result = _settings_with({"DEBUG": "0", "SECRET_KEY": "x" * 50})
    assert result.returncode != 0 and "ALLOWED_HOSTS must be set" in result.stderr


def test_unknown_model_provider_is_refused_with_the_choices():
    result = _settings_with({"AGENTS_MODEL_PROVIDER": "bogus"})
    assert result.returncode != 0 and "openai, local, scripted" in result.stderr
