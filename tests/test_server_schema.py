"""The API keeps its own contract: schemathesis generates requests for every operation of the served OpenAPI
document (valid ones and edge cases: empty strings, huge numbers, odd unicode, missing fields) and checks each
answer, with a token of a role allowed to call the operation: never a 5xx, every status code, content type,
header and body as documented."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import apply_isolation, run_cli, start_server
from conftest import token_for as redeemed_token
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.copies import Prepared
from support.server import ROLE_OF

from govern import access

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, served_project_original: Prepared) -> Iterator[dict]:
    """One `govern serve` for every generated request (a server per operation would cost minutes): the project
    of the role-matrix test, version 1 serving `scoring` in `dev`, a token for every role."""
    with pytest.MonkeyPatch.context() as patch:
        env = apply_isolation(patch, tmp_path_factory.mktemp("home"))
        root = served_project_original.copy_to(tmp_path_factory.mktemp("schema") / "project")
        deployed = run_cli("deploy", "churn", "1", "--app", "scoring", "--env", "dev", cwd=root)
        assert deployed.exit_code == 0, deployed.output
        tokens = {name: redeemed_token(root, name) for name in ROLE_OF}  # enrollment codes, redeemed
        log = root.parent / "server.log"
        process, base = start_server(root, {**env, "GOVERN_REGISTRY_MIRROR": "background"}, log)
        try:
            yield {"base": base, "tokens": tokens, "log": log}
        finally:
            process.terminate()
            process.wait(timeout=30)


def token_for(operation: str, tokens: dict[str, str]) -> str:
    """A principal whose role may call `operation` (the admin's for the admin's operations, and so on)."""
    allowed = access.POLICY[operation]
    name = next((name for name, role in ROLE_OF.items() if role in allowed and role != "consumer"), None)
    return tokens[name or "con"]


def answers_as_documented(operation: Any, headers: dict[str, str]) -> None:
    """Generated requests to one operation, valid and invalid (wrong types, missing fields, values out of range),
    each answer checked against the document."""

    from hypothesis import strategies
    from schemathesis import GenerationMode

    valid, invalid = (operation.as_strategy(generation_mode=mode) for mode in GenerationMode)

    @given(case=strategies.one_of(valid, invalid))
    @settings(
        max_examples=12,
        deadline=None,
        derandomize=True,  # the same requests on every run: a failure is reproducible, no run is luckier
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.explicit, Phase.generate],  # report the first failure as found: shrinking costs minutes
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=60)

    check()


def test_every_operation_answers_as_documented_and_never_with_a_server_error(served: dict) -> None:
    """Each operation in turn, so one failing operation does not hide another's: all failures are listed."""
    api = schemathesis.openapi.from_url(f"{served['base']}/api/v1/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == len(access.POLICY)  # every operation of the table is in the document, and tried
    failures: dict[str, str] = {}
    for operation in operations:
        name = operation.definition.raw["operationId"]
        headers = {"Authorization": f"Bearer {token_for(name, served['tokens'])}"}

        try:
            answers_as_documented(operation, headers)
        except (Exception, FailureGroup) as failure:  # noqa: BLE001 - collected, all reported below
            failures[name] = str(failure)[:2000]
    assert failures == {}, "\n\n".join(f"{name}: {text}" for name, text in failures.items())
    assert "Traceback" not in Path(served["log"]).read_text()  # here: another worker would have its own server


def test_the_document_files_every_error_under_the_media_type_it_is_sent_with(served: dict) -> None:
    from support.server import call

    _, document, _ = call(served["base"], "GET", "/api/v1/openapi.json")
    errors = [
        (path, method, status, response.get("content"))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if int(status) >= 400
    ]
    assert len(errors) > 100  # every operation documents its problems
    as_sent = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert [error for error in errors if error[3] != as_sent] == []
    status, problem, headers = call(served["base"], "GET", "/api/v1/whoami")
    assert status == 401 and headers["content-type"] == "application/problem+json"
    assert set(problem) == set(document["components"]["schemas"]["Problem"]["required"])
