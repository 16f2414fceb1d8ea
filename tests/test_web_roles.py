"""Role separation on the web pages, generated from the routes themselves: every page and every form names the
operation of `access.POLICY` it presents, and the server refuses every other role, whatever the page links to.

In-process (FastAPI's test client against the real app and a real ledger): the fast tier. The browser tests per
role (tests/test_web_*.py) do each role's work end to end.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from support.copies import Prepared
from support.projects import ledger_at
from support.server import ROLE_OF, tokens_for
from support.web import concrete, page_routes, signed_in

from govern import access
from govern.server.app import create_app

SECRET = "r" * 43
# Page routes that need no operation: the way in, and what every page loads.
OPEN = {"/", "/sign-in", "/static/{name}"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, served_project_original: Prepared) -> dict[str, Any]:
    from conftest import apply_isolation

    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, tmp_path_factory.mktemp("home"))
        project = served_project_original.copy_to(tmp_path_factory.mktemp("roles") / "project")
        tokens = tokens_for(project, *ROLE_OF)
    app = create_app(project, session_secret=SECRET)
    return {"project": project, "app": app, "tokens": tokens}


def head(project: Path) -> Any:
    return ledger_at(project).head()


def test_every_page_and_form_names_an_operation_of_the_role_table(setup: dict[str, Any]) -> None:
    routes = page_routes(setup["app"])
    assert len(routes) > 5, "the pages are mounted"
    unnamed = [(method, path) for method, path, operation in routes if operation is None and path not in OPEN]
    assert unnamed == [], "a page without an operation would be open to every signed-in principal"
    for _, _, operation in routes:
        assert operation is None or operation in access.POLICY or operation in access.ANY_PRINCIPAL


@pytest.mark.parametrize("name", sorted(ROLE_OF))
def test_each_role_is_refused_every_page_and_form_the_table_does_not_give_it(setup: dict[str, Any], name: str) -> None:
    client, csrf = signed_in(setup["app"], setup["tokens"][name])
    role = ROLE_OF[name]
    principal = access.Principal(name, {role: ("scoring",) if role == "consumer" else ()})
    before = head(setup["project"])
    for method, path, operation in page_routes(setup["app"]):
        if operation is None:
            continue
        allowed = access.allowed(principal, operation, "scoring" if "{app}" in path else None)
        url = concrete(path)
        if method == "GET":
            answer = client.get(url)
            if allowed:
                assert answer.status_code not in (303, 401, 403), f"{role} may open {url}: {answer.status_code}"
            else:
                assert answer.status_code == 403, f"{role} must be refused {url}, got {answer.status_code}"
        elif not allowed:
            answer = client.post(url, data={"csrf": csrf, "reason": "tried", "commit": "HEAD"})
            assert answer.status_code == 403, f"{role} must be refused POST {url}, got {answer.status_code}"
    assert head(setup["project"]) == before, "no refused form wrote anything"


@pytest.mark.parametrize("name", sorted(ROLE_OF))
def test_the_navigation_links_only_the_pages_the_role_may_open(setup: dict[str, Any], name: str) -> None:
    client, _ = signed_in(setup["app"], setup["tokens"][name])
    page = client.get("/account").text
    nav = re.search(r'<nav aria-label="Pages">(.*?)</nav>', page, re.S)
    linked = set(re.findall(r'href="([^"]+)"', nav.group(1))) if nav else set()
    role = ROLE_OF[name]
    principal = access.Principal(name, {role: ("scoring",) if role == "consumer" else ()})
    operations = {path: op for method, path, op in page_routes(setup["app"]) if method == "GET" and op}
    for href in linked:
        assert href in operations, f"the navigation links {href}, which is no page"
        assert access.allowed(principal, operations[href]), f"{role} is shown a link to {href}"


def test_signed_out_every_page_leads_to_sign_in_and_every_form_is_refused(setup: dict[str, Any]) -> None:
    client = TestClient(setup["app"], follow_redirects=False)
    before = head(setup["project"])
    for method, path, operation in page_routes(setup["app"]):
        if operation is None:
            continue
        url = concrete(path)
        if method == "GET":
            answer = client.get(url)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/sign-in"), url
        else:
            answer = client.post(url, data={"csrf": "0" * 64, "reason": "tried"})
            assert answer.status_code in (303, 403), f"POST {url} signed out: {answer.status_code}"
    assert head(setup["project"]) == before
