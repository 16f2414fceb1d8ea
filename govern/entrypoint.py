"""Run a model's own inference entry point: the `meta.infer` command template of its artifact in dvc.yaml.

`govern predict` scores a user's file with it; `govern ci verify` runs it on
both the committed and the reproduced model file to judge them by behaviour.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

from govern.errors import GovernError


class InferenceFailed(GovernError):
    """The model's inference command failed; `last_line` is what it said last (the exception, for Python)."""

    def __init__(self, message: str | None = None, last_line: str = "") -> None:
        super().__init__(message)
        self.last_line = last_line


class InferenceTimedOut(InferenceFailed):
    """The model's inference command ran past its time limit and was stopped."""


def run(
    root: Path, template: str, model_file: Path, input_path: Path, output_path: Path, timeout: float | None = None
) -> None:
    """Fill `{model}`, `{input}` and `{output}` (shell-quoted) and run the command from the project root;
    `timeout` (seconds) stops it, with its process group, when a caller cannot wait (the server)."""
    output_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        command = template.format(
            model=shlex.quote(str(model_file)), input=shlex.quote(str(input_path)), output=shlex.quote(str(output_path))
        )
    except (KeyError, IndexError, ValueError) as error:
        raise InferenceFailed(
            f"The inference command {template!r} is not a template with {{model}}, {{input}} and {{output}} "
            f"({error}): fix meta.infer in dvc.yaml"
        ) from None
    process = subprocess.Popen(  # noqa: S602 - the project's own command
        command, shell=True, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise InferenceTimedOut(
            f"The inference command ran longer than {timeout:g} s and was stopped: send fewer rows at a time"
        ) from None
    done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        tail = " ".join(lines[-3:])
        raise InferenceFailed(f"The inference command failed (exit {done.returncode}): {tail}", (lines or [""])[-1])
