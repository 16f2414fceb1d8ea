"""The `govern` command line: parse, call one api function, print. The only click importer.

Every `GovernError` becomes one line on stderr and a non-zero exit code here,
in one place; `--traceback` shows the whole story instead. Modules behind the
commands are imported inside them, so `govern --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from govern import __version__
from govern.errors import GovernError


def _quiet_third_parties() -> None:
    """No analytics or telemetry from govern's own processes, unless the user asks for it."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class GovernGroup(click.Group):
    """Turns failures into one clear line; `--traceback` re-raises them."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GovernError as error:
            if _wants_traceback(ctx):
                raise
            click.echo(f"Error: {error}", err=True)
            ctx.exit(error.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # `govern audit log | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            ctx.exit(141)  # as a process ended by SIGPIPE
        except Exception as error:  # noqa: BLE001 - the last line of defence for the user
            if _wants_traceback(ctx):
                raise
            message = " ".join(str(error).split()) or type(error).__name__
            click.echo(
                f"Error: unexpected {type(error).__name__}: {message} (run with --traceback for details)", err=True
            )
            ctx.exit(1)


PROJECT_FILES = frozenset(
    {"pyproject.toml", "govern.toml", "dvc.yaml", "dvc.lock", "params.yaml", ".gitignore", ".dvcignore"}
)
PROJECT_FOLDERS = (".git", ".dvc", "audit/queries")


def _output_path(path: Path, option: str, inputs: tuple[Path, ...] = ()) -> Path:
    """Every file govern writes on request: missing folders are created, and a path that cannot be written, or
    must not be (the ledger, the command's own input), is refused before any work is done."""
    from govern.config import configured_ledger, find_root
    from govern.errors import GovernError, InvalidInput

    target = path.resolve()
    existing = next((folder for folder in target.parents if folder.is_dir()), None)
    for start in dict.fromkeys([None, existing]):  # the project here, and the one the target lies in (remote CLI)
        try:
            root: Path | None = find_root(start).resolve()
        except GovernError:
            continue
        try:
            found = configured_ledger(root)
            ledger: Path | None = found if isinstance(found, Path) else None
        except GovernError:
            ledger = None
        if ledger is not None and (target == ledger or target.name.startswith(ledger.name + ".")):
            if target.parent == ledger.parent.resolve():
                raise InvalidInput(f"{option} {path} is the ledger itself (or its log or backup): choose another path")
        if root is not None and (
            (target.parent == root and target.name in PROJECT_FILES)
            or any(target.is_relative_to(root / folder) for folder in PROJECT_FOLDERS)
        ):
            raise InvalidInput(
                f"{option} {path} is one of the files this project is governed by (configuration, pipeline, git or "
                "DVC metadata, reviewed queries): choose another path"
            )
    if target.suffix == ".wal":
        raise InvalidInput(f"{option} {path} is a database's write-ahead log: choose another path")
    if any(target == source.resolve() for source in inputs):
        raise InvalidInput(f"{option} {path} is also the input: choose another path")
    if path.is_dir():
        raise InvalidInput(f"{option} {path} is a directory: give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = f"{blocking} is a file, not a folder" if blocking else error.strerror
        raise InvalidInput(f"{option} {path}: cannot create its folder ({reason}); choose another path") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InvalidInput(f"{option} {path} is not writable: choose another path")
    return path


def _wants_traceback(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("traceback")) or "--traceback" in sys.argv


def _jsonable(value: Any) -> Any:
    from govern.presentation import jsonable

    return jsonable(value)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(_jsonable(value), indent=2, ensure_ascii=False, sort_keys=False))


def _print_table(columns: list[str], rows: list[Any]) -> None:
    """A plain aligned table; cells as they print in JSON, null as '-'."""
    cells = [[("-" if v is None else str(v)) for v in _jsonable(list(row))] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _report(outcome: Any) -> None:
    for event in outcome.events:
        click.echo(f"recorded seq {event.seq:>4}  {event.type:<20} {event.subject}")
    for tag in getattr(outcome, "tags", []):
        click.echo(f"tagged {tag}")
    for warning in getattr(outcome, "warnings", []):
        click.echo(_warning_line(warning), err=True)


def _warning_line(message: str) -> str:
    from govern.errors import Note

    return message if isinstance(message, Note) else f"Warning: {message}"


def _progress(message: str) -> None:
    click.echo(message, err=True)


_WARNED_TOKEN_ALONE = False


def _remote() -> bool:
    """GOVERN_URL names a `govern serve`: commands that work on the ledger ask it instead (govern.client). So does a
    token in a project whose configuration declares its server (`[tool.govern.server] url`): a team's people hold
    tokens, not the ledger's credentials. A token with no server to send it to is said once: the command works on
    the local ledger, under the git identity, not the token's."""
    global _WARNED_TOKEN_ALONE
    remote = bool(os.environ.get("GOVERN_URL"))
    if not remote and os.environ.get("GOVERN_TOKEN"):
        declared = _declared_server()
        if declared:
            os.environ["GOVERN_URL"] = declared
            return True
    if not remote and os.environ.get("GOVERN_TOKEN") and not _WARNED_TOKEN_ALONE:
        _WARNED_TOKEN_ALONE = True
        click.echo(
            "govern: warning: GOVERN_TOKEN is set but GOVERN_URL is not: working on the local ledger as your git "
            "identity; set GOVERN_URL to act through the server",
            err=True,
        )
    return remote


def _declared_server() -> str | None:
    """The server the project around the current directory declares, if any (a broken configuration: none here;
    the command itself will say what is wrong with it)."""
    from govern import config
    from govern.errors import GovernError

    try:
        return config.load(config.find_root()).server_url
    except GovernError:
        return None


def _use(module: str, name: str) -> Any:
    """The use case `govern.api.MODULE.NAME`, or its twin in `govern.client` when GOVERN_URL names a server."""
    import importlib

    if _remote():
        from govern import client

        return getattr(client, name)
    return getattr(importlib.import_module(f"govern.api.{module}"), name)


def _ledger() -> Any:
    """The local ledger for a read use case; None when a server answers instead (its twin ignores it)."""
    if _remote():
        return None
    from govern.api.audit import open_ledger

    return open_ledger()


def _local_only(command: str) -> None:
    """A command that works on the project itself (its checkout, its ledger file) has no remote form."""
    if _remote():
        from govern.errors import InvalidInput

        raise InvalidInput(
            f"`govern {command}` runs where the project is, and has no server form: unset GOVERN_URL to run it here"
        )


def _instant(value: str | None, option: str) -> Any:
    from govern.timeparse import parse_instant

    return parse_instant(value, option) if value is not None else None


@click.group(cls=GovernGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="govern")
@click.option("--traceback", is_flag=True, help="On an error, show the full Python traceback instead of one line.")
def cli(traceback: bool) -> None:
    """Git-driven, event-sourced governance for machine-learning models.

    Reproduce the DVC pipeline, mirror each run into MLflow, and record every
    fact in an append-only, hash-chained ledger that auditors can query.
    """
    _quiet_third_parties()


def _print_grants(statements: list[str]) -> None:
    click.echo("As a superuser (or a role with CREATEROLE), give govern's writers a role that may only INSERT")
    click.echo("and SELECT, and auditors one that may only SELECT (replace the passwords):")
    for statement in statements:
        click.echo(f"  {statement}")


@cli.command()
@click.option(
    "--ledger",
    "ledger_url",
    metavar="URL",
    help="A team ledger in PostgreSQL (postgresql://USER@HOST/DB): create its schema and print the GRANTs to run.",
)
@click.option("--writer-role", metavar="NAME", help="With --ledger: the writers' role (govern_writer).")
@click.option(
    "--auditor-role", metavar="NAME", help="With --ledger: the auditors' role in the GRANTs (govern_auditor)."
)
def init(ledger_url: str | None, writer_role: str | None, auditor_role: str | None) -> None:
    """Make this git repository a governed project (idempotent).

    Writes the govern configuration ([tool.govern] in pyproject.toml, or
    govern.toml), creates audit/, adds the ledger and the local MLflow store
    to .gitignore, and runs `dvc init` when needed. With --ledger, the
    PostgreSQL ledger's schema is created too (run it as the database owner),
    and a new configuration points at it.
    """
    _local_only("init")
    from govern.api.project import init_project, init_team_ledger

    if ledger_url is None and (writer_role or auditor_role):
        raise click.UsageError(
            "--writer-role and --auditor-role name the roles of a PostgreSQL ledger: add --ledger URL"
        )
    if ledger_url is not None:
        created = init_team_ledger(ledger_url, writer_role, auditor_role)
        click.echo(f"govern's schema is ready in {created.location} (schema version {created.schema_version}).")
        _print_grants(created.grants)
    result = init_project(ledger=created.writer_url if ledger_url is not None else None)
    if ledger_url is not None:
        from govern.config import configured_ledger

        if configured_ledger(result.root) != created.writer_url:
            click.echo(
                f'To use it, set ledger = "{created.writer_url}" in {result.config_file} (or GOVERN_LEDGER); '
                "the password goes in PGPASSWORD or ~/.pgpass"
            )
    if result.already_initialized:
        click.echo(f"{result.root} is already governed (configuration: {result.config_file}).")
        return
    for path in result.changed:
        click.echo(f"wrote {path}")
    if result.dvc_initialized:
        click.echo("initialised DVC (.dvc/)")
    click.echo(f"Governed project ready (configuration: {result.config_file}).")
    if result.to_commit:
        paths = " ".join(result.to_commit)
        click.echo(
            f"Next: commit it, so that trainings point at a commit: git add {paths} && git commit -m 'govern init'"
        )
        click.echo("Then: govern repro")
    else:
        click.echo("Next: govern repro")


@cli.command()
@click.argument("stages", nargs=-1)
@click.option("--allow-dirty", is_flag=True, help="Run despite uncommitted changes; the event records it.")
@click.option("--commit", "commit_lock", is_flag=True, help="Commit the updated dvc.lock afterwards.")
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2", help="Grid search over these values (repeatable).")
@click.option("--metric", help="With --grid: the metric that selects the best (default: config selection.metric).")
@click.option(
    "--direction", type=click.Choice(["maximize", "minimize"]), help="With --grid: better is higher or lower."
)
@click.option("--apply-best", is_flag=True, help="With --grid: write the winning values into the params file.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--facts-out", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
@click.option("--known-snapshots", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
def repro(
    stages: tuple[str, ...],
    allow_dirty: bool,
    commit_lock: bool,
    grid: tuple[str, ...],
    metric: str | None,
    direction: str | None,
    apply_best: bool,
    as_json: bool,
    facts_out: Path | None,
    known_snapshots: Path | None,
) -> None:
    """Reproduce the DVC pipeline (or STAGES), mirror it into MLflow, record it.

    A dirty worktree is refused unless --allow-dirty. Running again with
    nothing changed records nothing. With --grid, every combination runs as a
    child MLflow run, the best by --metric is selected and registered, and
    the worktree is left as it was (unless --apply-best).
    """
    from govern.api.repro import repro as run_repro
    from govern.errors import InvalidInput

    def progress(kind: str, stage: str, run: Any) -> None:
        if kind == "start":
            click.echo(f"[{stage}] checking", err=True)
        else:
            click.echo(f"[{stage}] {run.status} ({run.duration_s:.2f} s)", err=True)

    if grid:
        _local_only("repro --grid")
        if stages or commit_lock:
            raise InvalidInput(
                "--grid runs the whole pipeline and leaves the worktree as it was: drop STAGES and --commit"
            )
        _grid(grid, metric, direction, apply_best, allow_dirty, as_json, progress)
        return
    if metric or direction or apply_best:
        raise InvalidInput("--metric, --direction and --apply-best go with --grid")
    if facts_out is not None or known_snapshots is not None:
        _local_only("repro --facts-out")
        _report_facts(stages, facts_out, known_snapshots, allow_dirty or commit_lock, as_json, progress)
        return
    if _remote():
        if allow_dirty:
            raise InvalidInput(
                "--allow-dirty is not offered through a server: a training it records names a commit an auditor can "
                "check out; commit (and push) your changes first"
            )
        from govern import client

        outcome = client.repro(stages, commit_lock=commit_lock, on_progress=progress)
    else:
        outcome = run_repro(stages, allow_dirty=allow_dirty, commit=commit_lock, on_progress=progress)
    if as_json:
        _print_json(outcome.to_dict())
    elif outcome.status == "up-to-date":
        click.echo(
            f"Nothing changed: the pipeline is up to date and already recorded (training seq {outcome.existing_seq})."
        )
    else:
        for event in outcome.events:
            click.echo(f"recorded seq {event.seq:>4}  {event.type:<20} {event.subject}")
        training = outcome.training
        mlflow_facts = training.payload.get("mlflow", {}) if training else {}
        if mlflow_facts.get("run_id"):
            click.echo(f"MLflow run {mlflow_facts['run_id']} in experiment {mlflow_facts['experiment']!r}")
        for reused in outcome.reused_versions:
            click.echo(
                f"{reused['model']}: the same file (sha256) is version {reused['version']} already; "
                "not registered again (one artifact, one version)"
            )
    if outcome.committed:
        click.echo(f"committed dvc.lock as {outcome.committed[:12]}")
    for warning in outcome.warnings:
        click.echo(f"Note: {warning}", err=True)
    if outcome.mirror_error:
        click.echo(
            f"Warning: the training is recorded, its MLflow mirror is pending ({outcome.mirror_error}); "
            "`govern mirror` retries it, and so does every later govern write",
            err=True,
        )


def _report_facts(
    stages: tuple[str, ...],
    facts_out: Path | None,
    known_snapshots: Path | None,
    local_options: bool,
    as_json: bool,
    progress: Any,
) -> None:
    """A training job's mode (hidden): reproduce, write the facts to --facts-out for the server to record."""
    from govern.api.repro import report_facts
    from govern.errors import InvalidInput

    if facts_out is None or local_options:
        raise InvalidInput("--facts-out FILE reports a clean checkout's facts: drop --allow-dirty and --commit")
    reported = report_facts(stages, facts_out, known_snapshots, on_progress=progress)
    if as_json:
        _print_json(reported.to_dict())
    else:
        click.echo(f"reported {len(reported.events)} fact(s) in {facts_out}: the server records them")


def _grid(
    grid: tuple[str, ...],
    metric: str | None,
    direction: str | None,
    apply_best: bool,
    allow_dirty: bool,
    as_json: bool,
    progress: Any,
) -> None:
    from govern.api.grid import grid_search

    def announce(index: int, size: int, combination: dict[str, Any]) -> None:
        shown = ", ".join(f"{k}={v}" for k, v in combination.items())
        click.echo(f"== combination {index + 1}/{size}: {shown}", err=True)

    outcome = grid_search(
        grid,
        metric=metric,
        direction=direction,
        apply_best=apply_best,
        allow_dirty=allow_dirty,
        on_progress=progress,
        on_combination=announce,
    )
    if as_json:
        _print_json(outcome.to_dict())
    else:
        for training in outcome.trainings:
            params = ", ".join(f"{k}={v}" for k, v in training.payload["grid"]["params"].items())
            click.echo(f"recorded seq {training.seq:>4}  training.completed   {params}")
        winner = ", ".join(f"{k}={v}" for k, v in outcome.winner["params"].items())
        metric_name = outcome.selection.payload["metric"]
        best = f"best {winner} ({metric_name} = {outcome.winner['value']})"
        click.echo(f"recorded seq {outcome.selection.seq:>4}  experiment.selected  {best}")
        for event in outcome.registrations:
            click.echo(f"recorded seq {event.seq:>4}  {event.type:<20} {event.subject}")
        if outcome.applied:
            click.echo("wrote the winning values into the params file: review and commit them")
    for warning in outcome.warnings:
        click.echo(_warning_line(warning), err=True)


@cli.command()
@click.argument("model")
@click.argument("version")
@click.option("--to", "to_stage", required=True, help="The stage to move the version to, e.g. production.")
@click.option("--reason", required=True, help="Why, for the record.")
@click.option("--approver", help="Who approved it (default: you). With the four-eyes rule, not the trainer.")
@click.option("--force", is_flag=True, help="Allow skipping or going back through stages; the event records it.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded events as JSON on stdout.")
def promote(
    model: str, version: str, to_stage: str, reason: str, approver: str | None, force: bool, as_json: bool
) -> None:
    """Promote MODEL VERSION to a stage, with a reason and an approver.

    Stages are passed in their configured order unless --force. Appends
    model.promoted, sets the MLflow alias named after the stage and writes a
    GTO tag (MODEL#STAGE#N).
    """
    run = _use("lifecycle", "promote")

    outcome = run(model, version, to_stage, reason, approver=approver, force=force, on_progress=_progress)
    _print_json(outcome.to_dict()) if as_json else _report(outcome)


@cli.command("request-promotion")
@click.argument("model")
@click.argument("version")
@click.option("--to", "to_stage", required=True, help="The stage asked for, e.g. production.")
@click.option("--reason", required=True, help="Why, for the approver and the record.")
@click.option("--force", is_flag=True, help="Ask for a promotion out of the stages' order (team mode: an admin's).")
@click.option("--json", "as_json", is_flag=True, help="Print the request as JSON on stdout.")
def request_promotion(model: str, version: str, to_stage: str, reason: str, force: bool, as_json: bool) -> None:
    """Ask for MODEL VERSION to enter a stage; an approver who neither asked nor trained it decides.

    The same checks as `govern promote` run now and again at approval; the
    declared gates' findings are recorded with the request as evidence.
    """
    run = _use("approvals", "request_promotion")

    requested = run(model, version, to_stage, reason, force=force)
    if as_json:
        _print_json(requested.to_dict())
        return
    click.echo(
        f"recorded seq {requested.event.seq}: request {requested.request_id} asks for {model} {version} "
        f"to enter {to_stage}"
    )
    for finding in requested.event.payload["evidence"]["gates"]:
        click.echo(f"  gate {finding['gate']}: {'passes' if finding['passed'] else 'FAILS'} ({finding['seen']})")
    click.echo(f"An approver decides it: govern approve {requested.request_id} --reason ...", err=True)


@cli.command()
@click.argument("request")
@click.option("--reason", required=True, help="Why, for the record.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded events as JSON on stdout.")
def approve(request: str, reason: str, as_json: bool) -> None:
    """Approve promotion REQUEST (its number): the promotion is recorded, tagged and mirrored.

    Refused to whoever asked and to whoever trained the version (the four-eyes
    rule, by identity), and where a declared gate of the stage fails.
    """
    run = _use("approvals", "approve")

    outcome = run(request, reason, on_progress=_progress)
    _print_json(outcome.to_dict()) if as_json else _report(outcome)


@cli.command()
@click.argument("request")
@click.option("--reason", required=True, help="Why, for the record.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON on stdout.")
def reject(request: str, reason: str, as_json: bool) -> None:
    """Reject promotion REQUEST (its number), or withdraw your own: the version keeps its stage."""
    run = _use("approvals", "reject")

    event = run(request, reason)
    if as_json:
        _print_json(event.to_dict())
    else:
        click.echo(f"recorded seq {event.seq}: request {event.payload['request_seq']} is rejected")


@cli.command()
@click.option("--state", default="pending", show_default=True, help="pending, approved, rejected, or all.")
@click.option("--model", help="Only this model's requests.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def requests(state: str, model: str | None, as_json: bool) -> None:
    """Promotion requests, oldest first: the approvers' queue (pending) or the record of decisions."""
    rows = _use("approvals", "requests")(_ledger(), None if state == "all" else state, model)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo(f"No {'' if state == 'all' else state + ' '}promotion request (govern request-promotion).", err=True)
        return
    _print_table(
        ["request", "state", "model", "version", "to_stage", "requested_by", "reason", "gates", "decided_by"],
        [
            [
                r["request_seq"],
                r["state"],
                r["model"],
                r["version"],
                r["to_stage"],
                r["requested_by"],
                r["reason"],
                _gates_cell(r["evidence"].get("gates", [])),
                r["decided_by"],
            ]
            for r in rows
        ],
    )


def _gates_cell(findings: list[dict[str, Any]]) -> str | None:
    if not findings:
        return None
    failed = sum(1 for f in findings if not f["passed"])
    return f"{len(findings) - failed}/{len(findings)} pass"


@cli.command()
@click.argument("model")
@click.argument("version")
@click.option("--reason", required=True, help="Why, for the record.")
@click.option("--force", is_flag=True, help="Deprecate a version that still serves an app; the event records it.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON on stdout.")
def deprecate(model: str, version: str, reason: str, force: bool, as_json: bool) -> None:
    """Deprecate MODEL VERSION: it can no longer be promoted, deployed or used for predictions.

    Refused while the version serves an app (the message lists where) unless
    --force. Appends model.deprecated, removes its MLflow aliases and writes
    GTO's deregistration tag (MODEL@vN.0.0!).
    """
    run = _use("lifecycle", "deprecate")

    outcome = run(model, version, reason, force=force, on_progress=_progress)
    _print_json(outcome.to_dict()) if as_json else _report(outcome)


@cli.command()
@click.argument("model")
@click.argument("version")
@click.option("--app", required=True, help="The application the version serves.")
@click.option("--env", default="production", show_default=True, help="The environment.")
@click.option("--at", "at", help="When it started serving (ISO 8601 with Z or an offset; default now).")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded events as JSON on stdout.")
def deploy(model: str, version: str, app: str, env: str, at: str | None, as_json: bool) -> None:
    """Record that MODEL VERSION serves APP in ENV from a time on.

    The version must hold the stage the environment requires (production
    needs production). A version already serving the slot is ended at the
    same instant.
    """
    run = _use("lifecycle", "deploy")

    outcome = run(model, version, app=app, env=env, at=_instant(at, "--at"))
    _print_json(outcome.to_dict()) if as_json else _report(outcome)


@cli.command()
@click.option("--app", required=True, help="The application.")
@click.option("--env", default="production", show_default=True, help="The environment.")
@click.option("--at", "at", help="When it stopped serving (ISO 8601 with Z or an offset; default now).")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON on stdout.")
def retire(app: str, env: str, at: str | None, as_json: bool) -> None:
    """Record that APP in ENV is no longer served by its model version."""
    run = _use("lifecycle", "retire")

    outcome = run(app=app, env=env, at=_instant(at, "--at"))
    _print_json(outcome.to_dict()) if as_json else _report(outcome)


@cli.command()
@click.argument("model", required=False)
@click.argument("version", required=False)
@click.option("--app", help="Use the version serving this application now, instead of MODEL VERSION.")
@click.option("--env", default="production", show_default=True, help="The environment of --app.")
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path), help="Input CSV.")
@click.option("--output", "output_path", required=True, type=click.Path(path_type=Path), help="Predictions CSV.")
@click.option("--record", is_flag=True, help="Append one inference.recorded event for this batch.")
@click.option(
    "--allow-deprecated", is_flag=True, help="Predict with a deprecated version anyway; the inference event says so."
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
def predict(
    model: str | None,
    version: str | None,
    app: str | None,
    env: str,
    input_path: Path,
    output_path: Path,
    record: bool,
    allow_deprecated: bool,
    as_json: bool,
) -> None:
    """Predict with MODEL VERSION, or with the version serving --app now.

    Runs the model's own inference command (the `infer` entry of its
    artifact's meta in dvc.yaml) on the exact registered model file.
    """
    run = _use("predict", "predict")

    _output_path(output_path, "--output", (input_path,))
    result = run(
        input_path,
        output_path,
        model=model,
        version=version,
        app=app,
        env=env,
        record=record,
        allow_deprecated=allow_deprecated,
    )
    if as_json:
        _print_json(result.to_dict())
        return
    click.echo(f"wrote {result.rows} predictions of {result.model} version {result.version} to {result.output}")
    if result.event is not None:
        click.echo(f"recorded seq {result.event.seq:>4}  {result.event.type:<20} {result.event.subject}")


@cli.group()
def audit() -> None:
    """Ask the ledger: events, integrity, production windows, history, SQL."""


@audit.command("log")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable), e.g. training.completed.")
@click.option("--since", help="Only events that occurred at or after this ISO 8601 time (with Z or an offset).")
@click.option("-n", "--limit", type=click.IntRange(min=0), help="Only the newest N events.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array on stdout.")
def audit_log(types: tuple[str, ...], since: str | None, limit: int | None, as_json: bool) -> None:
    """List recorded events, oldest first."""
    read_log = _use("audit", "audit_log")
    from govern.timeparse import display

    events = read_log(types=types, since=_instant(since, "--since"), limit=limit)
    if as_json:
        _print_json([event.to_dict() for event in events])
        return
    if not events:
        what = "No events" + (f" of type {', '.join(types)}" if types else "")
        if since:
            what += f" since {since}"
        elif limit != 0:
            what += " yet"
        click.echo(f"{what}.", err=True)
        return
    for event in events:
        click.echo(
            f"{event.seq:>6}  {display(event.occurred_at)}  {event.type:<20}  {event.subject}  by {event.actor_shown}"
        )


@audit.command("verify")
@click.option(
    "--repo",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="The git repository whose anchors to check (default: the one around the current directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object on stdout.")
def audit_verify(repo: Path | None, as_json: bool) -> None:
    """Recompute every hash and link of the ledger's chain, and check it against every anchor in git.

    Exits 1 on the first bad event, or on an anchor the ledger no longer matches. Outside a repository
    (GOVERN_LEDGER alone) it says that the anchors were not checked; --repo PATH checks them.
    """
    result = _use("integrity", "verify")(repository=repo)
    chain = result.chain
    if as_json:
        _print_json(result.to_dict())
    elif result.ok:
        if not result.anchors_checked:
            anchored = "; anchors NOT checked: no git repository here (run it in the project, or pass --repo PATH)"
        elif result.anchors:
            anchored = f"; {len(result.anchors)} anchor(s) match, latest at seq {result.anchors[-1].seq}"
        else:
            anchored = f"; no anchors in {result.repository} (`govern audit anchor` makes one)"
        click.echo(f"OK: {chain.count} events, head hash {chain.head_hash}{anchored}")
        if result.attestations is not None:
            click.echo(f"OK: {_attested(result.attestations)}")
    else:
        if not chain.ok:
            click.echo(f"FAILED: {chain.problem} ({chain.count} events)", err=True)
        for problem in result.problems:
            click.echo(f"FAILED: anchor {problem}", err=True)
        found = result.attestations
        if found is not None and not found.ok:
            for problem in found.problems:
                click.echo(f"FAILED: attestation {problem}", err=True)
            if found.problem_count > len(found.problems):
                click.echo(f"FAILED: and {found.problem_count - len(found.problems)} more attestation(s)", err=True)
    if not result.ok:
        sys.exit(1)


def _attested(found: Any) -> str:
    """One line on who the ledger says acted, and how sure it is."""
    keys = [key for key in found.keys if key.trusted]
    signed = f" (signed by {len(keys)} trusted key(s): {', '.join(k.fingerprint for k in keys)})" if keys else ""
    parts = [
        f"{found.authenticated} event(s) authenticated by govern serve{signed}",
        f"{found.self_asserted} self-asserted",
    ]
    if found.unrecorded:
        parts.append(f"{found.unrecorded} without a recorded identity source (written before attestations)")
    return ", ".join(parts)


@audit.command("backup")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the backup's verification as JSON on stdout.")
def audit_backup(path: Path, as_json: bool) -> None:
    """Write a consistent, self-contained copy of the ledger to PATH (a new file), and verify it.

    Safe while other govern commands run. Copying the .duckdb file alone would miss the newest events,
    which live in DuckDB's write-ahead log beside it. Check it any time with
    GOVERN_LEDGER=PATH govern audit verify.
    """
    _local_only("audit backup")
    from govern.api.audit import open_ledger
    from govern.errors import InvalidInput

    if path.exists():
        raise InvalidInput(f"{path} exists: a backup goes to a new file; choose another name")
    stale_log = path.with_name(path.name + ".wal")
    if stale_log.exists():
        raise InvalidInput(
            f"{stale_log} exists: DuckDB would replay that log onto the backup {path.name}; move it away or "
            "choose another name"
        )
    _output_path(path, "PATH")
    result = open_ledger().backup(path)
    if as_json:
        _print_json({"path": str(path), **result.to_dict()})
    else:
        click.echo(f"backed up {result.count} events (head hash {result.head_hash}) to {path}")
    if not result.ok:
        click.echo(f"FAILED: the backup does not verify: {result.problem}", err=True)
        sys.exit(1)


@audit.command("copy")
@click.option(
    "--to", "target", required=True, metavar="PATH|URL", help="A new DuckDB file, or an empty PostgreSQL ledger."
)
@click.option("--json", "as_json", is_flag=True, help="Print the copy's verification as JSON on stdout.")
def audit_copy(target: str, as_json: bool) -> None:
    """Copy every event of the ledger to another backend, verifying each batch as it lands.

    Moves a ledger from the DuckDB file to PostgreSQL (`--to postgresql://...`) or back (`--to PATH`), byte for
    byte: the same events, hashes and head, so anchors made before the move still match. The target is new, empty,
    or an earlier copy of this ledger (the copy resumes after its head); one holding other events is refused. The
    source is never changed.
    """
    _local_only("audit copy")
    from govern.api.audit import copy_to

    if "://" not in target:
        _output_path(Path(target), "--to")
    result = copy_to(target)
    if as_json:
        _print_json(result.to_dict())
    else:
        count, added = result.verification.count, result.added
        what = f"copied {added} events" if added == count else f"copied {added} new events ({count} in all)"
        what = f"{what} to {result.location}"
        if not added:
            what = f"nothing to copy: {result.location} already holds all {count} events"
        click.echo(f"{what}; the copy verifies (head hash {result.verification.head_hash})")
        if result.grants:
            click.echo("govern's schema was created there.")
            _print_grants(result.grants)
    if not result.ok:
        click.echo(f"FAILED: the copy does not verify: {result.verification.problem}", err=True)
        sys.exit(1)


@audit.command("anchor")
@click.option("--json", "as_json", is_flag=True, help="Print the anchor event as JSON on stdout.")
def audit_anchor(as_json: bool) -> None:
    """Record the ledger head outside the ledger, as an annotated git tag govern-anchor/SEQ.

    Appends ledger.anchored and tags HEAD with that event's seq and hash, so
    the anchor covers its own event. Push it: git push --tags.
    """
    event = _use("integrity", "anchor")()
    if as_json:
        _print_json(event.to_dict())
    else:
        click.echo(f"anchored seq {event.seq} (hash {event.hash}) as tag govern-anchor/{event.seq}")


@audit.command("production")
@click.option("--app", required=True, help="The application.")
@click.option("--env", default="production", show_default=True, help="The environment.")
@click.option("--at", "at", required=True, help="The instant (ISO 8601 with Z or an offset).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object on stdout.")
def audit_production(app: str, env: str, at: str, as_json: bool) -> None:
    """Which model version served APP in ENV at an instant.

    Windows are half-open: at a window's exact end the version no longer
    serves (its successor, if any, does).
    """
    production_answer = _use("audit", "production_answer")

    moment = _instant(at, "--at")
    answer = production_answer(app, env, moment)
    if as_json:
        _print_json(answer)
    elif answer["version"] is None:
        click.echo(f"Nothing deployed to {app}/{env} at {_jsonable(moment)}.")
    else:
        end = _jsonable(answer["end"]) or "still serving"
        click.echo(f"{answer['model']} version {answer['version']} served {app}/{env} at {_jsonable(moment)}")
        click.echo(f"  window: {_jsonable(answer['start'])} -> {end} (deployed by {answer['deployed_by']})")
        click.echo(f"  training: seq {answer['training_seq']}, git commit {answer['git_commit']}")


@audit.command("windows")
@click.option("--app", help="Only this application.")
@click.option("--model", help="Only this model.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array on stdout.")
def audit_windows(app: str | None, model: str | None, as_json: bool) -> None:
    """Every production window: start, end (null while open) and duration."""
    window_records = _use("audit", "window_records")

    records = window_records(app=app, model=model)
    if as_json:
        _print_json(records)
        return
    if not records:
        click.echo("No production windows yet.", err=True)
        return
    columns = ["app", "env", "model", "version", "start", "end", "duration_s", "end_reason"]
    _print_table(columns, [[r[c] for c in columns] for r in records])


@audit.command("history")
@click.argument("model")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array on stdout.")
def audit_history(model: str, version: str | None, as_json: bool) -> None:
    """Every event of MODEL (or of one VERSION) in order: trainings, registrations, promotions, deployments."""
    history = _use("audit", "history")
    from govern.timeparse import display

    events = history(model, version)
    if as_json:
        _print_json([event.to_dict() for event in events])
        return
    for event in events:
        click.echo(
            f"{event.seq:>6}  {display(event.occurred_at)}  {event.type:<20}  {event.subject}  by {event.actor_shown}"
        )
        detail = _history_detail(event.type, event.payload)
        if detail:
            click.echo(f"{'':>8}{detail}")


def _history_detail(kind: str, payload: dict[str, Any]) -> str:
    """The part of an event a reader of a model's history needs: stages, approver and reason, windows."""
    if kind == "model.promoted":
        forced = " (forced)" if payload.get("forced") else ""
        moved = f"{payload.get('from_stage') or 'no stage'} -> {payload['to_stage']}{forced}"
        return f"{moved}; approved by {payload.get('approver')}; reason: {payload.get('reason')}"
    if kind == "model.deprecated":
        return f"reason: {payload.get('reason')}"
    if kind in ("deployment.started", "deployment.ended"):
        ended = f" ({payload['reason']})" if kind == "deployment.ended" else ""
        return f"version {payload['version']} at {payload['app']}/{payload['env']}{ended}"
    if kind == "model.registered":
        same = payload.get("same_artifact_as") or []
        twin = f"; same file as version(s) {', '.join(same)}" if same else ""
        return f"version {payload['version']}, sha256 {payload.get('sha256')}{twin}"
    if kind == "training.completed":
        return f"commit {payload['git']['commit'][:12]}, MLflow run {(payload.get('mlflow') or {}).get('run_id')}"
    if kind == "training.locked":
        versions = ", ".join(f"version {v['version']}" for v in payload.get("versions") or [])
        return f"lock commit {payload['commit']} rebuilds {versions} (its dvc.lock; found by {payload.get('found_by')})"
    if kind == "model.promotion_requested":
        return f"to {payload.get('to_stage')}; reason: {payload.get('reason')}"
    if kind in ("model.promotion_approved", "model.promotion_rejected"):
        return f"request {payload.get('request_seq')}; reason: {payload.get('reason')}"
    if kind == "inference.recorded":
        where = f" for {payload['app']}/{payload['env']}" if payload.get("app") else ""
        return f"version {payload['version']}, {payload.get('rows')} rows{where}"
    return ""


SQL_LIMIT_OPTIONS = (
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        help="Stop the query after this many seconds (default: audit.timeout, 30).",
    ),
    click.option(
        "--max-rows", type=click.IntRange(min=1), help="Refuse a result of more rows (default: audit.max_rows, 100000)."
    ),
    click.option(
        "--max-bytes",
        type=click.IntRange(min=1),
        help="Refuse a result larger than this many bytes as text (default: audit.max_bytes, 64 MiB).",
    ),
)


def _sql_limit_options(command: Any) -> Any:
    """`--timeout`, `--max-rows` and `--max-bytes` of the auditor's SQL commands."""
    for option in reversed(SQL_LIMIT_OPTIONS):
        command = option(command)
    return command


def _sql_limits(timeout: float | None, max_rows: int | None, max_bytes: int | None) -> Any:
    """The limits the options ask for, over the project's; None where none is given. A server applies its own."""
    if timeout is None and max_rows is None and max_bytes is None:
        return None
    if _remote():
        from govern.errors import InvalidInput

        raise InvalidInput(
            "--timeout, --max-rows and --max-bytes apply to a local ledger: the server's own limits "
            "([tool.govern.audit] where it runs) apply to its queries; unset GOVERN_URL to query here"
        )
    from govern.api.audit import sql_limits

    return sql_limits(timeout=timeout, max_rows=max_rows, max_bytes=max_bytes)


@audit.command("sql")
@click.argument("statement")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of row objects on stdout.")
@_sql_limit_options
def audit_sql(
    statement: str, as_json: bool, timeout: float | None, max_rows: int | None, max_bytes: int | None
) -> None:
    """Run one read-only SQL STATEMENT over the ledger's views.

    Views: events, trainings, model_versions, datasets, promotions,
    deprecations, stage_assignments, deployment_events, production_windows,
    inferences, experiments. The connection is read-only: writes are refused.
    It stops at a timeout and refuses a result past a row or byte limit
    ([tool.govern.audit]; the options raise them here, not on a server).
    """
    limits = _sql_limits(timeout, max_rows, max_bytes)
    result = _use("audit", "sql")(statement) if limits is None else _use("audit", "sql")(statement, limits=limits)
    _print_json(result.records()) if as_json else _print_table(result.columns, result.rows)


@audit.command("run")
@click.argument("name", required=False)
@click.option("--param", "params", multiple=True, help="A bound parameter NAME=VALUE (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of row objects on stdout.")
@_sql_limit_options
def audit_run(
    name: str | None,
    params: tuple[str, ...],
    as_json: bool,
    timeout: float | None,
    max_rows: int | None,
    max_bytes: int | None,
) -> None:
    """Run a reviewed query from audit/queries/NAME.sql; without NAME, list them.

    Parameters are bound ($name in the SQL), never pasted into it. The limits
    of `audit sql` apply.
    """
    limits = _sql_limits(timeout, max_rows, max_bytes)
    named_queries, run_named = _use("audit", "named_queries"), _use("audit", "run_named")
    from govern.errors import InvalidInput

    if name is None:
        found = named_queries()
        _print_json(found) if as_json else _print_table(["name", "description"], list(found.items()))
        return
    bound = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"--param {item!r} is not NAME=VALUE")
        bound[key] = value
    result = run_named(name, bound) if limits is None else run_named(name, bound, limits=limits)
    _print_json(result.records()) if as_json else _print_table(result.columns, result.rows)


@audit.command("report")
@click.argument("model")
@click.argument("version")
@click.option("--format", "fmt", type=click.Choice(["html", "md", "json"]), default="html", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
@click.option(
    "--verify-chain",
    is_flag=True,
    help="Also re-verify the whole ledger, not only the events the report cites (slower on large ledgers).",
)
def audit_report(model: str, version: str, fmt: str, output: Path | None, verify_chain: bool) -> None:
    """A self-contained lineage report of MODEL VERSION for auditors.

    Eleven sections (identity, code, data provenance, pipeline, training,
    validation, approvals, production windows, reproductions, inference,
    integrity), each from recorded facts, each saying what is not recorded.
    HTML (one file, inline CSS and SVG, printable), Markdown or JSON.
    Every event the report cites is re-hashed and linked to the one before it;
    when one fails, the report is still written and the command exits 1.
    """
    from govern.report import render

    gather = _use("report", "gather")
    if output is not None:
        _output_path(output, "--output")
    report = gather(model, version, verify_chain=verify_chain)
    text = render(report, fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    integrity = report["integrity"]
    if not integrity["verified"]:
        failures = [m for m in integrity["missing"] if m.startswith(("The ledger does not", "Anchor check failed"))]
        click.echo(f"FAILED: the report cites events that do not verify: {'; '.join(failures)}", err=True)
        sys.exit(1)


@audit.command("lineage")
@click.argument("model")
@click.argument("version")
def audit_lineage(model: str, version: str) -> None:
    """The lineage of MODEL VERSION as a tree: training, commit, stages, datasets, promotions, windows."""
    from govern.report import render_tree

    gather = _use("report", "gather")

    click.echo(render_tree(gather(model, version)), nl=False)


@audit.command("openlineage")
@click.option("--since", help="Only trainings that completed at or after this ISO 8601 time.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
def audit_openlineage(since: str | None, output: Path | None) -> None:
    """Export trainings as OpenLineage run events (JSON lines: START/COMPLETE, one job per stage)."""
    _local_only("audit openlineage")
    from govern.api.audit import openlineage

    if output is not None:
        _output_path(output, "--output")
    lines = "".join(json.dumps(event, ensure_ascii=False) + "\n" for event in openlineage(_instant(since, "--since")))
    if output is None:
        click.echo(lines, nl=False)
    else:
        output.write_text(lines, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


@cli.group()
def ci() -> None:
    """Continuous integration: re-execute pushed commits and verify them against their dvc.lock."""


@ci.command("verify")
@click.option("--rev", default="HEAD", show_default=True, help="The commit to verify.")
@click.option("--tolerance", "tolerances", multiple=True, metavar="METRIC=ABS", help="Allowed absolute metric change.")
@click.option("--strict", is_flag=True, help="Fail on `equivalent` too: require every output bit for bit.")
@click.option("--summary", type=click.Path(path_type=Path), help="Write the Markdown summary here (default: stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON on stdout.")
@click.option(
    "--server",
    metavar="URL",
    help="Record the verdict in this govern server's ledger (token in GOVERN_TOKEN, a verifier's), not locally; "
    "default GOVERN_URL.",
)
def ci_verify(
    rev: str, tolerances: tuple[str, ...], strict: bool, summary: Path | None, as_json: bool, server: str | None
) -> None:
    """Re-execute REV from scratch (dvc repro --force, no run-cache) and judge it against its dvc.lock.

    Three outcomes: exact (every output bit for bit), equivalent (each output
    that differs in bytes passes its declared rule: a model by its
    predictions on the evaluation split, metrics within tolerance), or
    diverged (also when the committed dvc.lock is stale). Appends
    reproduction.verified or reproduction.diverged with the evidence and the
    machine facts that differ from the training's, to the ledger (never a new
    one: with no ledger here it prints the verdict and records nothing), or
    with --server to the team's server's. The rules are the
    commit's own configuration. Exit codes: 0 exact or equivalent, 1
    diverged (or equivalent with --strict), 2 bad input, 3 could not verify.
    On GitHub Actions the summary also goes to $GITHUB_STEP_SUMMARY.
    """
    from govern.api.ci import headline, parse_tolerances, verify
    from govern.api.ci import summary as render_summary
    from govern.errors import GovernError, InvalidInput

    limits = parse_tolerances(tolerances)
    if summary is not None:
        _output_path(summary, "--summary")

    started: list[str] = []

    def progress(kind: str, stage: str, run: Any) -> None:
        if not started:
            started.append(stage)
            click.echo(f"govern: re-executing {rev} in a scratch clone; your checkout is not touched", err=True)
        if kind == "end":
            click.echo(f"[{stage}] {run.status} ({run.duration_s:.2f} s)", err=True)

    upload = None
    server = server or os.environ.get("GOVERN_URL") or None
    if server is not None:
        from govern.remote import Server

        upload = Server.from_environment(server).upload_verdict
    try:
        verdict = verify(rev, tolerances=limits, strict=strict, on_progress=progress, upload=upload)
    except InvalidInput:
        raise
    except GovernError as error:
        error.exit_code = 3  # could not verify at all: CI tells that apart from a divergence (1)
        raise
    for note in verdict.notes:
        click.echo(f"govern: note: {note}", err=True)
    if not verdict.recorded:
        click.echo(f"govern: the verdict is not recorded: {verdict.not_recorded}", err=True)
    text = render_summary(verdict)
    if summary is not None:
        summary.write_text(text, encoding="utf-8")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(text)
    if as_json:
        _print_json(verdict.to_dict())
    elif summary is None:
        click.echo(text)
    else:
        click.echo(f"{headline(verdict)} ({f'seq {verdict.event.seq}' if verdict.recorded else 'not recorded'})")
    if not verdict.passed:
        sys.exit(1)


@ci.command("init")
@click.argument("system", type=click.Choice(["github", "gitlab"]), default="github")
@click.option("--install", help="The command that installs the project and govern in CI.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def ci_init(system: str, install: str | None, force: bool) -> None:
    """Write a CI definition that runs `govern ci verify` on every push and tag (GitHub Actions or GitLab CI)."""
    from govern.api.ci import ci_init as write

    click.echo(f"wrote {write(system, install=install, force=force)}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The interface to listen on.")
@click.option("--port", default=8750, show_default=True, type=click.IntRange(1, 65535), help="The TCP port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--init-key", is_flag=True, help="Create the signing key (if there is none), print it, and exit.")
@click.option(
    "--rotate-key",
    "rotate_from",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Replace the signing key in OLD_KEY_FILE by a new one it endorses (both recorded), then exit.",
)
@click.option("--reason", default="", help="Why the key is rotated (with --rotate-key).")
def serve(host: str, port: int, workers: int, init_key: bool, rotate_from: Path | None, reason: str) -> None:
    """Serve this project's web pages and API (the controller) over HTTP: the pages at /, the API at /api/v1
    (its OpenAPI document at /api/v1/openapi.json), /health and /ready. Every request needs a token (govern tokens
    create; a bearer header for the API, a sign-in for the pages) and is checked against the role table; every
    event written records the principal and its token, and is signed with the server's key
    ([tool.govern.server] signing_key; created on the first start, mode 0600, outside the checkout)."""
    from govern.api import keys
    from govern.config import find_root, load

    root = find_root()
    settings = load(root).server  # a broken configuration is refused here, in one line, not by the first request
    if init_key:
        signer, created = keys.init_key(root)
        what = "created" if created else "exists already"
        click.echo(f"signing key {signer.fingerprint} {what}: {signer.path}")
        click.echo(f'pin it: [tool.govern.server] trusted_keys = ["{signer.fingerprint}"]')
        return
    if rotate_from is not None:
        new, events = keys.rotate(root, rotate_from, reason or "rotated")
        click.echo(f"signing key {new.fingerprint} now signs ({new.path}); {rotate_from} is retired")
        for event in events:
            click.echo(f"recorded seq {event.seq:>4}  {event.type:<24} {event.subject}")
        return
    import uvicorn

    _check_port_free(host, port)
    state = keys.start(root)
    made = " (created)" if state.created else ""
    click.echo(f"govern: signing with key {state.signer.fingerprint}{made}: {state.signer.path}", err=True)
    os.environ["GOVERN_PROJECT"] = str(root)
    _session_secret()
    click.echo(f"govern: serving {root}: pages at http://{host}:{port}/, the API at /api/v1 (Ctrl-C stops)", err=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            "govern: warning: plain HTTP on a non-loopback address sends bearer tokens in clear; put a "
            "TLS-terminating proxy in front, listen on 127.0.0.1 behind it, and name it in [tool.govern.server] "
            'trusted_proxies = ["127.0.0.1"]',
            err=True,
        )
    uvicorn.run(
        "govern.server.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",  # one access line per request (method, path, status), never a header or a body
        # X-Forwarded-For and -Proto are believed from `server.trusted_proxies` only (uvicorn would otherwise believe
        # any client on 127.0.0.1, or FORWARDED_ALLOW_IPS): the access log shows the socket's peer
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
    )


def _session_secret() -> None:
    """The key web sessions are signed with, the same for every worker: GOVERN_SESSION_SECRET (to keep sessions
    across restarts), else a new one for this run (signing everyone out at the next restart)."""
    from govern.errors import InvalidInput
    from govern.web.sessions import new_secret

    given = os.environ.get("GOVERN_SESSION_SECRET")
    if given is not None and len(given) < 32:
        raise InvalidInput(
            "GOVERN_SESSION_SECRET is shorter than 32 characters: set a random one "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))") or unset it'
        )
    os.environ["GOVERN_SESSION_SECRET"] = given or new_secret()


def _check_port_free(host: str, port: int) -> None:
    import socket

    from govern.errors import InvalidInput

    try:
        with socket.create_server((host, port)):
            pass
    except socket.gaierror:
        raise InvalidInput(
            f"--host {host}: no such address on this machine; give an IP address or a known name"
        ) from None
    except OSError as error:
        raise InvalidInput(
            f"Cannot listen on {host}:{port} ({os.strerror(error.errno or 0)}): choose another --port or --host, "
            "or stop what listens there"
        ) from None


@cli.group()
def principals() -> None:
    """Who may act through `govern serve`, in which role: granted and revoked as ledger facts.

    Roles: scientist, approver, deployer, consumer (limited to --app), auditor, admin. Run here, the actor
    recorded is your git identity: whoever may write the ledger makes the first admin. Nobody grants, revokes or
    links an identity for themselves; an admin never holds approver too. Where approver and admin take two admins
    (`[tool.govern.access] two_admin_grants`, on in team mode), `add` proposes and another admin confirms.
    """


@principals.command("add")
@click.argument("name")
@click.option("--role", required=True, help="scientist, approver, deployer, consumer, auditor or admin.")
@click.option("--app", "apps", multiple=True, metavar="APP", help="A consumer's app (repeat for several).")
@click.option("--reason", default="", help="Why, for the record.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON on stdout.")
def principals_add(name: str, role: str, apps: tuple[str, ...], reason: str, as_json: bool) -> None:
    """Grant NAME a role (a consumer, for the apps given); granting it again with other apps replaces them.

    Approver and admin, where they take two admins, are proposed: NAME holds the role once another admin confirms
    (govern principals confirm SEQ)."""
    grant = _use("access", "grant")

    event = grant(name, role, apps, reason)
    if as_json:
        _print_json(event.to_dict())
        return
    limited = f" for {', '.join(event.payload['apps'])}" if event.payload["apps"] else ""
    if event.type == "access.grant_proposed":
        door = " (break-glass: an operator's local proposal)" if event.payload.get("break_glass") else ""
        click.echo(
            f"recorded seq {event.seq}: proposed {role}{limited} for {name}{door}; {name} holds it once another admin "
            f"confirms it: govern principals confirm {event.seq} (or declines it: govern principals decline)"
        )
        return
    note = " (bootstrap: no admin existed to confirm it)" if event.payload.get("basis") == "bootstrap" else ""
    click.echo(f"recorded seq {event.seq}: {name} holds the role {role}{limited}{note}")


@principals.command("revoke")
@click.argument("name")
@click.option("--role", required=True, help="The role to take away.")
@click.option("--reason", default="", help="Why, for the record.")
def principals_revoke(name: str, role: str, reason: str) -> None:
    """From now on NAME may no longer act in ROLE (its tokens stay, but carry no role unless it holds another)."""
    revoke = _use("access", "revoke")

    event = revoke(name, role, reason)
    click.echo(f"recorded seq {event.seq}: {name} no longer holds the role {role}")


@principals.command("confirm")
@click.argument("proposal")
@click.option("--reason", default="", help="Why, for the record (the proposal's reason is kept otherwise).")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON on stdout.")
def principals_confirm(proposal: str, reason: str, as_json: bool) -> None:
    """Confirm the proposed grant PROPOSAL (its seq) as a second admin: never its proposer, nor its grantee."""
    event = _use("access", "confirm_grant")(proposal, reason)
    if as_json:
        _print_json(event.to_dict())
        return
    payload = event.payload
    door = " (break-glass: an operator's local confirmation)" if payload.get("basis") == "break-glass" else ""
    click.echo(
        f"recorded seq {event.seq}: {payload['principal']} holds the role {payload['role']}, proposed by "
        f"{payload['proposed_by']} (seq {payload['proposal_seq']}){door}"
    )


@principals.command("decline")
@click.argument("proposal")
@click.option("--reason", required=True, help="Why, for the record.")
def principals_decline(proposal: str, reason: str) -> None:
    """Refuse the proposed grant PROPOSAL (another admin's): it will not be held unless proposed again."""
    event = _use("access", "decline_grant")(proposal, reason)
    click.echo(f"recorded seq {event.seq}: proposal {event.payload['proposal_seq']} is declined")


@principals.command("withdraw")
@click.argument("proposal")
@click.option("--reason", default="", help="Why, for the record.")
def principals_withdraw(proposal: str, reason: str) -> None:
    """Take back a grant you proposed, before anyone confirms it."""
    event = _use("access", "withdraw_grant")(proposal, reason)
    click.echo(f"recorded seq {event.seq}: proposal {event.payload['proposal_seq']} is withdrawn")


@principals.command("proposals")
@click.option(
    "--state",
    type=click.Choice(["pending", "confirmed", "declined", "withdrawn", "all"]),
    default="pending",
    show_default=True,
    help="Which proposals.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def principals_proposals(state: str, as_json: bool) -> None:
    """Proposed grants of approver and admin, newest first, and what became of them."""
    rows = _use("access", "proposals")(_ledger(), None if state == "all" else state)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo(f"No {'' if state == 'all' else state + ' '}grant proposal.", err=True)
        return
    _print_table(
        ["proposal", "principal", "role", "state", "proposed_at", "proposed_by", "decided_by"],
        [
            [
                r["proposal_seq"],
                r["principal"],
                r["role"],
                r["state"],
                r["proposed_at"],
                r["proposed_by_shown"],
                r["decided_by_shown"],
            ]
            for r in rows
        ],
    )


@principals.command("link")
@click.argument("name")
@click.argument("identity")
@click.option("--reason", default="", help="Why, for the record.")
def principals_link(name: str, identity: str, reason: str) -> None:
    """Record that git IDENTITY ('Name <email>') is NAME's: versions it trained count as NAME's for four-eyes."""
    link_identity = _use("access", "link_identity")

    event = link_identity(name, identity, reason)
    click.echo(f"recorded seq {event.seq}: {event.payload['identity']} is {name}")


@principals.command("identities")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def principals_identities(as_json: bool) -> None:
    """The git identities linked to principals (govern principals link)."""
    rows = _use("access", "identities")(_ledger())
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("No identity is linked to a principal (govern principals link NAME 'Name <email>').", err=True)
        return
    _print_table(
        ["principal", "identity", "linked_at", "linked_by"],
        [[r["principal"], r["identity"], r["linked_at"], r["linked_by"]] for r in rows],
    )


@principals.command("list")
@click.option("--at", help="Who held which role at this instant (ISO 8601 with a zone); default now.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def principals_list(at: str | None, as_json: bool) -> None:
    """Who holds which role now, or held it at --at: the answer to "who could approve on date T", with who
    granted (confirmed) each role and who proposed it."""
    rows = _use("access", "roles_at")(_ledger(), _instant(at, "--at"))
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("No principal holds a role" + (f" at {at}" if at else "") + " (govern principals add).", err=True)
        return
    _print_table(
        ["principal", "role", "apps", "granted_at", "granted_by", "proposed_by"],
        [
            [
                r["principal"],
                r["role"],
                ", ".join(r["apps"]) or None,
                r["granted_at"],
                _granted_by(r),
                r["proposed_by_shown"],
            ]
            for r in rows
        ],
    )


def _granted_by(row: dict[str, Any]) -> str:
    basis = row.get("basis")
    return row["granted_by_shown"] + (f" [{basis}]" if basis and basis != "direct" else "")


@principals.command("history")
@click.option("--principal", help="Only this principal's grants.")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Newest grants.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def principals_history(principal: str | None, limit: int, as_json: bool) -> None:
    """Every grant over time, newest first: who proposed and who confirmed it, and when and how it ended."""
    rows = _use("access", "grant_history")(_ledger(), principal, limit)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("No grant recorded" + (f" for {principal}" if principal else "") + ".", err=True)
        return
    _print_table(
        ["grant", "principal", "role", "granted_at", "granted_by", "proposed_by", "ended_at", "ended_how"],
        [
            [
                r["grant_seq"],
                r["principal"],
                r["role"],
                r["granted_at"],
                _granted_by(r),
                r["proposed_by_shown"],
                r["ended_at"],
                r["ended_how"],
            ]
            for r in rows
        ],
    )


@cli.group()
def tokens() -> None:
    """Bearer tokens for `govern serve`: shown once when created, stored only as a hash, revocable.

    In team mode a token for someone else is an enrollment code: they exchange it, once and within 24 hours, for
    a token of their own (govern tokens redeem CODE), which nobody else sees."""


@tokens.command("create")
@click.argument("name")
@click.option("--expires", help="A lifetime (12h, 30d, 8w), an instant, or never (default 90d).")
@click.option("--description", default="", help="What the token is for, for the record (e.g. the CD system).")
@click.option("--json", "as_json", is_flag=True, help="Print the token (or code) and its id as JSON on stdout.")
def tokens_create(name: str, expires: str | None, description: str, as_json: bool) -> None:
    """Issue a token for NAME, who must hold a role. The token is printed once: store it now.

    In team mode, for anyone but yourself, what is printed is an enrollment code for NAME to redeem (govern
    tokens redeem CODE), not a token: single use, valid 24 hours; --expires is the lifetime of the token it gives."""
    issue_token = _use("access", "issue_token")

    issued = issue_token(name, expires, description)
    if as_json:
        _print_json(issued.to_dict())
        return
    if issued.code is not None:
        code = issued.code
        until = _jsonable(code.token_expires_at) if code.token_expires_at else "never"
        click.echo(
            f"recorded seq {issued.event.seq}: enrollment code {code.code_id} for {name}, valid until "
            f"{_jsonable(code.expires_at)}, single use. It is not a token: hand it to {name}, who exchanges it for a "
            f"token of their own (expires {until}) with `govern tokens redeem CODE`. Shown once, stored as a hash:",
            err=True,
        )
        click.echo(code.code)
        return
    until = _jsonable(issued.token.expires_at) if issued.token.expires_at else "never"
    click.echo(f"recorded seq {issued.event.seq}: token {issued.token.token_id} for {name}, expires {until}", err=True)
    click.echo("It is shown once and stored only as a hash; send it as `Authorization: Bearer <token>`:", err=True)
    click.echo(issued.token.bearer)


@tokens.command("redeem")
@click.argument("code")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its id as JSON on stdout.")
def tokens_redeem(code: str, as_json: bool) -> None:
    """Exchange an enrollment CODE an admin gave you for your own token (once; the code then is spent). With
    GOVERN_URL set, the server does it (no GOVERN_TOKEN needed: the code authenticates you)."""
    issued = _use("access", "redeem")(code)
    if as_json:
        _print_json(issued.to_dict())
        return
    until = _jsonable(issued.token.expires_at) if issued.token.expires_at else "never"
    click.echo(
        f"recorded seq {issued.event.seq}: token {issued.token.token_id} for {issued.token.principal}, expires "
        f"{until}. It is shown once and stored only as a hash; send it as `Authorization: Bearer <token>`:",
        err=True,
    )
    click.echo(issued.token.bearer)


@tokens.command("revoke")
@click.argument("token_id")
@click.option("--reason", default="", help="Why, for the record.")
def tokens_revoke(token_id: str, reason: str) -> None:
    """Make a token (or an enrollment code not yet used) unusable from now on, whatever its expiry."""
    revoke_token = _use("access", "revoke_token")

    event = revoke_token(token_id, reason)
    click.echo(
        f"recorded seq {event.seq}: token {event.payload['token_id']} of {event.payload['principal']} is revoked"
    )


@tokens.command("list")
@click.option("--principal", help="Only this principal's tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def tokens_list(principal: str | None, as_json: bool) -> None:
    """Every token ever issued, then every enrollment code, with its state now and who handed it over (issuer:
    for a redeemed token, the admin who issued its code); never a secret."""
    rows = _use("access", "tokens")(_ledger(), principal)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        whose = f" for {principal}" if principal else " yet"
        click.echo(f"No token issued{whose} (govern tokens create NAME).", err=True)
        return
    _print_table(
        ["token_id", "kind", "principal", "state", "issued_at", "expires_at", "issuer", "description"],
        [
            [
                r["token_id"],
                "code" if r.get("kind") == "enrollment code" else "token",
                r["principal"],
                r["state"],
                r["issued_at"],
                r["expires_at"],
                r.get("issuer") or r["issued_by"],
                r["description"],
            ]
            for r in rows
        ],
    )


@cli.group()
def hooks() -> None:
    """Plain-git hooks: refuse stale pushes (client), verify every push (server)."""


@hooks.command("install")
@click.option("--force", is_flag=True, help="Replace existing pre-push and post-commit hooks that are not govern's.")
def hooks_install(force: bool) -> None:
    """Install a pre-push hook that refuses a push whose pipeline is stale or whose dvc.lock is uncommitted, and a
    post-commit hook that records the lock commit of a training (`training.locked`) when dvc.lock is committed."""
    from govern.api.hooks import install_client

    for path in install_client(force=force):
        click.echo(f"installed {path}")


@hooks.command("post-commit", hidden=True)
def hooks_post_commit() -> None:
    """Run by the post-commit hook: a commit has happened, so this never fails it; a problem is one line."""
    from govern.api.hooks import after_commit

    try:
        for line in after_commit():
            click.echo(line)
    except GovernError as error:
        click.echo(f"govern: the lock commit was not recorded ({error}); `govern sync` looks again", err=True)


@hooks.command("install-server")
@click.option("--bare", required=True, type=click.Path(path_type=Path), help="The bare repository pushed to.")
@click.option(
    "--ledger",
    help="The team's central ledger: a file path or a postgresql:// URL (default BARE/govern-hook/ledger.duckdb).",
)
@click.option(
    "--server",
    metavar="URL",
    help="Post verdicts to this govern server instead (its verifier token in GOVERN_TOKEN, kept in BARE/govern-hook).",
)
@click.option("--force", is_flag=True, help="Replace an existing post-receive hook that is not govern's.")
def hooks_install_server(bare: Path, ledger: str | None, server: str | None, force: bool) -> None:
    """Install a post-receive hook that verifies every pushed branch head in the background.

    Each head is checked out into a temporary worktree and verified like
    `govern ci verify`, appending to the central ledger; pushed GTO tags are
    imported (`govern sync`). The pusher is not held; see BARE/govern-hook/verify.log.
    """
    from govern.api.hooks import install_server

    installed = install_server(bare, ledger, force, server)
    where = "server" if server else "ledger"
    click.echo(f"installed {installed.hook}; {where} {installed.ledger}; log {installed.log}")


@hooks.command("pre-push", hidden=True)
@click.argument("remote", required=False)
@click.argument("url", required=False)
def hooks_pre_push(remote: str | None, url: str | None) -> None:
    """Run by the pre-push hook."""
    from govern.api.hooks import pre_push_problems

    problems = pre_push_problems()
    for problem in problems:
        click.echo(f"govern: push refused: {problem}", err=True)
    if problems:
        sys.exit(1)


@hooks.command("post-receive", hidden=True)
@click.option("--bare", required=True, type=click.Path(path_type=Path))
@click.option("--ledger", required=True)
def hooks_post_receive(bare: Path, ledger: str) -> None:
    """Run by the post-receive hook with git's ref updates on stdin."""
    from govern.api.hooks import on_receive

    for commit in on_receive(bare, ledger, sys.stdin.read().splitlines()):
        click.echo(f"govern: verifying {commit[:12]} in the background (log: {bare / 'govern-hook' / 'verify.log'})")


@hooks.command("verify-commit", hidden=True)
@click.option("--bare", required=True, type=click.Path(path_type=Path))
@click.option("--ledger", required=True)
@click.option("--rev", required=True)
def hooks_verify_commit(bare: Path, ledger: str, rev: str) -> None:
    """The detached verifier the post-receive hook starts."""
    from govern.api.hooks import verify_pushed

    click.echo(verify_pushed(bare, ledger, rev))


@hooks.command("sync-server", hidden=True)
@click.option("--bare", required=True, type=click.Path(path_type=Path))
@click.option("--ledger", required=True)
def hooks_sync_server(bare: Path, ledger: str) -> None:
    """The detached tag import the post-receive hook starts for tag-only pushes."""
    from govern.api.sync import sync

    os.environ["GOVERN_LEDGER"] = str(ledger)
    click.echo(f"{len(sync(repository=bare).events)} GTO promotion(s) imported")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the recorded events as JSON on stdout.")
def mirror(as_json: bool) -> None:
    """Complete every pending MLflow mirror; idempotent.

    Trainings recorded while MLflow was unreachable get their run and
    registered versions (a run left half-finished by an earlier attempt is
    completed, not duplicated); models whose promotions or deprecations are
    not yet in MLflow get their stage aliases and deprecation tags. Exits 1
    while MLflow is still unreachable.
    """
    _local_only("mirror")
    from govern.api import registry_mirror
    from govern.api.context import open_project
    from govern.api.mirror import retry_pending
    from govern.errors import MirrorError

    project = open_project()
    trainings = retry_pending(project)
    registry = registry_mirror.mirror_pending(project.ledger, project.config, project.actor)
    events = trainings.events + registry.events
    if as_json:
        _print_json(
            {
                "events": [e.to_dict() for e in events],
                "pending": trainings.pending,
                "pending_registry": [registry_mirror.describe(p) for p in registry.pending],
            }
        )
    else:
        _report(trainings)
        _report(registry)
        if not events and not trainings.errors and not registry.errors:
            click.echo("Nothing is pending.")
    if trainings.errors:
        raise MirrorError(f"{trainings.pending} training(s) still pending: {trainings.errors[0]}")
    if registry.errors:
        raise MirrorError(f"{len(registry.pending)} model(s) still wait for their MLflow aliases: {registry.errors[0]}")


@cli.command()
@click.option("--repo", type=click.Path(path_type=Path), help="Read tags from this repository (default: this one).")
@click.option("--json", "as_json", is_flag=True, help="Print the imported events as JSON on stdout.")
def sync(repo: Path | None, as_json: bool) -> None:
    """Import promotions made with GTO (annotated git tags) into the ledger; idempotent."""
    _local_only("sync")
    from govern.api.sync import sync as run

    outcome = run(repository=repo)
    if as_json:
        _print_json({"events": [e.to_dict() for e in outcome.events], "skipped": outcome.skipped})
        return
    _report(outcome)
    for note in outcome.skipped:
        click.echo(f"Warning: skipped {note}", err=True)
    if not outcome.events:
        click.echo("Nothing new to import.")


STATUS_SLOTS = 25  # one screen; --json lists every slot


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the state as a JSON object on stdout.")
def status(as_json: bool) -> None:
    """The current state on one screen: models and stages, what serves where since when, pending mirrors,
    the last verification and the newest anchor. All derived from the ledger."""
    read = _use("status", "status")

    state = read()
    if as_json:
        _print_json(state)
        return
    ledger, anchor = state["ledger"], state["newest_anchor"]
    if ledger["head_seq"] is None:
        click.echo(f"Ledger {ledger['path']}: nothing recorded yet (govern repro records the first training)")
    else:
        click.echo(f"Ledger {ledger['path']}: {ledger['events']} events, head seq {ledger['head_seq']}")
    if anchor:
        click.echo(f"  newest anchor {anchor['tag']} (seq {anchor['seq']}, {anchor['events_since']} event(s) since)")
    else:
        click.echo("  no anchor yet: `govern audit anchor` records the head outside the ledger")
    click.echo("Models")
    for model in state["models"]:
        click.echo(f"  {model['model']}")
        for v in model["versions"]:
            held = f"  stages: {', '.join(v['stages'])}" if v["stages"] else ""
            gone = (
                f"  DEPRECATED {_jsonable(v['deprecated_at'])}: {v['deprecation_reason']}" if v["deprecated_at"] else ""
            )
            lock = f"  lock {v['lock_commit'][:12]}" if v["lock_commit"] else "  NOT LOCKED"
            if v.get("lock_found"):
                lock = f"  lock {v['lock_found'][:12]} (found, recorded by the next write or `govern sync`)"
            click.echo(f"    version {v['version']:<4} registered {_jsonable(v['registered_at'])}{lock}{held}{gone}")
    if not state["models"]:
        click.echo("  none registered yet (govern repro)")
    elif any(not v["lock_commit"] and not v.get("lock_found") for model in state["models"] for v in model["versions"]):
        from govern.api.locks import NOT_LOCKED_HINT

        click.echo(f"  NOT LOCKED: no commit rebuilds it yet; {NOT_LOCKED_HINT}")
    click.echo("Deployments")
    slots = state["deployments"]
    for slot in slots[:STATUS_SLOTS]:
        where = f"{slot['app']}/{slot['env']}"
        if slot["serving"]:
            click.echo(f"  {where:<28} {slot['model']} version {slot['version']} since {_jsonable(slot['since'])}")
        else:
            click.echo(f"  {where:<28} nothing serves (retired {_jsonable(slot['since'])})")
    if len(slots) > STATUS_SLOTS:
        click.echo(f"  ... and {len(slots) - STATUS_SLOTS} more (govern status --json, or govern audit windows)")
    if not slots:
        click.echo("  none recorded yet (govern deploy)")
    pending = state["pending_mirrors"]
    click.echo("Mirrors")
    for training in pending["trainings"]:
        click.echo(f"  training {training['event_id']} waits for MLflow (govern mirror)")
    for item in pending["registry"]:
        click.echo(f"  the MLflow aliases of {item['model']} wait for events up to seq {item['through_seq']}")
    if not pending["trainings"] and not pending["registry"]:
        click.echo("  nothing pending")
    last = state["last_verification"]
    click.echo("Last verification")
    if last:
        outcome = "diverged" if last["type"] == "reproduction.diverged" else f"verified ({last['match']})"
        click.echo(f"  {outcome}: commit {last['commit'][:12]} at {_jsonable(last['at'])} by {last['by']}")
    else:
        click.echo("  none recorded (govern ci verify)")


def main() -> None:
    cli(prog_name="govern")
