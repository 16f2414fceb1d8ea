"""The web pages' common ground, in a real Chromium against a real `govern serve`: signing in and out, sessions
that expire and end with their token, CSRF on every form, pages refused to roles the table does not name."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from support.web import (
    SESSION_SECRET,
    checked_page,
    chromium,
    csrf_of,
    fetch,
    served_site,
    session_cookie,
    sign_in,
    sign_out,
    wait_until,
)

from govern.web.sessions import SessionKeys

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_site(tmp_path_factory, ("aud", "con", "spare", "adm")) as served:
        yield served


def test_signing_in_with_a_token_opens_the_roles_start_page_and_signing_out_ends_it(
    site: dict[str, Any], tmp_path: Path
) -> None:
    with chromium(tmp_path / "profile") as driver:
        driver.get(site["base"] + "/")
        assert driver.current_url.endswith("/sign-in"), "signed out, every page leads to the sign-in"
        checked_page(driver)
        sign_in(driver, site["base"], site["tokens"]["aud"])
        assert "aud" in driver.find_element("css selector", "header .who").text
        cookie = driver.get_cookie("govern_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert "gvn_" not in cookie["value"], "the cookie never carries the token's secret"
        checked_page(driver, site["base"] + "/account")
        sign_out(driver)
        driver.get(site["base"] + "/account")
        assert "/sign-in" in driver.current_url


def test_a_wrong_token_is_refused_on_the_sign_in_page_in_a_browsers_words(site: dict[str, Any], tmp_path: Path) -> None:
    with chromium(tmp_path / "profile") as driver:
        driver.get(site["base"] + "/sign-in")
        driver.find_element("id", "token").send_keys("gvn_000000000000_" + "x" * 43)
        driver.find_element("css selector", "form button[type=submit]").click()
        wait_until(driver, lambda d: d.find_elements("css selector", "[role=alert]"), "the sign-in's refusal")
        alert = driver.find_element("css selector", "[role=alert]").text
        assert alert.startswith("That token is not valid: paste all of it") and "govern tokens" not in alert
        assert driver.get_cookie("govern_session") is None
        checked_page(driver, status=401)


def test_a_form_posted_without_its_csrf_token_is_refused(site: dict[str, Any], tmp_path: Path) -> None:
    with chromium(tmp_path / "profile") as driver:
        sign_in(driver, site["base"], site["tokens"]["aud"])
        cookie = session_cookie(driver)
    status, body = fetch(site["base"], "/sign-out", cookie, data={"csrf": "0" * 64})
    assert status == 403 and "security token" in body
    status, body = fetch(site["base"], "/sign-out", cookie, data={})
    assert status == 403
    status, page = fetch(site["base"], "/account", cookie)
    assert status == 200, "the refused forms changed nothing: the session still holds"
    status, _ = fetch(site["base"], "/sign-out", cookie, data={"csrf": csrf_of(page)})
    assert status == 303


def test_the_sign_in_form_itself_needs_its_csrf_token(site: dict[str, Any]) -> None:
    status, body = fetch(site["base"], "/sign-in", None, data={"token": site["tokens"]["aud"], "csrf": "1" * 64})
    assert status == 403 and "security token" in body


def test_an_expired_session_goes_back_to_sign_in(site: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from itsdangerous import TimestampSigner

    token_id = site["tokens"]["aud"].split("_")[1]
    fresh = SessionKeys(SESSION_SECRET).session_cookie(token_id)
    assert fetch(site["base"], "/account", f"govern_session={fresh}")[0] == 200, "the server's own key signs"
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 9 * 3600)
    stale = SessionKeys(SESSION_SECRET).session_cookie(token_id)  # signed nine hours ago: past a working day
    status, _ = fetch(site["base"], "/account", f"govern_session={stale}")
    assert status == 303
    monkeypatch.undo()
    forged = SessionKeys("k" * 43).session_cookie(token_id)
    assert fetch(site["base"], "/account", f"govern_session={forged}")[0] == 303


def test_revoking_the_token_ends_its_sessions_at_the_next_page(site: dict[str, Any], tmp_path: Path) -> None:
    with chromium(tmp_path / "profile") as driver:
        sign_in(driver, site["base"], site["tokens"]["spare"])
        cookie = session_cookie(driver)
    assert fetch(site["base"], "/account", cookie)[0] == 200
    token_id = site["tokens"]["spare"].split("_")[1]
    assert run_cli("tokens", "revoke", token_id, cwd=site["project"]).exit_code == 0
    # the next page, or, where the ledger is busy (the revoking command's background mirror), within
    # `token_staleness` (5 s): the door never answers from an older snapshot
    deadline = time.monotonic() + 5
    while (status := fetch(site["base"], "/account", cookie)[0]) == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 303


def test_an_unknown_page_is_a_page_not_json(site: dict[str, Any], tmp_path: Path) -> None:
    with chromium(tmp_path / "profile") as driver:
        sign_in(driver, site["base"], site["tokens"]["aud"])
        driver.get(site["base"] + "/no-such-page")
        assert "There is no page /no-such-page" in driver.find_element("css selector", "[role=alert]").text
        checked_page(driver, status=404)


def test_sign_in_never_redirects_off_the_site(site: dict[str, Any]) -> None:
    status, page = fetch(site["base"], "/sign-in?next=//evil.example/x", None)
    assert status == 200 and 'name="next" value="/"' in page
