"""The admin's pages: grant and revoke roles (approver and admin proposed by one admin, confirmed by another), issue
enrollment codes for others and tokens for oneself (the secret shown once, never in a URL) and revoke them; and no
one else may use them.

The fast tests ask the pages in-process (FastAPI's test client against the real app and ledger); the browser test
does the admin's work in Chromium against `govern serve`, and checks that an auditor is refused every admin form.
"""

from __future__ import annotations

import html
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import apply_isolation, grant_role
from starlette.testclient import TestClient
from support.copies import Prepared
from support.projects import ledger_at
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

# Pages rendered in-process are quick but many: they run in the full suite; the fast tier keeps the role
# separation (tests/test_web_roles.py).
pytestmark = pytest.mark.slow

SECRET = "m" * 43


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, served_project_original: Prepared) -> dict[str, Any]:
    from support.server import tokens_for

    from govern.server.app import create_app

    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, tmp_path_factory.mktemp("home"))
        project = served_project_original.copy_to(tmp_path_factory.mktemp("admin") / "project")
        grant_role(project, "adm2", "admin")  # a second admin, to confirm what adm proposes
        tokens = tokens_for(project, "adm", "aud", "adm2")
        second = tokens_for(project, "adm")["adm"]  # the same admin, another token: another session
    app = create_app(project, session_secret=SECRET)
    return {"project": project, "app": app, "tokens": tokens, "second": second}


def whoami(app: Any, bearer: str) -> int:
    return TestClient(app).get("/api/v1/whoami", headers={"Authorization": f"Bearer {bearer}"}).status_code


def recorded(project: Path, seq: int) -> Any:
    [event] = ledger_at(project).read(seqs=[seq])
    return event


def redeemed(app: Any, code: str) -> str:
    """The token an enrollment code gives, redeemed through the API as its principal would."""
    answer = TestClient(app).post("/api/v1/enrollment-codes/redemptions", json={"code": code})
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


def test_granting_a_role_records_it_under_the_admins_name_and_confirms_it(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["adm"])
    fields = {"csrf": csrf, "principal": "bea", "role": "consumer", "apps": "scoring, triage", "reason": "new team"}
    answer = client.post("/admin/principals/grant", data=fields)
    assert answer.status_code == 303
    seq = int(re.fullmatch(r"/admin/principals\?done=(\d+)", answer.headers["location"]).group(1))
    event = recorded(site["project"], seq)
    assert event.type == "access.granted" and event.actor.startswith("adm (token ")
    assert event.payload["apps"] == ["scoring", "triage"] and event.payload["reason"] == "new team"
    page = client.get(answer.headers["location"]).text
    assert f"Recorded as seq {seq}" in page
    assert re.search(r'<th scope="row">bea</th>\s*<td>consumer</td>\s*<td>scoring, triage</td>', page)


def test_revoking_a_role_takes_it_away(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["adm"])
    client.post("/admin/principals/grant", data={"csrf": csrf, "principal": "cid", "role": "auditor"})
    answer = client.post("/admin/principals/revoke", data={"csrf": csrf, "principal": "cid", "role": "auditor"})
    assert answer.status_code == 303
    assert recorded(site["project"], int(answer.headers["location"].split("=")[1])).type == "access.revoked"
    assert '<th scope="row">cid</th>' not in client.get("/admin/principals").text


@pytest.mark.parametrize(
    ("path", "fields", "status", "message"),
    [
        ("/admin/principals/grant", {"principal": "Bad Name", "role": "auditor"}, 400, "is not a principal name"),
        ("/admin/principals/grant", {"principal": "dot", "role": "wizard"}, 400, "Unknown role 'wizard'"),
        ("/admin/principals/grant", {"principal": "dot", "role": "consumer"}, 400, "A consumer is limited to named"),
        ("/admin/principals/grant", {"principal": "aud", "role": "auditor"}, 409, "aud holds the role auditor"),
        (
            "/admin/principals/revoke",
            {"principal": "adm", "role": "admin"},
            403,
            "Nobody revokes a role for themselves",
        ),
        ("/admin/principals/grant", {"principal": "adm", "role": "approver"}, 403, "Nobody grants a role for themse"),
        ("/admin/principals/grant", {"principal": "adm2", "role": "approver"}, 409, "adm2 holds the role admin and"),
        ("/admin/principals/confirm", {"proposal": "99999"}, 404, "No grant proposal 99999"),
        ("/admin/principals/decline", {"proposal": "99999"}, 400, "--reason must not be empty"),
        ("/admin/principals/revoke", {"principal": "aud", "role": "admin"}, 404, "aud does not hold the role admin"),
        ("/admin/tokens", {"principal": "nobody"}, 404, "nobody holds no role"),
        ("/admin/tokens", {"principal": "aud", "expires": "0d"}, 400, "a token must live a while"),
        ("/admin/tokens/revoke", {"token_id": "0123456789ab"}, 404, "No token '0123456789ab'"),
        ("/admin/principals/grant", {"role": "auditor"}, 400, "The form's field 'principal' is empty"),
    ],
)
def test_a_refused_form_shows_the_clis_message_and_writes_nothing(
    site: dict[str, Any], path: str, fields: dict[str, str], status: int, message: str
) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["adm"])
    before = ledger_at(site["project"]).head()
    answer = client.post(path, data={"csrf": csrf, **fields})
    assert answer.status_code == status
    assert message in html.unescape(answer.text) and 'role="alert"' in answer.text
    assert ledger_at(site["project"]).head() == before


def test_a_code_issued_for_someone_else_is_shown_once_never_in_a_url_and_redeemed_by_them(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["adm"])
    answer = client.post("/admin/tokens", data={"csrf": csrf, "principal": "aud", "description": "laptop"})
    assert answer.status_code == 303
    code_id = re.fullmatch(r"/admin/tokens/issued/([0-9a-f]{12})", answer.headers["location"]).group(1)
    sealed = answer.cookies.get("govern_issued")
    assert sealed and "gvc_" not in sealed and "gvc_" not in answer.headers["location"]
    shown = client.get(answer.headers["location"])
    code = re.search(r'value="(gvc_[0-9a-f]{12}_[A-Za-z0-9_-]{43})"', shown.text).group(1)
    assert code.split("_")[1] == code_id and "It is not a token" in shown.text and "govern tokens redeem" in shown.text
    secret = code.split("_", 2)[2]
    assert secret not in sealed, "the cookie carries the secret encrypted"
    assert 'govern_issued=""' in shown.headers["set-cookie"] or "Max-Age=0" in shown.headers["set-cookie"]
    assert whoami(site["app"], code) == 401, "a code is no token"
    bearer = redeemed(site["app"], code)
    assert whoami(site["app"], bearer) == 200, "the token the code gives works"
    reloaded = client.get(answer.headers["location"])
    assert reloaded.status_code == 200 and secret not in reloaded.text and "was shown once" in reloaded.text
    listed = client.get("/admin/tokens").text
    row = re.search(rf'<tr id="token-{code_id}">.*?</tr>', listed, re.S).group(0)
    assert ">code<" in row and "redeemed" in row and secret not in listed
    token_row = re.search(rf'<tr id="token-{bearer.split("_")[1]}">.*?</tr>', listed, re.S).group(0)
    assert "by adm (token " in token_row and "active" in token_row, "the token's issuer is the code's"


def issued_code(site: dict[str, Any], principal: str) -> str:
    client, csrf = signed_in(site["app"], site["tokens"]["adm"])
    answer = client.post("/admin/tokens", data={"csrf": csrf, "principal": principal, "description": "new laptop"})
    shown = client.get(answer.headers["location"])
    return re.search(r'value="(gvc_[0-9a-f]{12}_[A-Za-z0-9_-]{43})"', shown.text).group(1)


def test_an_enrollment_code_pasted_into_the_sign_in_form_signs_in_and_shows_the_new_token_once(
    site: dict[str, Any],
) -> None:
    code = issued_code(site, "aud")
    browser = TestClient(site["app"], follow_redirects=False)
    form = browser.get("/sign-in")
    assert "gvc_" in form.text, "the form says a code is welcome"
    answer = browser.post("/sign-in", data={"token": code, "csrf": csrf_of(form.text), "next": "/audit/timeline"})
    assert answer.status_code == 200, answer.text
    bearer = re.search(r'id="bearer" class="bearer" value="(gvn_[0-9a-f]{12}_[A-Za-z0-9_-]{43})"', answer.text).group(1)
    assert "signed in as <strong>aud</strong>" in answer.text and 'href="/audit/timeline"' in answer.text
    assert "no-store" in answer.headers["cache-control"], "the page with the secret is never cached"
    assert whoami(site["app"], bearer) == 200, "the token shown is the holder's"
    assert browser.get("/account").status_code == 200, "and the browser is signed in with it"
    again = TestClient(site["app"], follow_redirects=False)
    form = again.get("/sign-in")
    spent = again.post("/sign-in", data={"token": code, "csrf": csrf_of(form.text), "next": "/"})
    assert spent.status_code == 401 and "was used already" in html.unescape(spent.text) and bearer not in spent.text
    wrong = again.post("/sign-in", data={"token": code[:-4] + "AAAA", "csrf": csrf_of(form.text), "next": "/"})
    assert wrong.status_code == 401 and "not a valid enrollment code" in html.unescape(wrong.text)
    [event] = ledger_at(site["project"]).read(seqs=[ledger_at(site["project"]).head()[0]])
    assert event.type == "token.issued" and event.authn is not None and "enrollment code" in str(event.authn)


def test_codes_tried_at_the_sign_in_form_count_against_the_redemption_limit(site: dict[str, Any]) -> None:
    from govern.server.app import REDEEM_PER_CLIENT, create_app

    browser = TestClient(create_app(site["project"], session_secret=SECRET), follow_redirects=False)
    csrf = csrf_of(browser.get("/sign-in").text)
    guess = "gvc_000000000000_" + "A" * 43
    answers = [browser.post("/sign-in", data={"token": guess, "csrf": csrf}) for _ in range(REDEEM_PER_CLIENT + 1)]
    assert [a.status_code for a in answers] == [401] * REDEEM_PER_CLIENT + [429]
    assert int(answers[-1].headers["retry-after"]) > 0 and "Too many attempts" in answers[-1].text


def test_an_admins_token_for_itself_is_a_token(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["adm"])
    answer = client.post("/admin/tokens", data={"csrf": csrf, "principal": "adm", "expires": "1d"})
    bearer = re.search(r'value="(gvn_[0-9a-f]{12}_[A-Za-z0-9_-]{43})"', client.get(answer.headers["location"]).text)
    assert bearer and whoami(site["app"], bearer.group(1)) == 200


def test_an_approver_is_proposed_by_one_admin_and_confirmed_by_another_on_their_pages(site: dict[str, Any]) -> None:
    adm, adm_csrf = signed_in(site["app"], site["tokens"]["adm"])
    answer = adm.post("/admin/principals/grant", data={"csrf": adm_csrf, "principal": "ivy", "role": "approver"})
    proposal = int(answer.headers["location"].split("=")[1])
    page = adm.get(answer.headers["location"]).text
    assert "Proposed: it is held once another admin confirms it" in page
    row = re.search(rf'<tr id="proposal-{proposal}">.*?</tr>', page, re.S).group(0)
    assert "Withdraw" in row and "Confirm" not in row, "the proposer may withdraw, never confirm"
    refused = adm.post("/admin/principals/confirm", data={"csrf": adm_csrf, "proposal": str(proposal)})
    assert refused.status_code == 403 and "two admins means two people" in html.unescape(refused.text)

    other, other_csrf = signed_in(site["app"], site["tokens"]["adm2"])
    row = re.search(rf'<tr id="proposal-{proposal}">.*?</tr>', other.get("/admin/principals").text, re.S).group(0)
    assert "Confirm" in row and "Decline" in row
    done = other.post("/admin/principals/confirm", data={"csrf": other_csrf, "proposal": str(proposal)})
    event = recorded(site["project"], int(done.headers["location"].split("=")[1]))
    assert event.type == "access.granted" and event.payload["proposal_seq"] == proposal
    held = other.get("/admin/principals").text
    line = re.search(r'<th scope="row">ivy</th>.*?</tr>', held, re.S).group(0)
    assert "by adm2 (authenticated, token " in line and "proposed by adm (authenticated, token " in line
    assert "two admins" in line and f'id="proposal-{proposal}"' not in held


def test_the_sealed_secret_opens_only_in_the_session_that_issued_it(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["adm"])
    answer = client.post("/admin/tokens", data={"csrf": csrf, "principal": "aud"})
    sealed = answer.cookies.get("govern_issued")
    other, _ = signed_in(site["app"], site["second"])
    stolen = other.get(answer.headers["location"], cookies={"govern_issued": sealed})
    assert stolen.status_code == 200 and "gvn_" not in stolen.text and "was shown once" in stolen.text
    tampered = client.get(answer.headers["location"], cookies={"govern_issued": sealed[:-2] + "xx"})
    assert "gvn_" not in tampered.text


def test_revoking_a_token_ends_it(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["adm"])
    answer = client.post("/admin/tokens", data={"csrf": csrf, "principal": "aud", "expires": "1d"})
    bearer = redeemed(site["app"], re.search(r'value="(gvc_[^"]+)"', client.get(answer.headers["location"]).text)[1])
    token_id = bearer.split("_")[1]
    assert whoami(site["app"], bearer) == 200
    revoked = client.post("/admin/tokens/revoke", data={"csrf": csrf, "token_id": token_id, "reason": "lost"})
    assert revoked.status_code == 303
    event = recorded(site["project"], int(revoked.headers["location"].split("=")[1]))
    assert event.type == "token.revoked" and event.payload["reason"] == "lost"
    assert whoami(site["app"], bearer) == 401
    row = re.search(rf'<tr id="token-{token_id}">.*?</tr>', client.get("/admin/tokens").text, re.S).group(0)
    assert "revoked" in row and "/admin/tokens/revoke" not in row, "a revoked token offers no revoke"


def test_an_auditor_is_refused_every_admin_page_and_form_and_sees_no_admin_link(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["aud"])
    before = ledger_at(site["project"]).head()
    for path in ("/admin/principals", "/admin/tokens", "/admin/tokens/issued/0123456789ab"):
        assert client.get(path).status_code == 403, path
    forms = {
        "/admin/principals/grant": {"principal": "aud", "role": "admin"},
        "/admin/principals/confirm": {"proposal": "1"},
        "/admin/principals/decline": {"proposal": "1", "reason": "no"},
        "/admin/principals/withdraw": {"proposal": "1"},
        "/admin/principals/revoke": {"principal": "adm", "role": "admin"},
        "/admin/tokens": {"principal": "aud"},
        "/admin/tokens/revoke": {"token_id": site["tokens"]["adm"].split("_")[1]},
    }
    for path, fields in forms.items():
        answer = client.post(path, data={"csrf": csrf, **fields})
        assert answer.status_code == 403, path
        assert "may not open this page: it needs the right to" in html.unescape(answer.text)
    assert ledger_at(site["project"]).head() == before
    nav = re.search(r'<nav aria-label="Pages">(.*?)</nav>', client.get("/account").text, re.S).group(1)
    assert "/admin/" not in nav and "/audit/principals" in nav


def test_an_admin_form_without_its_csrf_token_is_refused(site: dict[str, Any]) -> None:
    client, _ = signed_in(site["app"], site["tokens"]["adm"])
    before = ledger_at(site["project"]).head()
    answer = client.post("/admin/principals/grant", data={"principal": "eve", "role": "admin", "csrf": "0" * 64})
    assert answer.status_code == 403 and "security token" in answer.text
    assert ledger_at(site["project"]).head() == before


# ---------------------------------------------------------------- in a browser


@pytest.mark.slow
def test_the_admin_grants_a_role_and_issues_and_revokes_a_token_in_a_browser(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    with served_site(tmp_path_factory, ("adm", "aud")) as served:
        base, project = served["base"], served["project"]
        with chromium(tmp_path / "profile") as driver:
            admin_work(driver, base, project, served["tokens"]["adm"], tmp_path)
        with chromium(tmp_path / "auditor") as driver:
            sign_in(driver, base, served["tokens"]["aud"])
            nav = driver.find_element(By.CSS_SELECTOR, "nav[aria-label=Pages]").get_attribute("innerHTML")
            assert "/admin/" not in nav, "an auditor is shown no admin page"
            cookie = session_cookie(driver)
        status, page = fetch(base, "/audit/principals", cookie)
        assert status == 200
        csrf = csrf_of(page)
        before = ledger_at(project).head()
        for path, fields in (
            ("/admin/principals/grant", {"principal": "aud", "role": "admin"}),
            ("/admin/principals/revoke", {"principal": "adm", "role": "admin"}),
            ("/admin/tokens", {"principal": "aud"}),
            ("/admin/tokens/revoke", {"token_id": served["tokens"]["adm"].split("_")[1]}),
        ):
            status, _ = fetch(base, path, cookie, data={"csrf": csrf, **fields})
            assert status == 403, path
        assert fetch(base, "/admin/principals", cookie)[0] == 403
        assert ledger_at(project).head() == before, "no refused form wrote anything"


def admin_work(driver: Any, base: str, project: Path, token: str, tmp_path: Path) -> None:
    """Grant a role, issue an enrollment code for it (shown once), which it redeems, revoke the token it got."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    sign_in(driver, base, token)
    driver.find_element(By.CSS_SELECTOR, "nav[aria-label=Pages]").find_element(By.LINK_TEXT, "Roles").click()
    checked_page(driver)
    driver.find_element(By.ID, "grant-principal").send_keys("newbie")
    Select(driver.find_element(By.ID, "grant-role")).select_by_value("consumer")
    driver.find_element(By.ID, "grant-apps").send_keys("scoring")
    driver.find_element(By.ID, "grant-reason").send_keys("joins the scoring team")
    driver.find_element(By.XPATH, "//button[normalize-space()='Grant']").click()
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".notice"), "the grant's notice")
    notice = driver.find_element(By.CSS_SELECTOR, ".notice").text
    assert "access.granted" in notice and "principal:newbie" in notice and "consumer" in notice
    checked_page(driver)
    screenshot(driver, tmp_path / "admin.png", "admin")

    driver.find_element(By.LINK_TEXT, "Tokens").click()
    checked_page(driver)
    Select(driver.find_element(By.ID, "issue-principal")).select_by_value("newbie")
    driver.find_element(By.ID, "issue-description").send_keys("scoring batch job")
    driver.find_element(By.XPATH, "//button[normalize-space()='Issue']").click()
    wait_until(driver, lambda d: d.find_elements(By.ID, "bearer"), "the code shown once")
    code = driver.find_element(By.ID, "bearer").get_attribute("value")
    assert re.fullmatch(r"gvc_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", code)
    assert code not in driver.current_url and "It is not a token" in driver.find_element(By.ID, "main").text
    checked_page(driver)
    driver.refresh()
    assert driver.find_elements(By.ID, "bearer") == [] and code not in driver.page_source
    assert "was shown once" in driver.find_element(By.ID, "main").text
    redemption = urllib.request.Request(f"{base}/api/v1/enrollment-codes/redemptions", method="POST",
                                        data=json.dumps({"code": code}).encode(),
                                        headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(redemption, timeout=30) as answer:
        bearer = json.loads(answer.read())["token"]
    request = urllib.request.Request(f"{base}/api/v1/whoami", headers={"Authorization": f"Bearer {bearer}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200, "the token shown once works"

    token_id = bearer.split("_")[1]
    driver.get(base + "/admin/tokens")
    row = driver.find_element(By.ID, f"token-{token_id}")
    row.find_element(By.NAME, "reason").send_keys("job retired")
    row.find_element(By.CSS_SELECTOR, "button").click()
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".notice"), "the revocation's notice")
    assert "token.revoked" in driver.find_element(By.CSS_SELECTOR, ".notice").text
    assert "revoked" in driver.find_element(By.ID, f"token-{token_id}").text
    checked_page(driver)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401
    log = (project.parent / "server.log").read_text(errors="replace")
    assert bearer.split("_", 2)[2] not in log and code.split("_", 2)[2] not in log, "the secrets are in no log"
