"""Every answer the server sends carries the pages' security headers: every page of every role, every error page,
the reports in every format, the API's problems, a refusal before any route. Set in one place
(`httpkit.SecurityHeaders`); the lineage report brings its own policy, its inline style allowed by hash.

In-process (FastAPI's test client against the real app and a real ledger): the fast tier, but for every page of
every role (every page rendered again for each role, seconds: the full suite; one middleware sets the headers, and
the fast tier checks them on a page, a redirect, the error pages, static files and the API). The report under its
policy in a real browser is tests/test_report.py::test_html_renders_in_headless_chromium.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient
from support.copies import Prepared
from support.server import ROLE_OF, tokens_for
from support.web import concrete, page_routes, signed_in

from govern.httpkit import DOCUMENT_CSP, PAGE_CSP
from govern.report import content_security_policy
from govern.server.app import create_app
from govern.server.http import MAX_BODY

pytestmark = pytest.mark.slow  # every page, answer and report format, served in-process


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, served_project_original: Prepared) -> dict[str, Any]:
    from conftest import apply_isolation

    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, tmp_path_factory.mktemp("home"))
        project = served_project_original.copy_to(tmp_path_factory.mktemp("headers") / "project")
        tokens = tokens_for(project, *ROLE_OF)
    return {"project": project, "app": create_app(project, session_secret="h" * 43), "tokens": tokens}


def secured(answer: Any, what: str) -> str:
    """Check the headers every answer must carry, once each; return its Content-Security-Policy."""
    for name, value in (
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
    ):
        assert answer.headers.get_list(name) == [value], (what, name, answer.headers.get_list(name))
    [policy] = answer.headers.get_list("content-security-policy")
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, (what, policy)
    assert "frame-ancestors 'none'" in policy and policy.startswith("default-src 'none'"), (what, policy)
    return policy


@pytest.mark.slow  # every page rendered for every role again (4 s); tests/test_web_roles.py renders them fast
def test_every_page_of_every_role_and_every_page_refused_carries_the_pages_headers(setup: dict[str, Any]) -> None:
    seen = 0
    for name in sorted(ROLE_OF):
        client, _ = signed_in(setup["app"], setup["tokens"][name])
        for method, path, _ in page_routes(setup["app"]):
            if method != "GET" or path == "/static/{name}":
                continue
            url = concrete(path)
            answer = client.get(url)
            policy = secured(answer, f"{name} GET {url} ({answer.status_code})")
            if answer.headers.get("content-type", "").startswith("text/html"):
                seen += 1
                report = re.fullmatch(r"/audit/reports/[^/]+/[^/]+(/download)?", url) and answer.status_code == 200
                assert policy == (content_security_policy(answer.text) if report else PAGE_CSP), (name, url)
    assert seen > 40, "pages, and the 403 pages of those a role may not open, were answered as HTML"


def test_the_sign_in_page_redirects_error_pages_and_static_files_carry_them(setup: dict[str, Any]) -> None:
    client = TestClient(setup["app"], follow_redirects=False)
    assert secured(client.get("/sign-in"), "sign-in") == PAGE_CSP
    redirected = client.get("/audit/events")
    assert redirected.status_code == 303 and secured(redirected, "redirect to sign in") == DOCUMENT_CSP
    signed, _ = signed_in(setup["app"], setup["tokens"]["aud"])
    missing = signed.get("/no/such/page")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
    assert secured(missing, "404 page") == PAGE_CSP
    malformed = signed.get("/audit/events?n=x")
    assert malformed.status_code == 400 and secured(malformed, "400 page") == PAGE_CSP
    style = client.get("/static/govern.css")
    assert style.status_code == 200 and secured(style, "stylesheet")
    too_large = signed.post("/sign-in", content=b"x" * (MAX_BODY + 1), headers={"content-type": "text/plain"})
    assert too_large.status_code == 413 and secured(too_large, "a page's body refused before any route")


def test_the_api_answers_and_its_reports_in_every_format_carry_them(setup: dict[str, Any]) -> None:
    client = TestClient(setup["app"], follow_redirects=False)
    auditor = {"Authorization": f"Bearer {setup['tokens']['aud']}"}
    report = "/api/v1/models/churn/versions/1/report"

    html = client.get(f"{report}?format=html", headers=auditor)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    policy = secured(html, "HTML report")
    assert policy == content_security_policy(html.text) and re.search(r"style-src 'sha256-[A-Za-z0-9+/]+=*'", policy)
    meta = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html.text)
    assert meta and meta.group(1) == content_security_policy(html.text, header=False), "the file carries it too"
    assert "<script" not in html.text and ' style="' not in html.text, "no script, no inline style attribute"
    for kind in ("md", "json"):
        answer = client.get(f"{report}?format={kind}", headers=auditor)
        assert answer.status_code == 200 and secured(answer, f"{kind} report") == DOCUMENT_CSP
    for what, answer in (
        ("JSON", client.get("/api/v1/whoami", headers=auditor)),
        ("401 problem", client.get("/api/v1/whoami")),
        ("404 problem", client.get("/api/v1/nothing", headers=auditor)),
        ("422 problem", client.get(f"{report}?format=pdf", headers=auditor)),
        ("OpenAPI", client.get("/api/v1/openapi.json")),
        ("health", client.get("/health")),
        ("413 problem", client.post("/api/v1/sql", content=b"x" * (MAX_BODY + 1), headers=auditor)),
    ):
        assert secured(answer, f"{what} ({answer.status_code})") == DOCUMENT_CSP
