"""Where govern finds its settings: `govern.toml`, or `[tool.govern]` in `pyproject.toml`.

Precedence, highest first: environment variables (`GOVERN_LEDGER`,
`MLFLOW_TRACKING_URI`), `govern.toml` at the project root, the
`[tool.govern]` table of the root `pyproject.toml`, built-in defaults.
Relative paths are relative to the project root (the git top level).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from govern import equivalence
from govern import gates as gates_module
from govern.errors import ConfigError, InvalidInput, NotAGitRepository
from govern.redaction import has_password, without_password
from govern.sandbox import DEFAULT_SANDBOX, SANDBOXES, check_pass_env

DEFAULT_LEDGER = "audit/ledger.duckdb"
CONFIG_FILE = "govern.toml"


DEFAULT_STAGES = ("staging", "production")
DEFAULT_ENV_STAGES = {"production": "production", "staging": "staging"}
DEFAULT_ENVIRONMENTS = ("staging", "production")


@dataclass(frozen=True)
class AuditLimits:
    """What one auditor's statement may cost (`[tool.govern.audit]`): the same for `govern audit sql`/`run` and
    for the server's `/sql` and `/queries`, which run the same use case. DuckDB enforces each one in the sandbox:
    the statement is interrupted at `timeout`, the result refused past `max_rows` rows or `max_bytes` (its size as
    text, about what its JSON takes), and the sandbox runs with `threads` threads in `memory_limit`."""

    timeout: float = 30.0
    max_rows: int = 100_000
    max_bytes: int = 64 << 20
    threads: int = 1
    memory_limit: str = "1GB"


@dataclass(frozen=True)
class ServerSettings:
    """How `govern serve` protects itself (`[tool.govern.server]`); every limit is per server process (per
    `--workers` worker). Over a limit a request is answered at once, 429 (the principal's) or 503 (the server's),
    with Retry-After, and writes nothing."""

    max_requests: int = 64  # requests in flight at once (/health excepted): more are answered 503
    max_requests_per_principal: int = 16  # one principal's (unauthenticated: one address's): more are 429
    max_predictions: int = 8  # predictions (model processes) running at once: more are 503
    max_predictions_per_principal: int = 2  # one consumer's: more are 429
    lock_wait: float = 10.0  # seconds a request waits for the ledger (its turn, a file or chain lock): then 503
    token_staleness: float = 5.0  # seconds a token snapshot may be old when the ledger is too busy to read it
    token_refresh: float = 1.0  # PostgreSQL: seconds between checks of the ledger's head for access changes
    refusal_pause: float = 0.5  # seconds before a 401, 429 or 503 of the door is answered (no thread held)
    trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-For and X-Forwarded-Proto are believed


@dataclass(frozen=True)
class Config:
    root: Path
    ledger: Path | str  # a DuckDB file, or a PostgreSQL URL (see govern.storage)
    experiment: str
    tracking_uri: str
    lock_timeout: float
    source: str
    stages: tuple[str, ...] = DEFAULT_STAGES
    four_eyes: bool | None = None  # None: on in team mode, off for one person (govern.api.duties.policy)
    gto_tags: bool = True
    env_stages: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENV_STAGES))
    environments: tuple[str, ...] = DEFAULT_ENVIRONMENTS
    selection_metric: str | None = None
    selection_direction: str = "maximize"
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)
    auto_anchor: bool = False
    comparison: equivalence.Rules = field(default_factory=equivalence.Rules)
    registry_mirror: str = "background"  # or "inline": promote/deprecate wait for MLflow's aliases
    gates: dict[str, tuple[gates_module.Gate, ...]] = field(default_factory=dict)  # stage -> what it demands
    # Stages a promotion enters only through an approved request (`govern promote` refused there): True all,
    # False none, a tuple those; None: the last stage in team mode, none for one person
    require_approval: bool | tuple[str, ...] | None = None
    jobs_python: str | None = None  # the interpreter the controller's training jobs run govern with
    jobs_concurrency: int = 1  # training jobs one server process runs at once; the rest wait in the queue
    # the branch a job's lock commit goes on ({job}: the job's id), pushed where the server's checkout tracks; ""
    # leaves a job's versions to be locked by hand
    jobs_lock_branch: str = "govern/trainings/{job}"
    server: ServerSettings = field(default_factory=ServerSettings)
    audit: AuditLimits = field(default_factory=AuditLimits)
    jobs_sandbox: str = "bwrap"  # how the server confines jobs and entry points: "bwrap" or "none" (govern.sandbox)
    jobs_run_as: str | None = None  # the unprivileged OS user jobs and entry points run as on the server
    jobs_network: bool = False  # whether a confined job or entry point may use the network
    jobs_pass_env: tuple[str, ...] = ()  # variables passed to user code beyond the sandbox's allow-list
    signing_key: Path | None = None  # the server's Ed25519 key file (None: signing.default_path)
    trusted_keys: tuple[str, ...] = ()  # pinned fingerprints of the server's signing keys
    server_url: str | None = None  # where the project's govern serve answers: declares team mode
    mode: str | None = None  # "solo" or "team" when set; otherwise derived (see `team`)
    # Granting approver or admin takes a second admin's confirmation; None: on in team mode (govern.api.access)
    two_admin_grants: bool | None = None

    @property
    def declares_team(self) -> bool:
        """Team mode as far as configuration tells: a PostgreSQL ledger, a declared server, or `mode = "team"`.
        A ledger where a server has registered its signing key is in team mode too (`api.team.team_mode`)."""
        if self.mode is not None:
            return self.mode == "team"
        return isinstance(self.ledger, str) or self.server_url is not None

    @property
    def tracking_uri_is_default(self) -> bool:
        return self.tracking_uri == default_tracking_uri(self.root)


def find_root(start: Path | None = None) -> Path:
    """The nearest directory at or above `start` that holds `.git`."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    raise NotAGitRepository(f"{here} is not inside a git repository: run `git init` first, or cd into your project")


def default_tracking_uri(root: Path) -> str:
    """MLflow's embedded default store, `mlflow.db` at the project root, as an absolute URI."""
    return f"sqlite:///{root / 'mlflow.db'}"


def read_settings(root: Path) -> tuple[dict[str, Any], str]:
    """The raw govern table and the file it came from."""
    govern_toml = root / CONFIG_FILE
    if govern_toml.exists():
        return _read_toml(govern_toml), CONFIG_FILE
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        table = _read_toml(pyproject).get("tool", {}).get("govern")
        if isinstance(table, dict):
            return table, "pyproject.toml [tool.govern]"
    return {}, "defaults"


def _registry_mirror(value: Any, source: str) -> str:
    if value is None:
        return "background"
    if value not in ("background", "inline"):
        raise ConfigError(
            f"{source}: `mlflow.registry_mirror` (or GOVERN_REGISTRY_MIRROR) is background or inline, not {value!r}"
        )
    return str(value)


def project_table(root: Path) -> dict[str, Any] | None:
    """The `[project]` table of the root pyproject.toml (PEP 621), or None."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    table = _read_toml(pyproject).get("project")
    return table if isinstance(table, dict) else None


def load(root: Path, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    settings, source = read_settings(root)
    _refuse_unknown(settings, SETTINGS, None, source)
    mlflow = settings.get("mlflow", {})
    if not isinstance(mlflow, dict):
        raise ConfigError(f"{source}: `mlflow` must be a table, such as [tool.govern.mlflow]")
    _refuse_unknown(mlflow, MLFLOW_SETTINGS, "mlflow", source)
    ledger = _ledger_setting(settings, env, source)
    registry = _table(settings, "registry", source)
    deploy = _table(settings, "deploy", source)
    selection = _table(settings, "selection", source)
    for table, known, where in (
        (registry, {"stages", "four_eyes", "gto_tags", "gates", "require_approval"}, "registry"),
        (deploy, {"require_stage", "environments"}, "deploy"),
        (selection, {"metric", "direction"}, "selection"),
    ):
        _refuse_unknown(table, known, where, source)
    stages, env_stages, environments = _stages_and_environments(registry, deploy, source)
    jobs = _table(settings, "jobs", source)
    _refuse_unknown(
        jobs, {"python", "concurrency", "sandbox", "run_as", "network", "pass_env", "lock_branch"}, "jobs", source
    )
    concurrency, lock_branch = _jobs_scheduling(jobs, source)
    server = _table(settings, "server", source)
    mode = settings.get("mode")
    if mode is not None and mode not in ("solo", "team"):
        raise ConfigError(f"{source}: `mode` is solo or team, not {mode!r}")
    trusted, signing_key, server_url = _server_identity(server, source)
    sandbox, network = _jobs_isolation(jobs, source)
    access_table = _table(settings, "access", source)
    _refuse_unknown(access_table, ACCESS_SETTINGS, "access", source)
    ci = _table(settings, "ci", source)
    _refuse_unknown(ci, {"tolerances", "models", "outputs"}, "ci", source)
    tolerances = _tolerances(ci, source)
    limits = server_settings(server, source)
    audit = audit_limits(_table(settings, "audit", source), source)
    direction = _str(selection, "direction", "maximize", source)
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"{source}: `selection.direction` must be maximize or minimize, got {direction!r}")
    return Config(
        root=root,
        ledger=ledger if isinstance(ledger, str) or ledger.is_absolute() else root / ledger,
        experiment=_str(mlflow, "experiment", root.name, source),
        tracking_uri=env.get("MLFLOW_TRACKING_URI") or _str(mlflow, "tracking_uri", default_tracking_uri(root), source),
        registry_mirror=_registry_mirror(env.get("GOVERN_REGISTRY_MIRROR") or mlflow.get("registry_mirror"), source),
        lock_timeout=_seconds(settings, "lock_timeout", 30.0, source),
        source=source,
        stages=tuple(stages),
        four_eyes=_bool(registry, "four_eyes", None, source),
        gates=gates_module.parse_table(registry.get("gates", {}), tuple(stages), source),
        require_approval=_approval_stages(registry, tuple(stages), source),
        jobs_python=jobs.get("python") and _str(jobs, "python", "", source),
        jobs_concurrency=concurrency,
        jobs_lock_branch=lock_branch,
        jobs_sandbox=sandbox,
        jobs_run_as=_str(jobs, "run_as", "", source) if "run_as" in jobs else None,
        jobs_network=network,
        jobs_pass_env=check_pass_env(jobs.get("pass_env", []), source),
        server=limits,
        audit=audit,
        gto_tags=_bool(registry, "gto_tags", True, source),
        env_stages=dict(env_stages),
        environments=tuple(environments),
        selection_metric=selection.get("metric") and _str(selection, "metric", "", source),
        selection_direction=direction,
        tolerances=tolerances,
        comparison=_comparison(ci, tolerances, source),
        auto_anchor=_bool(settings, "auto_anchor", False, source),
        signing_key=Path(signing_key).expanduser() if signing_key else None,
        trusted_keys=tuple(trusted),
        server_url=server_url.rstrip("/") if server_url else None,
        mode=mode,
        two_admin_grants=_bool(access_table, "two_admin_grants", None, source),
        models={
            name: dict(value) for name, value in _table(settings, "models", source).items() if isinstance(value, dict)
        },
    )


def _ledger_setting(settings: dict[str, Any], env: Mapping[str, str], source: str) -> Path | str:
    """GOVERN_LEDGER, else `ledger`: a committed file may not carry the database's password."""
    ledger = ledger_location(
        env.get("GOVERN_LEDGER") or _str(settings, "ledger", DEFAULT_LEDGER, source),
        "GOVERN_LEDGER" if env.get("GOVERN_LEDGER") else f"{source}: `ledger`",
    )
    if not env.get("GOVERN_LEDGER") and isinstance(ledger, str) and has_password(ledger):
        raise ConfigError(
            f"{source}: `ledger` carries a password, and this file is committed: remove it from the URL and give it "
            "in PGPASSWORD or ~/.pgpass"
        )
    return ledger


def _stages_and_environments(
    registry: dict[str, Any], deploy: dict[str, Any], source: str
) -> tuple[list[str], dict[str, str], list[str]]:
    """The registry's stages, the stage each environment requires, and the environments: checked together,
    since each names the others."""
    stages = registry.get("stages", list(DEFAULT_STAGES))
    if not isinstance(stages, list) or not stages or not all(isinstance(x, str) and x for x in stages):
        raise ConfigError(f"{source}: `registry.stages` must be a non-empty list of stage names")
    default_gates = {env: stage for env, stage in DEFAULT_ENV_STAGES.items() if stage in stages}
    env_stages = deploy.get("require_stage", default_gates)
    if not isinstance(env_stages, dict) or not all(isinstance(v, str) for v in env_stages.values()):
        raise ConfigError(f"{source}: `deploy.require_stage` must map environment names to stage names")
    environments = deploy.get("environments", list(dict.fromkeys([*DEFAULT_ENVIRONMENTS, *env_stages])))
    if (
        not isinstance(environments, list)
        or not environments
        or not all(isinstance(e, str) and e for e in environments)
    ):
        raise ConfigError(f"{source}: `deploy.environments` must be a non-empty list of environment names")
    undeclared = sorted(set(env_stages) - set(environments))
    if undeclared:
        raise ConfigError(
            f"{source}: `deploy.require_stage` names {', '.join(undeclared)}, which `deploy.environments` does not "
            "declare: add it there, or remove it"
        )
    unknown_stages = sorted(set(env_stages.values()) - set(stages))
    if unknown_stages:
        raise ConfigError(
            f"{source}: `deploy.require_stage` requires stage(s) {', '.join(unknown_stages)}, which "
            f"`registry.stages` does not have ({', '.join(stages)})"
        )
    return stages, env_stages, environments


def _jobs_scheduling(jobs: dict[str, Any], source: str) -> tuple[int, str]:
    """How many training jobs run at once, and the branch each job's lock commit goes to."""
    concurrency = jobs.get("concurrency", 1)
    lock_branch = jobs.get("lock_branch", "govern/trainings/{job}")
    if not isinstance(lock_branch, str) or (lock_branch and not branch_pattern_ok(lock_branch)):
        raise ConfigError(
            f'{source}: `jobs.lock_branch` is a branch name ({{job}} stands for the job\'s id), or "" for none'
        )
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 64:
        raise ConfigError(f"{source}: `jobs.concurrency` must be a whole number from 1 to 64")
    return concurrency, lock_branch


def _server_identity(server: dict[str, Any], source: str) -> tuple[list[str], str | None, str | None]:
    """The keys whose signatures count, the server's own key file, and its address."""
    trusted = server.get("trusted_keys", [])
    if not isinstance(trusted, list) or not all(isinstance(k, str) and TRUSTED_KEY.match(k) for k in trusted):
        raise ConfigError(
            f"{source}: `server.trusted_keys` is a list of key fingerprints as `govern serve` prints them "
            "(ed25519: and 32 hexadecimal characters)"
        )
    signing_key = server.get("signing_key")
    if signing_key is not None and (not isinstance(signing_key, str) or not signing_key):
        raise ConfigError(f"{source}: `server.signing_key` is the path of the server's key file")
    server_url = server.get("url")
    if server_url is not None and (not isinstance(server_url, str) or not re.match(r"^https?://", server_url)):
        raise ConfigError(f"{source}: `server.url` is the server's root address, such as https://govern.example")
    return trusted, signing_key, server_url


SEGMENT = re.compile(r"[A-Za-z0-9_{}-][A-Za-z0-9._{}-]*")


def branch_pattern_ok(name: str) -> bool:
    """A branch name git accepts (`git check-ref-format --branch`), `{job}` included: slash-separated segments of
    safe characters, none empty, starting with a dot or ending in .lock; no "..", no leading "-"."""
    return (
        ".." not in name
        and not name.startswith("-")
        and all(SEGMENT.fullmatch(part) and not part.endswith(".lock") for part in name.split("/"))
    )


def _jobs_isolation(jobs: Mapping[str, Any], source: str) -> tuple[str, bool]:
    """`jobs.sandbox` and `jobs.network`: without a sandbox nothing takes the network away, so saying so is required."""
    sandbox = jobs.get("sandbox", DEFAULT_SANDBOX)
    if sandbox not in SANDBOXES:
        raise ConfigError(f"{source}: `jobs.sandbox` is one of {', '.join(SANDBOXES)}, not {sandbox!r}")
    network = _bool(jobs, "network", False, source)
    if sandbox == "none" and not network:
        raise ConfigError(
            f'{source}: `jobs.sandbox = "none"` cannot keep jobs off the network: set `jobs.network = true` as well '
            "(a job then reaches every service this host reaches, a trust-auth PostgreSQL included), or keep bwrap"
        )
    return sandbox, network


SERVER_SETTINGS = {
    "max_requests", "max_requests_per_principal", "max_predictions", "max_predictions_per_principal",
    "lock_wait", "token_staleness", "token_refresh", "refusal_pause", "trusted_proxies",
    "signing_key", "trusted_keys", "url",
}  # fmt: skip
AUDIT_SETTINGS = {"timeout", "max_rows", "max_bytes", "threads", "memory_limit"}
MEMORY = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")


def server_settings(table: Mapping[str, Any], source: str) -> ServerSettings:
    """`[tool.govern.server]`, each value checked (a limit of 0 would refuse everything, a typo nothing)."""
    _refuse_unknown(table, SERVER_SETTINGS, "server", source)
    default = ServerSettings()
    counts = {
        key: _count(table, key, getattr(default, key), source, "server", 1, 10_000)
        for key in ("max_requests", "max_requests_per_principal", "max_predictions", "max_predictions_per_principal")
    }
    times = {
        key: _positive_seconds(table, key, getattr(default, key), source, "server")
        for key in ("lock_wait", "token_staleness", "token_refresh")
    }
    pause = table.get("refusal_pause", default.refusal_pause)
    if isinstance(pause, bool) or not isinstance(pause, int | float) or not 0 <= pause <= 10:
        raise ConfigError(f"{source}: `server.refusal_pause` must be a number of seconds from 0 to 10, got {pause!r}")
    proxies = table.get("trusted_proxies", [])
    if not isinstance(proxies, list) or not all(isinstance(p, str) and _is_address(p) for p in proxies):
        raise ConfigError(
            f"{source}: `server.trusted_proxies` must be a list of IP addresses or networks (such as "
            f'["127.0.0.1"] for a proxy on this host), got {proxies!r}'
        )
    return ServerSettings(**counts, **times, refusal_pause=float(pause), trusted_proxies=tuple(proxies))


def audit_limits(table: Mapping[str, Any], source: str) -> AuditLimits:
    """`[tool.govern.audit]`: the limits of an auditor's statement."""
    _refuse_unknown(table, AUDIT_SETTINGS, "audit", source)
    default = AuditLimits()
    memory = table.get("memory_limit", default.memory_limit)
    if not isinstance(memory, str) or not MEMORY.match(memory.strip()):
        raise ConfigError(f'{source}: `audit.memory_limit` is a size such as "1GB" or "512MiB", got {memory!r}')
    return AuditLimits(
        timeout=_positive_seconds(table, "timeout", default.timeout, source, "audit"),
        max_rows=_count(table, "max_rows", default.max_rows, source, "audit", 1, 10**9),
        max_bytes=_count(table, "max_bytes", default.max_bytes, source, "audit", 1024, 1 << 40),
        threads=_count(table, "threads", default.threads, source, "audit", 1, 256),
        memory_limit=memory.strip(),
    )


def _count(table: Mapping[str, Any], key: str, default: int, source: str, where: str, low: int, high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{source}: `{where}.{key}` must be a whole number from {low} to {high}, got {value!r}")
    return value


def _positive_seconds(table: Mapping[str, Any], key: str, default: float, source: str, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"{source}: `{where}.{key}` must be a positive number of seconds, got {value!r}")
    return float(value)


def _is_address(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def check_environment(cfg: Config, env: str) -> str:
    """`env` if the project declares it; environments are a declared list, so a typo is not a new one."""
    if env not in cfg.environments:
        where = "govern.toml" if cfg.source == CONFIG_FILE else "pyproject.toml [tool.govern.deploy]"
        raise InvalidInput(
            f"Unknown environment {env!r}: the environments are {', '.join(cfg.environments)}; "
            f"to add one, list it in `environments` of {where}"
        )
    return env


def configured_ledger(start: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | str:
    """The ledger to read (a file path or a PostgreSQL URL), without needing a git repository when GOVERN_LEDGER
    is set."""
    env = os.environ if environ is None else environ
    if env.get("GOVERN_LEDGER"):
        found = ledger_location(env["GOVERN_LEDGER"], "GOVERN_LEDGER")
        return found if isinstance(found, str) else found.resolve()
    return load(find_root(start), env).ledger


URL_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


def ledger_location(value: str, source: str) -> Path | str:
    """Where the ledger lives: a DuckDB file path, or a `postgresql://` URL (kept as the string). Any other URL
    is refused by name rather than taken for a folder called `s3:` beside the project."""
    found = URL_SCHEME.match(value)
    if found is None:
        return Path(value)
    if found["scheme"].lower().split("+")[0] in ("postgresql", "postgres"):
        database = urllib.parse.urlsplit(value).path.strip("/")
        if not database:
            raise ConfigError(
                f"{source} {without_password(value)} names no database: give postgresql://USER@HOST[:PORT]/DATABASE"
            )
        return value
    raise ConfigError(
        f"{source} {value.split('://')[0]}://... is not a ledger location: give a file path, or a postgresql:// URL"
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"Cannot read {path}: {error.strerror}; fix its permissions") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML ({error}); fix the file") from None


def _tolerances(ci: Mapping[str, Any], source: str) -> dict[str, float]:
    tolerances = ci.get("tolerances", {})
    if not isinstance(tolerances, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < math.inf for v in tolerances.values()
    ):
        raise ConfigError(f"{source}: `ci.tolerances` must map metric names to non-negative finite numbers")
    return {k: float(v) for k, v in tolerances.items()}


def _comparison(ci: Mapping[str, Any], tolerances: dict[str, float], source: str) -> equivalence.Rules:
    """`[ci.models]` (how `type: model` artifacts are judged) and `[ci.outputs]` (a rule per path or glob)."""
    models = _rule({"rule": "predictions", **_table(ci, "models", source, "ci.models")}, "ci.models", source)
    outputs = _table(ci, "outputs", source, "ci.outputs")
    rules = {}
    for pattern, value in outputs.items():
        where = f"ci.outputs.{pattern!r}"
        declared = {"rule": value} if isinstance(value, str) else value
        if not isinstance(declared, dict):
            raise ConfigError(f'{source}: `{where}` must be a rule name or a table such as {{ rule = "table" }}')
        inherited = {"atol": models.atol, "rtol": models.rtol}  # one numeric tolerance per project
        rules[pattern] = _rule({**inherited, **declared}, where, source)
    return equivalence.Rules(outputs=rules, models=models, tolerances=tolerances)


def _rule(table: Mapping[str, Any], where: str, source: str) -> equivalence.Rule:
    _refuse_unknown(table, {"rule", "atol", "rtol", "data", "label_columns"}, where, source)
    name = table.get("rule")
    if name not in equivalence.RULES:
        raise ConfigError(f"{source}: `{where}` rule must be one of {', '.join(equivalence.RULES)}, got {name!r}")
    bounds = {}
    for key, default in (("atol", equivalence.DEFAULT_ATOL), ("rtol", equivalence.DEFAULT_RTOL)):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise ConfigError(f"{source}: `{where}.{key}` must be a non-negative finite number, got {value!r}")
        bounds[key] = float(value)
    lists = {}
    for key in ("data", "label_columns"):
        value = table.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) and v for v in value)):
            raise ConfigError(f"{source}: `{where}.{key}` must be a list of names, got {value!r}")
        lists[key] = tuple(value) if value is not None else None
    return equivalence.Rule(name, bounds["atol"], bounds["rtol"], lists["data"] or (), lists["label_columns"])


SETTINGS = {
    "ledger", "lock_timeout", "auto_anchor", "mlflow", "registry", "deploy", "selection", "ci", "models", "jobs",
    "server", "mode", "access", "audit",
}  # fmt: skip
ACCESS_SETTINGS = {"two_admin_grants"}
TRUSTED_KEY = re.compile(r"^ed25519:[0-9a-f]{32}$")
MLFLOW_SETTINGS = {"experiment", "tracking_uri", "registry_mirror"}


def _refuse_unknown(table: Mapping[str, Any], known: set[str], where: str | None, source: str) -> None:
    """A misspelt key is refused, not ignored: `legder = ...` must not leave a team writing to the wrong ledger."""
    unknown = sorted(set(table) - known)
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    place = f"`{where}` has" if where else "govern's settings have"
    raise ConfigError(f"{source}: {place} unknown key(s) {', '.join(unknown)}{hint}; use {', '.join(sorted(known))}")


def _table(settings: Mapping[str, Any], key: str, source: str, name: str | None = None) -> dict[str, Any]:
    value = settings.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: `{name or key}` must be a table, such as [tool.govern.{name or key}]")
    return value


def _bool(table: Mapping[str, Any], key: str, default: bool | None, source: str) -> bool:
    value = table.get(key, default)
    if value is None and default is None:
        return None  # type: ignore[return-value] - unset: the mode decides
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: `{key}` must be true or false, got {value!r}")
    return value


def _approval_stages(
    registry: Mapping[str, Any], stages: tuple[str, ...], source: str
) -> bool | tuple[str, ...] | None:
    value = registry.get("require_approval")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, list) and value and all(isinstance(s, str) for s in value):
        unknown = sorted(set(value) - set(stages))
        if unknown:
            raise ConfigError(
                f"{source}: `registry.require_approval` names {', '.join(unknown)}, which `registry.stages` does not "
                f"have ({', '.join(stages)})"
            )
        return tuple(value)
    raise ConfigError(f"{source}: `registry.require_approval` is true, false, or a list of stages, got {value!r}")


def _seconds(table: Mapping[str, Any], key: str, default: float, source: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{source}: `{key}` must be a number of seconds, got {value!r}")
    return float(value)


def _str(table: Mapping[str, Any], key: str, default: str, source: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: `{key}` must be a non-empty string, got {value!r}")
    return value
