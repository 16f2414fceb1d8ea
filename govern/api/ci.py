"""`govern ci verify`: re-execute a commit's pipeline and judge it against its committed dvc.lock.

The commit is checked out into a temporary clone sharing the repository's
objects (the caller's checkout is never touched; a bare repository works
too), DVC data is pulled when a remote is configured, and every stage is
re-executed with `--force`, so DVC's run-cache cannot answer for it.

The verdict has three outcomes (`govern.equivalence`): `exact` when every
output's md5 equals the committed lock; `equivalent` when each output that
differs in bytes is judged equivalent by its declared rule (a model by its
predictions on the pipeline's evaluation split, a metrics file by its values
within tolerance), with the evidence; `diverged` otherwise. The machine facts
that explain float drift are compared with the training that made the lock.
The verdict is appended as `reproduction.verified` (exact, equivalent) or
`reproduction.diverged`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from govern import config as config_module
from govern import environment, equivalence, machine
from govern.adapters import blas
from govern.adapters import dvc as dvc_adapter
from govern.adapters import git as git_adapter
from govern.api import ci_judge
from govern.api.context import Project, guard_secrets
from govern.api.results import Verdict
from govern.envelope import PendingEvent, RecordedEvent
from govern.equivalence import DIVERGED, EQUIVALENT, EXACT
from govern.errors import (
    GovernError,
    InvalidInput,
    NotFound,
    ProjectError,
    UnverifiableVerdict,
)
from govern.events import ReproductionDiverged, ReproductionVerified
from govern.readmodel import trainings as training_reads
from govern.readmodel.trainings import TrainingOfLock

if TYPE_CHECKING:
    from govern.storage import LedgerStore


def ci_context(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Where this verification runs, from the CI system's standard variables."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_ACTIONS") == "true":
        url = None
        if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
            url = f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        return {"system": "github", "run_id": env.get("GITHUB_RUN_ID"), "ref": env.get("GITHUB_REF"), "url": url}
    if env.get("GITLAB_CI") == "true":
        return {
            "system": "gitlab",
            "run_id": env.get("CI_PIPELINE_ID"),
            "ref": env.get("CI_COMMIT_REF_NAME"),
            "url": env.get("CI_PIPELINE_URL"),
        }
    if env.get("GOVERN_CI_SYSTEM"):
        return {
            "system": env["GOVERN_CI_SYSTEM"],
            "run_id": env.get("GOVERN_CI_RUN_ID"),
            "ref": env.get("GOVERN_CI_REF"),
        }
    return {"system": "local", "run_id": None, "ref": None}


def parse_tolerances(items: tuple[str, ...] | list[str]) -> dict[str, float]:
    """`METRIC=ABS` pairs, as `--tolerance` takes them."""
    limits: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or not name or not 0 <= number < math.inf:
            raise InvalidInput(f"--tolerance {item!r} is not METRIC=ABS with a non-negative finite number")
        limits[name] = number
    return limits


def verify(
    project: Project,
    rev: str = "HEAD",
    *,
    tolerances: Mapping[str, float] | None = None,
    strict: bool = False,
    pushed: bool = False,
    on_progress: Any = None,
    upload: Callable[[str, dict[str, Any]], Verdict] | None = None,
) -> Verdict:
    """Re-execute `rev` in a temporary clone and record the verdict (see the module docstring).

    The comparison rules are the verified commit's own configuration, versioned with its code;
    `tolerances` (from the command line) are added to its metric tolerances. `upload` records the verdict
    elsewhere (a `govern serve`, for `ci verify --server`) instead of in the project's ledger. `pushed`: the
    project is a bare repository a push arrived in (the server hook, `api.hooks`), with the team's ledger.

    The project is opened for reading (`open_project(writing=False)`): a verification never starts a ledger, so
    the anchors are checked here, and only where a ledger exists (`_where_to_record`)."""
    source = project.root
    commit = git_adapter.resolve(source, rev)
    blas.prefetch()  # the machine facts are read at the end; loading the numeric libraries overlaps the run
    clock = time.perf_counter()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="govern-verify-") as scratch:
        checkout = Path(scratch) / "checkout"
        git_adapter.checkout_copy(source, checkout, commit)
        if not (checkout / ".dvc").is_dir():
            raise ProjectError(
                f"Commit {commit[:12]} is not a DVC project (it has no .dvc directory): verify a commit made "
                "after `govern init`"
            )
        cfg = config_module.load(checkout)
        if not pushed and project.config.comparison != cfg.comparison:
            notes.append(
                f"The comparison rules of commit {commit[:12]} apply ({cfg.source}); the uncommitted changes to "
                "[tool.govern.ci] in your checkout do not, until you commit them"
            )
        ledger = project.ledger
        guard_secrets(checkout if pushed else source, cfg)
        not_recorded = _where_to_record(source, ledger) if upload is None else None
        rules = cfg.comparison
        rules = dataclasses.replace(rules, tolerances={**rules.tolerances, **(tolerances or {})})
        if (source / ".dvc").is_dir():  # the project's cache itself (`.dvc/cache`), not its files/md5 folder
            # and the project's remote where the commit, older than it, names none
            inherited = None if dvc_adapter.default_remote(checkout) else dvc_adapter.default_remote(source)
            dvc_adapter.use_cache_dir(checkout, dvc_adapter.cache_root(source), inherited=inherited)
        work = ci_judge.Verification(
            checkout, source, Path(scratch), rules, ledger, cfg.tracking_uri, not pushed, dict(tolerances or {})
        )
        result = ci_judge.judge(work, commit, on_progress, notes)
    duration = round(time.perf_counter() - clock, 6)
    here = environment.describe()
    training = _training(ledger, result["dvc_lock_sha256"], commit)
    facts: dict[str, Any] = {
        **{key: result[key] for key in RESULT_FACTS},
        "commit": commit,
        "tolerances": dict(rules.tolerances),
        "duration_s": duration,
        "ci": ci_context(),
        "environment": here,
        "environment_differences": machine.differences(_machine(training), here),
        "training_event_id": training.event_id if training else None,
        "strict": strict,
    }
    if result["match"] == DIVERGED:
        fact: Any = ReproductionDiverged(**facts, failed_stage=result["failed_stage"], error=result["error"])
    else:
        fact = ReproductionVerified(**facts)
    if upload is not None:
        return dataclasses.replace(upload(fact.type, fact.to_payload()), notes=tuple(notes))
    pending = PendingEvent(fact, actor=project.actor, occurred_at=project.clock(), git_commit=commit)
    if not_recorded is not None:
        return Verdict(_unrecorded(pending), None, tuple(notes), not_recorded)
    event = ledger.append([pending])[0]
    if not pushed:
        notes.extend(_find_locks(project))
    return Verdict(event, training.seq if training else None, tuple(notes))


def _find_locks(project: Project) -> list[str]:
    """A verification looks for lock commits too (`api.locks`): the commit it verified is often one."""
    from govern.api import locks

    try:
        found = locks.find(project, "ci verify")
    except GovernError as error:
        return [f"could not look for lock commits: {error}"]
    return [
        f"{v['model']} version {v['version']} is locked at commit {e.payload['commit'][:12]}"
        for e in found
        for v in e.payload["versions"]
    ]


def _where_to_record(source: Path, ledger: LedgerStore) -> str | None:
    """Why the verdict will be recorded nowhere (None: in `ledger`), decided before anything runs. `ci verify`
    never starts a ledger: on a runner with no ledger (a fresh clone, anchors or not) a chain of its own would be
    one nobody reads, and beside anchors a second, unanchored history. A ledger that exists must be the anchored
    one (`refuse_writes_off_the_anchors`), or nothing is run at all."""
    from govern.api.anchors import refuse_writes_off_the_anchors

    if not ledger.exists():
        return (
            f"there is no ledger at {ledger.location}, and `ci verify` starts none: record verdicts with --server "
            "(the team's govern serve, a verifier's GOVERN_TOKEN) or point GOVERN_LEDGER at the team's ledger"
        )
    refuse_writes_off_the_anchors(source, ledger)
    return None


def _unrecorded(pending: PendingEvent) -> RecordedEvent:
    """The verdict as the event it would have been: printed, never appended (seq 0, no hash)."""
    from govern.envelope import canonical_json

    return RecordedEvent(
        seq=0,
        event_id=pending.event_id,
        type=pending.fact.type,
        schema_version=pending.fact.schema_version,
        occurred_at=pending.occurred_at,
        recorded_at=pending.occurred_at,
        actor=str(getattr(pending.actor, "name", pending.actor)),
        subject=pending.fact.subject,
        git_commit=pending.git_commit,
        payload_json=canonical_json(pending.fact.to_payload()),
        prev_hash="",
        hash="",
    )


VERDICT_TYPES: dict[str, type[ReproductionVerified] | type[ReproductionDiverged]] = {
    ReproductionVerified.type: ReproductionVerified,
    ReproductionDiverged.type: ReproductionDiverged,
}


def record_uploaded(project: Project, kind: str, payload: Mapping[str, Any]) -> Verdict:
    """A verdict a CI runner computed and sent to the server (`ci verify --server`), recorded under the
    runner's authenticated principal (the project's actor). The link to the training and the machine differences
    are the server's own reading of its ledger, not the runner's (a runner has no ledger)."""
    cls = VERDICT_TYPES.get(kind)
    if cls is None:
        raise InvalidInput(f"type {kind!r} is not a verdict: use {' or '.join(VERDICT_TYPES)}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise InvalidInput(f"Unknown field(s) of {kind}: {', '.join(unknown)}")
    required = [
        name
        for name, field in fields.items()
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in [*required, "dvc_lock_sha256"] if payload.get(name) is None]
    if missing:
        raise InvalidInput(f"The {kind} payload lacks {', '.join(missing)}: send what `govern ci verify` computed")
    wrong = [name for name, kinds in VERDICT_SHAPES.items() if name in payload and not _shaped(payload[name], kinds)]
    if wrong:
        raise InvalidInput(f"Field(s) of {kind} with the wrong type: {', '.join(wrong)}")
    fact = cls(**payload)
    if not isinstance(fact.commit, str) or not COMMIT.match(fact.commit):
        raise InvalidInput(f"commit {fact.commit!r} is not a full 40-character commit id")
    if not SHA256.match(str(fact.dvc_lock_sha256)):
        raise InvalidInput("dvc_lock_sha256 is not a sha256 (64 hexadecimal characters)")
    if cls is ReproductionVerified and not fact.outputs:
        raise InvalidInput("A verified reproduction lists the outputs it checked: outputs is empty")
    expected = {DIVERGED} if cls is ReproductionDiverged else {EXACT, EQUIVALENT}
    if fact.match not in expected:
        raise InvalidInput(f"A {kind} has match {' or '.join(sorted(expected))}, not {fact.match!r}")
    _check_against_commit(project.root, fact)
    training = _training(project.ledger, fact.dvc_lock_sha256 or "", fact.commit)
    environment_now = fact.environment if isinstance(fact.environment, dict) else None
    fact = dataclasses.replace(
        fact,
        training_event_id=training.event_id if training else None,
        environment_differences=machine.differences(_machine(training), environment_now or {}),
    )
    event = project.ledger.append(
        [PendingEvent(fact, actor=project.actor, occurred_at=project.clock(), git_commit=fact.commit)]
    )[0]
    return Verdict(event, training.seq if training else None)


def _check_against_commit(root: Path, fact: ReproductionVerified | ReproductionDiverged) -> None:
    """The server's own reading of what a verdict is about: the commit, fetched as a training job fetches it; its
    dvc.lock, read as `govern ci verify` reads it (the same bytes hashed); the outputs the verdict states, against
    that lock. A runner's word is recorded only about a commit the server can see and a lock it has.
    `UnverifiableVerdict` (422) names what does not match; nothing is recorded."""
    from govern.api.jobs import fetch_commit

    try:
        sha = fetch_commit(root, fact.commit)
    except (NotFound, InvalidInput) as error:
        raise UnverifiableVerdict(f"The verdict cannot be checked: {error}") from None
    with tempfile.TemporaryDirectory(prefix="govern-verdict-") as scratch:
        checkout = Path(scratch) / "checkout"
        git_adapter.checkout_copy(root, checkout, sha)
        if not (checkout / ".dvc").is_dir():
            raise UnverifiableVerdict(f"Commit {sha[:12]} is not a DVC project (no .dvc directory): it has no dvc.lock")
        try:
            pipeline = dvc_adapter.load_pipeline(checkout)
            locks, lock_text = dvc_adapter.read_locks(checkout, pipeline)
        except ProjectError as error:
            raise UnverifiableVerdict(f"The pipeline of commit {sha[:12]} cannot be read: {error}") from None
    if not locks:
        raise UnverifiableVerdict(f"Commit {sha[:12]} has no dvc.lock: there is nothing a verdict could be about")
    actual = hashlib.sha256(lock_text.encode("utf-8")).hexdigest()
    if fact.dvc_lock_sha256 != actual:
        raise UnverifiableVerdict(
            f"dvc_lock_sha256 {fact.dvc_lock_sha256} is not the sha256 of the dvc.lock at commit {sha[:12]} "
            f"({actual}): upload the verdict `govern ci verify` computed for that commit"
        )
    problems = _output_mismatches(fact, ci_judge.outs(locks))
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise UnverifiableVerdict(f"The verdict's outputs do not match the dvc.lock at commit {sha[:12]}: {shown}")


def _output_mismatches(
    fact: ReproductionVerified | ReproductionDiverged, committed: dict[str, str | None]
) -> list[str]:
    """What the verdict states about the outputs that the committed lock contradicts (as `_judge` builds them:
    `outputs` lists every path of both locks with the reproduced md5, `differing_outputs` those whose md5 is not
    the committed one, with the committed one as `expected_md5`)."""
    stated = {str(item.get("path")): item.get("md5") for item in fact.outputs}
    differing = {str(item.get("path")): item for item in fact.differing_outputs}
    problems = []
    if stated:
        problems += [
            f"{path} (an output in the lock) is not among its outputs" for path in sorted(set(committed) - set(stated))
        ]
    for path, md5 in sorted(stated.items()):
        if path not in differing and md5 != committed.get(path):
            where = f"the lock has {committed[path]}" if path in committed else "the lock has no such output"
            problems.append(f"{path} has md5 {md5}, {where}, and is not listed as differing")
    for path, item in sorted(differing.items()):
        if item.get("expected_md5") != committed.get(path):
            problems.append(
                f"differing output {path} expects md5 {item.get('expected_md5')}, the lock has {committed.get(path)}"
            )
        if stated and path not in stated:
            problems.append(f"differing output {path} is not among its outputs")
    if fact.match == EXACT and differing:
        problems.append("an exact match lists differing outputs")
    if fact.match == EQUIVALENT and not all(item.get("equivalent") is True for item in differing.values()):
        problems.append("an equivalent match lists an output judged not equivalent")
    return problems


COMMIT = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The JSON shape of each field of an uploaded verdict (None allowed where listed): checked before it is recorded,
# since a recorded fact is never corrected and every report of the version reads it.
VERDICT_SHAPES: dict[str, tuple[type, ...]] = {
    "commit": (str,),
    "match": (str,),
    "outputs": (list,),
    "differing_outputs": (list,),
    "metrics": (dict,),
    "metric_deltas": (dict,),
    "duration_s": (int, float),
    "ci": (dict,),
    "environment": (dict, type(None)),
    "environment_differences": (dict, type(None)),
    "training_event_id": (str, type(None)),
    "strict": (bool,),
    "dvc_lock_sha256": (str,),
    "stale_inputs": (list,),
    "tolerances": (dict,),
    "failed_stage": (str, type(None)),
    "error": (str, type(None)),
}


def _shaped(value: Any, kinds: tuple[type, ...]) -> bool:
    """The value has one of the JSON shapes; lists hold objects; numbers are finite and not booleans."""
    if isinstance(value, bool) and bool not in kinds:
        return False
    if not isinstance(value, kinds):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if isinstance(value, list):
        return all(isinstance(item, dict) for item in value)
    return True


RESULT_FACTS = (
    "match",
    "dvc_lock_sha256",
    "outputs",
    "differing_outputs",
    "stale_inputs",
    "metrics",
    "metric_deltas",
)


def _training(ledger: LedgerStore, lock_sha256: str, commit: str) -> TrainingOfLock | None:
    """The training that wrote this lock (else the newest at this commit): whose machine made the bytes."""
    if not ledger.exists():
        return None
    return training_reads.training_of_lock_or_commit(ledger, lock_sha256, commit)


def _machine(training: TrainingOfLock | None) -> dict[str, Any] | None:
    """The environment the training recorded, if any."""
    return json.loads(training.environment) if training is not None and training.environment else None


ENVIRONMENT_ROWS = 20


def headline(verdict: Verdict) -> str:
    """The outcome in one line: what CI shows first and the hook logs."""
    commit, facts = verdict.commit[:12], verdict.facts
    if verdict.match == EXACT:
        return f"exact: {commit} reproduced bit for bit"
    if verdict.match == EQUIVALENT:
        count = len(verdict.differing)
        line = f"equivalent: {commit} reproduced; {count} output(s) differ in bytes, each equivalent by its rule"
        return line + (" (refused: --strict requires exact)" if verdict.strict else "")
    if facts.get("failed_stage"):
        return f"diverged: {commit}: stage {facts['failed_stage']} failed"
    reasons = []
    if facts.get("stale_inputs"):
        reasons.append(f"its dvc.lock is stale ({equivalence.stale_text(facts['stale_inputs'])})")
    reasons += [
        f"{d['path']} ({d['rule']})"
        for d in verdict.differing
        if not d["equivalent"] and d["rule"] != equivalence.METRIC_VALUES
    ]
    beyond = [name for name, d in facts["metric_deltas"].items() if not d["within"]]
    if beyond:
        reasons.append(f"{len(beyond)} metric(s) beyond tolerance")
    return f"diverged: {commit}: {'; '.join(reasons)}"


def summary(verdict: Verdict) -> str:
    """The Markdown summary CI systems show (GitHub's step summary, a merge-request note)."""
    facts = verdict.facts
    mark = "✅" if verdict.passed else "❌"
    recorded = (
        f"recorded as `{verdict.event.type}` with match `{verdict.match}` (ledger seq {verdict.event.seq}). "
        if verdict.recorded
        else f"**not recorded**: {verdict.not_recorded}. "
    )
    lines = [
        f"## govern: {mark} {headline(verdict)}",
        "",
        f"Commit `{verdict.commit}` was re-executed from scratch (`dvc repro --force`) in {facts['duration_s']:.1f} s; "
        + recorded
        + "The comparison rules are the commit's own configuration.",
        "",
    ]
    if facts.get("failed_stage"):
        lines += [f"Stage `{facts['failed_stage']}` failed: {facts.get('error')}", ""]
    if facts.get("stale_inputs"):
        lines += [
            "The committed `dvc.lock` is stale: it records these inputs otherwise than the commit holds them, so it "
            "describes another pipeline. Run `govern repro --commit` and push the lock it commits.",
            "",
            "| Stage | Input | Kind | In dvc.lock | In the commit |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['stage']} | `{s['name']}` | {s['kind']} | {_fact(s['committed'])} | {_fact(s['actual'])} |"
            for s in facts["stale_inputs"]
        ]
        lines.append("")
    if verdict.differing:
        lines += [
            "| Output | Rule | Judgement | Committed md5 | Reproduced md5 | Evidence |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| `{d['path']}` | {d['rule']} | {'equivalent' if d['equivalent'] else 'diverged'} | "
            f"{d['expected_md5']} | {d['actual_md5']} | {_evidence_text(d['evidence'])} |"
            for d in verdict.differing
        ]
        lines.append("")
    if facts["metric_deltas"]:
        lines += ["| Metric | Committed | Reproduced | Delta | Tolerance | Within |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {name} | {d['expected']} | {d['actual']} | "
            f"{'-' if d['delta'] is None else format(d['delta'], '+.6g')} | {d['tolerance']:g} | "
            f"{'yes' if d['within'] else '**no**'} |"
            for name, d in facts["metric_deltas"].items()
        ]
        lines.append("")
    if verdict.match == EXACT:
        lines += [f"All {len(facts['outputs'])} outputs match the committed `dvc.lock` byte for byte.", ""]
    for note in verdict.notes:
        lines += [f"Note: {note}.", ""]
    return "\n".join(lines + _environment_lines(verdict))


def _evidence_text(evidence: Mapping[str, Any]) -> str:
    text = str(evidence.get("summary", ""))
    if evidence.get("committed_model_from"):
        text += f" (committed model from {evidence['committed_model_from']})"
    if evidence.get("note"):
        text += f"; {evidence['note']}"
    return text.replace("|", "\\|")


def _fact(value: Any) -> str:
    return "not set" if value is None else str(value).replace("|", "\\|")


def _environment_lines(verdict: Verdict) -> list[str]:
    """What differs between the machine that trained and the one that verified: why bytes may differ."""
    found = verdict.facts["environment_differences"]
    if not found.get("compared"):
        return ["No training of this lock is recorded in the ledger, so the two machines were not compared.", ""]
    title = f"Machine facts of the training (seq {verdict.training_seq}) and of this verification"
    rows = found.get("differences", [])
    if not rows:
        return [f"{title}: nothing recorded differs.", ""]
    lines = [f"{title}, where they differ:", "", "| Fact | At training | At verification |", "|---|---|---|"]
    lines += [f"| {r['fact']} | {_fact(r['training'])} | {_fact(r['verification'])} |" for r in rows[:ENVIRONMENT_ROWS]]
    if len(rows) > ENVIRONMENT_ROWS:
        lines.append(f"| … and {len(rows) - ENVIRONMENT_ROWS} more | | |")
    if found.get("not_recorded_at_training"):
        lines += ["", f"Not recorded at training: {', '.join(found['not_recorded_at_training'])}."]
    return [*lines, ""]


CI_TARGETS = {"github": ".github/workflows/govern.yml", "gitlab": ".gitlab-ci.yml"}


def ci_init(project: Project, system: str, install: str | None = None, force: bool = False) -> Path:
    """Write the CI template for `system` into the project."""
    if system not in CI_TARGETS:
        raise InvalidInput(f"Unknown CI system {system!r}: choose {' or '.join(CI_TARGETS)}")
    root = project.root
    target = root / CI_TARGETS[system]
    if target.exists() and not force:
        raise GovernError(f"{target.relative_to(root)} exists: pass --force to overwrite it")
    text = resources.files("govern").joinpath("templates", "ci", f"{system}.yml").read_text(encoding="utf-8")
    text = text.replace("{{ install }}", install or install_command(root))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


NOT_RUNTIME_EXTRAS = {"test", "tests", "dev", "docs", "doc", "lint", "typing"}


def install_command(root: Path) -> str:
    """How CI installs this project from its own checkout: never a bare name from the package index, where
    another project may hold it. The project's requirements file, else its own package with the extras its
    pipeline needs, pinned by constraints.txt when there is one."""
    constraints = "-c constraints.txt " if (root / "constraints.txt").exists() else ""
    for requirements in ("requirements.txt", "requirements/ci.txt", "requirements/base.txt"):
        if (root / requirements).is_file():
            return f"pip install {constraints}-r {requirements}"
    project = config_module.project_table(root)
    if project is None:
        raise InvalidInput(
            "This project declares no way to install it (no requirements.txt, no [project] in pyproject.toml): "
            "pass --install 'COMMAND' with what installs govern and the pipeline's dependencies"
        )
    extras = [name for name in project.get("optional-dependencies", {}) if name not in NOT_RUNTIME_EXTRAS]
    target = f"'.[{','.join(extras)}]'" if extras else "."
    return f"pip install {constraints}-e {target}"
