"""`govern init`: make a git repository a governed project, idempotently."""

from __future__ import annotations

import re
import urllib.parse
from importlib import resources
from pathlib import Path

from govern import config
from govern.adapters import dvc as dvc_adapter
from govern.api.results import InitResult, TeamLedger
from govern.checkpoints import BACKUP_SUFFIX
from govern.errors import InvalidInput
from govern.redaction import without_password

LOCAL_STORES = (
    "/mlflow.db",
    "/mlartifacts/",
    "/mlruns/",
)

CONFIG_TEMPLATE = """\
# Where govern records events; GOVERN_LEDGER overrides it.
ledger = "{ledger}"

[{prefix}mlflow]
# The MLflow experiment runs are mirrored into. The tracking server is
# MLFLOW_TRACKING_URI when set, else sqlite:///mlflow.db at the project root.
experiment = "{experiment}"
"""

AUDIT_README = """\
# audit/

The home of this project's governance ledger (`ledger.duckdb`, written by
`govern`, not committed) and of the SQL that auditors can read.

- `govern audit log` lists the recorded events.
- `govern audit verify` checks the hash chain.
- `queries/` holds reviewed SQL that `govern audit run NAME --param k=v` runs
  with bound parameters; `govern audit sql "SELECT ..."` runs ad-hoc read-only SQL.
"""


ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def init_team_ledger(url: str, writer: str | None = None, auditor: str | None = None) -> TeamLedger:
    """Create (or migrate) govern's schema in a PostgreSQL database; returns the GRANTs an operator runs."""
    from govern.storage.postgres_schema import AUDITOR_ROLE, WRITER_ROLE

    writer, auditor = writer or WRITER_ROLE, auditor or AUDITOR_ROLE
    for role, option in ((writer, "--writer-role"), (auditor, "--auditor-role")):
        if not ROLE_NAME.match(role):
            raise InvalidInput(
                f"{option} {role!r} is not a PostgreSQL role name govern uses: lower-case letters, digits and _, "
                "starting with a letter or _"
            )
    if writer == auditor:
        raise InvalidInput(
            f"--writer-role and --auditor-role are both {writer!r}: auditors need a role that cannot write"
        )
    if not re.match(r"^postgres(ql)?(\+\w+)?://", url, re.IGNORECASE):
        raise InvalidInput(
            f"--ledger takes a PostgreSQL URL (postgresql://USER@HOST[:PORT]/DATABASE), not {url!r}; a file ledger "
            "needs no --ledger: the first write creates it"
        )
    location = config.ledger_location(url, "--ledger")
    from govern.storage import create_postgres

    shown, version, grants = create_postgres(str(location), writer, auditor)
    return TeamLedger(shown, version, grants, as_role(str(location), writer))


def as_role(url: str, role: str) -> str:
    """The same database URL for another role, without any password."""
    parts = urllib.parse.urlsplit(without_password(url))
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def init_project(start: Path | None = None, ledger: str | None = None) -> InitResult:
    """Create config, `audit/` and `.gitignore` entries, and run `dvc init` if needed.

    `ledger` (a PostgreSQL URL for govern's writer role, without a password: libpq finds that in PGPASSWORD or
    ~/.pgpass, never in a committed file) goes into a new configuration.

    It takes the directory to start looking from (`start`), not a `Project`: it runs before the project exists
    (this makes it), where there is no configuration to load nor ledger to open."""
    root = config.find_root(start)
    changed: list[str] = []
    config_file = _ensure_config(root, changed, ledger or config.DEFAULT_LEDGER)
    audit = root / "audit"
    if not (audit / "README.md").exists():
        audit.mkdir(exist_ok=True)
        (audit / "README.md").write_text(AUDIT_README, encoding="utf-8")
        changed.append("audit/README.md")
    changed.extend(_ensure_queries(root))
    if _ensure_gitignore(root, _ignored_paths(config.load(root, {}))):
        changed.append(".gitignore")
    initialized = dvc_adapter.ensure_initialized(root)
    return InitResult(root=root, config_file=config_file, changed=changed, dvc_initialized=initialized)


def _ensure_config(root: Path, changed: list[str], ledger: str) -> str:
    settings, source = config.read_settings(root)
    if source != "defaults":
        return source
    values = {"ledger": ledger, "experiment": root.name}
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        text = pyproject.read_text(encoding="utf-8")
        section = "\n[tool.govern]\n" + CONFIG_TEMPLATE.format(prefix="tool.govern.", **values)
        pyproject.write_text(text.rstrip("\n") + "\n" + section, encoding="utf-8")
        changed.append("pyproject.toml")
        return "pyproject.toml [tool.govern]"
    (root / config.CONFIG_FILE).write_text(CONFIG_TEMPLATE.format(prefix="", **values), encoding="utf-8")
    changed.append(config.CONFIG_FILE)
    return config.CONFIG_FILE


def _ensure_queries(root: Path) -> list[str]:
    """Copy govern's reviewed audit queries into audit/queries/, leaving existing files alone."""
    target = root / "audit" / "queries"
    written = []
    for template in sorted(resources.files("govern").joinpath("templates", "queries").iterdir()):
        if not template.name.endswith(".sql") or (target / template.name).exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        (target / template.name).write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
        written.append(f"audit/queries/{template.name}")
    return written


def _ignored_paths(cfg: config.Config) -> list[str]:
    """The ledger (where configured inside the project) and the local MLflow store."""
    entries = []
    if isinstance(cfg.ledger, str):
        return [*entries, *LOCAL_STORES]
    try:
        ledger = "/" + cfg.ledger.relative_to(cfg.root).as_posix()
        mirror_log = "/" + (cfg.ledger.parent / "mirror.log").relative_to(cfg.root).as_posix()
        job_logs = "/" + (cfg.ledger.parent / "jobs").relative_to(cfg.root).as_posix() + "/"
        entries = [ledger, f"{ledger}.wal", f"{ledger}{BACKUP_SUFFIX}*", mirror_log, job_logs]
    except ValueError:
        pass
    return [*entries, *LOCAL_STORES]


def _ensure_gitignore(root: Path, entries: list[str]) -> bool:
    path = root / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [entry for entry in entries if entry not in present]
    if not missing:
        return False
    block = "\n".join(["# govern: local ledger and MLflow store", *missing]) + "\n"
    path.write_text(text + ("\n" if text and not text.endswith("\n") else "") + block, encoding="utf-8")
    return True
