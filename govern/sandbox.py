"""Run code a user controls (training stages, inference entry points) with no power over the ledger.

A commit's stage code and a model's `meta.infer` command are treated as a CI system treats a pull request from a
fork: they get

- an environment built from an allow-list (`environment`): PATH, locale, time zone, thread counts, hash seed,
  SOURCE_DATE_EPOCH and the names a project lists in `[tool.govern.jobs] pass_env`; HOME and TMPDIR inside the
  run's scratch directory; never GOVERN_*, PG*, MLFLOW_*, cloud credentials, tokens or the session secret;
- on the server (`Policy.server`), a process of their own: an unprivileged OS user (`jobs.run_as`) and a
  bubblewrap sandbox (`jobs.sandbox = "bwrap"`, the default): a new mount namespace showing only the system's
  programs and libraries, the interpreter, the paths a run names (read-only unless it writes them) and nothing of
  the server's HOME or the ledger's directory; no network unless `jobs.network = true`, its own process tree
  (killed with it), its own session.

`check` proves, before a job or a prediction starts, that the confined process can neither read nor write the
ledger file, its directory or the server's credentials: it runs a probe exactly as the job would run and asks.

The CLI's own runs (`govern predict`, `govern ci verify` on a laptop) get the scrubbed environment only
(`Policy.local`): the user runs their own code there, under their own account.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from govern.errors import ConfigError, GovernError

if TYPE_CHECKING:
    from govern.config import Config
    from govern.storage import LedgerStore

SANDBOXES = ("bwrap", "none")
DEFAULT_SANDBOX = "bwrap"

# Passed through when the server has them: what makes a run reproducible and its numbers the same.
ALLOWED = frozenset(
    {
        "PATH", "LANG", "LANGUAGE", "TZ", "PYTHONHASHSEED", "SOURCE_DATE_EPOCH",
        "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS",
        "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS", "GOTO_NUM_THREADS",
    }
)  # fmt: skip
ALLOWED_PREFIXES = ("LC_", "OMP_", "OPENBLAS_", "MKL_")
# Never passed, whatever a project lists: the ledger's and MLflow's addresses and credentials, cloud and database
# credentials, tokens, secrets. Matched case-insensitively.
FORBIDDEN = (
    "GOVERN_*", "PG*", "MLFLOW_*", "AWS_*", "GOOGLE_*", "GCLOUD_*", "GCP_*", "AZURE_*", "ARM_*", "DATABASE_URL",
    "*TOKEN*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*CREDENTIAL*", "*_KEY", "*_KEY_ID", "*APIKEY*",
    "SSH_AUTH_SOCK", "GIT_ASKPASS", "SSH_ASKPASS", "*_SESSION",
)  # fmt: skip
SET_BY_SANDBOX = frozenset({"HOME", "TMPDIR", "TMP", "TEMP", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"})
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# What a confined process sees of the host besides the paths its run names: programs, libraries and the few files
# of /etc that name resolution, TLS and the dynamic loader read (not the whole of /etc).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt/conda")
ETC_FILES = (
    "passwd", "group", "nsswitch.conf", "hosts", "host.conf", "resolv.conf", "localtime", "timezone",
    "ssl/certs", "ssl/openssl.cnf", "ca-certificates", "ca-certificates.conf", "ld.so.cache", "ld.so.conf",
    "ld.so.conf.d", "alternatives",
    "gitconfig", "mime.types", "os-release", "fonts",
)  # fmt: skip
PROBE_TIMEOUT = 60.0
CHECK_TTL = 60.0  # seconds a passed check is trusted for predictions (a job checks at every start)


class SandboxUnavailable(GovernError):
    """The configured isolation cannot be used, or would not keep the ledger out of reach: nothing was run."""

    http_status = 503  # the server cannot confine user code as configured: nothing runs until it can


@dataclass(frozen=True)
class Policy:
    """How user-controlled code runs. `confine` False: the scrubbed environment only (the CLI's own runs)."""

    confine: bool = False
    sandbox: str = "none"
    run_as: str | None = None
    network: bool = True
    pass_env: tuple[str, ...] = ()

    @classmethod
    def local(cls, config: Config | None = None) -> Policy:
        return cls(pass_env=config.jobs_pass_env if config is not None else ())

    @classmethod
    def server(cls, config: Config) -> Policy:
        return cls(True, config.jobs_sandbox, config.jobs_run_as, config.jobs_network, config.jobs_pass_env)


def check_pass_env(names: object, source: str) -> tuple[str, ...]:
    """`jobs.pass_env` as configured: variable names, none of them a secret's or one the sandbox sets."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f'{source}: `jobs.pass_env` must be a list of variable names, such as ["HF_HUB_OFFLINE"]')
    for name in names:
        if not ENV_NAME.match(name):
            raise ConfigError(f"{source}: `jobs.pass_env` names {name!r}, which is not an environment variable name")
        if name.upper() in SET_BY_SANDBOX:
            raise ConfigError(
                f"{source}: `jobs.pass_env` names {name}, which the sandbox sets itself (inside the run's scratch "
                "directory): remove it"
            )
        pattern = forbidden(name)
        if pattern is not None:
            raise ConfigError(
                f"{source}: `jobs.pass_env` names {name}, which matches {pattern}: credentials and govern's own "
                "settings never reach a job or a model; remove it (give the job what it needs as a file or a "
                "parameter instead)"
            )
    return tuple(names)


def forbidden(name: str) -> str | None:
    """The forbidden pattern `name` matches, if any."""
    upper = name.upper()
    return next((p for p in FORBIDDEN if fnmatch.fnmatchcase(upper, p)), None)


def environment(
    policy: Policy,
    home: Path,
    tmp: Path,
    extra: Mapping[str, str] | None = None,
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a confined run: the allow-list and `pass_env` taken from `source` (this process's),
    never a forbidden name; HOME and TMPDIR in the run's scratch; `extra` (govern's own settings for the run)."""
    given = os.environ if source is None else source
    wanted = set(policy.pass_env)
    env = {
        name: value
        for name, value in given.items()
        if (name in ALLOWED or name.startswith(ALLOWED_PREFIXES) or name in wanted) and forbidden(name) is None
    }
    env.setdefault("PATH", os.defpath)
    env.update(HOME=str(home), TMPDIR=str(tmp), **dict(extra or {}))
    return env


@dataclass(frozen=True)
class Launch:
    """What to hand to subprocess.Popen: the argument vector (bwrap's, when sandboxed), the environment, and the
    user to run as."""

    argv: list[str]
    env: dict[str, str]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobUser:
    name: str
    uid: int
    gid: int


def job_user(policy: Policy) -> JobUser | None:
    """The unprivileged user confined runs take, or None (the server's own user)."""
    if not policy.confine or not policy.run_as:
        return None
    import pwd  # POSIX only, like run_as itself

    try:
        entry = pwd.getpwnam(policy.run_as)
    except KeyError:
        raise SandboxUnavailable(
            f"`jobs.run_as` names {policy.run_as}, which is not a user of this host: create it "
            f"(useradd --system --no-create-home {policy.run_as}), or remove run_as"
        ) from None
    if entry.pw_uid == 0:
        raise SandboxUnavailable(f"`jobs.run_as` names {policy.run_as}, which is root: name an unprivileged user")
    if os.geteuid() != 0 and os.geteuid() != entry.pw_uid:
        raise SandboxUnavailable(
            f"`jobs.run_as = {policy.run_as!r}` needs the server to run as root (it runs as uid {os.geteuid()}): "
            "start it as root, or remove run_as"
        )
    return JobUser(policy.run_as, entry.pw_uid, entry.pw_gid)


def bwrap_path(policy: Policy) -> str | None:
    if not policy.confine or policy.sandbox != "bwrap":
        return None
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed, and `jobs.sandbox` is bwrap (the default): install it "
            '(apt-get install bubblewrap), or set [tool.govern.jobs] sandbox = "none" and run_as'
        )
    return found


def prepare(
    argv: Sequence[str],
    *,
    policy: Policy,
    scratch: Path,
    cwd: Path,
    readonly: Iterable[Path] = (),
    writable: Iterable[Path] = (),
    hidden: Iterable[Path] = (),
    interpreters: Iterable[str] = (),
    extra_env: Mapping[str, str] | None = None,
) -> Launch:
    """Build how to start `argv` in `cwd` under `policy`. `scratch` holds the run's HOME and TMPDIR (and is writable
    by the run); `readonly` and `writable` are the host paths it may see, at their own paths; `hidden` are never
    shown, even inside a path it may see (the ledger's directory, the server's HOME always are); `interpreters`
    are Pythons whose installation the run needs (the first word of `argv` is looked up too)."""
    home, tmp = scratch / "home", scratch / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    env = environment(policy, home, tmp, extra_env)
    if not policy.confine:
        return Launch(list(argv), env)
    user = job_user(policy)
    bwrap = bwrap_path(policy)
    writable = [scratch, *writable]
    if user is not None:
        for path in writable:
            _hand_over(path, user)
    if bwrap is None:
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []} if user is not None else {}
        return Launch(list(argv), env, kwargs)
    command = list(argv)
    # A bare name is looked up on the server's PATH (trusted: its Python may be asked where it is installed). A
    # path in the command is the command's own: shown only if it is already visible (the committed code, PATH),
    # never executed here nor mounted, or a template could show any folder of the host, or run a file as root.
    resolved = shutil.which(command[0], path=env["PATH"]) if "/" not in command[0] else None
    programs = [*interpreters, *([resolved] if resolved else [])]
    mounts = _mounts(programs, env["PATH"], list(readonly), writable, [*hidden, *always_hidden()], cwd)
    if user is not None:
        drop = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--no-new-privs"]
        command = [*drop, "--inh-caps=-all", "--bounding-set=-all", "--", *command]
    return Launch([bwrap, *_bwrap_options(policy, user), *mounts, "--chdir", str(cwd), "--", *command], env)


def _bwrap_options(policy: Policy, user: JobUser | None) -> list[str]:
    options = ["--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    options.append("--unshare-cgroup-try")
    if not policy.network:
        options.append("--unshare-net")
    if user is None and os.geteuid() == 0:
        options += ["--cap-drop", "ALL"]  # root without capabilities; run_as is what drops root's files too
    return options


def always_hidden() -> list[Path]:
    """The server's HOME (~/.pgpass, ~/.config: the signing key, MLflow and cloud credentials) is never shown."""
    home = os.environ.get("HOME")
    return [Path(home)] if home and home != "/" else []


def _mounts(
    programs: Sequence[str],
    path_variable: str,
    readonly: list[Path],
    writable: list[Path],
    hidden: list[Path],
    cwd: Path,
) -> list[str]:
    """bwrap's mount options: a fresh root with the system directories, the PATH's directories and every Python
    the run needs read-only, its own paths, masks over the hidden ones; applied parents first."""
    ops: list[tuple[str, str, str]] = []  # (kind, source, destination)
    for name in SYSTEM_DIRS:
        if os.path.islink(name):
            ops.append(("symlink", os.readlink(name), name))
        elif os.path.isdir(name):
            ops.append(("ro", name, name))
    for name in ETC_FILES:
        if os.path.lexists(f"/etc/{name}"):
            ops.append(("ro", f"/etc/{name}", f"/etc/{name}"))
    shown = [Path(p) for p in path_variable.split(os.pathsep) if p.startswith("/") and os.path.isdir(p)]
    shown += [p.parent for p in shown if p.name == "shims" and (p.parent / "libexec" / "pyenv").exists()]  # pyenv
    for program in programs:
        shown += interpreter_paths(program)
    covered = [Path(source) for kind, source, _ in ops if kind == "ro"]
    for path in dict.fromkeys([*shown, *readonly]):
        real = Path(os.path.realpath(path))
        if any(_within(real, c) for c in covered):
            continue  # already visible: /bin on PATH is /usr/bin, a venv's lib is under its prefix
        covered.append(real)
        ops.append(("ro", str(real), str(path)))
    for path in dict.fromkeys(writable):
        ops.append(("rw", str(path), str(path)))
    ledger_like = [h for h in hidden if h not in always_hidden()]
    for kind, source, _ in ops:
        if kind == "symlink":
            continue
        for secret in ledger_like:
            if _within(Path(source), secret):
                raise SandboxUnavailable(
                    f"A job would have to see {source}, which is inside {secret} (the ledger's directory): move "
                    "the interpreter, the DVC cache or the scratch directory out of it"
                )
    bound = [Path(src) for kind, src, _ in ops if kind in ("ro", "rw")]
    for secret in hidden:
        if any(_within(secret, b) or secret == b for b in bound):
            ops.append(("mask", "", str(secret if secret.is_dir() else secret.parent)))
    ops.append(("tmpfs", "", "/tmp"))
    # bwrap makes the missing parents of a mount point private (0700): an interpreter shown inside a hidden HOME, a
    # scratch directory under /tmp must be reachable by the job's user, so their parents are made 0755 first.
    destinations = {Path(d) for kind, _, d in ops}
    for kind, _, destination in list(ops):
        if kind not in ("ro", "rw"):
            continue
        for parent in Path(destination).parents:
            if (
                parent == Path("/")
                or parent in destinations
                or any(_within(parent, Path(d)) for k, _, d in ops if k in ("ro", "rw", "symlink"))
            ):
                continue
            destinations.add(parent)
            ops.append(("dir", "", str(parent)))
    order = {"symlink": 0, "tmpfs": 0, "dir": 0, "ro": 1, "rw": 1, "mask": 2}
    # Parents before children; at one depth, binds before the masks that hide them. A bind inside a masked
    # directory (an interpreter under the server's HOME) is applied after the mask, so it stays visible.
    ops.sort(key=lambda op: (len(Path(op[2]).parts), order[op[0]]))
    args = ["--proc", "/proc", "--dev", "/dev"]
    for kind, source, destination in ops:
        if kind == "symlink":
            args += ["--symlink", source, destination]
        elif kind == "ro":
            args += ["--ro-bind", source, destination]
        elif kind == "rw":
            args += ["--bind", source, destination]
        elif kind == "dir":
            args += ["--perms", "0755", "--dir", destination]
        elif destination == "/tmp":
            args += ["--perms", "1777", "--tmpfs", destination]
        else:
            args += ["--tmpfs", destination]
    return args


def _within(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
    except ValueError:
        return False
    return True


PROBE_INTERPRETER = """
import importlib.util, json, sys
spec = importlib.util.find_spec("govern")
places = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path]
places += list(spec.submodule_search_locations or []) if spec else []
print(json.dumps(places))
"""


def interpreter_paths(program: str) -> list[Path]:
    """What running `program` needs to see: for a Python, its installation (prefixes, sys.path, govern's package
    where it is installed editable); for anything else, the directory it is in."""
    resolved = os.path.realpath(program)
    if not os.path.isfile(resolved):
        return []
    if not re.match(r"^python[0-9.]*$", os.path.basename(resolved)):
        return [Path(resolved).parent]
    stat = os.stat(resolved)
    return list(_python_places(program, stat.st_mtime_ns))


@functools.lru_cache(maxsize=32)
def _python_places(program: str, _mtime: int) -> tuple[Path, ...]:
    try:
        done = subprocess.run(
            [program, "-I", "-c", PROBE_INTERPRETER], capture_output=True, text=True, timeout=PROBE_TIMEOUT, env={}
        )
        places = json.loads(done.stdout) if done.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        places = []
    found = {Path(program).parent, Path(os.path.realpath(program)).parent}
    for place in places:
        if isinstance(place, str) and place.startswith("/") and os.path.exists(place):
            found.add(Path(place))
    # Keep the outermost of nested places (a prefix covers its lib/python3.x/site-packages).
    kept = sorted(found, key=lambda p: len(p.parts))
    return tuple(p for i, p in enumerate(kept) if not any(_within(p, q) for q in kept[:i]))


def _hand_over(path: Path, user: JobUser) -> None:
    """Give the run's writable paths to its user (without following links the run could have planted)."""
    os.lchown(path, user.uid, user.gid)
    if not path.is_dir() or path.is_symlink():
        return
    for folder, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), user.uid, user.gid)


def protected_paths(ledger: LedgerStore) -> tuple[list[Path], list[Path]]:
    """(what a confined run must not read, what it must not write): the ledger file, its write-ahead log and its
    directory; the server's PostgreSQL password file and govern's configuration directory (the signing key)."""
    from govern import signing

    home = Path(os.environ.get("HOME") or "/nonexistent")
    secrets = [home / ".pgpass", home / ".config" / "govern"]
    if os.environ.get("PGPASSFILE"):
        secrets.append(Path(os.environ["PGPASSFILE"]))
    signer = signing.active()  # the server's key, wherever `[tool.govern.server] signing_key` put it
    if signer is not None:
        secrets += [signer.path, signer.path.parent]
    if ledger.backend != "postgresql":
        location = Path(ledger.location).resolve()
        files = [location, location.with_name(location.name + ".wal")]
        return [*files, *secrets], [*files, location.parent]
    state = ledger.state_dir
    return [state, *secrets], [state]


def ledger_hidden(ledger: LedgerStore) -> list[Path]:
    """Directories a confined run never sees: the ledger's (a file ledger) or its local state (PostgreSQL)."""
    if ledger.backend == "postgresql":
        return [ledger.state_dir.resolve()]
    return [Path(ledger.location).resolve().parent]


PROBE_ACCESS = """
import json, os, sys
asked = json.loads(sys.argv[1])
found = []
for path in asked["read"]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").close()
        found.append(f"read {path}")
    except OSError:
        pass
for path in asked["write"]:
    if os.path.exists(path) and os.access(path, os.W_OK):
        found.append(f"write {path}")
print(json.dumps(found))
"""

_checked: dict[tuple[Any, ...], float] = {}
_checked_lock = threading.Lock()


def check(
    policy: Policy,
    *,
    ledger: LedgerStore,
    python: str | None = None,
    readonly: Iterable[Path] = (),
    cache_for: float = 0.0,
) -> None:
    """Refuse (SandboxUnavailable, one line) unless a run under `policy` cannot read the ledger, its write-ahead log
    or the server's credentials, nor write the ledger or its directory. A probe runs as the run would (same user,
    same sandbox, seeing `readonly` and the installation of the job's `python` too) and reports what it could
    reach. `cache_for`: seconds a pass is trusted."""
    if not policy.confine:
        return
    readable, changeable = protected_paths(ledger)
    readonly = list(readonly)
    key = (policy, str(ledger.location), python, tuple(readonly))
    if cache_for:
        with _checked_lock:
            if time.monotonic() - _checked.get(key, -cache_for - 1) < cache_for:
                return
    interpreter = sys.executable  # the server's own Python asks; the job's interpreter is shown as the job sees it
    asked = json.dumps({"read": [str(p) for p in readable], "write": [str(p) for p in changeable]})
    with tempfile.TemporaryDirectory(prefix="govern-probe-") as scratch:
        os.chmod(scratch, 0o755)
        launch = prepare(
            [interpreter, "-I", "-S", "-c", PROBE_ACCESS, asked],
            policy=policy,
            scratch=Path(scratch),
            cwd=Path(scratch),
            readonly=readonly,
            hidden=ledger_hidden(ledger),
            interpreters=[interpreter, *([python] if python else [])],
        )
        try:
            done = subprocess.run(
                launch.argv, env=launch.env, cwd=scratch, capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                **launch.kwargs,
            )  # fmt: skip
        except OSError as error:
            who = f"a process as {policy.run_as}" if policy.run_as else "the job sandbox"
            raise SandboxUnavailable(
                f"{who} could not start {launch.argv[0]} ({error.strerror or error}): give that user access to the "
                'interpreter and its installation, or use sandbox = "bwrap" (it shows them to the job); nothing was run'
            ) from None
        except subprocess.SubprocessError as error:
            raise SandboxUnavailable(f"the job sandbox's probe did not finish ({error}): nothing was run") from None
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        how = f"the {policy.sandbox} sandbox" if policy.sandbox == "bwrap" else f"a process as {policy.run_as}"
        raise SandboxUnavailable(f"{how} does not start ({said}): nothing was run")
    try:
        reached = json.loads(done.stdout)
    except ValueError:
        raise SandboxUnavailable("the job sandbox's probe answered nonsense: nothing was run") from None
    if reached:
        who = policy.run_as or "the server's own user"
        raise SandboxUnavailable(
            f"a job running as {who} (sandbox {policy.sandbox}) could {reached[0]}"
            + (f" (and {len(reached) - 1} more)" if len(reached) > 1 else "")
            + ': refused to run it; set [tool.govern.jobs] run_as to a user who cannot, or sandbox = "bwrap"'
        )
    if cache_for:
        with _checked_lock:
            _checked[key] = time.monotonic()
