"""The demo pipeline is byte-reproducible: a forced second run writes identical outputs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import yaml


def output_digests(project: Path) -> dict[str, str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    paths = [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
    return {path: hashlib.sha256((project / path).read_bytes()).hexdigest() for path in paths}


def test_two_runs_of_the_pipeline_write_byte_identical_outputs(
    reproduced_demo: Path, isolated_env: dict[str, str]
) -> None:
    first = output_digests(reproduced_demo)
    for path in first:
        (reproduced_demo / path).unlink()
    subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--force", "--quiet"],
        cwd=reproduced_demo,
        env=isolated_env,
        check=True,
    )
    assert output_digests(reproduced_demo) == first
    assert len(first) == 6
