"""User code (training stages, inference entry points) runs with no power over the ledger (issue 25, finding 1).

Fast checks of the parts: an entry point is an argument vector, never a shell; the environment user code gets is
an allow-list; what `[tool.govern.jobs]` accepts; the probe that refuses a sandbox that could reach the ledger.
The real server, jobs and predictions are in tests/test_sandbox_jobs.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from support.sandbox import JOB_USER, governed_project, require_sandbox, served_version

from govern import sandbox
from govern.config import load
from govern.entrypoint import NotAPlainCommand, command
from govern.errors import ConfigError
from govern.storage.duckdb_log import Ledger

ECHO = 'python -c "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])" {input} {output}'
DEMO = "python pipelines/model.py infer --model {model} --input {input} --output {output}"
FILES = (Path("/m dir/model.pkl"), Path("/in/rows.csv"), Path("/out/it's.csv"))


@pytest.mark.parametrize(
    ("template", "argv"),
    [
        (DEMO, ["python", "pipelines/model.py", "infer", "--model", "/m dir/model.pkl", "--input", "/in/rows.csv",
                "--output", "/out/it's.csv"]),
        (ECHO, ["python", "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])", "/in/rows.csv",
                "/out/it's.csv"]),
        ("score --to={output} '{input}' 'cost: $5; no shell'", ["score", "--to=/out/it's.csv", "/in/rows.csv",
                                                                "cost: $5; no shell"]),
        ('python -c "print({{1: 2}})" {model}', ["python", "-c", "print({1: 2})", "/m dir/model.pkl"]),
    ],
)  # fmt: skip
def test_an_entry_point_is_an_argument_vector_filled_in_each_argument(template: str, argv: list[str]) -> None:
    assert command(template, *FILES) == argv


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("python score.py {input} {output}; python -m govern principals add mallory --role admin", ";"),
        ("python score.py {input} {output} && curl evil", "&"),
        ("python score.py {input} | tee {output}", "|"),
        ("python score.py {input} > {output}", ">"),
        ("python score.py < {input} {output}", "<"),
        ("python score.py {input} {output} $GOVERN_LEDGER", "$"),
        ('python score.py {input} {output} "$HOME/.pgpass"', "$"),
        ("python score.py `cat ~/.pgpass` {input} {output}", "`"),
        ("(python score.py {input} {output})", "("),
        ("GOVERN_CI_IDENTITY=alice python score.py {input} {output}", "GOVERN_CI_IDENTITY="),
        ("python score.py ~/model {input} {output}", "~"),
        ("python score.py {input} {output} # comment", "#"),
        ("python score.py data/*.csv {output}", "*"),
        ("python score.py {input}\npython -m govern tokens create mallory", "line break"),
    ],
)
def test_a_template_written_for_a_shell_is_refused_in_one_line(template: str, named: str) -> None:
    with pytest.raises(NotAPlainCommand) as refused:
        command(template, *FILES)
    said = str(refused.value)
    assert "uses shell syntax" in said and named in said and "plain command" in said and "\n" not in said


def test_the_sandbox_environment_keeps_the_allow_list_and_never_a_secret(tmp_path: Path) -> None:
    given = {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "OMP_NUM_THREADS": "1",
        "OPENBLAS_CORETYPE": "Haswell", "MKL_CBWR": "AUTO", "PYTHONHASHSEED": "0", "SOURCE_DATE_EPOCH": "1",
        "HF_HUB_OFFLINE": "1", "GOVERN_LEDGER": "postgresql://govern_writer:pw@db/x", "GOVERN_SESSION_SECRET": "s",
        "GOVERN_CI_IDENTITY": "alice (token 00d199502a68)", "GOVERN_TOKEN": "gvn_x", "PGPASSWORD": "pw",
        "PGHOST": "db", "MLFLOW_TRACKING_URI": "http://u:p@mlflow", "AWS_SECRET_ACCESS_KEY": "k",
        "GOOGLE_APPLICATION_CREDENTIALS": "/k.json", "AZURE_CLIENT_SECRET": "k", "DATABASE_URL": "postgresql://x",
        "GITHUB_TOKEN": "t", "HOME": "/root", "TMPDIR": "/var/tmp", "USER": "root", "SSH_AUTH_SOCK": "/s",
        "XDG_CONFIG_HOME": "/root/.config", "OPENAI_API_KEY": "k",
    }  # fmt: skip
    policy = sandbox.Policy(pass_env=("HF_HUB_OFFLINE",))

    env = sandbox.environment(policy, tmp_path / "home", tmp_path / "tmp", {"DVC_NO_ANALYTICS": "1"}, given)

    assert env == {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "OMP_NUM_THREADS": "1",
        "OPENBLAS_CORETYPE": "Haswell", "MKL_CBWR": "AUTO", "PYTHONHASHSEED": "0", "SOURCE_DATE_EPOCH": "1",
        "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp"),
        "DVC_NO_ANALYTICS": "1",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("jobs", "said"),
    [
        ('pass_env = ["PGPASSWORD"]', "`jobs.pass_env` names PGPASSWORD, which matches PG*"),
        ('pass_env = ["GOVERN_LEDGER"]', "which matches GOVERN_*"),
        ('pass_env = ["MLFLOW_TRACKING_PASSWORD"]', "which matches MLFLOW_*"),
        ('pass_env = ["HUGGINGFACE_TOKEN"]', "which matches *TOKEN*"),
        ('pass_env = ["HOME"]', "which the sandbox sets itself"),
        ('pass_env = ["A B"]', "is not an environment variable name"),
        ('pass_env = "HF_HUB_OFFLINE"', "must be a list of variable names"),
        ('sandbox = "docker"', "`jobs.sandbox` is one of bwrap, none, not 'docker'"),
        ('sandbox = "none"', "cannot keep jobs off the network: set `jobs.network = true`"),
        ("network = 1", "`network` must be true or false"),
        ('run_as = ""', "`run_as` must be a non-empty string"),
    ],
)
def test_a_jobs_setting_that_would_weaken_the_sandbox_is_a_configuration_error(
    tmp_path: Path, jobs: str, said: str
) -> None:
    (tmp_path / "govern.toml").write_text(f"[jobs]\n{jobs}\n")
    with pytest.raises(ConfigError) as refused:
        load(tmp_path)
    assert said in str(refused.value)


def test_the_jobs_settings_default_to_bubblewrap_without_network(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    assert (cfg.jobs_sandbox, cfg.jobs_run_as, cfg.jobs_network, cfg.jobs_pass_env) == ("bwrap", None, False, ())
    (tmp_path / "govern.toml").write_text(
        '[jobs]\nsandbox = "none"\nnetwork = true\nrun_as = "govern-job"\npass_env = ["HF_HUB_OFFLINE"]\n'
    )
    cfg = load(tmp_path)
    assert sandbox.Policy.server(cfg) == sandbox.Policy(True, "none", "govern-job", True, ("HF_HUB_OFFLINE",))


SPY = (
    "import json, os, sys; "
    "json.dump({{'env': dict(os.environ), 'home': os.path.expanduser('~')}}, open(sys.argv[2], 'w'))"
)


def test_govern_predict_runs_the_entry_point_with_a_scrubbed_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = governed_project(tmp_path / "project", '[jobs]\npass_env = ["HF_HUB_OFFLINE"]\n')
    served_version(project, f'python -c "{SPY}" {{input}} {{output}}')
    (tmp_path / "rows.csv").write_text("a\n1\n")
    for name, value in {"GOVERN_SESSION_SECRET": "the-session-secret", "PGPASSWORD": "S3cret",
                        "MLFLOW_TRACKING_TOKEN": "t0k", "HF_HUB_OFFLINE": "1",
                        "GOVERN_CI_IDENTITY": "ci:runner-42"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)

    done = run_cli("predict", "churn", "1", "--input", str(tmp_path / "rows.csv"), "--output",
                   str(tmp_path / "seen.json"), cwd=project)  # fmt: skip

    assert done.exit_code == 0, done.output
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert not [k for k in seen["env"] if k.startswith(("GOVERN_", "PG", "MLFLOW_"))], seen["env"]
    assert "S3cret" not in json.dumps(seen) and "the-session-secret" not in json.dumps(seen)
    assert seen["env"]["HF_HUB_OFFLINE"] == "1", "a name the project lists in pass_env is passed"
    assert seen["home"] != os.environ["HOME"] and seen["home"].startswith(os.environ.get("TMPDIR", "/tmp"))


def test_govern_predict_refuses_a_shell_template_and_never_runs_the_chained_command(tmp_path: Path) -> None:
    project = governed_project(tmp_path / "project")
    marker = tmp_path / "chained-command-ran"
    served_version(project, f"{ECHO}; touch {marker}")
    (tmp_path / "rows.csv").write_text("a\n1\n")
    ledger = Ledger(project / "audit" / "ledger.duckdb")
    before = ledger.head()

    done = run_cli("predict", "churn", "1", "--input", str(tmp_path / "rows.csv"), "--output",
                   str(tmp_path / "out.csv"), "--record", cwd=project)  # fmt: skip

    assert done.exit_code != 0 and "uses shell syntax, a command separator (;)" in done.output, done.output
    assert len(done.output.strip().splitlines()) == 1 and "Traceback" not in done.output
    assert not marker.exists() and not (tmp_path / "out.csv").exists()
    assert ledger.head() == before, "nothing recorded"


def _ledger_in(tmp_path: Path) -> Ledger:
    folder = tmp_path / "project" / "audit"
    folder.mkdir(parents=True)
    ledger = Ledger(folder / "ledger.duckdb")
    ledger.append([__import__("conftest").snapshot_event(1)])
    return ledger


def test_the_probe_refuses_a_job_that_would_run_as_the_servers_own_user_without_a_sandbox(tmp_path: Path) -> None:
    ledger = _ledger_in(tmp_path)
    with pytest.raises(sandbox.SandboxUnavailable) as refused:
        sandbox.check(sandbox.Policy(True, "none", None, True), ledger=ledger)
    said = str(refused.value)
    assert f"could read {ledger.path}" in said and "refused to run it" in said and "run_as" in said


def test_the_probe_passes_bubblewrap_which_shows_neither_the_ledger_nor_home(tmp_path: Path) -> None:
    require_sandbox()
    ledger = _ledger_in(tmp_path)
    (Path(os.environ["HOME"]) / ".pgpass").write_text("*:*:*:*:S3cret\n")
    sandbox.check(sandbox.Policy(True, "bwrap", None, False), ledger=ledger)

    with pytest.raises(sandbox.SandboxUnavailable) as refused:  # the DVC cache configured inside the ledger's folder
        sandbox.check(sandbox.Policy(True, "bwrap", None, False), ledger=ledger, readonly=[ledger.path.parent / "c"])
    assert "inside" in str(refused.value) and "the ledger's directory" in str(refused.value)


def test_the_probe_names_what_is_missing_an_unknown_user_or_bubblewrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = _ledger_in(tmp_path)
    with pytest.raises(sandbox.SandboxUnavailable) as refused:
        sandbox.check(sandbox.Policy(True, "bwrap", "no-such-user-here", False), ledger=ledger)
    assert "`jobs.run_as` names no-such-user-here, which is not a user of this host" in str(refused.value)

    monkeypatch.setattr(sandbox.shutil, "which", lambda *_a, **_k: None)  # a host without bubblewrap
    with pytest.raises(sandbox.SandboxUnavailable) as refused:
        sandbox.check(sandbox.Policy(True, "bwrap", None, False), ledger=ledger)
    assert "bubblewrap (bwrap) is not installed" in str(refused.value) and "apt-get install bubblewrap" in str(
        refused.value
    )


PEEK = """
import json, os, socket, sys
seen = {"uid": os.getuid(), "env": sorted(os.environ), "root": sorted(os.listdir("/"))}
for path in sys.argv[1:]:
    try:
        open(path, "rb").read(1)
        seen[path] = "read"
    except OSError as error:
        seen[path] = type(error).__name__
try:
    socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    seen["postgres"] = "connected"
except OSError as error:
    seen["postgres"] = type(error).__name__
print(json.dumps(seen))
"""


@pytest.mark.parametrize("run_as", [None, JOB_USER])
def test_a_confined_process_sees_no_ledger_no_home_no_network(tmp_path: Path, run_as: str | None) -> None:
    require_sandbox(user=run_as is not None)
    ledger = _ledger_in(tmp_path)
    home = Path(os.environ["HOME"])
    (home / ".pgpass").write_text("*:*:*:*:S3cret\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    policy = sandbox.Policy(True, "bwrap", run_as, False)
    launch = sandbox.prepare(
        [sys.executable, "-c", PEEK, str(ledger.path), str(home / ".pgpass"), "/etc/shadow"],
        policy=policy,
        scratch=scratch,
        cwd=scratch,
        hidden=sandbox.ledger_hidden(ledger),
        interpreters=[sys.executable],
    )
    done = subprocess.run(launch.argv, env=launch.env, capture_output=True, text=True, timeout=60, **launch.kwargs)

    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen[str(ledger.path)] == "FileNotFoundError" and seen[str(home / ".pgpass")] == "FileNotFoundError"
    assert seen["postgres"] != "connected", "no network: not even the trust-auth PostgreSQL on 127.0.0.1"
    assert seen["/etc/shadow"] == "FileNotFoundError" and "var" not in seen["root"] and "home" not in seen["root"]
    assert seen["uid"] == (0 if run_as is None else __import__("pwd").getpwnam(run_as).pw_uid)
    assert not [k for k in seen["env"] if k.startswith(("GOVERN_", "PG", "MLFLOW_"))]


def test_pointing_a_checkout_at_a_dvc_cache_never_writes_through_a_link_the_commit_carries(tmp_path: Path) -> None:
    from govern.adapters.dvc import use_cache_dir
    from govern.errors import ProjectError

    ledger = tmp_path / "ledger.duckdb"
    ledger.write_bytes(b"the ledger")
    checkout = tmp_path / "checkout"
    (checkout / ".dvc").mkdir(parents=True)
    (checkout / ".dvc" / "config.local").symlink_to(ledger)

    use_cache_dir(checkout, tmp_path / "cache", remote=tmp_path / "project-cache")

    assert ledger.read_bytes() == b"the ledger"
    written = checkout / ".dvc" / "config.local"
    assert not written.is_symlink() and f"url = {tmp_path / 'project-cache'}" in written.read_text()
    other = tmp_path / "other"
    other.mkdir()
    (other / ".dvc").symlink_to(tmp_path)
    with pytest.raises(ProjectError, match="is not a directory of the checkout"):
        use_cache_dir(other, tmp_path / "cache")
    assert not (tmp_path / "config.local").exists()


LINKER = 'python -c "import os, sys; os.symlink(sys.argv[1], sys.argv[2])" {target} {output}'
PIPE = 'python -c "import os, sys; os.mkfifo(sys.argv[1])" {output}'


@pytest.mark.parametrize("run_as", [None, JOB_USER])
@pytest.mark.parametrize("target", ["secret", "/proc/self/environ"])
def test_an_entry_points_output_made_a_link_never_has_the_server_read_what_it_points_at(
    tmp_path: Path, run_as: str | None, target: str
) -> None:
    """Seen in the security review: a model's entry point made predictions.csv a link to the signing key, .pgpass,
    the ledger or /proc/self/environ; the server, reading the output as itself, returned them to the consumer."""
    from govern.entrypoint import InferenceFailed, run

    require_sandbox(user=run_as is not None)
    secret = tmp_path / "server-only" / "signing.key"
    secret.parent.mkdir()
    secret.write_text("-----BEGIN PRIVATE KEY----- the server's\n")
    code, rows = tmp_path / "code", tmp_path / "rows.csv"
    code.mkdir()
    rows.write_text("a\n1\n")
    policy = sandbox.Policy(True, "bwrap", run_as, False)
    pointed = str(secret) if target == "secret" else target
    scratch = Path(__import__("tempfile").mkdtemp(prefix="govern-predict-"))
    output = scratch / "predictions.csv"
    with pytest.raises(InferenceFailed, match="output is not a plain file") as refused:
        run(code, LINKER.replace("{target}", pointed), rows, rows, output, 60, policy=policy)
    assert "PRIVATE KEY" not in str(refused.value) and "GOVERN" not in str(refused.value)
    assert output.is_symlink(), "left as it was, never read"

    fifo = scratch / "fifo.csv"
    with pytest.raises(InferenceFailed, match="not a plain file"):
        run(code, PIPE, rows, rows, fifo, 60, policy=policy)  # a FIFO would block the server's read forever

    plain = scratch / "plain.csv"
    run(code, 'python -c "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])" {input} {output}', rows, rows,
        plain, 60, policy=policy)  # fmt: skip
    assert plain.read_text() == "a\n1\n" and plain.stat().st_uid == os.geteuid(), "a plain output: the server's own"
