"""The consumer's pages: only its own apps, which version serves each and since when, a CSV scored by the serving
version and returned as a download (recorded under the consumer), its own past inference records; nothing else.

The browser test runs a real `govern serve` in Chromium with a model that really scores rows (a logistic model
in a JSON file, run by its own inference command); the in-process tests cover the refusals and the API's
`inferences` operation quickly.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import git, run_cli
from starlette.testclient import TestClient
from support.copies import Prepared
from support.projects import ledger_at
from support.server import TRAINER, call, tokens_for
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
)

from govern import access

# Pages rendered in-process are quick but many: they run in the full suite; the fast tier keeps the role
# separation (tests/test_web_roles.py).
pytestmark = pytest.mark.slow

WEIGHTS = {"bias": -1.0, "weights": {"tenure": -0.05, "complaints": 0.8}}
SCORE = """\
import csv, json, math, sys


model, given, output = sys.argv[1:4]
weights = json.load(open(model))
with open(given, newline="") as rows, open(output, "w", newline="") as out:
    writer = csv.writer(out, lineterminator="\\n")
    writer.writerow(["customer", "churn_probability"])
    for row in csv.DictReader(rows):
        z = weights["bias"] + sum(w * float(row[name]) for name, w in weights["weights"].items())
        writer.writerow([row["customer"], f"{1 / (1 + math.exp(-z)):.4f}"])
"""
BATCH = "customer,tenure,complaints\nc-1,24,0\nc-2,2,3\nc-3,60,1\n"


def expected(batch: str) -> list[list[str]]:
    rows = list(csv.DictReader(io.StringIO(batch)))
    scored = []
    for row in rows:
        z = WEIGHTS["bias"] + sum(w * float(row[name]) for name, w in WEIGHTS["weights"].items())
        scored.append([row["customer"], f"{1 / (1 + math.exp(-z)):.4f}"])
    return [["customer", "churn_probability"], *scored]


def prepare(project: Path) -> None:
    """Version 4 of churn, a model that really scores (its weights, and its own inference command), serves
    `scoring` in dev; version 1 serves `billing`, an app the consumer may not use; and someone else scored a
    batch for `scoring` from a checkout (a record the consumer must not be shown as theirs)."""
    from govern.envelope import PendingEvent, utc_now
    from govern.events import ModelRegistered, TrainingCompleted
    from govern.storage.duckdb_log import Ledger

    (project / "bin" / "score.py").write_text(SCORE)
    git(project, "add", "bin/score.py")  # the server runs an entry point from the committed code (govern.sandbox)
    git(project, "commit", "-q", "-m", "the scoring entry point")
    model_file = project / "models" / "churn-4.json"
    model_file.write_text(json.dumps(WEIGHTS))
    sha256 = hashlib.sha256(model_file.read_bytes()).hexdigest()
    infer = "python bin/score.py {model} {input} {output}"
    training = TrainingCompleted(
        git={"commit": "c0ffee", "branch": "main", "dirty_paths": []},
        dvc_lock_sha256="0" * 64,
        targets=[],
        stages=[],
        params={},
        metrics={"validation.f1": 0.92},
        outputs=[],
        datasets=[],
        models=[{"name": "churn", "path": "models/churn-4.json", "sha256": sha256, "meta": {"infer": infer}}],
        environment={},
        duration_s=1.0,
        run_cache_hit=False,
    )
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    [trained] = ledger.append([PendingEvent(training, actor=TRAINER, occurred_at=utc_now(), git_commit="c0ffee")])
    registered = ModelRegistered("churn", "4", "models/churn-4.json", None, sha256, trained.event_id, "run",
                                 "sqlite:///x", "models:/churn/4")  # fmt: skip
    ledger.append([PendingEvent(registered, actor=TRAINER, occurred_at=utc_now(), git_commit="c0ffee")])
    for model_version, app in (("4", "scoring"), ("1", "billing")):
        deployed = run_cli("deploy", "churn", model_version, "--app", app, "--env", "dev", cwd=project)
        assert deployed.exit_code == 0, deployed.output
    (project.parent / "theirs.csv").write_text(BATCH)
    scored = run_cli("predict", "--app", "scoring", "--env", "dev", "--input", str(project.parent / "theirs.csv"),
                     "--output", str(project.parent / "theirs-out.csv"), "--record", cwd=project)  # fmt: skip
    assert scored.exit_code == 0, scored.output


def inference_events(project: Path) -> list[Any]:
    return ledger_at(project).read(types=["inference.recorded"])


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_site(tmp_path_factory, ("con", "aud"), prepare) as served:
        yield served


def downloaded(folder: Path, timeout: float = 60) -> Path:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.glob("*.csv") if p.is_file()]
        if done and not list(folder.glob("*.crdownload")):
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no download in {folder} after {timeout} s: {list(folder.iterdir())}")


@pytest.mark.slow
def test_the_consumer_scores_a_csv_downloads_the_predictions_and_sees_the_record(
    site: dict[str, Any], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, project = site["base"], site["project"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    batch = tmp_path / "march-batch.csv"
    batch.write_text(BATCH)
    token_id = access.parse_bearer(site["tokens"]["con"])[0]
    with chromium(tmp_path / "profile") as driver:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        sign_in(driver, base, site["tokens"]["con"])
        assert driver.current_url == f"{base}/apps", "a consumer starts on its apps"
        checked_page(driver)
        main = driver.find_element(By.ID, "main").text
        assert "scoring" in main and "churn version 4" in main
        assert "billing" not in driver.page_source, "another app is not even named"
        nav = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "nav a")]
        assert nav == [f"{base}/apps"], "the consumer's only page"

        driver.find_element(By.CSS_SELECTOR, "h2 a[href='/apps/scoring']").click()
        checked_page(driver)
        assert driver.current_url == f"{base}/apps/scoring"
        serving = driver.find_element(By.CSS_SELECTOR, "table").text
        assert "dev churn version 4" in serving and "UTC" in serving, "which version serves, and since when"
        records = driver.find_element(By.ID, "main").text
        assert "You have not scored anything with scoring yet." in records, "someone else's batch is not theirs"

        Select(driver.find_element(By.ID, "env")).select_by_value("dev")
        driver.find_element(By.ID, "file").send_keys(str(batch))
        driver.find_element(By.CSS_SELECTOR, "form[enctype] button[type=submit]").click()
        saved = downloaded(downloads)
        assert saved.name.startswith("scoring-dev-predictions-")
        assert list(csv.reader(io.StringIO(saved.read_text()))) == expected(BATCH)

        driver.get(f"{base}/apps/scoring")
        checked_page(driver)
        row = driver.find_element(By.CSS_SELECTOR, "#batches tbody tr").text
        assert f"upload march-batch.csv (text/csv, {len(BATCH)} bytes)" in row and "churn 4" in row
        assert " 3 " in f" {row} ", "three rows scored"
        screenshot(driver, tmp_path / "consumer.png", "consumer")
        cookie = session_cookie(driver)

    mine = inference_events(project)[-1]
    assert mine.actor == f"con (token {token_id})"
    assert mine.payload["app"] == "scoring" and mine.payload["env"] == "dev" and mine.payload["rows"] == 3
    assert mine.payload["output_sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
    assert mine.payload["input_sha256"] == hashlib.sha256(BATCH.encode()).hexdigest()

    status, answer, _ = call(base, "GET", "/api/v1/apps/scoring/inferences", site["tokens"]["con"])
    assert status == 200 and [r["seq"] for r in answer] == [mine.seq], "the API answers the consumer's own only"
    status, answer, _ = call(base, "GET", "/api/v1/apps/scoring/inferences?env=dev", site["tokens"]["aud"])
    assert status == 200 and len(answer) == 2, "an auditor sees every batch of the app"

    _, page = fetch(base, "/apps/scoring", cookie)
    csrf = csrf_of(page)
    before = ledger_at(project).head()
    assert fetch(base, "/approvals", cookie)[0] == 403, "the approver's queue"
    assert fetch(base, "/apps/billing", cookie)[0] == 403, "another app"
    status, body = fetch(base, "/apps/billing/predict", cookie, data={"csrf": csrf, "env": "dev"})
    assert status == 403 and "its own apps only" in body
    for path in ("/approvals/1/approval", "/models/churn/versions/1/promotion-request", "/trainings"):
        status, body = fetch(base, path, cookie, data={"csrf": csrf, "reason": "tried", "commit": "HEAD"})
        assert status == 403, path
    assert call(base, "GET", "/api/v1/apps/billing/inferences", site["tokens"]["con"])[0] == 403
    assert ledger_at(project).head() == before, "nothing refused was recorded"


# ---------------------------------------------------------------- in process


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, served_project_original: Prepared) -> Iterator[dict[str, Any]]:
    from conftest import apply_isolation

    from govern.server.app import create_app

    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, tmp_path_factory.mktemp("home"))
        project = served_project_original.copy_to(tmp_path_factory.mktemp("consumer") / "project")
        prepare(project)
        assert (
            run_cli("principals", "add", "con2", "--role", "consumer", "--app", "scoring", cwd=project).exit_code == 0
        )
        tokens = tokens_for(project, "con", "con2", "appr", "aud")
        app = create_app(project, session_secret="c" * 43)
        yield {"project": project, "app": app, "tokens": tokens}


def upload(client: TestClient, csrf: str, rows: str, env: str = "dev", app: str = "scoring") -> Any:
    return client.post(
        f"/apps/{app}/predict",
        data={"csrf": csrf, "env": env},
        files={"file": ("batch.csv", rows.encode(), "text/csv")},
    )


def test_the_download_is_the_same_as_the_apis_answer_and_each_is_recorded(local: dict[str, Any]) -> None:
    client, csrf = signed_in(local["app"], local["tokens"]["con"])
    page = upload(client, csrf, BATCH)
    assert page.status_code == 200, page.text
    assert page.headers["content-disposition"].startswith('attachment; filename="scoring-dev-predictions-')
    assert page.headers["x-govern-version"] == "4"
    api = TestClient(local["app"]).post(
        "/api/v1/apps/scoring/predict?env=dev",
        content=BATCH.encode(),
        headers={"Authorization": f"Bearer {local['tokens']['con']}", "Content-Type": "text/csv"},
    )
    assert api.status_code == 200 and api.content == page.content
    web, http = inference_events(local["project"])[-2:]
    assert web.seq == int(page.headers["x-govern-event-seq"]) and http.seq == int(api.headers["x-govern-event-seq"])
    assert web.payload["input_path"] == f"upload batch.csv (text/csv, {len(BATCH)} bytes)"
    assert http.payload["input_path"] == f"upload (text/csv, {len(BATCH)} bytes)"
    assert web.payload["output_sha256"] == http.payload["output_sha256"]


def test_rows_the_model_cannot_score_are_refused_on_the_page_with_an_error_id_the_log_explains(
    local: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    client, csrf = signed_in(local["app"], local["tokens"]["con"])
    before = ledger_at(local["project"]).head()
    with caplog.at_level(logging.WARNING, logger="govern.server"):
        page = upload(client, csrf, "customer,age\nc-9,41\n")
    assert page.status_code == 422
    found = re.search(r"The model could not score these rows \(error id ([0-9a-f]{12})\): give this id to your "
                      r"administrator", page.text)  # fmt: skip
    assert found and "tenure" not in page.text and "KeyError" not in page.text, "nothing the model said"
    [logged] = [r.getMessage() for r in caplog.records if f"error id {found.group(1)}" in r.getMessage()]
    assert "KeyError: 'tenure'" in logged, "the administrator finds the model's words by the id"
    assert 'role="alert"' in page.text and 'action="/apps/scoring/predict"' in page.text, "the form, to try again"
    empty = upload(client, csrf, "")
    assert empty.status_code == 400 and "is empty: choose a CSV file" in empty.text
    nowhere = upload(client, csrf, BATCH, env="production")
    assert nowhere.status_code == 400 and "production" in nowhere.text
    assert ledger_at(local["project"]).head() == before


def test_each_consumer_sees_only_its_own_records_and_apps(local: dict[str, Any]) -> None:
    first, csrf = signed_in(local["app"], local["tokens"]["con"])
    assert upload(first, csrf, BATCH).status_code == 200
    second, csrf2 = signed_in(local["app"], local["tokens"]["con2"])
    assert upload(second, csrf2, BATCH).status_code == 200
    own = [e for e in inference_events(local["project"]) if e.actor.startswith("con2 (token ")]
    page = second.get("/apps/scoring").text
    assert page.count('<th scope="row">') - 1 == len(own), "one record row per own batch (and one serving row)"
    assert f'<th scope="row">{own[-1].seq}</th>' in page
    theirs = [e.seq for e in inference_events(local["project"]) if e.actor.startswith("con (token ")]
    assert not any(f'<th scope="row">{seq}</th>' in page for seq in theirs)
    assert second.get("/apps/billing").status_code == 403
    assert second.get("/apps/nonexistent").status_code == 403, "an unknown app is refused, not named"


def test_the_inferences_operation_is_the_consumers_own_and_an_auditors_whole(local: dict[str, Any]) -> None:
    api = TestClient(local["app"])

    def ask(who: str, query: str = "", app: str = "scoring") -> Any:
        return api.get(
            f"/api/v1/apps/{app}/inferences{query}", headers={"Authorization": f"Bearer {local['tokens'][who]}"}
        )

    everything = inference_events(local["project"])
    audited = ask("aud", "?limit=1000")
    assert audited.status_code == 200
    assert [r["seq"] for r in audited.json()] == [e.seq for e in reversed(everything)], "newest first, all of them"
    mine = ask("con").json()
    assert mine and all(r["actor"].startswith("con (token ") for r in mine)
    assert [r["seq"] for r in ask("con", "?limit=1").json()] == [mine[0]["seq"]]
    assert ask("con", "?env=production").json() == []
    assert ask("con", app="billing").status_code == 403
    assert ask("appr").status_code == 403
    assert ask("aud", "?limit=0").status_code == 422
    assert ask("aud", app="bad%20name").status_code == 400
    assert ask("aud", app="billing").json() == []
