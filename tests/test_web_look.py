"""What a new user's trial of the pages found, kept fixed: chart lines that looked alike, identifiers broken
mid-word, a table action off screen at a tablet's width, and a sign-in page that neither took the cursor nor said
why it was shown.

Fast tests read the charts and the served HTML and CSS in-process; one browser test measures the auditor's log and
the admin's tokens at 1280 px and 768 px in Chromium.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import apply_isolation, ok
from support.copies import Prepared
from support.history import prepare
from support.server import tokens_for
from support.web import checked_page, chromium, served_site, sign_in, sign_out, signed_in

from govern import charts

pytestmark = pytest.mark.slow  # the pages' look, rendered for every role

SECRET = "l" * 43
DEMO = [
    f"{group}.{name}"
    for group in ("test", "validation")
    for name in ("accuracy", "f1", "precision", "recall", "roc_auc")
]


# ---------------------------------------------------------------- small parsers


class Element:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Element | None) -> None:
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], ""

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find_all(self, tag: str) -> list[Element]:
        found = []
        for child in self.children:
            if child.tag == tag:
                found.append(child)
            found.extend(child.find_all(tag))
        return found

    def ancestors(self) -> list[Element]:
        up, node = [], self.parent
        while node is not None:
            up.append(node)
            node = node.parent
        return up

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)


class Tree(HTMLParser):
    """Just enough of an HTML tree: elements, their attributes and text (void elements close themselves)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, page: str) -> None:
        super().__init__()
        self.root = Element("#document", {}, None)
        self.open = self.root
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, self.open)
        self.open.children.append(element)
        if tag not in self.VOID:
            self.open = element

    def handle_endtag(self, tag: str) -> None:
        node = self.open
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.open = node.parent

    def handle_data(self, data: str) -> None:
        self.open.text += data


def css_rules(css: str) -> list[tuple[str, str, dict[str, str]]]:
    """(media condition or "", selector, {property: value}) of every rule, one selector at a time."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    found = []

    def read(text: str, media: str) -> None:
        position = 0
        while (opening := text.find("{", position)) != -1:
            head = text[position:opening].strip()
            depth, end = 1, opening + 1
            while depth:
                depth += {"{": 1, "}": -1}.get(text[end], 0)
                end += 1
            body = text[opening + 1 : end - 1]
            if head.startswith("@media"):
                read(body, head)
            else:
                declarations = dict(
                    (name.strip(), value.strip())
                    for name, _, value in (d.partition(":") for d in body.split(";"))
                    if name.strip()
                )
                found.extend((media, " ".join(s.split()), declarations) for s in head.split(","))
            position = end

    read(css, "")
    return found


def declared(rules: list[tuple[str, str, dict[str, str]]], selector: str, media: str = "") -> dict[str, str]:
    merged: dict[str, str] = {}
    for where, each, declarations in rules:
        if each == selector and where == media:
            merged.update(declarations)
    return merged


# ---------------------------------------------------------------- 1. the metric chart


def versions_of(metrics: list[str], count: int = 4) -> list[dict[str, Any]]:
    return [
        {"version": str(v), "metrics": {m: round(0.6 + 0.03 * v + 0.01 * i, 4) for i, m in enumerate(metrics)}}
        for v in range(1, count + 1)
    ]


def cue(tag: str) -> tuple[str, str]:
    """(colour, dash pattern) of a drawn line; "" for a solid one."""
    dash = re.search(r'stroke-dasharray="([^"]+)"', tag)
    return re.search(r'stroke="([^"]+)"', tag).group(1), dash.group(1) if dash else ""


def lines_of(svg: str) -> list[tuple[str, str]]:
    """(colour, dash pattern) of each metric's line."""
    return [cue(line) for line in re.findall(r"<polyline [^>]*/>", svg)]


def legend_of(svg: str) -> list[tuple[str, str]]:
    """(colour, dash pattern) of each legend entry's sample line (the grid's lines are thinner)."""
    return [cue(line) for line in re.findall(r'<line [^>]*stroke-width="2"[^>]*/>', svg)]


def test_twelve_metrics_draw_twelve_lines_no_two_alike_and_the_legend_shows_each_lines_cue() -> None:
    metrics = [f"{group}.m{i}" for group in ("test", "validation") for i in range(6)]
    svg = charts.metric_history(versions_of(metrics), metrics, "3")
    lines = lines_of(svg)
    assert len(lines) == 12
    assert len(set(lines)) == 12, f"two lines share a colour and a dash: {lines}"
    assert legend_of(svg) == lines, "the legend shows each line's colour and dash"


def test_the_demos_ten_metrics_have_ten_colours_and_each_group_its_own_dash_and_marker() -> None:
    svg = charts.metric_history(versions_of(DEMO), DEMO, "2")
    lines = lines_of(svg)
    assert len({colour for colour, _ in lines}) == 10, "no colour comes round again within twelve metrics"
    assert {dash for _, dash in lines[:5]} != {dash for _, dash in lines[5:]}
    assert len({dash for _, dash in lines[:5]}) == 1 and len({dash for _, dash in lines[5:]}) == 1
    styles = charts.metric_styles(DEMO)
    assert {shape for _, _, shape in styles[:5]} != {shape for _, _, shape in styles[5:]}, "a marker per group too"
    assert '<circle cx="' in svg and 'width="7" height="7"' in svg  # both groups' markers are drawn


def test_past_the_palette_no_two_lines_look_alike_and_the_legend_fits() -> None:
    metrics = [f"{group}.metric_{i}" for group in ("a", "b", "c") for i in range(10)]
    svg = charts.metric_history(versions_of(metrics), metrics, "1")
    assert len(set(lines_of(svg))) == 30
    height = float(re.search(r'viewBox="0 0 \d+ (\d+)"', svg).group(1))
    last = max(float(y) for y in re.findall(r'<text x="\d+" y="([\d.]+)">[abc]\.metric_', svg))
    assert last + 4 <= height, "the last legend entry is inside the picture"


def contrast(colour: str, background: str) -> float:
    def luminance(hex_colour: str) -> float:
        channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(colour), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_every_line_colour_stands_out_from_the_plot_and_the_highlighted_version() -> None:
    assert len(set(charts.PALETTE)) == len(charts.PALETTE) >= 12
    for colour in charts.PALETTE:
        for background in ("#fafbfc", "#fff3c4"):  # the plot, the band of the reported version
            assert contrast(colour, background) >= 3, f"{colour} on {background}: below WCAG's 3:1 for graphics"


def test_the_chart_is_the_same_bytes_for_the_same_input_self_contained_and_escaped() -> None:
    metrics = [*DEMO, 'evil.<script>"&']
    versions = versions_of(metrics)
    svg = charts.metric_history(versions, metrics, "2")
    assert svg == charts.metric_history(versions_of(metrics), list(metrics), "2")
    assert "<script>" not in svg and "evil.&lt;script&gt;&quot;&amp;" in svg
    assert not re.search(r"https?:|url\(|xlink:|<image|<use|<foreignObject", svg), "nothing outside the picture"
    assert len(re.findall(r" style=", svg)) == 1, "only the root's width cap, which the pages take away"
    assert " style=" not in charts.for_page(svg), "the pages' policy refuses inline style"


# ---------------------------------------------------------------- in-process pages


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, served_project_original: Prepared) -> dict[str, Any]:

    from govern.server.app import create_app

    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, tmp_path_factory.mktemp("home"))
        project = served_project_original.copy_to(tmp_path_factory.mktemp("look") / "project")
        prepare(project)  # deployments started and ended, roles granted and revoked
        tokens = tokens_for(project, "adm", "aud")
        ok(project, "tokens", "create", "sci", "--description", "the nightly retraining job on the build server")
    return {"app": create_app(project, session_secret=SECRET), "tokens": tokens}


def stylesheet(client: Any, name: str) -> list[tuple[str, str, dict[str, str]]]:
    answer = client.get(f"/static/{name}")
    assert answer.status_code == 200
    return css_rules(answer.text)


def test_identifiers_never_break_inside_while_hashes_still_wrap(site: dict[str, Any]) -> None:
    client, _ = signed_in(site["app"], site["tokens"]["aud"])
    rules = stylesheet(client, "govern.css") + stylesheet(client, "auditor.css") + stylesheet(client, "admin.css")
    for selector in (".nobreak", ".nobreak code"):
        assert declared(rules, selector).get("white-space") == "nowrap", selector
    assert declared(rules, "code")["overflow-wrap"] == "anywhere", "a long hash still wraps rather than widen a page"
    for media, selector, declarations in rules:
        breaks_anywhere = declarations.get("overflow-wrap") == "anywhere" or declarations.get("word-break") in (
            "break-all",
            "break-word",
        )
        assert not (breaks_anywhere and re.search(r"(^| )(td|th|tr|table[.\w]*)$", selector)), (
            f"{selector} ({media or 'every width'}) lets every word in its cells break anywhere"
        )

    page = client.get("/audit/events?n=500").text
    assert "deployment.ended" in page
    table = next(t for t in Tree(page).root.find_all("table") if "events" in t.classes)
    rows = table.find_all("tbody")[0].find_all("tr")
    assert len(rows) > 20
    # The log's seq and type cells stay plain (tests/test_web_auditor.py reads them so): its stylesheet keeps them
    # whole, every code that is a cell's whole content but the subject's.
    for selector in ("table.events tbody th", "table.events td:not(.subject) > code"):
        assert declared(rules, selector).get("white-space") == "nowrap", selector
    for row in rows:
        kind, subject = row.find_all("td")[1:3]
        assert [c.tag for c in kind.children] == ["code"] and "subject" not in kind.classes, row.all_text()
        assert re.fullmatch(r"[\w-]+\.[\w.-]+", kind.all_text().strip())
        assert "subject" in subject.classes, "a subject may wrap (a commit, a path)"


def test_token_ids_and_principals_never_break_inside(site: dict[str, Any]) -> None:
    client, _ = signed_in(site["app"], site["tokens"]["adm"])
    rows = Tree(client.get("/admin/tokens").text).root.find_all("tr")
    rows = [row for row in rows if row.attrs.get("id", "").startswith("token-")]
    assert len(rows) >= 3
    for row in rows:
        token, principal = row.find_all("th")[0], row.find_all("td")[0]
        assert "nobreak" in token.classes and re.fullmatch(r"[0-9a-f]{12}", token.all_text().strip())
        assert "nobreak" in principal.classes, principal.all_text()
    days = [s.all_text() for row in rows for s in row.find_all("span") if "nobreak" in s.classes]
    assert days and all(re.fullmatch(r"\d{4}-\d\d-\d\d", day) for day in days), "a day is not broken at a hyphen"


@pytest.mark.parametrize(
    ("role", "path", "label"), [("adm", "/admin/tokens", "Every token"), ("aud", "/audit/events", "Events")]
)
def test_a_wide_table_scrolls_in_a_labelled_region_a_keyboard_can_reach(
    site: dict[str, Any], role: str, path: str, label: str
) -> None:
    client, _ = signed_in(site["app"], site["tokens"][role])
    rules = stylesheet(client, "govern.css")
    assert declared(rules, ".table-wrap").get("overflow-x") == "auto"
    assert ".table-wrap:focus-visible" in {selector for _, selector, _ in rules}, "the focused region shows it"
    [table] = Tree(client.get(path).text).root.find_all("table")
    wrap = next(a for a in table.ancestors() if "table-wrap" in a.classes)
    assert wrap.attrs.get("tabindex") == "0" and wrap.attrs.get("role") == "region"
    assert wrap.attrs.get("aria-label") == label


def render_sign_in(**context: Any) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    from govern.web.pages import TEMPLATES

    # As the pages render (StrictUndefined): the page must render whether or not the route passes the notices.
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True), undefined=StrictUndefined
    )
    base = {"title": "Sign in", "principal": None, "links": [], "path": "/sign-in", "govern_version": "0", "csrf": ""}
    return env.get_template("sign_in.html.j2").render(
        **base, form_csrf="c" * 64, next="/", error=None, refused=None, **context
    )


def notices(page: str) -> list[str]:
    return [
        " ".join(p.all_text().split())
        for p in Tree(page).root.find_all("p")
        if "notice" in p.classes and p.attrs.get("role") == "status"
    ]


def test_the_sign_in_template_says_why_it_is_shown_and_renders_without_being_told() -> None:
    assert notices(render_sign_in()) == []
    assert notices(render_sign_in(signed_out=False, ended=False)) == []
    assert notices(render_sign_in(signed_out=True, ended=False)) == ["You are signed out."]
    assert notices(render_sign_in(signed_out=False, ended=True)) == ["Your session ended: sign in again."]


def test_the_sign_in_page_takes_the_cursor_and_says_when_the_user_signed_out(site: dict[str, Any]) -> None:
    client, csrf = signed_in(site["app"], site["tokens"]["aud"])
    page = Tree(client.get("/sign-in").text).root
    [field] = [i for i in page.find_all("input") if i.attrs.get("id") == "token"]
    assert "autofocus" in field.attrs
    assert notices(client.get("/sign-in").text) == []
    answer = client.post("/sign-out", data={"csrf": csrf})
    assert answer.status_code == 303
    assert notices(client.get(answer.headers["location"]).text) == ["You are signed out."]


# ---------------------------------------------------------------- in a browser


ONE_LINE = """
const broken = [...document.querySelectorAll(arguments[0])].filter(e => {
  const range = document.createRange();
  range.selectNodeContents(e);
  return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size !== 1;
});
return broken.slice(0, 5).map(e => e.textContent.trim());
"""
OUT_OF_VIEW = """
const width = document.documentElement.clientWidth;
return [...document.querySelectorAll(arguments[0])].filter(e => e.getBoundingClientRect().right > width
  || e.getBoundingClientRect().right > e.closest('.table-wrap').getBoundingClientRect().right + 1).length;
"""


@pytest.mark.slow
def test_identifiers_stay_whole_and_revoke_stays_in_view_at_1280_and_768_px(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    def prepared(project: Path) -> None:
        prepare(project)
        ok(project, "tokens", "create", "sci", "--description", "the nightly retraining job on the build server")

    with served_site(tmp_path_factory, ("adm", "aud"), prepared) as served:
        base = served["base"]
        with chromium(tmp_path / "adm") as driver:
            sign_in(driver, base, served["tokens"]["adm"])
            for width in (1280, 768):
                driver.set_window_size(width, 900)
                driver.get(base + "/admin/tokens")
                assert driver.execute_script(ONE_LINE, "tr[id^=token-] th code, tr[id^=token-] td.nobreak") == []
                assert driver.execute_script(OUT_OF_VIEW, "tr[id^=token-] button") == 0, (
                    f"Revoke out of view at {width}"
                )
            checked_page(driver)
            sign_out(driver)
            assert driver.switch_to.active_element.get_attribute("id") == "token", "the token field has the cursor"
            assert driver.find_element(By.CSS_SELECTOR, "p.notice[role=status]").text == "You are signed out."
        with chromium(tmp_path / "aud") as driver:
            sign_in(driver, base, served["tokens"]["aud"])
            for width in (1280, 768):
                driver.set_window_size(width, 900)
                driver.get(base + "/audit/events?n=500")
                whole = "table.events tbody td:nth-of-type(2) code, table.events tbody th"
                assert driver.execute_script(ONE_LINE, whole) == [], f"an event type broken at {width}"
                assert driver.execute_script(OUT_OF_VIEW, "table.events summary") == 0, f"a payload hidden at {width}"
            checked_page(driver)
