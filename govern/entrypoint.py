"""Run a model's own inference entry point: the `meta.infer` command template of its artifact in dvc.yaml.

`govern predict` scores a user's file with it; `govern ci verify` runs it on
both the committed and the reproduced model file to judge them by behaviour.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from govern.errors import GovernError


class InferenceFailed(GovernError):
    """The model's inference command failed."""


def run(root: Path, template: str, model_file: Path, input_path: Path, output_path: Path) -> None:
    """Fill `{model}`, `{input}` and `{output}` (shell-quoted) and run the command from the project root."""
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
    done = subprocess.run(command, shell=True, cwd=root, capture_output=True, text=True)  # noqa: S602 - the project's own command
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise InferenceFailed(f"The inference command failed (exit {done.returncode}): {tail}")
