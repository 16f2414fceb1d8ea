"""`govern predict`: run a model version's own inference entry point, and record the batch.

A project declares how to run inference in the model artifact's `meta` in
dvc.yaml, as a command template with `{model}`, `{input}` and `{output}`:

    artifacts:
      my-model:
        path: models/model.pkl
        type: model
        meta:
          infer: python pipelines/model.py infer --model {model} --input {input} --output {output}

The template recorded with the version's training is used, and the model
file is the exact one registered: the workspace copy if its sha256 matches,
else DVC's cache, else MLflow's artifact store; its sha256 is checked.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from govern import entrypoint, sandbox, tabular
from govern.adapters import git as git_adapter
from govern.api import model_files
from govern.api.context import Project
from govern.api.results import Answered, Prediction
from govern.config import check_environment
from govern.envelope import PendingEvent
from govern.errors import GovernError, InvalidInput, MirrorError, NotFound, PolicyViolation
from govern.events import InferenceRecorded
from govern.hashing import file_sha256
from govern.readmodel import inferences as inference_reads
from govern.readmodel.deployments import production_at, require_slot
from govern.readmodel.inferences import InferenceRow
from govern.readmodel.versions import version_facts

if TYPE_CHECKING:
    pass

log = logging.getLogger("govern.server")


def predict(
    project: Project,
    input_path: Path,
    output_path: Path,
    *,
    model: str | None = None,
    version: str | None = None,
    app: str | None = None,
    env: str = "production",
    record: bool = False,
    allow_deprecated: bool = False,
    at: datetime | None = None,
    input_label: str | None = None,
    timeout: float | None = None,
    confined: bool = False,
) -> Prediction:
    """Predict with an explicit version, or with the version serving app/env now.

    The server's project acts as its principal; it passes what the upload is called as `input_label` (the record names
    it, not the server's temporary file), a `timeout` for the entry point, and `confined`: the entry point then
    runs in the jobs' sandbox, from the committed code of the checkout's HEAD (`govern.sandbox`)."""
    if (model is None) == (app is None) or (model is not None and version is None):
        raise InvalidInput("Name either MODEL VERSION or --app APP (with --env), not both and not neither")
    if not input_path.is_file():
        raise InvalidInput(f"--input {input_path} is not a file")
    if app is not None:
        check_environment(project.config, env)
        serving = production_at(project.ledger, app, env, at or project.clock())
        if serving is None:
            require_slot(project.ledger, app, env)
            raise NotFound(f"Nothing serves {app}/{env} now (it was retired): deploy a version first (`govern deploy`)")
        model, version = serving.model, serving.version
    assert model is not None and version is not None
    facts = version_facts(project.ledger, model, version)
    if facts.deprecated_seq is not None and not allow_deprecated:
        where = f", which serves {app}/{env}," if app is not None else ""
        raise PolicyViolation(
            f"Version {version} of {model}{where} is deprecated (seq {facts.deprecated_seq}): predictions with it are "
            "refused; deploy another version, or pass --allow-deprecated (the inference record says so)"
        )
    command, model_file, cleanup = _resolve(project, model, version)
    code_commit = git_adapter.state(project.root).commit
    started = time.perf_counter()
    try:
        _run_entrypoint(project, code_commit, command, model_file, input_path, output_path, timeout, confined)
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    duration = round(time.perf_counter() - started, 6)
    shape = tabular.shape(output_path)
    event = None
    if record:
        fact = InferenceRecorded(
            model=model,
            version=version,
            app=app,
            env=env if app else None,
            input_path=input_label or str(input_path),
            input_sha256=file_sha256(input_path),
            output_path=str(output_path) if input_label is None else "(returned to the caller)",
            output_sha256=file_sha256(output_path),
            rows=shape.rows if shape else None,
            duration_s=duration,
            code_commit=code_commit,
            allowed_deprecated=facts.deprecated_seq is not None,
        )
        event = project.ledger.append([PendingEvent(fact, actor=project.actor, occurred_at=project.clock())])[0]
    return Prediction(model, version, app, env if app else None, output_path, shape.rows if shape else None, event)


def _run_entrypoint(
    project: Project,
    commit: str,
    template: str,
    model_file: Path,
    input_path: Path,
    output_path: Path,
    timeout: float | None,
    confined: bool,
) -> None:
    """The CLI runs the entry point in the checkout with a scrubbed environment; the server (`confined`) runs it
    in the sandbox, from an export of the committed code at `commit`: the checkout holds the ledger, the MLflow
    store and DVC's configuration beside the code, and the record names that commit as the code that ran."""
    inputs = (model_file, input_path.resolve(), output_path.resolve())
    if not confined:
        entrypoint.run(project.root, template, *inputs, timeout, policy=sandbox.Policy.local(project.config))
        return
    policy = sandbox.Policy.server(project.config)
    sandbox.check(policy, ledger=project.ledger, cache_for=sandbox.CHECK_TTL)
    code = _code_at(project.root, commit)
    hidden = sandbox.ledger_hidden(project.ledger)
    entrypoint.run(code, template, *inputs, timeout, policy=policy, hidden=hidden)


_exports: dict[str, Path] = {}
_exports_lock = threading.Lock()


def _code_at(root: Path, commit: str) -> Path:
    """The files committed at `commit`, exported once per process (`git archive`) into a folder of their own."""
    key = hashlib.sha256(f"{root.resolve()}\0{commit}".encode()).hexdigest()[:16]
    with _exports_lock:
        found = _exports.get(key)
        if found is not None and found.is_dir():
            return found
        target = Path(tempfile.mkdtemp(prefix=f"govern-code-{commit[:12]}-"))
        os.chmod(target, 0o755)
        atexit.register(shutil.rmtree, target, True)
        command = ["git", "archive", "--format=tar", commit]  # a sha the server resolved
        archive = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE)  # noqa: S603
        assert archive.stdout is not None
        try:
            with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
                tar.extractall(target, filter=_inside)
        except tarfile.TarError as error:
            archive.kill()
            raise GovernError(f"Could not export the code of {commit[:12]} for the entry point ({error})") from None
        if archive.wait() != 0:
            raise GovernError(f"Could not export the code of {commit[:12]} for the entry point (git archive failed)")
        _exports[key] = target
        return target


def _inside(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo | None:
    """tarfile's `data` filter, skipping (not failing on) what it refuses: a committed link to an absolute path or
    out of the tree is not exported, so it cannot show the entry point anything outside its code."""
    try:
        return tarfile.data_filter(member, destination)
    except tarfile.FilterError:
        return None


def _resolve(project: Project, model: str, version: str) -> tuple[str, Path, Any]:
    """The inference command template and a verified copy of the registered model file."""
    found = inference_reads.model_file(project.ledger, model, version)
    if found is None:
        raise NotFound(f"Model {model!r} has no version {version!r}")
    path, md5, sha256, run_id = found.path, found.md5, found.sha256, found.mlflow_run_id
    trained = json.loads(found.training_payload) if found.training_payload else {}
    meta = next((m.get("meta") or {} for m in trained.get("models", []) if m.get("name") == model), {})
    command = meta.get("infer")
    if not command:
        raise InvalidInput(
            f'Model {model} declares no inference command: add meta: {{infer: "... {{model}} {{input}} {{output}}"}} '
            "to its artifact in dvc.yaml, then retrain"
        )
    local = model_files.local_copy(project.root, path, md5, sha256)
    if local is not None:
        return command, local, None
    scratch = tempfile.TemporaryDirectory(prefix="govern-model-")
    os.chmod(scratch.name, 0o755)  # a confined entry point may run as another user, and must read the model
    try:
        downloaded = model_files.from_mlflow(
            project.config.tracking_uri, run_id, model, path, md5, sha256, Path(scratch.name)
        )
    except MirrorError as error:
        scratch.cleanup()
        raise NotFound(
            f"The model file of {model} version {version} is neither in the workspace, nor in DVC's cache, nor "
            f"downloadable ({error})"
        ) from None
    except GovernError:
        scratch.cleanup()
        raise GovernError(
            f"The model file of {model} version {version} from MLflow does not match its recorded sha256"
        ) from None
    return command, downloaded, scratch


def predict_sent(
    project: Project,
    rows: bytes,
    *,
    app: str,
    env: str,
    label: str,
    timeout: float,
    as_records: bool = False,
) -> Answered:
    """Score CSV `rows` sent over HTTP with the version serving app/env now, and record the batch under the
    project's actor (the server's principal): the rows go to a scratch file, the output is read back before it is
    removed. A model that cannot score them
    is reported with an error id only: what it said (its stderr, which may hold anything: a traceback, the
    server's paths, the rows) is in the server's log under that id."""
    from govern.entrypoint import InferenceFailed, InferenceTimedOut

    with tempfile.TemporaryDirectory(prefix="govern-predict-") as scratch:
        given = Path(scratch) / "input.csv"
        given.write_bytes(rows)
        output = Path(scratch) / "predictions.csv"
        try:
            done = predict(
                project,
                given,
                output,
                app=app,
                env=env,
                record=True,
                input_label=label,
                timeout=timeout,
                confined=True,
            )
        except InferenceTimedOut:
            raise
        except InferenceFailed as failure:
            # The model's own words (its stderr, a traceback, the server's paths, whatever it printed) are the
            # administrator's: the server's log has them under an id the consumer is given instead.
            error_id = secrets.token_hex(6)
            log.warning("govern serve: predictions for %s/%s failed (error id %s): %s", app, env, error_id, failure)
            raise InferenceFailed(
                f"The model could not score these rows (error id {error_id}): give this id to your administrator"
            ) from None
        return Answered(done, output.read_bytes(), tabular.csv_records(output) if as_records else None)


INFERENCES_SHOWN = 50
INFERENCES_MAX = 1000
INFERENCE_WINDOW = 1 << 14  # seqs: the newest records are looked for in the newest events first, then 4x further


def inferences(
    project: Project,
    app: str,
    *,
    principal: str | None = None,
    env: str | None = None,
    limit: int = INFERENCES_SHOWN,
) -> list[InferenceRow]:
    """The newest `limit` inference records of `app` (in `env`), newest first; with `principal`, only the batches
    that principal asked for (through the server, under any of its tokens; or locally under that name).

    Searched from the newest events back in growing windows of seqs, so the usual question (the latest records)
    reads the ledger's last row groups, not a million events' payloads."""
    from govern.access import APP_NAME

    if not APP_NAME.match(app or ""):
        raise InvalidInput(f"{app!r} is not a valid app name: letters, digits, '.', '_' and '-'")
    if not 1 <= limit <= INFERENCES_MAX:
        raise InvalidInput(f"limit {limit}: ask for 1 to {INFERENCES_MAX} records")
    ledger = project.ledger
    if not ledger.exists():
        return []
    head = ledger.head()
    found: list[InferenceRow] = []
    with ledger.reader() as reader:
        upto, window = head[0] if head else 0, INFERENCE_WINDOW
        while upto > 0 and len(found) < limit:
            after = max(0, upto - window)
            found += inference_reads.inferences(reader, app, env, principal, after, upto, limit - len(found))
            upto, window = after, window * 4
    return found


def trained_on(project: Project, model: str, version: str) -> dict[str, Any] | None:
    """The table a version was trained on (its training's dataset of role "training") and its columns, as recorded:
    what a consumer's rows should look like (the label among them is what the model predicts, and may be left out).
    None where the training recorded no such table or no columns."""
    ledger = project.ledger
    if not ledger.exists():
        return None
    datasets = json.loads(inference_reads.trained_on(ledger, model, version) or "[]")
    table = next((d for d in datasets if d.get("role") == "training" and d.get("columns")), None)
    return {"path": table["path"], "columns": list(table["columns"])} if table else None
