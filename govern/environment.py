"""Who is acting and on what machine: the facts DVC's lock file does not keep."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from govern.attribution import Actor

KEY_PACKAGES = (
    "govern-ml", "dvc", "mlflow", "duckdb", "scikit-learn", "pandas", "numpy", "scipy", "threadpoolctl", "torch",
    "xgboost", "lightgbm",
)  # fmt: skip


def ci_identity(environ: Mapping[str, str] | None = None) -> str | None:
    """The CI system's identity from its standard variables, or None outside CI."""
    found = ci_source(environ)
    return found[0] if found else None


def ci_source(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(the CI identity, which variables it came from), or None outside CI."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_ACTIONS") == "true":
        who, where, run = (
            env.get("GITHUB_ACTOR", "unknown"),
            env.get("GITHUB_REPOSITORY", ""),
            env.get("GITHUB_RUN_ID", ""),
        )
        return f"ci:github:{who}@{where}#{run}", "GitHub Actions environment"
    if env.get("GITLAB_CI") == "true":
        who, where, run = (
            env.get("GITLAB_USER_LOGIN", "unknown"),
            env.get("CI_PROJECT_PATH", ""),
            env.get("CI_PIPELINE_ID", ""),
        )
        return f"ci:gitlab:{who}@{where}#{run}", "GitLab CI environment"
    if env.get("GOVERN_CI_IDENTITY"):
        return env["GOVERN_CI_IDENTITY"], "GOVERN_CI_IDENTITY"
    return None


def actor(git_identity: Callable[[], str | None], environ: Mapping[str, str] | None = None) -> Actor:
    """Who a local process says it is: the CI identity in CI, else the git identity, else the OS user; never
    empty, always self-asserted (anyone who can set these can type any name), and never in the server's form."""
    from govern import attribution

    env = os.environ if environ is None else environ
    found = ci_source(env)
    if found:
        return attribution.self_asserted(*found)
    git = git_identity()
    if git:
        return attribution.self_asserted(git, attribution.GIT_CONFIG)
    return attribution.self_asserted(f"{_os_user(env)}@{socket.gethostname()}", attribution.OS_USER)


def describe() -> dict[str, Any]:
    """Host, interpreter and package versions (with a digest of every installed distribution), and the
    machine facts that explain float drift: CPU, thread settings, BLAS/LAPACK kernels (`govern.machine`)."""
    from govern import machine
    from govern.adapters import blas

    installed = sorted(
        {(dist.metadata["Name"] or "").lower(): dist.version for dist in metadata.distributions()}.items()
    )
    versions = dict(installed)
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "packages": {name: versions[name] for name in KEY_PACKAGES if name in versions},
        "packages_digest": hashlib.sha256("\n".join(f"{n}=={v}" for n, v in installed).encode()).hexdigest(),
        "packages_count": len(installed),
        **machine.describe(blas.libraries()),
    }


def _os_user(env: Mapping[str, str]) -> str:
    return env.get("USER") or env.get("USERNAME") or "unknown"
