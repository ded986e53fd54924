"""Settings for the agents chat product.

Every value comes from the environment (or a `.env` file next to manage.py) with a
zero-configuration development default. With DEBUG off, anything that must not be
guessed in production (secret key, hosts) fails fast instead.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import environ
from csp.constants import NONE, SELF
from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # git-ignored: SQLite file, local state

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"
elif not DEBUG and (
    len(SECRET_KEY) < SECRET_KEY_MIN_LENGTH
    or len(set(SECRET_KEY)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
    or SECRET_KEY.startswith(SECRET_KEY_INSECURE_PREFIX)
):
    # The same test as `check --deploy` (security.W009), but fatal: sessions, password resets
    # and CSRF tokens are signed with it.
    raise ImproperlyConfigured(
        f"SECRET_KEY is too weak for production: use at least {SECRET_KEY_MIN_LENGTH} random characters "
        f"(at least {SECRET_KEY_MIN_UNIQUE_CHARACTERS} different ones), e.g. "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off.")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # daphne first so `runserver` serves ASGI (WebSockets included).
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "allauth",
    "allauth.account",
    "accounts",
    "agents_app",
    "usage",
    "chat",
    "evals",  # the agents' evaluation (manage.py evaluate); nothing imports it
]

MIDDLEWARE = [
    # First: every request (and every log line it causes) gets an id; its duration is logged.
    "config.logging.RequestIdMiddleware",
    # Content-Security-Policy on every response, static files and error responses included:
    # before every middleware that may answer by itself (config/security.py).
    "config.security.ContentSecurityPolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: DATABASE_URL, else a SQLite file under var/ -------------------------
VAR_DIR.mkdir(exist_ok=True)
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A thread keeps its SQLite connection: opening one (and its PRAGMAs and functions) for
    # every database call was an eighth of the server's CPU under load (bench/README.md).
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=300)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # WAL + a busy timeout let the daphne process and management commands share the file.
    # synchronous=NORMAL: in WAL mode the file cannot be corrupted by a crash, and a commit no
    # longer waits for the disk (a power cut may lose the last commits; the offline default).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
    # Tests use a file, not shared memory, so a daphne child process can see the test data.
    # Named per test process, so two test runs on one machine never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool("DB_POOL", default=True):
    # A pool of DB_POOL_SIZE connections per process (Django's psycopg pool): every thread
    # borrows one for the length of a request or a call and gives it back, so connections stay
    # bounded however many sockets and streams are open; a thread that finds them all busy
    # waits up to DB_POOL_TIMEOUT, then the request is refused as `overloaded` (503).
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # pooled connections are reused, not kept per thread
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env.int("DB_POOL_SIZE", default=16),
        "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: REDIS_URL switches on channels-redis and the Redis cache ----------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry

    REDIS_ASYNC_OPTIONS = {
        # After a Redis restart, pooled connections are dead: retry on a fresh connection
        # instead of failing the first command on each of them.
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "retry": AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        # redis-py 8 reads with a 5 s timeout by default, the same as channels-redis's blocking
        # BZPOPMIN: under load the reply lands just after it and the socket dies. Keep reads
        # well above it; keepalive still detects dead connections.
        "socket_timeout": 30,
        "socket_keepalive": True,
    }
    # Redis connections per process for the replay buffer and rate limits; a command that finds
    # them all busy waits up to REDIS_POOL_TIMEOUT for one (it never fails at once under load).
    REDIS_POOL_SIZE = env.int("REDIS_POOL_SIZE", default=32)
    REDIS_POOL_TIMEOUT = env.float("REDIS_POOL_TIMEOUT", default=10.0)
    # The channel layer: Redis pub/sub by default (one PUBLISH per event; a process subscribes
    # once per conversation it has listeners for, whatever their number). "core" is
    # channels-redis's list-based layer (capacity and expiry per channel, ~4 round trips per
    # group message); events a follower misses are refilled from the replay buffer either way.
    CHANNEL_LAYER = env.str("CHANNEL_LAYER", default="pubsub")
    # Redis pub/sub channels are server-wide, not per database number: two deployments (or a
    # test run and a benchmark) on one Redis server with different DB numbers would hear each
    # other's groups (`user.<id>` revocations included). The prefix keeps them apart.
    CHANNEL_LAYER_PREFIX = env.str("CHANNEL_LAYER_PREFIX", default=f"asgi.db{urlsplit(REDIS_URL).path.strip('/') or '0'}")
    if CHANNEL_LAYER == "pubsub":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [{"address": REDIS_URL, **REDIS_ASYNC_OPTIONS}], "prefix": CHANNEL_LAYER_PREFIX},
            }
        }
    elif CHANNEL_LAYER == "core":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [{"address": REDIS_URL, **REDIS_ASYNC_OPTIONS}], "prefix": CHANNEL_LAYER_PREFIX,
                    "capacity": 1500, "expiry": 30,
                },
            }
        }
    else:
        raise ImproperlyConfigured("CHANNEL_LAYER must be 'pubsub' or 'core'.")
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "retry_on_error": [RedisConnectionError, RedisTimeoutError],
                "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
            },
        }
    }
else:
    # One process only (development, tests). Capacity as for Redis: a socket that falls
    # behind a fast stream must not have events dropped (the consumer refills gaps anyway).
    CHANNEL_LAYERS = {"default": {"BACKEND": "config.layers.LocalChannelLayer", "CONFIG": {"capacity": 1500}}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth (django-allauth) --------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env.str("ACCOUNT_EMAIL_VERIFICATION", default="none")
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
LOGIN_REDIRECT_URL = "chat:conversation_list"
LOGIN_URL = "account_login"

# --- Mail (sign-up and password reset) ------------------------------------------------
# SMTP from EMAIL_URL (`smtp+tls://user:password@host:587`, `smtp+ssl://…:465`, `smtp://…:25`)
# or from EMAIL_HOST and its companions; with neither, mail is printed to the console. That
# is fine on a dev box and wrong anywhere else: a password-reset link in the server's log lets
# whoever reads the log take over the account. So with DEBUG off the console backend needs an
# explicit opt-in: EMAIL_BACKEND (or EMAIL_URL) naming it, or ALLOW_CONSOLE_EMAIL=1.
CONSOLE_EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
SMTP_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_URL = env.str("EMAIL_URL", default="")
_mail_url = environ.Env.email_url_config(EMAIL_URL) if EMAIL_URL else {}
EMAIL_HOST = _mail_url.get("EMAIL_HOST") or env.str("EMAIL_HOST", default="")
EMAIL_PORT = _mail_url.get("EMAIL_PORT") or env.int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = _mail_url.get("EMAIL_HOST_USER") or env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = _mail_url.get("EMAIL_HOST_PASSWORD") or env.str("EMAIL_HOST_PASSWORD", default="")
if EMAIL_URL:  # the URL's scheme says which TLS, if any
    EMAIL_USE_TLS = bool(_mail_url.get("EMAIL_USE_TLS"))
    EMAIL_USE_SSL = bool(_mail_url.get("EMAIL_USE_SSL"))
else:
    EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=True)  # STARTTLS on 587
    EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)  # implicit TLS on 465
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("Set EMAIL_USE_TLS (STARTTLS, port 587) or EMAIL_USE_SSL (port 465), not both.")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)  # seconds; a hung mail server must not hang a request
_email_backend_chosen = env.str("EMAIL_BACKEND", default="") or _mail_url.get("EMAIL_BACKEND", "")
EMAIL_BACKEND = _email_backend_chosen or (SMTP_EMAIL_BACKEND if EMAIL_HOST else CONSOLE_EMAIL_BACKEND)
ALLOW_CONSOLE_EMAIL = env.bool("ALLOW_CONSOLE_EMAIL", default=False)
if not DEBUG and EMAIL_BACKEND == CONSOLE_EMAIL_BACKEND and not (_email_backend_chosen or ALLOW_CONSOLE_EMAIL):
    raise ImproperlyConfigured(
        "No mail server is configured, and with DEBUG off mail would go to the console: password-reset "
        "links would be written to the server's log. Set EMAIL_URL (e.g. smtp+tls://user:password@smtp.example.com:587) "
        "or EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD and EMAIL_USE_TLS; "
        "or, to print mail to the log on purpose, ALLOW_CONSOLE_EMAIL=1."
    )
if EMAIL_BACKEND == SMTP_EMAIL_BACKEND and not EMAIL_HOST:
    raise ImproperlyConfigured("EMAIL_BACKEND is SMTP but EMAIL_HOST is not set (e.g. EMAIL_HOST=localhost).")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="agents-chat@localhost")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Served by the app itself (no CDN, works offline); `collectstatic` for production images.
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- HTTPS and browser protections --------------------------------------------------
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=True)
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto (deploy/nginx.conf does).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Plain-HTTP requests are redirected to HTTPS wherever cookies are HTTPS-only (not on the
    # compose stack's plain-HTTP port, which sets SECURE_COOKIES=0).
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=SESSION_COOKIE_SECURE)
# HSTS: off until set. Browsers then refuse plain HTTP to the host for that long: set it once
# HTTPS works, then add subdomains and preload (a commitment: see docs/operations.md).
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# The pages load scripts, styles, images and fonts from this origin only, with no inline
# script or style; the socket and fetch() go to this origin ('self' covers ws:/wss: too).
# Admin pages may also use inline styles (config/security.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
# The DEBUG error page and error reports hide API tokens and the Authorization header.
DEFAULT_EXCEPTION_REPORTER_FILTER = "accounts.debug.TokenSafeExceptionReporterFilter"

# --- Agents --------------------------------------------------------------------
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
# openai | local | scripted; empty = choose: openai when a key or base URL is set, else
# local when the local model is installed, else a page explaining how to configure one.
AGENTS_MODEL_PROVIDER = env.str("AGENTS_MODEL_PROVIDER", default="")
AGENTS_MODEL = env.str("AGENTS_MODEL", default="")
AGENTS_OPENAI_API = env.str("AGENTS_OPENAI_API", default="responses")
# The models users may pick per conversation (docs/agents.md, "Models"): a JSON list of
# {"key", "label", "provider": openai|local|scripted, "name", "api", "base_url", "api_key_env",
# "selectable"}. Empty: one model, the provider above. AGENTS_DEFAULT_MODEL: the key of the
# model a conversation runs on when neither its user nor its agent chose (default: the first).
AGENTS_MODELS = env.json("AGENTS_MODELS", default=[])
AGENTS_DEFAULT_MODEL = env.str("AGENTS_DEFAULT_MODEL", default="")
# Build streamed Responses events by their `type` instead of validating each against the whole
# event union (agents_app/openai_client.py; tested equivalent on recorded streams).
AGENTS_OPENAI_FAST_EVENTS = env.bool("AGENTS_OPENAI_FAST_EVENTS", default=True)
if AGENTS_MODEL_PROVIDER not in ("", "openai", "local", "scripted"):
    raise ImproperlyConfigured("AGENTS_MODEL_PROVIDER must be one of: openai, local, scripted.")
if AGENTS_OPENAI_API not in ("responses", "chat_completions"):
    raise ImproperlyConfigured("AGENTS_OPENAI_API must be 'responses' or 'chat_completions'.")
# The diagnostics agent (tools that crash, hang or need approval on purpose) for checking a
# deployment end to end and for the fault suite. Off for users.
AGENTS_DIAGNOSTICS = env.bool("AGENTS_DIAGNOSTICS", default=False)
# Delay (seconds) between streamed chunks of the scripted model; used by demos and benches.
AGENTS_SCRIPTED_DELAY = env.float("AGENTS_SCRIPTED_DELAY", default=0.0)

# Tracing: spans go to the local database; OpenAI's exporter only with a real key.
AGENTS_TRACE_EXPORT_OPENAI = env.bool("AGENTS_TRACE_EXPORT_OPENAI", default=bool(OPENAI_API_KEY) and not OPENAI_BASE_URL)

# Whether traces keep model inputs/outputs and tool arguments (staff review needs them;
# turn off where conversations must not be copied into traces).
AGENTS_TRACE_SENSITIVE_DATA = env.bool("AGENTS_TRACE_SENSITIVE_DATA", default=True)
# Store SDK traces and spans in the database (agents_app.tracing), for review in admin.
AGENTS_TRACE_LOCAL = env.bool("AGENTS_TRACE_LOCAL", default=True)

# Limits for the chat socket and runs.
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=8000)
CHAT_MAX_FRAME_BYTES = env.int("CHAT_MAX_FRAME_BYTES", default=64 * 1024)
# Rate limits (config/ratelimits.py; `limits` notation, empty = off). Counted in Redis when
# REDIS_URL is set, so they hold across processes; in memory otherwise.
# Per user, all their sockets together.
RATE_LIMIT_SOCKET_FRAMES = env.str("RATE_LIMIT_SOCKET_FRAMES", default="30/second")
# A socket refused this often for sending too fast is closed (4429).
RATE_LIMIT_SOCKET_REFUSALS = env.str("RATE_LIMIT_SOCKET_REFUSALS", default="100 per 10 seconds")
# Open at once per user, counted across processes; 0 = no cap. Streams: the HTTP API's SSE
# responses (POST …/messages, GET …/events), each a connection held as long as a socket.
RATE_LIMIT_SOCKETS_PER_USER = env.int("RATE_LIMIT_SOCKETS_PER_USER", default=20)
RATE_LIMIT_STREAMS_PER_USER = env.int("RATE_LIMIT_STREAMS_PER_USER", default=20)
RATE_LIMIT_CONVERSATIONS = env.str("RATE_LIMIT_CONVERSATIONS", default="120/hour")
# Per user, all their API tokens together.
RATE_LIMIT_API_REQUESTS = env.str("RATE_LIMIT_API_REQUESTS", default="600/minute")
# Live (neither revoked nor expired) API tokens a user may hold; 0 = no cap.
API_TOKENS_PER_USER = env.int("API_TOKENS_PER_USER", default=10)
# allauth's own limits (counted in the cache: Redis with REDIS_URL); sign-ups per client IP.
ACCOUNT_RATE_LIMITS = {"signup": env.str("RATE_LIMIT_SIGNUPS", default="10/h/ip")}
# Proxies in front of daphne whose X-Forwarded-For entry is believed (nginx in
# docker-compose.yml: 1). The client IP of every limit per address is the entry this many from
# the right (config.ratelimits.client_ip); 0 = trust none, use the connecting address.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be 0 (no proxy trusted) or the number of proxies in front.")
ALLAUTH_TRUSTED_PROXY_COUNT = TRUSTED_PROXY_COUNT  # allauth asks the adapter, which uses client_ip

# Sockets and SSE streams recheck what authenticated them this often (a revocation also closes
# them at once through the channel layer; this covers a lost message and token expiry).
AUTH_RECHECK_SECONDS = env.float("AUTH_RECHECK_SECONDS", default=30.0)
# /metrics (Prometheus) answers to `Authorization: Bearer <METRICS_TOKEN>`, and to signed-in staff.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# On SIGTERM a process refuses new runs (503 `shutting_down`) and lets runs in flight finish
# for this long, then ends the rest as interrupted (keep the orchestrator's grace period longer).
RUN_DRAIN_SECONDS = env.float("RUN_DRAIN_SECONDS", default=20.0)
# A run whose heartbeat is older than this is considered dead (its process went away).
RUN_HEARTBEAT_SECONDS = env.float("RUN_HEARTBEAT_SECONDS", default=5.0)
RUN_STALE_AFTER_SECONDS = env.float("RUN_STALE_AFTER_SECONDS", default=30.0)
# Without an event for this long, every follower of a run (socket, SSE, terminal) checks that
# it is still alive, and the SSE transport sends a keep-alive comment.
RUN_KEEPALIVE_SECONDS = env.float("RUN_KEEPALIVE_SECONDS", default=15.0)

# Tokens one model call may receive of a conversation (instructions, schemas, history): older
# turns are left out to fit, the stored history stays whole. Per agent: AgentSpec.max_input_tokens.
# Never more than the local model's context. 0 = no bound.
AGENTS_MAX_INPUT_TOKENS = env.int("AGENTS_MAX_INPUT_TOKENS", default=16_000)
if AGENTS_MAX_INPUT_TOKENS < 0:
    raise ImproperlyConfigured("AGENTS_MAX_INPUT_TOKENS must be 0 (no bound) or a number of tokens.")

# Tokens a user may spend per day (a TIME_ZONE day, so UTC by default) before runs are
# refused; per-user override in admin (usage.TokenBudget). 0 disables the quota.
AGENTS_DAILY_TOKEN_BUDGET = env.int("AGENTS_DAILY_TOKEN_BUDGET", default=200_000)
# Tokens a run in flight holds against the budget until it settles to its real usage: parallel
# messages cannot all pass the budget (see usage/quotas.py for the exact guarantee).
AGENTS_RUN_TOKEN_RESERVATION = env.int("AGENTS_RUN_TOKEN_RESERVATION", default=4_000)
# Replies one user may have generating at once, across conversations, tabs and processes.
AGENTS_MAX_ACTIVE_RUNS_PER_USER = env.int("AGENTS_MAX_ACTIVE_RUNS_PER_USER", default=3)
# How long a tool call may wait for the user's approval before it expires.
AGENTS_APPROVAL_TTL_SECONDS = env.int("AGENTS_APPROVAL_TTL_SECONDS", default=24 * 3600)

# USD per million tokens: input, cached input, output. Unknown models get no cost.
AGENTS_PRICING = {
    "gpt-4.1": {"input": "2.00", "cached_input": "0.50", "output": "8.00"},
    "gpt-4.1-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"},
    "gpt-4.1-nano": {"input": "0.10", "cached_input": "0.025", "output": "0.40"},
    "gpt-4o": {"input": "2.50", "cached_input": "1.25", "output": "10.00"},
    "gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.60"},
    "gpt-5": {"input": "1.25", "cached_input": "0.125", "output": "10.00"},
    "gpt-5-mini": {"input": "0.25", "cached_input": "0.025", "output": "2.00"},
    "gpt-5-nano": {"input": "0.05", "cached_input": "0.005", "output": "0.40"},
    # Models that run on this machine cost nothing.
    "local": {"input": "0", "cached_input": "0", "output": "0"},
    "scripted": {"input": "0", "cached_input": "0", "output": "0"},
}
AGENTS_PRICING.update(env.json("AGENTS_PRICING_JSON", default={}))

# LOG_FORMAT=json: one JSON object per line. Every record carries the request id.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be 'plain' or 'json'.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.logging.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]}
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "openai.agents": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

# Local model (llama.cpp): which GGUF, where the assembled file is cached, how it runs.
AGENTS_LOCAL_MODEL = env.str("AGENTS_LOCAL_MODEL", default="1.5b")  # 1.5b | 0.5b
AGENTS_LOCAL_CACHE_DIR = Path(env.str("AGENTS_LOCAL_CACHE_DIR", default=str(Path.home() / ".cache" / "agents-chat")))
AGENTS_LOCAL_THREADS = env.int("AGENTS_LOCAL_THREADS", default=2)
AGENTS_LOCAL_CONTEXT = env.int("AGENTS_LOCAL_CONTEXT", default=4096)

# Model requests: retries with backoff on rate limits / server errors, and a deadline
# (OpenAI provider only; a local request may legitimately wait in the queue).
AGENTS_MODEL_MAX_RETRIES = env.int("AGENTS_MODEL_MAX_RETRIES", default=2)
AGENTS_MODEL_RETRY_DELAY = env.float("AGENTS_MODEL_RETRY_DELAY", default=1.0)
AGENTS_MODEL_TIMEOUT = env.float("AGENTS_MODEL_TIMEOUT", default=120.0)
