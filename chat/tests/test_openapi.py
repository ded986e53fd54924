"""The OpenAPI document of `/api/` (docs/openapi.json, hand-written) is valid, served as
checked in, and names exactly the routes and methods the API has."""

from __future__ import annotations

import json
import re

import pytest
import schemathesis
from django.test import AsyncClient
from django.urls import URLPattern

from chat import api, api_urls

pytestmark = pytest.mark.django_db

METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


def document() -> dict:
    return json.loads(api.OPENAPI_DOCUMENT.read_text())


def routes_of_the_api() -> set[tuple[str, str]]:
    """(path, method) for every route in chat/api_urls.py but the JSON 404 catch-all, in the
    document's spelling: `/api/conversations/{public_id}`."""
    found = set()
    for pattern in api_urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        if pattern.callback is api.not_found:
            continue
        path = "/api/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))
        methods = getattr(pattern.callback, "allowed_methods", ("GET",))  # the schema view: GET only
        found |= {(path, method.lower()) for method in methods}
    return found


def routes_of_the_document() -> set[tuple[str, str]]:
    return {(path, method) for path, item in document()["paths"].items() for method in item if method in METHODS}


def test_the_document_is_valid_openapi_3():
    schema = schemathesis.openapi.from_path(str(api.OPENAPI_DOCUMENT))
    schema.validate()
    assert document()["openapi"].startswith("3.")


def test_every_route_and_method_of_the_api_is_documented_and_nothing_else():
    assert routes_of_the_api() == routes_of_the_document()


def test_every_documented_operation_has_an_id_and_answers_401_without_a_token():
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            assert operation.get("operationId"), (path, method)
            if operation.get("security") != []:
                assert "401" in operation["responses"], (path, method)


async def test_the_schema_is_served_without_a_token_exactly_as_checked_in():
    response = await AsyncClient().get("/api/schema")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.content == api.OPENAPI_DOCUMENT.read_bytes()


async def test_the_schema_endpoint_refuses_other_methods_in_json():
    response = await AsyncClient().post("/api/schema", "{}", content_type="application/json")
    assert response.status_code == 405 and json.loads(response.content)["error"]["code"] == "method_not_allowed"
    assert response["Allow"] == "GET, HEAD"
