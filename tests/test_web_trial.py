"""What a new user's trial of the web pages found (issue 15's trial), each kept as a reproduction.

In process (FastAPI's test client against the real app and a real ledger): the fast tier.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import grant_role, run_cli, trained_version
from starlette.testclient import TestClient
from support.copies import Prepared
from support.projects import ledger_at
from support.server import ROLE_OF, TRAINER, tokens_for
from support.web import signed_in

from govern.server.app import create_app
from govern.server.http import MAX_BODY, MAX_PREDICT_BODY

# every page of several roles, rendered in-process; the pages' role separation stays in the fast tier (test_web_roles)
pytestmark = pytest.mark.slow

SECRET = "t" * 43


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, served_project_original: Prepared) -> dict[str, Any]:
    from conftest import apply_isolation

    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, tmp_path_factory.mktemp("home"))
        project = served_project_original.copy_to(tmp_path_factory.mktemp("trial") / "project")
        for role in ("scientist", "approver"):
            grant_role(project, "both", role)
        (project / "models" / "churn-4.bin").write_text("weights of version 4\n")
        table = {"path": "data/train.csv", "role": "training", "columns": ["customer", "age", "tenure", "churned"]}
        trained_version(project / "audit" / "ledger.duckdb", "churn", "4", TRAINER,
                        model_file=Path("models") / "churn-4.bin", datasets=[table])  # fmt: skip
        assert run_cli("deploy", "churn", "4", "--app", "scoring", "--env", "dev", cwd=project).exit_code == 0
        tokens = tokens_for(project, *ROLE_OF, "both", "spare")
    return {"project": project, "app": create_app(project, session_secret=SECRET), "tokens": tokens}


def head(project: Path) -> Any:
    return ledger_at(project).head()


def alert(html: str) -> str:
    import html as markup

    found = re.search(r'role="alert"[^>]*>([^<]*)<', html)
    assert found, "the page says why"
    return markup.unescape(found.group(1))


def test_an_upload_over_the_limit_is_said_on_a_page_not_in_json(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["con"])
    big = b"customer,age\n" + b"c-1,41\n" * (MAX_PREDICT_BODY // 7 + 1)
    answer = client.post(
        "/apps/scoring/predict", data={"csrf": csrf, "env": "dev"}, files={"rows": ("big.csv", big, "text/csv")}
    )
    assert answer.status_code == 413 and answer.headers["content-type"].startswith("text/html")
    assert alert(answer.text) == (
        "What you sent is larger than 16 MiB, the most this server takes: send a smaller file"
    )
    assert 'href="/apps"' in answer.text, "the page keeps the consumer's navigation"
    form = client.post("/sign-in", data={"token": "x" * (MAX_BODY + 1), "csrf": csrf})
    assert form.status_code == 413 and "larger than 1 MiB" in alert(form.text)
    consumer = {"Content-Type": "text/csv", "Authorization": f"Bearer {site['tokens']['con']}"}
    api = TestClient(site["app"]).post("/api/v1/apps/scoring/predict", content=big, headers=consumer)
    assert api.status_code == 413 and api.json()["type"] == "urn:govern:problem:too-large", "the API keeps JSON"
    anonymous = TestClient(site["app"]).post(
        "/api/v1/apps/scoring/predict", content=big, headers={"Content-Type": "text/csv"}
    )
    assert anonymous.status_code == 401, "no body is read, nor its size judged, before the token is checked"


@pytest.mark.parametrize("token", ["", "   ", "gvn_000000000000_" + "x" * 43, "not a token"])
def test_a_wrong_or_empty_token_is_refused_in_a_browsers_words(site: dict[str, Any], token: str) -> None:
    from support.web import csrf_of

    client = TestClient(site["app"], follow_redirects=False)
    form = client.get("/sign-in")
    answer = client.post("/sign-in", data={"token": token, "csrf": csrf_of(form.text), "next": "/"})
    said = alert(answer.text)
    if token.strip():
        assert answer.status_code == 401
        assert said == (
            "That token is not valid: paste all of it (it starts with gvn_ and has no spaces), "
            "or ask an admin for a new one"
        )
    else:
        assert answer.status_code == 400 and said == "Paste your token into the field: it starts with gvn_"
    assert "govern_session" not in answer.cookies


def test_signing_out_and_a_session_that_ended_are_said_on_the_sign_in_page(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["spare"])
    out = client.post("/sign-out", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/sign-in?signed-out"
    assert "You are signed out." in client.get(out.headers["location"]).text

    client, _ = signed_in(site["app"], site["tokens"]["spare"])
    token_id = site["tokens"]["spare"].split("_")[1]
    assert run_cli("tokens", "revoke", token_id, cwd=site["project"]).exit_code == 0
    ended = client.get("/audit/timeline")
    assert ended.status_code == 303 and ended.headers["location"] == "/sign-in?next=%2Faudit%2Ftimeline&ended"
    assert "Your session ended: sign in again." in client.get(ended.headers["location"]).text
    fresh = TestClient(site["app"], follow_redirects=False).get("/audit/timeline")
    assert fresh.headers["location"] == "/sign-in?next=%2Faudit%2Ftimeline", "no session: nothing ended"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/approvals/abc", 404, "There is no such page: the number 'abc' in its address is not one there can be"),
        ("/approvals/0", 404, "There is no such page: the number '0' in its address is not one there can be"),
        (
            "/audit/reports/churn/1/download?format=pdf",
            400,
            "The address's format 'pdf' is not valid: use one of html, md, json, or follow a link of the pages instead",
        ),
    ],
)
def test_an_address_of_the_wrong_form_is_said_in_words_not_pydantics(
    site: dict[str, Any], path: str, status: int, message: str
) -> None:
    client, _ = signed_in(site["app"], site["tokens"]["adm"])
    answer = client.get(path)
    assert answer.status_code == status
    assert alert(answer.text) == message
    assert "nput should" not in answer.text and "query." not in answer.text and "path." not in answer.text


@pytest.mark.parametrize(
    ("who", "start"),
    [
        ("sci", "/models"),
        ("appr", "/approvals"),
        ("con", "/apps"),
        ("aud", "/audit/timeline"),
        ("adm", "/admin/principals"),
        ("both", "/approvals"),
        ("dep", "/models"),  # a deployer starts on the first page it may open
    ],
)
def test_each_role_starts_on_its_own_page(site: dict[str, Any], who: str, start: str) -> None:
    client, _ = signed_in(site["app"], site["tokens"][who])
    assert client.get("/").headers["location"] == start


def test_the_navigation_links_every_page_the_principal_may_open_and_no_other(site: dict[str, Any]) -> None:
    for who in ("sci", "appr", "aud", "con"):
        client, _ = signed_in(site["app"], site["tokens"][who])
        nav = re.search(r'<nav aria-label="Pages">(.*?)</nav>', client.get("/account").text, re.S).group(1)
        for href in re.findall(r'href="([^"]+)"', nav):
            assert client.get(href).status_code == 200, (who, href)
        if who in ("appr", "aud"):
            assert 'href="/models"' in nav and 'href="/trainings"' in nav, f"{who} reads the scientist's pages"
        if who == "sci":
            assert 'href="/approvals"' in nav, "a scientist follows (and may withdraw) its requests"


def _ask(site: dict[str, Any], who: str, version: str) -> int:
    body = {"model": "churn", "version": version, "to_stage": "staging", "reason": "please"}
    answer = TestClient(site["app"]).post(
        "/api/v1/promotion-requests", json=body, headers={"Authorization": f"Bearer {site['tokens'][who]}"}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["request"]


def test_the_requester_is_offered_no_approval_it_would_be_refused(site: dict[str, Any]) -> None:
    number = _ask(site, "both", "2")
    client, csrf = signed_in(site["app"], site["tokens"]["both"])
    page = client.get(f"/approvals/{number}").text
    assert 'id="four-eyes-warning"' in page and "another approver must approve it" in page
    assert f'action="/approvals/{number}/approval"' not in page, "no approve form under the four-eyes rule"
    assert f'action="/approvals/{number}/rejection"' in page, "rejecting stays possible"
    assert '<a href="/models/churn/versions/2">Version 2</a>' in page
    assert '<a href="/audit/reports/churn/2">Lineage report</a>' in page
    before = head(site["project"])
    refused = client.post(f"/approvals/{number}/approval", data={"csrf": csrf, "reason": "mine"})
    assert refused.status_code == 403 and head(site["project"]) == before, "the server still refuses it"


def test_a_refused_promotion_request_is_said_beside_its_form_with_what_was_typed(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["sci"])
    before = head(site["project"])
    empty = client.post(
        "/models/churn/versions/3/promotion-request", data={"csrf": csrf, "to_stage": "production", "reason": " "}
    )
    assert empty.status_code == 400 and alert(empty.text) == "The form's field 'reason' is empty: fill it in"
    assert '<option value="production" selected>' in empty.text and "Request a promotion" in empty.text
    unknown = client.post(
        "/models/churn/versions/3/promotion-request",
        data={"csrf": csrf, "to_stage": "prod", "reason": "ready for users"},
    )
    assert unknown.status_code in (400, 404, 409) and "prod" in alert(unknown.text)
    assert ">ready for users</textarea>" in unknown.text, "the reason typed is kept"
    assert head(site["project"]) == before


def test_a_refused_training_is_said_beside_its_form_with_what_was_typed(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["sci"])
    before = head(site["project"])
    answer = client.post("/trainings", data={"csrf": csrf, "commit": "no-such-branch", "targets": "train"})
    assert answer.status_code in (400, 404) and "no-such-branch" in alert(answer.text)
    assert 'value="no-such-branch"' in answer.text and 'value="train"' in answer.text
    assert "Trainings, newest first" in answer.text
    assert head(site["project"]) == before


def test_a_consumer_sees_the_columns_the_serving_version_was_trained_on(site: dict[str, Any]) -> None:
    client, _ = signed_in(site["app"], site["tokens"]["con"])
    page = client.get("/apps/scoring").text
    assert "Columns of churn version 4 (dev)" in page
    assert "<code>data/train.csv</code>" in page and "customer,age,tenure,churned" in page
