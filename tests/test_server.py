"""`govern serve`: a real uvicorn process on 127.0.0.1, real tokens, the role table enforced on the server."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import grant_role, run_cli, trained_version
from support.server import ROLE_OF, TRAINER, VERDICT, call, tokens_for, verdict_for

from govern import access
from govern.storage.duckdb_log import Ledger

pytestmark = pytest.mark.slow  # a uvicorn process per test: the full suite, not the edit loop

# One valid request per operation, in the order they are tried; `spare`'s role and token are what the admin's
# revocations remove. An operation in the OpenAPI document without a row here fails the matrix test.
EXAMPLES: dict[str, tuple[str, str, Any]] = {
    "whoami": ("GET", "/api/v1/whoami", None),
    "status": ("GET", "/api/v1/status", None),
    "requests": ("GET", "/api/v1/promotion-requests?state=all", None),
    "request_promotion": (
        "POST",
        "/api/v1/promotion-requests",
        {"model": "churn", "version": "1", "to_stage": "staging", "reason": "ready"},
    ),
    "approve": ("POST", "/api/v1/promotion-requests/{pending}/approval", {"reason": "reviewed"}),
    "reject": ("POST", "/api/v1/promotion-requests/{pending}/rejection", {"reason": "not yet"}),
    "promote": (
        "POST",
        "/api/v1/promotions",
        {"model": "churn", "version": "3", "to_stage": "staging", "reason": "approved in the board meeting"},
    ),  # fmt: skip: production needs a request in team mode (tests/test_duties.py)
    "deprecate": ("POST", "/api/v1/models/churn/versions/3/deprecation", {"reason": "trained on a bad cut"}),
    "trainings": ("GET", "/api/v1/trainings", None),
    "request_training": ("POST", "/api/v1/trainings", {"commit": "HEAD"}),
    "known_snapshots": ("GET", "/api/v1/trainings/known-snapshots", None),
    # JSON where a multipart upload belongs: an allowed role gets past authorization to the 400 that says so
    # (a real upload: tests/test_remote_repro.py)
    "record_training": ("POST", "/api/v1/trainings/reported", {"report": "{}"}),
    "training": ("GET", "/api/v1/trainings/{job}", None),
    "training_progress": ("GET", "/api/v1/trainings/{cancelled_job}/progress", None),
    "cancel_training": ("DELETE", "/api/v1/trainings/{job}", None),
    "deploy": ("POST", "/api/v1/deployments", {"model": "churn", "version": "1", "app": "scoring", "env": "dev"}),
    "production": ("GET", "/api/v1/apps/scoring/production?env=dev", None),
    "predict": ("POST", "/api/v1/apps/scoring/predict?env=dev", {"rows": [{"x": 1, "y": "a"}]}),
    "inferences": ("GET", "/api/v1/apps/scoring/inferences?env=dev&limit=5", None),
    "windows": ("GET", "/api/v1/windows", None),
    "events": ("GET", "/api/v1/events?limit=5", None),
    "verify": ("GET", "/api/v1/verify", None),
    "history": ("GET", "/api/v1/models/churn/history?version=1", None),
    "report": ("GET", "/api/v1/models/churn/versions/1/report?format=md", None),
    "sql": (
        "POST",
        "/api/v1/sql",
        {"statement": "SELECT count(*) AS n FROM events WHERE seq > $s", "params": {"s": 1}},
    ),
    "named_queries": ("GET", "/api/v1/queries", None),
    "run_query": ("POST", "/api/v1/queries/promotions_of_model", {"params": {"model": "churn"}}),
    "anchors": ("GET", "/api/v1/anchors", None),
    "anchor": ("POST", "/api/v1/anchors", None),
    "record_reproduction": ("POST", "/api/v1/reproductions", {"type": "reproduction.verified", "payload": VERDICT}),
    "retire": ("POST", "/api/v1/retirements", {"app": "scoring", "env": "dev"}),
    "principals": ("GET", "/api/v1/principals", None),
    "grant": ("POST", "/api/v1/principals", {"principal": "newcomer", "role": "scientist"}),
    "revoke": ("DELETE", "/api/v1/principals/spare/roles/auditor?reason=left", None),
    "link_identity": ("POST", "/api/v1/principals/sci/identities", {"identity": "Sci Entist <sci@example.com>"}),
    "identities": ("GET", "/api/v1/identities", None),
    "tokens": ("GET", "/api/v1/tokens", None),
    "issue_token": ("POST", "/api/v1/principals/newcomer/tokens", {"expires": "1d"}),
    "revoke_token": ("DELETE", "/api/v1/tokens/{spare_token}", None),
    "grant_history": ("GET", "/api/v1/grants?principal=sci", None),
    "grant_proposals": ("GET", "/api/v1/grant-proposals?state=all", None),
    "confirm_grant": ("POST", "/api/v1/grant-proposals/{operator_proposal}/confirmation", {"reason": "agreed"}),
    "decline_grant": ("POST", "/api/v1/grant-proposals/{operator_proposal}/decline", {"reason": "not yet"}),
    "withdraw_grant": ("POST", "/api/v1/grant-proposals/{own_proposal}/withdrawal", {"reason": "wrong name"}),
    "redeem_code": ("POST", "/api/v1/enrollment-codes/redemptions", None),  # its body: a fresh code (see below)
}


def pending_request(server: str, scientist: str) -> int:
    """The number of a pending request the scientist asked for (version 2 to staging), asked now if none is."""
    _, pending, _ = call(server, "GET", "/api/v1/promotion-requests?model=churn", scientist)
    if pending:
        return pending[0]["request_seq"]
    body = {"model": "churn", "version": "2", "to_stage": "staging", "reason": "a candidate"}
    status, answer, _ = call(server, "POST", "/api/v1/promotion-requests", scientist, body)
    assert status == 201, answer
    return answer["request"]


def not_as_documented(document: dict, operation: str, status: int, answer: Any) -> list[str]:
    """How a JSON answer departs from the schema the OpenAPI document gives it (nothing: as documented). Text
    answers (the Markdown report, the progress stream) are strings, as documented; the problems have a test of
    their own (tests/test_server_schema.py)."""
    import jsonschema_rs

    if status >= 400 or isinstance(answer, str):
        return []
    [documented] = [op for path in document["paths"].values() for op in path.values() if op["operationId"] == operation]
    schema = documented["responses"][str(status)]["content"]["application/json"]["schema"]
    validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
    errors = validator.iter_errors(answer)
    return [f"{'/'.join(map(str, error.instance_path))}: {error.message}"[:300] for error in errors]


def test_every_operation_answers_exactly_as_the_role_table_says(project: Path, server: str) -> None:
    tokens = tokens_for(project, *ROLE_OF, "spare")
    spare_id = access.parse_bearer(tokens["spare"])[0]
    _, document, _ = call(server, "GET", "/api/v1/openapi.json")
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert operations == set(EXAMPLES) == set(access.POLICY), "every operation has a policy row and an example"

    ledger = Ledger(project / "audit" / "ledger.duckdb")

    def head() -> int:
        """What callers wrote: the job runner's own bookkeeping (server:HOST, whenever it takes a queued job) aside."""
        return ledger.query("SELECT count(*) FROM events WHERE NOT starts_with(actor, 'server:')")[1][0][0]

    proposed = iter(range(1, 1000))

    def resolved(path: str) -> str:
        if "{operator_proposal}" in path:  # the operator's, here (one admin: break-glass), for adm to decide
            added = run_cli("principals", "add", f"newcomer-{next(proposed)}", "--role", "approver", "--json",
                            cwd=project)  # fmt: skip
            path = path.replace("{operator_proposal}", str(json.loads(added.stdout)["seq"]))
        if "{own_proposal}" in path:  # adm's own, for adm to withdraw
            body = {"principal": f"newcomer-{next(proposed)}", "role": "approver"}
            status, event, _ = call(server, "POST", "/api/v1/principals", tokens["adm"], body)
            assert status == 201 and event["type"] == "access.grant_proposed", event
            path = path.replace("{own_proposal}", str(event["seq"]))
        if "{pending}" in path:
            path = path.replace("{pending}", str(pending_request(server, tokens["sci"])))
        if "{job}" in path or "{cancelled_job}" in path:
            status, job, _ = call(server, "POST", "/api/v1/trainings", tokens["sci"], {"commit": "HEAD"})
            assert status == 202, job
            if "{cancelled_job}" in path:
                assert call(server, "DELETE", f"/api/v1/trainings/{job['job_id']}", tokens["sci"])[0] == 200
            path = path.replace("{job}", job["job_id"]).replace("{cancelled_job}", job["job_id"])
        return path.replace("{spare_token}", spare_id)

    for operation, (method, template, body) in EXAMPLES.items():
        if operation == "record_reproduction":
            body = {**body, "payload": verdict_for(project)}
        if operation in access.CODE_AUTHENTICATED:  # no bearer: the code authenticates, once
            code = {"code": json.loads(run_cli("tokens", "create", "sci", "--json", cwd=project).stdout)["code"]}
            status, answer, _ = call(server, method, template, None, code)
            assert status == 201 and answer["kind"] == "token" and answer["principal"] == "sci", answer
            assert not_as_documented(document, operation, status, answer) == [], operation
            before = head()
            status, problem, _ = call(server, method, template, tokens["adm"], code)
            assert status == 401 and "was used already" in problem["detail"], problem
            assert head() == before, f"{operation}: a refused call wrote nothing"
            continue
        path = resolved(template)
        before = head()
        status, problem, headers = call(server, method, path, None, body)
        assert status == 401 and problem["status"] == 401 and "Bearer" in headers.get("www-authenticate", ""), operation
        allowed = [name for name, role in ROLE_OF.items() if role in access.POLICY[operation]]
        for name in [n for n in ROLE_OF if n not in allowed]:
            status, problem, _ = call(server, method, path, tokens[name], body)
            assert status == 403, (operation, name, status, problem)
            assert problem["type"] == "urn:govern:problem:forbidden" and name in problem["detail"]
        assert head() == before, f"{operation}: a refused call wrote nothing"
        for name in allowed:
            status, answer, _ = call(server, method, resolved(template), tokens[name], body)
            expected = (400, 401) if operation == "record_training" else (200, 300)
            assert expected[0] <= status < expected[1], (operation, name, status, answer)
            assert not_as_documented(document, operation, status, answer) == [], (operation, name)


def test_four_eyes_by_identity_the_trainer_and_the_requester_cannot_approve(project: Path, server: str) -> None:
    for role in ("scientist", "approver"):
        grant_role(project, "tess", role)
    grant_role(project, "pat", "approver")
    made = tokens_for(project, "tess", "pat", "sci", "adm")
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    ask = {"model": "churn", "version": "1", "to_stage": "staging", "reason": "ready for shadow traffic"}

    status, answer, _ = call(server, "POST", "/api/v1/promotion-requests", made["tess"], ask)
    assert status == 201, answer
    mine = answer["request"]
    before = ledger.head()
    status, problem, _ = call(server, "POST", f"/api/v1/promotion-requests/{mine}/approval", made["tess"],
                              {"reason": "my own, looks fine"})  # fmt: skip
    assert status == 403 and problem["detail"] == (
        f"Four-eyes rule: tess asked for request {mine} and cannot approve it; another approver must approve it"
    )
    assert ledger.head() == before
    status, _, _ = call(server, "POST", f"/api/v1/promotion-requests/{mine}/rejection", made["sci"],
                        {"reason": "not sci's to withdraw"})  # fmt: skip
    assert status == 403, "a scientist withdraws its own requests only"
    assert call(server, "POST", f"/api/v1/promotion-requests/{mine}/rejection", made["tess"],
                {"reason": "withdrawn"})[0] == 201  # fmt: skip

    status, answer, _ = call(server, "POST", "/api/v1/promotion-requests", made["sci"], ask)
    request = answer["request"]
    status, problem, _ = call(server, "POST", f"/api/v1/promotion-requests/{request}/approval", made["tess"],
                              {"reason": "I know this model best"})  # fmt: skip
    assert status == 403 and problem["detail"] == (
        "Four-eyes rule: tess trained version 1 of churn (as tess (token 7e55a0000001)) and cannot approve its "
        "promotion; another approver must approve it"
    )

    status, answer, _ = call(server, "POST", f"/api/v1/promotion-requests/{request}/approval", made["pat"],
                             {"reason": "evidence reviewed"})  # fmt: skip
    assert status == 201, answer
    [requested] = ledger.read(types=["model.promotion_requested"])[-1:]
    approval, promotion = ledger.read(types=["model.promotion_approved", "model.promoted"])
    token_id = {name: access.parse_bearer(token)[0] for name, token in made.items()}
    assert requested.actor == f"sci (token {token_id['sci']})"
    assert approval.actor == promotion.actor == f"pat (token {token_id['pat']})"
    assert promotion.payload["approver"] == promotion.actor and promotion.payload["request_seq"] == request

    assert run_cli("tokens", "revoke", token_id["pat"], cwd=project).exit_code == 0
    ask2 = {**ask, "version": "2"}
    second = call(server, "POST", "/api/v1/promotion-requests", made["sci"], ask2)[1]["request"]
    before = ledger.head()
    status, problem, _ = call(server, "POST", f"/api/v1/promotion-requests/{second}/approval", made["pat"],
                              {"reason": "late"})  # fmt: skip
    assert status == 401 and "was revoked at" in problem["detail"] and ledger.head() == before
    status, problem, _ = call(server, "POST", "/api/v1/promotions", made["tess"], {**ask2, "approver": "Someone Else"})
    assert status == 422 and "approver" in problem["detail"], "no free-text approver over HTTP"


def test_a_version_trained_under_a_self_asserted_identity_needs_a_server_training_or_a_verified_reproduction(
    project: Path, server: str
) -> None:
    """In team mode a git identity proves nobody's hands: linked to tess, it still cannot let pat approve a version
    only it trained, and tess stays refused by the link."""
    (project / "models" / "churn-4.bin").write_text("weights of version 4\n")
    trained_version(project / "audit" / "ledger.duckdb", "churn", "4", TRAINER, {"validation.f1": 0.9},
                    model_file=Path("models") / "churn-4.bin")  # fmt: skip
    for name, role in (("tess", "approver"), ("pat", "approver")):
        grant_role(project, name, role)
    made = tokens_for(project, "tess", "pat", "sci", "adm")
    assert call(server, "POST", "/api/v1/principals/tess/identities", made["adm"], {"identity": TRAINER})[0] == 201
    ask = {"model": "churn", "version": "4", "to_stage": "staging", "reason": "ready for shadow traffic"}
    request = call(server, "POST", "/api/v1/promotion-requests", made["sci"], ask)[1]["request"]
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    before = ledger.head()
    status, problem, _ = call(server, "POST", f"/api/v1/promotion-requests/{request}/approval", made["tess"],
                              {"reason": "mine, by my git identity"})  # fmt: skip
    assert status == 403 and f"tess trained version 4 of churn (as {TRAINER})" in problem["detail"]
    status, problem, _ = call(server, "POST", f"/api/v1/promotion-requests/{request}/approval", made["pat"],
                              {"reason": "evidence reviewed"})  # fmt: skip
    assert status == 403 and "was trained by a self-asserted identity" in problem["detail"], problem
    assert f"{TRAINER} (self-asserted, source not recorded)" in problem["detail"]
    assert "verified reproduction" in problem["detail"] and ledger.head() == before


def test_a_consumer_sees_its_own_apps_only(project: Path, server: str) -> None:
    made = tokens_for(project, "con", "dep")
    deployment = {"model": "churn", "version": "1", "app": "scoring", "env": "dev"}
    assert call(server, "POST", "/api/v1/deployments", made["dep"], deployment)[0] == 201
    token = made["con"]
    status, answer, _ = call(server, "GET", "/api/v1/apps/scoring/production?env=dev", token)
    assert status == 200 and answer["version"] == "1" and answer["deployed_by"].startswith("dep (token ")
    status, problem, _ = call(server, "GET", "/api/v1/apps/triage/production?env=dev", token)
    assert status == 403 and "a consumer sees its own apps only" in problem["detail"]


def test_events_written_through_the_server_name_the_principal_and_its_token(project: Path, server: str) -> None:
    token = tokens_for(project, "dep")["dep"]
    body = {"model": "churn", "version": "1", "app": "scoring", "env": "dev"}
    status, answer, _ = call(server, "POST", "/api/v1/deployments", token, body)
    assert status == 201, answer
    [started] = Ledger(project / "audit" / "ledger.duckdb").read(limit=1)
    assert started.type == "deployment.started"
    assert started.actor == f"dep (token {access.parse_bearer(token)[0]})"
    assert answer["events"][0]["actor"] == started.actor


def test_failures_are_problem_details_with_the_clis_one_line_message(project: Path, server: str) -> None:
    token = tokens_for(project, "dep")["dep"]
    unknown = {"model": "churn", "version": "9", "app": "scoring", "env": "dev"}
    status, problem, headers = call(server, "POST", "/api/v1/deployments", token, unknown)
    cli = run_cli("deploy", "churn", "9", "--app", "scoring", "--env", "dev", cwd=project)
    assert status == 404 and headers["content-type"] == "application/problem+json"
    assert cli.output.strip() == f"Error: {problem['detail']}"
    assert problem["type"] == "urn:govern:problem:not-found" and problem["instance"] == "/api/v1/deployments"

    status, problem, _ = call(server, "POST", "/api/v1/deployments", token, {**unknown, "colour": "red"})
    assert status == 422 and "colour" in problem["detail"], "unknown fields are refused"
    status, problem, _ = call(
        server, "POST", "/api/v1/retirements", token, {"app": "scoring", "at": "2026-01-01T00:00:00"}
    )
    assert status == 400 and "has no time zone" in problem["detail"]


def test_a_revoked_token_is_refused_at_once(project: Path, server: str) -> None:
    token = tokens_for(project, "aud")["aud"]
    assert call(server, "GET", "/api/v1/whoami", token)[1]["roles"] == {"auditor": []}
    assert run_cli("tokens", "revoke", access.parse_bearer(token)[0], cwd=project).exit_code == 0
    status, problem, _ = call(server, "GET", "/api/v1/whoami", token)
    assert status == 401 and problem["detail"].startswith(f"The token {access.parse_bearer(token)[0]} was revoked at")


def test_serving_on_a_port_in_use_is_one_line_before_anything_starts(project: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), cwd=project)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: Cannot listen on 127.0.0.1:{port} (Address already in use): choose another --port or --host, "
        "or stop what listens there"
    )


def test_writes_and_reads_arriving_together_all_succeed(project: Path, server: str) -> None:
    """A server answers in threads: twelve deployments and twelve reads at once, none failed, none lost."""
    from concurrent.futures import ThreadPoolExecutor

    made = tokens_for(project, "dep", "aud")
    deploy = [("POST", "/api/v1/deployments", made["dep"], {"model": "churn", "version": "1", "app": f"a{i}",
                                                              "env": "dev"}) for i in range(12)]  # fmt: skip
    read = [("GET", "/api/v1/status", made["aud"], None), ("GET", "/api/v1/events?limit=3", made["aud"], None)] * 6
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda r: call(server, r[0], r[1], r[2], r[3]), deploy + read))
    assert [status for status, _, _ in answers] == [201] * 12 + [200] * 12, [a[1] for a in answers if a[0] >= 300]
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    assert len(ledger.read(types=["deployment.started"])) == 12 and ledger.verify().ok


def test_the_edges_of_the_http_surface_are_problem_details(project: Path, server: str) -> None:
    made = tokens_for(project, "aud", "dep", "con", "adm")
    import http.client

    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/api/v1/deployments")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(2 << 20))
    connection.putheader("Authorization", f"Bearer {made['dep']}")  # without one: 401, the body unread too
    connection.endheaders()
    try:
        connection.send(b" " * (2 << 20))  # the server answers before reading it, and may close on us
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = connection.getresponse()
    assert answer.status == 413 and "larger than 1048576 bytes" in json.loads(answer.read())["detail"]
    connection.close()

    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    chunks = (b"x" * 65536 for _ in range(32))  # 2 MiB, chunked: no Content-Length to refuse up front
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {made['aud']}"}
    connection.request("POST", "/api/v1/sql", body=chunks, encode_chunked=True, headers=headers)
    answer = connection.getresponse()
    assert answer.status == 413 and "larger than 1048576 bytes" in json.loads(answer.read())["detail"]
    connection.close()

    status, problem, headers = call(server, "GET", "/api/v1/windows?ap=scoring", made["aud"])
    assert status == 400 and "Unknown query parameter(s) ap: this operation takes app, model" in problem["detail"]
    assert headers["cache-control"] == "no-store"
    status, problem, headers = call(server, "GET", "/api/v1/nowhere", made["aud"])
    assert status == 404 and headers["content-type"] == "application/problem+json"
    assert call(server, "DELETE", "/api/v1/whoami", made["aud"])[0] == 405
    epoch = {"model": "churn", "version": "1", "app": "scoring", "env": "dev", "at": "1764337000"}
    status, problem, _ = call(server, "POST", "/api/v1/deployments", made["dep"], epoch)
    assert status == 400 and "is not an ISO 8601 time" in problem["detail"]
    status, problem, _ = call(server, "POST", "/api/v1/deployments", made["dep"], {"model": "churn"})
    assert status == 422 and problem["detail"] == "Missing field(s): version, app"

    status, problem, _ = call(server, "GET", "/api/v1/apps/scoring/production?env=dev", made["con"])
    assert status == 404 and problem["detail"] == "Nothing is recorded for scoring/dev", "no other app is named"

    run_cli("principals", "add", "nobody-now", "--role", "auditor", cwd=project)
    roleless = tokens_for(project, "nobody-now")["nobody-now"]
    run_cli("principals", "revoke", "nobody-now", "--role", "auditor", cwd=project)
    assert call(server, "GET", "/api/v1/whoami", roleless)[1]["roles"] == {}
    status, problem, _ = call(server, "DELETE", "/api/v1/principals/adm/roles/admin", made["adm"])
    assert status == 403 and "Nobody revokes a role for themselves" in problem["detail"]
    last = run_cli("principals", "revoke", "adm", "--role", "admin", cwd=project)  # the operator, here
    assert last.exit_code == 2 and "adm is the last admin" in last.output

    _, document, _ = call(server, "GET", "/api/v1/openapi.json")
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    deploy = document["paths"]["/api/v1/deployments"]["post"]
    assert (
        deploy["security"] == [{"HTTPBearer": []}]
        and "application/problem+json" in deploy["responses"]["403"]["content"]
    )


def test_bad_input_over_http_is_a_problem_and_writes_nothing(project: Path, server: str) -> None:
    made = tokens_for(project, "aud", "sci", "ci")
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    before = ledger.head()
    secret = project.parent / "secret.csv"
    secret.write_text("password\nhunter2\n")
    cases = [
        ("aud", "POST", "/api/v1/sql", {"statement": f"SELECT * FROM read_csv('{secret}')"}, 400,
         "files and extensions are out of its reach"),
        ("aud", "POST", "/api/v1/sql", {"statement": "COPY events TO '/tmp/x.csv'"}, 400, "runs one SELECT"),
        ("aud", "POST", "/api/v1/queries/..%2F..%2Fetc%2Fpasswd", {}, 404, "No operation at"),
        ("aud", "POST", "/api/v1/queries/..passwd", {}, 400, "is not a query name"),
        ("aud", "POST", "/api/v1/queries/promotions_of_model", {"params": {"x": "1"}}, 400, "not a parameter"),
        ("aud", "GET", "/api/v1/models/churn/versions/1/report?format=pdf", None, 422, "format"),
        ("aud", "GET", "/api/v1/models/..%2Fchurn/history", None, 404, "No operation at"),
        ("aud", "GET", "/api/v1/models/..churn/history", None, 404, "registered models are churn"),
        ("sci", "POST", "/api/v1/promotion-requests", {"model": "churn", "version": "1", "to_stage": "staging"}, 422,
         "Missing field(s): reason"),
        ("sci", "POST", "/api/v1/promotion-requests/abc/approval", {"reason": "x"}, 403, "may not call approve"),
        ("ci", "POST", "/api/v1/reproductions", {"type": "reproduction.verified", "payload": {**VERDICT, "x": 1}},
         400, "Unknown field(s) of reproduction.verified: x"),
        ("ci", "POST", "/api/v1/reproductions", {"type": "reproduction.verified", "payload": {**VERDICT,
         "match": "diverged"}}, 400, "has match equivalent or exact, not 'diverged'"),
        ("ci", "POST", "/api/v1/reproductions", {"type": "training.completed", "payload": VERDICT}, 400,
         "is not a verdict"),
        ("ci", "POST", "/api/v1/reproductions", {"type": "reproduction.verified", "payload": {**VERDICT,
         "commit": "HEAD"}}, 400, "is not a full 40-character commit id"),
        ("ci", "POST", "/api/v1/reproductions", {"type": "reproduction.verified", "payload": {**VERDICT,
         "outputs": "x", "metric_deltas": 5, "duration_s": "slow"}}, 400,
         "with the wrong type: outputs, metric_deltas, duration_s"),
        ("ci", "POST", "/api/v1/reproductions", {"type": "reproduction.verified", "payload": {"commit": "c" * 40}},
         400, "lacks match, outputs, differing_outputs"),
    ]  # fmt: skip
    for who, method, path, body, status, words in cases:
        answered, problem, headers = call(server, method, path, made[who], body)
        assert answered == status and words in problem["detail"], (path, answered, problem)
        assert headers["content-type"] == "application/problem+json"
    assert ledger.head() == before, "no bad request wrote anything"


def test_an_auditor_reads_reports_and_runs_reviewed_queries_over_http(project: Path, server: str) -> None:
    made = tokens_for(project, "aud", "appr")
    body = {"model": "churn", "version": "1", "to_stage": "staging", "reason": "board decision 12"}
    assert call(server, "POST", "/api/v1/promotions", made["appr"], body)[0] == 201
    status, html, headers = call(server, "GET", "/api/v1/models/churn/versions/1/report", made["aud"])
    assert status == 200 and headers["content-type"].startswith("text/html") and "board decision 12" in html
    status, answer, _ = call(server, "POST", "/api/v1/queries/promotions_of_model", made["aud"],
                             {"params": {"model": "churn"}})  # fmt: skip
    assert status == 200 and [row["reason"] for row in answer["rows"]] == ["board decision 12"]
    assert answer["rows"][0]["approver"].startswith("appr (token ")
    query = {"statement": "SELECT count(*) AS n FROM promotions WHERE model = $m", "params": {"m": "churn"}}
    status, answer, _ = call(server, "POST", "/api/v1/sql", made["aud"], query)
    assert status == 200 and answer == {"columns": ["n"], "rows": [{"n": 1}]}
    names = [query["name"] for query in call(server, "GET", "/api/v1/queries", made["aud"])[1]]
    assert names == ["promotions_of_model"]
