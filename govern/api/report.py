"""The lineage of one model version, gathered from the ledger and git into plain data.

This is the JSON report and what the HTML and Markdown templates render:
eleven sections, each holding only recorded facts, each with a `missing`
list that says plainly which facts are not recorded. Never imports mlflow
or dvc: a report needs the ledger and the git repository only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from govern import __version__, lineage, machine
from govern.adapters import git as git_adapter
from govern.api.anchors import anchors
from govern.api.integrity import check_anchors
from govern.api.results import Anchor
from govern.envelope import utc_now
from govern.readmodel import reports
from govern.readmodel.reader import Reader
from govern.readmodel.reports import TIMELINE_SLOTS, TimelineWindow, TrainingOfVersion, VersionMetrics, Window
from govern.readmodel.versions import VersionFacts, verdicts_of_version, version_facts
from govern.storage.chain import check_events, verify_chain_in
from govern.timeparse import display

if TYPE_CHECKING:
    from govern.api.context import Project


def gather(project: Project, model: str, version: str, verify_chain: bool = False) -> dict[str, Any]:
    """All recorded facts about one model version, as JSON-ready data.

    The events the report cites are re-hashed and linked to their predecessors; `verify_chain`
    re-verifies the whole ledger as well, which grows with the ledger (`govern audit verify`).
    """
    with project.ledger.reader() as reader:
        return _gather(reader, project, model, version, verify_chain)


def _gather(ledger: Reader, project: Project, model: str, version: str, verify_chain: bool) -> dict[str, Any]:
    facts = version_facts(ledger, model, version)  # NotFound names the known models and versions
    versions = reports.version_metrics(ledger, model)
    root = project.root
    settings = _settings(project, model)
    row = reports.training_of_version(ledger, model, version)
    training = json.loads(row.payload)
    registration = json.loads(row.registration)
    cited: list[int] = [row.seq, row.registered_seq]

    # What git says (the commit, the code files' blobs, the anchor tags) is asked in a thread of its own while the
    # ledger answers: a few git processes, a fifth of a report page's time if waited for one after the other.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="govern-report-git") as git_work:
        code = git_work.submit(_code, root, row, training, facts.lock_commit)
        found_anchors = git_work.submit(anchors, root) if root else None
        report: dict[str, Any] = {
            "report": {
                "model": model,
                "version": version,
                "generated_at": display(project.clock()),
                "govern": __version__,
            },
            "identity": _identity(facts, versions, row, registration, settings),
            "code": {},
            "data": _data(ledger, training, cited),
            "pipeline": _pipeline(training),
            "training": _training(row, training),
            "validation": _validation(versions, training),
            "approvals": _approvals(ledger, model, version, cited),
            "production": _production(ledger, model, version, cited),
            "reproductions": _reproductions(ledger, model, version, cited),
            "inference": _inference(ledger, model, version, cited),
        }
        report["code"] = code.result()
        tags = found_anchors.result() if found_anchors else []
    forged = _attributed(ledger, report, _pinned(project))
    report["integrity"] = _integrity(ledger, cited, tags, verify_chain, forged)
    return report


def _attributed(ledger: Reader, report: dict[str, Any], pinned: tuple[str, ...]) -> list[str]:
    """Every actor the report names, shown with the strength of its identity (`abe (authenticated, token ...)`,
    `Tess <t@x> (self-asserted, git config)`); each authenticated claim's signature is checked here, and a claim
    that does not hold is said beside the name and returned as an integrity problem."""
    from govern import attestations, attribution

    places: list[tuple[dict[str, Any], str, int | None]] = [
        (report["identity"], "registered_by", report["identity"].get("registration_seq")),
        (report["training"], "actor", report["training"].get("event_seq")),
    ]
    for promotion in report["approvals"].get("promotions", []):
        places.append((promotion, "actor", promotion["seq"]))
        if promotion.get("request_seq") is not None:
            places.append((promotion, "requested_by", promotion["request_seq"]))
        if promotion.get("approver") == promotion.get("actor"):
            places.append((promotion, "approver", promotion["seq"]))
    if report["approvals"].get("deprecation"):
        places.append((report["approvals"]["deprecation"], "actor", report["approvals"]["deprecation"]["seq"]))
    for window in report.get("production", {}).get("windows", []):
        places.append((window, "deployed_by", window["start_seq"]))
        places.append((window, "ended_by", window["end_seq"]))
    for run in report.get("reproductions", {}).get("runs", []):
        places.append((run, "by", run["seq"]))
    seqs = sorted({seq for _, _, seq in places if seq is not None})
    if not seqs:
        return []
    rows = {r.seq: r for r in reports.attributions(ledger, seqs)}
    verdicts = attestations.check_events(ledger, seqs, pinned)
    for section, key, seq in places:
        row = rows.get(seq) if seq is not None else None
        if row is None or section.get(key) is None or section.get(key) != row.actor:
            continue
        shown = attribution.shown(row.actor, row.authn)
        if verdicts.get(seq):
            shown += " (ATTESTATION INVALID: see integrity)"
        section[key] = shown
    return [f"seq {seq}: {problem}" for seq, problem in verdicts.items() if problem]


def _section(missing: list[str], **facts: Any) -> dict[str, Any]:
    return {**facts, "missing": missing}


def _identity(
    facts: VersionFacts,
    registered: list[VersionMetrics],
    row: TrainingOfVersion,
    registration: dict,
    settings: dict,
) -> dict[str, Any]:
    """`registered`: the model's versions in order (`reports.version_metrics`), for the versions before and after
    this one."""
    model, version = facts.model, facts.version
    versions = [v.version for v in registered]
    position = versions.index(version)
    missing = []
    purpose = settings.get("purpose") or registration.get("desc")
    if not purpose:
        missing.append(
            f"No intended purpose is recorded: add purpose to [tool.govern.models.{model}] or desc to the artifact"
        )
    if not settings.get("owner"):
        missing.append(f"No owner is configured: add owner to [tool.govern.models.{model}]")
    return _section(
        missing,
        model=model,
        version=version,
        purpose=purpose,
        owner=settings.get("owner"),
        description=registration.get("desc"),
        labels=registration.get("labels") or [],
        registered_at=display(row.registered_at),
        registered_by=row.registered_by,
        registration_seq=row.registered_seq,
        mlflow_run_id=registration.get("mlflow_run_id"),
        model_file={
            "path": registration.get("path"),
            "md5": registration.get("md5"),
            "sha256": registration.get("sha256"),
        },
        previous_version=versions[position - 1] if position > 0 else None,
        next_version=versions[position + 1] if position + 1 < len(versions) else None,
        stages_held=list(facts.holds),
        deprecated_seq=facts.deprecated_seq,
    )


def _code(root: Path | None, row: TrainingOfVersion, training: dict, lock_commit: str | None) -> dict[str, Any]:
    """The code: the lock commit, whose `dvc.lock` rebuilds the model (`git checkout` + `dvc checkout`), and the
    commit the training ran at (its code files' blobs, author and message), where the two differ."""
    git = training.get("git", {})
    commit = row.git_commit
    missing = []
    if lock_commit is None:
        from govern.api.locks import NOT_LOCKED_HINT

        missing.append(
            "Not locked: no commit is known to hold this training's dvc.lock, so no commit rebuilds the model yet "
            f"(the training's commit holds another lock or none); {NOT_LOCKED_HINT}"
        )
    details = git_adapter.commit_details(root, commit) if root and commit else None
    if details is None:
        missing.append(f"Commit {commit} is not in this clone: author, message and signature are unavailable")
    data_paths = {o["path"] for o in training.get("outputs", [])} | {d["path"] for d in training.get("datasets", [])}
    files = []
    for stage in training.get("stages", []):
        for dep in stage.get("deps", []):
            if dep["path"] not in data_paths and not any(
                dep["path"].startswith(p.rstrip("/") + "/") for p in data_paths
            ):
                files.append({"stage": stage["name"], "path": dep["path"], "md5": dep.get("md5")})
    blobs = git_adapter.blob_hashes(root, commit, sorted({f["path"] for f in files})) if details and root else {}
    for file in files:
        file["blob"] = blobs.get(file["path"])
    if files and not blobs:
        missing.append("Git blob ids of the code files are unavailable (commit not in this clone)")
    if git.get("dirty"):
        missing.append(f"The training ran on a dirty worktree: {', '.join(git.get('dirty_paths') or [])}")
    env = training.get("environment", {})
    return _section(
        missing,
        commit=lock_commit or commit,
        locked=lock_commit is not None,
        trained_at=commit,
        branch=git.get("branch"),
        remote_url=git.get("remote_url"),
        dirty=bool(git.get("dirty")),
        author=details.author if details else None,
        authored_at=display(details.authored_at) if details else None,
        message=details.message if details else None,
        signature=details.signature if details else None,
        files=files,
        python=env.get("python"),
        platform=env.get("platform"),
        **machine.summary(env),
        packages=env.get("packages", {}),
        packages_digest=env.get("packages_digest"),
    )


def _data(ledger: Reader, training: dict, cited: list[int]) -> dict[str, Any]:
    datasets = [dict(d) for d in training.get("datasets", [])]
    ids = [d["snapshot_event_id"] for d in datasets if d.get("snapshot_event_id")]
    found = reports.snapshots(ledger, ids) if ids else []
    snapshots = {r.event_id: r for r in found if r.type == "dataset.snapshotted"}
    missing = []
    for dataset in datasets:
        for key in (
            "source",
            "extracted_at",
            "extracted_at_basis",
            "snapshot_seq",
            "rows",
            "columns",
            "size",
            "md5",
            "sha256",
        ):
            dataset.setdefault(key, None)
        snapshot = snapshots.get(dataset.get("snapshot_event_id") or "")
        if snapshot:
            cited.append(snapshot.seq)
            payload = json.loads(snapshot.payload)
            dataset.update(
                source=payload.get("source"),
                extracted_at=payload.get("extracted_at"),
                extracted_at_basis=payload.get("extracted_at_basis"),
                snapshot_seq=snapshot.seq,
            )
        elif dataset.get("role") == "source":
            missing.append(f"No snapshot event is recorded for {dataset['path']}: its extraction date is unknown")
    splits = [
        {"split": split, "path": o["path"], "rows": o.get("rows", _rows_of(o["path"], datasets))}
        for o in training.get("outputs", [])
        if (split := lineage.split_name(o["path"]))
    ]
    if not splits:
        missing.append("No train/validation/test split files were found among the pipeline's outputs")
    if not datasets:
        missing.append("No datasets are recorded for this training")
    return _section(missing, datasets=datasets, split=splits)


def _rows_of(path: str, datasets: list[dict]) -> int | None:
    found = next((d for d in datasets if d["path"] == path), None)
    return found.get("rows") if found else None


def _pipeline(training: dict) -> dict[str, Any]:
    stages = [
        {
            "name": s["name"],
            "cmd": s.get("cmd"),
            "status": s.get("status"),
            "duration_s": s.get("duration_s"),
            "deps": [d["path"] for d in s.get("deps", [])],
            "outs": [o["path"] for o in s.get("outs", [])],
        }
        for s in training.get("stages", [])
    ]
    producers = {out: s["name"] for s in stages for out in s["outs"]}
    edges = sorted({(producers[dep], s["name"]) for s in stages for dep in s["deps"] if dep in producers})
    return _section([] if stages else ["No stages are recorded"], stages=stages, edges=[list(e) for e in edges])


def _training(row: TrainingOfVersion, training: dict) -> dict[str, Any]:
    params = training.get("params", {})
    mlflow = training.get("mlflow", {})
    missing = []
    if mlflow.get("status") != "mirrored":
        missing.append(f"The training was not mirrored into MLflow ({mlflow.get('error', 'no run')})")
    seeds = {k: v for k, v in params.items() if "seed" in k.lower() or "random_state" in k.lower()}
    if not seeds:
        missing.append("No seed parameter is recorded (a param whose name contains 'seed' or 'random_state')")
    return _section(
        missing,
        event_seq=row.seq,
        event_id=row.event_id,
        completed_at=display(row.occurred_at),
        actor=row.actor,
        host=training.get("environment", {}).get("host"),
        duration_s=training.get("duration_s"),
        params=params,
        seeds=seeds,
        mlflow_run_id=mlflow.get("run_id"),
        mlflow_experiment=mlflow.get("experiment"),
        mlflow_run_url=mlflow_run_url(mlflow),
        run_cache_hit=training.get("run_cache_hit"),
        dvc_lock_sha256=training.get("dvc_lock_sha256"),
        grid=training.get("grid"),
    )


def _validation(registered: list[VersionMetrics], training: dict) -> dict[str, Any]:
    metrics = training.get("metrics", {})
    groups: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        group, _, name = key.rpartition(".")
        groups.setdefault(group or "metrics", {})[name] = value
    history = [{"version": v.version, "metrics": json.loads(v.metrics) if v.metrics else {}} for v in registered]
    return _section(
        [] if metrics else ["No metrics are recorded for this training"],
        metrics=metrics,
        groups=groups,
        across_versions=history,
        chart_metrics=sorted(metrics),
    )


def _approvals(ledger: Reader, model: str, version: str, cited: list[int]) -> dict[str, Any]:
    promotions = reports.promotions(ledger, model, version)
    deprecations = reports.deprecations(ledger, model, version)
    cited.extend(p.seq for p in [*promotions, *deprecations])
    cited.extend(p.request_seq for p in promotions if p.request_seq is not None)
    grants, missing = _grants(ledger, model, version, cited)
    return _section(
        ([] if promotions else ["This version was never promoted"]) + missing,
        promotions=[{**asdict(p), "promoted_at": display(p.promoted_at)} for p in promotions],
        grants=grants,
        deprecation={**asdict(deprecations[0]), "deprecated_at": display(deprecations[0].deprecated_at)}
        if deprecations
        else None,
    )


def _grants(ledger: Reader, model: str, version: str, cited: list[int]) -> tuple[list[dict[str, Any]], list[str]]:
    """For each person who approved or promoted the version, the grant of the role they acted in (approver) when
    they first acted: who confirmed and who proposed it, on what basis, each with the strength of its identity; and
    the token they acted with, with who handed it over. A self-asserted name holds no grant: said so."""
    from govern import attribution

    people: dict[str, dict[str, Any]] = {}
    for row in reports.acted(ledger, model, version):
        for name in dict.fromkeys([row.actor, row.approver]):
            if not name:
                continue
            found = people.setdefault(name, {"who": name, "role": "approver", "acted_seqs": [], "row": row})
            found["acted_seqs"].append(row.seq)
    if not any(attribution.principal_of(name) for name in people) and not reports.any_grant(ledger):
        return [], []  # nobody here is a principal, nor was ever granted a role: one person's project
    grants, missing = [], []
    for name, found in people.items():
        row = found.pop("row")
        principal = attribution.principal_of(name)
        if name == row.actor:
            shown = attribution.shown(name, row.authn)
        else:  # an approver the promoter named (`--approver`, one person's project): not who acted
            shown = f"{name} (named by {attribution.principal_of(row.actor) or row.actor})"
        entry: dict[str, Any] = {
            **found,
            "shown": shown,
            "acted_at": display(row.promoted_at),
            "principal": principal,
            "token": None,
            "token_issuer": None,
            "token_code": None,
            "grant": None,
        }
        if principal is None:
            missing.append(f"{name} is a self-asserted identity, not a principal: no grant of a role to show")
            grants.append(entry)
            continue
        token = attribution.TOKEN_ACTOR.match(name)
        entry["token"] = token.group(2) if token else None
        issued = reports.token_issuer(ledger, entry["token"]) if token else None
        if issued is not None:
            entry["token_issuer"] = attribution.shown(issued.issuer, issued.issuer_authn)
            entry["token_code"] = issued.code_id
        grant = reports.grant_at(ledger, principal, "approver", row.promoted_at)
        if grant is None:
            missing.append(f"{principal} held no approver grant when they acted (seq {row.seq})")
            grants.append(entry)
            continue
        cited.extend(seq for seq in (grant.grant_seq, grant.proposal_seq) if seq)
        entry["grant"] = {
            "seq": grant.grant_seq,
            "granted_at": display(grant.granted_at),
            "confirmed_by": attribution.shown(grant.granted_by, grant.granted_authn),
            "proposal_seq": grant.proposal_seq,
            "proposed_at": display(grant.proposed_at) if grant.proposed_at else None,
            "proposed_by": attribution.shown(grant.proposed_by, grant.proposed_authn) if grant.proposed_by else None,
            "basis": grant.basis or "direct",
            "reason": grant.reason,
        }
        grants.append(entry)
    return grants, missing


def _production(ledger: Reader, model: str, version: str, cited: list[int]) -> dict[str, Any]:
    summary = reports.slot_summary(ledger, model, version)
    since = reports.latest_start(ledger, model, version)
    windows = reports.latest_windows(ledger, model, version, since) if since else []
    lanes = summary[:TIMELINE_SLOTS]
    context = reports.timeline(ledger, lanes)
    cited.extend(seq for w in windows for seq in (w.start_seq, w.end_seq) if seq is not None)
    total = sum(s.windows for s in summary)
    return _section(
        [] if windows else ["This version was never deployed"],
        slots_summary=[
            {
                "app": s.app,
                "env": s.env,
                "windows": s.windows,
                "first_start": display(s.first_start),
                "last_end": display(s.last_end) if s.last_end else None,
                "serving": s.serving,
                "closed_s": s.closed_s,
            }
            for s in summary
        ],
        windows_total=total,
        windows=[_window(w) for w in windows],
        slots=_timelines(context, model, version),
        slots_total=len(summary),
        now=display(utc_now()),
    )


def _window(w: Window) -> dict[str, Any]:
    return {
        "app": w.app,
        "env": w.env,
        "start": display(w.started_at),
        "end": display(w.ended_at) if w.ended_at else None,
        "duration_s": w.duration_s,
        "deployed_by": w.deployed_by,
        "ended_by": w.ended_by,
        "end_reason": w.end_reason,
        "start_seq": w.start_seq,
        "end_seq": w.end_seq,
    }


def _timelines(context: list[TimelineWindow], model: str, version: str) -> list[dict[str, Any]]:
    """The latest windows of the slots this version served, so the chart shows what came before and after."""
    slots: dict[str, dict[str, Any]] = {}
    for w in context:
        slot = slots.setdefault(f"{w.app}/{w.env}", {"slot": f"{w.app}/{w.env}", "windows": []})
        slot["windows"].append(
            {
                "label": f"{w.model} v{w.version}",
                "this": w.model == model and w.version == version,
                "start": display(w.started_at),
                "end": display(w.ended_at) if w.ended_at else None,
            }
        )
    return list(slots.values())


def _reproductions(ledger: Reader, model: str, version: str, cited: list[int]) -> dict[str, Any]:
    """The CI verdicts about a lock holding this version's model file, oldest first (`verdicts_of_version`:
    the same ones the `reproduction.verified` gate weighs)."""
    rows = verdicts_of_version(ledger, model, version)[::-1]
    cited.extend(r.seq for r in rows)
    from govern.events import upcast  # old verdicts (before the three outcomes) read as the current schema

    found = []
    for r in rows:
        payload = upcast(r.type, r.schema_version, r.payload)
        differences = payload.get("environment_differences") or {}
        found.append(
            {
                "seq": r.seq,
                "verdict": r.verdict,
                "match": payload["match"],
                "strict": payload.get("strict", False),
                "commit": r.git_commit,
                "stale_inputs": [f"{s['stage']}: {s['name']}" for s in payload.get("stale_inputs", [])],
                "at": display(r.occurred_at),
                "by": r.actor,
                "ci": payload.get("ci", {}),
                "duration_s": payload.get("duration_s"),
                "failed_stage": payload.get("failed_stage"),
                "differing_outputs": [
                    {
                        "path": d["path"],
                        "rule": d["rule"],
                        "equivalent": d["equivalent"],
                        "expected_md5": d.get("expected_md5"),
                        "actual_md5": d.get("actual_md5"),
                        "evidence": d.get("evidence", {}).get("summary"),
                    }
                    for d in payload.get("differing_outputs", [])
                ],
                "metrics_beyond_tolerance": sorted(n for n, d in payload["metric_deltas"].items() if not d["within"]),
                "machines_compared": bool(differences.get("compared")),
                "machine_differences": [
                    {key: "not set" if value is None else value for key, value in d.items()}
                    for d in differences.get("differences", [])
                ],
            }
        )
    missing = ["No CI reproduction of a dvc.lock holding this version's model file is recorded"]
    return _section([] if found else missing, runs=found)


def _inference(ledger: Reader, model: str, version: str, cited: list[int]) -> dict[str, Any]:
    rows = reports.inference_by_month(ledger, model, version)
    cited.extend(seq for r in rows for seq in (r.first_seq, r.last_seq))
    counts = [{"app": r.app, "env": r.env, "month": r.month, "batches": r.batches, "rows": r.rows} for r in rows]
    return _section([] if counts else ["No inference with this version is recorded"], counts=counts)


def _integrity(
    ledger: Reader, cited: list[int], found: list[Anchor], verify_chain: bool, forged: Sequence[str] = ()
) -> dict[str, Any]:
    """The cited events re-hashed, the anchors (`found`: the repository's anchor tags) checked against the ledger,
    and (`forged`) what the attestations of the actors it names failed."""
    count, head_hash = reports.head(ledger)
    problems = [*check_events(ledger, cited), *forged]
    chain = verify_chain_in(ledger) if verify_chain else None
    if chain is not None and not chain.ok:
        problems.insert(0, chain.problem or "the chain does not verify")
    missing = [f"The ledger does not verify: {problem}" for problem in problems]
    anchor_problems = check_anchors(ledger, found)
    missing.extend(f"Anchor check failed: {problem}" for problem in anchor_problems)
    if not found:
        missing.append(
            "No anchor of the ledger head outside the ledger file was found: the chain alone cannot reveal a "
            "truncated tail or a wholly re-hashed copy (`govern audit anchor`)"
        )
    return _section(
        missing,
        verified=not problems and not anchor_problems,
        scope="chain" if verify_chain else "cited",
        events=count,
        head_hash=head_hash,
        problem=problems[0] if problems else None,
        cited_seqs=sorted(set(cited)),
        cited_range=[min(cited), max(cited)] if cited else None,
        anchors=[f"{a.tag} (seq {a.seq})" for a in found],
        anchors_ok=not anchor_problems,
    )


def mlflow_run_url(mlflow: Mapping[str, Any]) -> str | None:
    """The MLflow UI's page of a training's run (its `mlflow` facts), where the run was mirrored to an http(s)
    tracking server: a browser can open it (the web pages link it; a file or database store has no page)."""
    from urllib.parse import quote, urlsplit

    uri, run_id, experiment_id = mlflow.get("tracking_uri"), mlflow.get("run_id"), mlflow.get("experiment_id")
    if not isinstance(uri, str) or not isinstance(run_id, str) or not run_id:
        return None
    if urlsplit(uri).scheme not in ("http", "https"):
        return None
    base = uri.rstrip("/")
    if isinstance(experiment_id, str) and experiment_id:
        return f"{base}/#/experiments/{quote(experiment_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f"{base}/#/runs/{quote(run_id, safe='')}"


# What two versions are compared by: the report's sections a scientist reads side by side. The costly sections
# (production windows, reproductions, inference counts, the chain check) are left out, so a comparison answers
# in a few queries at any ledger size.
CHANGED_PATHS_SHOWN = 200


def summary(project: Project, model: str, version: str) -> dict[str, Any]:
    """One version's identity, code, data, training (params, MLflow run), metrics and approvals: the report's
    sections without production, reproductions, inference and integrity (what the version page shows)."""
    with project.ledger.reader() as reader:
        return _summary(reader, project, model, version)


def compare(project: Project, model: str, first: str, second: str) -> dict[str, Any]:
    """Two versions of a model side by side: each one's `summary`, and what differs between them (params,
    metrics, datasets by path, the pipeline's code files, and the files git says changed between the commits)."""
    with project.ledger.reader() as reader:
        a = _summary(reader, project, model, first)
        b = _summary(reader, project, model, second)
    root = project.root
    commits = (a["code"]["commit"], b["code"]["commit"])
    changed = _changed_between(root, *commits) if root and commits[0] != commits[1] else []
    return {
        "model": model,
        "versions": [first, second],
        "a": a,
        "b": b,
        "params": _differences(a["training"]["params"], b["training"]["params"]),
        "metrics": _differences(a["validation"]["metrics"], b["validation"]["metrics"]),
        "datasets": _dataset_differences(a["data"]["datasets"], b["data"]["datasets"]),
        "files": _file_differences(a["code"]["files"], b["code"]["files"]),
        "same_commit": commits[0] == commits[1],
        "changed_paths": changed[:CHANGED_PATHS_SHOWN] if changed is not None else None,
        "changed_paths_total": len(changed) if changed is not None else None,
    }


def _settings(project: Project, model: str) -> dict[str, Any]:
    """The model's `[tool.govern.models.NAME]` (none for the ledger alone, outside a repository)."""
    return project.config.models.get(model, {}) if project.config is not None else {}


def _pinned(project: Project) -> tuple[str, ...]:
    """The pinned fingerprints of the server's signing keys (none for the ledger alone)."""
    return project.config.trusted_keys if project.config is not None else ()


def _summary(ledger: Reader, project: Project, model: str, version: str) -> dict[str, Any]:
    facts = version_facts(ledger, model, version)  # NotFound names the known models and versions
    row = reports.training_of_version(ledger, model, version)
    root = project.root
    settings = _settings(project, model)
    training = json.loads(row.payload)
    registration = json.loads(row.registration)
    cited: list[int] = []
    metrics = training.get("metrics", {})
    found = {
        "identity": _identity(facts, reports.version_metrics(ledger, model), row, registration, settings),
        "code": _code(root, row, training, facts.lock_commit),
        "data": _data(ledger, training, cited),
        "training": _training(row, training),
        "validation": _section([] if metrics else ["No metrics are recorded for this training"], metrics=metrics),
        "approvals": _approvals(ledger, model, version, cited),
    }
    _attributed(ledger, found, _pinned(project))
    return found


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each name of either mapping with both values, in name order, and whether they differ."""
    return [
        {"name": name, "a": a.get(name), "b": b.get(name), "changed": a.get(name) != b.get(name)}
        for name in sorted(set(a) | set(b))
    ]


def _dataset_differences(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Datasets by path: each side's content hash, rows and extraction date, and whether the content differs."""
    keys = ("role", "md5", "rows", "source", "extracted_at")
    by_a, by_b = {d["path"]: d for d in a}, {d["path"]: d for d in b}
    found = []
    for path in sorted(set(by_a) | set(by_b)):
        left, right = by_a.get(path), by_b.get(path)
        found.append(
            {
                "path": path,
                "a": {k: left.get(k) for k in keys} if left else None,
                "b": {k: right.get(k) for k in keys} if right else None,
                "changed": left is None or right is None or left.get("md5") != right.get("md5"),
            }
        )
    return found


def _file_differences(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pipeline's code files (stage dependencies that are not data) by path, with each side's content id (the
    git blob where the commit is in this clone, else DVC's md5), and whether it differs."""

    def content(file: Mapping[str, Any]) -> str | None:
        return file.get("blob") or file.get("md5")

    by_a, by_b = {f["path"]: f for f in a}, {f["path"]: f for f in b}
    found = []
    for path in sorted(set(by_a) | set(by_b)):
        left, right = by_a.get(path), by_b.get(path)
        found.append(
            {
                "path": path,
                "stage": (left or right or {}).get("stage"),
                "a": content(left) if left else None,
                "b": content(right) if right else None,
                "changed": left is None or right is None or content(left) != content(right),
            }
        )
    return found


def _changed_between(root: Path, first: str | None, second: str | None) -> list[dict[str, str]] | None:
    """The files git says changed between two commits (`git diff --name-status`), or None when either commit
    is not in this clone."""
    import re
    import subprocess

    sha = re.compile(r"^[0-9a-f]{7,64}$")
    if not first or not second or not sha.match(first) or not sha.match(second):
        return None
    done = subprocess.run(
        ["git", "-C", str(root), "diff", "--name-status", "--no-renames", "-z", first, second, "--"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return None
    fields = done.stdout.split("\0")
    return [{"status": status, "path": path} for status, path in zip(fields[0::2], fields[1::2], strict=False) if path]


# The models page charts each model's metrics over its newest versions: one query per model at any ledger size.
CHART_VERSIONS = 30


def metrics_across_versions(project: Project, model: str, newest: int = CHART_VERSIONS) -> dict[str, Any]:
    """The metrics of a model's newest `newest` versions, oldest first, and the metric names they record: what the
    report's chart draws (`charts.metric_history`), for a model rather than one version (the models page)."""
    with project.ledger.reader() as reader:
        rows = reports.newest_version_metrics(reader, model, newest)
    versions = [{"version": r.version, "metrics": json.loads(r.metrics) if r.metrics else {}} for r in rows]
    versions.reverse()
    numeric = {name for v in versions for name, value in v["metrics"].items() if isinstance(value, int | float)}
    other = {name for v in versions for name, value in v["metrics"].items() if not isinstance(value, int | float)}
    names = sorted(numeric - other)  # a metric recorded as text somewhere cannot be drawn
    return {"model": model, "versions": versions, "metrics": names}
