"""Fixtures shared by every test. Only the model is ever faked (agents.testing.ScriptedModel
or the rule-based scripted provider); the database, channel layer and Redis are real."""

from __future__ import annotations

import contextlib
import os

import pytest
from agents.testing import ScriptedModel
from agents.usage import Usage
from asgiref.sync import SyncToAsync
from channels.layers import channel_layers
from django.db import connections

from agents_app import providers
from chat.tests.scripts import USAGE


def pytest_collection_modifyitems(config, items):
    """Tests marked `local_model` need the 1.1 GB local model. `make test` installs it and sets
    AGENTS_REQUIRE_LOCAL_MODEL=1, so there they run (and fail if it is missing). Anywhere else
    they are skipped when it is not installed: the rest of the suite needs no model at all
    (`make test-quick` runs everything else without the build)."""
    from agents_app import local

    if os.environ.get("AGENTS_REQUIRE_LOCAL_MODEL") == "1" or local.is_installed():
        return
    skip = pytest.mark.skip(reason="the local model is not installed (`make local-model-for-tests`; `make test` runs these)")
    for item in items:
        if "local_model" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """Django's Postgres connection pool is created on first use, with the database name of that
    moment: one opened before the switch to the test database (by code that touched the
    connection at import) would run every test against the real database. Start afresh."""
    from django.db import connections

    for connection in connections.all():
        if getattr(connection, "close_pool", None):
            connection.close_pool()


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    # The in-memory layer keeps groups between tests otherwise; Redis layers get a new
    # connection pool per event loop.
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _close_worker_thread_connections():
    """Async code reaches the ORM through asgiref's single worker thread; close its connection
    after each test so Postgres can drop the test database at the end."""
    yield
    SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture(autouse=True)
def _fresh_engine():
    """The run engine's process state (executors, heartbeat, stop control, replay buffer) is
    one object: each test starts with a new one."""
    from chat.engine.process import engine

    engine.reset()
    yield
    engine.reset()


@pytest.fixture(autouse=True)
def _no_local_traces(settings):
    """Local traces are written by a background thread on its own connection, after the test
    may have ended; the tests that check them (agents_app/tests/test_tracing.py) switch them
    on and flush."""
    settings.AGENTS_TRACE_LOCAL = False


@pytest.fixture(autouse=True)
def _scripted_model_unless_a_test_chooses(settings):
    """What is installed on the machine never decides a test: runs answer with the rule-based
    scripted model unless a test installs its own (`script`), names a provider (the local-model
    smoke tests), or clears this to test how a provider is chosen."""
    settings.AGENTS_MODEL_PROVIDER = "scripted"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Counts of one test never limit the next one."""
    from django.core.cache import cache

    from config import ratelimits
    from usage.pricing import forget_prices

    ratelimits.reset()
    forget_prices()
    yield
    ratelimits.reset()
    forget_prices()
    cache.clear()  # allauth counts sign-ups in the cache


@pytest.fixture
def user(db):
    from chat.tests.factories import UserFactory

    return UserFactory()


@pytest.fixture
def other_user(db):
    from chat.tests.factories import UserFactory

    return UserFactory()


@pytest.fixture
def script():
    """`with script([...steps]) as model:` runs every agent on a ScriptedModel."""

    @contextlib.contextmanager
    def use(steps, *, usage: Usage | None = USAGE):
        model = ScriptedModel(steps, default_usage=usage)
        with providers.use_model(model, label="gpt-4.1-mini"):
            yield model

    return use
