"""The web pages' test kit: Debian's headless Chromium driven by Selenium, sign-in, axe-core, console errors.

No browser or driver is downloaded: Chromium and ChromeDriver come from Debian's packages (.ci/run installs
them), axe-core from the npm registry through tests/browser/package.json (.ci/run runs `npm ci` there).
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
AXE = REPO / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = "WEB_SCREENSHOTS"  # a folder: the role tests copy their screenshots there (the README's)


def require_browser() -> None:
    """Skip loudly where Chromium or axe-core is missing; fail where CI said they must be there."""
    missing = []
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        missing.append("Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    if not AXE.exists():
        missing.append("axe-core (npm ci --prefix tests/browser)")
    if not missing:
        return
    message = f"THE WEB PAGES WERE NOT CHECKED IN A BROWSER: missing {'; '.join(missing)}; .ci/run installs them"
    if os.environ.get("REQUIRE_CHROMIUM") == "1":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium(profile: Path, width: int = 1280, height: int = 900) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--lang=en-US",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(width, height)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver: Any, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/sign-in")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_until(driver, lambda d: "/sign-in" not in d.current_url, "the sign-in to lead away from /sign-in")


def sign_out(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "form[action='/sign-out'] button").click()
    wait_until(driver, lambda d: "/sign-in" in d.current_url, "the sign-out to lead to /sign-in")


def wait_until(driver: Any, condition: Any, what: str, timeout: float = 30) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message=f"waited {timeout} s for {what}")


def console_problems(driver: Any) -> list[dict[str, Any]]:
    """What the page logged at warning or error level (a CSP violation, a failed request, a script error)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def axe_violations(driver: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's WCAG 2.x A/AA findings on the current page at these impacts, as `rule: target` lines.

    axe is injected through the driver (the page's own CSP allows no script from elsewhere)."""
    driver.execute_script(AXE.read_text())
    driver.set_script_timeout(60)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
        ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact,"
        " targets: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))))"
        ".catch(e => done([{id: 'axe-error', impact: 'critical', targets: [String(e)]}]));"
    )
    return [f"{v['id']} ({v['impact']}): {', '.join(v['targets'])}" for v in result if v["impact"] in impacts]


def checked_page(driver: Any, url: str | None = None, status: int = 200) -> None:
    """Open `url` (or stay), then: no console problems, no serious accessibility violation, usable at a tablet's
    width (nothing wider than the window). A page answered with an error `status` on purpose (a refusal, a
    failed sign-in) logs that status for itself; only that line is expected."""
    if url is not None:
        driver.get(url)
    own = (
        f"{driver.current_url.split('?')[0]} - Failed to load resource: the server responded with a status of {status}"
    )
    problems = [p for p in console_problems(driver) if status == 200 or not p["message"].startswith(own)]
    assert problems == [], f"console problems on {driver.current_url}: {problems}"
    assert axe_violations(driver) == [], f"accessibility violations on {driver.current_url}"
    size = driver.get_window_size()
    driver.set_window_size(768, size["height"])
    try:
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        wide = driver.execute_script(
            "const w = document.documentElement.clientWidth;"
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 1)"
            ".filter(e => !e.closest('.table-wrap')).slice(0, 3).map(e => e.tagName + '.' + e.className + '#' + e.id);"
        )
        assert overflow <= 1, f"{driver.current_url} is {overflow} px wider than a 768 px tablet: {wide}"
    finally:
        driver.set_window_size(size["width"], size["height"])


def screenshot(driver: Any, path: Path, name: str) -> Path:
    """A full-page screenshot, checked not to be blank; copied to $WEB_SCREENSHOTS/<name>.png when set."""
    import base64

    from PIL import Image, ImageStat

    # Headless Chromium does not grow its window past the screen: DevTools captures beyond the viewport.
    width = driver.execute_script("return document.documentElement.clientWidth")
    height = min(driver.execute_script("return document.documentElement.scrollHeight"), 2400)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    image = Image.open(path).convert("L")
    assert image.size[1] >= min(height, 2400) - 1, "the whole page, not one screen"
    assert ImageStat.Stat(image).stddev[0] > 10, "the screenshot is not blank"
    folder = os.environ.get(SCREENSHOTS)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(folder) / f"{name}.png")
    return path


def fetch(base: str, path: str, cookie: str | None = None, data: dict[str, str] | None = None) -> tuple[int, str]:
    """A request with a session cookie (or none) outside the browser, not following redirects: for the checks
    that a page or form refuses what the browser would never send."""

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(base + path, data=body, method="POST" if body is not None else "GET")
    if cookie:
        request.add_header("Cookie", cookie)
    opener = urllib.request.build_opener(Stay)
    try:
        with opener.open(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def session_cookie(driver: Any) -> str:
    found = driver.get_cookie("govern_session")
    assert found is not None, "signed in, the browser holds a session cookie"
    return f"govern_session={found['value']}"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert match, "the page carries a CSRF token in its forms"
    return match.group(1)


SESSION_SECRET = "s" * 43  # the servers' session key in tests, so that a test can sign a session as they would


@contextmanager
def served_site(
    tmp_path_factory: pytest.TempPathFactory, names: tuple[str, ...], prepare: Any = None
) -> Iterator[dict[str, Any]]:
    """`govern serve` on a project made by support.server.make_project (after `prepare(project)`, if given), with a
    token for each principal named: {"base", "tokens", "project", "env"}. The server's log must hold no traceback."""
    from conftest import apply_isolation, start_server

    from support.server import make_project, tokens_for

    with pytest.MonkeyPatch.context() as patch:
        env = apply_isolation(patch, tmp_path_factory.mktemp("home"))
        project = make_project(tmp_path_factory.mktemp("web") / "project")
        if prepare is not None:
            prepare(project)
        tokens = tokens_for(project, *names)
        log = project.parent / "server.log"
        server_env = {**env, "GOVERN_REGISTRY_MIRROR": "background", "GOVERN_SESSION_SECRET": SESSION_SECRET}
        process, base = start_server(project, server_env, log)
        try:
            yield {"base": base, "tokens": tokens, "project": project, "env": env}
        finally:
            process.terminate()
            process.wait(timeout=30)
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text[-3000:]


def signed_in(app: Any, token: str) -> tuple[Any, str]:
    """In-process: a test client of `app` holding a session of `token` (signed in through the form, as a browser
    would), and the CSRF token of its forms."""
    from starlette.testclient import TestClient

    client = TestClient(app, follow_redirects=False)
    page = client.get("/sign-in")
    answer = client.post("/sign-in", data={"token": token, "csrf": csrf_of(page.text), "next": "/"})
    assert answer.status_code == 303, answer.text
    return client, csrf_of(client.get("/account").text)


# ---------------------------------------------------------------- the web app's page routes

FILL = {"app": "scoring", "model": "churn", "version": "1"}  # path parameters, as make_project's names


def page_routes(app: Any) -> list[tuple[str, str, str | None]]:
    """(method, path, operation) of every page route: the operation its `web.page`/`web.form` dependency checks."""
    found = []
    while not hasattr(app, "routes"):  # inside the ASGI wrappers (the body limit, no-store)
        app = app.app
    for route in _routes(app.routes):
        path = getattr(route, "path", "")
        if path.startswith(("/api/", "/health", "/ready")) or not hasattr(route, "dependant"):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            found.append((method, path, _operation(route.dependant)))
    return found


def _routes(routes: list[Any]) -> list[Any]:
    """Routes, with those of included routers (FastAPI keeps an included router as one route of its own)."""
    flat = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        flat.extend(_routes(inner.routes) if inner is not None else [route])
    return flat


def _operation(dependant: Any) -> str | None:
    for sub in dependant.dependencies:
        named = getattr(sub.call, "operation", None) or _operation(sub)
        if named:
            return named
    return None


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: FILL.get(m.group(1), "1"), path)
