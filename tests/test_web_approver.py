"""The approver's pages: the queue of promotion requests with their evidence (gates against thresholds, the
reproduction verdict, what changed in data and code since the version in the stage), approving and rejecting with
a reason, and the four-eyes rule, which refuses the trainer and the requester with the use case's own message.

The browser test runs a real `govern serve` in Chromium; the in-process tests (FastAPI's test client against the
real application and ledger) cover the refusals and the other decisions quickly.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import as_server, grant_role, run_cli, via_server
from starlette.testclient import TestClient
from support.copies import Prepared
from support.projects import ledger_at, project_at
from support.server import call, tokens_for, verdict_for
from support.web import (
    checked_page,
    chromium,
    csrf_of,
    fetch,
    screenshot,
    served_site,
    session_cookie,
    sign_in,
    signed_in,
    wait_until,
)

from govern import access
from govern.api import lifecycle

# Pages rendered in-process are quick but many: they run in the full suite; the fast tier keeps the role
# separation (tests/test_web_roles.py).
pytestmark = pytest.mark.slow


ADA = "Ada Approver <ada@bank.example>"  # appr's git identity: a version she trained is not hers to approve
GATES = 'gates = { staging = ["validation.f1 >= 0.85", "reproduction.verified"] }\n'


def lineage_version(
    project: Path,
    version: str,
    trained_by: str,
    *,
    metrics: dict[str, float],
    data_md5: str,
    rows: int,
    code: dict[str, str],
    params: dict[str, Any],
    commit: str,
    lock: str | None = None,
) -> None:
    """A training of `churn` with datasets, pipeline code and parameters as `govern repro` records them, its
    registered version and its lock commit (`commit`, whose dvc.lock has the sha256 `lock`), appended as facts:
    no DVC run, no MLflow."""
    from govern.envelope import PendingEvent, utc_now
    from govern.events import ModelRegistered, TrainingCompleted, TrainingLocked
    from govern.storage.duckdb_log import Ledger

    dataset = {
        "path": "data/customers.csv",
        "role": "source",
        "md5": data_md5,
        "sha256": hashlib.sha256(data_md5.encode()).hexdigest(),
        "rows": rows,
        "extracted_at": "2026-03-01T06:00:00.000000Z",
    }
    deps = [{"path": path, "md5": md5} for path, md5 in code.items()] + [{"path": dataset["path"], "md5": data_md5}]
    training = TrainingCompleted(
        git={"commit": commit, "branch": "main", "dirty_paths": []},
        dvc_lock_sha256=lock or hashlib.sha256(f"lock {version}".encode()).hexdigest(),
        targets=[],
        stages=[{"name": "train", "cmd": "python src/train.py", "deps": deps, "outs": [], "params": params}],
        params=params,
        metrics=metrics,
        outputs=[],
        datasets=[dataset],
        models=[],
        environment={},
        duration_s=1.0,
        run_cache_hit=False,
    )
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    [trained] = ledger.append([PendingEvent(training, actor=trained_by, occurred_at=utc_now(), git_commit=commit)])
    registered = ModelRegistered(
        "churn",
        version,
        "model.pkl",
        None,
        f"{version:0>64}",
        trained.event_id,
        "run",
        "sqlite:///x",
        "models:/churn/1",
    )
    ledger.append([PendingEvent(registered, actor=trained_by, occurred_at=utc_now(), git_commit=commit)])
    locked = TrainingLocked(
        trained.event_id, commit, training.dvc_lock_sha256, [{"model": "churn", "version": version}], []
    )
    ledger.append([PendingEvent(locked, actor=trained_by, occurred_at=utc_now(), git_commit=commit)])


def prepare(project: Path) -> None:
    """Version 4 holds staging; version 5 (Tess's) changes the data, the code and a parameter; version 6 was
    trained by Ada, whose identity is appr's. Staging then demands f1 >= 0.85 and a verified reproduction."""
    code = {"src/train.py": "b" * 32}
    verdict = verdict_for(project)  # about the lock of versions 5 and 6, at their commit
    commit, lock = verdict["commit"], verdict["dvc_lock_sha256"]
    with as_server(project):  # versions 4 and 5 trained through the server by tess, 4 promoted there by appr
        lineage_version(project, "4", via_server("tess"), metrics={"validation.f1": 0.9}, data_md5="a" * 32,
                        rows=1200, code=code, params={"train": {"C": 1.0}}, commit="4" * 40)  # fmt: skip
        lifecycle.promote(project_at(project, via_server("appr")), "churn", "4", "staging", "the baseline")
        lineage_version(project, "5", via_server("tess"), metrics={"validation.f1": 0.93, "validation.auc": 0.95},
                        data_md5="d" * 32, rows=1500, code={"src/train.py": "e" * 32, "src/features.py": "f" * 32},
                        params={"train": {"C": 0.5}}, commit=commit, lock=lock)  # fmt: skip
    lineage_version(project, "6", ADA, metrics={"validation.f1": 0.91}, data_md5="d" * 32, rows=1500,
                    code=code, params={"train": {"C": 1.0}}, commit=commit, lock=lock)  # fmt: skip
    assert run_cli("principals", "link", "appr", ADA, cwd=project).exit_code == 0
    toml = project / "govern.toml"
    toml.write_text(toml.read_text().replace("[registry]\n", "[registry]\n" + GATES))


def ask(base: str, token: str, version: str, reason: str) -> int:
    body = {"model": "churn", "version": version, "to_stage": "staging", "reason": reason}
    status, answer, _ = call(base, "POST", "/api/v1/promotion-requests", token, body)
    assert status == 201, answer
    return answer["request"]


def head(project: Path) -> Any:
    return ledger_at(project).head()


def holder(project: Path, stage: str) -> str | None:
    from govern.readmodel.versions import stage_holder

    return stage_holder(ledger_at(project), "churn", stage)


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_site(tmp_path_factory, ("appr", "sci", "ci", "con"), prepare) as served:
        base, tokens = served["base"], served["tokens"]
        verdict = {"type": "reproduction.verified", "payload": verdict_for(served["project"])}
        status, answer, _ = call(base, "POST", "/api/v1/reproductions", tokens["ci"], verdict)
        assert status == 201, answer
        served["fifth"] = ask(base, tokens["sci"], "5", "recall up, new features")
        served["sixth"] = ask(base, tokens["sci"], "6", "Ada's retraining")
        yield served


@pytest.mark.slow
def test_the_approver_reviews_the_evidence_approves_and_is_refused_a_version_she_trained(
    site: dict[str, Any], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    base, fifth, sixth = site["base"], site["fifth"], site["sixth"]
    with chromium(tmp_path / "profile") as driver:
        sign_in(driver, base, site["tokens"]["appr"])
        assert driver.current_url == f"{base}/approvals", "the approver starts on the queue"
        checked_page(driver)
        queue = driver.find_element(By.ID, "main").text
        assert "Four-eyes rule" in queue
        assert f"Request {fifth}: churn version 5 to staging" in queue
        assert f"Request {sixth}: churn version 6 to staging" in queue
        card = driver.find_element(By.XPATH, f"//li[.//h3[@id='request-{fifth}']]").text
        assert "passed: validation.f1 >= 0.85 (seen 0.93)" in card and "verified (exact, seq" in card
        assert re.search(r"Now in staging\s+version 4", card) and "tess (authenticated, token 7e55a0000001)" in card

        driver.find_element(By.LINK_TEXT, f"Request {fifth}: churn version 5 to staging").click()
        wait_until(driver, lambda d: d.current_url == f"{base}/approvals/{fifth}", "the request's page")
        checked_page(driver)
        page = driver.find_element(By.ID, "main").text
        assert "validation.f1 >= 0.85 0.93 0.9 passes" in page, "the metric against its threshold and the holder's"
        assert "reproduction.verified verified - passes" in page
        assert "validation.auc 0.95" in page
        fifth_commit = verdict_for(site["project"])["commit"][:12]
        assert f"From version 4 (commit 444444444444) to version 5 (commit {fifth_commit})" in page
        assert "data/customers.csv changed" in page and "1200 rows" in page and "1500 rows" in page
        assert "src/features.py added" in page and "src/train.py changed" in page
        assert "train.C changed 1 0.5" in page
        assert driver.find_elements(By.ID, "four-eyes-warning") == [], "appr neither asked nor trained version 5"
        screenshot(driver, tmp_path / "approver.png", "approver")

        driver.find_element(By.ID, "approve-reason").send_keys("gates pass, reproduction verified, data reviewed")
        driver.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
        wait_until(driver, lambda d: "done=approved" in d.current_url, "the approval to lead back to the request")
        checked_page(driver)
        assert driver.find_element(By.ID, "state").text == "approved"
        assert "was promoted to staging" in driver.find_element(By.CSS_SELECTOR, "[role=status]").text
        assert holder(site["project"], "staging") == "5", "version 5 holds staging now"

        driver.get(f"{base}/approvals/{sixth}")
        warning = driver.find_element(By.ID, "four-eyes-warning").text
        assert "appr trained version 6 of churn" in warning
        assert driver.find_elements(By.CSS_SELECTOR, "button[value=approve]") == [], "no approval offered"
        assert driver.find_elements(By.CSS_SELECTOR, "button[value=reject]"), "rejecting stays possible"
        cookie, csrf = session_cookie(driver), csrf_of(driver.page_source)
    before = head(site["project"])
    status, page = fetch(base, f"/approvals/{sixth}/approval", cookie, data={"csrf": csrf, "reason": "looks fine"})
    assert status == 403 and html.unescape(re.search(r'id="refused">([^<]*)<', page).group(1)) == (
        f"Four-eyes rule: appr trained version 6 of churn (as {ADA}) and cannot approve its promotion; "
        "another approver must approve it"
    )
    assert 'id="state">pending<' in page
    assert head(site["project"]) == before, "a refused approval records nothing"


@pytest.mark.slow
def test_a_consumer_is_refused_the_queue_and_its_forms_even_with_a_valid_csrf_token(
    site: dict[str, Any], tmp_path: Path
) -> None:
    with chromium(tmp_path / "profile") as driver:
        sign_in(driver, site["base"], site["tokens"]["con"])
        cookie = session_cookie(driver)
        links = [a.get_attribute("href") for a in driver.find_elements("css selector", "nav a")]
        assert not any("/approvals" in link for link in links), "a consumer is not linked to the queue"
    _, page = fetch(site["base"], "/account", cookie)
    csrf = csrf_of(page)
    assert fetch(site["base"], "/approvals", cookie)[0] == 403
    assert fetch(site["base"], f"/approvals/{site['sixth']}", cookie)[0] == 403
    before = head(site["project"])
    for action in ("approval", "rejection"):
        status, body = fetch(site["base"], f"/approvals/{site['sixth']}/{action}", cookie,
                             data={"csrf": csrf, "reason": "not mine to decide"})  # fmt: skip
        assert status == 403 and "may not open this page" in body, action
    assert head(site["project"]) == before, "the refused forms wrote nothing"


# ---------------------------------------------------------------- in process


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, served_project_original: Prepared) -> Iterator[dict[str, Any]]:
    """The same project in process, with tess (scientist and approver) who asks for promotions herself."""
    from conftest import apply_isolation

    from govern.server.app import create_app

    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, tmp_path_factory.mktemp("home"))
        patch.setenv("GOVERN_REGISTRY_MIRROR", "background")
        project = served_project_original.copy_to(tmp_path_factory.mktemp("approver") / "project")
        prepare(project)
        for role in ("scientist", "approver"):
            grant_role(project, "tess", role)
        assert run_cli("principals", "add", "sam", "--role", "scientist", cwd=project).exit_code == 0
        tokens = tokens_for(project, "appr", "sci", "tess", "aud", "sam")
        app = create_app(project, session_secret="a" * 43)
        yield {"project": project, "app": app, "tokens": tokens}


def api_request(local: dict[str, Any], who: str, version: str) -> int:
    client = TestClient(local["app"])
    body = {"model": "churn", "version": version, "to_stage": "staging", "reason": "please"}
    answer = client.post("/api/v1/promotion-requests", json=body,
                         headers={"Authorization": f"Bearer {local['tokens'][who]}"})  # fmt: skip
    assert answer.status_code == 201, answer.text
    return answer.json()["request"]


def alert(html: str) -> str:
    found = re.search(r'role="alert" id="refused">([^<]*)<', html)
    assert found, "the page says why"
    import html as markup

    return markup.unescape(found.group(1))


def test_the_requester_is_refused_their_own_request_with_the_four_eyes_message(local: dict[str, Any]) -> None:
    number = api_request(local, "tess", "1")
    client, csrf = signed_in(local["app"], local["tokens"]["tess"])
    page = client.get(f"/approvals/{number}")
    assert page.status_code == 200 and 'id="four-eyes-warning"' in page.text
    before = head(local["project"])
    answer = client.post(f"/approvals/{number}/approval", data={"csrf": csrf, "reason": "mine, but fine"})
    assert answer.status_code == 403
    assert alert(answer.text) == (
        f"Four-eyes rule: tess asked for request {number} and cannot approve it; another approver must approve it"
    )
    assert 'id="state">pending<' in answer.text and f'action="/approvals/{number}/approval"' not in answer.text
    assert head(local["project"]) == before
    withdrawn = client.post(f"/approvals/{number}/rejection", data={"csrf": csrf, "reason": "asked too early"})
    assert withdrawn.status_code == 303 and withdrawn.headers["location"] == f"/approvals/{number}?done=rejected"
    assert 'id="state">rejected<' in client.get(withdrawn.headers["location"]).text


def test_a_version_failing_a_gate_is_shown_failing_and_its_approval_is_refused(local: dict[str, Any]) -> None:
    number = api_request(local, "sci", "2")  # f1 0.9 passes; no reproduction of c0ffee is recorded
    client, csrf = signed_in(local["app"], local["tokens"]["appr"])
    queue = client.get("/approvals").text
    assert f"Request {number}: churn version 2 to staging" in queue
    assert "failed: reproduction.verified (seen no reproduction recorded)" in queue
    page = client.get(f"/approvals/{number}").text
    assert "a gate fails now: an approval would be refused" in page and "none recorded" in page
    before = head(local["project"])
    answer = client.post(f"/approvals/{number}/approval", data={"csrf": csrf, "reason": "ship it"})
    assert answer.status_code == 409
    assert "does not pass the gates of 'staging'" in alert(answer.text)
    assert head(local["project"]) == before


def test_an_approver_rejects_with_a_reason_and_an_empty_reason_is_refused(local: dict[str, Any]) -> None:
    number = api_request(local, "sci", "3")
    client, csrf = signed_in(local["app"], local["tokens"]["appr"])
    before = head(local["project"])
    empty = client.post(f"/approvals/{number}/rejection", data={"csrf": csrf, "reason": "  "})
    assert empty.status_code == 400 and "'reason' is empty" in alert(empty.text)
    assert head(local["project"]) == before
    answer = client.post(f"/approvals/{number}/rejection", data={"csrf": csrf, "reason": "validation set too small"})
    assert answer.status_code == 303
    page = client.get(answer.headers["location"]).text
    assert "Rejected: the request is closed" in page and "validation set too small" in page
    assert f'href="/approvals/{number}">{number}</a>' in client.get("/approvals").text, "among the latest decisions"
    rejected = ledger_at(local["project"]).read(types=["model.promotion_rejected"])[-1]
    token_id = access.parse_bearer(local["tokens"]["appr"])[0]
    assert rejected.actor == f"appr (token {token_id})" and rejected.payload["request_seq"] == number


def test_a_scientist_withdraws_their_own_request_from_the_link_on_the_version_page(local: dict[str, Any]) -> None:
    number = api_request(local, "sci", "6")
    client, csrf = signed_in(local["app"], local["tokens"]["sci"])
    version_page = client.get("/models/churn/versions/6").text
    assert f'<a href="/approvals/{number}">request {number}</a>' in version_page
    request_page = client.get(f"/approvals/{number}").text
    assert ">Withdraw</button>" in request_page and f'action="/approvals/{number}/approval"' not in request_page

    other, other_csrf = signed_in(local["app"], local["tokens"]["sam"])
    assert ">Withdraw</button>" not in other.get(f"/approvals/{number}").text, "not offered to another scientist"
    before = head(local["project"])
    refused = other.post(f"/approvals/{number}/rejection", data={"csrf": other_csrf, "reason": "not mine"})
    assert refused.status_code == 403 and "may withdraw their own requests only" in alert(refused.text)
    assert head(local["project"]) == before

    withdrawn = client.post(f"/approvals/{number}/rejection", data={"csrf": csrf, "reason": "asked too early"})
    assert withdrawn.status_code == 303
    assert 'id="state">rejected<' in client.get(withdrawn.headers["location"]).text
    assert f'href="/approvals/{number}"' not in client.get("/models/churn/versions/6").text, "no longer pending"


def test_an_auditor_reads_the_evidence_but_is_offered_no_decision(local: dict[str, Any]) -> None:
    number = api_request(local, "sci", "5")
    client, csrf = signed_in(local["app"], local["tokens"]["aud"])
    page = client.get(f"/approvals/{number}")
    assert page.status_code == 200 and "What changed since the version in staging" in page.text
    assert 'method="post" action="/approvals/' not in page.text, "no decision form"
    assert client.post(f"/approvals/{number}/approval", data={"csrf": csrf, "reason": "x"}).status_code == 403
