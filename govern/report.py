"""Render a gathered lineage report as HTML, Markdown or JSON. Never opens the ledger itself.

HTML is one self-contained file: inline CSS, inline SVG charts, no script, no
external URL, A4 pages with a page break before each section.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import cache
from typing import TYPE_CHECKING, Any

from govern import charts

if TYPE_CHECKING:
    from jinja2 import Environment

FORMATS = ("html", "md", "json")


# The policy the HTML report declares for itself (a <meta> in its head, and the header `govern serve` sends with it):
# nothing but its own inline style, allowed by hash (a style injected into it would not apply), and no script at all.
REPORT_CSP = (
    "default-src 'none'; style-src {styles}; img-src data:; form-action 'none'; base-uri 'none'; object-src 'none'"
)
_CSP_MARK = "govern-report-content-security-policy"


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n"
    template = _templates(markdown=fmt == "md").get_template(f"report.{fmt}.j2")
    if fmt == "md":
        return template.render(r=report)
    pictures = {
        "dag": charts.dag(report["pipeline"]["stages"], report["pipeline"]["edges"]),
        "metrics": charts.metric_history(
            report["validation"]["across_versions"],
            report["validation"]["chart_metrics"],
            report["report"]["version"],
        ),
        "timeline": charts.timeline(report["production"]["slots"], report["production"]["now"]),
    }
    widths = {}
    for name, svg in pictures.items():  # each chart's width cap moves to the style sheet: no inline style attribute
        found = re.search(r' style="([^"]*)"', svg)
        widths[name] = found.group(1) if found else ""
        pictures[name] = re.sub(r"^<svg ", f'<svg id="chart-{name}" ', charts.for_page(svg), count=1)
    html = template.render(r=report, charts=pictures, chart_styles=widths, csp=_CSP_MARK)
    return html.replace(_CSP_MARK, content_security_policy(html, header=False), 1)


def content_security_policy(html: str, *, header: bool = True) -> str:
    """The report's policy: its `<style>` elements allowed by their SHA-256, nothing else. As a header it also
    forbids framing (`frame-ancestors`, which a `<meta>` policy cannot carry)."""
    styles = [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode("ascii") + "'"
        for body in re.findall(r"<style>(.*?)</style>", html, flags=re.DOTALL)
    ]
    policy = REPORT_CSP.format(styles=" ".join(styles) or "'none'")
    return f"{policy}; frame-ancestors 'none'" if header else policy


@cache
def _templates(markdown: bool = False) -> Environment:
    """One environment per process and kind: it keeps the compiled templates (compiling the HTML report's costs
    0.2 s, four times its rendering; the server renders reports as pages). HTML escapes every value by autoescape;
    Markdown by `_finalize`."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(
        loader=PackageLoader("govern", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_finalize if markdown else None,
    )
    environment.filters["value"] = _value
    environment.filters["cell"] = _cell
    environment.filters["code"] = _code
    environment.filters["markdown"] = Markdown  # what the template itself wrote (a macro's lines): not escaped again
    return environment


def _value(value: Any) -> str:
    """A fact as printed: missing values say so."""
    if value is None or value == "" or value == [] or value == {}:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class Markdown(str):
    """Text that is Markdown already (a code span `_code` built): written into the Markdown report as it is."""


def _finalize(value: Any) -> Any:
    """Every value interpolated into the Markdown report is text, never markup (the HTML report escapes by
    autoescape, and Markup passes through): its HTML is escaped, so no tag, comment or `<javascript:...>` autolink
    survives a renderer; `[` and `]` are escaped, so it forms no link or image; backticks, backslashes and pipes
    are escaped, so it cannot end a code span or a table cell; line breaks become spaces, so it starts no block.
    A commit message, a parameter, a reason, a name: all the same."""
    if isinstance(value, Markdown):
        return value
    return _markdown_text(str(value))


_MARKDOWN_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\\": "\\\\", "`": "\\`", "[": "\\[", "]": "\\]", "|": "\\|"}
)


def _markdown_text(text: str) -> str:
    return _one_line(text.translate(_MARKDOWN_ESCAPES))


def _one_line(text: str) -> str:
    """Lines joined by one space, blank ones dropped: a value starts no Markdown block and ends no table row."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _cell(value: Any) -> str:
    """A Markdown table cell (escaped as every interpolated value is, see `_finalize`)."""
    return _value(value)


def _code(value: Any) -> Markdown:
    """A value as a Markdown code span, whatever it holds: fenced by more backticks than it has in a row, padded
    where it starts or ends with one; its pipes escaped for the table it stands in (GFM reads `\\|` inside a code
    span as a pipe), its line breaks made spaces. Inside a code span nothing is markup, so nothing else needs
    escaping."""
    text = _one_line(_value(value)).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") or not text.strip() else text
    return Markdown(f"{fence}{padded}{fence}")


def render_tree(report: dict[str, Any]) -> str:
    """The lineage as a terminal tree: version, training, commit, stages, datasets, approvals, windows."""
    r = report
    identity, training, code = r["identity"], r["training"], r["code"]
    root = (
        f"{identity['model']} v{identity['version']}  "
        f"registered {identity['registered_at']} (seq {identity['registration_seq']})"
    )
    commit_line = f"trained at git commit {code.get('trained_at') or code['commit']}"
    if code["message"]:
        commit_line += f'  "{code["message"].splitlines()[0]}" by {code["author"]}, {code["signature"]}'
    locked = code.get("locked", True)
    lock_line = f"lock commit {code['commit']} (its dvc.lock rebuilds the model)" if locked else "not locked"
    stages = []
    files_by_stage: dict[str, list[str]] = {}
    for f in code["files"]:
        files_by_stage.setdefault(f["stage"], []).append(
            f"code {f['path']}" + (f"  blob {f['blob'][:12]}" if f.get("blob") else "")
        )
    for stage in r["pipeline"]["stages"]:
        children = files_by_stage.get(stage["name"], []) + [f"out {o}" for o in stage["outs"]]
        stages.append((f"{stage['name']}  [{stage['status']}]", [(c, []) for c in children]))
    datasets = []
    for d in r["data"]["datasets"]:
        line = f"{d['path']}  ({d['role']})  md5 {_value(d.get('md5'))}, {_value(d.get('rows'))} rows"
        if d["role"] == "source":
            line += f", source: {_value(d.get('source'))}, extracted {_value(d.get('extracted_at'))}"
        datasets.append((line, []))
    # by the actor as recorded and as the report shows it (with the strength of its identity)
    grants = {key: g for g in r["approvals"].get("grants", []) for key in (g["who"], g.get("shown"))}
    promotions = [
        (
            f"{p['promoted_at']}  {p['from_stage'] or 'no stage'} -> {p['to_stage']}  "
            + (f"asked by {p['requested_by']}: {p['reason']}; " if p.get("requested_by") else "")
            + f"by {p['actor']}, approved by {p['approver']}: "
            + (p.get("approval_reason") or "" if p.get("requested_by") else p["reason"]),
            [(_grant_line(grants[who]), []) for who in dict.fromkeys([p["actor"], p["approver"]]) if who in grants],
        )
        for p in r["approvals"]["promotions"]
    ] or [("never promoted", [])]
    windows = [
        (f"{w['app']}/{w['env']}  {w['start']} -> {w['end'] or 'still serving'}", [])
        for w in r["production"]["windows"]
    ] or [("never deployed", [])]
    tree = [
        (
            f"training seq {training['event_seq']}  {training['completed_at']}  by {training['actor']}  "
            f"MLflow run {_value(training['mlflow_run_id'])}",
            [(lock_line, []), (commit_line, [("stages", stages), ("datasets", datasets)])],
        ),
        ("promotions", promotions),
        ("production windows", windows),
    ]
    lines = [root]
    _branches(tree, "", lines)
    return "\n".join(lines) + "\n"


def _grant_line(g: dict[str, Any]) -> str:
    """The grant a person who promoted or approved acted under: granted, confirmed and proposed by whom."""
    grant = g.get("grant")
    if not grant:
        return f"{g['shown']}: no {g['role']} grant"
    proposed = f", proposed by {grant['proposed_by']}" if grant.get("proposed_by") else ""
    return (
        f"{g['role']} grant of {g['principal']}: {grant['granted_at']} by {grant['confirmed_by']}{proposed} "
        f"[{grant['basis']}]"
    )


def _branches(nodes: list[tuple[str, list]], prefix: str, lines: list[str]) -> None:
    for index, (label, children) in enumerate(nodes):
        last = index == len(nodes) - 1
        lines.append(f"{prefix}{'└── ' if last else '├── '}{label}")
        _branches(children, prefix + ("    " if last else "│   "), lines)
