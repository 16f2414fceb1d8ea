"""The everyday git workflow of the README, end to end (issue 26): commit the code, train, commit the lock,
verify, request, approve, promote to production through the `reproduction.verified` gate, no --force.

The training commit has no lock for the new model (or a stale one); the lock commit that follows it does. A CI
verdict counts for the version whose model file its lock holds, wherever that lock was committed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import commit_all, git, ok, run_cli

from govern.envelope import PendingEvent, utc_now
from govern.events import ReproductionVerified
from govern.storage.duckdb_log import Ledger

# Every test here runs DVC (`dvc add`, `dvc push`, a reproduction): the full suite, not the edit loop.
pytestmark = pytest.mark.slow
M = "breast-cancer-classifier"
GATED = '\n[tool.govern.registry]\ngates = { production = ["reproduction.verified"] }\n'


def ledger_of(project: Path) -> Ledger:
    return Ledger(project / "audit" / "ledger.duckdb")


def as_person(project: Path, name: str, email: str) -> None:
    git(project, "config", "user.name", name)
    git(project, "config", "user.email", email)


def request_and_approve(project: Path, version: str, stage: str) -> str:
    as_person(project, "Sam Scientist", "sam@example.com")
    asked = json.loads(ok(project, "request-promotion", M, version, "--to", stage, "--reason", "better", "--json"))
    as_person(project, "Pat Approver", "pat@example.com")
    result = run_cli("approve", str(asked["request"]), "--reason", "evidence reviewed", cwd=project)
    return result.output if result.exit_code == 0 else f"REFUSED {result.exit_code}: {result.output}"


def test_the_readme_workflow_reaches_production_through_the_verified_gate(
    reproduced_demo: Path, isolated_env: dict[str, str]
) -> None:
    pyproject = reproduced_demo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + GATED)
    params = reproduced_demo / "params.yaml"
    params.write_text(params.read_text().replace("  C: 1.0", "  C: 0.5"))
    training_commit = commit_all(reproduced_demo, "C = 0.5, and a gate on production")
    ok(reproduced_demo, "repro")  # the training: at a commit whose dvc.lock is the previous version's
    [version] = [e.payload["version"] for e in ledger_of(reproduced_demo).read(types=["model.registered"])][1:]
    git(reproduced_demo, "add", "dvc.lock", "metrics.json")  # what the stages wrote that git tracks
    git(reproduced_demo, "commit", "-q", "-m", "the lock of the new model")
    lock_commit = git(reproduced_demo, "rev-parse", "HEAD")
    assert lock_commit != training_commit

    verified = subprocess.run(
        [sys.executable, "-m", "govern", "ci", "verify", "--json"],
        cwd=reproduced_demo, env=isolated_env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["match"] in ("exact", "equivalent")

    assert "model.promoted" in request_and_approve(reproduced_demo, version, "staging")
    printed = request_and_approve(reproduced_demo, version, "production")

    assert "model.promoted" in printed, printed
    promoted = ledger_of(reproduced_demo).read(types=["model.promotion_approved"])[-1]
    assert ("reproduction.verified", True) in [(g["gate"], g["passed"]) for g in promoted.payload["gates"]]
    assert not any(e.payload.get("forced") for e in ledger_of(reproduced_demo).read(types=["model.promoted"]))
    locks = ledger_of(reproduced_demo).read(types=["training.locked"])
    [locked] = [e for e in locks if e.payload["commit"] == lock_commit]
    assert locked.payload["versions"] == [{"model": M, "version": version}]
    assert_tags_rebuild_the_versions(reproduced_demo)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{reproduced_demo / 'mlflow.db'}")
    mirrored = client.get_model_version(M, version)
    assert mirrored.tags["govern.lock_commit"] == lock_commit, "MLflow names the commit to check out"
    assert client.get_run(mirrored.run_id).data.tags["govern.lock_commit"] == lock_commit
    report = json.loads(ok(reproduced_demo, "audit", "report", M, version, "--format", "json"))
    assert report["code"]["commit"] == lock_commit and report["code"]["trained_at"] == training_commit
    last = report["approvals"]["promotions"][-1]
    assert last["requested_by"].startswith("Sam Scientist <sam@example.com>") and last["reason"] == "better"
    assert last["approver"].startswith("Pat Approver <pat@example.com>")
    assert last["approval_reason"] == "evidence reviewed"
    lineage = ok(reproduced_demo, "audit", "lineage", M, version)
    assert f"lock commit {lock_commit}" in lineage and f"trained at git commit {training_commit}" in lineage
    assert "asked by Sam Scientist <sam@example.com>" in lineage


def assert_tags_rebuild_the_versions(project: Path) -> None:
    """Every GTO tag of every registered version names a commit whose dvc.lock gives the model path the
    registered bytes (`git checkout TAG && dvc checkout` yields them: DVC checks out what the lock states)."""
    import yaml

    registered = {e.payload["version"]: e.payload for e in ledger_of(project).read(types=["model.registered"])}
    tags = git(project, "tag", "-l", f"{M}@*", f"{M}#*").split()
    assert tags, "promotions wrote GTO tags"
    for tag in tags:
        version = str(int(tag.split("@v")[1].split(".")[0])) if "@v" in tag else None
        commit = git(project, "rev-list", "-n", "1", tag)
        lock = yaml.safe_load(git(project, "show", f"{commit}:dvc.lock"))
        md5s = {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}
        if version is None:  # an assignment tag: the version registered at that commit
            version = next(v for v, p in registered.items() if md5s.get(p["path"]) == p["md5"])
        assert md5s[registered[version]["path"]] == registered[version]["md5"], f"{tag} at {commit[:12]}"


def test_an_unlocked_version_enters_no_gated_stage_and_gets_no_tag_until_its_lock_is_committed(
    reproduced_demo: Path,
) -> None:
    pyproject = reproduced_demo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + GATED)
    params = reproduced_demo / "params.yaml"
    params.write_text(params.read_text().replace("  C: 1.0", "  C: 0.5"))
    commit_all(reproduced_demo, "C = 0.5")
    trained = run_cli("repro", cwd=reproduced_demo)
    assert trained.exit_code == 0 and "this training's versions are not locked yet: commit its dvc.lock" in (
        trained.output
    )
    version = ledger_of(reproduced_demo).read(types=["model.registered"])[-1].payload["version"]
    shown = ok(reproduced_demo, "status")
    assert f"version {version}" in shown and "NOT LOCKED: no commit rebuilds it yet; commit its dvc.lock" in shown
    [listed] = [v for v in json.loads(ok(reproduced_demo, "status", "--json"))["models"][0]["versions"]
                if v["version"] == version]  # fmt: skip
    assert listed["lock_commit"] is None

    staged = request_and_approve(reproduced_demo, version, "staging")

    assert "model.promoted" in staged and f"no GTO tag written: version {version} of {M} is not locked" in staged
    assert not git(reproduced_demo, "tag", "-l", f"{M}@v{version}.0.0")
    refused = request_and_approve(reproduced_demo, version, "production")
    assert "dvc.lock committed (seen: not locked: commit its dvc.lock" in refused, refused

    git(reproduced_demo, "add", "dvc.lock", "metrics.json")
    git(reproduced_demo, "commit", "-q", "-m", "the lock")
    before = ledger_of(reproduced_demo).head()
    shown = ok(reproduced_demo, "status")
    head = git(reproduced_demo, "rev-parse", "HEAD")
    assert f"lock {head[:12]} (found, recorded by the next write or `govern sync`)" in shown, shown
    assert "NOT LOCKED" not in shown and ledger_of(reproduced_demo).head() == before, "status only reads"
    synced = ok(reproduced_demo, "sync")

    assert "training.locked" in synced
    assert "NOT LOCKED" not in ok(reproduced_demo, "status")
    history = json.loads(ok(reproduced_demo, "audit", "history", M, version, "--json"))
    [locked] = [e for e in history if e["type"] == "training.locked"]
    assert locked["payload"]["commit"] == git(reproduced_demo, "rev-parse", "HEAD"), "history names the lock commit"
    assert "lock commit" in ok(reproduced_demo, "audit", "history", M, version)


def test_a_verdict_about_another_model_file_does_not_pass_the_gate(reproduced_demo: Path) -> None:
    """A verdict at the version's own training commit whose lock gave the model path other bytes (the stale lock
    of the previous version) is not about this version."""
    pyproject = reproduced_demo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + GATED)
    params = reproduced_demo / "params.yaml"
    params.write_text(params.read_text().replace("  C: 1.0", "  C: 0.5"))
    training_commit = commit_all(reproduced_demo, "C = 0.5")
    ok(reproduced_demo, "repro")
    first, second = ledger_of(reproduced_demo).read(types=["model.registered"])
    about_first = ReproductionVerified(
        training_commit,
        "exact",
        [{"path": first.payload["path"], "md5": first.payload["md5"]}],
        [],
        {},
        {},
        1.0,
        {"system": "test"},
        dvc_lock_sha256="f" * 64,
    )
    ledger_of(reproduced_demo).append(
        [PendingEvent(about_first, actor="ci", occurred_at=utc_now(), git_commit=training_commit)]
    )
    version = second.payload["version"]
    assert "model.promoted" in request_and_approve(reproduced_demo, version, "staging")

    printed = request_and_approve(reproduced_demo, version, "production")

    assert printed.startswith("REFUSED 1"), printed
    assert "reproduction.verified (seen: no reproduction recorded)" in printed
    evidence = json.loads(ok(reproduced_demo, "audit", "report", M, first.payload["version"], "--format", "json"))
    assert [run["seq"] for run in evidence["reproductions"]["runs"]], "the verdict is the first version's evidence"


def test_ci_verify_in_a_fresh_clone_holding_anchors_prints_the_verdict_and_starts_no_chain(
    reproduced_demo: Path, tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    """The new user's CI runner: a clone with `govern-anchor/N` tags and no ledger. `ci verify` used to record
    `exact (seq 1)` into a new chain there, after which `audit verify` failed on the anchors."""
    ok(reproduced_demo, "audit", "anchor")
    clone = tmp_path / "runner"
    git(tmp_path, "clone", "-q", str(reproduced_demo), str(clone))
    assert git(clone, "tag", "-l", "govern-anchor/*"), "the anchors came with the clone"

    verified = subprocess.run(
        [sys.executable, "-m", "govern", "ci", "verify", "--json"],
        cwd=clone, env=isolated_env, capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert verified.returncode == 0, verified.stdout + verified.stderr
    verdict = json.loads(verified.stdout)
    assert verdict["match"] in ("exact", "equivalent") and verdict["recorded"] is False
    assert verdict["event_seq"] is None and "`ci verify` starts none" in verdict["not_recorded"]
    assert "the verdict is not recorded: there is no ledger at" in verified.stderr
    assert not (clone / "audit" / "ledger.duckdb").exists(), "no chain was started"


def test_ci_verify_against_a_ledger_off_the_anchors_runs_nothing_and_records_nothing(
    reproduced_demo: Path, tmp_path: Path
) -> None:
    ok(reproduced_demo, "audit", "anchor")
    stranger = tmp_path / "another.duckdb"
    verdict = ReproductionVerified("c" * 40, "exact", [], [], {}, {}, 1.0, {})
    Ledger(stranger).append([PendingEvent(verdict, actor="x", occurred_at=utc_now())])
    pyproject = reproduced_demo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('ledger = "audit/ledger.duckdb"', f'ledger = "{stranger}"'))
    commit_all(reproduced_demo, "another ledger")

    result = run_cli("ci", "verify", cwd=reproduced_demo)

    assert result.exit_code == 3, result.output
    assert "but this repository's newest anchor is seq" in result.output and "nothing was written" in result.output
    assert Ledger(stranger).head()[0] == 1


def dvc_add_project(root: Path) -> Path:
    """A project of one's own: an empty repository, a `dvc add` CSV, one stage reading it; no DVC remote."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    assert run_cli("init", cwd=root).exit_code == 0
    (root / "data").mkdir()
    (root / "data" / "applicants.csv").write_text("age,income\n31,40\n45,52\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/applicants.csv"], cwd=root, check=True)
    (root / "count.py").write_text("rows = open('data/applicants.csv').read().splitlines()[1:]\n"
                                   "open('model.txt', 'w').write(str(len(rows)))\n")  # fmt: skip
    (root / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: python count.py\n"
        "    deps: [count.py, data/applicants.csv]\n    outs: [model.txt]\n"
    )
    commit_all(root, "data and a stage")
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=root, check=True)
    commit_all(root, "the lock")
    return root


def test_ci_verify_finds_dvc_add_data_in_the_projects_cache_without_a_remote(tmp_path: Path) -> None:
    """The new user's own project: `ci verify` said "Stage 'prepare' depends on data/applicants.csv, which does
    not exist" (the scratch clone's cache pointed inside the project's cache, at files/md5)."""
    project = dvc_add_project(tmp_path / "own")

    result = run_cli("ci", "verify", "--json", cwd=project)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["match"] == "exact"


def test_ci_verify_names_the_missing_data_and_what_to_configure_when_no_cache_has_it(tmp_path: Path) -> None:
    project = dvc_add_project(tmp_path / "own")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))  # a clone: no DVC cache, no remote

    result = run_cli("ci", "verify", cwd=clone)

    assert result.exit_code == 3, result.output
    [line] = result.output.strip().splitlines()[-1:]
    assert "depends on data/applicants.csv, which does not exist" in line and "`dvc push` it to a remote" in line


SPLIT = """import sys
rows = open('data/applicants.csv').read().splitlines()
open('data/train.csv', 'w').write('\\n'.join(rows[:2]) + '\\n')
open('data/test.csv', 'w').write('\\n'.join(rows[:1] + rows[2:]) + '\\n')
"""
FIT = "open('model.bin', 'w').write(str(len(open('data/train.csv').read().splitlines())))\n"


def test_a_dvc_add_file_is_the_source_and_a_stage_splitting_it_extracts_nothing(
    tmp_path: Path, mlflow_store_template: Path
) -> None:
    """The new user's own project: the splits of a `dvc add` CSV were recorded as source datasets "extracted" when
    the split ran, with source "stage prepare: ..."; the CSV is the snapshot, dated by its DVC record's commit."""
    import shutil

    root = tmp_path / "own"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    assert run_cli("init", cwd=root).exit_code == 0
    shutil.copy2(mlflow_store_template, root / "mlflow.db")
    (root / "data").mkdir()
    (root / "data" / "applicants.csv").write_text("age,income\n31,40\n45,52\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/applicants.csv"], cwd=root, check=True)
    (root / "split.py").write_text(SPLIT)
    (root / "fit.py").write_text(FIT)
    (root / "dvc.yaml").write_text(
        "stages:\n"
        "  prepare:\n    cmd: python split.py\n    deps: [split.py, data/applicants.csv]\n"
        "    outs: [data/train.csv, data/test.csv]\n"
        "  train:\n    cmd: python fit.py\n    deps: [fit.py, data/train.csv]\n    outs: [model.bin]\n"
        "artifacts:\n  tiny:\n    path: model.bin\n    type: model\n"
    )
    commit_all(root, "data and pipeline")

    ok(root, "repro", "--commit")

    ledger = Ledger(root / "audit" / "ledger.duckdb")
    [snapshot] = ledger.read(types=["dataset.snapshotted"])
    assert snapshot.payload["path"] == "data/applicants.csv"
    assert snapshot.payload["extracted_at_basis"] == "dvc-file-commit" and snapshot.payload["stage"] is None
    [training] = ledger.read(types=["training.completed"])
    roles = {d["path"]: d["role"] for d in training.payload["datasets"]}
    assert roles["data/applicants.csv"] == "source" and roles.get("data/train.csv") == "training"


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_ci_verify_of_a_commit_older_than_the_projects_dvc_remote_fetches_from_it(tmp_path: Path, where: str) -> None:
    """The new user's finding: commits whose .dvc/config has no remote kept failing after one was added."""
    project = dvc_add_project(tmp_path / "own")
    older = git(project, "rev-parse", "HEAD")
    store = tmp_path / "store"
    url = str(store) if where == "absolute" else "../../store"
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", "shared", url], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "push", "-q"], cwd=project, check=True)
    commit_all(project, "a DVC remote")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))  # no cache here: the data is in the remote only

    result = run_cli("ci", "verify", "--rev", older, "--json", cwd=clone)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["match"] == "exact"


def test_the_post_commit_hook_records_the_lock_commit_as_dvc_lock_is_committed(reproduced_demo: Path) -> None:
    installed = ok(reproduced_demo, "hooks", "install")
    assert "pre-push" in installed and "post-commit" in installed
    params = reproduced_demo / "params.yaml"
    params.write_text(params.read_text().replace("  C: 1.0", "  C: 0.5"))
    commit_all(reproduced_demo, "C = 0.5")  # a commit of code and params: the hook looks, finds nothing to record
    assert ledger_of(reproduced_demo).read(types=["training.locked"])[-1].payload["commit"] != git(
        reproduced_demo, "rev-parse", "HEAD"
    )
    ok(reproduced_demo, "repro")
    version = ledger_of(reproduced_demo).read(types=["model.registered"])[-1].payload["version"]

    git(reproduced_demo, "add", "dvc.lock", "metrics.json")
    committed = subprocess.run(
        ["git", "commit", "-m", "the lock"], cwd=reproduced_demo, capture_output=True, text=True, check=True
    )

    head = git(reproduced_demo, "rev-parse", "HEAD")
    assert f"govern: {M} version {version} locked at {head[:12]}" in committed.stderr, committed  # git: hooks to stderr
    locked = ledger_of(reproduced_demo).read(types=["training.locked"])[-1]
    assert locked.payload["commit"] == head and locked.payload["found_by"] == "post-commit hook"
    assert locked.payload["versions"] == [{"model": M, "version": version}]

    params.write_text(params.read_text().replace("  C: 0.5", "  C: 0.25"))
    commit_all(reproduced_demo, "C = 0.25")
    started = time.monotonic()
    ok(reproduced_demo, "repro", "--commit")  # its own commit runs the hook while repro has the ledger

    assert time.monotonic() - started < 60, "the hook never waits out the ledger's lock"
    newest = ledger_of(reproduced_demo).read(types=["model.registered"])[-1].payload["version"]
    locks = [
        e
        for e in ledger_of(reproduced_demo).read(types=["training.locked"])
        if e.payload["versions"][0]["version"] == newest
    ]
    assert len(locks) == 1 and locks[0].payload["commit"] == git(reproduced_demo, "rev-parse", "HEAD")


def test_a_missing_dvc_add_file_is_named_with_the_command_that_restores_it(tmp_path: Path) -> None:
    project = dvc_add_project(tmp_path / "own")
    (project / "data" / "applicants.csv").unlink()
    (project / "count.py").write_text((project / "count.py").read_text() + "# changed\n")

    result = run_cli("repro", cwd=project)

    assert result.exit_code != 0
    assert (
        "depends on data/applicants.csv, which does not exist (data/applicants.csv.dvc tracks it): " in (result.output)
        and "`dvc checkout data/applicants.csv.dvc`" in result.output
    )


TAMPER = """import hashlib, yaml
lock = yaml.safe_load(open('dvc.lock'))
for out in lock['stages']['make']['outs']:
    out['md5'], out['size'] = hashlib.md5(b'xxx').hexdigest(), 3  # an older version's bytes
yaml.safe_dump(lock, open('dvc.lock', 'w'), sort_keys=False)
open('tamper.done', 'w').write('done')
"""


def test_a_lock_a_stage_rewrote_to_name_other_bytes_locks_nothing(tmp_path: Path) -> None:
    """The insider review: a later stage set the model's md5 in dvc.lock to version 1's, the post-commit hook
    recorded that commit as version 2's lock, and `git checkout` + `dvc checkout` of it gave version 1's bytes."""
    from conftest import tiny_pipeline

    project = tiny_pipeline(tmp_path / "project")
    (project / "tamper.py").write_text(TAMPER)
    text = (project / "dvc.yaml").read_text().replace(
        "artifacts:", "  tamper:\n    cmd: python tamper.py\n    deps: [out.txt, tamper.py]\n    outs: [tamper.done]\n"
        "artifacts:"
    )  # fmt: skip
    (project / "dvc.yaml").write_text(text)
    (project / "params.yaml").write_text("n: 6\n")
    commit_all(project, "a model, and a stage that rewrites its lock entry")
    ok(project, "hooks", "install")
    ok(project, "repro")
    [version] = ledger_of(project).read(types=["model.registered"])
    assert version.payload["md5"] == hashlib.md5(b"xxxxxx").hexdigest(), "the md5 of the bytes, not the lock's"

    git(project, "add", "-A")
    committed = subprocess.run(["git", "commit", "-m", "the lock"], cwd=project, capture_output=True, text=True)

    assert committed.returncode == 0 and "locked at" not in committed.stderr, committed.stderr
    assert ledger_of(project).read(types=["training.locked"]) == []
    ok(project, "sync")
    assert ledger_of(project).read(types=["training.locked"]) == [], "no finder takes a lock naming other bytes"
    assert "NOT LOCKED" in ok(project, "status")


def test_a_fresh_project_with_dvc_add_data_reaches_production_through_the_verified_gate(tmp_path: Path) -> None:
    """The new user's own project, in the README's order: `dvc add` data, a stage, a `type: model` artifact."""
    project = tmp_path / "own"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    assert run_cli("init", cwd=project).exit_code == 0
    (project / "govern.toml").write_text('[registry]\ngates = { production = ["reproduction.verified"] }\n')
    (project / "data").mkdir()
    (project / "data" / "applicants.csv").write_text("age,income\n31,40\n45,52\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/applicants.csv"], cwd=project, check=True)
    (project / "count.py").write_text("rows = open('data/applicants.csv').read().splitlines()[1:]\n"
                                      "open('model.txt', 'w').write(str(len(rows)))\n")  # fmt: skip
    (project / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: python count.py\n    deps: [count.py, data/applicants.csv]\n"
        "    outs: [model.txt]\nartifacts:\n  counter:\n    path: model.txt\n    type: model\n"
    )
    commit_all(project, "data, a stage, a model")  # 1. the input commit
    ok(project, "repro")  # 2. train
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "the lock")  # 3. the lock commit
    lock_commit = git(project, "rev-parse", "HEAD")
    verified = subprocess.run([sys.executable, "-m", "govern", "ci", "verify", "--json"], cwd=project,
                              capture_output=True, text=True)  # fmt: skip  # 4. what the hook or CI runs
    assert verified.returncode == 0 and json.loads(verified.stdout)["match"] == "exact", verified.stderr

    for stage in ("staging", "production"):  # 5.-6. asked by one person, approved by another
        as_person(project, "Sam Scientist", "sam@example.com")
        asked = json.loads(ok(project, "request-promotion", "counter", "1", "--to", stage, "--reason", "r", "--json"))
        as_person(project, "Pat Approver", "pat@example.com")
        approved = run_cli("approve", str(asked["request"]), "--reason", "evidence reviewed", cwd=project)
        assert approved.exit_code == 0 and "model.promoted" in approved.output, approved.output

    [version] = ledger_of(project).read(types=["model.registered"])
    assert json.loads(ok(project, "status", "--json"))["models"][0]["versions"][0]["lock_commit"] == lock_commit
    for tag in git(project, "tag", "-l", "counter*").split():
        assert git(project, "rev-list", "-n", "1", tag) == lock_commit, tag
    auditor = tmp_path / "auditor"
    git(tmp_path, "clone", "-q", str(project), str(auditor))
    git(auditor, "checkout", "-q", "counter@v1.0.0")
    subprocess.run([sys.executable, "-m", "dvc", "cache", "dir", str(project / ".dvc" / "cache")], cwd=auditor,
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "dvc", "checkout"], cwd=auditor, check=True, capture_output=True)
    assert hashlib.sha256((auditor / "model.txt").read_bytes()).hexdigest() == version.payload["sha256"]


DIR_STAGE = "import os, yaml; n = yaml.safe_load(open('params.yaml'))['n']; os.makedirs('models', exist_ok=True); " \
    "open('models/m.bin', 'w').write('x' * n)"  # fmt: skip
DIR_TAMPER = """import yaml
lock = yaml.safe_load(open('dvc.lock'))
lock['stages']['make']['outs'][0]['md5'] = open('old.md5').read().strip()  # the first version's manifest
yaml.safe_dump(lock, open('dvc.lock', 'w'), sort_keys=False)
open('tamper.done', 'w').write('done')
"""


def test_a_directory_model_whose_lock_entry_was_rewritten_locks_nothing(tmp_path: Path) -> None:
    from conftest import tiny_pipeline

    project = tiny_pipeline(tmp_path / "project", DIR_STAGE)
    (project / "dvc.yaml").write_text(
        (project / "dvc.yaml").read_text().replace("outs: [out.txt]", "outs: [models]").replace("path: out.txt",
                                                                                                 "path: models")
    )  # fmt: skip
    commit_all(project, "a directory model")
    ok(project, "repro", "--commit")
    [first] = ledger_of(project).read(types=["model.registered"])
    assert first.payload["md5"].endswith(".dir") and len(ledger_of(project).read(types=["training.locked"])) == 1
    (project / "old.md5").write_text(first.payload["md5"])
    (project / "tamper.py").write_text(DIR_TAMPER)
    text = (project / "dvc.yaml").read_text().replace(
        "artifacts:", "  tamper:\n    cmd: python tamper.py\n    deps: [models, tamper.py]\n    outs: [tamper.done]\n"
        "artifacts:"
    )  # fmt: skip
    (project / "dvc.yaml").write_text(text)
    (project / "params.yaml").write_text("n: 7\n")
    commit_all(project, "n = 7, and a stage that rewrites the model's lock entry")

    ok(project, "repro", "--commit")

    second = ledger_of(project).read(types=["model.registered"])[-1]
    assert second.payload["version"] == "2" and second.payload["md5"] is None, "its manifest is not its bytes'"
    assert len(ledger_of(project).read(types=["training.locked"])) == 1, "version 2 is not locked"
    ok(project, "sync")
    assert len(ledger_of(project).read(types=["training.locked"])) == 1
