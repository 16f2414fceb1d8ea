"""Lineage reports: every section from recorded facts, in HTML, Markdown and JSON; the HTML in a real browser."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import ACTOR, apply_isolation, git, ok, run_cli
from support.projects import in_memory, project_at

from govern.envelope import PendingEvent, format_timestamp, utc_now
from govern.events import Fact, ReproductionVerified
from govern.storage.duckdb_log import Ledger

M = "breast-cancer-classifier"


# Runs of letters in table cells (hashes and paths, in .mono cells, may wrap anywhere) that the browser laid out
# on more than one line: "sou|rce" in a narrow column.
BROKEN_WORDS = """
const broken = [];
for (const cell of document.querySelectorAll('td:not(.mono), th')) {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const match of node.textContent.matchAll(/[A-Za-z]{2,}/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const lines = new Set([...range.getClientRects()].map((rect) => Math.round(rect.top)));
      if (lines.size > 1) broken.push(match[0]);
    }
  }
}
return broken;
"""


def times_of(history: Path) -> dict[str, str]:
    """When the history's deployments happened, as the report prints them."""
    return json.loads((history / ".times.json").read_text())


@dataclass(frozen=True)
class LegacyReproductionVerified(Fact):
    """`reproduction.verified` as govern wrote it before the three outcomes (schema 1)."""

    type: ClassVar[str] = "reproduction.verified"
    schema_version: ClassVar[int] = 1

    commit: str
    outputs: list[dict[str, Any]]
    metrics: dict[str, Any]
    duration_s: float
    ci: dict[str, Any]

    @property
    def subject(self) -> str:
        return f"commit:{self.commit}"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, three_versions_original: Path) -> Path:
    """Version 2 trained, promoted twice, deployed to two apps, one retired, reproduced once, used once."""
    project = tmp_path_factory.mktemp("report") / "demo"
    shutil.copytree(three_versions_original, project, symlinks=True)
    with pytest.MonkeyPatch.context() as patch:
        apply_isolation(patch, project.parent / "home")
        steps = [
            ("promote", M, "2", "--to", "staging", "--reason", "recall improved"),
            (
                "promote",
                M,
                "2",
                "--to",
                "production",
                "--reason",
                "committee approval",
                "--approver",
                "Bob <bob@example.com>",
            ),
        ]
        for step in steps:
            ok(project, *step)
        ledger = Ledger(project / "audit" / "ledger.duckdb")
        # Deployments are dated after the promotion (a version serves only once it holds the stage).
        [promoted] = ledger.read(limit=1)
        base = promoted.occurred_at.replace(tzinfo=UTC)
        times = {name: base + timedelta(milliseconds=k) for k, name in enumerate(("scoring", "triage", "retired"), 1)}
        (project / ".times.json").write_text(json.dumps({k: format_timestamp(v) for k, v in times.items()}))
        ok(project, "deploy", M, "2", "--app", "scoring", "--at", format_timestamp(times["scoring"]))
        ok(project, "deploy", M, "2", "--app", "triage", "--at", format_timestamp(times["triage"]))
        ok(project, "retire", "--app", "triage", "--at", format_timestamp(times["retired"]))
        training = next(e for e in ledger.read(types=["model.registered"]) if e.payload["version"] == "2")
        # What `govern ci verify` appended before the three outcomes (schema 1), then a verdict of today's.
        legacy = LegacyReproductionVerified(
            commit=training.git_commit,
            outputs=[{"path": "models/model.pkl", "md5": training.payload["md5"]}],
            metrics={},
            duration_s=12.5,
            ci={"system": "github", "run_id": "41"},
        )
        trained = next(
            e for e in ledger.read(types=["training.completed"]) if e.event_id == training.payload["training_event_id"]
        )
        equivalent = ReproductionVerified(
            commit=training.git_commit,
            dvc_lock_sha256=trained.payload["dvc_lock_sha256"],
            match="equivalent",
            outputs=[{"path": "models/model.pkl", "md5": "f" * 32}],
            differing_outputs=[
                {
                    "path": "models/model.pkl",
                    "expected_md5": training.payload["md5"],
                    "actual_md5": "f" * 32,
                    "rule": "predictions",
                    "equivalent": True,
                    "evidence": {"summary": "identical predictions on all 228 rows", "rows": 228},
                }
            ],
            metrics={},
            metric_deltas={},
            duration_s=14.0,
            ci={"system": "github", "run_id": "42"},
            environment_differences={
                "compared": True,
                "differences": [{"fact": "cpu.model", "training": "Laptop CPU", "verification": "Runner CPU"}],
                "not_recorded_at_training": [],
            },
        )
        another_lock = dataclasses.replace(equivalent, dvc_lock_sha256="0" * 64, match="exact", differing_outputs=[])
        ledger.append(
            [
                PendingEvent(fact, actor="ci:github:release-bot", occurred_at=utc_now(), git_commit=training.git_commit)
                for fact in (legacy, equivalent, another_lock)
            ]
        )
        source = project / "data" / "raw" / "breast_cancer.csv"
        ok(
            project,
            "predict",
            "--app",
            "scoring",
            "--input",
            str(source),
            "--output",
            str(project.parent / "p.csv"),
            "--record",
        )
    return project


@pytest.fixture(scope="module")
def report(history: Path) -> dict:
    return json.loads(ok(history, "audit", "report", M, "2", "--format", "json"))


def test_identity_names_purpose_owner_and_neighbours(report: dict) -> None:
    identity = report["identity"]
    assert identity["purpose"].startswith("Demo: flag breast-tumour measurements")
    assert identity["owner"] == "govern maintainers"
    assert (identity["previous_version"], identity["next_version"]) == ("1", "3")
    assert identity["stages_held"] == ["production", "staging"]


def test_code_section_has_commit_author_signature_and_blob_ids(report: dict, history: Path) -> None:
    code = report["code"]
    training = Ledger(history / "audit" / "ledger.duckdb").read(types=["training.completed"])[1]
    [locked] = [
        e for e in Ledger(history / "audit" / "ledger.duckdb").read(types=["training.locked"])
        if e.payload["training_event_id"] == training.event_id
    ]  # fmt: skip
    assert code["locked"] and code["commit"] == locked.payload["commit"], "the commit whose dvc.lock rebuilds it"
    assert code["trained_at"] == training.git_commit
    assert code["author"] == ACTOR and code["signature"] == "not signed" and code["message"] == "C=0.25"
    files = {(f["stage"], f["path"]): f for f in code["files"]}
    model_py = files[("train", "pipelines/model.py")]
    assert model_py["blob"] == git(history, "rev-parse", f"{training.git_commit}:pipelines/model.py")
    assert code["python"] and code["packages"]["dvc"]
    environment = training.payload["environment"]
    assert code["cpu"].startswith(f"{environment['cpu']['model']} ({environment['cpu']['architecture']}; ")
    assert all(
        f"{lib['architecture'] or 'default'} kernel, {lib['num_threads']} threads ({lib['filename']})"
        in code["numeric_libraries"]
        for lib in environment["numeric_libraries"]
    ), "the kernel each BLAS picked is what explains float drift"


def test_data_section_has_extraction_date_and_split(report: dict, history: Path) -> None:
    [snapshot] = Ledger(history / "audit" / "ledger.duckdb").read(types=["dataset.snapshotted"])
    raw = next(d for d in report["data"]["datasets"] if d["role"] == "source")
    assert raw["path"] == "data/raw/breast_cancer.csv"
    assert raw["extracted_at"] == snapshot.payload["extracted_at"] and raw["extracted_at_basis"] == "stage-run"
    assert raw["source"].startswith("sklearn.datasets.load_breast_cancer")
    assert (raw["rows"], len(raw["columns"]), raw["md5"]) == (569, 31, snapshot.payload["md5"])
    assert {s["split"]: s["rows"] for s in report["data"]["split"]} == {"train": 341, "validation": 114, "test": 114}


def test_pipeline_training_and_validation_sections(report: dict, history: Path) -> None:
    assert [s["name"] for s in report["pipeline"]["stages"]] == ["extract", "prepare", "train", "evaluate"]
    assert ["extract", "prepare"] in report["pipeline"]["edges"] and ["train", "evaluate"] in report["pipeline"][
        "edges"
    ]
    training = report["training"]
    assert training["params"]["train.C"] == 0.25 and training["seeds"]["train.seed"] == 42
    registered = next(
        e
        for e in Ledger(history / "audit" / "ledger.duckdb").read(types=["model.registered"])
        if e.payload["version"] == "2"
    )
    assert training["mlflow_run_id"] == registered.payload["mlflow_run_id"]
    validation = report["validation"]
    assert validation["groups"]["test"]["accuracy"] == validation["metrics"]["test.accuracy"]
    assert [v["version"] for v in validation["across_versions"]] == ["1", "2", "3"]


def test_approvals_windows_reproductions_inference_and_integrity(report: dict, history: Path) -> None:
    promotions = report["approvals"]["promotions"]
    assert [(p["to_stage"], p["approver"], p["reason"]) for p in promotions] == [
        ("staging", f"{ACTOR} (self-asserted, git config)", "recall improved"),
        ("production", "Bob <bob@example.com>", "committee approval"),
    ]
    windows = {w["app"]: w for w in report["production"]["windows"]}
    times = times_of(history)
    assert windows["scoring"]["start"] == times["scoring"] and windows["scoring"]["end"] is None
    assert windows["triage"]["end"] == times["retired"] and windows["triage"]["end_reason"] == "retired"
    legacy, equivalent = report["reproductions"]["runs"]  # not the verdict on another lock of the same commit
    assert (
        legacy["verdict"] == "verified" and legacy["by"] == "ci:github:release-bot (self-asserted, source not recorded)"
    )
    assert legacy["match"] == "exact", "a verdict recorded before the three outcomes reads as exact (upcast)"
    assert legacy["differing_outputs"] == [] and legacy["machines_compared"] is False
    assert equivalent["match"] == "equivalent"
    [differing] = equivalent["differing_outputs"]
    assert (differing["path"], differing["rule"], differing["equivalent"]) == ("models/model.pkl", "predictions", True)
    assert differing["evidence"] == "identical predictions on all 228 rows"
    assert equivalent["machine_differences"][0]["fact"] == "cpu.model"
    assert report["inference"]["counts"][0]["app"] == "scoring" and report["inference"]["counts"][0]["rows"] == 569
    integrity = report["integrity"]
    assert integrity["verified"] is True
    assert integrity["head_hash"] == Ledger(history / "audit" / "ledger.duckdb").head()[1]


def test_markdown_and_html_carry_the_same_facts(report: dict, history: Path, tmp_path: Path) -> None:
    ok(history, "audit", "report", M, "2", "--format", "md", "-o", str(tmp_path / "r.md"))
    ok(history, "audit", "report", M, "2", "-o", str(tmp_path / "r.html"))
    markdown, html = (tmp_path / "r.md").read_text(), (tmp_path / "r.html").read_text()
    raw = next(d for d in report["data"]["datasets"] if d["role"] == "source")
    facts = [
        report["code"]["commit"],
        raw["extracted_at"],
        raw["sha256"],
        "committee approval",
        "Bob &lt;bob@example.com&gt;",
        times_of(history)["retired"],
        report["integrity"]["head_hash"],
        report["training"]["mlflow_run_id"],
        "govern maintainers",
        "models/model.pkl (predictions: equivalent; identical predictions on all 228 rows)",
        "cpu.model: Laptop CPU → Runner CPU",
    ]
    for fact in facts:
        assert fact in html, fact
        assert fact in markdown, fact  # Markdown escapes HTML as HTML does: `Bob &lt;bob@...&gt;` shows as in HTML
    for number, title in enumerate(
        [
            "Identity",
            "Code",
            "Data provenance",
            "Pipeline",
            "Training run",
            "Validation",
            "Approvals",
            "Production windows",
            "Reproductions",
            "Inference records",
            "Integrity",
        ],
        start=1,
    ):
        assert f"<h2>{number}. {title}</h2>" in html and f"## {number}. {title}" in markdown


def test_html_references_no_external_resource(history: Path, tmp_path: Path) -> None:
    ok(history, "audit", "report", M, "2", "-o", str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(?!#)""", html), "only in-page references"
    assert "<script" not in html
    assert html.count("<svg") == 3


def test_a_missing_fact_is_said_instead_of_failing(history: Path) -> None:
    result = run_cli("audit", "report", M, "3", "--format", "md", cwd=history)
    assert result.exit_code == 0, result.output
    assert "**Not recorded:** This version was never deployed" in result.stdout
    no_verdict = "No CI reproduction of a dvc.lock holding this version's model file is recorded"
    assert f"**Not recorded:** {no_verdict}" in result.stdout
    assert "**Not recorded:** This version was never promoted" in result.stdout


def test_lineage_tree_shows_the_story(history: Path) -> None:
    tree = ok(history, "audit", "lineage", M, "2")
    assert tree.startswith(f"{M} v2  registered")
    assert "extract  [unchanged]" in tree and "train  [ran]" in tree
    assert "code pipelines/model.py  blob " in tree
    assert "source: sklearn.datasets.load_breast_cancer" in tree and "extracted 20" in tree
    assert "no stage -> staging" in tree and "approved by Bob <bob@example.com>: committee approval" in tree
    times = times_of(history)
    assert f"triage/production  {times['triage']} -> {times['retired']}" in tree


def test_html_renders_in_headless_chromium(history: Path, tmp_path: Path) -> None:
    from PIL import Image, ImageStat
    from selenium.webdriver.common.by import By
    from support.web import chromium

    page = tmp_path / "report.html"
    ok(history, "audit", "report", M, "2", "-o", str(page))
    with chromium(tmp_path / "chromium-profile", width=1024, height=800) as driver:
        driver.get(page.as_uri())
        assert driver.title == f"Lineage report: {M} version 2"
        assert len(driver.find_elements(By.CSS_SELECTOR, "section > h2")) == 11
        assert len(driver.find_elements(By.CSS_SELECTOR, "#validation svg polyline")) >= 1, "metrics chart drawn"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#production svg rect")) >= 2, "timeline drawn"
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
        assert errors == [], "its own policy (a <meta>) refuses nothing the report itself holds"
        assert "unsafe-inline" not in driver.find_element(
            By.CSS_SELECTOR, 'meta[http-equiv="Content-Security-Policy"]'
        ).get_attribute("content")
        colour = "return getComputedStyle(document.querySelector('h2')).color"
        assert driver.execute_script(colour) == "rgb(31, 111, 178)", "its style sheet applies, allowed by hash"
        capped = "return getComputedStyle(document.querySelector('#chart-dag')).maxWidth"
        assert driver.execute_script(capped).endswith("px"), "each chart's width cap moved into the style sheet"
        for width in (1024, 700):  # a laptop, and a tablet held upright
            driver.set_window_size(width, 800)
            assert driver.execute_script(BROKEN_WORDS) == [], f"words broken across lines at {width} px"
        driver.set_window_size(1024, 800)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1024, height)
        screenshot = tmp_path / "report.png"
        assert driver.save_screenshot(str(screenshot))
        # What an injection would add (a style element, a style attribute, a script) does not apply under it.
        html = page.read_text()
        injected = tmp_path / "injected.html"
        attack = (
            '<body style="background: rgb(255, 0, 0)"><style>h2 { color: rgb(255, 0, 0) }</style>'
            "<script>document.title = 'ran'</script>"
        )
        injected.write_text(html.replace("<body>", attack, 1))
        driver.get(injected.as_uri())
        assert driver.execute_script(colour) == "rgb(31, 111, 178)" and driver.title != "ran"
        assert driver.execute_script("return getComputedStyle(document.body).backgroundColor") != "rgb(255, 0, 0)"
    image = Image.open(screenshot).convert("L")
    assert image.size[1] >= 2000, "a full page, not one screen"
    stats = ImageStat.Stat(image)
    assert stats.stddev[0] > 20, "the screenshot is not blank"
    assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50


@pytest.fixture
def copied_history(history: Path, tmp_path: Path) -> Path:
    project = tmp_path / "demo"
    shutil.copytree(history, project, symlinks=True)
    return project


def _tamper(project: Path, seq: int) -> None:
    import duckdb

    con = duckdb.connect(str(project / "audit" / "ledger.duckdb"))
    con.execute("UPDATE stored_events SET actor = 'Mallory' WHERE seq = ?", [seq])
    con.close()


def test_report_rehashes_the_events_it_cites_and_the_whole_chain_only_on_request(copied_history: Path) -> None:
    from govern.api.report import gather

    ledger = Ledger(copied_history / "audit" / "ledger.duckdb")
    clean = gather(project_at(copied_history, writing=False), M, "2")["integrity"]
    assert clean["verified"] is True and clean["scope"] == "cited"
    uncited = next(e.seq for e in ledger.read(types=["model.registered"]) if e.payload["version"] == "3")
    assert uncited not in clean["cited_seqs"]
    _tamper(copied_history, uncited)

    cited_only = gather(project_at(copied_history, writing=False), M, "2")["integrity"]
    assert cited_only["verified"] is True, "an uncited event is outside the report's own check"
    whole = gather(project_at(copied_history, writing=False), M, "2", verify_chain=True)["integrity"]
    assert whole["verified"] is False and whole["scope"] == "chain" and f"seq {uncited}" in whole["problem"]

    promotion = next(e.seq for e in ledger.read(types=["model.promoted"]) if e.payload["version"] == "2")
    _tamper(copied_history, promotion)
    tampered = gather(project_at(copied_history, writing=False), M, "2")["integrity"]
    assert tampered["verified"] is False and tampered["problem"] == (
        f"seq {promotion}: stored hash does not match its content (event altered)"
    )


def test_a_report_citing_a_tampered_event_is_written_and_exits_non_zero(copied_history: Path, tmp_path: Path) -> None:
    ledger = Ledger(copied_history / "audit" / "ledger.duckdb")
    promotion = next(e.seq for e in ledger.read(types=["model.promoted"]) if e.payload["version"] == "2")
    _tamper(copied_history, promotion)

    result = run_cli("audit", "report", M, "2", "--format", "md", "-o", str(tmp_path / "r.md"), cwd=copied_history)

    assert result.exit_code == 1
    assert f"FAILED: the report cites events that do not verify: The ledger does not verify: seq {promotion}" in (
        result.output
    )
    assert f"seq {promotion}: stored hash does not match its content" in (tmp_path / "r.md").read_text()


def test_report_summarises_every_window_and_lists_the_latest(copied_history: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from govern import storage
    from govern.api.report import gather
    from govern.events import DeploymentEnded, DeploymentStarted
    from govern.readmodel.reports import TIMELINE_SLOTS, WINDOWS_SHOWN

    project = in_memory(copied_history, ACTOR)  # the history's events in memory: the rule needs no file
    storage.copy(Ledger(copied_history / "audit" / "ledger.duckdb"), project.ledger)
    ledger = project.ledger
    start, extra = datetime(2025, 1, 1, tzinfo=UTC), []
    for i in range(WINDOWS_SHOWN + 20):
        app, at = f"batch-{i % 30}", start + timedelta(hours=i)
        extra.append(PendingEvent(DeploymentStarted(app, "production", M, "2"), actor=ACTOR, occurred_at=at))
        ended = DeploymentEnded(app, "production", M, "2", "retired", extra[-1].event_id)
        extra.append(PendingEvent(ended, actor=ACTOR, occurred_at=at + timedelta(minutes=30)))
    ledger.append(extra)

    production = gather(project, M, "2")["production"]
    assert production["windows_total"] == WINDOWS_SHOWN + 20 + 2
    assert len(production["windows"]) == WINDOWS_SHOWN
    summary = {(s["app"], s["env"]): s for s in production["slots_summary"]}
    assert summary[("batch-0", "production")]["windows"] == 4
    assert summary[("batch-0", "production")]["closed_s"] == 4 * 1800
    assert summary[("scoring", "production")]["serving"] is True
    assert sum(s["windows"] for s in summary.values()) == production["windows_total"]
    assert len(production["slots"]) == TIMELINE_SLOTS and production["slots_total"] == 32
    latest = max(w["start"] for w in production["windows"])
    assert latest == (start + timedelta(hours=WINDOWS_SHOWN + 19)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_version_without_recorded_stages_gets_a_valid_pipeline_picture() -> None:
    """Found by the auditor's browser test: an empty DAG drew a negative viewBox, which Chromium logs as an error."""
    import re

    from govern import charts

    picture = charts.dag([], [])
    width, height = map(float, re.search(r'viewBox="0 0 (\S+) (\S+)"', picture).groups())
    assert width > 0 and height > 0 and "No pipeline stages recorded" in picture


ATTACKS = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "[click](javascript:alert(3))",
    "![pixel](data:text/html;base64,PHNjcmlwdD4=)",
    "<javascript:alert(4)>",
    "[ref]: vbscript:msgbox(5)",
    "`code` | cell | &lt;b&gt;",
)
SAFE_TAGS = {"h1", "h2", "p", "table", "thead", "tbody", "tr", "th", "td", "code", "strong", "em", "blockquote", "br"}


def test_the_markdown_report_shows_html_and_links_of_the_record_as_text(tmp_path: Path) -> None:
    """A commit message, a parameter, a metric name, a stage and a reason carrying HTML and links: the Markdown
    report shows each as text, even through a renderer that passes raw HTML (markdown-it with html=True)."""
    from html.parser import HTMLParser

    from markdown_it import MarkdownIt

    from govern.api.report import gather
    from govern.events import ModelRegistered, TrainingCompleted
    from govern.report import render

    attack = " ".join(ATTACKS)
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    (project / "train.py").write_text("print('train')\n")
    (project / "govern.toml").write_text('[mlflow]\ntracking_uri = "sqlite:////nonexistent/mlflow.db"\n')  # no mirror
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", f"Faster training\n\n{attack}")
    commit = git(project, "rev-parse", "HEAD")
    training = TrainingCompleted(
        git={"commit": commit, "branch": "main", "dirty_paths": []},
        dvc_lock_sha256="a" * 64,
        targets=[],
        stages=[
            {"name": "train", "cmd": f"python train.py --note '{ATTACKS[0]}'", "deps": [], "outs": [], "params": {}}
        ],  # fmt: skip
        params={"train": {"note": attack}, "<b>bold</b>": ATTACKS[2]},
        metrics={f"validation.{ATTACKS[1]}": 0.9},
        outputs=[],
        datasets=[],
        models=[],
        environment={},
        duration_s=1.0,
        run_cache_hit=False,
    )
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    [trained] = ledger.append([PendingEvent(training, actor=ATTACKS[1], occurred_at=utc_now(), git_commit=commit)])
    registered = ModelRegistered("churn", "1", "model.pkl", None, "1" * 64, trained.event_id, "run", "sqlite:///x",
                                 "models:/churn/1")  # fmt: skip
    ledger.append([PendingEvent(registered, actor="tess", occurred_at=utc_now(), git_commit=commit)])
    ok(project, "promote", "churn", "1", "--to", "staging", "--reason", attack)

    markdown = render(gather(project_at(project, writing=False), "churn", "1"), "md")

    assert "Faster training &lt;script&gt;alert(1)&lt;/script&gt; &lt;img" in markdown, "HTML escaped as HTML"
    assert "\\[click\\](javascript:alert(3))" in markdown, "no link can start: its brackets are escaped"
    shown = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: set[str] = set()
            self.attributes: list[tuple[str, str | None]] = []
            self.text: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.add(tag)
            self.attributes += attrs

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    parsed = Tags()
    parsed.feed(shown)
    assert parsed.tags <= SAFE_TAGS, parsed.tags - SAFE_TAGS  # no script, img, a (no link at all), iframe
    assert parsed.attributes == [] or all(not name.startswith("on") for name, _ in parsed.attributes)
    text = "".join(parsed.text)
    for words in (*ATTACKS, "<b>bold</b>", "Faster training"):
        assert words in text, f"shown as written: {words}"
    assert markdown.count("\n| ") > 20, "tables stay tables: no value ended a row or a cell"
