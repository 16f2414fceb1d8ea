"""The scientist's pages: models and versions, two versions side by side, promotion requests, trainings.

In-process first (FastAPI's test client against the real app and a real ledger): what each page shows and what
each form records or refuses. Then the scientist's work end to end in a real Chromium against a real `govern
serve` that really trains (DVC, MLflow): sign in, read the models, compare two versions, request a promotion, start
a training and watch it finish.
"""

from __future__ import annotations

import html
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_DVC_YAML, TINY_STAGE, as_server, commit_all, git, run_cli, via_server
from support.copies import Prepared
from support.projects import ledger_at, project_at
from support.server import TRAINER, tokens_for
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

from govern.api import lifecycle
from govern.server.app import create_app

# Pages rendered in-process are quick but many: they run in the full suite; the fast tier keeps the role
# separation (tests/test_web_roles.py).
pytestmark = pytest.mark.slow


SECRET = "q" * 43
MLFLOW = "http://mlflow.example:5000"


def recorded_version(project: Path, version: str, *, c: float, f1: float, rows: int, extracted: str) -> str:
    """Version `version` of churn, trained at the repository's HEAD with param `C`, metric `validation.f1`, a
    source dataset of `rows` rows extracted at `extracted` (a snapshot event), a code file, and a run mirrored to
    an MLflow tracking server over HTTP. Returns the commit."""
    from govern.envelope import PendingEvent, utc_now
    from govern.events import DatasetSnapshotted, ModelRegistered, TrainingCompleted
    from govern.storage.duckdb_log import Ledger

    commit = git(project, "rev-parse", "HEAD")
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    md5 = f"{rows:0>32}"
    [snapshot] = ledger.append(
        [
            PendingEvent(
                DatasetSnapshotted("data/raw.csv", md5, None, 100, "warehouse.churn", extracted, "source"),
                actor=TRAINER,
                occurred_at=utc_now(),
                git_commit=commit,
            )
        ]
    )
    training = TrainingCompleted(
        git={"commit": commit, "branch": "main", "dirty_paths": []},
        dvc_lock_sha256="0" * 64,
        targets=[],
        stages=[{"name": "train", "deps": [{"path": "train.py", "md5": f"{c:0>32}"}], "outs": []}],
        params={"C": c, "seed": 7},
        metrics={"validation.f1": f1},
        outputs=[],
        datasets=[
            {"path": "data/raw.csv", "role": "source", "md5": md5, "rows": rows, "snapshot_event_id": snapshot.event_id}
        ],
        models=[],
        environment={},
        duration_s=2.5,
        run_cache_hit=False,
        mlflow={"status": "mirrored", "tracking_uri": MLFLOW, "experiment_id": "7", "run_id": f"run{version}"},
    )
    [trained] = ledger.append([PendingEvent(training, actor=TRAINER, occurred_at=utc_now(), git_commit=commit)])
    registered = ModelRegistered(
        "churn", version, "model.pkl", None, f"{version:0>64}", trained.event_id, f"run{version}", MLFLOW, "models:/x"
    )
    ledger.append([PendingEvent(registered, actor=TRAINER, occurred_at=utc_now(), git_commit=commit)])
    return commit


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, served_project_original: Prepared) -> dict[str, Any]:
    """make_project's churn 1-3, then versions 4 and 5 at two commits (train.py changed between them); version 1
    in staging and version 2 deprecated."""
    from conftest import apply_isolation

    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, tmp_path_factory.mktemp("home"))
        project = served_project_original.copy_to(tmp_path_factory.mktemp("scientist") / "project")
        (project / ".gitignore").write_text("/audit/ledger.duckdb*\n/audit/jobs/\n")
        (project / "train.py").write_text("C = 1.0\n")
        first = commit_all(project, "train with C=1")
        recorded_version(project, "4", c=1.0, f1=0.91, rows=500, extracted="2026-01-05T00:00:00Z")
        (project / "train.py").write_text("C = 0.5\n")
        second = commit_all(project, "train with C=0.5")
        recorded_version(project, "5", c=0.5, f1=0.94, rows=650, extracted="2026-02-07T00:00:00Z")
        with as_server(project):  # an approver's decisions, through the server
            lifecycle.promote(project_at(project, via_server("appr")), "churn", "1", "staging", "first")
            lifecycle.deprecate(project_at(project, via_server("appr")), "churn", "2", "label leak")
        tokens = tokens_for(project, "sci", "con", "aud", "appr")
    return {"project": project, "app": create_app(project, session_secret=SECRET), "tokens": tokens,
            "commits": (first, second)}  # fmt: skip


def text_of(page: str) -> str:
    """The page's visible words, one space apart (tags dropped, entities read)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_the_scientist_starts_on_the_models_page_with_versions_newest_first_stages_and_the_chart(
    setup: dict[str, Any],
) -> None:
    client = signed_in(setup["app"], setup["tokens"]["sci"])[0]
    assert client.get("/").headers["location"] == "/models", "the models page is the scientist's start page"
    page = client.get("/models")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    rows = re.findall(r'<th scope="row"><a href="/models/churn/versions/(\w+)">', page.text)
    assert rows == ["5", "4", "3", "2", "1"], "newest first"
    words = text_of(page.text)
    assert re.search(r"\b1 \S+ \S+ UTC tess \(authenticated, token 7e55a0000001\) staging no\b", words), words
    assert "deprecated" in words and "label leak" in words
    chart = re.search(r"<svg [^>]*>.*?</svg>", page.text, re.S)
    assert chart and 'role="img"' in chart.group(0) and "validation.f1" in chart.group(0)
    assert "style=" not in chart.group(0), "no inline style: the pages' CSP refuses it"
    assert 'aria-current="page"' in page.text and 'href="/trainings"' in page.text


def test_two_versions_side_by_side_show_params_metrics_datasets_and_the_changed_code(setup: dict[str, Any]) -> None:
    client = signed_in(setup["app"], setup["tokens"]["sci"])[0]
    first, second = setup["commits"]
    page = client.get("/models/churn/compare", params={"a": "4", "b": "5"})
    assert page.status_code == 200, page.text
    words = text_of(page.text)
    assert "C 1.0 0.5 changed" in words and "seed 7 7 same" in words
    assert "validation.f1 0.91 0.94 +0.03" in words
    assert "500 rows extracted 2026-01-05 00:00:00 UTC from warehouse.churn" in words
    assert "650 rows extracted 2026-02-07 00:00:00 UTC" in words
    assert first in words and second in words
    assert "train.py modified" in words, "the files git says changed between the two commits"
    assert "train with C=0.5" in words, "each commit's message"
    assert f'href="{MLFLOW}/#/experiments/7/runs/run4"' in page.text

    default = client.get("/models/churn/compare")
    assert default.status_code == 200 and "version 4 and version 5" in text_of(default.text), "the two newest"
    unknown = client.get("/models/churn/compare", params={"a": "4", "b": "99"})
    assert unknown.status_code == 404 and "has no version '99'" in text_of(unknown.text)


def test_a_versions_page_links_its_mlflow_run_only_on_an_http_tracking_server(setup: dict[str, Any]) -> None:
    client = signed_in(setup["app"], setup["tokens"]["sci"])[0]
    page = client.get("/models/churn/versions/5")
    assert page.status_code == 200
    assert f'<a href="{MLFLOW}/#/experiments/7/runs/run5"' in page.text
    assert 'href="/audit/reports/churn/5"' in page.text, "the full lineage report, as the auditor reads it"
    words = text_of(page.text)
    assert "C 0.5" in words and "validation.f1 0.94" in words and "warehouse.churn" in words
    assert "Lock commit not locked no commit holds this training's dvc.lock yet: commit its dvc.lock" in words
    assert "Trained at " in words and "“train with C=0.5”" in words, "the commit it ran at, apart from the lock"
    older = client.get("/models/churn/versions/3")
    assert "#/runs/" not in older.text and "not mirrored" in text_of(older.text), "a version never mirrored"


def test_a_promotion_request_is_recorded_under_the_scientist_and_listed_as_pending(setup: dict[str, Any]) -> None:
    client = signed_in(setup["app"], setup["tokens"]["sci"])[0]
    page = client.get("/models/churn/versions/4")
    assert '<option value="staging" selected>' in page.text, "the next stage is proposed"
    answer = client.post(
        "/models/churn/versions/4/promotion-request",
        data={"csrf": csrf_of(page.text), "to_stage": "staging", "reason": "f1 up by 0.01"},
    )
    assert answer.status_code == 303
    shown = client.get(answer.headers["location"])
    [request] = re.findall(r"Request (\d+) is recorded", shown.text)
    event = ledger_at(setup["project"]).read(seqs=[int(request)])[0]
    assert event.type == "model.promotion_requested" and event.payload["reason"] == "f1 up by 0.01"
    assert event.actor.startswith("sci (token "), "recorded under the signed-in principal"
    models = text_of(client.get("/models").text)
    waiting = f"{request} churn 4 staging sci (authenticated, token"
    assert waiting in models, "listed among the requests waiting for an approver"

    again = client.post(
        "/models/churn/versions/4/promotion-request",
        data={"csrf": csrf_of(page.text), "to_stage": "staging", "reason": "twice"},
    )
    assert again.status_code == 409 and f"Request {request} already asks" in text_of(again.text), "the use case's"
    assert 'id="refused"' in again.text and ">twice</textarea>" in again.text, "beside the form, as typed"
    deprecated = client.get("/models/churn/versions/2")
    assert "cannot be promoted" in deprecated.text and "promotion-request" not in deprecated.text


def test_the_scientists_forms_refuse_other_roles_with_a_valid_csrf_token_and_record_nothing(
    setup: dict[str, Any],
) -> None:
    head = ledger_at(setup["project"]).head()
    for name in ("con", "aud", "appr"):
        client = signed_in(setup["app"], setup["tokens"][name])[0]
        csrf = csrf_of(client.get("/account").text)
        for path, data in (
            ("/models/churn/versions/3/promotion-request", {"to_stage": "staging", "reason": "not mine to ask"}),
            ("/trainings", {"commit": "main"}),
        ):
            answer = client.post(path, data={"csrf": csrf, **data})
            assert answer.status_code == 403, f"{name} POST {path}: {answer.status_code}"
            assert "may not open this page" in answer.text
    consumer = signed_in(setup["app"], setup["tokens"]["con"])[0]
    assert consumer.get("/models").status_code == 403 and consumer.get("/trainings").status_code == 403
    auditor = signed_in(setup["app"], setup["tokens"]["aud"])[0]
    models = auditor.get("/models").text
    assert 'href="/models"' in models, "an auditor may read the models, and the navigation links what it may open"
    assert "promotion-request" not in auditor.get("/models/churn/versions/3").text, "but offers no request form"
    assert ledger_at(setup["project"]).head() == head


def test_a_training_started_from_the_page_opens_its_page_which_follows_it_until_it_finishes(
    setup: dict[str, Any],
) -> None:
    client = signed_in(setup["app"], setup["tokens"]["sci"])[0]
    page = client.get("/trainings")
    answer = client.post("/trainings", data={"csrf": csrf_of(page.text), "commit": "main", "targets": ""})
    assert answer.status_code == 303
    job = answer.headers["location"].removeprefix("/trainings/")
    shown = client.get(f"/trainings/{job}")
    assert "queued" in text_of(shown.text), "no runner in-process: the job waits"
    assert '<script src="/static/scientist.js" defer></script>' in shown.text
    assert '<noscript><meta http-equiv="refresh"' in shown.text, "without JavaScript the page reloads"
    listed = client.get("/trainings").text
    assert f'href="/trainings/{job}"' in listed
    assert client.get("/static/scientist.js").status_code == 200

    cancelled = client.post(f"/trainings/{job}/cancellation", data={"csrf": csrf_of(shown.text)})
    assert cancelled.status_code == 303
    final = client.get(f"/trainings/{job}")
    assert "cancelled" in text_of(final.text)
    assert "scientist.js" not in final.text and 'http-equiv="refresh"' not in final.text, "finished: not followed"
    bad = client.post("/trainings", data={"csrf": csrf_of(page.text), "commit": "no-such-branch"})
    assert bad.status_code == 404 and "is not a commit of the server's repository" in text_of(bad.text)


# ------------------------------------------------------------------- in a browser, with a training that trains


def trainable(project: Path, mlflow_store: Path) -> None:
    """Give make_project's project the one-stage DVC pipeline of conftest.tiny_pipeline (its model `tiny-model`
    trains in seconds), jobs run by this interpreter, and an MLflow store of its own (make_project's is
    unreachable)."""
    (project / "make.py").write_text(TINY_STAGE)
    (project / "params.yaml").write_text("n: 3\n")
    (project / "dvc.yaml").write_text(TINY_DVC_YAML)
    settings = (project / "govern.toml").read_text()
    settings = settings.replace('python = "bin/slow-python"', f'python = "{sys.executable}"')
    settings = settings.replace("sqlite:////nonexistent/mlflow.db", f"sqlite:///{project / 'mlflow.db'}")
    (project / "govern.toml").write_text(settings)
    shutil.copy2(mlflow_store, project / "mlflow.db")
    result = run_cli("init", cwd=project)
    assert result.exit_code == 0, result.output
    commit_all(project, "a pipeline to train")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, mlflow_store_template: Path) -> Iterator[dict[str, Any]]:
    with served_site(tmp_path_factory, ("sci", "con", "aud"), lambda p: trainable(p, mlflow_store_template)) as s:
        yield s


@pytest.mark.slow
def test_the_scientist_compares_versions_requests_a_promotion_and_watches_a_training_finish(
    site: dict[str, Any], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base = site["base"]
    with chromium(tmp_path / "profile") as driver:
        sign_in(driver, base, site["tokens"]["sci"])
        assert driver.current_url == f"{base}/models", "the scientist starts on the models page"
        checked_page(driver)
        assert driver.find_element(By.CSS_SELECTOR, ".chart svg[role=img]")

        Select(driver.find_element(By.NAME, "a")).select_by_value("1")
        Select(driver.find_element(By.NAME, "b")).select_by_value("3")
        driver.find_element(By.CSS_SELECTOR, ".compare-form button").click()
        wait_until(driver, lambda d: "/compare?a=1&b=3" in d.current_url, "the comparison of versions 1 and 3")
        assert "version 1 and version 3" in driver.find_element(By.TAG_NAME, "h1").text
        checked_page(driver)

        driver.find_element(By.LINK_TEXT, "Version 3").click()
        wait_until(driver, lambda d: d.current_url.endswith("/models/churn/versions/3"), "version 3's page")
        checked_page(driver)
        driver.find_element(By.ID, "reason").send_keys("f1 holds at 0.9 on fresh data")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/promotion-request'] button").click()
        wait_until(driver, lambda d: "?done=" in d.current_url, "the request's notice")
        assert "waits for an approver" in driver.find_element(By.CSS_SELECTOR, ".notice").text
        driver.find_element(By.LINK_TEXT, "Models").click()
        pending = driver.find_element(By.CSS_SELECTOR, "[aria-label='Pending promotion requests']").text
        assert "f1 holds at 0.9 on fresh data" in pending and "staging" in pending

        driver.find_element(By.LINK_TEXT, "Trainings").click()
        checked_page(driver)
        driver.find_element(By.CSS_SELECTOR, "form[action='/trainings'] button").click()
        wait_until(driver, lambda d: re.search(r"/trainings/[0-9a-f]{12}$", d.current_url), "the training's page")
        page_url = driver.current_url
        wait_until(
            driver,
            lambda d: d.find_element(By.ID, "progress").get_attribute("data-finished") == "true",
            "the training to finish, followed by the page without reloading",
            timeout=240,
        )
        assert driver.current_url == page_url
        state = driver.find_element(By.ID, "state-line").text
        log = driver.find_element(By.ID, "details").text
        assert "succeeded" in state, log
        stages = driver.find_element(By.CSS_SELECTOR, "[aria-label=Stages]").text
        assert "make" in stages and "ran" in stages
        assert "tiny-model version 1" in driver.find_element(By.ID, "details").text, "the version it registered"
        checked_page(driver)
        screenshot(driver, tmp_path / "scientist.png", "scientist")

        cookie = session_cookie(driver)
    status, page = fetch(base, "/trainings", cookie)
    assert status == 200 and "succeeded" in page


@pytest.mark.slow
def test_in_a_served_site_the_scientists_forms_refuse_a_consumer_and_an_auditor(
    site: dict[str, Any], tmp_path: Path
) -> None:
    head = ledger_at(site["project"]).head()
    for name in ("con", "aud"):
        with chromium(tmp_path / f"profile-{name}") as driver:
            sign_in(driver, site["base"], site["tokens"][name])
            cookie = session_cookie(driver)
            csrf = csrf_of(driver.page_source)
        for path, data in (
            ("/trainings", {"commit": "main"}),
            ("/models/churn/versions/2/promotion-request", {"to_stage": "staging", "reason": "not mine"}),
        ):
            status, _ = fetch(site["base"], path, cookie, data={"csrf": csrf, **data})
            assert status == 403, f"{name} POST {path}"
    assert ledger_at(site["project"]).head() == head
