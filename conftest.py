"""Fixtures shared by every test. Only the model is ever faked (agents.testing.ScriptedModel
or the rule-based scripted provider); the database, channel layer and Redis are real."""

from __future__ import annotations

import contextlib

import pytest
from agents.testing import ScriptedModel
from agents.usage import Usage
from asgiref.sync import SyncToAsync
from channels.layers import channel_layers
from django.db import connections

from agents_app import providers

from chat.tests.scripts import USAGE


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
def _no_local_traces(settings):
    """Local traces are written by a background thread on its own connection, after the test
    may have ended; the tests that check them (agents_app/tests/test_tracing.py) switch them
    on and flush."""
    settings.AGENTS_TRACE_LOCAL = False


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
