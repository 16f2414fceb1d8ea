"""The controller runs the project's own code: predictions for a consumer's app (and training jobs)."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ok, run_cli, start_server

from govern import access
from govern.ledger import Ledger

pytestmark = pytest.mark.slow
M = "breast-cancer-classifier"


def send(base: str, path: str, token: str, body: bytes, kind: str) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(base + path, data=body, method="POST")
    request.add_header("Content-Type", kind)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


@pytest.fixture
def serving(reproduced_demo: Path, isolated_env: dict[str, str], tmp_path: Path) -> Iterator[dict]:
    """Version 1 serves `scoring` in production; a consumer of scoring and one of triage, with tokens."""
    ok(reproduced_demo, "promote", M, "1", "--to", "staging", "--reason", "candidate")
    ok(reproduced_demo, "promote", M, "1", "--to", "production", "--reason", "approved")
    ok(reproduced_demo, "deploy", M, "1", "--app", "scoring")
    tokens = {}
    for name, app in (("scoring-app", "scoring"), ("triage-app", "triage")):
        ok(reproduced_demo, "principals", "add", name, "--role", "consumer", "--app", app)
        tokens[name] = json.loads(ok(reproduced_demo, "tokens", "create", name, "--json"))["token"]
    process, base = start_server(reproduced_demo, isolated_env, tmp_path / "server.log")
    yield {"project": reproduced_demo, "base": base, "tokens": tokens}
    process.terminate()
    process.wait(timeout=30)


def some_rows(project: Path, n: int) -> bytes:
    lines = (project / "data" / "raw" / "breast_cancer.csv").read_text().splitlines()
    return ("\n".join(lines[: n + 1]) + "\n").encode()


def test_a_consumer_gets_predictions_of_the_serving_version_recorded_under_its_name(serving: dict) -> None:
    base, token = serving["base"], serving["tokens"]["scoring-app"]
    ledger = Ledger(serving["project"] / "audit" / "ledger.duckdb")
    body = some_rows(serving["project"], 20)

    status, answer, headers = send(base, "/api/v1/apps/scoring/predict", token, body, "text/csv")

    assert status == 200 and headers["content-type"].startswith("text/csv"), answer
    assert headers["x-govern-model"] == M and headers["x-govern-version"] == "1"
    predictions = list(csv.DictReader(io.StringIO(answer.decode())))
    assert len(predictions) == 20
    [recorded] = ledger.read(types=["inference.recorded"])
    assert recorded.seq == int(headers["x-govern-event-seq"]) and recorded.payload["rows"] == 20
    assert recorded.actor == f"scoring-app (token {access.parse_bearer(token)[0]})"
    assert recorded.payload["app"] == "scoring" and recorded.payload["input_path"].startswith("upload (text/csv")

    rows = [dict(row) for row in csv.DictReader(io.StringIO(body.decode()))][:3]
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", token, json.dumps({"rows": rows}).encode(),
                             "application/json")  # fmt: skip
    answered = json.loads(answer)
    assert status == 200 and answered["version"] == "1" and len(answered["predictions"]) == 3
    assert answered["predictions"][0].keys() == predictions[0].keys()


def test_predictions_are_refused_for_other_apps_bad_rows_and_deprecated_versions(serving: dict) -> None:
    base, tokens, project = serving["base"], serving["tokens"], serving["project"]
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    body = some_rows(project, 5)
    before = ledger.head()
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", tokens["triage-app"], body, "text/csv")
    assert status == 403 and "a consumer sees its own apps only" in json.loads(answer)["detail"]
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", tokens["scoring-app"], b"a,b\n1,2\n", "text/csv")
    assert status == 422 and "The inference command failed" in json.loads(answer)["detail"]
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", tokens["scoring-app"], b'{"rows": []}',
                             "application/json")  # fmt: skip
    assert status == 400 and "at least one row" in json.loads(answer)["detail"]
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", tokens["scoring-app"], body, "text/plain")
    assert status == 400 and "text/csv or application/json" in json.loads(answer)["detail"]
    assert ledger.head() == before, "nothing recorded for refused or failed predictions"

    assert run_cli("deprecate", M, "1", "--reason", "leak found", "--force", cwd=project).exit_code == 0
    status, answer, _ = send(base, "/api/v1/apps/scoring/predict", tokens["scoring-app"], body, "text/csv")
    assert status == 409 and "is deprecated" in json.loads(answer)["detail"]
