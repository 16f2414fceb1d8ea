"""The OpenAPI document says what every success answers: each 2xx of each operation has a schema for each media
type it is sent as, and none is empty (`{}` or a bare title), so a new route without a described answer fails here.
Whether the answers keep to these schemas is tests/test_server_schema.py's (schemathesis) and the role-matrix
test's (tests/test_server.py).

In-process (the real app, its document read through FastAPI's test client): the fast tier."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient
from support.copies import Prepared

from govern import access
from govern.server.app import create_app

ANNOTATIONS = {"title", "description", "examples", "deprecated", "readOnly", "writeOnly"}  # say nothing of a shape


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory, served_project_original: Prepared) -> dict[str, Any]:
    from conftest import apply_isolation

    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, tmp_path_factory.mktemp("home"))
        project = served_project_original.copy_to(tmp_path_factory.mktemp("document") / "project")
        with TestClient(create_app(project, session_secret="d" * 43)) as client:
            answer = client.get("/api/v1/openapi.json")
    assert answer.status_code == 200, answer.text
    return answer.json()


def undescribed(operation: dict[str, Any]) -> list[str]:
    """The success responses (status and media type) of an operation whose body no schema describes."""
    missing = []
    for status, response in operation["responses"].items():
        if not status.startswith("2"):
            continue
        content = response.get("content") or {}
        if not content:
            missing.append(f"{status}: no content")
        for kind, media in content.items():
            schema = media.get("schema") or {}
            if not set(schema) - ANNOTATIONS:
                missing.append(f"{status} {kind}: {schema or 'no schema'}")
    return missing


def test_every_operation_documents_the_body_of_each_success(document: dict[str, Any]) -> None:
    operations = {op["operationId"]: op for path in document["paths"].values() for op in path.values()}
    assert set(operations) == set(access.POLICY)  # every operation is in the document, and looked at
    missing = {name: found for name, operation in operations.items() if (found := undescribed(operation))}
    assert missing == {}


def answers_models(document: dict[str, Any]) -> set[str]:
    """The component schemas the success answers use, directly or nested."""
    schemas = document["components"]["schemas"]
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            name = str(node.get("$ref", "")).rpartition("/")[2]
            if name and name not in found:
                found.add(name)
                walk(schemas[name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in document["paths"].values():
        for operation in path.values():
            walk([response for status, response in operation["responses"].items() if status.startswith("2")])
    return found


def test_an_answers_schema_names_exactly_its_fields(document: dict[str, Any]) -> None:
    """The answers' models refuse fields they do not list, so a field added to an answer and not to its model
    fails the schema checks; each model's docstring is its description."""
    schemas = document["components"]["schemas"]
    events = document["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert events["items"] == {"$ref": "#/components/schemas/Event"}
    assert set(schemas["Event"]["required"]) == set(schemas["Event"]["properties"])  # always there, null or not
    used = answers_models(document)
    assert len(used) > 40
    assert [name for name in sorted(used) if schemas[name].get("additionalProperties") is not False] == []
    assert [name for name in sorted(used) if not schemas[name].get("description")] == []


def test_an_undescribed_success_is_found() -> None:
    bare = {"responses": {"200": {"content": {"application/json": {"schema": {"title": "Response X"}}}}}}
    streamed = {"responses": {"200": {"content": {"text/event-stream": {}}}, "404": {}}}
    assert undescribed(bare) == ["200 application/json: {'title': 'Response X'}"]
    assert undescribed(streamed) == ["200 text/event-stream: no schema"]
    described = {"responses": {"201": {"content": {"text/csv": {"schema": {"type": "string"}}}}}}
    assert undescribed(described) == []
