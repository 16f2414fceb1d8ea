"""Lock commits (issue 26): the commit whose `dvc.lock` describes a training's outputs exactly.

A training runs at its input commit (code, params, data pointers); the lock DVC writes is committed after it,
by `govern repro --commit` or by hand (`git add dvc.lock && git commit`). Only that second commit rebuilds the
model (`git checkout` + `dvc checkout`), so it is what GTO tags, reports and lineage point auditors at. It is
found by the bytes: the sha256 of the lock files at a commit, as `repro` hashed them when it recorded the
training (`dvc_lock_sha256`). Found, it is recorded once as `training.locked`; until then the version is "not
locked" and may not enter a gated stage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from govern.adapters import git as git_adapter
from govern.api.context import Project
from govern.api.job_files import ReportRefused, read_inside
from govern.envelope import PendingEvent, RecordedEvent, utc_now
from govern.errors import GovernError
from govern.events import TrainingLocked
from govern.readmodel import trainings
from govern.readmodel.reader import Reader
from govern.readmodel.trainings import UnlockedTraining
from govern.storage import LedgerStore

SCANNED_COMMITS = 200  # commits that changed a lock file, newest first, looked through for the unlocked ones

NOT_LOCKED_HINT = (
    "commit its dvc.lock and what its stages wrote that git tracks, as `git status` lists them (in the demo `git add "
    "dvc.lock metrics.json && git commit`; a new output's .gitignore too), or run `govern repro --commit`; govern "
    "records that commit at once with `govern hooks install`, else at the next repro, promotion, sync or ci verify"
)


def lock_digest(texts: dict[str, str]) -> str:
    """The sha256 `repro` records for lock files' text (`dvc_adapter.read_locks`: each path, a newline, its text,
    in sorted order)."""
    raw = "".join(f"{path}\n{texts[path]}" for path in sorted(texts))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def find(project: Project, found_by: str, limit: int = SCANNED_COMMITS) -> list[RecordedEvent]:
    """Record `training.locked` for every training whose lock a commit of this clone now holds."""
    return find_in(project.root, project.ledger, project.actor, found_by, limit)


def find_in(
    root: Path, ledger: LedgerStore, actor: Any, found_by: str, limit: int = SCANNED_COMMITS
) -> list[RecordedEvent]:
    """`find` for a repository (a clone, or the server's bare repository) and a ledger."""
    if not ledger.exists():
        return []
    wanted, located = _locate(root, ledger, limit)
    if not located:
        return []

    def decide(reader: Reader) -> list[PendingEvent]:
        done = trainings.locked_ids(reader)
        events = []
        for digest, (sha, texts) in located.items():
            for training in wanted[digest]:
                if training.event_id in done:
                    continue
                versions = versions_of(reader, training.models)
                if versions and not_rebuilding(texts, training.models) is None:
                    events.append(_locked(actor, training.event_id, sha, digest, versions, texts, found_by))
        return events

    return ledger.transact(decide)


def _locate(
    root: Path, reader: Reader, limit: int = SCANNED_COMMITS
) -> tuple[dict[str, list[UnlockedTraining]], dict[str, tuple[str, dict[str, str]]]]:
    """The trainings not locked yet, by lock digest; and for each digest a commit of `root` holding that lock."""
    wanted: dict[str, list[UnlockedTraining]] = {}
    for row in trainings.unlocked(reader):
        wanted.setdefault(row.lock, []).append(row)
    located: dict[str, tuple[str, dict[str, str]]] = {}
    lock_files = git_adapter.tracked_named(root, "dvc.lock") if wanted else []
    if not lock_files:
        return wanted, located
    commits = git_adapter.commits_touching(root, lock_files, limit)
    texts_at = git_adapter.files_at(root, commits, lock_files)
    for sha in reversed(commits):  # oldest first: the commit that brought the lock in
        texts = texts_at.get(sha)
        digest = lock_digest(texts) if texts else None
        if digest in wanted and digest not in located:
            located[digest] = (sha, texts)
    return wanted, located


def unrecorded(root: Path, reader: Reader) -> dict[tuple[str, str], str]:
    """(model, version) -> a commit of this clone that holds the lock of a training not yet recorded as locked:
    what `status` shows as found (any write records it), without writing."""
    wanted, located = _locate(root, reader)
    found: dict[tuple[str, str], str] = {}
    for digest, (sha, texts) in located.items():
        for training in wanted[digest]:
            if not_rebuilding(texts, training.models) is None:
                for version in versions_of(reader, training.models):
                    found.setdefault((version["model"], version["version"]), sha)
    return found


def _locked(
    actor: Any,
    training_event_id: str,
    sha: str,
    digest: str,
    versions: list[dict[str, str]],
    texts: dict[str, str],
    found_by: str,
) -> PendingEvent:
    return PendingEvent(
        TrainingLocked(
            training_event_id=training_event_id,
            commit=sha,
            dvc_lock_sha256=digest,
            versions=versions,
            outputs=_outputs(texts),
            found_by=found_by,
        ),
        actor=actor,
        occurred_at=utc_now(),
        git_commit=sha,
    )


def versions_of(reader: Reader, models: Any) -> list[dict[str, str]]:
    """The registered versions a training's model files are (one artifact, one version)."""
    listed = json.loads(models) if isinstance(models, str) else (models or [])
    keys = [f"{m['name']}@{m['sha256']}" for m in listed if m.get("sha256")]
    if not keys:
        return []
    return [{"model": m, "version": v} for m, v in trainings.versions_of_files(reader, keys)]


def _outputs(texts: dict[str, str]) -> list[dict[str, Any]]:
    from govern.adapters import dvc as dvc_adapter

    found = []
    for path in sorted(texts):
        prefix = "" if Path(path).parent == Path(".") else f"{Path(path).parent.as_posix()}/"
        for entry in (dvc_adapter.parse_yaml(texts[path]) or {}).get("stages", {}).values():
            for out in entry.get("outs") or []:
                found.append({"path": prefix + str(out.get("path")), "md5": out.get("md5")})
    return found


# ---------------------------------------------------------------- a server job's lock commit

LOCK_BYTES = 16 << 20  # a dvc.lock or metrics file a job wrote, at most; more is not a lock
SERVER_NAME, SERVER_EMAIL = "govern server", "govern-server@localhost"


def commit_for_job(
    project: Project, job_id: str, training_event_id: str, checkout: Path, requested_by: str
) -> tuple[str | None, str | None]:
    """Commit the `dvc.lock` a server job wrote (and the git-tracked files its stages rewrote) onto the branch
    `jobs.lock_branch` in the server's repository, push it where the server's checkout tracks, and record
    `training.locked`: (the lock commit, None), or (None, why the versions stay not locked).

    The job's files are read as data (no link followed, a size cap) and must hash to the lock its training
    reported; the commit is built by plumbing in the server's own repository, never in the job's checkout, whose
    `.git` the job's code could have rewritten (hooks, `core.fsmonitor`)."""

    pattern = project.config.jobs_lock_branch
    if not pattern:
        return None, f"`jobs.lock_branch` is empty: {NOT_LOCKED_HINT}"
    found = trainings.lock_of_training(project.ledger, training_event_id)
    if found is None or not found.lock:
        return None, "the training reports no dvc.lock: there is nothing to commit"
    digest, models, base = found.lock, found.models, found.git_commit
    already = trainings.lock_commits_of(project.ledger, training_event_id)
    if already:
        return already[0], None
    try:
        texts = {}
        pipelines = git_adapter.tracked_named(project.root, "dvc.yaml", base)
        if len(pipelines) > MAX_RESULT_FILES:
            raise ReportRefused(f"the commit holds {len(pipelines)} dvc.yaml files, more than {MAX_RESULT_FILES}")
        read = 0
        for pipeline in pipelines:
            path = str(Path(pipeline).with_name("dvc.lock"))
            data = _job_file(checkout, path)
            if data is not None:
                read += len(data)
                if read > LOCK_BYTES:  # before any is parsed
                    raise ReportRefused(f"the lock files come to more than {LOCK_BYTES >> 20} MB in all")
                texts[path] = data.decode("utf-8")
        if lock_digest(texts) != digest:
            return None, "the job's dvc.lock is not the one its training reports: nothing was committed"
        wrong = not_rebuilding(texts, models)
        listed = json.loads(models) if isinstance(models, str) else (models or [])
        if not wrong and any(str(m.get("md5", "")).endswith(".dir") for m in listed):
            wrong = "a directory model: the server checks the bytes of model files only"
        if wrong:
            return None, f"the job's dvc.lock does not rebuild its versions ({wrong}): nothing was committed"
        if not versions_of(project.ledger, models):
            return None, "the training registered no version: there is nothing to lock"
        files = {path: text.encode("utf-8") for path, text in texts.items()}
        declared = _declared_results(project.root, base)
        wanted = [o["path"] for o in _outputs(texts) if o["path"] in declared]
        tracked = git_adapter.blob_hashes(project.root, base, wanted)
        total = sum(len(data) for data in files.values())
        for path in [p for p in wanted if p in tracked][:MAX_RESULT_FILES]:  # exact files, not a folder's
            data = _job_file(checkout, path)
            if data is not None:
                files[path] = data
                total += len(data)
        if total > LOCK_BYTES:
            raise ReportRefused(f"the lock files and results come to more than {LOCK_BYTES >> 20} MB in all")
    except (ReportRefused, UnicodeDecodeError, ValueError) as refused:
        return None, f"the job's dvc.lock could not be read: {refused}"
    branch = pattern.replace("{job}", job_id)
    if not git_adapter.valid_branch(project.root, branch):
        return None, f"`jobs.lock_branch` gives {branch!r}, which is not a branch name git accepts"
    message = (
        f"govern: dvc.lock of training job {job_id}\n\nTrained at {base} for {requested_by}; the lock describes the "
        f"outputs of training {training_event_id}.\n"
    )
    try:
        sha = git_adapter.commit_onto(project.root, base, files, branch, message, SERVER_NAME, SERVER_EMAIL)
    except GovernError as error:
        return None, f"the lock could not be committed: {error}"
    remote = git_adapter.tracking_remote(project.root)
    if remote is not None:
        refused = git_adapter.push_branch(project.root, remote, branch)
        if refused is not None:
            return None, f"{refused}; the commit {sha[:12]} stays on branch {branch} of the server's repository"

    def decide(reader: Reader) -> list[PendingEvent]:
        if trainings.lock_commits_of(reader, training_event_id):
            return []
        versions = versions_of(reader, models)
        if not versions:
            return []
        return [_locked(project.actor, training_event_id, sha, digest, versions, texts, f"job {job_id}")]

    project.ledger.transact(decide)
    return sha, None


MAX_RESULT_FILES = 64


def not_rebuilding(texts: dict[str, str], models: Any) -> str | None:
    """Why the lock at `texts` would not rebuild the training's model files (an `outs` entry of each model's path
    with the model's md5, and no other), or None when it would."""
    listed = json.loads(models) if isinstance(models, str) else (models or [])
    outs: dict[str, set[str | None]] = {}
    for out in _outputs(texts):
        outs.setdefault(out["path"], set()).add(out["md5"])
    for model in listed:
        if not model.get("md5"):
            return f"no md5 of {model['path']} is recorded (a file inside a directory output?)"
        if outs.get(model["path"]) != {model["md5"]}:
            return f"it gives {model['path']} md5 {', '.join(sorted(map(str, outs.get(model['path'], {None}))))}"
    return None


TOOL_MANIFESTS = {"package.json", "package-lock.json", "composer.json", "tsconfig.json", "renovate.json",
                  "deno.json", "bower.json", "app.json", "vercel.json", "netlify.json", "firebase.json"}  # fmt: skip


def _declared_results(root: Path, base: str) -> set[str]:
    """What a job's lock commit takes besides the lock: the JSON files dvc.yaml files at `base` declare as `metrics`,
    literally, that no stage reads and no tool takes for its manifest. Never code, never a file that steers git, CI
    or DVC: the insider review declared `make.py`, `Jenkinsfile`, `CODEOWNERS`, then `package.json` and a metrics
    file another stage executes (`deps: [./m.json]`) as outputs, and had a stage rewrite them. Plots, templated
    names (foreach, matrix, ${...}) and other formats are left for the team to commit."""
    import posixpath

    from govern.adapters import dvc as dvc_adapter

    pipelines = git_adapter.tracked_named(root, "dvc.yaml", base)
    declared: set[str] = set()
    read: set[str] = set()
    for path, text in git_adapter.files_at(root, [base], pipelines).get(base, {}).items():
        folder = Path(path).parent.as_posix()
        stages = (dvc_adapter.parse_yaml(text) or {}).get("stages") or {}
        for stage in stages.values() if isinstance(stages, dict) else []:
            if not isinstance(stage, dict):
                continue
            for kind in ("metrics", "deps", "params", "outs", "plots"):
                for item in stage.get(kind) or []:
                    name = item if isinstance(item, str) else next(iter(item), None) if isinstance(item, dict) else None
                    if not isinstance(name, str):
                        continue
                    where = posixpath.normpath(posixpath.join(folder, name))  # ./m.json, sub/../m.json: one file
                    if kind == "metrics" and "${" not in name and _plain(where):
                        declared.add(where)
                    elif kind in ("deps", "params"):
                        read.add(where)
    return {
        p
        for p in declared - read
        if p.lower().endswith(".json") and Path(p).name.lower() not in TOOL_MANIFESTS and not _controls_tools(p)
    }


def _plain(path: str) -> bool:
    parts = Path(path).parts
    return bool(parts) and not path.startswith(("/", ":")) and ".." not in parts and "*" not in path


def _controls_tools(path: str) -> bool:
    """A path that steers git, CI or DVC rather than holding a stage's result (`.github/`, `.gitattributes`,
    `.dvc/config`, `dvc.yaml`, ...): never committed from a job's checkout, whatever its lock lists as outputs."""
    parts = Path(path).parts
    return any(part.startswith(".") for part in parts) or parts[-1] in ("dvc.yaml", "dvc.lock")


def _job_file(checkout: Path, path: str) -> bytes | None:
    """A file of a job's checkout, read without following links, at most LOCK_BYTES; None when it is absent."""
    data = read_inside(checkout, path, LOCK_BYTES)
    if data is not None and len(data) > LOCK_BYTES:
        raise ReportRefused(f"{path} is larger than {LOCK_BYTES >> 20} MB")
    return data
