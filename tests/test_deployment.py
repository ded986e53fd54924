"""The compose stack and the settings agree: every variable the app containers get is one
the settings read, and production settings fail fast instead of guessing."""

import asyncio
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = secrets.token_urlsafe(50)


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
    # Staging mail goes to Mailpit, never to the console (docs/operations.md#mail).
    assert compose["services"]["mailpit"]["image"].startswith("axllent/mailpit")
    assert compose["services"]["web"]["environment"]["EMAIL_HOST"] == "${EMAIL_HOST:-mailpit}"
    assert "mailpit" in compose["services"]["web"]["depends_on"]


def test_env_example_lists_only_real_settings():
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert names and names <= settings_env_names()


def _settings_with(env: dict[str, str], code: str = "import django; django.setup()") -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "ALLOWED_HOSTS", "DEBUG", "ALLOW_CONSOLE_EMAIL"} and not k.startswith("EMAIL_")
    }
    return subprocess.run(
        [sys.executable, "-c", code],
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
    result = _settings_with({"DEBUG": "0", "SECRET_KEY": STRONG_KEY})
    assert result.returncode != 0 and "ALLOWED_HOSTS must be set" in result.stderr


def test_unknown_model_provider_is_refused_with_the_choices():
    result = _settings_with({"AGENTS_MODEL_PROVIDER": "bogus"})
    assert result.returncode != 0 and "openai, local, scripted" in result.stderr


@pytest.mark.parametrize(
    "weak",
    ["x" * 50, "short-but-varied-0123", "abcd" * 20, "django-insecure-" + secrets.token_urlsafe(50)],
)
def test_production_refuses_a_weak_secret_key(weak):
    result = _settings_with({"DEBUG": "0", "SECRET_KEY": weak, "ALLOWED_HOSTS": "chat.example.com"})
    assert result.returncode != 0 and "SECRET_KEY is too weak" in result.stderr


PRODUCTION = {"DEBUG": "0", "SECRET_KEY": STRONG_KEY, "ALLOWED_HOSTS": "chat.example.com"}
MAIL_PROBE = """
import django
django.setup()
from django.conf import settings
print(settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS, settings.EMAIL_HOST_USER)
"""


def test_production_without_a_mail_server_refuses_to_start_rather_than_log_reset_links():
    result = _settings_with(PRODUCTION, code=MAIL_PROBE)
    assert result.returncode != 0
    assert "No mail server is configured" in result.stderr and "password-reset links" in result.stderr
    assert "EMAIL_HOST" in result.stderr and "ALLOW_CONSOLE_EMAIL=1" in result.stderr


@pytest.mark.parametrize(
    ("mail", "expected"),
    [
        (
            {"EMAIL_HOST": "smtp.example.com", "EMAIL_HOST_USER": "chat@example.com", "EMAIL_HOST_PASSWORD": "pw"},
            "smtp.EmailBackend smtp.example.com 587 True chat@example.com",
        ),
        ({"EMAIL_URL": "smtp+tls://chat%40example.com:pw@smtp.example.com:2525"}, "smtp.EmailBackend smtp.example.com 2525 True chat@example.com"),
        ({"ALLOW_CONSOLE_EMAIL": "1"}, "console.EmailBackend  587"),
        ({"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}, "console.EmailBackend  587"),
    ],
)
def test_production_starts_with_an_smtp_server_or_an_explicit_console_opt_in(mail, expected):
    result = _settings_with({**PRODUCTION, **mail}, code=MAIL_PROBE)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_development_still_prints_mail_to_the_console_without_configuration():
    result = _settings_with({"DEBUG": "1"}, code=MAIL_PROBE)
    assert result.returncode == 0 and "console.EmailBackend" in result.stdout


def test_development_still_starts_with_a_weak_secret_key():
    assert _settings_with({"DEBUG": "1", "SECRET_KEY": "dev"}).returncode == 0


def documented_production_env() -> dict[str, str]:
    """The block after `<!-- production-env -->` in docs/operations.md, with a real key."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = text.split("<!-- production-env -->", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    env = dict(line.split("=", 1) for line in block.strip().splitlines())
    env["SECRET_KEY"] = STRONG_KEY
    # Checked without connecting anywhere: no database or Redis is needed by `check --deploy`.
    env.pop("REDIS_URL")
    env["DATABASE_URL"] = "sqlite:///:memory:"
    return env


def test_check_deploy_passes_clean_with_the_documented_production_env():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "REDIS_URL"}, **documented_production_env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


HEADERS_PROBE = """
import django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="chat.example.com")
plain = client.get("/api/schema")
secure = client.get("/api/schema", secure=True)
admin = client.get("/admin/login/", secure=True)
print(plain.status_code, plain.get("Location"))
print(secure.status_code, secure.get("Strict-Transport-Security"))
print(secure.get("Content-Security-Policy"))
print(admin.get("Content-Security-Policy"))
"""


def test_production_redirects_to_https_and_sends_hsts_and_a_strict_csp():
    result = _settings_with(documented_production_env(), code=HEADERS_PROBE)
    assert result.returncode == 0, result.stderr
    plain, secure, csp, admin_csp = result.stdout.strip().splitlines()[-4:]

    assert plain == "301 https://chat.example.com/api/schema"
    assert secure == "200 max-age=31536000; includeSubDomains; preload"
    directives, admin = _directives(csp), _directives(admin_csp)
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["default-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'" and "unsafe" not in csp
    assert admin["script-src"] == "'self'" and admin["style-src"] == "'self' 'unsafe-inline'"


def _directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def _layer_config(redis_url: str) -> dict:
    code = "import django, json; django.setup(); from django.conf import settings; print(json.dumps(settings.CHANNEL_LAYERS['default'], default=str))"
    result = _settings_with({"REDIS_URL": redis_url}, code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis; runs on the Postgres + Redis pass")
async def test_deployments_on_different_redis_databases_do_not_hear_each_others_groups():
    """Redis pub/sub ignores the DB number: without a prefix of its own, a revocation sent to
    `user.1` by one deployment closed the sockets of user 1 of another on the same server."""
    from channels_redis.pubsub import RedisPubSubChannelLayer

    base = settings.REDIS_URL.rsplit("/", 1)[0]
    here, neighbour, twin = _layer_config(f"{base}/11"), _layer_config(f"{base}/12"), _layer_config(f"{base}/11")
    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] != neighbour["CONFIG"]["prefix"]

    def layer(config: dict) -> RedisPubSubChannelLayer:
        return RedisPubSubChannelLayer(hosts=[{"address": config["CONFIG"]["hosts"][0]["address"]}], prefix=config["CONFIG"]["prefix"])

    listener, other, same = layer(here), layer(neighbour), layer(twin)
    try:
        channel = await listener.new_channel()
        await listener.group_add("user.1", channel)
        await other.group_send("user.1", {"type": "auth.revoked", "from": "the neighbour"})
        await same.group_send("user.1", {"type": "auth.revoked", "from": "this deployment"})
        heard = await asyncio.wait_for(listener.receive(channel), timeout=10)
    finally:
        for each in (listener, other, same):
            await each.flush()
    assert heard["from"] == "this deployment"  # the neighbour's message, sent first, never arrived


def dockerfile_env() -> dict[str, str]:
    """The variables the image's `ENV` instructions set (continuation lines joined)."""
    source = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in source.splitlines():
        if line.strip().upper().startswith("ENV "):
            for pair in shlex.split(line.strip()[4:]):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def compose_app_env() -> dict[str, str]:
    """The web service's environment as compose resolves it with nothing set but a strong
    SECRET_KEY: `${NAME:-default}` is its default, `${NAME:?message}` is what compose demands."""
    environment = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]["environment"]
    given = {"SECRET_KEY": STRONG_KEY}

    def resolve(match: re.Match) -> str:
        name, op, default = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in given:
            return given[name]
        assert op != ":?", f"compose requires {name}"
        return default if op == ":-" else ""

    return {k: re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", resolve, str(v)) for k, v in environment.items()}


def test_the_image_runs_in_production_mode_and_refuses_to_start_without_a_secret_key():
    image = dockerfile_env()
    assert image.get("DEBUG") == "0"
    result = _settings_with(image)
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off." in result.stderr
    # A developer's .env (DEBUG=1, a key) never reaches the build context.
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_compose_gives_the_image_what_production_mode_needs():
    result = _settings_with(
        {**dockerfile_env(), **compose_app_env()},
        code="import django; django.setup(); from django.conf import settings; print(settings.DEBUG, settings.ALLOWED_HOSTS)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False ['localhost', '127.0.0.1']"


def test_the_image_and_the_compose_file_agree_on_who_says_where_a_client_is():
    # daphne's --proxy-headers would take the leftmost X-Forwarded-For entry, the client's own.
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    assert "--proxy-headers" not in cmd
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["web"]["environment"]["TRUSTED_PROXY_COUNT"] == "1"  # nginx, the one proxy
    assert documented_production_env()["TRUSTED_PROXY_COUNT"] == "1"
