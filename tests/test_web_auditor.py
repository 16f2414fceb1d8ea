"""The auditor's pages: the production timeline and its windows with the training behind each, the point-in-time
question, the event log, the ledger's integrity, lineage reports viewed and downloaded, and roles over time.

The project (tests/test_server.py's, with version 4 trained on a snapshotted dataset and version 5 beside it) has a
served history of days: scoring/dev served v4 from two days ago, v5 from one day ago until it was retired twelve
hours ago, and v4 again from six hours ago; triage/dev serves v1 since now. The fast tests ask the pages in-process
(FastAPI's test client); the browser test walks the auditor's task in Chromium against `govern serve`.
"""

from __future__ import annotations

import html
import json
import re
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import apply_isolation, ok, run_cli
from support.copies import Prepared
from support.history import COMMIT, EXTRACTED, iso, prepare
from support.projects import ledger_at
from support.server import tokens_for
from support.web import checked_page, chromium, screenshot, served_site, session_cookie, sign_in, signed_in, wait_until

from govern.report import content_security_policy

# Pages rendered in-process are quick but many: they run in the full suite; the fast tier keeps the role
# separation (tests/test_web_roles.py).
pytestmark = pytest.mark.slow

SECRET = "a" * 43


# ---------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, served_project_original: Prepared) -> dict[str, Any]:
    from govern.server.app import create_app

    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, tmp_path_factory.mktemp("home"))
        project = served_project_original.copy_to(tmp_path_factory.mktemp("auditor") / "project")
        times = prepare(project)
        tokens = tokens_for(project, "aud", "sci")
    app = create_app(project, session_secret=SECRET)
    return {"project": project, "times": times, "client": signed_in(app, tokens["aud"])[0], "app": app, **tokens}


def text_of(page: str) -> str:
    """The page's visible text, roughly: tags out, entities decoded, spaces folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def window_seqs(page: str) -> list[int]:
    svg = re.search(r"<svg.*?</svg>", page, re.S)
    assert svg, "the timeline is drawn"
    return [int(seq) for seq in re.findall(r'href="/audit/windows/(\d+)"', svg.group(0))]


def test_the_timeline_draws_each_window_of_the_slot_as_a_link_to_its_page(site: dict[str, Any]) -> None:
    answer = site["client"].get("/audit/timeline?app=scoring&env=dev")
    assert answer.status_code == 200
    seqs = window_seqs(answer.text)
    assert len(seqs) == 3 and seqs == sorted(seqs), "three windows, oldest on the left"
    assert "serving" in text_of(answer.text)
    other = site["client"].get("/audit/timeline?app=triage&env=dev")
    assert len(window_seqs(other.text)) == 1


def test_the_timeline_without_a_choice_shows_the_first_slot_and_offers_every_app(site: dict[str, Any]) -> None:
    page = site["client"].get("/audit/timeline").text
    assert re.search(r'<option value="scoring" selected>', page)
    assert '<option value="triage">' in page
    assert len(window_seqs(page)) == 3


def test_the_timeline_of_an_unknown_app_says_which_apps_exist(site: dict[str, Any]) -> None:
    answer = site["client"].get("/audit/timeline?app=scorng&env=dev")
    assert answer.status_code == 404
    assert "Unknown app 'scorng'" in html.unescape(answer.text) and "scoring/dev" in answer.text


def test_a_window_page_shows_who_deployed_it_and_the_training_behind_it(site: dict[str, Any]) -> None:
    first = window_seqs(site["client"].get("/audit/timeline?app=scoring&env=dev").text)[0]
    answer = site["client"].get(f"/audit/windows/{first}")
    assert answer.status_code == 200
    text = text_of(answer.text)
    assert "churn v4 on scoring/dev" in text
    assert f"{iso(site['times']['v4'])[:19].replace('T', ' ')} UTC" in text, "its start"
    assert f"{iso(site['times']['v5'])[:19].replace('T', ' ')} UTC" in text, "its end: v5 replaced it"
    assert "Trained by Dana Data <dana@example.com>" in text
    assert COMMIT in text
    assert "data/customers-4.csv" in text and EXTRACTED in text and "crm nightly export" in text
    assert "validation.f1 0.93" in text
    assert 'href="/audit/reports/churn/4"' in answer.text


def test_a_seq_that_starts_no_window_has_no_window_page(site: dict[str, Any]) -> None:
    answer = site["client"].get("/audit/windows/1")
    assert answer.status_code == 404 and "not the start of a production window" in answer.text


@pytest.mark.parametrize(
    ("moment", "served"),
    [("v4", "churn v4"), ("v5", "churn v5"), ("retired", "Nothing served"), ("v4 again", "churn v4")],
)
def test_the_point_in_time_answer_is_the_version_that_served_then(
    site: dict[str, Any], moment: str, served: str
) -> None:
    at = iso(site["times"][moment] + timedelta(minutes=30))
    answer = site["client"].get("/audit/production", params={"app": "scoring", "env": "dev", "at": at})
    assert answer.status_code == 200
    assert served in text_of(answer.text)


def test_the_point_in_time_answer_matches_the_cli(site: dict[str, Any]) -> None:
    at = iso(site["times"]["v5"] + timedelta(hours=1))
    cli = json.loads(
        ok(site["project"], "audit", "production", "--app", "scoring", "--env", "dev", "--at", at, "--json")
    )
    page = site["client"].get("/audit/production", params={"app": "scoring", "env": "dev", "at": at}).text
    assert cli["version"] == "5"
    assert f'href="/audit/windows/{cli["start_seq"]}"' in page
    assert cli["deployed_by"] in text_of(page)


def test_a_time_without_a_zone_gets_the_clis_one_line_message_naming_the_field(site: dict[str, Any]) -> None:
    naive = "2026-01-01T10:00:00"
    answer = site["client"].get("/audit/production", params={"app": "scoring", "env": "dev", "at": naive})
    assert answer.status_code == 400
    cli = run_cli("audit", "production", "--app", "scoring", "--env", "dev", "--at", naive, cwd=site["project"])
    message = cli.output.strip().removeprefix("Error: ")
    assert message.startswith("--at: ") and "has no time zone" in message
    assert message.replace("--at: ", "Instant: ", 1) in text_of(answer.text), "the page names its own field"
    assert 'role="alert"' in answer.text and f'value="{naive}"' in answer.text, "the form keeps what was typed"


def test_an_undeclared_environment_is_refused_with_the_list(site: dict[str, Any]) -> None:
    answer = site["client"].get(
        "/audit/production", params={"app": "scoring", "env": "prod", "at": iso(datetime.now(UTC))}
    )
    assert answer.status_code == 400 and "Unknown environment 'prod'" in html.unescape(answer.text)


LOG_ROW = re.compile(r'<th scope="row">(\d+)</th>\s*<td[^>]*>.*?</td>\s*<td><code>([^<]+)</code>', re.S)


def rows_of(page: str) -> list[tuple[int, str]]:
    """(seq, type) of each row of the event log."""
    return [(int(seq), kind) for seq, kind in LOG_ROW.findall(page)]


def test_the_event_log_filters_by_type_and_pages_by_seq_newest_first(site: dict[str, Any]) -> None:
    client = site["client"]
    page = client.get("/audit/events", params={"type": "deployment.started", "n": "2"}).text
    first = rows_of(page)
    assert [kind for _, kind in first] == ["deployment.started"] * 2
    assert first[0][0] > first[1][0], "newest first"
    older = re.search(r'href="([^"]+)">Older events', page)
    assert older, "a full page links the older events"
    second = rows_of(client.get(html.unescape(older.group(1))).text)
    assert [kind for _, kind in second] == ["deployment.started"] * 2
    assert second[0][0] < first[-1][0]
    everything = [event.seq for event in ledger_at(site["project"]).read(types=["deployment.started"])]
    assert sorted(seq for seq, _ in first + second) == everything[-4:]


def test_the_event_log_since_an_instant_holds_only_later_events(site: dict[str, Any]) -> None:
    since = iso(site["times"]["v4 again"])
    page = site["client"].get("/audit/events", params={"since": since, "type": "deployment.started"}).text
    seqs = [seq for seq, _ in rows_of(page)]
    recorded = ledger_at(site["project"]).read(types=["deployment.started"], since=site["times"]["v4 again"])
    assert seqs == [event.seq for event in reversed(recorded)] and len(seqs) == 2


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"type": "deployment.begun"}, "Unknown event type 'deployment.begun'"),
        ({"since": "2026-01-01 10:00"}, "has no time zone"),
        ({"since": "2999-01-01T00:00:00Z"}, "is in the future"),
        ({"n": "many"}, "is not a number of events"),
        ({"n": "0"}, "show between 1 and 500 events"),
    ],
)
def test_a_bad_filter_is_refused_on_the_page_with_the_clis_message(
    site: dict[str, Any], params: dict[str, str], message: str
) -> None:
    answer = site["client"].get("/audit/events", params=params)
    assert answer.status_code == 400
    assert message in html.unescape(answer.text)


def test_a_misspelt_filter_is_refused_not_ignored(site: dict[str, Any]) -> None:
    answer = site["client"].get("/audit/events", params={"typ": "deployment.started"})
    assert answer.status_code == 400 and "Unknown query parameter(s) typ" in answer.text


def test_integrity_shows_the_head_and_the_anchor_and_verification_recomputes_the_chain(site: dict[str, Any]) -> None:
    head_seq, head_hash = ledger_at(site["project"]).head()
    page = site["client"].get("/audit/integrity").text
    assert head_hash in page and f"<dd>{head_seq}</dd>" in page
    assert "govern-anchor/" in page and "each anchored hash matches" in page
    verified = site["client"].get("/audit/verify").text
    assert "Intact." in verified and f"Every hash and link of the {head_seq} events" in text_of(verified)


def test_a_report_is_a_document_with_its_own_policy_and_downloads_as_a_file(site: dict[str, Any]) -> None:
    client = site["client"]
    listed = client.get("/audit/reports").text
    assert 'href="/audit/reports/churn/4"' in listed and 'href="/audit/reports/churn/1"' in listed
    viewed = client.get("/audit/reports/churn/4")
    assert viewed.status_code == 200 and viewed.headers["content-type"].startswith("text/html")
    policy = viewed.headers["content-security-policy"]
    assert policy == content_security_policy(viewed.text) and "script" not in policy and "unsafe" not in policy
    assert "Lineage report: churn version 4" in viewed.text and "content-disposition" not in viewed.headers
    for kind, ending in (("html", "html"), ("md", "md"), ("json", "json")):
        downloaded = client.get("/audit/reports/churn/4/download", params={"format": kind})
        assert downloaded.status_code == 200
        assert downloaded.headers["content-disposition"] == f'attachment; filename="churn-v4-lineage.{ending}"'
    report = json.loads(client.get("/audit/reports/churn/4/download?format=json").text)
    assert report["report"]["version"] == "4" and report["data"]["datasets"][0]["extracted_at"] == EXTRACTED


def test_a_report_of_an_unknown_version_names_the_known_ones(site: dict[str, Any]) -> None:
    answer = site["client"].get("/audit/reports/churn/9")
    assert answer.status_code == 404 and "Content-Security-Policy" in answer.headers
    assert "'unsafe-inline'" not in answer.headers["content-security-policy"], "an error is a page like any other"


def test_roles_over_time_answer_who_held_a_role_at_an_instant(site: dict[str, Any]) -> None:
    then = site["client"].get("/audit/principals", params={"at": iso(site["times"]["temp held"])}).text
    now = site["client"].get("/audit/principals").text
    held_then = re.search(r"Roles held at.*?</table>", then, re.S).group(0)
    held_now = re.search(r"Roles held now.*?</table>", now, re.S).group(0)
    assert '<th scope="row">temp</th>' in held_then and '<th scope="row">temp</th>' not in held_now
    assert "revoked" in text_of(re.search(r"Grants over time.*", now, re.S).group(0))
    naive = site["client"].get("/audit/principals", params={"at": "2026-01-01T10:00"})
    assert naive.status_code == 400 and "has no time zone" in html.unescape(naive.text)


def test_a_scientist_reads_the_timeline_and_reports_but_not_the_log_integrity_or_roles(
    site: dict[str, Any],
) -> None:
    scientist = signed_in(site["app"], site["sci"])[0]
    for path in ("/audit/timeline", "/audit/production", "/audit/reports", "/audit/reports/churn/4"):
        assert scientist.get(path).status_code == 200, path
    for path in ("/audit/events", "/audit/integrity", "/audit/verify", "/audit/principals"):
        assert scientist.get(path).status_code == 403, path
    nav = re.search(r'<nav aria-label="Pages">(.*?)</nav>', scientist.get("/account").text, re.S).group(1)
    assert "/audit/timeline" in nav and "/audit/events" not in nav and "/audit/principals" not in nav


# ---------------------------------------------------------------- in a browser


@pytest.mark.slow
def test_the_auditor_finds_which_version_served_at_a_past_instant_in_a_browser(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    times: dict[str, datetime] = {}

    def prepared(project: Path) -> None:
        times.update(prepare(project))

    with served_site(tmp_path_factory, ("aud",), prepared) as served, chromium(tmp_path / "profile") as driver:
        base = served["base"]
        sign_in(driver, base, served["tokens"]["aud"])
        nav = driver.find_element(By.CSS_SELECTOR, "nav[aria-label=Pages]")
        assert "/admin/" not in nav.get_attribute("innerHTML"), "an auditor is shown no admin page"
        nav.find_element(By.LINK_TEXT, "Timeline").click()
        wait_until(driver, lambda d: "/audit/timeline" in d.current_url, "the timeline")
        checked_page(driver)
        screenshot(driver, tmp_path / "auditor.png", "auditor")

        bars = driver.find_elements(By.CSS_SELECTOR, "figure.timeline-chart svg a")
        assert len(bars) == 3
        bars[0].click()  # the first window of scoring/dev: v4, two days ago
        wait_until(driver, lambda d: "/audit/windows/" in d.current_url, "the window's page")
        checked_page(driver)
        page = driver.find_element(By.ID, "main").text
        assert "churn v4 on scoring/dev" in page and "Dana Data" in page and COMMIT in page
        assert "data/customers-4.csv" in page and EXTRACTED in page and "0.93" in page

        driver.find_element(By.LINK_TEXT, "The lineage report of churn v4").click()
        wait_until(driver, lambda d: d.current_url.endswith("/audit/reports/churn/4"), "the report")
        assert "Lineage report: churn version 4" in driver.title
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == [], "the report's policy fits it"
        cookie = session_cookie(driver)
        request = urllib.request.Request(f"{base}/audit/reports/churn/4/download?format=md", headers={"Cookie": cookie})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.headers["Content-Disposition"] == 'attachment; filename="churn-v4-lineage.md"'
            assert "churn" in answer.read().decode()

        driver.get(base + "/audit/timeline")
        driver.find_element(By.LINK_TEXT, "Point in time").click()
        driver.find_element(By.ID, "app").send_keys("scoring")
        Select(driver.find_element(By.ID, "env")).select_by_value("dev")
        driver.find_element(By.ID, "at").send_keys(iso(times["v5"] + timedelta(hours=2)))
        driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
        wait_until(driver, lambda d: "at=" in d.current_url, "the answer")
        assert "churn v5 served scoring in dev" in driver.find_element(By.CSS_SELECTOR, ".answer").text
        checked_page(driver)
        driver.find_element(By.LINK_TEXT, "The window and the training behind it").click()
        assert "churn v5 on scoring/dev" in driver.find_element(By.TAG_NAME, "h1").text

        driver.get(base + "/audit/production")
        driver.find_element(By.ID, "app").send_keys("scoring")
        driver.find_element(By.ID, "at").send_keys("2026-01-01T10:00:00")
        driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
        wait_until(driver, lambda d: "at=" in d.current_url, "the refusal")
        assert "has no time zone" in driver.find_element(By.CSS_SELECTOR, "[role=alert]").text
        assert driver.find_element(By.ID, "at").get_attribute("aria-invalid") == "true"
        driver.get_log("browser")  # the 400 the browser logged is the refusal asked for
        checked_page(driver)

        driver.get(base + "/audit/events")
        checked_page(driver)
        Select(driver.find_element(By.ID, "type")).select_by_value("deployment.started")
        field = driver.find_element(By.ID, "n")
        field.clear()
        field.send_keys("3")
        driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
        wait_until(driver, lambda d: "type=deployment.started" in d.current_url, "the filtered log")
        kinds = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "table.events tbody td:nth-of-type(2)")]
        assert kinds == ["deployment.started"] * 3
        driver.find_element(By.CSS_SELECTOR, "table.events summary").click()
        assert '"app": "triage"' in driver.find_element(By.CSS_SELECTOR, "table.events pre").text
        driver.find_element(By.LINK_TEXT, "Older events").click()
        wait_until(driver, lambda d: "before=" in d.current_url, "the older page")
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.events tbody tr")) == 1, "four starts, three shown"
        checked_page(driver)

        for path in ("/audit/reports", "/audit/integrity", "/audit/principals"):
            checked_page(driver, base + path)
        driver.get(base + "/audit/integrity")
        driver.find_element(By.XPATH, "//button[normalize-space()='Verify the whole chain now']").click()
        wait_until(driver, lambda d: "/audit/verify" in d.current_url, "the verification")
        assert "Intact." in driver.find_element(By.ID, "main").text
        checked_page(driver)
