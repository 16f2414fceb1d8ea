"""Git-driven CI: real bare repositories, real `git push`, real hooks, real DVC re-execution."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
import yaml
from conftest import (
    ACTOR,
    TINY_DVC_YAML,
    TINY_STAGE,
    another_blas_kernel,
    commit_all,
    git,
    make_demo,
    pickling_with_protocol_from_the_environment,
    run_cli,
    wait_for,
)

from govern.cli import cli
from govern.storage.duckdb_log import Ledger

DETERMINISTIC = TINY_STAGE
RANDOM = "import os; open('out.txt', 'w').write(os.urandom(8).hex())"
DVC_YAML = TINY_DVC_YAML


def sh(cwd: Path, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, check=check)


def reproductions(ledger: Path) -> list:
    if not ledger.exists():
        return []
    return Ledger(ledger).read(types=["reproduction.verified", "reproduction.diverged"])


@pytest.fixture
def server(
    tmp_path: Path, isolated_env: dict[str, str], mlflow_store_template: Path, monkeypatch: pytest.MonkeyPatch
) -> dict:
    """A bare repository with govern's server hook, and a developer's clone with a tiny pipeline.

    The developer and the server share the team's central ledger (GOVERN_LEDGER), as a team would.
    """
    bare, central = tmp_path / "server.git", tmp_path / "central" / "ledger.duckdb"
    monkeypatch.setenv("GOVERN_LEDGER", str(central))
    git(tmp_path, "init", "-q", "--bare", str(bare))
    result = run_cli("hooks", "install-server", "--bare", str(bare), "--ledger", str(central))
    assert result.exit_code == 0, result.output
    env = {**isolated_env, "GOVERN_LEDGER": str(central)}
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    git(clone, "checkout", "-q", "-b", "main")
    (clone / "make.py").write_text(DETERMINISTIC)
    (clone / "params.yaml").write_text("n: 3\n")
    (clone / "dvc.yaml").write_text(DVC_YAML)
    assert run_cli("init", cwd=clone).exit_code == 0
    shutil.copy2(mlflow_store_template, clone / "mlflow.db")
    commit_all(clone, "tiny pipeline", env=env)
    sh(clone, sys.executable, "-m", "govern", "repro", "--commit", env=env)
    return {"bare": bare, "central": central, "clone": clone, "env": env, "log": bare / "govern-hook" / "verify.log"}


def test_a_pushed_deterministic_commit_is_verified_by_the_server_hook(server: dict) -> None:
    clone, env = server["clone"], server["env"]
    head = git(clone, "rev-parse", "HEAD")
    pushed = sh(clone, "git", "push", "-q", "origin", "main", env=env)
    assert "verifying" in pushed.stderr, "the hook answers at once and says what it does"

    [event] = wait_for(lambda: reproductions(server["central"]), "the reproduction event")
    assert event.type == "reproduction.verified" and event.subject == f"commit:{head}"
    assert event.payload["ci"]["system"] == "server-hook" and event.actor == "server-hook:server.git"
    assert [o["path"] for o in event.payload["outputs"]] == ["out.txt"]


def test_a_pushed_nondeterministic_commit_is_recorded_as_diverged(server: dict) -> None:
    clone, env = server["clone"], server["env"]
    (clone / "make.py").write_text(RANDOM)
    commit_all(clone, "random output", env=env)
    sh(clone, sys.executable, "-m", "govern", "repro", "--commit", env=env)
    head = git(clone, "rev-parse", "HEAD")
    sh(clone, "git", "push", "-q", "origin", "main", env=env)

    [event] = wait_for(lambda: reproductions(server["central"]), "the reproduction event")
    assert event.type == "reproduction.diverged" and event.git_commit == head
    [output] = event.payload["differing_outputs"]
    assert output["path"] == "out.txt" and output["expected_md5"] != output["actual_md5"]


def test_two_quick_pushes_are_both_verified_and_a_commit_only_once(server: dict) -> None:
    clone, env = server["clone"], server["env"]
    first = git(clone, "rev-parse", "HEAD")
    sh(clone, "git", "push", "-q", "origin", "main", env=env)
    (clone / "params.yaml").write_text("n: 5\n")
    commit_all(clone, "n=5", env=env)
    sh(clone, sys.executable, "-m", "govern", "repro", "--commit", env=env)
    second = git(clone, "rev-parse", "HEAD")
    sh(clone, "git", "push", "-q", "origin", "main", env=env)
    sh(clone, "git", "push", "-q", "origin", "main:refs/heads/again", env=env)

    events = wait_for(lambda: len(reproductions(server["central"])) >= 2 and reproductions(server["central"]), "both")

    def turned_away() -> bool:
        lines = server["log"].read_text().splitlines()
        return any(line.startswith(f"{second}: ") and "already" in line for line in lines)

    wait_for(turned_away, "the repeated commit to be turned away")
    time.sleep(1)
    events = reproductions(server["central"])
    assert sorted(e.git_commit for e in events) == sorted([first, second])
    assert all(e.type == "reproduction.verified" for e in events)


def test_the_server_hook_judges_a_lock_made_elsewhere_equivalent_and_names_what_differs(
    tmp_path: Path, isolated_env: dict[str, str], mlflow_store_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo trained where its model pickles differently, pushed; the server verifies on its own kernel."""
    bare, central = tmp_path / "server.git", tmp_path / "central" / "ledger.duckdb"
    monkeypatch.setenv("GOVERN_LEDGER", str(central))
    git(tmp_path, "init", "-q", "--bare", str(bare))
    assert run_cli("hooks", "install-server", "--bare", str(bare), "--ledger", str(central)).exit_code == 0
    env = {**isolated_env, "GOVERN_LEDGER": str(central)}
    clone = make_demo(tmp_path / "clone", mlflow_store_template, env)
    pickling_with_protocol_from_the_environment(clone)
    commit_all(clone, "pickle protocol from the environment", env=env)
    sh(clone, sys.executable, "-m", "govern", "repro", "--commit", env={**env, "DEMO_PICKLE_PROTOCOL": "4"})
    git(clone, "remote", "add", "origin", str(bare))
    head = git(clone, "rev-parse", "HEAD")

    sh(clone, "git", "push", "-q", "origin", "main", env={**env, "OPENBLAS_CORETYPE": another_blas_kernel()})

    [event] = wait_for(lambda: reproductions(central), "the reproduction event", timeout=300)
    assert (event.type, event.git_commit, event.payload["match"]) == ("reproduction.verified", head, "equivalent")
    [model] = event.payload["differing_outputs"]
    assert (model["path"], model["rule"], model["equivalent"]) == ("models/model.pkl", "predictions", True)
    assert model["evidence"]["committed_model_from"].startswith("MLflow (version 1, run ")
    assert model["evidence"]["rows"] == 228 and model["evidence"]["rows_beyond_tolerance"] == 0
    facts = {d["fact"] for d in event.payload["environment_differences"]["differences"]}
    assert "threads.env.OPENBLAS_CORETYPE" in facts, "the verdict says what differed from the training's machine"
    training = Ledger(central).read(types=["training.completed"])[-1]
    assert event.payload["training_event_id"] == training.event_id
    log = bare / "govern-hook" / "verify.log"  # written after the verdict (and the lock commits it found)
    assert wait_for(lambda: f"{head}: equivalent: " in log.read_text(), "the hook's log line", timeout=60)


def test_the_pre_push_hook_refuses_a_stale_pipeline(server: dict) -> None:
    clone, env = server["clone"], server["env"]
    result = run_cli("hooks", "install", cwd=clone)
    assert result.exit_code == 0, result.output
    (clone / "params.yaml").write_text("n: 7\n")
    commit_all(clone, "n=7 without reproducing", env=env)

    refused = sh(clone, "git", "push", "origin", "main", env=env, check=False)

    assert refused.returncode != 0
    assert "push refused: the pipeline is stale (stages make changed since dvc.lock)" in refused.stderr
    assert "govern repro --commit" in refused.stderr
    sh(clone, sys.executable, "-m", "govern", "repro", "--commit", env=env)
    assert sh(clone, "git", "push", "-q", "origin", "main", env=env, check=False).returncode == 0


def test_a_pushed_gto_promotion_lands_in_the_ledger_once(server: dict) -> None:
    clone, env = server["clone"], server["env"]
    gto = str(Path(sys.executable).parent / "gto")
    sh(clone, gto, "register", "tiny-model", "--version", "v1.0.0", env=env)
    sh(clone, gto, "assign", "tiny-model", "--version", "v1.0.0", "--stage", "prod", env=env)
    sh(clone, "git", "push", "-q", "origin", "--tags", env=env)

    def promoted() -> list:
        return Ledger(server["central"]).read(types=["model.promoted"]) if server["central"].exists() else []

    [event] = wait_for(promoted, "the imported promotion")
    assert event.payload["origin"] == "gto-tag" and event.payload["to_stage"] == "prod"
    assert event.payload["version"] == "1" and event.payload["gto_tag"] == "tiny-model#prod#1"
    again = run_cli("sync", "--repo", str(server["bare"]), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["events"] == []
    assert len(promoted()) == 1


def test_ci_verify_in_place_writes_a_summary_and_records_the_verdict(server: dict, tmp_path: Path) -> None:
    clone = server["clone"]
    summary = tmp_path / "summary.md"
    result = run_cli("ci", "verify", "--summary", str(summary), cwd=clone)
    assert result.exit_code == 0, result.output
    assert summary.read_text().startswith("## govern: ✅ exact: ")
    verdict = reproductions(server["central"])[-1]
    assert verdict.git_commit == git(clone, "rev-parse", "HEAD")
    assert verdict.actor == ACTOR, "outside CI the verifier is whoever ran it (their git identity)"
    assert git(clone, "status", "--porcelain") == "", "the caller's checkout is untouched"


@pytest.mark.slow  # `dvc repro`, then `ci verify` reproduces it again
def test_ci_verify_exits_non_zero_on_divergence_and_reports_metric_tolerance(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    (project / "score.py").write_text(
        "import json, random; json.dump({'acc': 0.9 + random.random() / 1000}, open('m.json', 'w'))"
    )
    (project / "dvc.yaml").write_text(
        "stages:\n  score:\n    cmd: python score.py\n    deps: [score.py]\n"
        "    metrics:\n      - m.json:\n          cache: false\n"
    )
    assert run_cli("init", cwd=project).exit_code == 0
    commit_all(project, "noisy metric")
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=project, check=True)
    commit_all(project, "lock")

    strict = run_cli("ci", "verify", "--json", cwd=project)
    assert strict.exit_code == 1
    verdict = json.loads(strict.stdout)
    assert verdict["verdict"] == "diverged" and set(verdict["metric_deltas"]) == {"acc"}
    [metrics_file] = verdict["differing_outputs"]
    assert (metrics_file["path"], metrics_file["rule"], metrics_file["equivalent"]) == (
        "m.json",
        "metric-values",
        False,
    )
    tolerant = run_cli("ci", "verify", "--tolerance", "acc=0.01", "--json", cwd=project)
    assert tolerant.exit_code == 0, tolerant.output
    verdict = json.loads(tolerant.stdout)
    assert (verdict["verdict"], verdict["match"]) == ("verified", "equivalent"), "same metric within tolerance"
    assert verdict["metric_deltas"]["acc"]["within"] is True


@pytest.mark.parametrize("system, path", [("github", ".github/workflows/govern.yml"), ("gitlab", ".gitlab-ci.yml")])
def test_ci_init_writes_a_definition_whose_govern_commands_exist(tmp_path: Path, system: str, path: str) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "credit-scoring"\nversion = "1"\ndependencies = ["govern-ml"]\n'
        '[project.optional-dependencies]\npipeline = ["scikit-learn"]\ntest = ["pytest"]\n'
    )
    (tmp_path / "constraints.txt").write_text("scikit-learn==1.9.1\n")
    result = run_cli("ci", "init", system, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    document = yaml.safe_load((tmp_path / path).read_text())
    if system == "github":
        assert set(document[True if True in document else "on"]) == {"push"}
        commands = [step["run"] for step in document["jobs"]["verify"]["steps"] if "run" in step]
    else:
        commands = document["govern-verify"]["script"] + document["govern-verify"].get("after_script", [])
    installs = [c for c in commands if c.startswith("pip install")]
    assert installs == ["pip install -c constraints.txt -e '.[pipeline]'"], "the checkout itself, never an index name"
    govern_commands = [c for c in commands if c.startswith("govern ")]
    assert any(c.startswith("govern ci verify") for c in govern_commands)
    assert "GOVERN_URL and GOVERN_TOKEN" in (tmp_path / path).read_text(), "verdicts go to the team's server"
    assert "audit/ledger.duckdb" not in (tmp_path / path).read_text(), "a runner keeps no ledger of its own"
    for command in govern_commands:
        words = command.split()[1:]
        context = cli.make_context("govern", [], resilient_parsing=True)
        group: click.Command = cli
        for word in words:
            if not isinstance(group, click.Group) or word.startswith("-"):
                break
            group = group.get_command(context, word)
            assert group is not None, f"{command!r}: no such command {word!r}"
    again = run_cli("ci", "init", system, cwd=tmp_path)
    assert again.exit_code == 1 and "pass --force" in again.output


def test_ci_init_installs_from_a_requirements_file_or_asks_how(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    refused = run_cli("ci", "init", "github", cwd=tmp_path)
    assert refused.exit_code == 2 and "declares no way to install it" in refused.output
    assert not (tmp_path / ".github").exists()
    (tmp_path / "requirements.txt").write_text("govern-ml\nscikit-learn\n")
    assert run_cli("ci", "init", "github", cwd=tmp_path).exit_code == 0
    assert "run: pip install -r requirements.txt" in (tmp_path / ".github/workflows/govern.yml").read_text()
