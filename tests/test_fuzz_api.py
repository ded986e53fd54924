"""Schemathesis fuzzes every operation of the OpenAPI document (docs/openapi.json) against a
real daphne, with a valid API token: valid and invalid inputs (negative mode), the boundary
values of every parameter (coverage phase), and sequences that follow the document's links
from a created conversation (stateful phase). Zero 5xx, and every answer is the documented
status, content type and shape.

Bounded: FUZZ_API_EXAMPLES (default 30) examples per operation and phase (about 660
requests), a fixed seed, one worker; about 40 s on two cores, the server's start included.
The scripted model answers the runs `POST …/messages` starts: nothing leaves the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from accounts.services import api_token_create
from chat.tests.factories import ConversationFactory, MessageFactory, finished_reply
from tests.servers import running_daphne

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES", "30"))
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "ignored_auth",
])


def fuzz_config(path, *, conversation_ids: list[str], message_ids: list[str]) -> str:
    """Most generated requests name one of the user's own conversations or replies (the rest a
    random id), so the fuzzing reaches the validation and the runs behind the 404."""
    ids = ", ".join(f'"{value}"' for value in conversation_ids)
    messages = ", ".join(f'"{value}"' for value in message_ids)
    path.write_text(
        f"[dictionaries.conversations]\nvalues = [{ids}]\n\n"
        f"[dictionaries.messages]\nvalues = [{messages}]\n\n"
        '[parameters]\n"path.public_id" = { dictionary = "conversations", probability = 0.8 }\n'
        '"path.message_id" = { dictionary = "messages", probability = 0.8 }\n'
    )
    return str(path)


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(user, tmp_path):
    token = api_token_create(owner=user, name="schemathesis").secret
    conversation = ConversationFactory(owner=user)
    MessageFactory(conversation=conversation, content="Hello")
    reply = finished_reply(conversation=conversation)
    config = fuzz_config(
        tmp_path / "schemathesis.toml", conversation_ids=[str(conversation.public_id)], message_ids=[str(reply.public_id)]
    )
    report = tmp_path / "schemathesis.json"
    # Limits off: the fuzzer sends far more requests than a client would, and must reach the views.
    unlimited = {"RATE_LIMIT_API_REQUESTS": "", "RATE_LIMIT_CONVERSATIONS": ""}
    with running_daphne(tmp_path, extra_env={"AGENTS_SCRIPTED_DELAY": "0", **unlimited}) as server:
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "--config-file", config,
                "run", f"{server.http}/api/schema",
                "--url", server.http,
                "--header", f"Authorization: Bearer {token}",
                "--checks", CHECKS,
                "--phases", "examples,coverage,fuzzing,stateful",
                "--max-examples", str(EXAMPLES),
                "--seed", "20251",
                "--workers", "1",
                "--request-timeout", "30",
                "--generation-database", "none",
                "--no-color",
                "--report", "json", "--report-json-path", str(report),
            ],
            cwd=tmp_path,  # its caches land there, not in the repository
            capture_output=True,
            text=True,
            timeout=300,
        )
        elapsed = time.monotonic() - started
        log = server.output()
    summary = json.loads(report.read_text()) if report.exists() else {}
    (tmp_path / "schemathesis.out").write_text(result.stdout + result.stderr)
    print(f"schemathesis: {elapsed:.1f} s\n{result.stdout[-3000:]}")
    assert result.returncode == 0, f"{result.stdout[-20000:]}\n{result.stderr[-5000:]}\n--- daphne ---\n{log[-5000:]}"
    operations, cases = summary["operations"], summary["test_cases"]
    print(f"schemathesis: {cases['generated']} requests on {operations['tested']} operations")
    assert operations["tested"] == operations["total"] >= 8
    assert cases["generated"] >= 15 * EXAMPLES and cases["with_failures"] == 0 and cases["errored"] == 0
    # Nothing failed after an answer had started either (a stream's events are its body).
    assert "Internal Server Error" not in log and "Traceback" not in log, log[-5000:]
